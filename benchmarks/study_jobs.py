"""What `searchgym experiment --jobs N` buys: the same study run with 1 and with N worker processes.

    python benchmarks/study_jobs.py [--preset tiny] [--seeds 0,1] [--jobs 2] [--arms base,sft-diverse,grpo]
                                    [--set grpo.steps=20]

Runs the breadth study's preset (default: `tiny`, every stage on the random 2-layer model, with its dose
rungs) twice into fresh temporary folders, first with ``--jobs 1`` (one process: the old behaviour) then with
``--jobs N`` (N spawned workers of one thread each), report included, and checks both studies hold the same
runs and rungs. Last line JSON: ``seconds_jobs1``, ``seconds_jobsN``, ``jobs_speedup`` (= jobs1 / jobsN),
``runs``, ``rungs``, ``same_runs``, ``load_before`` (1-minute load average when it started).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from searchgym.study.runner import experiment_command  # noqa: E402
from searchgym.study.spec import parse_list  # noqa: E402

STUDY = Path(__file__).resolve().parents[1] / "agents" / "breadth-study.toml"


def _run(preset: str, seeds: list[int], arms: list[str] | None, jobs: int, out: Path,
         overrides: list[str]) -> tuple[float, set[str]]:
    start = time.perf_counter()
    experiment_command(STUDY, preset=preset, out=out, seeds=seeds, arms=arms, jobs=jobs, overrides=overrides)
    seconds = time.perf_counter() - start
    return seconds, {p.parent.relative_to(out).as_posix() for p in out.glob("*/seed*/dose/*/dose.json")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds for every arm")
    parser.add_argument("--arms", help="comma-separated subset of the preset's arms")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        help="override for every arm, as `searchgym experiment --set` (repeatable)")
    args = parser.parse_args()
    seeds, arms = parse_list(args.seeds, "--seeds", int), parse_list(args.arms, "--arms")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        one, rungs_one = _run(args.preset, seeds, arms, 1, Path(tmp) / "jobs1", args.overrides)
        many, rungs_many = _run(args.preset, seeds, arms, args.jobs, Path(tmp) / f"jobs{args.jobs}", args.overrides)
    runs = len({r.split("/dose/")[0] for r in rungs_one})
    print(f"{args.preset} preset, seeds {seeds}: {runs} runs, {len(rungs_one)} rungs; --jobs 1 {one:.1f} s, "
          f"--jobs {args.jobs} {many:.1f} s: {one / many:.2f}x (load average {load:.2f} at the start)")
    print(json.dumps({"preset": args.preset, "seeds": seeds, "jobs": args.jobs, "runs": runs, "rungs": len(rungs_one),
                      "seconds_jobs1": round(one, 1), f"seconds_jobs{args.jobs}": round(many, 1),
                      "jobs_speedup": round(one / many, 3), "same_runs": rungs_one == rungs_many,
                      "load_before": round(load, 2)}))


if __name__ == "__main__":
    main()
