"""The study file: its typed tables (`StudyFile`, `ArmTable`, `PresetTable`, built by the one config loader,
`searchgym.util.config_schema`), the resolved study (`Study`, `Arm`, `RunSpec`) and `load_study` (presets, --set, checks).

`searchgym.study.runner` runs what this module reads; see that module for the study format.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from searchgym.config.agent_recipe import NAME_PATTERN, EvalConfig
from searchgym.util.config_schema import ConfigError, build, read_toml, toml_value

DONE = "done.json"
STUDY_FILE = "study.toml"
EVAL_KEYS = tuple(EvalConfig.__dataclass_fields__)
# Fields that define the SFT information budget: every SFT arm must agree on them.
SFT_BUDGET = ("num_questions", "demos_per_question", "epochs")


StudyError = ConfigError  # a study that cannot run as written: the one config error


@dataclass
class DoseTable:
    """``[dose]``: checkpoints along every training arm, each evaluated like the final model (docs/dose.md).

    ``every`` becomes each training arm's ``dose.every`` (adapter snapshots every N optimizer steps of each
    stage, and at its end); ``rungs`` are the per-stage steps to evaluate among them (each stage's last
    step always is; empty: every snapshot). Rungs can be added to a finished study: only new ones run."""

    every: int = 0
    rungs: list[int] = field(default_factory=list)


@dataclass
class ArmTable:
    """``[arms.<name>]`` as written."""

    recipe: str = field(metadata={"example": 'recipe = "agents/grpo.toml"'})
    overrides: list[str] = field(default_factory=list)
    train: bool = True
    seeds: list[int] | None = None
    description: str = ""


@dataclass
class PresetTable:
    """``[presets.<name>]``: what it sets replaces the study's (``overrides`` are appended to the study's)."""

    description: str = ""
    seeds: list[int] | None = None
    arms: list[str] | None = None  # the subset to run, in order
    eval: dict = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    prior: str | None = None  # "" switches the study's prior off
    dose: dict = field(default_factory=dict)  # replaces the study's [dose] keys it sets


@dataclass
class StudyFile:
    """A study file as written (see `searchgym.study.runner` for the format)."""

    name: str | None = None  # default: the file's name
    description: str = ""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    default_preset: str = ""
    prior: str | None = None
    overrides: list[str] = field(default_factory=list)
    eval: dict = field(default_factory=dict)
    dose: dict = field(default_factory=dict)  # a DoseTable
    arms: dict[str, ArmTable] = field(default_factory=dict)
    presets: dict[str, PresetTable] = field(default_factory=dict)


@dataclass
class Arm:
    """One training method: a recipe plus overrides; ``train = false`` only evaluates the recipe's base model."""

    name: str
    recipe: Path
    overrides: list[str] = field(default_factory=list)
    train: bool = True
    seeds: list[int] | None = None  # None = the study's seeds


@dataclass
class Study:
    name: str
    preset: str
    seeds: list[int]
    eval: dict  # every EvalConfig field: replaces each arm's [eval] whole (unset keys take the defaults)
    overrides: list[str]  # applied to every arm, after the arm's own
    arms: list[Arm]
    prior: Path | None = None  # a pretrain-only recipe every arm starts from (see run_study)
    last: list[str] = field(default_factory=list)  # --set overrides: applied after everything the study sets
    dose: DoseTable = field(default_factory=DoseTable)

    def runs(self, prior_model: str | Path | None = None) -> list[RunSpec]:
        """Arm × seed expansion, in file order (arms first, seeds within), with each run's overrides;
        ``prior_model`` (the pretrained prior's folder) becomes every arm's ``model.base``."""
        out = []
        base = (f"model.base={toml_value(str(Path(prior_model).resolve()))}",) if prior_model else ()
        for arm in self.arms:
            for seed in arm.seeds if arm.seeds is not None else self.seeds:
                dose = (f"dose.every={self.dose.every}",) if arm.train and self.dose.every else ()
                overrides = (*arm.overrides, *self.overrides, *base, f"seed={seed}", *dose,
                             *(f"eval.{k}={toml_value(v)}" for k, v in self.eval.items()), *self.last)
                out.append(RunSpec(arm.name, seed, arm.recipe, tuple(overrides), arm.train))
        return out

    def to_dict(self) -> dict:
        return {"name": self.name, "preset": self.preset, "seeds": self.seeds,
                "overrides": [*self.overrides, *self.last],
                "prior": str(self.prior) if self.prior else None, "eval": self.eval,
                "dose": {"every": self.dose.every, "rungs": list(self.dose.rungs)},
                "arms": {a.name: {"recipe": str(a.recipe), "train": a.train, "overrides": a.overrides,
                                  "seeds": a.seeds if a.seeds is not None else self.seeds} for a in self.arms}}


