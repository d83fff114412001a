"""Dose rungs: every saved checkpoint of a study run, evaluated exactly like the run's final model, with
its distance from the base model.

A method that moved further from its base will look like it "changes breadth more" whatever its nature,
so a study compares arms along their training curves and at matched distance (docs/dose.md). Training
saves the LoRA adapter every ``dose.every`` optimizer steps of each stage and at each stage's end
(`searchgym.train.dose`); this module evaluates the rungs a study names among them:

- the rung's model samples the run's own held-out questions at its n and decoding
  (`searchgym.train.evaluate.eval_plan`, the cached rollout engine) into ``dose/<rung>/trajectories.jsonl``
  (the final rung reuses the run's own ``trajectories.jsonl``: the same model, questions and seed);
- its distance from the base on those trajectories: per-token KL(π || π_base) by k1, k3 and the exact
  next-token sum (`searchgym.report.support.kl_to_base`), per question (tokens of its n samples pooled)
  and averaged over questions with a bootstrap CI over questions;
- the headline meters at n with bootstrap CIs over questions, into ``dose/<rung>/dose.json``.

A rung whose ``dose.json`` exists is done: re-running resumes, and adding rungs evaluates only what is new.
The study's untrained base arm gets one rung, ``base-0`` (KL 0 by definition), the start of every curve.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from searchgym.config.agent_recipe import Recipe
from searchgym.runs import RunFolder, jsonable, parse_rung, rung_name
from searchgym.train.stages import get_stage
from searchgym.train.weights import base_source
from searchgym.trajectory import TOKEN_ROLES, Trajectory
from searchgym.util.files import atomic_write

DOSE_FILE = "dose.json"
VERSION = 1
KL_KINDS = ("k1", "k3", "exact")
SNAPSHOT = "snapshot.json"  # written by searchgym.train.dose


@dataclass(frozen=True)
class Rung:
    """One checkpoint of a run: its stage and step there, its step counted over all the run's stages
    (SFT then GRPO laid end to end), and whether it is the run's final model."""

    stage: str
    stage_step: int
    step: int
    final: bool

    @property
    def name(self) -> str:
        return rung_name(self.stage, self.stage_step)


# ---- which rungs a run has ------------------------------------------------------------------------------

def saved_rungs(run_dir: str | Path, stages: Sequence[str]) -> list[Rung]:
    """Every snapshot a run saved, in training order, with its global step. A stage's length is its last
    snapshot's step (the last step is always saved), so a stage without snapshots ends the list.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> for stage, step in (("sft", 5), ("sft", 8), ("grpo", 5), ("grpo", 10)):
    ...     (d / "dose" / f"{stage}-{step}").mkdir(parents=True)
    ...     _ = (d / "dose" / f"{stage}-{step}" / SNAPSHOT).write_text("{}")
    >>> [(r.name, r.step, r.final) for r in saved_rungs(d, ["sft", "grpo"])]
    [('sft-5', 5, False), ('sft-8', 8, False), ('grpo-5', 13, False), ('grpo-10', 18, True)]
    """
    folder = RunFolder(run_dir).dose_dir()
    found: dict[str, list[int]] = {}
    for path in folder.glob(f"*/{SNAPSHOT}") if folder.is_dir() else ():
        parsed = parse_rung(path.parent.name)
        if parsed and parsed[0] in stages:
            found.setdefault(parsed[0], []).append(parsed[1])
    out, offset = [], 0
    trained = [s for s in stages if s in found]
    for stage in trained:
        steps = sorted(found[stage])
        out += [Rung(stage, k, offset + k, stage == trained[-1] and k == steps[-1]) for k in steps]
        offset += steps[-1]
    return out


def chosen_rungs(saved: Sequence[Rung], wanted: Sequence[int] | None) -> list[Rung]:
    """The rungs a study evaluates: the saved ones whose stage step is in ``wanted`` (None: all of them),
    plus every stage's last step (where its curve ends).

    >>> saved = [Rung("sft", 5, 5, False), Rung("sft", 10, 10, False), Rung("sft", 12, 12, True)]
    >>> [r.name for r in chosen_rungs(saved, [5])]
    ['sft-5', 'sft-12']
    """
    last = {r.stage: r.stage_step for r in saved}
    return [r for r in saved if wanted is None or r.stage_step in wanted or r.stage_step == last[r.stage]]


