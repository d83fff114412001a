"""The breadth study: which training method preserves exploration breadth? One command runs every arm.

A study file (``agents/breadth-study.toml``) names arms — each a base recipe in ``agents/`` plus overrides
— seeds, shared overrides (same train questions and information budget) and one ``[eval]`` table that
overrides every arm, so all arms are evaluated on the same held-out questions at the same n and decoding.
Runs land in ``<study>/<arm>/seed<k>/`` (normal run folders); a ``done.json`` marker written after the
trajectories makes re-running the same command skip finished runs, so a crash loses only the run in progress.

A study may also name a ``prior``: a prior-lab recipe (``stages = ["pretrain"]``) pretrained once, before
any arm, into ``<study>/prior/``; every arm then starts from that model (``model.base`` points at it), so
the arms differ only in how they were trained on top of one controlled prior.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from searchgym.corpus.documents import atomic_write
from searchgym.recipe import EvalConfig, Recipe, RecipeError, load_recipe, read_toml

DONE = "done.json"
STUDY_FILE = "study.toml"
EVAL_KEYS = tuple(EvalConfig.__dataclass_fields__)
# Fields that define the SFT information budget: every SFT arm must agree on them.
SFT_BUDGET = ("num_questions", "demos_per_question", "epochs")


class StudyError(ValueError):
    """A study that cannot run as written; the message says what to set."""


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

    def runs(self, prior_model: str | Path | None = None) -> list[RunSpec]:
        """Arm × seed expansion, in file order (arms first, seeds within), with each run's overrides;
        ``prior_model`` (the pretrained prior's folder) becomes every arm's ``model.base``."""
        out = []
        base = (f"model.base={_literal(str(Path(prior_model).resolve()))}",) if prior_model else ()
        for arm in self.arms:
            for seed in arm.seeds if arm.seeds is not None else self.seeds:
                overrides = (*arm.overrides, *self.overrides, *base, f"seed={seed}",
                             *(f"eval.{k}={_literal(v)}" for k, v in self.eval.items()), *self.last)
                out.append(RunSpec(arm.name, seed, arm.recipe, tuple(overrides), arm.train))
        return out

    def to_dict(self) -> dict:
        return {"name": self.name, "preset": self.preset, "seeds": self.seeds,
                "overrides": [*self.overrides, *self.last],
                "prior": str(self.prior) if self.prior else None, "eval": self.eval,
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


def _literal(value) -> str:
    """A value as a TOML literal for ``--set`` (what `searchgym.recipe` parses back).

    >>> _literal(1.0), _literal("test"), _literal(True), _literal(64)
    ('1.0', '"test"', 'true', '64')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, str | list) else repr(value)


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
        raise StudyError(f"{option} {text!r}: give a comma-separated list of {kind.__name__}s, e.g. "
                         f"{option} {'0,1' if kind is int else 'base,sft-diverse'}") from None
    if not values or len(set(values)) != len(values):
        raise StudyError(f"{option} {text!r}: give distinct, non-empty values")
    return values