@dataclass(frozen=True)
class RunSpec:
    arm: str
    seed: int
    recipe: Path
    overrides: tuple[str, ...]
    train: bool

    def folder(self, study_dir: Path) -> Path:
        return Path(study_dir) / self.arm / f"seed{self.seed}"


# ---- 1. the study file -----------------------------------------------------------------------------

def parse_list(text: str | None, option: str, kind: Callable = str) -> list | None:
    """A comma-separated command-line list (``--arms a,b``, ``--seeds 0,1``); None when not given.

    >>> parse_list("base, sft-diverse", "--arms"), parse_list("0,1", "--seeds", int), parse_list(None, "--arms")
    (['base', 'sft-diverse'], [0, 1], None)
    """
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        values = [kind(t) for t in items]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: give a comma-separated list of {kind.__name__}s, e.g. "
                          f"{option} {'0,1' if kind is int else 'base,sft-diverse'}") from None
    if not values or len(set(values)) != len(values):
        raise ConfigError(f"{option} {text!r}: give distinct, non-empty values")
    return values


# What a study sets itself: --set cannot change it (a --set on anything else wins over the study).
PINNED = {"seed": "the study sets each run's seed; use --seeds 0,1 instead",
          "dose.every": "the study's [dose] every sets it for every training arm",
          "name": "run folders are named by arm and seed",
          "stages": "each arm's stages are what the arm is; choose arms with --arms",
          "eval.baseline": "the study's base arm is the baseline"}


