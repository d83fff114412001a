"""Competence of the reference prior (or any prior-lab model) on a fixed held-out set of its world.

    python benchmarks/prior.py [--quick] [--model searchgym-prior|PATH] [--questions N] [--samples N]
    python benchmarks/prior.py --curve runs/prior-reference      # success vs step over its checkpoints

Samples the model at the study's decoding (temperature 1.0, 8 turns, 64 tokens a turn) on the first N test
questions of the world its recipe names, as `searchgym.train.priors.evaluate_prior` does. Prints a table, then
(last line) JSON: ``success_at_1`` (mean success over every sample; target >= 0.30), ``invalid_share``
(target <= 0.05), ``strategy_tv`` (total variation between the sampled strategy shares and the realised
mix of its pretraining demos; target <= 0.2), ``pretrain_seconds`` (from its training log), and the eval
seconds. ``--curve RUN`` evaluates every checkpoint of a pretraining run instead and writes
``RUN/curve.json`` (copied into the shipped prior by ``python -m searchgym.train.priors``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from searchgym.train.priors import evaluate_prior  # noqa: E402

TARGETS = {"success_at_1": (">=", 0.30), "invalid_share": ("<=", 0.05), "strategy_tv": ("<=", 0.2)}


def meets(result: dict) -> dict[str, bool]:
    return {k: (result[k] >= v if op == ">=" else result[k] <= v) for k, (op, v) in TARGETS.items()
            if result.get(k) is not None}


def curve(run: Path, questions: int, samples: int, every: int = 1) -> list[dict]:
    """Success vs step: every ``every``-th ``checkpoint-N`` of the run's pretraining and its last one."""
    from tqdm.auto import tqdm

    checkpoints = sorted((run / "checkpoints" / "pretrain").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    checkpoints = [c for i, c in enumerate(checkpoints) if i % every == every - 1 or c == checkpoints[-1]]
    points = []
    for ckpt in tqdm(checkpoints, desc="checkpoints"):
        r = evaluate_prior(ckpt, questions=questions, samples=samples)
        points.append({"step": int(ckpt.name.split("-")[1]), **{k: r[k] for k in ("success_at_1", "invalid_share",
                                                                                 "tool_calls", "strategy_tv")}})
        print(json.dumps(points[-1]))
    (run / "curve.json").write_text(json.dumps(points, indent=2), encoding="utf-8")
    return points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="searchgym-prior", help="alias or model folder (default: the reference prior)")
    ap.add_argument("--quick", action="store_true", help="100 questions x 2 samples (the default is 200 x 4)")
    ap.add_argument("--questions", type=int)
    ap.add_argument("--samples", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--curve", type=Path, metavar="RUN", help="evaluate every checkpoint of a pretraining run")
    ap.add_argument("--every", type=int, default=1, metavar="N", help="with --curve: every N-th checkpoint (and the last)")
    args = ap.parse_args()
    questions = args.questions or (100 if args.quick or args.curve else 200)
    samples = args.samples or (2 if args.quick or args.curve else 4)
    start = time.perf_counter()
    if args.curve:
        points = curve(args.curve, questions, samples, max(1, args.every))
        print(json.dumps({"run": str(args.curve), "questions": questions, "samples": samples, "curve": points,
                          "seconds": round(time.perf_counter() - start, 1)}))
        return
    r = evaluate_prior(args.model, questions=questions, samples=samples, seed=args.seed, progress=True)
    r["eval_seconds"] = round(time.perf_counter() - start, 1)
    r["meets_targets"] = meets(r)
    for key in ("success_at_1", f"pass_at_{samples}", "invalid_share", "tool_calls", "strategy_entropy",
                "strategy_tv", "pretrain_seconds", "eval_seconds"):
        value = r.get(key)
        print(f"{key:>18}  {value:.3f}" if isinstance(value, float) else f"{key:>18}  {value}")
    print(f"{'strategy share':>18}  " + ", ".join(f"{k} {v:.0%}" for k, v in r["strategy_share"].items()))
    print(json.dumps({"model": args.model, **r}))


if __name__ == "__main__":
    main()
