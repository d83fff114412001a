"""Step 2 of a report: the numbers — runs grouped into arms, metered at one fixed n on shared questions.

Summarises each arm of the runs `searchgym.report.discover` found over its seeds with `searchgym.meters`:
IQM and 95% CIs of the headline meters (strategy entropy: the jackknife, mean over seeds and questions
with a two-level bootstrap CI, the rule docs/calibration.md found to cover the truth), each run's
per-question values of the table's meters (what the verdict's paired comparison of two arms resamples,
`paired_two_level_bootstrap_ci`), pass@k curves with bootstrap CIs over questions, solvable-set
overlap with the base arm, strategy shares and training curves (mean and min–max band over seeds). The
verdict (`searchgym.report.rules`), the figures (`searchgym.report.figures`) and the page
(`searchgym.report.page`) are built from these summaries.
"""

from __future__ import annotations

import math
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from searchgym.meters.aggregate import average, per_question
from searchgym.meters.common_n import common_n
from searchgym.meters.coverage import compare_with_base
from searchgym.meters.literature import entropy_reward_points, fit_entropy_reward
from searchgym.meters.passk import k_ladder, pass_at_k_table, pass_hat_k_table, solvable_set_overlap
from searchgym.meters.stats import bootstrap_ci, iqm, stratified_bootstrap_ci
from searchgym.meters.table import label, missing, unit
from searchgym.report.discover import BASE, RunData, normalise

# Training-curve panels: metric keys in order of preference (the first one a run logged is used): live meter
# probes first (diversity/…, search/…, reward/…: the same held-out questions and decoding for SFT and GRPO
# arms, so the arms are comparable), then what the trainers log themselves (GRPO's own rollouts on train
# questions; used only for runs without probes). The first key's label and unit in the table of meters
# (`searchgym.meters.table`) title the panel and its y axis.
PANEL_KEYS = (
    # Sampled token entropy (live probes) only: SFT's train/entropy is the entropy on demonstration tokens
    # under teacher forcing, a different quantity on a different scale.
    ("entropy/token", "diversity/token_entropy"),
    ("diversity/strategy_entropy_jk", "diversity/strategy_entropy_mm", "diversity/strategy_entropy"),
    ("search/calls_mean", "search/tool_calls_per_episode"),
    ("reward/mean", "train/reward"),
    ("reward/std", "train/reward_std"),
)
# The strategy-entropy column: the jackknife per question (seed, question), its mean over seeds and questions
# with a two-level bootstrap CI (`two_level_bootstrap_ci`). docs/calibration.md measured every candidate
# estimator x interval on mixtures of known entropy at the quick study's sizes: Miller–Madow is biased low
# by up to 0.08 nats at n = 8 and the previous CI (the range of 3 seed values) covered the truth in 6-74% of
# studies; this is the narrowest combination covering it in >= 90% for every mixture.
STRATEGY_KEY = "diversity/strategy_entropy_jk"
TWO_LEVEL_KEYS = (STRATEGY_KEY,)  # columns whose CI is `two_level_bootstrap_ci`, not the seed rule
PAIRED_BOOT = 2000  # resamples of the paired comparison of two arms (`paired_two_level_bootstrap_ci`)
# The table's columns ("{n}" is the fixed n), and further per-run meters summarised like them (IQM over
# seeds, or CIs over questions with one seed): the template-collapse panel (cross-input identifiability
# beside within-input entropy) and depth adaptivity. Their labels come from the table of meters.
TABLE_KEYS = ("reward/success", "passk/pass@{n}", STRATEGY_KEY, "search/unique_docs", "search/query_breadth")
EXTRA_KEYS = ("diversity/cross_input", "diversity/cross_input_lift", "diversity/signature_entropy_mm",
              "diversity/strategy_entropy_mm", "search/depth_adaptivity")


def _title(key: str) -> str:
    text = label(key)
    return text[:1].upper() + text[1:]