def load_study(path: str | Path, preset: str | None = None, overrides: Sequence[str] = (), *,
               arms: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> Study:
    """Read a study file, apply a ``[presets.<name>]`` table, then the command line: ``arms`` (a subset of
    the study's arms), ``seeds`` (every arm's seeds) and ``--set`` ``overrides``, which are applied to every
    arm LAST, after the study's own overrides, its prior and its ``[eval]`` (what the study must set itself,
    `PINNED`, is refused; ``model.base`` is refused when the study pretrains a prior).

    A preset may set ``seeds``, ``arms`` (the subset to run, in order), ``eval`` keys and ``overrides``
    (appended after the study's). Recipe paths are relative to the repository root (the working folder)
    or, failing that, to the study file.
    """
    path = Path(path)
    data = build(StudyFile, read_toml(path, f"no study file at {path}; see agents/breadth-study.toml"), str(path))
    preset = preset or data.default_preset
    chosen = PresetTable()
    if preset:
        if preset not in data.presets:
            raise ConfigError(f"{path}: no preset {preset!r}; choose one of {sorted(data.presets)}")
        chosen = data.presets[preset]
    if not data.arms:
        raise ConfigError(f"{path}: define at least one arm, e.g. [arms.grpo] recipe = \"agents/grpo.toml\"")
    names = chosen.arms if chosen.arms is not None else list(data.arms)
    missing = [n for n in names if n not in data.arms]
    if missing:
        raise ConfigError(f"{path}: presets.{preset}.arms lists arm {missing[0]!r}, which has no [arms.{missing[0]}]; "
                          f"its arms: {list(data.arms)}")
    if arms is not None:
        unknown_arms = [n for n in arms if n not in data.arms]
        if unknown_arms:
            raise ConfigError(f"--arms: {path} has no arm {unknown_arms[0]!r}; its arms: {list(data.arms)}")
        names = list(arms)
    arm_list = [_arm(name, data.arms[name], path) for name in names]
    if seeds is not None:
        for arm in arm_list:
            arm.seeds = None  # --seeds is every arm's
    eval_ = {**data.eval, **chosen.eval}
    allowed = sorted(set(EVAL_KEYS) - {"baseline"})
    if bad := sorted(set(eval_) - set(allowed)):
        raise ConfigError(f"{path}: key 'eval.{bad[0]}' not allowed; allowed keys in [eval]: {allowed} (no baseline: "
                          "the base arm is the baseline)")
    eval_ = dataclasses.asdict(build(EvalConfig, {"baseline": False, **eval_}, str(path), "eval."))
    seeds = list(seeds if seeds is not None else chosen.seeds if chosen.seeds is not None else data.seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: seeds must be distinct and non-empty, got {seeds}")
    prior = (chosen.prior if chosen.prior is not None else data.prior) or None  # a preset may say prior = ""
    if prior is not None:
        prior = _recipe_path(prior, path)
        if not prior.is_file():
            raise ConfigError(f"{path}: prior = {str(prior)!r} is not a file; name a recipe with stages = "
                              "[\"pretrain\"], e.g. agents/prior-study.toml")
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in PINNED:
            raise ConfigError(f"--set {item!r}: a study pins {key} ({PINNED[key]})")
        if key == "model.base" and prior is not None:
            raise ConfigError(f"--set {item!r}: this study pretrains a prior ({prior}) as every arm's model.base; "
                              "choose a preset without one (e.g. --preset tiny) to set model.base")
    dose = _dose({**data.dose, **chosen.dose}, path, preset)
    name = data.name or path.stem
    if not NAME_PATTERN.fullmatch(name):  # it names the default output folder, runs/<name>-<preset>
        raise ConfigError(f"{path}: name {name!r:.60} is not a folder name; use 1-100 letters, digits, '.', '_' "
                          "or '-', not starting with '.'")
    return Study(name=name, preset=preset, seeds=seeds, eval=eval_,
                 overrides=[*data.overrides, *chosen.overrides], arms=arm_list, prior=prior, last=list(overrides),
                 dose=dose)


def _dose(table: dict, path: Path, preset: str) -> DoseTable:
    """The study's ``[dose]`` with its preset's keys over it, checked: the rungs must be on the snapshot grid."""
    where = f"{path} [presets.{preset}]" if preset else str(path)
    dose = build(DoseTable, table, where, "dose.")
    if dose.every < 0:
        raise ConfigError(f"{where}: dose.every must be an integer >= 0 (0 = no dose curve), got {dose.every}")
    if dose.rungs and not dose.every:
        raise ConfigError(f"{where}: dose.rungs {dose.rungs} needs snapshots to evaluate; set dose.every > 0 "
                          "(e.g. every = 10 with rungs = [10, 20, 40, 80])")
    bad = [r for r in dose.rungs if r < 1 or r % max(dose.every, 1)]
    if bad:
        raise ConfigError(f"{where}: dose.rungs {bad} are not on the snapshot grid: every rung must be a positive "
                          f"multiple of dose.every = {dose.every} (each stage's last step is a rung anyway)")
    if len(set(dose.rungs)) != len(dose.rungs):
        raise ConfigError(f"{where}: dose.rungs must be distinct, got {dose.rungs}")
    return dose


def _recipe_path(name: str, study_path: Path) -> Path:
    """Relative to the working folder (the repository root) or, failing that, to the study file."""
    recipe = Path(name)
    if not recipe.is_absolute() and not recipe.exists() and (study_path.parent / recipe).exists():
        recipe = study_path.parent / recipe
    return recipe


def _arm(name: str, table: ArmTable, study_path: Path) -> Arm:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):  # it names a folder and a TOML table
        raise ConfigError(f"{study_path}: arm name {name!r} may use only letters, digits, '-' and '_'")
    return Arm(name=name, recipe=_recipe_path(table.recipe, study_path), overrides=list(table.overrides),
               train=table.train, seeds=table.seeds)
