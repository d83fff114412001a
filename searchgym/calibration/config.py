"""The calibration's settings: the study it calibrates against (`StudySetup`, read from the breadth study's
quick preset), every knob (`CalibrationConfig`) and the known mixtures and targets."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

STUDY_FILE, STUDY_PRESET = Path("agents/breadth-study.toml"), "quick"
# What agents/breadth-study.toml's quick preset says, for an installed package without agents/.
FALLBACK_ENV_ID = "searchgym/SyntheticWorld-Easy-v0"
FALLBACK_ENV_KWARGS = {"embedder": "hashing", "top_k": 3, "max_obs_chars": 400, "max_steps": 8,
                       "world_kwargs": {"size": 30, "max_hops": 2, "n_train": 1500, "n_test": 300,
                                        "holdout": "question"}}
FALLBACK_SIZES = (30, 8, 3)  # questions, samples per question, seeds

# The quick study's prior mix (agents/prior-reference.toml pretrain.mixture): the base of the power simulation.
PRIOR_MIX = {"forward": 0.35, "question_first": 0.25, "snippet": 0.2, "parallel": 0.2}
MIXTURES = {
    "one: forward": {"forward": 1.0},
    "two: forward+verify": {"forward": 0.5, "verify": 0.5},
    "three: forward/question_first/snippet": {"forward": 0.5, "question_first": 0.3, "snippet": 0.2},
    "prior mix (4)": PRIOR_MIX,
    "uniform (5)": {"forward": 1.0, "question_first": 1.0, "parallel": 1.0, "snippet": 1.0, "verify": 1.0},
}
SHIFT_TOWARDS = "forward"  # the power simulation's second arm: the base mix shifted towards this strategy
ENTROPY_ERROR_TARGET = 0.05  # nats: max |measured - true| over mixtures at the study's sizes (report's estimator)
COVERAGE_TARGET = 0.90  # the report's strategy-entropy CI must contain the truth this often, for every mixture
MDE_TARGET = 0.10  # nats: the size sweep reports the smallest size whose MDE reaches this
FALLBACK_MODEL = "tiny"  # the random 2-layer model that loads offline, until the reference prior exists
TEMPERATURES = (0.3, 0.7, 1.0, 1.3)
BIAS_AT_N = (4, 8, 16, 32)  # the exact Miller-Madow bias of every mixture is also reported at these n


def default_model() -> str:
    """The temperature sweep's model: the reference prior (alias ``searchgym-prior``) where its folder
    exists, else ``tiny``."""
    from searchgym.paths import REFERENCE_PRIOR

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
    from searchgym.study.spec import load_study
    from searchgym.train.stages import load_recipe
    from searchgym.util.config_schema import ConfigError

    try:
        study = load_study(study_file, preset)
        spec = study.runs()[0]
        recipe = load_recipe(spec.recipe, spec.overrides)
    except (OSError, ConfigError):
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
    # 4. the training-level positive control (`searchgym.calibration.control`): narrow SFT on the shipped prior
    # through the real entry point must drop strategy entropy beyond the MDE. "full" ~3 min, "tiny" ~1 min.
    training_control: str = "full"  # "off", "tiny" or "full"
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
                     temp_max_new_tokens=12, temperatures=(0.3, 1.3), training_control="tiny")
        return cls(**{**sizes, **overrides})
