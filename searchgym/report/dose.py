"""The report's dose and distance section: headline meters along each arm's dose ladder, compared at matched KL.

A comparison of methods is only as good as the doses compared (docs/measurement.md, "Dose and distance").
A study that evaluated checkpoints along training leaves ``<arm>/seed<k>/dose/<rung>/`` folders: the rung's
eval ``trajectories.jsonl`` and its ``dose.json`` (optimizer steps since the base model, per-question
per-token KL(policy || base)). `dose_data` reads them, meters every rung on the shared questions at one n,
and compares every pair of trained arms at the same distance from the base: κ is the largest KL every seed
of both reaches, each seed's meter is interpolated at κ along its own path, and the difference gets a
bootstrap CI over questions (paired) and seeds. Each arm's slope d(meter)/d(KL) is "breadth lost per nat".
`dose_table` and `dose_findings` say it, `searchgym.report.figures.dose_figure` draws it, and
`searchgym.report.page` puts it on the page.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from searchgym.meters.aggregate import per_question
from searchgym.meters.stats import interpolate_at, weighted_slope
from searchgym.meters.table import label, unit
from searchgym.report.data import TABLE_KEYS, Estimate, equalise, fmt
from searchgym.report.discover import BASE, RunData, _study_arm_order
from searchgym.trajectory import TOKEN_ROLES, read_trajectories

# The distance axis: Schulman's k3 (unbiased, >= 0 per token); k1 and the exact KL are kept beside it.
ESTIMATORS = ("k1", "k3", "exact")
ESTIMATOR = "k3"
KL = f"kl/{ESTIMATOR}"  # its key among a rung's per-question values
N_BOOT = 2000


def _headline_keys() -> tuple[str, ...]:
    """success, pass@{n}, strategy entropy, query breadth, looked up among the report table's columns rather
    than spelled here: the strategy-entropy estimator (and so its key) is chosen in `searchgym.report.data`."""
    wanted = ("reward/success", "passk/pass@", "strategy_entropy", "search/query_breadth")
    return tuple(next(k for k in TABLE_KEYS if w in k) for w in wanted)


HEADLINE = _headline_keys()
TOKEN_KEYS = ("entropy/token",) + tuple(f"entropy/token_{role}" for role in TOKEN_ROLES)


@dataclass
class SeedPath:
    """One seed of one arm along its dose ladder, ordered by optimizer step; rung 0 is the base model."""

    arm: str
    seed: int
    rungs: list[str]
    steps: np.ndarray  # (R,) optimizer steps since the base model (SFT then GRPO laid end to end)
    values: dict[str, np.ndarray]  # "kl/<estimator>" (nats per token) and meter keys -> (R, Q) per question
    info: list[dict]  # each rung's dose.json, less its per-question parts

    def mean(self, key: str) -> np.ndarray:
        """(R,) means over questions."""
        return _question_means(self.values[key], np.ones((1, self.values[key].shape[1])))[0]


@dataclass
class Point:
    """One rung of an arm's curve: mean over seeds, with the min–max over seeds (the band)."""

    rung: str
    step: float
    kl: float
    value: float
    lo: float
    hi: float
    seeds: int


@dataclass
class Matched:
    """Arms a and b at the same distance κ from the base: each arm's value and the difference a − b."""

    a: str
    b: str
    key: str
    kappa: float
    a_value: Estimate
    b_value: Estimate
    diff: Estimate

    @property
    def claimed(self) -> bool:  # the same rule as the rest of the report: the 95% CI must exclude 0
        return self.diff.lo > 0 or self.diff.hi < 0

    @property
    def bound(self) -> float:  # the largest difference the CI leaves possible: what "no difference" means
        return max(abs(self.diff.lo), abs(self.diff.hi))