TRAINING_PANELS = tuple((_title(keys[0]), unit(keys[0]), keys) for keys in PANEL_KEYS)  # (title, y label, keys)
TABLE_METRICS = tuple((label(key), key) for key in TABLE_KEYS)  # (label, key): "pass@n" for "passk/pass@{n}"
EXTRA_METRICS = tuple((label(key), key) for key in EXTRA_KEYS)


@dataclass
class Estimate:
    """A point estimate with its 95% CI and how the CI was made."""

    value: float
    lo: float
    hi: float
    method: str = ""

    def overlaps(self, other: Estimate) -> bool:
        return not (self.lo > other.hi or self.hi < other.lo)


def fmt(value: float, digits: int = 3) -> str:
    """A number for a table; '–' for a meter that is not available.

    >>> fmt(0.12345), fmt(float("nan"))
    ('0.123', '–')
    """
    return f"{value:.{digits}f}" if value is not None and math.isfinite(value) else "–"


def ci_text(e: Estimate) -> str:
    """An estimate with its CI, as the table and the verdict show it.

    >>> ci_text(Estimate(0.5, 0.25, 0.75)), ci_text(Estimate(math.nan, math.nan, math.nan))
    ('0.500 [0.250, 0.750]', '– [–, –]')
    """
    return f"{fmt(e.value)} [{fmt(e.lo)}, {fmt(e.hi)}]"


@dataclass
class ArmSummary:
    name: str
    runs: list[RunData]
    meters: list[dict[str, float]]  # per run, averaged over questions
    table: dict[str, Estimate]  # TABLE_METRICS label -> IQM over seeds with CI
    passk: dict[int, Estimate]  # k -> mean over questions (seeds averaged) with bootstrap CI
    shares: dict[str, float]  # strategy -> share of all samples (seeds pooled)
    curves: dict[str, list[tuple[float, float, float, float]]]  # panel -> [(step, mean, min, max)]
    overlap: dict[str, float] | None = None  # solvable-set overlap with the base arm (mean over run pairs)
    demo_share: dict[str, float] | None = None
    prior_share: dict[str, float] | None = None  # the realised strategy mix a prior-lab base was pretrained on
    passhat: dict[int, Estimate] = field(default_factory=dict)  # k -> pass^k (all k correct), like passk
    extra: dict[str, Estimate] = field(default_factory=dict)  # EXTRA_METRICS label -> estimate
    # Against the base arm (`searchgym.meters.coverage.compare_with_base`, seeds pooled): coverage/…,
    # ΔSE and the pass@k crossing, flat keys with _lo/_hi; None for the base itself or without a base.
    vs_base: dict[str, float] | None = None
    # The entropy–reward law per run: (entropy, reward, (keys)) points from metrics.jsonl, each run's fit,
    # and the arm's fit over all its runs' points (its tail check: the mean of the runs' own).
    entropy_reward: list[tuple[list[float], list[float], tuple[str, str] | None]] = field(default_factory=list)
    run_fits: list[dict[str, float]] = field(default_factory=list)
    fit: dict[str, float] | None = None
    # TABLE_METRICS label -> (runs, questions) matrix of each run's per-question meter on the shared questions
    # (rows in the order of ``runs``, columns in the order of ``questions``; NaN where a question did not
    # emit it): what `paired_difference` resamples. Empty (hand-built summaries): comparisons fall back to
    # the two CIs (`searchgym.report.rules.compare`).
    per_question: dict[str, np.ndarray] = field(default_factory=dict)
    questions: list[str] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]


@dataclass
class StudyData:
    arms: list[ArmSummary]
    n: int
    questions: int
    notes: list[str] = field(default_factory=list)

    def arm(self, name: str) -> ArmSummary | None:
        return next((a for a in self.arms if a.name == name), None)


# ---- one fixed n on one question set ----------------------------------------------------------------

