"""A positive control at the training level: narrow SFT at a large enough dose must lower strategy entropy.

The mixture checks of ``searchgym calibrate`` show that the meters read a known policy right; they say
nothing about the training path. A study whose SFT silently trains nothing (a LoRA that is never applied,
a loss masked to zero, an adapter that is not saved or not loaded for the eval) reports "no change in
strategy entropy" — which is also the scientific answer it is looking for. This control makes that failure
visible: it runs the REAL entry point, `searchgym.train.train_command` on ``agents/sft-narrow.toml`` (one
strategy, ``forward``, in one query style), starting from the shipped prior (``searchgym-prior``) in its own
world (the quick preset of ``agents/breadth-study.toml``), at a dose measured to be large enough, and
checks that the run's own held-out evaluation (trained vs base, same questions, same sampling seed)
shows a strategy-entropy drop beyond the minimum detectable effect.

What it measures:

- per question, the bias-corrected strategy entropy of the n samples (`searchgym.meters.aggregate.per_question`)
  for the base (adapter off) and the trained model. The estimator is the report's: the key is the
  `searchgym.report.data.TABLE_KEYS` entry naming ``strategy_entropy`` (Miller–Madow,
  ``diversity/strategy_entropy_mm``, when this control was written; the jackknife, ``_jk``, once the report
  moved to it), so the control always checks the number the report shows;
- the drop, base − trained, averaged over questions, with a paired bootstrap 95% CI over questions
  (`searchgym.meters.stats.paired_bootstrap`, the rule behind the run's ``summary.md`` success gain);
- the MDE of that paired rule at these sizes: (z_0.975 + z_0.8) × SE = 2.80 × SE, with SE the paired
  standard error read from the CI, (hi − lo) / (2 × 1.96): the smallest true drop the "CI excludes 0"
  rule detects 80% of the time at this number of questions and samples and this per-question spread.

``training_control_detected`` is True when the CI excludes 0 (lo > 0) AND the drop exceeds the MDE: a
drop barely past 0 is not a working control. The recipe is data, `SIZES` (``--set`` overrides of
``agents/sft-narrow.toml``), never code; the doses were chosen by measuring (see the comment on `SIZES`).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from statistics import NormalDist
from typing import Literal

RECIPE = "agents/sft-narrow.toml"

# The quick study's prior and world (agents/breadth-study.toml, preset quick) and its SFT settings; no live
# probes (the control reads the end-of-training eval only); the base evaluated on the same questions/seed.
COMMON = (
    'model.base="searchgym-prior"',
    'env.kwargs={ embedder = "hashing", top_k = 3, max_obs_chars = 400, max_steps = 8, world_kwargs = '
    '{ size = 30, max_hops = 2, n_train = 1500, n_test = 300, holdout = "question" } }',
    "sft.batch_size=8",
    "sft.max_length=1024",
    "sft.logging_steps=5",
    "meters.every=0",
    "eval.baseline=true",
    'eval.split="test"',
    "eval.temperature=1.0",
    "eval.top_p=1.0",
    "eval.max_turns=8",
    "eval.max_new_tokens=64",
    "eval.batch_size=128",
)

# Optimizer steps = ceil(num_questions × demos_per_question × epochs / batch_size): tiny 40 steps at lr 3e-3,
# full 150 at the quick study's lr 1e-3. What each measured, and how they were chosen: docs/calibration.md.
SIZES: dict[str, tuple[str, ...]] = {
    "tiny": (
        "sft.num_questions=80",
        "sft.demos_per_question=4",
        "sft.epochs=1.0",
        "sft.learning_rate=3e-3",
        "sft.save_steps=1000",
        "eval.questions=20",
        "eval.samples=8",
    ),
    "full": (
        "sft.num_questions=200",
        "sft.demos_per_question=4",
        "sft.epochs=1.5",
        "sft.learning_rate=1e-3",
        "sft.save_steps=1000",
        "eval.questions=30",
        "eval.samples=8",
    ),
}

POWER = 0.8
ALPHA = 0.05


def strategy_key() -> str:
    """The strategy-entropy key the report's table shows (`searchgym.report.data.TABLE_KEYS`).

    >>> strategy_key().startswith("diversity/strategy_entropy")
    True
    """
    from searchgym.report.data import TABLE_KEYS

    return next(k for k in TABLE_KEYS if "strategy_entropy" in k)


def _recipe_path() -> Path:
    """``agents/sft-narrow.toml`` of this checkout (whatever the working folder), else relative to it."""
    here = Path(__file__).resolve().parents[2] / RECIPE
    return here if here.is_file() else Path(RECIPE)


def paired_mde(lo: float, hi: float, power: float = POWER, alpha: float = ALPHA) -> float:
    """MDE of the paired "CI excludes 0" rule from the CI of the difference: (z_(1-alpha/2) + z_power) × SE,
    SE = (hi - lo) / (2 z_(1-alpha/2)).

    >>> round(paired_mde(-0.196, 0.196), 3)  # SE 0.1: 2.80 × 0.1
    0.28
    """
    z = NormalDist().inv_cdf
    se = (hi - lo) / (2 * z(1 - alpha / 2))
    return (z(1 - alpha / 2) + z(power)) * se


def entropy_drop(trained, base, key: str | None = None, seed: int = 0) -> dict:
    """Per-question strategy entropy of two evaluations on the same questions at the same n, and the drop
    base − trained with its paired-bootstrap CI over questions and the MDE of that rule.

    >>> from searchgym.meters.families import example
    >>> mk = lambda q, s, strat: example(task_id=q, sample=s, strategy=strat)
    >>> base = [mk(q, s, st) for q in "abcd" for s, st in enumerate(["forward", "snippet", "parallel", "forward"])]
    >>> trained = [mk(q, s, "forward") for q in "abcd" for s in range(4)]
    >>> r = entropy_drop(trained, base, key="diversity/strategy_entropy_mm")
    >>> round(r["drop"], 3), r["lo"] == r["hi"] == r["drop"], r["questions"], r["n"]  # MM of (2, 1, 1)
    (1.29, True, 4, 4)
    """
    from searchgym.meters.aggregate import per_question
    from searchgym.meters.stats import paired_bootstrap

    key = key or strategy_key()
    trained, base = list(trained), list(base)
    n = min(_samples(trained), _samples(base))
    mt, _, _ = per_question(trained, n)
    mb, _, _ = per_question(base, n)
    t_vals = {q: [m.get(key, math.nan)] for q, m in mt.items()}
    b_vals = {q: [m.get(key, math.nan)] for q, m in mb.items()}
    r = paired_bootstrap(t_vals, b_vals, seed=seed)  # diff = b - a = base - trained
    return {"key": key, "drop": r["diff"], "lo": r["lo_diff"], "hi": r["hi_diff"],
            "mde": paired_mde(r["lo_diff"], r["hi_diff"]), "base": r["mean_b"], "trained": r["mean_a"],
            "questions": r["questions"], "n": n}


def _samples(trajectories) -> int:
    from collections import Counter

    counts = Counter(t.task_id for t in trajectories)
    if not counts:
        raise ValueError("no trajectories: the run's evaluation wrote nothing")
    return min(counts.values())


def _lora_b_max(adapter: Path) -> float:
    """Largest |weight| of the adapter's LoRA B matrices: 0 at PEFT's init, so > 0 means SFT moved them."""
    from safetensors.numpy import load_file

    files = sorted(adapter.glob("*.safetensors"))
    if not files:
        return math.nan
    weights = load_file(str(files[0]))
    values = [float(abs(v).max()) for k, v in weights.items() if "lora_B" in k and v.size]
    return max(values) if values else math.nan


def _steps(run_dir: Path) -> int:
    """Optimizer steps of the run's SFT stage (its last ``metrics.jsonl`` row with a step)."""
    import json

    steps = 0
    path = run_dir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row.get("stage") == "sft" and isinstance(row.get("step"), int):
                steps = max(steps, row["step"])
    return steps


