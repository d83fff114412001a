"""Training stages by name: what ``stages = [...]`` in a recipe may list, and what each one runs.

A stage is an object with

- ``name``: its name in ``stages`` and the recipe section that holds its settings (``[sft]``, ``[grpo]``…);
- ``settings``: that section's dataclass (typed fields with defaults; a stage without settings uses None);
- ``builds_base``: True for a stage that makes the base model itself (``pretrain``: first, no adapter);
- ``validate(recipe)``: its checks, raising one `searchgym.recipe.RecipeError` that names the field;
- ``run(ctx)``: train ``ctx.model`` (`searchgym.train.context.TrainContext`) and return the trained model —
  a `peft.PeftModel` whose "default" adapter holds the stage's work (``ctx.wrap_lora`` gives one), or for a
  ``builds_base`` stage the new base model (and it sets ``ctx.tokenizer``).

The pipeline (`searchgym.train.pipeline`) saves each stage's adapter under ``stages/<name>/adapter``, marks
it done, skips it on ``--resume`` and evaluates at the end. Adding a stage is one new module with such an
object and one line in `STAGES` (docs/architecture.md, "A new training stage"). This module stays light:
``validate`` runs when a recipe loads, before torch is imported; ``run`` imports what it trains with.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from searchgym.recipe import GRPOSettings, PretrainConfig, Recipe, SFTSettings


@runtime_checkable
class Stage(Protocol):
    name: str
    settings: type | None
    builds_base: bool

    def validate(self, recipe: Recipe) -> None: ...

    def run(self, ctx): ...


class PretrainStage:
    """The prior lab: pretrain a small model from scratch (`searchgym.train.pretrain`)."""

    name, settings, builds_base = "pretrain", PretrainConfig, True

    def validate(self, recipe: Recipe) -> None:
        from searchgym.recipe_checks import check_pretrain

        check_pretrain(recipe)

    def run(self, ctx):
        from searchgym.train.pretrain import train_pretrain

        return train_pretrain(ctx)


class SFTStage:
    """LoRA SFT on the world's demonstrations (`searchgym.train.sft`)."""

    name, settings, builds_base = "sft", SFTSettings, False

    def validate(self, recipe: Recipe) -> None:
        from searchgym.recipe_checks import check_sft

        check_sft(recipe)

    def run(self, ctx):
        from searchgym.train.sft import train_sft

        return train_sft(ctx)


class GRPOStage:
    """Multi-turn GRPO over the env's tools (`searchgym.train.grpo`)."""

    name, settings, builds_base = "grpo", GRPOSettings, False

    def validate(self, recipe: Recipe) -> None:
        from searchgym.recipe_checks import check_grpo

        check_grpo(recipe)

    def run(self, ctx):
        from searchgym.train.grpo import train_grpo

        return train_grpo(ctx)


# name -> stage. A new stage: one module with its Stage object, and one line here.
STAGES: dict[str, Stage] = {
    "pretrain": PretrainStage(),
    "sft": SFTStage(),
    "grpo": GRPOStage(),
}


def get_stage(name: str) -> Stage:
    from searchgym.recipe import RecipeError

    if name not in STAGES:
        raise RecipeError(f"stages: unknown stage {name!r}; allowed: {list(STAGES)}")
    return STAGES[name]
