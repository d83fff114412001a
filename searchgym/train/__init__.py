"""`searchgym train RECIPE`: run a recipe's stages in order, save the adapter, evaluate it against its base.

A run folder holds everything: ``recipe.toml`` (resolved), ``metrics.jsonl``, ``stages/<stage>/adapter``
(+ a ``done`` marker) per finished stage, the final ``adapter/`` (standard PEFT format; `load_model(run_dir)`
rebuilds it), ``trajectories.jsonl`` on held-out questions, ``baseline/trajectories.jsonl`` for the base
model and ``summary.md``. ``--resume`` skips finished stages and restarts an unfinished one from its last
checkpoint. Heavy imports stay inside functions: `searchgym.train.sft`/`grpo` import this package too.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from searchgym.corpus.documents import atomic_write
from searchgym.recipe import Recipe, RecipeError

DONE = "done"


def find_latest_run(name: str, runs_dir: str | Path | None = None) -> Path | None:
    """The newest ``runs/<name>-<timestamp>`` folder (timestamps sort as text), or None.

    >>> find_latest_run("no-such-recipe", "/nonexistent") is None
    True
    """
    from searchgym.runs import RUNS_DIR

    root, prefix = Path(runs_dir) if runs_dir else RUNS_DIR, f"{name}-"
    if not root.is_dir():
        return None
    # A prefix test, not a glob: a name holding "*" or "[" must not match other recipes' runs.
    runs = sorted(p for p in root.iterdir()
                  if p.name.startswith(prefix) and p.name[len(prefix):][:1].isdigit() and p.is_dir())
    return runs[-1] if runs else None


def _run_dir(recipe: Recipe, out: str | Path | None, resume: bool) -> Path:
    from searchgym.runs import new_run_dir

    if resume and out is None:
        latest = find_latest_run(recipe.name)
        if latest is None:
            raise RecipeError(f"--resume: no earlier run of {recipe.name!r} under runs/; drop --resume to start "
                              "one, or pass --out DIR to name the run folder")
        return latest
    run_dir = new_run_dir(recipe.name, out)
    finished = sorted(p.parent.name for p in run_dir.glob(f"stages/*/{DONE}"))
    if finished and not resume:
        raise RecipeError(f"{run_dir} already holds finished stage(s) {finished}; pass --resume to continue "
                          "that run, or choose a new --out folder")
    return run_dir


def check_env_names(recipe: Recipe) -> None:
    """A recipe names code only through registries (``env.id`` a registered env, ``env.kwargs.world`` a
    registered world); `Recipe.validate` checks it on load, this re-checks a recipe built in code."""
    recipe._check_env()


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
    path = run_dir / "recipe.toml"
    if not path.exists():
        return
    old, new = _flat(tomllib.loads(path.read_text(encoding="utf-8"))), _flat(tomllib.loads(recipe.to_toml()))
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        raise RecipeError(f"--resume: the recipe differs from the one {run_dir} was started with ({changed}); "
                          "resume with the same recipe and --set values, or start a new run")


def train_command(recipe_path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                  out: str | Path | None = None, resume: bool = False, progress: bool = True) -> Path:
    """Train and evaluate the agent a recipe describes; return its run folder."""
    from searchgym.recipe import load_recipe
    from searchgym.runs import run_lock

    # 1. Recipe, run folder and its lock: a bad recipe or a busy folder stops here, before any heavy import.
    recipe = load_recipe(recipe_path, overrides)
    run_dir = _run_dir(recipe, out, resume)
    with run_lock(run_dir):
        return _train_locked(recipe, run_dir, resume, progress)


def _train_locked(recipe: Recipe, run_dir: Path, resume: bool, progress: bool) -> Path:
    """`train_command` once it holds the run folder: every write into ``run_dir`` happens in here."""
    import torch

    from searchgym.models import ALIASES, load_model
    from searchgym.runs import write_text

    if resume:
        _check_same_recipe(run_dir, recipe)
    write_text(run_dir, "recipe.toml", recipe.to_toml())
    print(f"run folder: {run_dir}")
    torch.manual_seed(recipe.seed)

    # 2. Base model, then each stage on top of the previous stage's adapter.
    dtype = getattr(torch, recipe.model.dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base_alias = recipe.model.base if recipe.model.base in ALIASES else None
    if recipe.stages[0] == "pretrain":
        # The prior lab: the base model is pretrained from scratch in this run (model.base is ignored),
        # and later stages put their LoRA on it like on any base model.
        from searchgym.train.pretrain import model_dir, run_pretrain

        stage_dir = run_dir / "stages" / "pretrain"
        if (stage_dir / DONE).exists():
            print(f"stage pretrain: already finished, loading the model from {model_dir(run_dir)}")
            model, tokenizer = load_model(str(model_dir(run_dir).resolve()), dtype=dtype, device=device)
        else:
            if resume:  # run_pretrain restarts from its latest checkpoint: drop the rows logged after it
                trim_to_latest_checkpoint(run_dir, "pretrain")
            model, tokenizer = run_pretrain(recipe, run_dir, resume=resume)
            write_text(stage_dir, DONE, "")
        base_alias = None  # adapters record the pretrained folder's absolute path as their base
    else:
        model, tokenizer = load_model(recipe.model.base, dtype=dtype,
                                      trust_remote_code=recipe.model.trust_remote_code, device=device)
    for stage in recipe.stages:
        if stage == "pretrain":
            continue
        stage_dir = run_dir / "stages" / stage
        if (stage_dir / DONE).exists():
            print(f"stage {stage}: already finished, loading its adapter from {stage_dir / 'adapter'}")
            model = _load_stage_adapter(model, stage_dir / "adapter")
            continue
        if stage == "sft":
            from searchgym.train.sft import run_sft

            model = run_sft(recipe, run_dir, model, tokenizer, resume=resume)
        else:
            from searchgym.train.grpo import run_grpo

            model = run_grpo(recipe, run_dir, model, tokenizer, resume=resume)
        _save_adapter(model, stage_dir / "adapter", base_alias)
        write_text(stage_dir, DONE, "")
    if recipe.stages == ["pretrain"]:
        # A prior alone: no adapter; the pretrained model is saved in stages/pretrain/model and is its own base.
        recipe.eval.baseline = False
    else:
        _save_adapter(model, run_dir / "adapter", base_alias)

    # 3. Held-out evaluation, trained vs untrained base on the same questions and seeds.
    evaluate_run(recipe, run_dir, model, tokenizer, progress=progress)
    _draw(run_dir)
    return run_dir


def _draw(run_dir: Path) -> None:
    """The run's report beside it: training curves (report_training.png), strategy shares, pass@k."""
    from searchgym.report import report_command

    try:
        page = report_command([run_dir], out=run_dir)
    except Exception as e:  # noqa: BLE001  a report is a view of the run: never fail a finished training
        print(f"no report drawn for {run_dir}: {e}")
        return
    figures = sorted(p.name for p in run_dir.glob("report_*.png"))
    print(f"report: {page} ({', '.join(figures) or 'no figures'})")


