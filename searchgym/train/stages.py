"""Training stages by name: what ``stages = [...]`` in a recipe may list, and what each one runs.

A stage is an object with

- ``name``: its name in ``stages`` and the recipe section that holds its settings (``[sft]``, ``[grpo]``…);
- ``settings``: that section's dataclass (typed fields with defaults; a stage without settings uses None);
- ``builds_base``: True for a stage that makes the base model itself (``pretrain``: first, no adapter);
- ``validate(recipe)``: its checks, raising one `searchgym.config.agent_recipe.ConfigError` that names the field;
- optionally ``validate_world(recipe, world, world_name)``: what it needs of the env's world class (run for a
  listed stage on a SearchEnv), and ``needs_train_split`` (True: a plug-in world must have train tasks);
- ``run(ctx)``: train ``ctx.model`` (`searchgym.train.context.TrainContext`) and return the trained model —
  what ``ctx.trainable(ctx.model)`` gave it (a `peft.PeftModel` whose "default" adapter holds the stage's work,
  or the whole model with ``model.finetune = "full"``), or for a ``builds_base`` stage the new base model (and
  it sets ``ctx.tokenizer``).

The pipeline (`searchgym.train.pipeline`) saves each stage's result under ``stages/<name>/adapter`` (or
``stages/<name>/model``, `searchgym.train.weights`), marks
it done, skips it on ``--resume`` and evaluates at the end. Adding a stage is one new module with such an
object and one line in `STAGES` (docs/architecture.md, "A new training stage"). This module stays light:
``validate`` runs when a recipe loads, before torch is imported; ``run`` imports what it trains with.

Loading a recipe needs the registry, and config sits below train, so the loaders callers use are here
(`load_recipe`, `recipe_from_dict`, `validate_recipe`): config's own (`config.agent_recipe.parse_recipe_file` and
`parse_recipe`, then `config.recipe_checks.validate_recipe`) take the registry as an argument.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from searchgym.config import recipe_checks as checks
from searchgym.config.agent_recipe import (
    GRPOSettings,
    PretrainConfig,
    Recipe,
    SFTSettings,
    parse_recipe,
    parse_recipe_file,
)
from searchgym.train.rft import RFTSettings


@runtime_checkable
class Stage(Protocol):
    name: str
    settings: type | None
    builds_base: bool

    def validate(self, recipe: Recipe) -> None: ...

    def run(self, ctx): ...

    # validate_world and needs_train_split are optional, so not members here: a stage without them (the
    # toy of tests/test_stages.py, a plug-in's) is still a Stage; config reads them with getattr defaults.


@dataclass(frozen=True)
class BuiltinStage:
    """A stage whose checks and trainer are named as ``"module:function"`` and imported when called, so
    loading a recipe never imports what a stage trains with."""

    name: str
    settings: type | None
    builds_base: bool
    check: str  # validate(recipe): one ConfigError naming the field
    train: str  # run(ctx) -> the trained model
    check_world: str | None = None  # validate_world(recipe, world, world_name), for a listed stage
    needs_train_split: bool = False  # it trains on the world's train questions

    def validate(self, recipe: Recipe) -> None:
        _function(self.check)(recipe)

    def validate_world(self, recipe: Recipe, world, name: str) -> None:
        if self.check_world is not None:
            _function(self.check_world)(recipe, world, name)

    def run(self, ctx):
        return _function(self.train)(ctx)


def _function(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


# name -> stage. A new stage: one module with its Stage object, and one line here.
STAGES: dict[str, Stage] = {
    # the prior lab: pretrain a small model from scratch
    "pretrain": BuiltinStage("pretrain", PretrainConfig, True, "searchgym.train.pretrain_checks:check_pretrain",
                             "searchgym.train.pretrain:train_pretrain",
                             check_world="searchgym.train.pretrain_checks:check_pretrain_world"),
    # LoRA SFT on the world's demonstrations
    "sft": BuiltinStage("sft", SFTSettings, False, "searchgym.train.sft_checks:check_sft",
                        "searchgym.train.sft:train_sft", check_world="searchgym.train.sft_checks:check_sft_world",
                        needs_train_split=True),
    # multi-turn GRPO over the env's tools
    "grpo": BuiltinStage("grpo", GRPOSettings, False, "searchgym.train.grpo_checks:check_grpo",
                         "searchgym.train.grpo:train_grpo", check_world="searchgym.train.grpo_checks:check_grpo_world",
                         needs_train_split=True),
    # rejection-sampling fine-tuning: SFT on the policy's own correct episodes, round after round
    "rft": BuiltinStage("rft", RFTSettings, False, "searchgym.train.rft:check_rft", "searchgym.train.rft:train_rft",
                        needs_train_split=True),
}


def get_stage(name: str) -> Stage:
    from searchgym.util.config_schema import ConfigError

    if name not in STAGES:
        raise ConfigError(f"stages: unknown stage {name!r}; allowed: {list(STAGES)}")
    return STAGES[name]


def validate_recipe(recipe: Recipe, *, check_model: bool = True) -> Recipe:
    """`searchgym.config.recipe_checks.validate_recipe` against the registered stages (a recipe made or changed in
    code)."""
    return checks.validate_recipe(recipe, STAGES, check_model=check_model)


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, check_model: bool = True) -> Recipe:
    """Read, override (``section.key=value``) and validate a recipe file against the registered stages."""
    return validate_recipe(parse_recipe_file(path, STAGES, overrides), check_model=check_model)


def recipe_from_dict(data: dict, where: str = "recipe", *, check_model: bool = True) -> Recipe:
    """A validated `Recipe` from parsed TOML, its stages' sections read and checked by the registered stages."""
    return validate_recipe(parse_recipe(data, STAGES, where), check_model=check_model)
