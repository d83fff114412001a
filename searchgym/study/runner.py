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

import shutil
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

from searchgym.config.agent_recipe import Recipe
from searchgym.runs import RunFolder
from searchgym.study.spec import (
    SFT_BUDGET,
    STUDY_FILE,
    DoseTable,
    RunSpec,
    Study,
    load_study,
)
from searchgym.train.stages import load_recipe
from searchgym.util.config_schema import ConfigError, to_toml
from searchgym.util.files import atomic_write

# ---- 2. resolving and checking every run before anything trains ------------------------------------

def prior_recipe(study: Study) -> Recipe | None:
    """The study's prior recipe with the study's overrides (same env as the arms), seed 0: one prior for
    all arms and seeds, so seeds vary the training on top of it, not the prior itself."""
    if study.prior is None:
        return None
    try:
        recipe = load_recipe(study.prior, [*study.overrides, "seed=0", *study.last])
    except ConfigError as e:
        raise ConfigError(f"prior {study.prior}: {e}") from None
    if recipe.stages != ["pretrain"]:
        raise ConfigError(f"prior {study.prior}: stages must be [\"pretrain\"] (the arms do the training), "
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
        except ConfigError as e:
            raise ConfigError(f"arm {run.arm!r} (seed {run.seed}): {e}") from None
    first_run, first = next(iter(recipes.items()))
    for run, r in recipes.items():
        if (r.env.id, r.env.kwargs) != (first.env.id, first.env.kwargs):
            raise ConfigError(f"arm {run.arm!r} uses env {r.env.id} {r.env.kwargs} but arm {first_run.arm!r} uses "
                              f"{first.env.id} {first.env.kwargs}; every arm must run on the same questions: put "
                              "env.id / env.kwargs in the study's overrides")
        if r.eval != first.eval:
            raise ConfigError(f"arm {run.arm!r} evaluates with {r.eval} but arm {first_run.arm!r} with {first.eval}; "
                              "set the differing keys in the study's [eval]")
    sft = [(run, r) for run, r in recipes.items() if run.train and "sft" in r.stages]
    for run, r in sft[1:]:
        for key in SFT_BUDGET:
            a, b = getattr(r.sft, key), getattr(sft[0][1].sft, key)
            if a != b:
                raise ConfigError(f"SFT arms must share one information budget: arm {run.arm!r} has sft.{key}={a} "
                                  f"but arm {sft[0][0].arm!r} has {b}; set sft.{key} in the study's overrides")
    if prior is not None and (prior.env.id, prior.env.kwargs) != (first.env.id, first.env.kwargs):
        raise ConfigError(f"the prior {study.prior} uses env {prior.env.id} {prior.env.kwargs} but the arms use "
                          f"{first.env.id} {first.env.kwargs}; put env.id / env.kwargs in the study's overrides")
    return recipes


# ---- 3. running: skip what is done, redo what a crash interrupted ----------------------------------

def is_done(run_dir: Path, marker_only: bool = False) -> bool:
    """A finished run: the done marker and its trajectories (the marker is written last)."""
    return RunFolder(run_dir).is_done(marker_only)


def _train(run: RunSpec, recipe: Recipe, run_dir: Path) -> None:
    from searchgym.train import train_command

    train_command(run.recipe, overrides=run.overrides, out=run_dir)


def _evaluate_base(run: RunSpec, recipe: Recipe, run_dir: Path) -> None:
    """The untrained arm: the recipe's base model through the very evaluation `train_command` runs."""
    import torch

    from searchgym.agent.models import load_model
    from searchgym.train import evaluate_run

    run = RunFolder(run_dir)
    run.write_text(run.RECIPE, recipe.to_toml())
    torch.manual_seed(recipe.seed)
    model, tokenizer = load_model(recipe.model.base, dtype=getattr(torch, recipe.model.dtype),
                                  trust_remote_code=recipe.model.trust_remote_code,
                                  device="cuda" if torch.cuda.is_available() else "cpu")
    evaluate_run(recipe, run_dir, model, tokenizer)  # eval.baseline is false in a study: no adapter needed


def _pretrain_prior(recipe: Recipe, prior_dir: Path) -> None:
    from searchgym.train import trim_to_latest_checkpoint
    from searchgym.train.pretrain import run_pretrain

    run = RunFolder(prior_dir)
    run.write_text(run.RECIPE, recipe.to_toml())
    trim_to_latest_checkpoint(prior_dir, "pretrain")  # the steps after that checkpoint get logged again
    run_pretrain(recipe, prior_dir, resume=True)  # resume: continues from its last checkpoint after a crash


def run_study(study: Study, out: str | Path, *, train: Callable | None = None, evaluate: Callable | None = None,
              pretrain: Callable | None = None, log: Callable[[str], None] = print, jobs: int = 1) -> list[Path]:
    """Run every arm × seed not yet done, then evaluate its dose rungs not yet evaluated (when the study has
    a ``[dose]``); returns the run folders in study order.

    ``train`` / ``evaluate`` (run, recipe, run_dir) do one trained / untrained run (default: `train_command`
    and the base model's evaluation); ``pretrain`` (recipe, prior_dir) builds the study's prior; tests pass
    fakes. ``jobs`` > 1 runs that many runs at once in worker processes of one thread each (the prior, if
    any, first; each worker's output goes to ``<study>/logs/<arm>-seed<k>.log``).
    The study folder is locked while it runs (`searchgym.runs.run_lock`; each training locks its own run
    folder too), so a second `searchgym experiment` on it stops with one line instead of racing.
    """
    from searchgym.runs import run_lock

    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs: must be an integer >= 1 (runs at once), got {jobs!r}")
    out = Path(out)
    recipes = resolve(study, _prior(out).stage_model("pretrain") if study.prior else None)  # a bad study writes nothing
    with run_lock(out):  # a held lock is `runs.RunLocked`, a ConfigError like every other reason not to run
        return _run_study(study, out, recipes, train or _train, evaluate or _evaluate_base, pretrain, log, jobs)


def _run_study(study: Study, out: Path, recipes: dict[RunSpec, Recipe], train: Callable, evaluate: Callable,
               pretrain: Callable | None, log: Callable[[str], None], jobs: int = 1) -> list[Path]:
    prior = _prior(out)
    prior_dir, prior_model = prior.path, prior.stage_model("pretrain")
    _claim(out, study)
    if study.prior is not None:
        if prior.is_done(marker_only=True):
            log(f"prior: done already ({prior_model})")
        else:
            log(f"prior: pretraining {study.prior} → {prior_dir}")
            start = time.time()
            (pretrain or _pretrain_prior)(prior_recipe(study), prior_dir)
            if not prior_model.is_dir():
                raise ConfigError(f"the prior finished without {prior_model}")
            prior.mark_done({"recipe": str(study.prior), "seconds": round(time.time() - start, 1),
                             "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    jobs_list = [(f"[{i}/{len(recipes)}] {run.arm} seed {run.seed}", run, recipe, run.folder(out))
                 for i, (run, recipe) in enumerate(recipes.items(), 1)]
    if jobs == 1:
        for tag, run, recipe, run_dir in jobs_list:
            _one_run(tag, run, recipe, run_dir, train, evaluate, study.dose, log)
    else:
        _run_parallel(jobs_list, out, train, evaluate, study.dose, log, jobs)
    return [run_dir for *_, run_dir in jobs_list]


def _one_run(tag: str, run: RunSpec, recipe: Recipe, run_dir: Path, train: Callable, evaluate: Callable,
             dose: DoseTable, log: Callable[[str], None]) -> str:
    """One arm × seed: train (or evaluate the base) unless done, mark it done, then its dose rungs."""
    folder = RunFolder(run_dir)
    if folder.is_done():
        log(f"{tag}: done already, skipped")
    else:
        if run_dir.exists():  # a crash left it half-written: start this run over
            log(f"{tag}: unfinished folder from an earlier attempt, starting it over")
            shutil.rmtree(run_dir)
        log(f"{tag}: {'training' if run.train else 'evaluating the base model'} → {run_dir}")
        start = time.time()
        (train if run.train else evaluate)(run, recipe, run_dir)
        if not folder.trajectories().is_file():
            raise ConfigError(f"{tag} finished without {folder.trajectories()}; the arm's eval did not "
                              "run (check that the recipe's stages end with an evaluation)")
        folder.mark_done({"arm": run.arm, "seed": run.seed, "recipe": str(run.recipe),
                          "overrides": list(run.overrides), "seconds": round(time.time() - start, 1),
                          "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    if not dose.every:
        return ""
    from searchgym.study.dose import evaluate_base_rung, evaluate_rungs, read_rung

    if not run.train:
        return f"rung {evaluate_base_rung(run_dir, recipe, run.arm, run.seed).name}"
    log(f"{tag}: dose rungs")
    rungs = evaluate_rungs(run_dir, recipe, run.arm, run.seed, dose.rungs or None, log=log)
    last = read_rung(rungs[-1])["kl"]["k3"]["value"]
    return f"{len(rungs)} rungs, final KL k3 {'–' if last is None else f'{last:.4f}'} nats/token"


class RunsFailed(RuntimeError):
    """Some runs of a parallel study failed (each with its log); the rest finished and are kept."""


def _worker_init() -> None:
    """A worker of `_run_parallel`: one thread (several runs share the cores), set before torch loads, and the
    CLI's filter of known third-party warnings (the worker's log would repeat them on every run)."""
    import os

    from searchgym.quiet import quiet_known_warnings

    quiet_known_warnings()

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)


def _worker(tag: str, run: RunSpec, recipe: Recipe, run_dir: Path, train: Callable, evaluate: Callable,
            dose: DoseTable, log_file: Path) -> str:
    """`_one_run` in a worker process, its output (progress bars included) in its own log file."""
    import contextlib
    import os
    import sys

    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8", buffering=1) as f, contextlib.ExitStack() as stack:
        saved = [os.dup(1), os.dup(2)]
        stack.callback(lambda: [os.dup2(fd, i) or os.close(fd) for i, fd in zip((1, 2), saved)])
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(f.fileno(), 1), os.dup2(f.fileno(), 2)  # C-level writers (tqdm, torch, warnings) too
        stack.enter_context(contextlib.redirect_stdout(f))
        stack.enter_context(contextlib.redirect_stderr(f))
        return _one_run(tag, run, recipe, run_dir, train, evaluate, dose, print)


def _run_parallel(jobs_list: list, out: Path, train: Callable, evaluate: Callable, dose: DoseTable,
                  log: Callable[[str], None], jobs: int) -> None:
    """Independent runs in ``jobs`` processes (spawned: no torch state is forked); every run finishes or
    fails on its own, and the failures are raised together at the end."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    failed = []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_init) as pool, \
            tqdm(total=len(jobs_list), desc=f"study runs ({jobs} at once)", unit="run") as bar:
        started = time.time()
        futures = {}
        # Longest first (chained stages, then single stages, then base evaluations), so the last minutes do
        # not leave a core idle behind one long run; results are reported as they come, in any order.
        for tag, run, recipe, run_dir in sorted(jobs_list, key=lambda j: -len(j[2].stages) if j[1].train else 0):
            log_file = out / "logs" / f"{run.arm}-seed{run.seed}.log"
            futures[pool.submit(_worker, tag, run, recipe, run_dir, train, evaluate, dose, log_file)] = (tag, log_file)
        for future in as_completed(futures):
            tag, log_file = futures[future]
            try:
                note = future.result()
                bar.write(f"{tag}: done at {(time.time() - started) / 60:.1f} min{f' ({note})' if note else ''}")
            except Exception as e:  # noqa: BLE001  one run's failure must not stop the others
                failed.append(f"{tag}: {type(e).__name__}: {e} (log: {log_file})")
                bar.write(f"{tag}: FAILED ({type(e).__name__}: {e}); log: {log_file}")
            bar.update()
    if failed:
        raise RunsFailed(f"{len(failed)} of {len(jobs_list)} study runs failed (the others are done; re-run the "
                         "same command to retry only these): " + "; ".join(failed))


def _prior(out: Path) -> RunFolder:
    """The study's prior: a run folder of its own, ``<study>/prior``."""
    return RunFolder(Path(out) / "prior")


def _claim(out: Path, study: Study) -> None:
    """Write ``study.toml``, or check an existing one matches: resuming with other settings would mix
    runs that were not evaluated alike. Adding arms or seeds to a study is allowed (the runs already done
    stay valid), and so is running a subset of them (``--arms``/``--seeds``): the file keeps the union.
    Changing anything an earlier run was made with is not."""
    new = tomllib.loads(to_toml(study.to_dict()))  # compare like with like (None values are not written)
    path = out / STUDY_FILE
    if path.exists():
        old = tomllib.loads(path.read_text(encoding="utf-8"))
        diff = sorted(k for k in set(old) | set(new) if k not in ("arms", "seeds", "dose") and old.get(k) != new.get(k))
        if old.get("dose", {}).get("every", 0) != new.get("dose", {}).get("every", 0):
            diff.append("dose.every")  # snapshots are part of training; rungs can be added at any time
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
            raise ConfigError(f"{out} holds a study run with different settings (differs in: {', '.join(diff)}); "
                              "pass --out NEW_FOLDER, or delete the old folder to start over (adding arms or "
                              "seeds is fine)")
        if old == merged:
            return
        new = merged
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(path, to_toml(new).encode("utf-8"))


def _union(a: list, b: list) -> list:
    return list(a) + [x for x in b if x not in a]


def experiment_command(study_path: str | Path, preset: str | None = None, out: str | Path | None = None,
                       overrides: Sequence[str] = (), report: bool = True, *, arms: Sequence[str] | None = None,
                       seeds: Sequence[int] | None = None, jobs: int = 1) -> Path:
    """`searchgym experiment`: run (or resume) a study, then write its report. Returns the study folder."""
    study = load_study(study_path, preset, overrides, arms=arms, seeds=seeds)
    out = Path(out) if out else Path("runs") / f"{study.name}-{study.preset or 'default'}"
    run_study(study, out, jobs=jobs)
    if report:
        from searchgym.report import report_command

        report_command([out], out=out)
    return out
