"""Calibration of the meters on policies of known behaviour (docs/calibration.md).

    python benchmarks/calibration.py [--quick] [--questions Q] [--samples N] [--seeds S] [--reps R]
                                     [--model tiny|PATH] [--skip-temperature] [--training-control off|tiny|full]
                                     [--out DIR]

Default sizes are the breadth study's quick preset (agents/breadth-study.toml). Three checks through the
real env, classifier, meters and claim rule: (1) known mixtures of the scripted demonstrators must be
recovered by the report's strategy entropy (jackknife per question, two-level bootstrap CI over seeds and
questions): ``max_entropy_error`` = max |measured - true| over mixtures (target <= 0.05 nats) and
``entropy_ci_coverage_min`` = min over mixtures of the share of simulated studies whose CI contains the
true entropy (target >= 0.90), with ``estimator_comparison`` (every candidate estimator x interval);
(2) power of the report's claim rule: ``mde_strategy_entropy`` (the paired difference's two-level bootstrap CI
must exclude 0; ``mde_strategy_entropy_nonoverlap``: the old rule, CIs that must not overlap),
``mde_strategy_entropy_paired`` (paired bootstrap over questions), ``mde_pass_at_k`` (k = n) and a
``size_sweep`` with the smallest size reaching MDE <= 0.10 nats; (3) a temperature sweep of ``--model``:
``temperature_monotone``; (4) the training-level positive control: narrow SFT on the shipped prior through the
real training entry point must drop strategy entropy beyond the paired rule's MDE: ``training_control_drop``
(nats, base - trained, with ``_lo``/``_hi``) beside ``training_control_mde`` and ``training_control_detected``.
Prints readable lines, then (last line) the whole result as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from searchgym.calibration import (  # noqa: E402
    CalibrationConfig,
    calibrate,
    summary_lines,
    write_calibration,
)
from searchgym.runs import jsonable  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI): every code path, noisy numbers")
    parser.add_argument("--questions", type=int, help="held-out questions (default: the quick study's)")
    parser.add_argument("--samples", type=int, help="samples per question (default: the quick study's)")
    parser.add_argument("--seeds", type=int, help="seeds per arm (default: the quick study's)")
    parser.add_argument("--reps", type=int, help="simulated studies per point of a power curve")
    parser.add_argument("--model", help="model of the temperature sweep: alias or folder (default: the reference "
                        "prior searchgym-prior where it is shipped, else tiny)")
    parser.add_argument("--skip-temperature", action="store_true", help="no temperature sweep")
    parser.add_argument("--training-control", choices=("off", "tiny", "full"),
                        help="the training-level positive control (default: full; tiny with --quick)")
    parser.add_argument("--out", help="also write calibration.json into this folder (or to this .json path)")
    args = parser.parse_args()
    given = {k: getattr(args, k) for k in ("questions", "samples", "seeds", "reps") if getattr(args, k) is not None}
    given.update(model=args.model, skip_temperature=args.skip_temperature)
    if args.training_control:
        given["training_control"] = args.training_control
    config = CalibrationConfig.quick(**given) if args.quick else CalibrationConfig(**given)
    result = calibrate(config)
    for line in summary_lines(result):
        print(line)
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result["seconds"].items()))
    if args.out:
        print(f"wrote {write_calibration(result, args.out)}")
    print(json.dumps(jsonable(result), separators=(",", ":")))


if __name__ == "__main__":
    main()