def trim_to_latest_checkpoint(run_dir: Path, stage: str) -> None:
    """Before a stage resumes from its latest ``checkpoint-<step>``: drop its metrics rows after that step."""
    from searchgym.runs import checkpoint_step, trim_metrics
    from searchgym.train.sft import latest_checkpoint

    trim_metrics(run_dir, stage, checkpoint_step(latest_checkpoint(run_dir / "checkpoints" / stage)))


def _load_stage_adapter(model, adapter: Path):
    """Put a finished stage's adapter on the model, trainable, so the next stage continues from it."""
    from peft import PeftModel

    if isinstance(model, PeftModel):  # a later stage of a chained run: load its weights into the adapter
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(str(adapter / "adapter_model.safetensors")))
        return model
    return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)


def _save_adapter(model, folder: Path, base_alias: str | None) -> None:
    """Save the LoRA adapter in standard PEFT format, loadable two ways:

        searchgym.models.load_model("runs/x")                                   # model + tokenizer, any machine
        peft.AutoPeftModelForCausalLM.from_pretrained("runs/x/adapter")          # model only, this machine

    Its config names the base by the alias's resolved folder (``$SEARCHGYM_CACHE/models/tiny``…), a path
    transformers can open (an alias is not a Hugging Face id); the folder is named after the alias, so
    `load_model` maps it back to the alias and rebuilds the base on a machine with another cache.
    """
    from peft import PeftModel

    from searchgym.models import resolve_model_path

    if not isinstance(model, PeftModel):
        raise RuntimeError("training returned a model without a LoRA adapter; nothing to save")
    model.save_pretrained(str(folder))
    config_path = folder / "adapter_config.json"
    if base_alias and config_path.exists():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = str(resolve_model_path(base_alias).resolve())
        atomic_write(config_path, json.dumps(config, indent=2).encode("utf-8"))