@dataclass
class DoseData:
    n: int
    questions: list[str]
    arms: list[str]  # the base first, then the study's order
    keys: tuple[str, ...]  # meter keys: the headline ones (pass@n filled in), then token entropy by role
    paths: list[SeedPath]
    curves: dict[str, dict[str, list[Point]]]  # arm -> key -> points by step
    matched: list[Matched]
    slopes: dict[str, dict[str, Estimate]]  # arm -> key -> d(meter)/d(KL) over its rungs
    notes: list[str]

    @property
    def trained(self) -> list[str]:
        return [a for a in self.arms if a != BASE]

    def measured(self, key: str) -> bool:
        return any(math.isfinite(p.value) for pts in self.curves.values() for p in pts.get(key, []))


# ---- pure helpers -----------------------------------------------------------------------------------

def _question_means(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean over questions of each row of ``values`` (R, Q) under each question draw ``counts`` (B, Q: how
    often each question was drawn; a row of ones is the data itself), NaN left out -> (B, R). A matrix
    product, so thousands of bootstrap draws cost one call."""
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ np.where(finite, values, 0.0).T) / (counts @ finite.T)


def _ci(point: float, boot: np.ndarray, method: str) -> Estimate:
    boot = boot[np.isfinite(boot)]
    if not math.isfinite(point) or boot.size == 0:
        return Estimate(math.nan, math.nan, math.nan, "not measured")
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return Estimate(float(point), float(lo), float(hi), method)


# ---- 1. read the ladder -----------------------------------------------------------------------------

def _read_rungs(study: Path) -> list[tuple[dict, RunData]]:
    rungs = []
    for f in sorted(study.glob("*/seed*/dose/*/dose.json")):
        try:
            record = json.loads(f.read_text(encoding="utf-8"))
            trajectories = list(read_trajectories(f.parent))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{f.parent}: unreadable dose rung ({e}); re-run the study's dose evaluation") from None
        if record.get("version") != 1:
            raise ValueError(f"{f}: dose.json version {record.get('version')!r}; this report reads version 1")
        rungs.append((record, RunData(f.parents[3].name, int(f.parents[2].name.removeprefix("seed")), f.parent,
                                      trajectories, [])))
    return rungs


def _rung_values(record: dict, run: RunData, questions: list[str], n: int, keys) -> dict[str, np.ndarray]:
    """Per-question meters, recomputed from the trajectories (dose.json's are informational and may use
    another n), and per-question KL; the base model is the reference itself: KL 0 whatever was written."""
    pq, _, _ = per_question([t for t in run.trajectories if t.task_id in set(questions)], samples=n)
    out = {k: np.array([pq[q].get(k, math.nan) for q in questions]) for k in keys}
    per_q = record.get("kl_per_question") or {}
    for e in ESTIMATORS:
        got = [(per_q.get(e) or {}).get(q) for q in questions]
        out[f"kl/{e}"] = np.zeros(len(questions)) if record.get("stage") == "base" else \
            np.array([v if isinstance(v, int | float) else math.nan for v in got], dtype=np.float64)
    return out


def _paths(rungs, questions: list[str], n: int, keys, notes: list[str]) -> list[SeedPath]:
    by_seed: dict[tuple[str, int], list] = defaultdict(list)  # (arm, seed) -> [(step, rung, info, values)]
    for record, run in rungs:
        info = {k: v for k, v in record.items() if k not in ("kl_per_question", "meters")}
        by_seed[(run.arm, run.seed)].append((float(record.get("step") or 0), record.get("rung", run.path.name),
                                             info, _rung_values(record, run, questions, n, keys)))
    bases = {seed: items[0] for (arm, seed), items in by_seed.items() if arm == BASE}
    paths = []
    for (arm, seed), items in by_seed.items():
        items.sort(key=lambda item: item[0])
        # Every trained arm starts from the study's base model: its rung 0 is the base arm's base-0 of the same
        # seed (that model, sampled the same way), else the mean of the base seeds there are.
        if arm != BASE and items[0][0] > 0:
            if seed in bases:
                items.insert(0, bases[seed])
            elif bases:
                notes.append(f"{arm} seed {seed}: no base-0 rung of seed {seed}; its rung 0 is the mean of the base "
                             f"seeds {sorted(bases)}")
                others = list(bases.values())
                items.insert(0, (0.0, "base-0", others[0][2],
                                 {k: np.mean([b[3][k] for b in others], axis=0) for k in others[0][3]}))
            else:
                notes.append(f"no base-0 rung in the study: {arm} seed {seed} starts at its first checkpoint")
        dropped = [rung for _, rung, _, v in items if not np.isfinite(v[KL]).any()]
        if dropped:  # a rung without its distance cannot be placed on the KL axis
            notes.append(f"{arm} seed {seed}: rung(s) {', '.join(dropped)} have no KL ({ESTIMATOR}) and were left out")
            items = [item for item in items if item[1] not in dropped]
        paths.append(SeedPath(arm, seed, [i[1] for i in items], np.array([i[0] for i in items]),
                              {k: np.stack([i[3][k] for i in items]) for k in items[0][3]}, [i[2] for i in items]))
    return paths


# ---- 2. curves: mean over seeds at each rung, min–max band --------------------------------------------

def _curves(paths: list[SeedPath], keys) -> dict[str, dict[str, list[Point]]]:
    curves: dict[str, dict[str, list[Point]]] = defaultdict(dict)
    for arm in dict.fromkeys(p.arm for p in paths):
        seeds = [p for p in paths if p.arm == arm]
        for key in keys:
            at: dict[str, list[tuple[float, float, float]]] = defaultdict(list)  # rung -> [(step, kl, value)]
            for p in seeds:
                for row in zip(p.rungs, p.steps, p.mean(KL), p.mean(key)):
                    at[row[0]].append(row[1:])
            points = []
            for rung, rows in at.items():
                s, x, y = (np.array(v) for v in zip(*rows))
                y = y[np.isfinite(y)] if np.isfinite(y).any() else np.array([math.nan])
                points.append(Point(rung, float(s.mean()), float(x.mean()), float(y.mean()), float(y.min()),
                                    float(y.max()), len(rows)))
            curves[arm][key] = sorted(points, key=lambda pt: pt.step)
    return dict(curves)


# ---- 3. matched KL and slopes, with one bootstrap over questions and seeds ---------------------------

def _draw_counts(rng: np.random.Generator, n_boot: int, size: int) -> np.ndarray:
    """(n_boot, size): how often each of ``size`` items is drawn in each resample with replacement."""
    counts = np.zeros((n_boot, size))
    np.add.at(counts, (np.arange(n_boot)[:, None], rng.integers(0, size, (n_boot, size))), 1.0)
    return counts


def _compare(paths: list[SeedPath], arms: list[str], keys, n_boot: int, seed: int):
    """Differences at matched KL for every pair of trained arms, and every trained arm's slope. One question
    draw serves every arm, rung and meter (paired: the arms answered the same questions); seeds are drawn
    with replacement within each arm. κ stays fixed: it defines the comparison, only the values resample."""
    rng = np.random.default_rng(seed)
    q = len(next(iter(paths[0].values.values()))[0])
    draws = (np.ones((1, q)), _draw_counts(rng, n_boot, q))  # the data itself, then the resamples
    trained = {a: [p for p in paths if p.arm == a] for a in arms if a != BASE}
    seeds = {a: (np.ones((1, len(ps))), _draw_counts(rng, n_boot, len(ps))) for a, ps in trained.items()}
    # per path and key: the (1, R) means over questions and the (B, R) resampled ones, computed once
    means = {(p.arm, p.seed, k): tuple(_question_means(p.values[k], c) for c in draws)
             for ps in trained.values() for p in ps for k in (KL, *keys)}
    method = f"95% percentile bootstrap over questions (paired) and seeds, {n_boot} resamples"

    def at_kappa(arm: str, key: str, kappa: float) -> list[np.ndarray]:  # [point (1,), resamples (B,)]
        ps = trained[arm]
        return [(np.stack([interpolate_at(means[p.arm, p.seed, KL][i], means[p.arm, p.seed, key][i], kappa)
                           for p in ps], axis=1) * seeds[arm][i]).sum(axis=1) / len(ps) for i in (0, 1)]

    matched, names = [], list(trained)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if continues(trained[a], trained[b]) or continues(trained[b], trained[a]):
                continue  # one arm is the other plus a stage: at matched KL they share a path (`continuations`)
            kappa = float(min(means[p.arm, p.seed, KL][0].max() for p in trained[a] + trained[b]))
            for key in keys:
                (pa, ba), (pb, bb) = at_kappa(a, key, kappa), at_kappa(b, key, kappa)
                matched.append(Matched(a, b, key, kappa, _ci(pa[0], ba, method), _ci(pb[0], bb, method),
                                       _ci(pa[0] - pb[0], ba - bb, method)))
    slopes: dict[str, dict[str, Estimate]] = defaultdict(dict)
    for a, ps in trained.items():
        for key in keys:
            point, boot = (weighted_slope([means[p.arm, p.seed, KL][i] for p in ps],
                                          [means[p.arm, p.seed, key][i] for p in ps], seeds[a][i]) for i in (0, 1))
            slopes[a][key] = _ci(point[0], boot, method)
    return matched, dict(slopes)


def continues(first: list[SeedPath], then: list[SeedPath]) -> bool:
    """Whether arm ``then`` continues arm ``first``: for every seed both have, every rung of ``first`` is a rung
    of ``then`` with the same per-question values (SFT-narrow then GRPO repeats SFT-narrow's training, seed
    for seed). Such a pair compared at matched KL meets inside the shared stage and differs by exactly 0,
    which says nothing about the added stage: the report compares their ends instead (the verdict)."""
    pairs = [(p, q) for p in first for q in then if p.seed == q.seed]
    if not pairs:
        return False
    for p, q in pairs:
        index = {r: i for i, r in enumerate(q.rungs)}
        if not all(r in index for r in p.rungs):
            return False
        if not all(np.array_equal(p.values[k][i], q.values[k][index[r]], equal_nan=True)
                   for k in p.values for i, r in enumerate(p.rungs)):
            return False
    return True


def continuations(data: DoseData) -> list[tuple[str, str]]:
    """(first, then) pairs of trained arms where ``then`` continues ``first`` (`continues`)."""
    arms = {a: [p for p in data.paths if p.arm == a] for a in data.trained}
    return [(a, b) for a in arms for b in arms if a != b and continues(arms[a], arms[b])]


def dose_data(study_dir: str | Path, n_boot: int = N_BOOT, seed: int = 0) -> DoseData | None:
    """Everything the dose section shows, from a study folder; None when it holds no dose ladder (older
    studies and single runs report exactly as before)."""
    study = Path(study_dir)
    rungs = _read_rungs(study)
    if not rungs:
        return None
    n, tasks, notes = equalise([run for _, run in rungs])  # one n and one question set, as the report's table
    notes = [f"dose ladder: {note}" for note in notes]
    questions = sorted(tasks)
    keys = tuple(k.format(n=n) for k in HEADLINE) + TOKEN_KEYS
    paths = _paths(rungs, questions, n, keys, notes)
    order = _study_arm_order(study)
    arms = sorted(dict.fromkeys(p.arm for p in paths), key=lambda a: (a != BASE, order.get(a, len(order)), a))
    paths.sort(key=lambda p: (arms.index(p.arm), p.seed))
    matched, slopes = _compare(paths, arms, keys, n_boot, seed)
    return DoseData(n, questions, arms, keys, paths, _curves(paths, keys), matched, slopes, notes)


# ---- 4. words and a table -----------------------------------------------------------------------------

def _breadth_key(data: DoseData) -> str:
    """Strategy entropy where the world labels strategies, query breadth otherwise (as the verdict does)."""
    strategy, breadth = data.keys[2], data.keys[3]
    return strategy if data.measured(strategy) else breadth


def _units(key: str) -> str:
    return " nats" if unit(key).startswith("nats") else ""


def _ci_text(e: Estimate, sign: bool = False) -> str:
    value = f"{e.value:+.3f}" if sign and math.isfinite(e.value) else fmt(e.value)
    return f"{value} [{fmt(e.lo)}, {fmt(e.hi)}]"


def matched_sentence(m: Matched) -> str:
    """One pair of arms and one meter at matched KL, by the rule: a difference only where its CI excludes 0."""
    head, what = f"**{m.a} vs {m.b} at matched KL:**", label(m.key)
    if not m.kappa > 0:
        return f"{head} not comparable: a seed never moved from the base (largest KL reached {m.kappa:.3g})."
    if not math.isfinite(m.diff.value):
        return f"{head} {what} not measured."
    where = f"at κ = {m.kappa:.3g} nats/token of KL ({ESTIMATOR}), the largest every seed of both reaches"
    values = (f"{m.a} {fmt(m.a_value.value)} vs {m.b} {fmt(m.b_value.value)}, difference "
              f"{_ci_text(m.diff, sign=True)}{_units(m.key)} (95% CI over questions and seeds)")
    if m.claimed:
        return f"{head} {where}, {what} is {'lower' if m.diff.hi < 0 else 'higher'} for {m.a}: {values}."
    return f"{head} {where}, no difference in {what} larger than {m.bound:.3f}{_units(m.key)}: {values}."


def slope_sentence(arm: str, key: str, e: Estimate) -> str:
    """An arm's change in a meter per nat of KL, claimed (falls / rises) only where the CI excludes 0."""
    head, per = f"**Breadth lost per nat, {arm}:**", f"{_units(key).strip() or 'units'} per nat of KL ({ESTIMATOR})"
    if not math.isfinite(e.value):
        return f"{head} {label(key)} not measured."
    if e.lo > 0 or e.hi < 0:
        return (f"{head} {label(key)} {'falls' if e.hi < 0 else 'rises'} along its dose ladder: "
                f"{_ci_text(e, sign=True)} {per}.")
    return (f"{head} no change in {label(key)} steeper than {max(abs(e.lo), abs(e.hi)):.3f} {per} "
            f"({_ci_text(e, sign=True)}).")


def dose_findings(data: DoseData) -> list[str]:
    """The sentences for the page: per pair of trained arms the breadth meter at matched KL, and every other
    headline meter where a difference is claimed; then each arm's breadth lost per nat."""
    breadth = _breadth_key(data)
    headline = data.keys[:len(HEADLINE)]
    out = [matched_sentence(m) for m in data.matched
           if m.key == breadth or (m.key in headline and m.claimed and m.kappa > 0)]
    pairs = continuations(data)
    # Each continuing the other: the same rungs, values for values. The setting that tells them apart changed
    # nothing (e.g. a clip range while every update is on-policy), which a reader must hear about.
    out += [f"**{a} and {b} are identical:** every rung of every seed gave the same per-question values, so the "
            f"setting that tells them apart had no effect on training here." for a, b in pairs
            if (b, a) in pairs and a < b]
    out += [f"**{b} continues {a}:** the same {a} rungs, seed for seed, then more training; at matched KL they "
            f"would meet on that shared path, so they are compared end to end in the verdict instead."
            for a, b in pairs if (b, a) not in pairs]
    out += [slope_sentence(a, breadth, data.slopes[a][breadth]) for a in data.trained]
    return out


def dose_table(data: DoseData) -> tuple[list[str], list[list[str]]]:
    """The matched-KL table: one row per pair of trained arms and headline meter."""
    header = ["arms (a − b)", "meter", f"κ (KL {ESTIMATOR}, nats/token)", "a at κ", "b at κ", "a − b [95% CI]",
              "claim"]
    rows = []
    for m in data.matched:
        if m.key not in data.keys[:len(HEADLINE)] or not data.measured(m.key):
            continue
        claim = ("a lower" if m.diff.hi < 0 else "a higher") if m.claimed else f"none larger than {m.bound:.3f}"
        rows.append([f"{m.a} − {m.b}", label(m.key), f"{m.kappa:.3g}", _ci_text(m.a_value), _ci_text(m.b_value),
                     _ci_text(m.diff, sign=True), claim if math.isfinite(m.diff.value) else "not measured"])
    return header, rows


def slope_table(data: DoseData) -> tuple[list[str], list[list[str]]]:
    """Each trained arm's slope d(meter)/d(KL) for every headline meter measured."""
    keys = [k for k in data.keys[:len(HEADLINE)] if data.measured(k)]
    return (["arm"] + [f"{label(k)} per nat" for k in keys],
            [[a] + [_ci_text(data.slopes[a][k], sign=True) for k in keys] for a in data.trained])


def rung_table(data: DoseData) -> tuple[list[str], list[list[str]]]:
    """Distance per arm and rung: optimizer steps, and KL to the base by every estimator (mean over questions,
    then over seeds; min–max over seeds for the axis estimator), so a reader sees how far each arm moved."""
    header = ["arm", "rung", "step", f"KL {ESTIMATOR} [min–max over seeds]"] + \
        [f"KL {e}" for e in ESTIMATORS if e != ESTIMATOR] + ["seeds"]
    rows = []
    for arm in data.arms:
        by_rung: dict[str, list[tuple[float, dict[str, float]]]] = defaultdict(list)
        for p in (p for p in data.paths if p.arm == arm):
            for i, rung in enumerate(p.rungs):
                if arm != BASE and rung.startswith(f"{BASE}-"):
                    continue  # a trained arm's rung 0 is the base arm's own row
                by_rung[rung].append((float(p.steps[i]), {e: float(p.mean(f"kl/{e}")[i]) for e in ESTIMATORS}))
        for rung, points in sorted(by_rung.items(), key=lambda kv: kv[1][0][0]):
            axis = [kl[ESTIMATOR] for _, kl in points]
            rows.append([arm, rung, f"{points[0][0]:.0f}",
                         f"{fmt(float(np.mean(axis)), 4)} [{fmt(min(axis), 4)}, {fmt(max(axis), 4)}]"]
                        + [fmt(float(np.mean([kl[e] for _, kl in points])), 4) for e in ESTIMATORS if e != ESTIMATOR]
                        + [str(len(points))])
    return header, rows


def to_json(data: DoseData) -> dict:
    def est(e: Estimate) -> dict:
        return {k: (v if math.isfinite(v) else None) for k, v in (("value", e.value), ("lo", e.lo), ("hi", e.hi))}

    def num(v: float) -> float | None:
        return float(v) if math.isfinite(v) else None

    return {"n": data.n, "questions": len(data.questions), "kl_estimator": ESTIMATOR, "notes": data.notes,
            "findings": dose_findings(data),
            "curves": {a: {k: [{"rung": p.rung, "step": p.step, "kl": num(p.kl), "value": num(p.value),
                                "min": num(p.lo), "max": num(p.hi), "seeds": p.seeds} for p in pts]
                           for k, pts in keys.items()} for a, keys in data.curves.items()},
            "rungs": {f"{p.arm}/seed{p.seed}": [dict(info, rung=rung, kl_mean={e: num(p.mean(f"kl/{e}")[i])
                                                                            for e in ESTIMATORS})
                                               for i, (rung, info) in enumerate(zip(p.rungs, p.info))]
                      for p in data.paths},
            "matched": [{"a": m.a, "b": m.b, "meter": m.key, "kappa": m.kappa, "a_value": est(m.a_value),
                         "b_value": est(m.b_value), "diff": est(m.diff), "claimed": m.claimed} for m in data.matched],
            "slopes": {a: {k: est(e) for k, e in keys.items()} for a, keys in data.slopes.items()}}