def training_control(size: Literal["tiny", "full"] = "full", *, out: str | Path | None = None,
                     progress: bool = True, overrides: tuple[str, ...] | list[str] = ()) -> dict:
    """Run narrow SFT on the shipped prior through `train_command` at dose ``size`` (`SIZES`) and measure
    the strategy-entropy drop of its own held-out eval (see the module docstring). ``overrides`` are
    applied after the size's (to try another dose: ``["sft.epochs=2.0"]``). The run folder is ``out``,
    or a new temporary folder (kept; its path is in the result). Returns a JSON-ready dict."""
    from searchgym.runs import RunFolder
    from searchgym.train import train_command
    from searchgym.train.evaluate import strategy_share
    from searchgym.trajectory import read_trajectories

    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix=f"training-control-{size}-")) / "run"
    settings = [*COMMON, *SIZES[size], *overrides]
    started = time.perf_counter()
    run_dir = train_command(_recipe_path(), overrides=settings, out=folder, progress=progress)
    seconds = time.perf_counter() - started
    run = RunFolder(run_dir)
    trained = list(read_trajectories(run.trajectories("trained")))
    base = list(read_trajectories(run.trajectories("base")))
    r = entropy_drop(trained, base)
    share_t, share_b = strategy_share(trained), strategy_share(base)
    return {
        "training_control_drop": r["drop"],
        "training_control_drop_lo": r["lo"],
        "training_control_drop_hi": r["hi"],
        "training_control_mde": r["mde"],
        "training_control_detected": bool(r["lo"] > 0 and r["drop"] > r["mde"]),
        "mde_rule": "paired bootstrap over questions, CI excludes 0; MDE = 2.80 x SE, SE = (hi - lo) / 3.92",
        "key": r["key"],
        "base_entropy": r["base"],
        "trained_entropy": r["trained"],
        "base_forward_share": share_b.get("forward", 0.0),
        "trained_forward_share": share_t.get("forward", 0.0),
        "adapter_lora_b_max": _lora_b_max(run.adapter),
        "size": size,
        "steps": _steps(run_dir),
        "questions": r["questions"],
        "n": r["n"],
        "seconds": seconds,
        "overrides": settings,
        "run_dir": str(run_dir),
    }


def main(argv: list[str] | None = None) -> None:
    """``python -m searchgym.calibration.control [tiny|full] [--set key=value ...]``: one JSON line."""
    import argparse
    import json

    from searchgym.runs import jsonable

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", nargs="?", default="full", choices=sorted(SIZES))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    result = training_control(args.size, out=args.out, overrides=args.overrides, progress=False)
    print(json.dumps(jsonable(result)))


if __name__ == "__main__":
    main()