def data_seen(recipe: Recipe, rows: list[dict], rung: Rung, lengths: dict[str, int]) -> dict:
    """The training data behind a rung: demonstrations (SFT) and episodes (GRPO) seen, counted from the
    recipe's batch sizes, and training tokens from the trainers' own ``train/num_tokens`` logs (cumulative
    over stages; None where a stage logged none at or before that step)."""
    stages = [s for s in recipe.stages if s in lengths or s == rung.stage]
    seen = {"sft_examples": 0, "grpo_episodes": 0, "tokens": 0}
    for stage in stages[: stages.index(rung.stage) + 1]:
        steps = rung.stage_step if stage == rung.stage else lengths[stage]
        if stage == "sft":
            seen["sft_examples"] += steps * recipe.sft.batch_size * recipe.sft.grad_accum
        elif stage == "grpo":
            seen["grpo_episodes"] += steps * recipe.grpo.batch_size * recipe.grpo.grad_accum
        logged = [r["train/num_tokens"] for r in rows if r.get("stage") == stage
                  and isinstance(r.get("train/num_tokens"), int | float) and 0 <= r.get("step", -1) <= steps]
        seen["tokens"] = None if seen["tokens"] is None or not logged else seen["tokens"] + int(max(logged))
    return seen


# ---- meters and distance of one rung ----------------------------------------------------------------

def headline_keys(n: int) -> list[str]:
    """What every rung records: the report's table columns at n, token entropy and its split by role."""
    from searchgym.report.data import TABLE_KEYS

    return [k.format(n=n) for k in TABLE_KEYS] + ["entropy/token"] + [f"entropy/token_{r}" for r in TOKEN_ROLES]


def _estimate(values: Sequence[float]) -> dict[str, float | None]:
    from searchgym.meters.stats import bootstrap_ci

    value, lo, hi = bootstrap_ci(values, n_boot=1000)
    return {k: (v if math.isfinite(v) else None) for k, v in (("value", value), ("lo", lo), ("hi", hi))}


def rung_record(trajectories: Sequence[Trajectory], n: int, kl: list[dict[str, float]] | None) -> dict:
    """The numbers of one rung: headline meters at n and KL per question and overall (CIs over questions).
    ``kl`` is `kl_to_base`'s per-trajectory sums (None: the base itself, KL 0)."""
    from searchgym.meters.aggregate import per_question

    meters, _, _ = per_question(trajectories, samples=n)
    questions = sorted(meters)
    sums: dict[str, dict[str, float]] = {q: {k: 0.0 for k in (*KL_KINDS, "tokens")} for q in questions}
    for t, row in zip(trajectories, kl or [{}] * len(trajectories)):
        if t.task_id in sums and t.sample < n:
            for k in (*KL_KINDS, "tokens"):
                sums[t.task_id][k] += row.get(k, 0.0)
    per_q = {k: {q: (s[k] / s["tokens"] if kl is not None and s["tokens"] else (0.0 if kl is None else math.nan))
                 for q, s in sums.items()} for k in KL_KINDS}
    return {"questions": len(questions), "n": n,
            "kl": {k: _estimate(list(per_q[k].values())) for k in KL_KINDS},
            "kl_per_question": {k: {q: (v if math.isfinite(v) else None) for q, v in per_q[k].items()}
                                for k in KL_KINDS},
            "kl_tokens": int(sum(s["tokens"] for s in sums.values())),
            "meters": {key: _estimate([meters[q].get(key, math.nan) for q in questions]) for key in headline_keys(n)}}


def write_rung(folder: Path, record: dict) -> Path:
    """``dose.json``, strict JSON (NaN and infinities as null: jq and JavaScript must read it too).

    >>> import tempfile; folder = Path(tempfile.mkdtemp())
    >>> json.loads(write_rung(folder, {"kl": {"k3": {"value": float("nan")}}, "n": 8}).read_text())["kl"]
    {'k3': {'value': None}}
    """
    path = Path(folder) / DOSE_FILE
    text = json.dumps(jsonable({"version": VERSION, **record}), indent=2, allow_nan=False)
    atomic_write(path, text.encode("utf-8"))
    return path


def is_evaluated(folder: Path) -> bool:
    return (folder / DOSE_FILE).is_file() and (folder / "trajectories.jsonl").is_file()


# ---- evaluating a run's rungs ----------------------------------------------------------------------------

def evaluate_base_rung(run_dir: str | Path, recipe: Recipe, arm: str, seed: int) -> Path:
    """The untrained base arm's one rung, ``base-0``: its own evaluation, KL 0 by definition."""
    from searchgym.trajectory import read_trajectories

    run = RunFolder(run_dir)
    folder = run.dose_dir(rung_name("base", 0))
    if not is_evaluated(folder):
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.trajectories(), folder / "trajectories.jsonl")
        trajectories = list(read_trajectories(folder))
        write_rung(folder, {"arm": arm, "seed": seed, "rung": folder.name, "stage": "base", "stage_step": 0,
                            "step": 0, "sft_examples": 0, "grpo_episodes": 0, "tokens": 0, "final": True,
                            **rung_record(trajectories, recipe.eval.samples, None), "seconds": 0.0})
    return folder


