"""`searchgym train RECIPE`: run a recipe's stages in order, save the policy, evaluate it against its base.

A run folder holds everything: ``recipe.toml`` (resolved), ``metrics.jsonl``, ``stages/<stage>/adapter``
(+ a ``done`` marker) per finished stage, the final ``adapter/`` (standard PEFT format; `load_model(run_dir)`
rebuilds it; ``model/`` and ``stages/<stage>/model`` instead with ``model.finetune = "full"``), ``trajectories.jsonl`` on held-out questions, ``baseline/trajectories.jsonl`` for the base
model and ``summary.md``. ``--resume`` skips finished stages and restarts an unfinished one from its last
checkpoint. The stages themselves are looked up by name in `searchgym.train.stages.STAGES` and run in a
`searchgym.train.context.TrainContext`. Heavy imports stay inside functions.
"""

from __future__ import annotations

import contextlib
import sys
import tomllib
from pathlib import Path

from searchgym.config.agent_recipe import Recipe
from searchgym.util.config_schema import ConfigError


def find_latest_run(name: str, runs_dir: str | Path | None = None) -> Path | None:
    """The newest ``runs/<name>-<timestamp>`` folder, or None (`searchgym.runs.RunFolder.latest`).

    >>> find_latest_run("no-such-recipe", "/nonexistent") is None
    True
    """
    from searchgym.runs import RunFolder

    latest = RunFolder.latest(name, runs_dir)
    return latest.path if latest else None


def _run_dir(recipe: Recipe, out: str | Path | None, resume: bool) -> Path:
    from searchgym.runs import RunFolder

    if resume and out is None:
        latest = find_latest_run(recipe.name)
        if latest is None:
            raise ConfigError(f"--resume: no earlier run of {recipe.name!r} under runs/; drop --resume to start "
                              "one, or pass --out DIR to name the run folder")
        return latest
    run = RunFolder.create(recipe.name, out)
    finished = run.finished_stages()
    if finished and not resume:
        raise ConfigError(f"{run.path} already holds finished stage(s) {finished}; pass --resume to continue "
                          "that run, or choose a new --out folder")
    return run.path


def check_env_names(recipe: Recipe) -> None:
    """A recipe names code only through registries (``env.id`` a registered env, ``env.kwargs.world`` a
    registered world); `config.recipe_checks.validate_recipe` checks it on load, this re-checks a recipe built in code."""
    from searchgym.config.recipe_checks import check_env
    from searchgym.train.stages import STAGES

    check_env(recipe, STAGES)


def _flat(table: dict, prefix: str = "") -> dict:
    """``{"sft": {"epochs": 1}}`` -> ``{"sft.epochs": 1}``.

    >>> _flat({"name": "x", "sft": {"epochs": 1.0}})
    {'name': 'x', 'sft.epochs': 1.0}
    """
    out = {}
    for k, v in table.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and not prefix else {prefix + k: v})
    return out


def _check_same_recipe(run_dir: Path, recipe: Recipe) -> None:
    """A resumed run must keep its recipe: mixing two recipes in one folder would make it unreadable."""
    from searchgym.runs import RunFolder

    path = RunFolder(run_dir).recipe_file
    if not path.exists():
        return
    old, new = _flat(tomllib.loads(path.read_text(encoding="utf-8"))), _flat(tomllib.loads(recipe.to_toml()))
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        raise ConfigError(f"--resume: the recipe differs from the one {run_dir} was started with ({changed}); "
                          "resume with the same recipe and --set values, or start a new run")


def train_command(recipe_path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                  out: str | Path | None = None, resume: bool = False, progress: bool = True) -> Path:
    """Train and evaluate the agent a recipe describes; return its run folder."""
    from searchgym.runs import run_lock
    from searchgym.train.context import single_process_warning, world_size
    from searchgym.train.stages import load_recipe

    # 1. Recipe, run folder and its lock: a bad recipe or a busy folder stops here, before any heavy import.
    recipe = load_recipe(recipe_path, overrides)
    if world_size() > 1:
        return _train_distributed(recipe, out, resume, progress)
    if (warning := single_process_warning()) is not None:
        print(f"warning: {warning}", file=sys.stderr)
    run_dir = _run_dir(recipe, out, resume)
    with run_lock(run_dir):
        return _train_locked(recipe, run_dir, resume, progress)