def evaluate_run(recipe: Recipe, run_dir: Path, model, tokenizer, *, progress: bool = True) -> dict:
    """Roll out the trained model (and the base, with the adapter disabled) on the first
    ``recipe.eval.questions`` tasks of ``recipe.eval.split``; write trajectories and ``summary.md``."""
    import contextlib

    import gymnasium

    from searchgym.rollout import rollout
    from searchgym.runs import append_metrics, write_text
    from searchgym.train.evaluate import eval_summary, print_summary, success_gain, summary_markdown
    from searchgym.trajectory import write_trajectories

    e = recipe.eval
    env_kwargs = {**recipe.env.kwargs, "split": e.split}
    env = gymnasium.make(recipe.env.id, **env_kwargs)
    task_ids = [t.id for t in env.unwrapped.tasks[: e.questions]]
    env.close()
    settings = dict(samples=e.samples, temperature=e.temperature, top_p=e.top_p, max_turns=e.max_turns,
                    max_new_tokens=e.max_new_tokens, batch_size=e.batch_size, seed=recipe.seed,
                    env_kwargs=env_kwargs, progress=progress)
    summaries, sampled = {}, {}
    for label, sub in [("trained", "")] + ([("base", "baseline")] if e.baseline else []):
        print(f"evaluating the {label} model on {len(task_ids)} {e.split} questions × {e.samples} samples")
        # The base model is the same weights with the LoRA adapter switched off: no second copy in memory.
        with model.disable_adapter() if label == "base" else contextlib.nullcontext():
            trajectories = rollout(model, tokenizer, recipe.env.id, task_ids,
                                   source=f"{recipe.name}:{label}", **settings)
        folder = run_dir / sub
        folder.mkdir(parents=True, exist_ok=True)
        write_trajectories(folder / "trajectories.jsonl", trajectories)
        summaries[label], sampled[label] = eval_summary(trajectories), trajectories
    if "base" in sampled:
        summaries["trained"]["success_gain"] = success_gain(sampled["trained"], sampled["base"], seed=recipe.seed)
    base = "a prior pretrained from scratch" if recipe.stages[0] == "pretrain" else recipe.model.base
    trained = "+".join(s for s in recipe.stages if s != "pretrain")
    title = f"{recipe.name}: {base}{f' + {trained}' if trained else ''} on {recipe.env.id} ({e.split})"
    write_text(run_dir, "summary.md", summary_markdown(title, summaries["trained"], summaries.get("base")))
    atomic_write(run_dir / "eval.json", json.dumps(summaries, indent=2, default=float).encode("utf-8"))
    append_metrics(run_dir, {"stage": "eval", "step": -1, **{f"eval/{label}_{k}": v for label, s in summaries.items()
                                                            for k, v in s.items() if isinstance(v, int | float)}})
    print_summary(title, summaries["trained"], summaries.get("base"))
    return summaries