def evaluate_rungs(run_dir: str | Path, recipe: Recipe, arm: str, seed: int, wanted: Sequence[int] | None = None,
                   *, progress: bool = True, log: Callable[[str], None] = print) -> list[Path]:
    """Evaluate the chosen rungs of a trained run that are not evaluated yet; returns every chosen rung's
    folder in training order. LoRA: loads the base once and swaps each rung's adapter weights into it;
    full-parameter: loads the base once and each rung's model beside it."""
    from searchgym.trajectory import read_trajectories, write_trajectories

    run = RunFolder(run_dir)
    rungs = chosen_rungs(saved_rungs(run_dir, recipe.stages), wanted)
    if not rungs:
        raise ValueError(f"{run_dir}: no dose snapshots (dose/<stage>-<step>/); train with dose.every > 0")
    todo = [r for r in rungs if not is_evaluated(run.dose_dir(r.name))]
    lengths = {r.stage: r.stage_step for r in saved_rungs(run_dir, recipe.stages)}  # each stage's last step
    rows = run.read_metrics()
    model = tokenizer = base = None
    source = base_source(recipe, run_dir, get_stage(recipe.stages[0]).builds_base)
    for i, rung in enumerate(todo, 1):
        start = time.time()
        folder = run.dose_dir(rung.name)
        if recipe.model.finetune == "full":
            if base is None:
                base, tokenizer = _load(recipe, source)
            model, _ = _load(recipe, str(folder / "model"))
        else:
            model, tokenizer = _with_adapter(model, tokenizer, recipe, source, folder / "adapter")
        if rung.final:  # the run's own final evaluation: the same model, questions, n, decoding and seed
            shutil.copyfile(run.trajectories(), folder / "trajectories.jsonl")
            trajectories = list(read_trajectories(folder))
        else:
            trajectories = _sample(model, tokenizer, recipe, f"{recipe.name}:{rung.name}", progress)
            write_trajectories(folder / "trajectories.jsonl", trajectories, parquet=False)
        from searchgym.report.support import kl_to_base

        kl = kl_to_base(model, tokenizer, trajectories, temperature=recipe.eval.temperature, base=base)
        record = rung_record(trajectories, recipe.eval.samples, kl)
        write_rung(folder, {"arm": arm, "seed": seed, "rung": rung.name, "stage": rung.stage,
                            "stage_step": rung.stage_step, "step": rung.step,
                            **data_seen(recipe, rows, rung, lengths), "final": rung.final, **record,
                            "seconds": round(time.time() - start, 1)})
        k3 = record["kl"]["k3"]["value"]
        log(f"  rung {i}/{len(todo)} {rung.name} (step {rung.step}): KL k3 {k3 if k3 is None else f'{k3:.4f}'} "
            f"nats/token, {time.time() - start:.0f} s")
    return [run.dose_dir(r.name) for r in rungs]


def _load(recipe: Recipe, name: str):
    """``load_model(name)`` in the recipe's dtype, on the GPU when there is one."""
    import torch

    from searchgym.agent.models import load_model

    return load_model(name, dtype=getattr(torch, recipe.model.dtype), trust_remote_code=recipe.model.trust_remote_code,
                      device="cuda" if torch.cuda.is_available() else "cpu")


def _with_adapter(model, tokenizer, recipe: Recipe, base: str, adapter: Path):
    """The run's ``base`` model with ``adapter`` as its "default" LoRA: loaded once, then weights swapped."""
    from peft import PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file

    if model is None:
        model, tokenizer = _load(recipe, base)
        return PeftModel.from_pretrained(model, str(adapter)).eval(), tokenizer
    set_peft_model_state_dict(model, load_file(str(adapter / "adapter_model.safetensors")))
    return model, tokenizer


def _sample(model, tokenizer, recipe: Recipe, source: str, progress: bool) -> list[Trajectory]:
    from searchgym.agent.rollout import rollout
    from searchgym.train.evaluate import eval_plan

    task_ids, settings = eval_plan(recipe, progress=progress)
    return rollout(model, tokenizer, recipe.env.id, task_ids, source=source, **settings)


def read_rung(folder: str | Path) -> dict:
    """A rung's ``dose.json`` (NaN-free JSON: missing values are null)."""
    return json.loads((Path(folder) / DOSE_FILE).read_text(encoding="utf-8"))


def mean_kl(records: Sequence[dict], kind: str = "k3") -> float:
    """Mean over rungs' KL values of one kind, NaN when none (for summaries and logs).

    >>> mean_kl([{"kl": {"k3": {"value": 0.25}}}, {"kl": {"k3": {"value": None}}}])
    0.25
    """
    values = [r["kl"][kind]["value"] for r in records if r["kl"][kind]["value"] is not None]
    return float(np.mean(values)) if values else math.nan
