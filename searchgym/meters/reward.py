"""Reward-spread meters: the early warning that comes before a collapse.

GRPO learns only from groups whose rewards differ; when every sample of a question gets the same reward
the group gives no gradient. Mean within-group std and the fraction of zero-variance groups fall before
the reward curve plateaus. Stratify them by difficulty: easy questions saturate first.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

ZERO_VARIANCE_TOL = 1e-9  # rewards closer than this count as equal


def reward_std(rewards: Sequence[float]) -> float:
    """Population std of one group's rewards (ddof=0, as GRPO normalises).

    >>> reward_std([1.0, 0.0, 1.0, 0.0])
    0.5
    """
    return float(np.std(rewards)) if len(rewards) else math.nan


def reward_spread(groups: Sequence[Sequence[float]]) -> float:
    """Mean over groups of std(r).

    >>> reward_spread([[1.0, 0.0], [1.0, 1.0]])
    0.25
    """
    return float(np.mean([reward_std(g) for g in groups])) if groups else math.nan


def is_zero_variance(rewards: Sequence[float]) -> bool:
    """Whether every reward of a group is the same (the group gives GRPO no gradient).

    >>> is_zero_variance([0.5, 0.5]), is_zero_variance([0.0, 1.0])
    (True, False)
    """
    return bool(len(rewards)) and max(rewards) - min(rewards) <= ZERO_VARIANCE_TOL


def zero_variance_fraction(groups: Sequence[Sequence[float]]) -> float:
    """Fraction of groups with zero reward variance.

    >>> zero_variance_fraction([[1.0, 1.0], [0.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    0.5
    """
    return sum(is_zero_variance(g) for g in groups) / len(groups) if groups else math.nan


def by_difficulty(values: Sequence[float], difficulties: Sequence[int]) -> dict[int, float]:
    """Mean of per-question values within each difficulty stratum (NaN values ignored).

    >>> by_difficulty([1.0, 0.0, 0.5], [1, 2, 1])
    {1: 0.75, 2: 0.0}
    """
    strata: dict[int, list[float]] = defaultdict(list)
    for v, d in zip(values, difficulties, strict=True):
        strata[int(d)].append(v)
    return {d: nanmean(vs) for d, vs in sorted(strata.items())}


def nanmean(values: Sequence[float]) -> float:
    """Mean of the finite values; NaN (without a warning) when there are none.

    >>> nanmean([1.0, float("nan"), 3.0])
    2.0
    """
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan
