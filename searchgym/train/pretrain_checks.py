"""The pretrain stage's (the prior lab's) load-time checks (its row in `searchgym.train.stages.STAGES` names
them): its section's ranges, and the world's strategies, mixture and lexicon. Kept apart from
`searchgym.train.pretrain`, which imports torch at its top: these run whenever any recipe loads."""

from __future__ import annotations

import math

from searchgym.config.recipe_checks import check_rules, finite
from searchgym.util.config_schema import ConfigError

_COUNTS = ("epochs", "save_steps", "logging_steps", "num_demos", "vocab_size", "hidden_size", "num_layers",
           "num_heads", "batch_size", "max_length")


def check_pretrain(recipe) -> None:
    """The prior lab's own checks (`searchgym.train.stages.STAGES["pretrain"]`)."""
    p = recipe.pretrain
    if p.max_hops < 1:
        raise ConfigError(f"pretrain.max_hops: must be >= 1, got {p.max_hops}")
    if p.extra_worlds < 0:
        raise ConfigError(f"pretrain.extra_worlds: must be >= 0 (0 = the env's world only), got {p.extra_worlds}")
    if p.vocab_size < 300:  # checked at load: the tokenizer is trained minutes into a run
        raise ConfigError(f"pretrain.vocab_size: byte-level BPE needs >= 300 (256 bytes + merges), got "
                          f"{p.vocab_size}")
    # checked at load: the model is built after the demos (num_heads < 1 is the ranges' below)
    if p.num_heads >= 1 and p.hidden_size % p.num_heads:
        raise ConfigError(f"pretrain.hidden_size: must be a multiple of pretrain.num_heads ({p.num_heads}), "
                          f"got {p.hidden_size}")
    check_rules(recipe, [
        ("pretrain.learning_rate", finite(p.learning_rate) and p.learning_rate > 0, "a finite number > 0"),
        *((f"pretrain.{k}", getattr(p, k) >= 1, "an integer >= 1") for k in _COUNTS),
        *((f"pretrain.{k}", getattr(p, k) >= 0, "an integer >= 0") for k in ("warmup_steps", "intermediate_size")),
    ])


def check_mixture(mixture: dict, strategies) -> dict[str, float]:
    """``pretrain.mixture`` as weights for every strategy of the world (strategies not named get 0).

    >>> check_mixture({"forward": 0.5, "verify": 0.5}, ["forward", "snippet", "verify"])
    {'forward': 0.5, 'snippet': 0.0, 'verify': 0.5}
    """
    if not mixture:
        raise ConfigError(f"pretrain.mixture: give strategy weights, e.g. mixture = {{ forward = 0.5, "
                          f"question_first = 0.3, verify = 0.2 }}; strategies: {list(strategies)}")
    for name, w in mixture.items():
        if name not in strategies:
            raise ConfigError(f"pretrain.mixture: {name!r} is not a strategy of this world; use some of "
                              f"{list(strategies)}")
        if not isinstance(w, int | float) or isinstance(w, bool) or not 0 <= w < math.inf:  # nan, inf: no share
            raise ConfigError(f"pretrain.mixture.{name}: a weight must be a finite number >= 0, got {w!r}")
    if not any(mixture.values()):
        raise ConfigError("pretrain.mixture: at least one strategy needs a weight > 0")
    return {s: float(mixture.get(s, 0.0)) for s in strategies}


def check_pretrain_world(recipe, world, name: str) -> None:
    """The prior lab plays the world's demonstrators in ``pretrain.mixture``'s proportions: its strategies, the
    mixture and (for ``name_tokens``) its lexicon are checked at load, not after the run folder is made."""
    strategies = getattr(world, "strategies", None)
    if not isinstance(strategies, tuple | list):
        return  # set per instance: checked when the demos are sampled
    if not strategies:
        raise ConfigError(f"env.id: world {name!r} of {recipe.env.id} has no scripted strategies to pretrain on; "
                          "use searchgym/SyntheticWorld-v0 or searchgym/SyntheticWorld-Easy-v0")
    check_mixture(recipe.pretrain.mixture, strategies)
    if recipe.pretrain.name_tokens and not callable(getattr(world, "lexicon", None)):
        raise ConfigError(f"pretrain.name_tokens: world {name!r} lists no lexicon (names, doc ids) to keep whole; "
                          "set pretrain.name_tokens = false")