# What a study sets itself: --set cannot change it (a --set on anything else wins over the study).
PINNED = {"seed": "the study sets each run's seed; use --seeds 0,1 instead",
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
    data = read_toml(path, StudyError, f"no study file at {path}; see agents/breadth-study.toml")
    presets = data.pop("presets", {})
    allowed = {"name", "seeds", "eval", "overrides", "arms", "default_preset", "description", "prior"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise StudyError(f"{path}: unknown key {unknown[0]!r}; allowed: {sorted(allowed)}")
    preset = preset or data.get("default_preset", "")
    chosen = {}
    if preset:
        if preset not in presets:
            raise StudyError(f"{path}: no preset {preset!r}; choose one of {sorted(presets)}")
        chosen = presets[preset]
        bad = sorted(set(chosen) - {"seeds", "arms", "eval", "overrides", "description", "prior"})
        if bad:
            raise StudyError(f"{path}: [presets.{preset}] unknown key {bad[0]!r}; allowed: arms, eval, "
                             "overrides, prior, seeds")
    arms_table = data.get("arms") or {}
    if not arms_table:
        raise StudyError(f"{path}: define at least one arm, e.g. [arms.grpo] recipe = \"agents/grpo.toml\"")
    names = chosen.get("arms", list(arms_table))
    missing = [n for n in names if n not in arms_table]
    if missing:
        raise StudyError(f"{path}: preset {preset!r} lists arm {missing[0]!r}, which has no [arms.{missing[0]}]")
    if arms is not None:
        unknown_arms = [n for n in arms if n not in arms_table]
        if unknown_arms:
            raise StudyError(f"--arms: {path} has no arm {unknown_arms[0]!r}; its arms: {list(arms_table)}")
        names = list(arms)
    arm_list = [_arm(name, arms_table[name], path) for name in names]
    if seeds is not None:
        for arm in arm_list:
            arm.seeds = None  # --seeds is every arm's
    eval_ = {**data.get("eval", {}), **chosen.get("eval", {})}
    bad = sorted(set(eval_) - set(EVAL_KEYS) | ({"baseline"} & set(eval_)))
    if bad:
        raise StudyError(f"{path}: [eval] key {bad[0]!r} not allowed (baseline: the base arm is the baseline); "
                         f"allowed: {sorted(set(EVAL_KEYS) - {'baseline'})}")
    eval_ = {**dataclasses.asdict(EvalConfig(baseline=False)), **eval_}
    seeds = list(seeds if seeds is not None else chosen.get("seeds", data.get("seeds", [0, 1, 2])))
    if not seeds or len(set(seeds)) != len(seeds):
        raise StudyError(f"{path}: seeds must be distinct and non-empty, got {seeds}")
    prior = chosen.get("prior", data.get("prior")) or None  # a preset may switch it off with prior = ""
    if prior is not None:
        prior = _recipe_path(str(prior), path)
        if not prior.is_file():
            raise StudyError(f"{path}: prior = {str(prior)!r} is not a file; name a recipe with stages = "
                             "[\"pretrain\"], e.g. agents/prior-study.toml")
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in PINNED:
            raise StudyError(f"--set {item!r}: a study pins {key} ({PINNED[key]})")
        if key == "model.base" and prior is not None:
            raise StudyError(f"--set {item!r}: this study pretrains a prior ({prior}) as every arm's model.base; "
                             "choose a preset without one (e.g. --preset tiny) to set model.base")
    return Study(name=data.get("name", path.stem), preset=preset, seeds=seeds, eval=eval_,
                 overrides=[*data.get("overrides", []), *chosen.get("overrides", [])], arms=arm_list,
                 prior=prior, last=list(overrides))


def _recipe_path(name: str, study_path: Path) -> Path:
    """Relative to the working folder (the repository root) or, failing that, to the study file."""
    recipe = Path(name)
    if not recipe.is_absolute() and not recipe.exists() and (study_path.parent / recipe).exists():
        recipe = study_path.parent / recipe
    return recipe


def _arm(name: str, table: dict, study_path: Path) -> Arm:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):  # it names a folder and a TOML table
        raise StudyError(f"{study_path}: arm name {name!r} may use only letters, digits, '-' and '_'")
    bad = sorted(set(table) - {"recipe", "overrides", "train", "seeds", "description"})
    if bad or "recipe" not in table:
        raise StudyError(f"{study_path}: [arms.{name}] needs recipe = \"agents/<name>.toml\" and allows only "
                         f"recipe, overrides, train, seeds{f' (got {bad[0]!r})' if bad else ''}")
    return Arm(name=name, recipe=_recipe_path(table["recipe"], study_path), overrides=list(table.get("overrides", [])),
               train=bool(table.get("train", True)), seeds=table.get("seeds"))


# ---- 2. resolving and checking every run before anything trains ------------------------------------

def prior_recipe(study: Study) -> Recipe | None:
    """The study's prior recipe with the study's overrides (same env as the arms), seed 0: one prior for
    all arms and seeds, so seeds vary the training on top of it, not the prior itself."""
    if study.prior is None:
        return None
    try:
        recipe = load_recipe(study.prior, [*study.overrides, "seed=0", *study.last])
    except RecipeError as e:
        raise StudyError(f"prior {study.prior}: {e}") from None
    if recipe.stages != ["pretrain"]:
        raise StudyError(f"prior {study.prior}: stages must be [\"pretrain\"] (the arms do the training), "
                         f"got {recipe.stages}")
    return recipe


def resolve(study: Study, prior_model: str | Path | None = None) -> dict[RunSpec, Recipe]:
    """Load and validate every run's recipe, then check the study's promises hold across arms: one env,
    one eval config, and one SFT information budget. Fails before any training starts."""
    recipes: dict[RunSpec, Recipe] = {}
    prior = prior_recipe(study)
    for run in study.runs(prior_model):
        try:
            # with a prior, model.base is the folder the prior is about to be pretrained into
            recipes[run] = load_recipe(run.recipe, run.overrides, check_model=prior_model is None)
        except RecipeError as e:
            raise StudyError(f"arm {run.arm!r} (seed {run.seed}): {e}") from None
    first_run, first = next(iter(recipes.items()))
    for run, r in recipes.items():
        if (r.env.id, r.env.kwargs) != (first.env.id, first.env.kwargs):
            raise StudyError(f"arm {run.arm!r} uses env {r.env.id} {r.env.kwargs} but arm {first_run.arm!r} uses "
                             f"{first.env.id} {first.env.kwargs}; every arm must run on the same questions: put "
                             "env.id / env.kwargs in the study's overrides")
        if r.eval != first.eval:
            raise StudyError(f"arm {run.arm!r} evaluates with {r.eval} but arm {first_run.arm!r} with {first.eval}; "
                             "set the differing keys in the study's [eval]")
    sft = [(run, r) for run, r in recipes.items() if run.train and "sft" in r.stages]
    for run, r in sft[1:]:
        for key in SFT_BUDGET:
            a, b = getattr(r.sft, key), getattr(sft[0][1].sft, key)
            if a != b:
                raise StudyError(f"SFT arms must share one information budget: arm {run.arm!r} has sft.{key}={a} "
                                 f"but arm {sft[0][0].arm!r} has {b}; set sft.{key} in the study's overrides")
    if prior is not None and (prior.env.id, prior.env.kwargs) != (first.env.id, first.env.kwargs):
        raise StudyError(f"the prior {study.prior} uses env {prior.env.id} {prior.env.kwargs} but the arms use "
                         f"{first.env.id} {first.env.kwargs}; put env.id / env.kwargs in the study's overrides")
    return recipes


# ---- 3. running: skip what is done, redo what a crash interrupted ----------------------------------

def is_done(run_dir: Path, marker_only: bool = False) -> bool:
    """A finished run: the done marker and its trajectories (the marker is written last)."""
    return (Path(run_dir) / DONE).is_file() and (marker_only or (Path(run_dir) / "trajectories.jsonl").is_file())


def _train(run: RunSpec, recipe: Recipe, run_dir: Path) -> None:
    from searchgym.train import train_command

    train_command(run.recipe, overrides=run.overrides, out=run_dir)


def _evaluate_base(run: RunSpec, recipe: Recipe, run_dir: Path) -> None:
    """The untrained arm: the recipe's base model through the very evaluation `train_command` runs."""
    import torch

    from searchgym.models import load_model
    from searchgym.runs import write_text
    from searchgym.train import evaluate_run

    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir, "recipe.toml", recipe.to_toml())
    torch.manual_seed(recipe.seed)
    model, tokenizer = load_model(recipe.model.base, dtype=getattr(torch, recipe.model.dtype),
                                  trust_remote_code=recipe.model.trust_remote_code,
                                  device="cuda" if torch.cuda.is_available() else "cpu")
    evaluate_run(recipe, run_dir, model, tokenizer)  # eval.baseline is false in a study: no adapter needed


