"""The sft stage's load-time checks (its row in `searchgym.train.stages.STAGES` names them): its section's
ranges and what it needs of the env's world. Kept apart from `searchgym.train.sft`, which imports the demo
builder and the training context, because these run whenever any recipe loads, before torch is imported."""

from __future__ import annotations

from searchgym.config.recipe_checks import check_rules, finite
from searchgym.util.config_schema import ConfigError


def check_sft(recipe) -> None:
    """The SFT stage's own checks (`searchgym.train.stages.STAGES["sft"]`)."""
    s = recipe.sft
    for n in ("num_questions", "demos_per_question", "batch_size", "max_length"):
        if getattr(s, n) < 1:
            raise ConfigError(f"sft.{n}: must be >= 1, got {getattr(s, n)}")
    check_rules(recipe, training_rules("sft", s))


def training_rules(section: str, s) -> list[tuple[str, bool, str]]:
    """The ranges of the SFT trainer's fields (`searchgym.config.agent_recipe.SFTTraining`) in ``section``, as
    `check_rules` rules: every stage that trains with SFTTrainer (sft, rft) checks them alike."""
    return [
        (f"{section}.learning_rate", finite(s.learning_rate) and s.learning_rate > 0, "a finite number > 0"),
        (f"{section}.epochs", finite(s.epochs) and s.epochs > 0, "a finite number of epochs > 0"),
        *((f"{section}.{k}", getattr(s, k) >= 1, "an integer >= 1") for k in ("save_steps", "logging_steps", "grad_accum")),
    ]


def check_sft_world(recipe, world, name: str) -> None:
    """SFT plays the world's demonstrators: it needs strategies, and sft.narrow_strategy among them."""
    sft = recipe.sft
    strategies = getattr(world, "strategies", None)
    if not isinstance(strategies, tuple | list):
        return  # set per instance: checked when the demos are built
    if not strategies:
        raise ConfigError(f"stages: 'sft' needs demonstrations, but world {name!r} has no strategies (its "
                          "demonstrator(strategy, style) makes them); give the world strategies and a "
                          "demonstrator, or use stages = [\"grpo\"]")
    styles = getattr(world, "query_styles", None)
    if isinstance(styles, tuple | list) and not styles:
        raise ConfigError(f"stages: 'sft' plays world {name!r}'s demonstrator(strategy, style) for each of its "
                          "query_styles, and it has none; give the world query_styles = (\"plain\",) or more")
    if sft.narrow_strategy not in strategies:
        raise ConfigError(f"sft.narrow_strategy: {sft.narrow_strategy!r} is not a strategy of world {name!r}; "
                          f"allowed: {list(strategies)}")
    if sft.narrow_style and isinstance(styles, tuple | list) and sft.narrow_style not in styles:
        raise ConfigError(f"sft.narrow_style: {sft.narrow_style!r} is not a query style of world {name!r}; "
                          f"allowed: {list(styles)} (or \"\" for the first)")