def equalise(runs: list[RunData]) -> tuple[int, set[str], list[str]]:
    """The common n (`searchgym.meters.common_n`) and the questions every run answered."""
    notes = []
    sizes, tasks = {}, None
    for r in runs:
        counts = Counter(t.task_id for t in r.trajectories)
        if not counts:
            raise ValueError(f"{r.path}: trajectories.jsonl is empty; re-run its evaluation")
        sizes[str(r.path)] = (min(counts.values()), max(counts.values()))
        tasks = set(counts) if tasks is None else tasks & set(counts)
    n, note, down_sampled = common_n(sizes)  # the rule `searchgym meter` follows too
    if down_sampled:
        print(f"warning: {note}", file=sys.stderr)
        notes.append(f"runs were evaluated at different n; {note}")
    total = {t.task_id for r in runs for t in r.trajectories}
    if not tasks:
        raise ValueError("the runs share no question; evaluate every arm on the same env and split")
    if len(tasks) < len(total):
        notes.append(f"{len(total) - len(tasks)} question(s) not answered by every run were left out "
                     f"({len(tasks)} shared)")
    return n, tasks, notes


# ---- per-arm summaries ------------------------------------------------------------------------------

def seed_estimate(values: list[float], per_q: list[float]) -> Estimate:
    """IQM over seeds with a stratified bootstrap CI (rliable); with one seed, the mean over questions with
    a bootstrap CI over questions instead."""
    v = [x for x in values if math.isfinite(x)]
    if len(v) >= 2:
        point, lo, hi = stratified_bootstrap_ci(np.array(v)[:, None], iqm, n_boot=1000)
        return Estimate(point, lo, hi, f"IQM over {len(v)} seeds, stratified bootstrap")
    point, lo, hi = bootstrap_ci(per_q, n_boot=1000)
    return Estimate(point, lo, hi, "1 seed: mean over questions, bootstrap over questions")