def _pretrain_prior(recipe: Recipe, prior_dir: Path) -> None:
    from searchgym.runs import write_text
    from searchgym.train import trim_to_latest_checkpoint
    from searchgym.train.pretrain import run_pretrain

    prior_dir.mkdir(parents=True, exist_ok=True)
    write_text(prior_dir, "recipe.toml", recipe.to_toml())
    trim_to_latest_checkpoint(prior_dir, "pretrain")  # the steps after that checkpoint get logged again
    run_pretrain(recipe, prior_dir, resume=True)  # resume: continues from its last checkpoint after a crash


def run_study(study: Study, out: str | Path, *, train: Callable | None = None, evaluate: Callable | None = None,
              pretrain: Callable | None = None, log: Callable[[str], None] = print) -> list[Path]:
    """Run every arm × seed not yet done; returns the run folders in study order.

    ``train`` / ``evaluate`` (run, recipe, run_dir) do one trained / untrained run (default: `train_command`
    and `eval_command`); ``pretrain`` (recipe, prior_dir) builds the study's prior; tests pass fakes.
    The study folder is locked while it runs (`searchgym.runs.run_lock`; each training locks its own run
    folder too), so a second `searchgym experiment` on it stops with one line instead of racing.
    """
    from searchgym.runs import RunLocked, run_lock
    from searchgym.train.pretrain import model_dir

    out = Path(out)
    recipes = resolve(study, model_dir(out / "prior") if study.prior else None)  # a bad study writes nothing
    try:
        with run_lock(out):
            return _run_study(study, out, recipes, train or _train, evaluate or _evaluate_base, pretrain, log)
    except RunLocked as e:
        raise StudyError(str(e)) from None