def _train_distributed(recipe: Recipe, out: str | Path | None, resume: bool, progress: bool) -> Path:
    """Under torchrun / accelerate launch: rank 0 picks the run folder and holds its lock, every rank trains
    (the Trainer shards the batches), and rank 0 alone writes files, probes and evaluates (docs/scale.md)."""
    import torch.distributed as dist

    from searchgym.runs import run_lock
    from searchgym.train.context import init_distributed, rank

    init_distributed()
    with contextlib.ExitStack() as stack:
        box: list = [None]
        if rank() == 0:
            try:
                run_dir = _run_dir(recipe, out, resume)
                stack.enter_context(run_lock(run_dir))
                if resume:
                    _check_same_recipe(run_dir, recipe)
                box = [str(run_dir)]
            except ConfigError as e:
                box = [e]
        dist.broadcast_object_list(box, src=0)  # every rank stops with rank 0's message, or uses its folder
        if isinstance(box[0], Exception):
            raise ConfigError(str(box[0]))
        run_dir = _train_locked(recipe, Path(box[0]), resume, progress)
    dist.destroy_process_group()
    return run_dir


def _train_locked(recipe: Recipe, run_dir: Path, resume: bool, progress: bool) -> Path:
    """`train_command` once it holds the run folder: every write into ``run_dir`` happens in here."""
    import torch

    from searchgym.agent.models import ALIASES, load_model
    from searchgym.train.context import TrainContext
    from searchgym.train.evaluate import evaluate_run
    from searchgym.train.stages import get_stage

    ctx = TrainContext(recipe, run_dir, resume=resume, progress=progress)
    run = ctx.run
    if ctx.is_main:
        if resume:
            _check_same_recipe(run_dir, recipe)
        run.write_text(run.RECIPE, recipe.to_toml())
        print(f"run folder: {run_dir}")
    torch.manual_seed(recipe.seed)

    # 2. The base model (or a stage that builds it, like pretrain), then each stage on top of the previous
    # stage's result (its adapter, or its whole model with model.finetune = "full").
    stages = [get_stage(name) for name in recipe.stages]
    ctx.base_alias = recipe.model.base if recipe.model.base in ALIASES else None
    if stages[0].builds_base:
        # The prior lab: the base model is made in this run (model.base is ignored), and later stages train
        # on it like on any base model; adapters record its folder's absolute path as their base.
        ctx.stage, ctx.base_alias = stages[0].name, None
        model_dir = run.stage_model(ctx.stage)
        if run.stage_done(ctx.stage):
            print(f"stage {ctx.stage}: already finished, loading the model from {model_dir}")
            ctx.model, ctx.tokenizer = load_model(str(model_dir.resolve()), dtype=ctx.dtype, device=ctx.device)
        else:
            ctx.model = stages[0].run(ctx)
            _mark_done(ctx)
    else:
        ctx.model, ctx.tokenizer = load_model(recipe.model.base, dtype=ctx.dtype, device=ctx.device,
                                              trust_remote_code=recipe.model.trust_remote_code)
    for stage in stages:
        if stage.builds_base:
            continue
        ctx.stage = stage.name
        if run.stage_done(stage.name):
            print(f"stage {stage.name}: already finished, loading what it trained from {run.stage_dir(stage.name)}")
            ctx.model = ctx.load_weights(ctx.model, run.stage_dir(stage.name))
            continue
        ctx.model = stage.run(ctx)
        if ctx.is_main:
            ctx.save_weights(ctx.model, run.stage_dir(stage.name))
        _mark_done(ctx)
    if all(s.builds_base for s in stages):
        # A prior alone: no adapter; the pretrained model is saved in stages/pretrain/model and is its own base.
        recipe.eval.baseline = False
    elif ctx.is_main:
        ctx.save_weights(ctx.model, run.path)
    if not ctx.is_main:
        return run_dir  # evaluation and the report are rank 0's: the other ranks are done

    # 3. Held-out evaluation, trained vs untrained base on the same questions and seeds.
    evaluate_run(recipe, run_dir, ctx.model, ctx.tokenizer, progress=progress)
    _draw(run_dir)
    return run_dir


def _mark_done(ctx) -> None:
    if ctx.is_main:
        ctx.run.mark_stage_done(ctx.stage)
    ctx.barrier()


def _draw(run_dir: Path) -> None:
    """The run's report beside it: training curves (report_training.png), strategy shares, pass@k."""
    try:  # the import too: a report that cannot even load must not fail a finished training
        from searchgym.report import report_command

        page = report_command([run_dir], out=run_dir)
    except Exception as e:  # noqa: BLE001  a report is a view of the run: never fail a finished training
        print(f"no report drawn for {run_dir}: {e}")
        return
    figures = sorted(p.name for p in run_dir.glob("report_*.png"))
    print(f"report: {page} ({', '.join(figures) or 'no figures'})")


def trim_to_latest_checkpoint(run_dir: Path, stage: str) -> None:
    """Before a stage resumes from its latest ``checkpoint-<step>``: drop its metrics rows after that step."""
    from searchgym.runs import RunFolder, checkpoint_step
    from searchgym.train.context import latest_checkpoint

    run = RunFolder(run_dir)
    run.trim_metrics(stage, checkpoint_step(latest_checkpoint(run.checkpoints(stage))))
