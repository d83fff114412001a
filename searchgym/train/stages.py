"""Training stages by name: what ``stages = [...]`` in a recipe may list, and what each one runs.

A stage is an object with

- ``name``: its name in ``stages`` and the recipe section that holds its settings (``[sft]``, ``[grpo]``…);
- ``settings``: that section's dataclass (typed fields with defaults; a stage without settings uses None);
- ``builds_base``: True for a stage that makes the base model itself (``pretrain``: first, no adapter);
- ``validate(recipe)``: its checks, raising one `searchgym.config.recipe.ConfigError` that names the field;
- ``run(ctx)``: train ``ctx.model`` (`searchgym.train.context.TrainContext`) and return the trained model —
  a `peft.PeftModel` whose "default" adapter holds the stage's work (``ctx.wrap_lora`` gives one), or for a
  ``builds_base`` stage the new base model (and it sets ``ctx.tokenizer``).

The pipeline (`searchgym.train.pipeline`) saves each stage's adapter under ``stages/<name>/adapter``, marks
it done, skips it on ``--resume`` and evaluates at the end. Adding a stage is one new module with such an
object and one line in `STAGES` (docs/architecture.md, "A new training stage"). This module stays light:
``validate`` runs when a recipe loads, before torch is imported; ``run`` imports what it trains with.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from searchgym.config.recipe import GRPOSettings, PretrainConfig, Recipe, SFTSettings
from searchgym.train.rft import RFTSettings


@runtime_checkable
class Stage(Protocol):
    name: str
    settings: type | None
    builds_base: bool

    def validate(self, recipe: Recipe) -> None: ...

    def run(self, ctx): ...


@dataclass(frozen=True)
class BuiltinStage:
    """A stage whose checks and trainer are named as ``"module:function"`` and imported when called, so
    loading a recipe never imports what a stage trains with."""

    name: str
    settings: type | None
    builds_base: bool
    check: str  # validate(recipe): one ConfigError naming the field
    train: str  # run(ctx) -> the trained model

    def validate(self, recipe: Recipe) -> None:
        _function(self.check)(recipe)

    def run(self, ctx):
        return _function(self.train)(ctx)


def _function(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


# name -> stage. A new stage: one module with its Stage object, and one line here.
STAGES: dict[str, Stage] = {
    # the prior lab: pretrain a small model from scratch
    "pretrain": BuiltinStage("pretrain", PretrainConfig, True, "searchgym.config.checks:check_pretrain",
                             "searchgym.train.pretrain:train_pretrain"),
    # LoRA SFT on the world's demonstrations
    "sft": BuiltinStage("sft", SFTSettings, False, "searchgym.config.checks:check_sft",
                        "searchgym.train.sft:train_sft"),
    # multi-turn GRPO over the env's tools
    "grpo": BuiltinStage("grpo", GRPOSettings, False, "searchgym.config.checks:check_grpo",
                         "searchgym.train.grpo:train_grpo"),
    # rejection-sampling fine-tuning: SFT on the policy's own correct episodes, round after round
    "rft": BuiltinStage("rft", RFTSettings, False, "searchgym.train.rft:check_rft", "searchgym.train.rft:train_rft"),
}


def get_stage(name: str) -> Stage:
    from searchgym.config import ConfigError

    if name not in STAGES:
        raise ConfigError(f"stages: unknown stage {name!r}; allowed: {list(STAGES)}")
    return STAGES[name]
