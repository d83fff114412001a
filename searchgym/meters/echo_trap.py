"""Echo-trap early warnings: the signs RAGEN saw before multi-turn agent RL collapses.

RAGEN (Wang et al. 2025, "Understanding self-evolution in LLM agents via multi-turn RL") names the failure
the *echo trap*: the policy locks onto a few trajectory templates that once paid, the rewards of a group of
rollouts stop differing, and gradient-norm spikes come just before the collapse. Each signal is a reading
under ``alarm/``, computed from what the run logs anyway, and watched by an ordinary alarm rule
(`searchgym.meters.alarms`), so the live callback warns, logs and checkpoints exactly as for a collapse:

- ``alarm/reward_std``: the within-group reward std of a live probe (its ``reward/std``: per probe question
  the std of its n samples' rewards, averaged). TRL's own ``reward_std`` is the std over the whole batch, which
  stays high when every group is constant but groups differ, the very case to catch. Rule: it falls below
  half its first value.
- ``alarm/frac_reward_zero_std``: TRL's ``frac_reward_zero_std``, the share of GRPO groups whose rewards are all
  equal and so give no gradient (per logging window). Rule: above 0.8.
- ``alarm/grad_norm_ratio``: the logged gradient norm over the median of the norms logged before it
  (`spike_ratio`); the median, so one earlier spike does not raise the bar. Rule: above 5 (`grad_norm_spikes`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from searchgym.meters.alarms import Above, AlarmRule, RelativeDrop

SPIKE_FACTOR = 5.0  # a norm this many times the running median is a spike
MIN_HISTORY = 3  # earlier norms needed before the median means anything (the first steps' norms swing)

# The keys each reading is made from: a probe's meters, and the trainer's log as metrics.jsonl writes it.
PROBE_REWARD_STD, ZERO_STD, GRAD_NORM = "reward/std", "train/frac_reward_zero_std", "train/grad_norm"

ECHO_TRAP_RULES: tuple[AlarmRule, ...] = (RelativeDrop("alarm/reward_std", 0.5),
                                          Above("alarm/frac_reward_zero_std", 0.8),
                                          Above("alarm/grad_norm_ratio", SPIKE_FACTOR))


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def spike_ratio(previous: Sequence[float], value: float, min_history: int = MIN_HISTORY) -> float:
    """``value / median(previous)`` over the finite earlier values; NaN when fewer than ``min_history`` of
    them, or their median is not positive, or ``value`` is not finite.

    >>> spike_ratio([1.0, 2.0, 1.5], 7.5)
    5.0
    >>> spike_ratio([1.0, 2.0], 7.5)  # too little history for a baseline
    nan
    """
    earlier = [float(v) for v in previous if _finite(v)]
    if len(earlier) < min_history or not _finite(value):
        return math.nan
    median = statistics.median(earlier)
    return float(value) / median if median > 0 else math.nan


def grad_norm_spikes(values: Sequence[float], factor: float = SPIKE_FACTOR, min_history: int = MIN_HISTORY
                     ) -> list[int]:
    """The spike detector: indices i where ``values[i] > factor × median(values[:i])`` (`spike_ratio`).

    >>> grad_norm_spikes([1.0, 1.2, 0.9, 1.1, 6.0, 1.0, 1.3, 30.0])  # 6 > 5 × 1.05; 30 > 5 × 1.1
    [4, 7]
    >>> grad_norm_spikes([9.0, 1.0, 1.0, 1.0])  # a large first norm is no spike: nothing to compare with
    []
    """
    return [i for i, v in enumerate(values) if spike_ratio(values[:i], v, min_history) > factor]


def echo_trap_readings(row: Mapping[str, float], grad_norms: Sequence[float],
                       min_history: int = MIN_HISTORY) -> dict[str, float]:
    """The ``alarm/…`` readings one log row gives: a probe's meters or a trainer log (keys namespaced as in
    metrics.jsonl), with ``grad_norms`` the gradient norms logged before it. Empty when it gives none.

    >>> echo_trap_readings({"train/grad_norm": 8.0, "train/frac_reward_zero_std": 0.25}, [1.0, 2.0, 1.0])
    {'alarm/frac_reward_zero_std': 0.25, 'alarm/grad_norm_ratio': 8.0}
    >>> echo_trap_readings({"reward/std": 0.4, "diversity/vendi": 2.0}, [])
    {'alarm/reward_std': 0.4}
    """
    out = {}
    if _finite(row.get(PROBE_REWARD_STD)):
        out["alarm/reward_std"] = float(row[PROBE_REWARD_STD])
    if _finite(row.get(ZERO_STD)):
        out["alarm/frac_reward_zero_std"] = float(row[ZERO_STD])
    if _finite(row.get(GRAD_NORM)):
        ratio = spike_ratio(grad_norms, row[GRAD_NORM], min_history)
        if math.isfinite(ratio):
            out["alarm/grad_norm_ratio"] = ratio
    return out


def echo_trap_history(rows: Sequence[Mapping[str, float]], min_history: int = MIN_HISTORY) -> list[dict[str, float]]:
    """The readings of a log history in order (probe rows and trainer rows mixed, as in metrics.jsonl), one
    dict per row that gives any, with the row's ``"step"`` (else its index): `fired_alarms` input.

    >>> rows = [{"step": s, "train/grad_norm": g} for s, g in enumerate([1.0, 1.0, 1.0, 9.0], start=1)]
    >>> echo_trap_history(rows)
    [{'alarm/grad_norm_ratio': 9.0, 'step': 4}]
    """
    grad_norms: list[float] = []
    out = []
    for i, row in enumerate(rows):
        readings = echo_trap_readings(row, grad_norms, min_history)
        if _finite(row.get(GRAD_NORM)):
            grad_norms.append(float(row[GRAD_NORM]))
        if readings:
            out.append({**readings, "step": row.get("step", i)})
    return out
