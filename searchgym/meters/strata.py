"""pass@k by stratum: hop count, question kind and evidence order, with the k where the base catches up.

One pass@k curve over all questions mixes easy and hard ones: RL may sharpen 1-hop lookups and leave
chains alone, or the reverse, and the pooled crossing k then describes neither. Here questions are split
into strata, each named ``"<axis>=<value>"``:

* ``hops=<d>``: the task's difficulty (its number of hops);
* ``kind=<kind>``: the world's question kind (``bridge``, ``comparison``, ``intersection``, ``count`` …);
* ``order=<order>``: `evidence_order`, whether a later hop's lookup needs an earlier hop's answer
  (``sequential``), every lookup can be made from the question alone (``parallel``), or there is one
  lookup only (``single``).

Per stratum the curve is the existing unbiased estimator (`searchgym.meters.passk.pass_at_k_table`)
averaged over the stratum's questions, with a percentile bootstrap CI over those questions
(`searchgym.meters.stats.bootstrap_ci`); the crossing is `searchgym.meters.coverage.crossing` run on the
stratum's questions only. Keys are flat and namespaced like the pooled ones, the stratum between the
namespace and the meter: ``passk/hops=2/pass@8``, ``passk/order=sequential/crossing_k``.

>>> tasks = {"a": {"hops": "1"}, "b": {"hops": "2"}, "c": {"hops": "2"}}
>>> curves = passk_strata({"a": 1, "b": 0, "c": 4}, n=4, strata=tasks, n_boot=50)
>>> curves["passk/hops=2/pass@1"], curves["passk/hops=2/questions"], curves["passk/hops=1/pass@4"]
(0.5, 2.0, 1.0)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from searchgym.meters.coverage import Counts, _runs, crossing, shared_questions
from searchgym.meters.passk import crossing_k, k_ladder, pass_at_k_table
from searchgym.meters.stats import bootstrap_ci

AXES = ("hops", "kind", "order")  # the order strata are listed in
ORDERS = ("single", "sequential", "parallel")
# The rule for worlds whose tasks do not record their lookups (`Task.meta["steps"]`, see `evidence_order`):
# what each kind is by construction. A bridge asks about the entity an earlier hop found; a count looks up
# a list first and then each member of it (WikiFactbook's landlocked neighbours); a comparison or an
# intersection names every entity it needs in the question.
SEQUENTIAL_KINDS = frozenset({"bridge", "count"})
PARALLEL_KINDS = frozenset({"comparison", "intersection"})


def evidence_order(task) -> str | None:
    """Whether the hops of a question must be searched one after another: the one rule of the project.

    ``"sequential"`` when some hop's lookup needs what an earlier hop found (its searched entity is an
    earlier hop's answer: a bridge), ``"parallel"`` when every lookup is named by the question and could be
    issued at once (a comparison of two named entities, an intersection of two named relations), and
    ``"single"`` for one lookup, which is neither: counting 1-hop lookups as "parallel" would mix the
    easiest questions into that stratum. Read from the task's structure where the world records it
    (``meta["steps"]``: each hop's ``search`` and the ``value`` it reveals, as SyntheticWorld does), else
    from its kind (`SEQUENTIAL_KINDS`, `PARALLEL_KINDS`); None for a kind neither knows.

    >>> from searchgym.tasks import Task
    >>> step = lambda search, value: {"search": search, "value": value}
    >>> bridge = Task("b", "?", ("x",), (), 2, "bridge", "test", meta={"steps": [step("Ana", "Oslo"),
    ...                                                                          step("Oslo", "1900")]})
    >>> both = Task("c", "?", ("x",), (), 2, "comparison", "test", meta={"steps": [step("Ana", "1901"),
    ...                                                                          step("Bo", "1902")]})
    >>> evidence_order(bridge), evidence_order(both)
    ('sequential', 'parallel')
    >>> evidence_order(Task("o", "?", ("x",), (), 1, "bridge", "test"))  # no steps recorded: hops and kind
    'single'
    >>> evidence_order(Task("u", "?", ("x",), (), 2, "riddle", "test")) is None
    True
    """
    steps = task.meta.get("steps") if isinstance(task.meta, Mapping) else None
    if isinstance(steps, list) and steps and all(isinstance(s, Mapping) and "search" in s and "value" in s
                                                 for s in steps):
        if len(steps) == 1:
            return "single"
        found: set[str] = set()
        for s in steps:
            if s["search"] in found:  # this hop searches for what an earlier hop answered
                return "sequential"
            found.update(str(v) for v in (s["value"], s.get("value_alias")) if v)
        return "parallel"
    if task.difficulty <= 1:
        return "single"
    if task.kind in SEQUENTIAL_KINDS:
        return "sequential"
    if task.kind in PARALLEL_KINDS:
        return "parallel"
    return None


def task_strata(task) -> dict[str, str]:
    """The strata of one task: ``{"hops": …, "kind": …, "order": …}`` (order left out where unknown).

    >>> from searchgym.tasks import Task
    >>> task_strata(Task("t", "?", ("x",), (), 2, "comparison", "test"))
    {'hops': '2', 'kind': 'comparison', 'order': 'parallel'}
    """
    out = {"hops": str(task.difficulty), "kind": str(task.kind)}
    order = evidence_order(task)
    return out | ({"order": order} if order else {})


def _natural(value: str) -> tuple:
    return tuple((0, int(s), "") if s.isdigit() else (1, 0, s) for s in re.split(r"(\d+)", value))


def group_strata(strata: Mapping[str, Mapping[str, str]], questions: Sequence[str] | None = None,
                 min_values: int = 1) -> dict[str, list[str]]:
    """``{"<axis>=<value>": [task ids]}`` over ``questions`` (default: every task in ``strata``), axes in
    `AXES` order (then any other axis), values in natural order (hops=2 before hops=10), ids sorted. An
    axis with fewer than ``min_values`` distinct values among the questions is left out (one value is
    the pooled curve again).

    >>> group_strata({"a": {"hops": "2", "kind": "bridge"}, "b": {"hops": "10", "kind": "bridge"}}, min_values=2)
    {'hops=2': ['a'], 'hops=10': ['b']}
    """
    qs = sorted(strata if questions is None else (q for q in questions if q in strata))
    axes = sorted({a for q in qs for a in strata[q]}, key=lambda a: (AXES.index(a) if a in AXES else len(AXES), a))
    out: dict[str, list[str]] = {}
    for axis in axes:
        values = sorted({strata[q][axis] for q in qs if axis in strata[q]}, key=_natural)
        if len(values) < min_values:
            continue
        for v in values:
            out[f"{axis}={v}"] = [q for q in qs if strata[q].get(axis) == v]
    return out


def _restrict(counts: Counts, questions: Sequence[str]) -> list[dict[str, int]]:
    return [{q: run[q] for q in questions} for run in _runs(counts)]


def passk_strata(counts: Counts, n: int, strata: Mapping[str, Mapping[str, str]], ks: Sequence[int] | None = None,
                 n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, min_values: int = 1) -> dict[str, float]:
    """Unbiased pass@k per stratum: ``passk/<stratum>/pass@<k>`` with ``_lo``/``_hi`` (percentile bootstrap
    over the stratum's questions) and ``passk/<stratum>/questions``.

    ``counts`` is ``{task_id: c}`` (c correct of n samples) for one run, or a list of such dicts for several
    seeds: a question's pass@k is then the mean over the runs, as in the pooled curve. Only questions every
    run answered and ``strata`` describes count. ``ks`` defaults to the ladder 1, 2, 4, … n.

    >>> r = passk_strata([{"a": 1, "b": 4}, {"a": 3, "b": 4}], n=4, strata={"a": {"kind": "x"}, "b": {"kind": "y"}})
    >>> r["passk/kind=x/pass@1"], r["passk/kind=x/pass@2"]  # mean of 1/4 and 3/4; of 1/2 and 1
    (0.5, 0.75)
    """
    ks = list(ks) if ks is not None else k_ladder(n)
    runs = _runs(counts)
    shared = set.intersection(*(set(run) for run in runs))
    out: dict[str, float] = {}
    for name, qs in group_strata(strata, sorted(shared), min_values).items():
        c = np.array([[run[q] for q in qs] for run in runs], dtype=np.int64)  # (runs, questions)
        per_q = pass_at_k_table(n, c.ravel(), ks).reshape(len(runs), len(qs), len(ks)).mean(axis=0)
        out[f"passk/{name}/questions"] = float(len(qs))
        for j, k in enumerate(ks):
            value, lo, hi = bootstrap_ci(per_q[:, j], n_boot=n_boot, alpha=alpha, seed=seed)
            out[f"passk/{name}/pass@{k}"], out[f"passk/{name}/pass@{k}_lo"], out[f"passk/{name}/pass@{k}_hi"] = \
                value, lo, hi
    return out


def curves_of(flat: Mapping[str, float]) -> dict[str, dict[int, float]]:
    """``{stratum: {k: pass@k}}`` back from the flat keys of `passk_strata` (CIs and counts dropped).

    >>> curves_of({"passk/hops=1/pass@1": 0.5, "passk/hops=1/pass@1_lo": 0.1, "passk/hops=1/questions": 3.0})
    {'hops=1': {1: 0.5}}
    """
    out: dict[str, dict[int, float]] = {}
    for key, value in flat.items():
        m = re.fullmatch(r"passk/(.+)/pass@(\d+)", key)
        if m:
            out.setdefault(m.group(1), {})[int(m.group(2))] = value
    return out


def stratum_crossings(base: Mapping[str, Mapping[int, float]],
                      arm: Mapping[str, Mapping[int, float]]) -> dict[str, int | None]:
    """Per stratum both curves hold, the smallest k at which the base's pass@k catches up with the arm's
    (`searchgym.meters.passk.crossing_k`): None where the arm is not ahead at k = 1 or stays ahead.

    >>> stratum_crossings({"hops=1": {1: 0.2, 2: 0.5}, "hops=2": {1: 0.5, 2: 0.6}},
    ...                   {"hops=1": {1: 0.3, 2: 0.4}, "hops=2": {1: 0.4, 2: 0.7}})
    {'hops=1': 2, 'hops=2': None}
    """
    return {s: crossing_k(base[s], arm[s]) for s in base if s in arm}


def crossing_strata(base: Counts, arm: Counts, n: int, strata: Mapping[str, Mapping[str, str]], n_boot: int = 1000,
                    seed: int = 0, min_values: int = 1) -> dict[str, float]:
    """The base-vs-arm crossing (`searchgym.meters.coverage.crossing`) on each stratum's questions:
    ``passk/<stratum>/crossing_k`` (NaN: no crossing), ``crossing_state`` (1 crossed, 0 the arm ahead to
    k = n, -1 the arm not ahead at k = 1), ``crossing_boot_share`` (share of bootstrap resamples of the
    stratum's questions that cross) and ``crossing_k_lo``/``_hi``, plus ``passk/<stratum>/questions``.

    >>> r = crossing_strata({"a": 3, "b": 0}, {"a": 4, "b": 0}, n=4,
    ...                     strata={"a": {"hops": "1"}, "b": {"hops": "2"}}, n_boot=50)
    >>> r["passk/hops=1/crossing_k"], r["passk/hops=2/crossing_state"]  # hops=2: nobody solves it
    (2.0, -1.0)
    """
    out: dict[str, float] = {}
    for name, qs in group_strata(strata, shared_questions(base, arm), min_values).items():
        found = crossing(_restrict(base, qs), _restrict(arm, qs), n, n_boot=n_boot, seed=seed)
        out |= {key.replace("passk/", f"passk/{name}/", 1): value for key, value in found.items()}
        out[f"passk/{name}/questions"] = float(len(qs))
    return out


def crossing_text(flat: Mapping[str, float], stratum: str | None = None) -> str:
    """One cell of a crossing table from `crossing_strata`'s keys (``stratum`` None: the pooled
    ``passk/crossing_*`` keys of `searchgym.meters.coverage.crossing`).

    >>> crossing_text({"passk/hops=1/crossing_k": 4.0, "passk/hops=1/crossing_state": 1.0,
    ...                "passk/hops=1/crossing_boot_share": 0.9}, "hops=1")
    'k = 4 (90% of resamples)'
    >>> crossing_text({"passk/crossing_k": math.nan, "passk/crossing_state": 0.0})
    'none: arm ahead to k = n'
    """
    prefix = f"passk/{stratum}/" if stratum else "passk/"
    state = flat.get(f"{prefix}crossing_state", math.nan)
    if state == 1.0:
        share = flat.get(f"{prefix}crossing_boot_share", math.nan)
        return f"k = {flat[f'{prefix}crossing_k']:.0f}" + (f" ({share:.0%} of resamples)" if math.isfinite(share) else "")
    return {0.0: "none: arm ahead to k = n", -1.0: "arm not ahead at k = 1"}.get(state, "–")