def _run_study(study: Study, out: Path, recipes: dict[RunSpec, Recipe], train: Callable, evaluate: Callable,
               pretrain: Callable | None, log: Callable[[str], None]) -> list[Path]:
    from searchgym.train.pretrain import model_dir

    prior_dir = out / "prior"
    _claim(out, study)
    if study.prior is not None:
        if is_done(prior_dir, marker_only=True):
            log(f"prior: done already ({model_dir(prior_dir)})")
        else:
            log(f"prior: pretraining {study.prior} → {prior_dir}")
            start = time.time()
            (pretrain or _pretrain_prior)(prior_recipe(study), prior_dir)
            if not model_dir(prior_dir).is_dir():
                raise StudyError(f"the prior finished without {model_dir(prior_dir)}")
            marker = {"recipe": str(study.prior), "seconds": round(time.time() - start, 1),
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
            atomic_write(prior_dir / DONE, json.dumps(marker, indent=2).encode("utf-8"))
    folders = []
    for i, (run, recipe) in enumerate(recipes.items(), 1):
        run_dir = run.folder(out)
        folders.append(run_dir)
        tag = f"[{i}/{len(recipes)}] {run.arm} seed {run.seed}"
        if is_done(run_dir):
            log(f"{tag}: done already, skipped")
            continue
        if run_dir.exists():  # a crash left it half-written: start this run over
            log(f"{tag}: unfinished folder from an earlier attempt, starting it over")
            shutil.rmtree(run_dir)
        log(f"{tag}: {'training' if run.train else 'evaluating the base model'} → {run_dir}")
        start = time.time()
        (train if run.train else evaluate)(run, recipe, run_dir)
        if not (run_dir / "trajectories.jsonl").is_file():
            raise StudyError(f"{tag} finished without {run_dir / 'trajectories.jsonl'}; the arm's eval did not "
                             "run (check that the recipe's stages end with an evaluation)")
        marker = {"arm": run.arm, "seed": run.seed, "recipe": str(run.recipe), "overrides": list(run.overrides),
                  "seconds": round(time.time() - start, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write(run_dir / DONE, json.dumps(marker, indent=2).encode("utf-8"))
    return folders


def _claim(out: Path, study: Study) -> None:
    """Write ``study.toml``, or check an existing one matches: resuming with other settings would mix
    runs that were not evaluated alike. Adding arms or seeds to a study is allowed (the runs already done
    stay valid), and so is running a subset of them (``--arms``/``--seeds``): the file keeps the union.
    Changing anything an earlier run was made with is not."""
    new = tomllib.loads(_dump_toml(study.to_dict()))  # compare like with like (None values are not written)
    path = out / STUDY_FILE
    if path.exists():
        old = tomllib.loads(path.read_text(encoding="utf-8"))
        diff = sorted(k for k in set(old) | set(new) if k not in ("arms", "seeds") and old.get(k) != new.get(k))
        merged = {**new, "arms": dict(new.get("arms", {})),
                  "seeds": _union(old.get("seeds", []), new.get("seeds", []))}
        for name, arm in old.get("arms", {}).items():
            now = new.get("arms", {}).get(name)
            if now is None:
                merged["arms"][name] = arm  # not run this time: still part of the study
            elif {k: v for k, v in now.items() if k != "seeds"} != {k: v for k, v in arm.items() if k != "seeds"}:
                diff.append(f"arms.{name}")
            else:
                merged["arms"][name] = {**now, "seeds": _union(arm.get("seeds", []), now.get("seeds", []))}
        if diff:
            raise StudyError(f"{out} holds a study run with different settings (differs in: {', '.join(diff)}); "
                             "pass --out NEW_FOLDER, or delete the old folder to start over (adding arms or "
                             "seeds is fine)")
        if old == merged:
            return
        new = merged
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(path, _dump_toml(new).encode("utf-8"))


def _union(a: list, b: list) -> list:
    return list(a) + [x for x in b if x not in a]


def _dump_toml(data: dict, prefix: str = "") -> str:
    """Nested dict → TOML (tables for dicts, literals for the rest).

    >>> print(_dump_toml({"a": 1, "t": {"b": "x", "u": {"c": [1, 2]}}}).strip())
    a = 1
    <BLANKLINE>
    [t]
    b = "x"
    <BLANKLINE>
    [t.u]
    c = [1, 2]
    """
    lines = [f"{k} = {_literal(v)}" for k, v in data.items() if not isinstance(v, dict) and v is not None]
    for k, v in data.items():
        if isinstance(v, dict):
            name = f"{prefix}{k}"
            lines.append(f"\n[{name}]")
            lines.append(_dump_toml(v, prefix=name + ".").rstrip("\n"))
    return "\n".join(line for line in lines if line) + "\n"


def experiment_command(study_path: str | Path, preset: str | None = None, out: str | Path | None = None,
                       overrides: Sequence[str] = (), report: bool = True, *, arms: Sequence[str] | None = None,
                       seeds: Sequence[int] | None = None) -> Path:
    """`searchgym experiment`: run (or resume) a study, then write its report. Returns the study folder."""
    study = load_study(study_path, preset, overrides, arms=arms, seeds=seeds)
    out = Path(out) if out else Path("runs") / f"{study.name}-{study.preset or 'default'}"
    run_study(study, out)
    if report:
        from searchgym.report import report_command

        report_command([out], out=out)
    return out
