"""The numbers behind a study report: runs grouped into arms, metered at one fixed n on shared questions.

Reads run folders (``trajectories.jsonl``, ``metrics.jsonl``, and where present a demonstration mix) and
summarises each arm over its seeds with `searchgym.meters`: IQM and 95% CIs of the headline meters,
pass@k curves with bootstrap CIs over questions, solvable-set overlap with the base arm, strategy shares
and training curves (mean and min–max band over seeds). Figures and text are built from these summaries.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from searchgym.meters.aggregate import average, per_question
from searchgym.meters.coverage import compare_with_base
from searchgym.meters.literature import entropy_reward_points, fit_entropy_reward
from searchgym.meters.passk import k_ladder, pass_at_k_table, pass_hat_k_table, solvable_set_overlap
from searchgym.meters.stats import bootstrap_ci, iqm, stratified_bootstrap_ci
from searchgym.runs import read_metrics
from searchgym.trajectory import Trajectory, read_trajectories

BASE = "base"
# Training-curve panels: title, y label, metric keys in order of preference (the first one a run logged is
# used): live meter probes first (diversity/…, search/…, reward/…: the same held-out questions and decoding
# for SFT and GRPO arms, so the arms are comparable), then what the trainers log themselves (GRPO's own
# rollouts on train questions; used only for runs without probes).
TRAINING_PANELS = (
    # Sampled token entropy (live probes) only: SFT's train/entropy is the entropy on demonstration tokens
    # under teacher forcing, a different quantity on a different scale.
    ("Token entropy", "nats per token (sampled)", ("entropy/token", "diversity/token_entropy")),
    ("Strategy entropy", "nats (Miller–Madow)", ("diversity/strategy_entropy_mm", "diversity/strategy_entropy")),
    ("Tool calls per episode", "tool calls", ("search/calls_mean", "search/tool_calls_per_episode")),
    ("Reward", "mean episode reward", ("reward/mean", "train/reward")),
    ("Reward spread", "std of reward within a group", ("reward/std", "train/reward_std")),
)
# The table's columns: label, meter key ("{n}" is the fixed n).
TABLE_METRICS = (
    ("success@1", "reward/success"),
    ("pass@n", "passk/pass@{n}"),
    ("strategy entropy", "diversity/strategy_entropy_mm"),
    ("unique docs", "search/unique_docs"),
    ("query breadth", "search/query_breadth"),
)
# Further per-run meters summarised like the table's (IQM over seeds, or CIs over questions with one seed):
# the template-collapse panel (cross-input identifiability beside within-input entropy) and depth adaptivity.
EXTRA_METRICS = (
    ("cross-input accuracy", "diversity/cross_input"),
    ("cross-input lift", "diversity/cross_input_lift"),
    ("signature entropy", "diversity/signature_entropy_mm"),
    ("strategy entropy", "diversity/strategy_entropy_mm"),
    ("depth adaptivity", "search/depth_adaptivity"),
)


@dataclass
class RunData:
    arm: str
    seed: int
    path: Path
    trajectories: list[Trajectory]
    metrics: list[dict]
    demo_share: dict[str, float] | None = None
    prior_share: dict[str, float] | None = None


@dataclass
class Estimate:
    """A point estimate with its 95% CI and how the CI was made."""

    value: float
    lo: float
    hi: float
    method: str = ""

    def overlaps(self, other: Estimate) -> bool:
        return not (self.lo > other.hi or self.hi < other.lo)


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


# ---- 1. finding runs --------------------------------------------------------------------------------

def _seed_of(folder: Path) -> int | None:
    m = re.fullmatch(r"seed(\d+)", folder.name)
    return int(m.group(1)) if m else None


def _recipe_seed(folder: Path) -> int:
    try:
        return int(tomllib.loads((folder / "recipe.toml").read_text(encoding="utf-8")).get("seed", 0))
    except (OSError, tomllib.TOMLDecodeError, TypeError, ValueError):
        return 0


def _load_run(arm: str, seed: int, folder: Path) -> RunData:
    return RunData(arm, seed, folder, list(read_trajectories(folder)), read_metrics(folder),
                   demo_strategy_share(folder), prior_strategy_share(folder))


def discover_runs(paths: list[Path]) -> list[RunData]:
    """Runs from study folders (``<arm>/seed<k>/``) and single run folders, in a stable arm order.

    A single run folder's arm is its parent's name when the folder is ``seed<k>``, else its own name; its
    ``baseline/`` evaluation (written by ``searchgym train``) becomes a ``base`` run when no base arm is given.
    """
    runs: list[RunData] = []
    baselines: list[RunData] = []
    for path in map(Path, paths):
        if (path / "trajectories.jsonl").is_file():
            seed = _seed_of(path)
            arm = path.parent.name if seed is not None else path.name
            seed = seed if seed is not None else _recipe_seed(path)
            runs.append(_load_run(arm, seed, path))
            if (path / "baseline" / "trajectories.jsonl").is_file():
                baselines.append(_load_run(BASE, seed, path / "baseline"))
            continue
        order = _study_arm_order(path)
        found = sorted(path.glob("*/seed*/trajectories.jsonl"),
                       key=lambda p: (order.get(p.parent.parent.name, len(order)), p.parent.parent.name,
                                      _seed_of(p.parent) or 0))
        if not found:
            raise ValueError(f"{path}: neither a run folder (no trajectories.jsonl) nor a study folder (no "
                             "<arm>/seed<k>/trajectories.jsonl); pass the folder `searchgym experiment` or "
                             "`searchgym train` wrote")
        for p in found:
            if _seed_of(p.parent) is not None:
                runs.append(_load_run(p.parent.parent.name, _seed_of(p.parent), p.parent))
    if not any(r.arm == BASE for r in runs):
        runs = baselines + runs
    runs.sort(key=lambda r: r.arm != BASE)  # stable: the base arm first, everything else in given order
    return runs


def _study_arm_order(folder: Path) -> dict[str, int]:
    try:
        arms = tomllib.loads((folder / "study.toml").read_text(encoding="utf-8")).get("arms", {})
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    return {name: i for i, name in enumerate(arms)}


def demo_strategy_share(folder: Path) -> dict[str, float] | None:
    """The strategy mix of the demonstrations a run was trained on, where the run folder records it:
    ``demos/stats.json`` (written by the SFT stage, one entry per demo set; the set named by the recipe's
    ``sft.demos`` is used), else ``demos/<set>.jsonl``, else ``demo_strategy_share`` in summary.json.
    None when the run has no demonstrations.

    >>> import tempfile; d = Path(tempfile.mkdtemp()); (d / "demos").mkdir()
    >>> _ = (d / "recipe.toml").write_text('[sft]\\ndemos = "narrow"\\n')
    >>> _ = (d / "demos" / "diverse.jsonl").write_text('{"strategy": "a"}\\n{"strategy": "b"}\\n')
    >>> _ = (d / "demos" / "narrow.jsonl").write_text('{"strategy": "a"}\\n{"strategy": "a"}\\n')
    >>> demo_strategy_share(d)
    {'a': 1.0}
    """
    folder = Path(folder)
    try:
        kind = tomllib.loads((folder / "recipe.toml").read_text(encoding="utf-8")).get("sft", {}).get("demos")
    except (OSError, tomllib.TOMLDecodeError):
        kind = None
    kind = kind or "diverse"
    stats = folder / "demos" / "stats.json"
    if stats.is_file():
        try:
            share = json.loads(stats.read_text(encoding="utf-8")).get(kind, {}).get("strategy_share")
        except (json.JSONDecodeError, AttributeError):
            share = None
        if share:
            return _normalise({str(k): float(v) for k, v in share.items()})
    demos = folder / "demos" / f"{kind}.jsonl"
    if demos.is_file():
        counts: Counter = Counter()
        for line in demos.read_text(encoding="utf-8").splitlines():
            try:
                strategy = json.loads(line).get("strategy")
            except (json.JSONDecodeError, AttributeError):
                continue
            if strategy is not None:
                counts[strategy] += 1
        if counts:
            return _normalise(dict(counts))
    summary = folder / "summary.json"
    if summary.is_file():
        try:
            share = json.loads(summary.read_text(encoding="utf-8")).get("demo_strategy_share")
        except (json.JSONDecodeError, AttributeError):
            share = None
        if share:
            return _normalise({str(k): float(v) for k, v in share.items()})
    return None


def prior_strategy_share(folder: Path) -> dict[str, float] | None:
    """The realised strategy mix of a prior-lab base model: ``stages/pretrain/prior_mix.json`` of a run that
    pretrained its own prior, else the ``prior_mix.json`` next to the model folder its recipe's
    ``model.base`` names (a study's shared prior). None for any other base model.

    >>> import tempfile; d = Path(tempfile.mkdtemp()); (d / "stages" / "pretrain").mkdir(parents=True)
    >>> _ = (d / "stages" / "pretrain" / "prior_mix.json").write_text('{"realised": {"b": 1, "a": 3}}')
    >>> prior_strategy_share(d)
    {'a': 0.75, 'b': 0.25}
    """
    folder = Path(folder)
    candidates = [folder / "stages" / "pretrain" / "prior_mix.json"]
    try:
        base = tomllib.loads((folder / "recipe.toml").read_text(encoding="utf-8")).get("model", {}).get("base")
    except (OSError, tomllib.TOMLDecodeError):
        base = None
    if isinstance(base, str) and base and Path(base).is_dir():  # a model folder, not an alias or a hub id
        candidates.append(Path(base).parent / "prior_mix.json")
    for path in candidates:
        try:
            share = json.loads(path.read_text(encoding="utf-8")).get("realised")
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if share:
            return _normalise({str(k): float(v) for k, v in share.items()})
    return None


def _normalise(counts: dict[str, float]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: v / total for k, v in sorted(counts.items())} if total else {}


# ---- 2. one fixed n on one question set -------------------------------------------------------------

def equalise(runs: list[RunData]) -> tuple[int, set[str], list[str]]:
    """The common n (smallest samples-per-question of any run) and the questions every run answered."""
    notes = []
    sizes, tasks = [], None
    for r in runs:
        counts = Counter(t.task_id for t in r.trajectories)
        if not counts:
            raise ValueError(f"{r.path}: trajectories.jsonl is empty; re-run its evaluation")
        sizes.append(min(counts.values()))
        tasks = set(counts) if tasks is None else tasks & set(counts)
    n = min(sizes)
    if len(set(sizes)) > 1:
        notes.append(f"runs were evaluated at different n ({sorted(set(sizes))}); every meter uses the first "
                     f"n = {n} samples of each question")
    total = {t.task_id for r in runs for t in r.trajectories}
    if not tasks:
        raise ValueError("the runs share no question; evaluate every arm on the same env and split")
    if len(tasks) < len(total):
        notes.append(f"{len(total) - len(tasks)} question(s) not answered by every run were left out "
                     f"({len(tasks)} shared)")
    return n, tasks, notes


# ---- 3. per-arm summaries ---------------------------------------------------------------------------

def _seed_estimate(values: list[float], per_q: list[float]) -> Estimate:
    """IQM over seeds with a stratified bootstrap CI (rliable); with one seed, the mean over questions with
    a bootstrap CI over questions instead."""
    v = [x for x in values if math.isfinite(x)]
    if len(v) >= 2:
        point, lo, hi = stratified_bootstrap_ci(np.array(v)[:, None], iqm, n_boot=1000)
        return Estimate(point, lo, hi, f"IQM over {len(v)} seeds, stratified bootstrap")
    point, lo, hi = bootstrap_ci(per_q, n_boot=1000)
    return Estimate(point, lo, hi, "1 seed: mean over questions, bootstrap over questions")


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


def _key_estimate(metered: list[dict[str, float]], per_qs: list[dict[str, dict[str, float]]], tasks: set[str],
                  key: str) -> Estimate:
    """A per-run meter as IQM over seeds (`_seed_estimate`); a key with no per-question values (a
    correlation over questions) falls back, with one seed, to the run's own ``_lo``/``_hi`` keys."""
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
    return _seed_estimate(values, per_q)


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
        table = {label: _key_estimate(metered, per_qs, tasks, key.format(n=n)) for label, key in TABLE_METRICS}
        extra = {label: _key_estimate(metered, per_qs, tasks, key) for label, key in EXTRA_METRICS}
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
        arms.append(ArmSummary(name, arm_runs, metered, table, curves["passk"], _normalise(dict(strategies)),
                               training_curves([r.metrics for r in arm_runs]), demo_share=demo,
                               prior_share=prior, passhat=curves["passhat"], extra=extra,
                               entropy_reward=points, run_fits=run_fits, fit=fit))
    if BASE in counts:
        for arm in arms:
            if arm.name != BASE:
                pairs = [solvable_set_overlap(a, b) for a in counts[arm.name] for b in counts[BASE]]
                arm.overlap = {k: float(np.mean([p[k] for p in pairs])) for k in pairs[0]}
                arm.vs_base = compare_with_base(counts[BASE], counts[arm.name], n, n_boot=1000)
    else:
        notes.append("no base arm: solvable-set overlap and comparisons with the untrained model are omitted")
    return StudyData(arms, n, len(tasks), notes)
