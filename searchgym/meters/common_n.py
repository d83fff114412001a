"""One rule for comparing inputs at a common n, used by `searchgym meter` and the report alike.

Diversity meters and pass@k grow with the number of samples per question, so inputs are only compared at
one n. The rule: n is ``samples`` when given, else the smallest samples-per-question of any input; every
input is metered on the first n samples of each question, and when that drops samples the caller prints
the returned note as a warning (and keeps it in its output), so nothing is down-sampled silently.
"""

from __future__ import annotations

from collections.abc import Mapping


def common_n(sizes: Mapping[str, tuple[int, int]], samples: int | None = None) -> tuple[int, str, bool]:
    """``(n, note, down_sampled)`` for inputs whose questions hold ``(smallest, largest)`` samples each.

    >>> common_n({"base": (8, 8), "grpo": (8, 8)})
    (8, 'n = 8 samples per question', False)
    >>> n, note, down = common_n({"base": (8, 8), "grpo": (4, 6)})
    >>> n, down, note
    (4, True, 'equalised to n = 4: every input uses the first 4 samples of each question (originally: base n=8, grpo n=4-6)')
    >>> common_n({"base": (8, 8)}, samples=9)
    Traceback (most recent call last):
    ...
    ValueError: samples = 9 but base has only 8 sample(s) for some question; pass samples <= 8
    """
    if not sizes:
        raise ValueError("no inputs to compare")
    smallest = min(lo for lo, _ in sizes.values())
    if samples is not None:
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        for name, (lo, _) in sizes.items():
            if lo < samples:
                raise ValueError(f"samples = {samples} but {name} has only {lo} sample(s) for some question; "
                                 f"pass samples <= {smallest}")
    n = smallest if samples is None else samples
    if all(lo == hi == n for lo, hi in sizes.values()):
        return n, f"n = {n} samples per question", False
    original = ", ".join(f"{name} n={lo}" if lo == hi else f"{name} n={lo}-{hi}" for name, (lo, hi) in sizes.items())
    return n, (f"equalised to n = {n}: every input uses the first {n} samples of each question "
               f"(originally: {original})"), True