def two_level_bootstrap_ci(values: np.ndarray | list[list[float]], n_boot: int = 1000, alpha: float = 0.05,
                           seed: int = 0) -> tuple[float, float, float]:
    """Mean of a (seeds, questions) matrix of per-question values and its two-level percentile bootstrap
    (1 - alpha) CI: each resample draws seeds with replacement, then questions with replacement (the same
    questions for every seed drawn: the seeds answered the same questions), and averages the drawn cells.
    Seeds carry training variance and sampling noise, questions their spread; with one seed it is a
    bootstrap over questions. NaN cells are left out of every mean.

    >>> point, lo, hi = two_level_bootstrap_ci([[0.6, 0.7, 0.8], [0.6, 0.7, 0.8]])
    >>> round(point, 6), 0.6 <= lo < 0.7 < hi <= 0.8
    (0.7, True)
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or not np.isfinite(v).any():
        return math.nan, math.nan, math.nan
    seeds, questions = v.shape
    rng = np.random.default_rng(seed)  # draws in the order of `meters.claim_rules.two_level_weights`
    seed_idx = rng.integers(0, seeds, size=(n_boot, seeds))
    question_idx = rng.integers(0, questions, size=(n_boot, questions))
    drawn = v[seed_idx[:, :, None], question_idx[:, None, :]]  # (n_boot, seeds, questions)
    finite = np.isfinite(drawn)
    stats = np.where(finite, drawn, 0.0).sum(axis=(1, 2)) / np.maximum(finite.sum(axis=(1, 2)), 1)
    stats = stats[finite.any(axis=(1, 2))]
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(np.nanmean(v)), float(lo), float(hi)


def _two_level_estimate(matrix: list[list[float]]) -> Estimate:
    """A column under the two-level rule (`TWO_LEVEL_KEYS`): per-question values of every seed."""
    point, lo, hi = two_level_bootstrap_ci(matrix)
    seeds = sum(any(math.isfinite(x) for x in row) for row in matrix)
    if not math.isfinite(point):
        return Estimate(math.nan, math.nan, math.nan, "not measured")
    return Estimate(point, lo, hi, f"mean over {seeds} seed(s) x {len(matrix[0])} questions, "
                                   "two-level bootstrap (seeds, then questions)")


def paired_two_level_bootstrap_ci(a: np.ndarray | list[list[float]], b: np.ndarray | list[list[float]],
                                  n_boot: int = PAIRED_BOOT, alpha: float = 0.05,
                                  seed: int = 0) -> tuple[float, float, float, int]:
    """Paired comparison of two arms on shared questions: ``a`` (seeds_a, questions) and ``b`` (seeds_b,
    questions) hold each seed's per-question value, columns the same questions. The difference is the mean
    over questions of (arm a's value - arm b's value), each arm's value of a question the mean over its
    seeds; its 95% CI is a two-level percentile bootstrap, as the strategy-entropy column's own CI
    (`two_level_bootstrap_ci`): each resample draws a's seeds with replacement, then b's seeds, then
    questions with replacement, the SAME questions for both arms (so each question's own level cancels in
    the difference, and seed-to-seed variance, training included, stays in). Returns (difference, lo, hi,
    questions used). Questions where an arm has no finite value are left out; in a resample, a question
    whose drawn seeds of one arm are all NaN is left out of that resample. The vectorised twin is
    `searchgym.meters.claim_rules.paired_two_level_ci` (same draws).

    >>> d, lo, hi, q = paired_two_level_bootstrap_ci([[0.9, 0.5, 0.2, 0.7]] * 3, [[0.8, 0.4, 0.1, 0.6]] * 3)
    >>> round(d, 6), round(lo, 6), round(hi, 6), q  # every question 0.1 lower in b: no spread to resample
    (0.1, 0.1, 0.1, 4)
    """
    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if va.ndim != 2 or vb.ndim != 2 or va.shape[1] != vb.shape[1]:
        raise ValueError(f"paired comparison needs (seeds, questions) matrices on the same questions, got "
                         f"{va.shape} and {vb.shape}")
    keep = np.isfinite(va).any(axis=0) & np.isfinite(vb).any(axis=0)
    if not keep.any():
        return math.nan, math.nan, math.nan, 0
    va, vb = va[:, keep], vb[:, keep]
    questions = va.shape[1]
    rng = np.random.default_rng(seed)  # draws in the order of `meters.claim_rules.paired_two_level_weights`
    seeds_a = rng.integers(0, va.shape[0], size=(n_boot, va.shape[0]))
    seeds_b = rng.integers(0, vb.shape[0], size=(n_boot, vb.shape[0]))
    question_idx = rng.integers(0, questions, size=(n_boot, questions))

    def drawn_means(v: np.ndarray, seed_idx: np.ndarray) -> np.ndarray:  # (n_boot, questions drawn)
        drawn = v[seed_idx[:, :, None], question_idx[:, None, :]]  # (n_boot, seeds, questions)
        finite = np.isfinite(drawn)
        count = finite.sum(axis=1)
        total = np.where(finite, drawn, 0.0).sum(axis=1)
        return np.divide(total, count, out=np.full(total.shape, math.nan), where=count > 0)

    diff = drawn_means(va, seeds_a) - drawn_means(vb, seeds_b)
    ok = np.isfinite(diff)
    stats = np.where(ok, diff, 0.0).sum(axis=1) / np.maximum(ok.sum(axis=1), 1)
    stats = stats[ok.any(axis=1)]
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    point = float(np.mean(np.nanmean(va, axis=0) - np.nanmean(vb, axis=0)))
    return point, float(lo), float(hi), questions


def paired_difference(a: ArmSummary, b: ArmSummary, label: str) -> tuple[Estimate, int] | None:
    """Arm ``a`` minus arm ``b`` on the table column ``label`` by `paired_two_level_bootstrap_ci`, on the
    questions both arms answered, and the number of questions it used; None where either arm has no
    per-question values of the column (the caller falls back to the two CIs)."""
    ma, mb = a.per_question.get(label), b.per_question.get(label)
    if ma is None or mb is None or not a.questions or not b.questions:
        return None
    shared = sorted(set(a.questions) & set(b.questions))
    col_a, col_b = {q: i for i, q in enumerate(a.questions)}, {q: i for i, q in enumerate(b.questions)}
    va = np.asarray(ma, dtype=np.float64)[:, [col_a[q] for q in shared]]
    vb = np.asarray(mb, dtype=np.float64)[:, [col_b[q] for q in shared]]
    if not shared or not np.isfinite(va).any() or not np.isfinite(vb).any():
        return None
    point, lo, hi, used = paired_two_level_bootstrap_ci(va, vb)
    if not used:
        return None
    return Estimate(point, lo, hi, f"paired difference over {used} shared questions, two-level bootstrap "
                                   f"(seeds within each arm, then questions), {PAIRED_BOOT} resamples"), used


def training_curves(metrics: list[list[dict]]) -> dict[str, list[tuple[float, float, float, float]]]:
    """Per panel, (step, mean, min, max) over runs at every step a run logged; stages are laid end to end
    (GRPO after SFT starts where SFT's steps end)."""
    curves = {}
    for title, _, keys in TRAINING_PANELS:
        by_step: dict[float, list[float]] = defaultdict(list)
        for rows in metrics:
            key = next((k for k in keys if any(k in row for row in rows)), None)
            if key is None:
                continue
            for x, y in _series(rows, key):
                by_step[x].append(y)
        if by_step:
            curves[title] = [(x, float(np.mean(ys)), min(ys), max(ys)) for x, ys in sorted(by_step.items())]
    return curves


def _series(rows: list[dict], key: str) -> list[tuple[float, float]]:
    """(global step, value) of one key, with each stage offset by the steps of the stages before it.

    >>> rows = [{"stage": "sft", "step": 5, "k": 1.0}, {"stage": "sft", "step": 10, "k": 2.0},
    ...         {"stage": "grpo", "step": 1, "k": 3.0}]
    >>> _series(rows, "k")
    [(5.0, 1.0), (10.0, 2.0), (11.0, 3.0)]
    """
    last: dict[str, float] = {}
    for row in rows:
        if isinstance(row.get("step"), int | float):
            stage = row.get("stage", "")
            last[stage] = max(last.get(stage, 0.0), float(row["step"]))
    offset, start = 0.0, {}
    for stage, end in last.items():  # stages in the order they first logged
        start[stage], offset = offset, offset + end
    out = []
    for row in rows:
        value = row.get(key)
        if isinstance(value, int | float) and math.isfinite(value) and isinstance(row.get("step"), int | float):
            out.append((start.get(row.get("stage", ""), 0.0) + float(row["step"]), float(value)))
    return out


def key_estimate(metered: list[dict[str, float]], per_qs: list[dict[str, dict[str, float]]], tasks: set[str],
                  key: str) -> Estimate:
    """A per-run meter as IQM over seeds (`seed_estimate`), or for `TWO_LEVEL_KEYS` the mean over seeds and
    questions with a two-level bootstrap CI; a key with no per-question values (a correlation over
    questions) falls back, with one seed, to the run's own ``_lo``/``_hi`` keys."""
    if key in TWO_LEVEL_KEYS:
        return _two_level_estimate([[pq[q].get(key, math.nan) if q in pq else math.nan for q in sorted(tasks)]
                                    for pq in per_qs])
    per_q = [float(np.nanmean([pq[q].get(key, math.nan) for pq in per_qs])) if
             any(math.isfinite(pq[q].get(key, math.nan)) for pq in per_qs) else math.nan
             for q in sorted(tasks)]
    values = [m.get(key, math.nan) for m in metered]
    if sum(math.isfinite(v) for v in values) < 2 and not any(math.isfinite(v) for v in per_q):
        run = next((m for m in metered if math.isfinite(m.get(key, math.nan))), None)
        if run is None:
            return Estimate(math.nan, math.nan, math.nan, "not measured")
        return Estimate(run[key], run.get(f"{key}_lo", math.nan), run.get(f"{key}_hi", math.nan),
                        "1 seed: bootstrap over questions")
    return seed_estimate(values, per_q)


def _entropy_reward(arm_runs: list[RunData]) -> tuple[list, list[dict[str, float]], dict[str, float] | None]:
    """Each run's entropy–reward points and fit, and the arm's fit over all its points (tail check: the
    mean of the runs' own, each fitted on its first half; pooled points have no single time order)."""
    points = [entropy_reward_points(r.metrics) for r in arm_runs]
    fits = [fit_entropy_reward(h, y) for h, y, _ in points]
    pooled_h = [x for h, _, _ in points for x in h]
    if not pooled_h:
        return points, fits, None
    fit = fit_entropy_reward(pooled_h, [y for _, ys, _ in points for y in ys])
    for key in ("fit/entropy_reward_tail_mae", "fit/entropy_reward_tail_mae_flat"):
        tails = [f[key] for f in fits if math.isfinite(f[key])]
        fit[key] = float(np.mean(tails)) if tails else math.nan
    return points, fits, fit


def summarise(runs: list[RunData]) -> StudyData:
    """Group runs into arms and compute everything the report shows."""
    n, tasks, notes = equalise(runs)
    by_arm: dict[str, list[RunData]] = {}
    for r in runs:
        by_arm.setdefault(r.arm, []).append(r)
    counts: dict[str, list[dict[str, int]]] = {}
    arms = []
    ks = k_ladder(n)
    for name, arm_runs in by_arm.items():
        metered, per_qs, arm_counts = [], [], []
        for r in arm_runs:
            kept = [t for t in r.trajectories if t.task_id in tasks]
            pq, difficulty, _ = per_question(kept, samples=n)
            metered.append(average(pq, difficulty, n))
            per_qs.append(pq)
            groups = defaultdict(list)
            for t in kept:
                groups[t.task_id].append(t)
            arm_counts.append({q: sum(t.correct for t in sorted(g, key=lambda t: t.sample)[:n])
                               for q, g in groups.items()})
        counts[name] = arm_counts
        table = {label: key_estimate(metered, per_qs, tasks, key.format(n=n)) for label, key in TABLE_METRICS}
        questions = sorted(tasks)
        per_question_values = {  # NaN, or 0 for a count no sample made, as `meters.aggregate.average` reads it
            label: np.array([[pq[q].get(key.format(n=n), missing(key.format(n=n))) if q in pq else math.nan
                              for q in questions] for pq in per_qs], dtype=np.float64)
            for label, key in TABLE_METRICS}
        extra = {label: key_estimate(metered, per_qs, tasks, key) for label, key in EXTRA_METRICS}
        matrix = np.array([[c[q] for q in sorted(tasks)] for c in arm_counts])  # (runs, questions)
        curves = {}
        for kind, table_fn in (("passk", pass_at_k_table), ("passhat", pass_hat_k_table)):
            per_q = table_fn(n, matrix.ravel(), ks).reshape(len(arm_counts), len(tasks), len(ks)).mean(axis=0)
            curves[kind] = {k: Estimate(*bootstrap_ci(per_q[:, j], n_boot=1000), "bootstrap over questions")
                            for j, k in enumerate(ks)}
        strategies = Counter(t.strategy or "other" for r in arm_runs for t in r.trajectories if t.task_id in tasks)
        demo = next((r.demo_share for r in arm_runs if r.demo_share), None)
        prior = next((r.prior_share for r in arm_runs if r.prior_share), None)
        points, run_fits, fit = _entropy_reward(arm_runs)
        arms.append(ArmSummary(name, arm_runs, metered, table, curves["passk"], normalise(dict(strategies)),
                               training_curves([r.metrics for r in arm_runs]), demo_share=demo,
                               prior_share=prior, passhat=curves["passhat"], extra=extra,
                               entropy_reward=points, run_fits=run_fits, fit=fit,
                               per_question=per_question_values, questions=questions))
    if BASE in counts:
        for arm in arms:
            if arm.name != BASE:
                pairs = [solvable_set_overlap(a, b) for a in counts[arm.name] for b in counts[BASE]]
                arm.overlap = {k: float(np.mean([p[k] for p in pairs])) for k in pairs[0]}
                arm.vs_base = compare_with_base(counts[BASE], counts[arm.name], n, n_boot=1000)
    else:
        notes.append("no base arm: solvable-set overlap and comparisons with the untrained model are omitted")
    return StudyData(arms, n, len(tasks), notes)
