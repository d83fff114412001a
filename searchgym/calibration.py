"""`searchgym calibrate`: the meters measured on policies whose true behaviour is known.

An instrument is trusted when it recovers known truth (docs/calibration.md). Three checks, all through the
real env, the real strategy classifier and the real meter and report code:

1. **Recovery.** Mixtures of the synthetic world's scripted demonstrators (one strategy, two, three, the
   study prior's mix, uniform) are run as agents on the study's held-out questions, n samples per question
   and several seeds. A mixture restricted to each question's valid strategies and renormalised (exactly as
   the prior lab samples its demos, `searchgym.train.pretrain.task_distribution`) has a known strategy
   distribution per question, so the true strategy entropy (mean over questions of the per-question
   entropy, what the meter averages) is exact; so are the plug-in and Miller–Madow estimators'
   expectations at n. We report measured vs true, the study CI's coverage of the truth over repeated
   studies, and label fidelity (how often the classifier labels a demonstrator's episode as its script).
2. **Power.** How often does the study's claim rule (IQM over seeds with stratified-bootstrap CIs that must
   not overlap) detect a true difference delta in strategy entropy, and in pass@k? Demonstrators are
   deterministic, so one play of every (question, strategy, query style) gives each question's exact label
   distribution under any mixture, and a simulated study is a multinomial draw: thousands of studies cost
   seconds. The minimum detectable effect (MDE) is the smallest delta detected in >= 80% of studies, for the
   study's sizes and a sweep of sizes; also for a paired bootstrap over questions.
3. **Temperature.** A real model sampled through `searchgym.rollout.rollout` (what `searchgym eval` uses) at
   rising temperatures: token entropy must rise monotonically and strategy entropy must not fall beyond its CI.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from searchgym.meters.calibration import (
    entropy,
    expected_entropy_estimates,
    nonoverlap,
    nonoverlap_mde_factor,
    paired_diff_ci,
    pass_at_k_table,
    question_ci,
    seed_ci,
)
from searchgym.meters.calibration import (
    entropy_from_counts as _entropy_from_counts,
)

STUDY_FILE, STUDY_PRESET = Path("agents/breadth-study.toml"), "quick"
# What agents/breadth-study.toml's quick preset says, for an installed package without agents/.
FALLBACK_ENV_ID = "searchgym/SyntheticWorld-Easy-v0"
FALLBACK_ENV_KWARGS = {"embedder": "hashing", "top_k": 3, "max_obs_chars": 400, "max_steps": 8,
                       "world_kwargs": {"size": "small", "max_hops": 2, "n_train": 2000, "n_test": 100}}
FALLBACK_SIZES = (20, 8, 3)  # questions, samples per question, seeds

# The quick study's prior mix (agents/prior-study.toml pretrain.mixture): the base of the power simulation.
PRIOR_MIX = {"forward": 0.35, "question_first": 0.25, "snippet": 0.2, "parallel": 0.2}
MIXTURES = {
    "one: forward": {"forward": 1.0},
    "two: forward+verify": {"forward": 0.5, "verify": 0.5},
    "three: forward/question_first/snippet": {"forward": 0.5, "question_first": 0.3, "snippet": 0.2},
    "prior mix (4)": PRIOR_MIX,
    "uniform (5)": {"forward": 1.0, "question_first": 1.0, "parallel": 1.0, "snippet": 1.0, "verify": 1.0},
}
SHIFT_TOWARDS = "forward"  # the power simulation's second arm: the base mix shifted towards this strategy
ENTROPY_ERROR_TARGET = 0.05  # nats: max |measured MM - true| over mixtures at the study's sizes
MDE_TARGET = 0.10  # nats: the size sweep reports the smallest size whose MDE reaches this
FALLBACK_MODEL = "tiny"  # the random 2-layer model that loads offline, until the reference prior exists
TEMPERATURES = (0.3, 0.7, 1.0, 1.3)
BIAS_AT_N = (4, 8, 16, 32)  # the exact Miller-Madow bias of every mixture is also reported at these n


def default_model() -> str:
    """The temperature sweep's model: the reference prior (alias ``searchgym-prior``) where its folder
    exists, else ``tiny``."""
    from searchgym.priors import REFERENCE_PRIOR

    return "searchgym-prior" if (REFERENCE_PRIOR / "config.json").is_file() else FALLBACK_MODEL


@dataclass
class StudySetup:
    """The env and sizes a study evaluates at (default: the breadth study's quick preset)."""

    env_id: str
    env_kwargs: dict
    split: str = "test"
    questions: int = FALLBACK_SIZES[0]
    samples: int = FALLBACK_SIZES[1]
    seeds: int = FALLBACK_SIZES[2]
    top_p: float = 1.0
    source: str = "fallback constants"


def study_setup(study_file: str | Path = STUDY_FILE, preset: str = STUDY_PRESET) -> StudySetup:
    """The env, split, eval sizes and seeds of a study preset, resolved through the study's own loader
    (its base arm's recipe with every override); the quick preset's values when the file is absent."""
    from searchgym.recipe import RecipeError, load_recipe
    from searchgym.study import StudyError, load_study

    try:
        study = load_study(study_file, preset)
        spec = study.runs()[0]
        recipe = load_recipe(spec.recipe, spec.overrides)
    except (OSError, StudyError, RecipeError):
        return StudySetup(FALLBACK_ENV_ID, json.loads(json.dumps(FALLBACK_ENV_KWARGS)))
    e = recipe.eval
    return StudySetup(recipe.env.id, dict(recipe.env.kwargs), e.split, e.questions, e.samples, len(study.seeds),
                      e.top_p, f"{study_file} [presets.{preset}]")


@dataclass
class CalibrationConfig:
    """Every knob of a calibration; None = the study's value."""

    questions: int | None = None
    samples: int | None = None
    seeds: int | None = None
    reps: int = 400  # simulated studies per point of a power curve
    coverage_reps: int = 1000  # simulated studies per mixture for CI coverage
    mixtures: dict = field(default_factory=lambda: dict(MIXTURES))
    base_mixture: dict = field(default_factory=lambda: dict(PRIOR_MIX))
    sweep_questions: tuple[int, ...] = (20, 50, 100)
    sweep_samples: tuple[int, ...] = (8, 16)
    sweep_seeds: tuple[int, ...] = (3, 5)
    pass_rate: float = 0.3  # mean per-question success probability of the pass@k simulation's base arm
    pass_concentration: float = 2.0  # Beta(c r, c (1 - r)): small = questions very unequal in difficulty
    model: str | None = None  # None: `default_model()`
    temperatures: tuple[float, ...] = TEMPERATURES
    temp_questions: int = 4  # measured: ~5-10 s per temperature on 2 busy cores (tiny model)
    temp_samples: int = 4
    temp_max_turns: int = 3  # search, open, answer: enough turns for a strategy label
    temp_max_new_tokens: int = 32
    skip_temperature: bool = False
    seed: int = 0
    study_file: str = str(STUDY_FILE)
    preset: str = STUDY_PRESET
    env_id: str | None = None  # override the study's env (tests use a smaller world)
    env_kwargs: dict | None = None
    progress: bool = True

    @classmethod
    def quick(cls, **overrides) -> CalibrationConfig:
        """Tiny sizes for CI: every code path, numbers too noisy to read."""
        sizes = dict(questions=6, samples=4, seeds=2, reps=60, coverage_reps=100, sweep_questions=(6, 12),
                     sweep_samples=(4,), sweep_seeds=(2,), temp_questions=2, temp_samples=2, temp_max_turns=2,
                     temp_max_new_tokens=12, temperatures=(0.3, 1.3))
        return cls(**{**sizes, **overrides})


# ---- 1. the env and every demonstrator's label ---------------------------------------------------------

def make_env(setup: StudySetup):
    import gymnasium

    import searchgym  # noqa: F401  (registers the env ids)

    return gymnasium.make(setup.env_id, disable_env_checker=True, **{**setup.env_kwargs, "split": setup.split})


def label_table(env, tasks, *, progress: bool = True) -> dict[str, dict[tuple[str, str], str]]:
    """Play every (strategy, query style) demonstrator once on every task; the classifier's label of each
    episode. Demonstrators and the env are deterministic, so this is each episode's label for good."""
    from tqdm.auto import tqdm

    from searchgym.envs.episodes import play

    world = env.unwrapped.taskset
    pairs = [(s, st) for s in world.strategies for st in world.query_styles]
    table: dict[str, dict[tuple[str, str], str]] = {}
    with tqdm(total=len(tasks) * len(pairs), desc="demonstrator labels", unit="episode",
              disable=not progress) as bar:
        for task in tasks:
            table[task.id] = {}
            for strategy, style in pairs:
                table[task.id][(strategy, style)] = play(env, world.demonstrator(strategy, style),
                                                         task_id=task.id).strategy or "other"
                bar.update()
    return table


def label_distribution(task, weights: dict[str, float], labels: dict[tuple[str, str], str],
                       styles: Sequence[str]) -> dict[str, float]:
    """P(label) on one task for a mixture: strategy by `task_distribution`, query style uniform, label by
    the classifier's verdict on that (strategy, style) episode.

    >>> from types import SimpleNamespace as T
    >>> labels = {("forward", "a"): "forward", ("forward", "b"): "forward", ("verify", "a"): "verify",
    ...           ("verify", "b"): "forward"}  # the verify script reads as forward in style b
    >>> label_distribution(T(strategies=("forward", "verify")), {"forward": 0.5, "verify": 0.5}, labels, "ab")
    {'forward': 0.75, 'verify': 0.25}
    """
    from searchgym.train.pretrain import task_distribution

    out: Counter = Counter()
    for strategy, w in task_distribution(weights, task.strategies).items():
        for style in styles:
            out[labels[(strategy, style)]] += w / len(styles)
    return {k: out[k] for k in sorted(out)}


def mixture_truth(tasks, weights: dict[str, float], table, styles: Sequence[str], n: int) -> dict:
    """Exact truths of a mixture on a question set: the true strategy entropy (mean over questions of the
    renormalised mixture's entropy), the same for the labels the classifier gives (label fidelity in), the
    expectations of the plug-in and Miller–Madow meters at n, true shares and the expected label fidelity."""
    from searchgym.train.pretrain import task_distribution

    rows = []
    for t in tasks:
        dist = task_distribution(weights, t.strategies)
        if not dist:
            continue
        labelled = label_distribution(t, weights, table[t.id], styles)
        plugin, mm = expected_entropy_estimates(labelled, n)
        fidelity = sum(w / len(styles) for s, w in dist.items() for st in styles if table[t.id][(s, st)] == s)
        bias = {m: expected_entropy_estimates(labelled, m)[1] - entropy(dist) for m in BIAS_AT_N}
        rows.append((entropy(dist), entropy(labelled), plugin, mm, dist, labelled, fidelity, bias))
    if not rows:
        raise ValueError(f"mixture {weights} has no valid strategy on any of the {len(tasks)} questions")
    shares: Counter = Counter()
    label_shares: Counter = Counter()
    for *_, dist, labelled, _, _ in rows:
        shares.update(dist)
        label_shares.update(labelled)
    q = len(rows)
    return {"true_entropy": float(np.mean([r[0] for r in rows])),
            "labelled_entropy": float(np.mean([r[1] for r in rows])),
            "expected_plugin": float(np.mean([r[2] for r in rows])),
            "expected_mm": float(np.mean([r[3] for r in rows])),
            "true_shares": {k: shares[k] / q for k in sorted(shares)},
            "expected_label_shares": {k: label_shares[k] / q for k in sorted(label_shares)},
            "expected_label_fidelity": float(np.mean([r[6] for r in rows])),
            "bias_mm_by_n": {str(m): float(np.mean([r[7][m] for r in rows])) for m in BIAS_AT_N},
            "questions_with_support": q}


# ---- 2. recovery: mixtures played through the env and metered by the report's code ------------------

def play_mixture(env, tasks, weights: dict[str, float], samples: int, rng: random.Random) -> list:
    """The mixture as an agent: each episode draws its strategy from the question's renormalised mixture
    and its query style uniformly, and plays that demonstrator through the env."""
    from searchgym.envs.episodes import play
    from searchgym.train.pretrain import task_distribution

    world = env.unwrapped.taskset
    out = []
    for t in tasks:
        dist = task_distribution(weights, t.strategies)
        if not dist:
            continue
        for i in range(samples):
            strategy = rng.choices(list(dist), weights=list(dist.values()))[0]
            style = rng.choice(world.query_styles)
            out.append(play(env, world.demonstrator(strategy, style), task_id=t.id, sample=i))
    return out


def recover_mixture(env, tasks, name: str, weights: dict[str, float], table, samples: int, seeds: int,
                    coverage_reps: int, seed: int = 0) -> dict:
    """One mixture at the study's sizes: played and metered per seed, with the report's seed CI, against
    the exact truth; coverage of the truth by that CI over ``coverage_reps`` simulated studies."""
    from searchgym.meters.aggregate import average, per_question
    from searchgym.report_data import _seed_estimate

    styles = env.unwrapped.taskset.query_styles
    truth = mixture_truth(tasks, weights, table, styles, samples)
    start = time.perf_counter()
    plugin, mm, per_q_mm, per_q_plugin, played = [], [], [], [], []
    for s in range(seeds):
        trajectories = play_mixture(env, tasks, weights, samples, random.Random(f"calibrate:{seed}:{name}:{s}"))
        meters, difficulty, _ = per_question(trajectories, samples=samples)
        avg = average(meters, difficulty, samples)
        plugin.append(avg["diversity/strategy_entropy"])
        mm.append(avg["diversity/strategy_entropy_mm"])
        per_q_mm.append([m["diversity/strategy_entropy_mm"] for m in meters.values()])
        per_q_plugin.append([m["diversity/strategy_entropy"] for m in meters.values()])
        played += trajectories
    est_mm = _seed_estimate(mm, np.mean(per_q_mm, axis=0).tolist())  # the report's estimate and CI
    est_plugin = _seed_estimate(plugin, np.mean(per_q_plugin, axis=0).tolist())
    counts = Counter(t.strategy or "other" for t in played)
    fidelity = sum(t.strategy == t.meta.get("demo_strategy") for t in played) / len(played)
    coverage, coverage_expected = simulated_coverage(
        tasks, weights, table, styles, samples, seeds, coverage_reps, [truth["true_entropy"], truth["expected_mm"]],
        seed) if coverage_reps else (math.nan, math.nan)
    return {"name": name, "weights": weights, **truth,
            "measured_plugin": est_plugin.value, "measured_mm": est_mm.value,
            "measured_mm_seeds": mm, "ci_mm": [est_mm.lo, est_mm.hi], "ci_method": est_mm.method,
            "error_mm": est_mm.value - truth["true_entropy"],
            "error_plugin": est_plugin.value - truth["true_entropy"],
            "bias_mm": truth["expected_mm"] - truth["true_entropy"],
            "bias_plugin": truth["expected_plugin"] - truth["true_entropy"],
            "ci_covers_truth": est_mm.lo <= truth["true_entropy"] <= est_mm.hi,
            "coverage": coverage, "coverage_of_expected_mm": coverage_expected, "label_fidelity": fidelity,
            "measured_shares": {k: counts[k] / len(played) for k in sorted(counts)},
            "episodes": len(played), "seconds": time.perf_counter() - start}


def _label_matrix(tasks, weights, table, styles) -> tuple[np.ndarray, list[str]]:
    """(questions, labels) matrix of label probabilities for a mixture, labels sorted with
    `SHIFT_TOWARDS` first; questions where the mixture has no valid strategy are left out."""
    dists = [label_distribution(t, weights, table[t.id], styles) for t in tasks]
    dists = [d for d in dists if d]
    labels = sorted({k for d in dists for k in d}, key=lambda k: (k != SHIFT_TOWARDS, k))
    return np.array([[d.get(k, 0.0) for k in labels] for d in dists]), labels


def sample_counts(probs: np.ndarray, n: int, uniforms: np.ndarray) -> np.ndarray:
    """Label counts of n draws per question from ``probs`` (questions, labels), by inverse CDF on given
    uniforms of shape (..., questions, n): the same uniforms under a shifted distribution give common
    random numbers, so power curves are smooth in delta. Returns (..., questions, labels).

    >>> sample_counts(np.array([[0.5, 0.5]]), 4, np.array([[0.1, 0.6, 0.7, 0.2]])).tolist()
    [[2, 2]]
    """
    cdf = np.cumsum(probs, axis=-1)[:, :-1]  # (questions, labels - 1)
    idx = (uniforms[..., None] >= cdf[:, None, :]).sum(-1)  # (..., questions, n)
    return np.stack([(idx == k).sum(-1) for k in range(probs.shape[-1])], axis=-1)


def simulated_coverage(tasks, weights, table, styles, samples: int, seeds: int, reps: int,
                       truths: Sequence[float], seed: int = 0) -> list[float]:
    """Share of simulated studies whose CI (the report's: over seeds, or over questions with one seed)
    contains each of ``truths``."""
    probs, _ = _label_matrix(tasks, weights, table, styles)
    rng = np.random.default_rng(seed)
    counts = sample_counts(probs, samples, rng.random((reps, seeds, probs.shape[0], samples)))
    _, mm = _entropy_from_counts(counts)  # (reps, seeds, questions)
    _, lo, hi = seed_ci(mm.mean(-1)) if seeds >= 2 else question_ci(mm[:, 0])
    return [float(((lo <= t) & (t <= hi)).mean()) for t in truths]


# ---- 3. power of the claim rules and the minimum detectable effect --------------------------------------

def _questions(tasks, count: int, seed: int) -> list:
    """The first ``count`` tasks (as a study takes them); beyond the pool, more drawn from it again."""
    if count <= len(tasks):
        return list(tasks[:count])
    return list(tasks) + random.Random(f"questions:{seed}").choices(list(tasks), k=count - len(tasks))


def shift_curve(tasks, base: dict[str, float], table, styles, points: int = 201) -> tuple[np.ndarray, np.ndarray]:
    """True strategy entropy drop delta(lambda) = H(base) - H((1 - lambda) base + lambda e_forward) on a
    grid of lambda (labelled truth, mean over questions); returns (lambdas, deltas)."""
    lambdas = np.linspace(0.0, 1.0, points)
    total = sum(base.values())
    h = []
    for lam in lambdas:
        w = {s: (1 - lam) * v / total for s, v in base.items()}
        w[SHIFT_TOWARDS] = w.get(SHIFT_TOWARDS, 0.0) + lam
        probs, _ = _label_matrix(tasks, w, table, styles)
        h.append(float(np.mean([entropy(row) for row in probs])))
    h = np.array(h)
    return lambdas, h[0] - h


def _lambda_for(delta: float, lambdas: np.ndarray, deltas: np.ndarray) -> float | None:
    """The smallest lambda whose true drop reaches ``delta`` (linear between grid points)."""
    above = np.nonzero(deltas >= delta)[0]
    if above.size == 0:
        return None
    i = int(above[0])
    if i == 0:
        return float(lambdas[0])
    d0, d1 = deltas[i - 1], deltas[i]
    return float(lambdas[i - 1] + (lambdas[i] - lambdas[i - 1]) * (delta - d0) / max(d1 - d0, 1e-12))


class _Rules:
    """Detection rates of both claim rules for one arm A against many candidate arms B."""

    def __init__(self, a_seed: np.ndarray, a_per_q: np.ndarray):
        self.a_per_q = a_per_q  # (reps, questions): per-question meter, mean over seeds
        self.a_seed = a_seed  # (reps, seeds): the meter of each seed (mean over questions)
        self.lo_a, self.hi_a = self._ci(a_seed, a_per_q)

    @staticmethod
    def _ci(seed_values: np.ndarray, per_q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # the report's rule (report_data._seed_estimate): seeds when >= 2, else questions
        _, lo, hi = seed_ci(seed_values) if seed_values.shape[-1] >= 2 else question_ci(per_q)
        return lo, hi

    def power(self, b_seed: np.ndarray, b_per_q: np.ndarray) -> tuple[float, float]:
        lo_b, hi_b = self._ci(b_seed, b_per_q)
        _, lo, hi = paired_diff_ci(self.a_per_q, b_per_q)
        return float(nonoverlap(self.lo_a, self.hi_a, lo_b, hi_b).mean()), float(((lo > 0) | (hi < 0)).mean())


def _scan(power_at, max_delta: float, coarse: float = 0.05, fine: float = 0.01) -> tuple[float, float, list]:
    """MDE of both rules by scanning delta upwards: a coarse grid until each rule reaches the target power,
    then a fine grid inside the last coarse step. Returns (mde_seed_rule, mde_paired, coarse curve)."""
    curve = []
    found: list[float | None] = [None, None]
    delta = 0.0
    while delta <= max_delta + 1e-9 and None in found:
        p = power_at(delta)
        curve.append({"delta": round(delta, 4), "power_seed_rule": p[0], "power_paired": p[1]})
        for r in range(2):
            if found[r] is None and p[r] >= 0.8:
                found[r] = delta
        delta += coarse
    mdes = []
    for r in range(2):
        if found[r] is None:
            mdes.append(math.nan)
            continue
        lo = max(0.0, found[r] - coarse)
        grid = [lo + fine * i for i in range(1, round(coarse / fine))] if found[r] > 0 else []
        fine_power = [power_at(d)[r] for d in grid]
        mdes.append(min([d for d, p in zip(grid, fine_power) if p >= 0.8] + [found[r]]))
    return round(mdes[0], 4), round(mdes[1], 4), curve


def entropy_power(tasks, base, table, styles, questions: int, samples: int, seeds: int, reps: int,
                  seed: int = 0) -> dict:
    """Power of the seed rule and of the paired bootstrap to detect a drop delta in strategy entropy, arm
    A = the base mixture, arm B = the base shifted towards `SHIFT_TOWARDS` until its true entropy is delta
    lower; both arms on the same ``questions`` held-out questions (as in a study) at n = ``samples``."""
    qs = _questions(tasks, questions, seed)
    lambdas, deltas = shift_curve(qs, base, table, styles)
    rng = np.random.default_rng(seed)
    shape = (reps, seeds, len(qs), samples)
    u_a, u_b = rng.random(shape), rng.random(shape)  # arm B's draws are shared by every delta

    def arm(weights, uniforms) -> tuple[np.ndarray, np.ndarray]:
        probs, _ = _label_matrix(qs, weights, table, styles)
        _, mm = _entropy_from_counts(sample_counts(probs, samples, uniforms))
        return mm.mean(-1), mm.mean(-2)  # seed-level (reps, seeds), per question over seeds (reps, questions)

    rules = _Rules(*arm(base, u_a))
    total = sum(base.values())

    def power_at(delta: float) -> tuple[float, float]:
        lam = _lambda_for(delta, lambdas, deltas)
        if lam is None:
            return math.nan, math.nan
        w = {s: (1 - lam) * v / total for s, v in base.items()}
        w[SHIFT_TOWARDS] = w.get(SHIFT_TOWARDS, 0.0) + lam
        return rules.power(*arm(w, u_b))

    mde, mde_paired, curve = _scan(power_at, float(deltas.max()))
    sd = math.nan  # the seed-to-seed sd of both arms at the MDE, pooled (what the report estimates from a study)
    lam = _lambda_for(mde, lambdas, deltas) if math.isfinite(mde) else None
    if seeds >= 2 and lam is not None:
        w = {s: (1 - lam) * v / total for s, v in base.items()}
        w[SHIFT_TOWARDS] = w.get(SHIFT_TOWARDS, 0.0) + lam
        b_seed, _ = arm(w, u_b)
        sd = math.sqrt(float(np.mean([np.var(rules.a_seed, axis=-1, ddof=1), np.var(b_seed, axis=-1, ddof=1)])))
    return {"questions": questions, "samples": samples, "seeds": seeds, "episodes_per_arm": questions * samples * seeds,
            "mde": mde, "mde_paired": mde_paired, "false_positive_seed_rule": curve[0]["power_seed_rule"],
            "false_positive_paired": curve[0]["power_paired"], "base_entropy": float(
                np.mean([entropy(r) for r in _label_matrix(qs, base, table, styles)[0]])),
            "seed_sd": sd, "mde_from_seed_sd": sd * nonoverlap_mde_factor(seeds, seeds) if seeds >= 2 else math.nan,
            "curve": curve}


def _expit(x):
    return 1.0 / (1.0 + np.exp(-x))


def passk_power(questions: int, samples: int, seeds: int, reps: int, k: int, rate: float, concentration: float,
                seed: int = 0) -> dict:
    """Power of both rules for a rise delta in pass@k (k <= n = ``samples``). Per-question success
    probabilities p ~ Beta(c r, c (1 - r)) (``rate`` r, ``concentration`` c), fixed within a study; arm B
    raises every question's p on the logit scale by theta, chosen so the mean true pass@k
    (1 - (1 - p)^k, averaged over questions) rises by delta. Correct counts are binomial at n."""
    rng = np.random.default_rng(seed)
    a, b = concentration * rate, concentration * (1 - rate)
    p = np.clip(rng.beta(a, b, size=(reps, questions)), 1e-6, 1 - 1e-6)
    logit = np.log(p) - np.log1p(-p)
    table = pass_at_k_table(samples, k)
    u_a, u_b = rng.random((reps, seeds, questions, samples)), rng.random((reps, seeds, questions, samples))

    def arm(probs, u) -> tuple[np.ndarray, np.ndarray]:
        c = (u < probs[:, None, :, None]).sum(-1)  # (reps, seeds, questions) correct counts
        values = table[c]
        return values.mean(-1), values.mean(-2)

    def true_passk(probs) -> float:
        return float((1 - (1 - probs) ** k).mean())

    base_true = true_passk(p)
    thetas = np.linspace(0.0, 8.0, 321)
    deltas = np.array([true_passk(_expit(logit + th)) - base_true for th in thetas])
    rules = _Rules(*arm(p, u_a))

    def power_at(delta: float) -> tuple[float, float]:
        theta = _lambda_for(delta, thetas, deltas)
        if theta is None:
            return math.nan, math.nan
        return rules.power(*arm(_expit(logit + theta), u_b))

    mde, mde_paired, curve = _scan(power_at, float(deltas.max()))
    return {"k": k, "questions": questions, "samples": samples, "seeds": seeds, "base_rate": rate,
            "concentration": concentration, "base_true": base_true, "mde": mde, "mde_paired": mde_paired,
            "false_positive_seed_rule": curve[0]["power_seed_rule"], "false_positive_paired": curve[0]["power_paired"],
            "curve": curve}


# ---- 4. the temperature sweep of a real model ------------------------------------------------------------

def temperature_sweep(model: str, setup: StudySetup, task_ids: Sequence[str], temperatures: Sequence[float],
                      samples: int, max_turns: int, max_new_tokens: int, seed: int = 0,
                      progress: bool = True) -> dict:
    """Sample ``model`` at each temperature with `searchgym.rollout.rollout` (same questions, seed and
    decoding otherwise) and meter it: mean token entropy (of the temperature-scaled distributions sampled
    from) must rise with temperature; strategy entropy (Miller–Madow, bootstrap CI over questions) must not
    fall below the previous temperature's CI."""
    from searchgym.meters.aggregate import average, per_question
    from searchgym.meters.stats import bootstrap_ci
    from searchgym.models import load_model
    from searchgym.rollout import rollout

    lm, tokenizer = load_model(model)
    rows = []
    for temperature in temperatures:
        start = time.perf_counter()
        trajectories = rollout(lm, tokenizer, setup.env_id, list(task_ids), samples=samples,
                               temperature=temperature, top_p=setup.top_p, max_turns=max_turns,
                               max_new_tokens=max_new_tokens, batch_size=min(64, len(task_ids) * samples),
                               seed=seed, env_kwargs={**setup.env_kwargs, "split": setup.split},
                               progress=progress, source=f"calibrate:{model}@T={temperature}")
        meters, difficulty, _ = per_question(trajectories, samples=samples)
        avg = average(meters, difficulty, samples)
        h, lo, hi = bootstrap_ci([m.get("diversity/strategy_entropy_mm", math.nan) for m in meters.values()],
                                 n_boot=1000)
        rows.append({"temperature": temperature, "token_entropy": avg["entropy/token"], "strategy_entropy": h,
                     "strategy_ci": [lo, hi], "tokens": sum(len(t.token_entropies) for t in trajectories),
                     "strategy_shares": {k: v / len(trajectories) for k, v in
                                         sorted(Counter(t.strategy or "other" for t in trajectories).items())},
                     "success": avg["reward/success"], "seconds": time.perf_counter() - start})
    tokens = [r["token_entropy"] for r in rows]
    token_monotone = all(b > a for a, b in zip(tokens, tokens[1:]))
    strategy_ok = all(not (math.isfinite(b["strategy_entropy"]) and math.isfinite(a["strategy_ci"][0]))
                      or b["strategy_entropy"] >= a["strategy_ci"][0] for a, b in zip(rows, rows[1:]))
    return {"model": model, "questions": len(task_ids), "samples": samples, "max_turns": max_turns,
            "max_new_tokens": max_new_tokens, "rows": rows, "token_monotone": token_monotone,
            "strategy_not_falling": strategy_ok, "monotone": token_monotone and strategy_ok}


# ---- 5. everything ------------------------------------------------------------------------------------

def _smallest(sweep: list[dict], key: str, target: float) -> dict | None:
    """The cheapest size (fewest episodes per arm, then fewest seeds) whose ``key`` reaches ``target``."""
    ok = [r for r in sweep if math.isfinite(r[key]) and r[key] <= target]
    if not ok:
        return None
    best = min(ok, key=lambda r: (r["episodes_per_arm"], r["seeds"], r["questions"]))
    return {k: best[k] for k in ("questions", "samples", "seeds", "episodes_per_arm", key)}


def calibrate(config: CalibrationConfig | None = None) -> dict:
    """Run the three checks; returns one JSON-ready dict (see docs/calibration.md for every key)."""
    from tqdm.auto import tqdm

    config = config or CalibrationConfig()
    started = time.perf_counter()
    setup = study_setup(config.study_file, config.preset)
    if config.env_id:
        setup.env_id, setup.source = config.env_id, "config"
    if config.env_kwargs is not None:
        setup.env_kwargs, setup.source = dict(config.env_kwargs), "config"
    for name in ("questions", "samples", "seeds"):
        if getattr(config, name) is not None:
            setattr(setup, name, getattr(config, name))
    if min(setup.questions, setup.samples, setup.seeds) < 1:
        raise ValueError("questions, samples and seeds must all be >= 1")
    env = make_env(setup)
    pool = list(env.unwrapped.tasks)
    need = max([setup.questions, *config.sweep_questions])
    tasks = pool[:min(need, len(pool))]
    study_tasks = _questions(pool, setup.questions, config.seed)
    table = label_table(env, tasks, progress=config.progress)
    styles = env.unwrapped.taskset.query_styles

    # 1. Recovery of known mixtures.
    timings = {"labels": time.perf_counter() - started}
    mixtures = [recover_mixture(env, study_tasks, name, weights, table, setup.samples, setup.seeds,
                                config.coverage_reps, config.seed)
                for name, weights in tqdm(config.mixtures.items(), desc="mixtures", disable=not config.progress)]
    timings["recovery"] = time.perf_counter() - started - timings["labels"]

    # 2. Power: the study's sizes, then the sweep.
    mark = time.perf_counter()
    sizes = [(setup.questions, setup.samples, setup.seeds)] + [
        (q, n, s) for q in config.sweep_questions for n in config.sweep_samples for s in config.sweep_seeds
        if (q, n, s) != (setup.questions, setup.samples, setup.seeds)]
    results = [entropy_power(pool, config.base_mixture, table, styles, q, n, s, config.reps, config.seed)
               for q, n, s in tqdm(sizes, desc="power (strategy entropy)", disable=not config.progress)]
    study, sweep = results[0], results
    passk = passk_power(setup.questions, setup.samples, setup.seeds, config.reps, setup.samples,
                        config.pass_rate, config.pass_concentration, config.seed)
    success1 = passk_power(setup.questions, setup.samples, setup.seeds, config.reps, 1,
                           config.pass_rate, config.pass_concentration, config.seed)
    timings["power"] = time.perf_counter() - mark

    # 3. Temperature sweep of a real model.
    temperature = None
    if not config.skip_temperature:
        mark = time.perf_counter()
        temperature = temperature_sweep(config.model or default_model(), setup, [t.id for t in pool[:config.temp_questions]],
                                        config.temperatures, config.temp_samples, config.temp_max_turns,
                                        config.temp_max_new_tokens, config.seed, config.progress)
        timings["temperature"] = time.perf_counter() - mark
    env.close()

    errors = [abs(m["error_mm"]) for m in mixtures]
    fidelity = float(np.average([m["label_fidelity"] for m in mixtures], weights=[m["episodes"] for m in mixtures]))
    timings["total"] = time.perf_counter() - started
    return {
        "setup": {**dataclasses.asdict(setup), "pool_questions": len(pool),
                  "config": {k: v for k, v in dataclasses.asdict(config).items() if k not in ("mixtures",)}},
        "max_entropy_error": max(errors),
        "entropy_error_target": ENTROPY_ERROR_TARGET,
        "meets_entropy_target": max(errors) <= ENTROPY_ERROR_TARGET,
        "max_entropy_bias_mm": max(abs(m["bias_mm"]) for m in mixtures),
        "max_entropy_bias_plugin": max(abs(m["bias_plugin"]) for m in mixtures),
        "mean_coverage": float(np.nanmean([m["coverage"] for m in mixtures])) if config.coverage_reps else math.nan,
        "label_fidelity": fidelity,
        "mixtures": mixtures,
        "mde_strategy_entropy": study["mde"],
        "mde_strategy_entropy_paired": study["mde_paired"],
        "mde_strategy_entropy_from_seed_sd": study["mde_from_seed_sd"],
        "false_positive_seed_rule": study["false_positive_seed_rule"],
        "false_positive_paired": study["false_positive_paired"],
        "mde_pass_at_k": passk["mde"],
        "mde_pass_at_k_paired": passk["mde_paired"],
        "mde_success_at_1": success1["mde"],
        "mde_success_at_1_paired": success1["mde_paired"],
        "power_strategy_entropy": study,
        "power_pass_at_k": passk,
        "power_success_at_1": success1,
        "size_sweep": [{k: r[k] for k in ("questions", "samples", "seeds", "episodes_per_arm", "mde", "mde_paired",
                                          "false_positive_seed_rule", "false_positive_paired", "seed_sd")}
                       for r in sweep],
        "mde_target": MDE_TARGET,
        "smallest_size_for_target": _smallest(sweep, "mde", MDE_TARGET),
        "smallest_size_for_target_paired": _smallest(sweep, "mde_paired", MDE_TARGET),
        "temperature": temperature,
        "temperature_monotone": temperature["monotone"] if temperature else None,
        "seconds": timings,
    }


# ---- 6. printing and writing -------------------------------------------------------------------------

def _f(x, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def summary_lines(result: dict) -> list[str]:
    """The headline numbers as plain lines (the benchmark prints these before its JSON)."""
    s = result["setup"]
    lines = [f"setup: {s['env_id']} ({s['source']}), {s['questions']} questions x {s['samples']} samples x "
             f"{s['seeds']} seeds",
             f"max |MM measured - true| = {_f(result['max_entropy_error'])} nats (target <= "
             f"{result['entropy_error_target']}); exact MM bias <= {_f(result['max_entropy_bias_mm'])}, plug-in "
             f"<= {_f(result['max_entropy_bias_plugin'])}; label fidelity {_f(result['label_fidelity'])}; "
             f"CI coverage of the truth {_f(result['mean_coverage'], 2)}"]
    for m in result["mixtures"]:
        lines.append(f"  {m['name']:<40} true {_f(m['true_entropy'])}  E[MM] {_f(m['expected_mm'])}  measured MM "
                     f"{_f(m['measured_mm'])} [{_f(m['ci_mm'][0])}, {_f(m['ci_mm'][1])}]  plug-in "
                     f"{_f(m['measured_plugin'])}  error {m['error_mm']:+.3f}  coverage {_f(m['coverage'], 2)}")
    lines.append(f"MDE strategy entropy: {_f(result['mde_strategy_entropy'], 2)} nats (seed CIs must not overlap; "
                 f"false positives {_f(result['false_positive_seed_rule'], 2)}), "
                 f"{_f(result['mde_strategy_entropy_paired'], 2)} paired over questions (false positives "
                 f"{_f(result['false_positive_paired'], 2)})")
    pk = result["power_pass_at_k"]
    lines.append(f"MDE pass@{pk['k']}: {_f(result['mde_pass_at_k'], 2)} (paired {_f(result['mde_pass_at_k_paired'], 2)}); "
                 f"success@1: {_f(result['mde_success_at_1'], 2)} (paired {_f(result['mde_success_at_1_paired'], 2)}); "
                 f"base success rate {pk['base_rate']}")
    lines.append("size sweep (MDE nats: seed rule / paired):")
    for r in result["size_sweep"]:
        lines.append(f"  {r['questions']:>4} questions x {r['samples']:>3} samples x {r['seeds']} seeds: "
                     f"{_f(r['mde'], 2)} / {_f(r['mde_paired'], 2)}")
    for key, rule in (("smallest_size_for_target", "seed rule"), ("smallest_size_for_target_paired", "paired")):
        best = result[key]
        lines.append(f"smallest size with MDE <= {result['mde_target']} ({rule}): " + (
            f"{best['questions']} x {best['samples']} x {best['seeds']}" if best else "none in the sweep"))
    t = result["temperature"]
    if t:
        cells = ", ".join(f"T={r['temperature']}: token {_f(r['token_entropy'])}, strategy "
                          f"{_f(r['strategy_entropy'])}" for r in t["rows"])
        lines.append(f"temperature sweep ({t['model']}): {cells}; monotone = {t['monotone']}")
    return lines


def print_calibration(result: dict) -> None:
    """Rich tables: recovery per mixture, the MDEs and the size sweep, the temperature sweep."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    s = result["setup"]
    table = Table("mixture", "true H", "E[MM] at n", "measured MM [95% CI]", "plug-in", "error", "coverage",
                  "label fidelity", title=f"Recovery: {s['questions']} questions x {s['samples']} samples x "
                                          f"{s['seeds']} seeds ({s['env_id']})")
    for m in result["mixtures"]:
        table.add_row(m["name"], _f(m["true_entropy"]), _f(m["expected_mm"]),
                      f"{_f(m['measured_mm'])} [{_f(m['ci_mm'][0])}, {_f(m['ci_mm'][1])}]", _f(m["measured_plugin"]),
                      f"{m['error_mm']:+.3f}", _f(m["coverage"], 2), _f(m["label_fidelity"], 3))
    console.print(table)
    table = Table("questions", "samples", "seeds", "episodes/arm", "MDE (CI rule)", "MDE (paired)",
                  "false pos. (CI rule)", title="Minimum detectable drop in strategy entropy (nats, 80% power)")
    for r in result["size_sweep"]:
        table.add_row(str(r["questions"]), str(r["samples"]), str(r["seeds"]), str(r["episodes_per_arm"]),
                      _f(r["mde"], 2), _f(r["mde_paired"], 2), _f(r["false_positive_seed_rule"], 2))
    console.print(table)
    t = result["temperature"]
    if t:
        table = Table("temperature", "token entropy", "strategy entropy [95% CI]", "tokens",
                      title=f"Temperature sweep: {t['model']} ({t['questions']} questions x {t['samples']} samples); "
                            f"monotone = {t['monotone']}")
        for r in t["rows"]:
            table.add_row(str(r["temperature"]), _f(r["token_entropy"]),
                          f"{_f(r['strategy_entropy'])} [{_f(r['strategy_ci'][0])}, {_f(r['strategy_ci'][1])}]",
                          str(r["tokens"]))
        console.print(table)
    for line in summary_lines(result):  # the headline numbers under the tables
        if line.startswith(("max |MM", "MDE", "smallest")):
            console.print(line, markup=False, highlight=False)


def write_calibration(result: dict, out: str | Path) -> Path:
    """Write ``calibration.json`` (``out`` a folder, or a path ending in .json)."""
    from searchgym.corpus.documents import atomic_write

    out = Path(out)
    path = out if out.suffix == ".json" else out / "calibration.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(jsonable(result), indent=2).encode("utf-8"))
    return path


def jsonable(x):
    """NaN and infinities as null (strict JSON), tuples as lists."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def calibrate_command(config: CalibrationConfig, out: str | Path | None = None) -> Path:
    """`searchgym calibrate`: run, print the tables, write calibration.json; returns its path."""
    from searchgym.runs import new_run_dir

    result = calibrate(config)
    print_calibration(result)
    return write_calibration(result, out if out and Path(out).suffix == ".json" else new_run_dir("calibration", out))
