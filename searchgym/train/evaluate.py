"""The end-of-training evaluation (`evaluate_run`): the trained agent next to its untrained base, on the same
held-out questions.

Headline numbers come from `searchgym.meters.aggregate` (per question at a fixed n, averaged over
questions) plus the share of episodes per strategy label and the mean number of search calls. The
same summary is printed as a rich table and written to ``summary.md`` in the run folder.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from searchgym.meters import aggregate
from searchgym.trajectory import Trajectory

if TYPE_CHECKING:
    from searchgym.config.agent_recipe import Recipe

# (label, key in eval_summary, format)
ROWS = (
    ("success rate", "success_rate", "{:.3f}"),
    ("pass@n", "pass_at_n", "{:.3f}"),
    ("mean searches / episode", "mean_searches", "{:.2f}"),
    ("mean tool calls / episode", "mean_tool_calls", "{:.2f}"),
    ("invalid call share", "invalid_frac", "{:.3f}"),
    ("strategy entropy (MM, nats)", "strategy_entropy", "{:.3f}"),
    ("mean token entropy (nats)", "mean_token_entropy", "{:.3f}"),
)


def strategy_share(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """Share of episodes per strategy label (``"none"`` for unlabelled worlds), largest first.

    >>> t = lambda s: Trajectory("q", "e", 0, "?", [], [], "A", s, [], [], [], "x", 1.0, True, [], [], 1)
    >>> strategy_share([t("forward"), t("forward"), t("snippet"), t(None)])
    {'forward': 0.5, 'none': 0.25, 'snippet': 0.25}
    """
    counts = Counter(t.strategy or "none" for t in trajectories)
    n = max(len(trajectories), 1)
    return {k: v / n for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}


def eval_summary(trajectories: Sequence[Trajectory]) -> dict:
    """Headline numbers of one eval (keys as in `ROWS`, plus episodes, questions, n and strategy_share)."""
    meters = aggregate(trajectories)
    n = int(meters["meta/n"])
    episodes = max(len(trajectories), 1)
    return {
        "episodes": len(trajectories),
        "questions": int(meters["meta/questions"]),
        "n": n,
        "success_rate": meters["reward/success"],
        "pass_at_n": meters.get(f"passk/pass@{n}", math.nan),
        "mean_searches": sum(c.get("name") == "search" and c.get("valid", True)
                             for t in trajectories for c in t.calls) / episodes,
        "mean_tool_calls": meters["search/calls_mean"],
        "invalid_frac": meters["search/invalid_frac"],
        "strategy_entropy": meters.get("diversity/strategy_entropy_mm", math.nan),
        "mean_token_entropy": meters["entropy/token"],
        "strategy_share": strategy_share(trajectories),
    }


def success_gain(trained: Sequence[Trajectory], base: Sequence[Trajectory], seed: int = 0) -> dict[str, float]:
    """Trained minus base success rate with its paired-bootstrap 95% CI over questions (both models were
    sampled on the same questions): ``{"diff", "lo", "hi", "questions"}``.

    >>> t = lambda q, ok: Trajectory(q, "e", 0, "?", [], [], "A", "s", [], [], [], "x", float(ok), ok, [], [], 1)
    >>> g = success_gain([t("a", True), t("b", True)], [t("a", False), t("b", True)])
    >>> g["diff"], g["questions"]
    (0.5, 2)
    """
    from collections import defaultdict

    from searchgym.meters.stats import paired_bootstrap

    def by_question(ts):
        out = defaultdict(list)
        for t in ts:
            out[t.task_id].append(float(t.correct))
        return out

    r = paired_bootstrap(by_question(base), by_question(trained), seed=seed)
    return {"diff": r["diff"], "lo": r["lo_diff"], "hi": r["hi_diff"], "questions": r["questions"]}


def _gain(summary: dict) -> str:
    g = summary.get("success_gain")
    if not g:
        return "n/a"
    verdict = "CI excludes 0" if g["lo"] > 0 or g["hi"] < 0 else "CI includes 0"
    return f"{g['diff']:+.3f} [{g['lo']:+.3f}, {g['hi']:+.3f}] ({verdict})"


def _fmt(value, fmt: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def _share(share: dict[str, float] | None) -> str:
    return ", ".join(f"{k} {v:.0%}" for k, v in share.items()) if share else "n/a"


def summary_markdown(title: str, trained: dict, base: dict | None = None) -> str:
    """The comparison as a Markdown table (``summary.md``).

    >>> s = {"episodes": 2, "questions": 1, "n": 2, "success_rate": 0.5, "strategy_share": {"forward": 1.0}}
    >>> print(summary_markdown("demo", s).splitlines()[6])
    | success rate | 0.500 |
    """
    head = ["| metric | trained | base |", "|---|---|---|"] if base else ["| metric | trained |", "|---|---|"]
    lines = [f"# {title}", "", f"{trained['questions']} held-out questions × {trained['n']} samples "
             f"({trained['episodes']} episodes per model).", "", *head]
    for label, key, fmt in ROWS:
        cells = [_fmt(trained.get(key), fmt)] + ([_fmt(base.get(key), fmt)] if base else [])
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = [_share(trained.get("strategy_share"))] + ([_share(base.get("strategy_share"))] if base else [])
    lines.append("| strategy share | " + " | ".join(cells) + " |")
    if base and trained.get("success_gain"):
        lines += ["", f"Success, trained − base (paired bootstrap over questions, 95% CI): {_gain(trained)}."]
    return "\n".join(lines) + "\n"


def print_summary(title: str, trained: dict, base: dict | None = None, *, label: str = "trained") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("metric", label, *(["base"] if base else []), title=title)
    for name, key, fmt in ROWS:  # not `label`: that is the trained column's heading
        table.add_row(name, _fmt(trained.get(key), fmt), *([_fmt(base.get(key), fmt)] if base else []))
    table.add_row("strategy share", _share(trained.get("strategy_share")),
                  *([_share(base.get("strategy_share"))] if base else []))
    Console().print(table)
    if base and trained.get("success_gain"):
        Console().print(f"success, trained − base (paired bootstrap over questions, 95% CI): {_gain(trained)}")


def eval_plan(recipe: Recipe, *, progress: bool = True) -> tuple[list[str], dict]:
    """What a run's evaluation samples: the first ``eval.questions`` task ids of ``eval.split`` and the
    `rollout` settings (n, decoding, turns, seed, env kwargs). The final model and every dose rung
    (`searchgym.study.dose`) are evaluated with exactly this."""
    import gymnasium

    e = recipe.eval
    env_kwargs = {**recipe.env.kwargs, "split": e.split}
    env = gymnasium.make(recipe.env.id, **env_kwargs)
    task_ids = [t.id for t in env.unwrapped.tasks[: e.questions]]
    env.close()
    return task_ids, dict(samples=e.samples, temperature=e.temperature, top_p=e.top_p, max_turns=e.max_turns,
                          max_new_tokens=e.max_new_tokens, batch_size=e.batch_size, seed=recipe.seed,
                          env_kwargs=env_kwargs, progress=progress)


def evaluate_run(recipe: Recipe, run_dir: Path, model, tokenizer, *, progress: bool = True) -> dict:
    """Roll out the trained model (and the base: the adapter disabled, or the base loaded beside a
    full-parameter model) on the first ``recipe.eval.questions`` tasks of ``recipe.eval.split``; write
    trajectories and ``summary.md``."""
    import contextlib

    from searchgym.agent.rollout import rollout
    from searchgym.runs import RunFolder
    from searchgym.train.stages import get_stage
    from searchgym.train.weights import base_model
    from searchgym.trajectory import write_trajectories

    e, run = recipe.eval, RunFolder(run_dir)
    builds_base = get_stage(recipe.stages[0]).builds_base  # the prior lab: its first stage made the base
    task_ids, settings = eval_plan(recipe, progress=progress)
    summaries, sampled = {}, {}
    for label in ["trained"] + (["base"] if e.baseline else []):
        print(f"evaluating the {label} model on {len(task_ids)} {e.split} questions × {e.samples} samples")
        # LoRA: the base is the same weights with the adapter switched off, no second copy in memory.
        with base_model(model, recipe, run_dir, builds_base) if label == "base" else contextlib.nullcontext(model) as policy:
            trajectories = rollout(policy, tokenizer, recipe.env.id, task_ids,
                                   source=f"{recipe.name}:{label}", **settings)
        write_trajectories(run.trajectories(label), trajectories)
        summaries[label], sampled[label] = eval_summary(trajectories), trajectories
    if "base" in sampled:
        summaries["trained"]["success_gain"] = success_gain(sampled["trained"], sampled["base"], seed=recipe.seed)
    base = "a prior pretrained from scratch" if builds_base else recipe.model.base
    trained = "+".join(s for s in recipe.stages if not get_stage(s).builds_base)
    title = f"{recipe.name}: {base}{f' + {trained}' if trained else ''} on {recipe.env.id} ({e.split})"
    run.write_text(run.SUMMARY, summary_markdown(title, summaries["trained"], summaries.get("base")))
    run.write_json(run.EVAL, {"settings": {k: v for k, v in settings.items() if k != "progress"}, **summaries})
    run.append_metrics({"stage": "eval", "step": -1, **{f"eval/{label}_{k}": v for label, s in summaries.items()
                                                            for k, v in s.items() if isinstance(v, int | float)}})
    print_summary(title, summaries["trained"], summaries.get("base"))
    return summaries


# ---- searchgym eval: any model or run folder, outside training ----------------------------------------

def eval_command(model_or_run: str, env_id: str | None, questions: int, samples: int, *, split: str = "test",
                 temperature: float = 1.0, top_p: float = 1.0, max_turns: int | None = None,
                 max_new_tokens: int = 64, batch_size: int = 16, seed: int = 0, out: Path | None = None,
                 env_kwargs: dict | None = None, progress: bool = True) -> Path:
    """Sample ``samples`` episodes on the first ``questions`` tasks of ``split``; write
    ``out/trajectories.jsonl`` and ``out/eval.json`` (``{"settings": …, "model": eval_summary}``, the schema
    of a training run's eval.json, whose models are "trained" and "base") and print the summary table.

    A training run folder is evaluated in its own env (``env.id``, ``env.kwargs`` and ``eval.max_turns`` of
    its ``recipe.toml``), so task ids name the same questions as in the run's own eval; ``env_id``,
    ``env_kwargs`` (merged over the run's when the env is the same) and ``max_turns`` override. Everything
    is checked before the model loads, and ``out`` (default ``runs/eval-<timestamp>``) is created only
    when there are results to write.
    """
    import gymnasium

    from searchgym.agent.models import load_model, model_problem
    from searchgym.agent.rollout import rollout
    from searchgym.envs import register_all, registered_envs
    from searchgym.runs import RunFolder
    from searchgym.trajectory import write_trajectories

    if questions < 1 or samples < 1:
        raise ValueError("--questions and --samples must be >= 1")
    if max_new_tokens < 1 or (max_turns is not None and max_turns < 1):
        raise ValueError("--max-new-tokens and --max-turns must be >= 1")
    if (problem := model_problem(model_or_run)) is not None:
        raise ValueError(f"model: {problem}")
    run = _run_recipe(model_or_run)
    run_env = run.get("env", {})
    notes = []
    if env_id is None:
        env_id = run_env.get("id", "searchgym/SyntheticWorld-Easy-v0")
        if run_env.get("id"):
            notes.append(f"env {env_id} (the run's)")
    if run_env.get("id") == env_id and run_env.get("kwargs"):
        notes.append(f"env kwargs {run_env['kwargs']} (the run's){' + ' + str(env_kwargs) if env_kwargs else ''}")
        env_kwargs = {**run_env["kwargs"], **(env_kwargs or {})}
    if max_turns is None:
        max_turns = int(run.get("eval", {}).get("max_turns", 8))
    register_all()
    if ":" in env_id or env_id not in gymnasium.registry:
        raise ValueError(f"--env: {env_id!r:.80} is not a registered environment; allowed: {list(registered_envs())}")
    env_kwargs = {**(env_kwargs or {}), "split": split}
    try:
        env = gymnasium.make(env_id, **env_kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{env_id} with {env_kwargs}: {e}") from None
    tasks = list(env.unwrapped.tasks)[:questions]
    env.close()
    if notes:
        print(f"evaluating {model_or_run} with " + "; ".join(notes) + " (--env / --env-kwargs override)")
    model, tokenizer = load_model(model_or_run)
    trajectories = rollout(model, tokenizer, env_id, [t.id for t in tasks], samples=samples,
                           temperature=temperature, top_p=top_p, max_turns=max_turns,
                           max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed,
                           env_kwargs=env_kwargs, progress=progress, source=model_or_run)
    run = RunFolder.create("eval", out)
    path = write_trajectories(run.trajectories(), trajectories)
    summary = eval_summary(trajectories)
    settings = dict(model=model_or_run, env_id=env_id, split=split, questions=len(tasks), samples=samples,
                    temperature=temperature, top_p=top_p, max_turns=max_turns, max_new_tokens=max_new_tokens,
                    batch_size=batch_size, seed=seed, env_kwargs=env_kwargs)
    run.write_json(run.EVAL, {"settings": settings, "model": summary})
    print_summary(f"{model_or_run} on {env_id} ({split})", summary, label="model")
    return path


def _run_recipe(model_or_run: str) -> dict:
    """The resolved ``recipe.toml`` of a training run folder (or of the run an adapter folder sits in); {}."""
    import tomllib

    folder = Path(model_or_run).expanduser()
    for candidate in (folder, folder.parent):
        path = candidate / "recipe.toml"
        if path.is_file():
            try:
                return tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as e:
                raise ValueError(f"{path}: cannot read the run's recipe ({e})") from None
    return {}
