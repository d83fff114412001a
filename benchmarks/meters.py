"""Cost of the live diversity meters: the same short LoRA SFT run without and with `DiversityCallback`.

    python benchmarks/meters.py [--quick] [--model tiny|smollm2-135m-instruct|PATH] [--steps N] [--every K]
                                [--max-overhead F] [--repeats R]

Both runs train the same model on the same demo rows (scripted demonstrators played through a small
synthetic world) with the default recipe's SFT settings; the second adds the callback at ``--every``
(default: the recipe default, ``MeterConfig.every``) with the default probe (questions x samples, the
recipe's eval decoding) and the default time budget (``MeterConfig.max_overhead``). ``--model`` may be a
prior-lab model folder (``runs/<run>/stages/pretrain/model``): its steps are cheap and its probes long,
the case the budget exists for. Each of ``--repeats`` pairs runs both (order alternating, so a drift of the
machine's load does not favour one side). Prints a table, then (last line) JSON with:

- ``meter_overhead`` = (t_with - t_without) / t_without, the median over the repeats (target <= 0.05 at the
  defaults), with ``meter_overhead_min``/``_max`` and every repeat's value;
- ``timing_noise``: the relative spread (max - min) / median of the repeats' identical runs without the
  callback, and ``noise_level``: true when that spread is as large as the overhead measured or the target
  (then the difference of wall times cannot resolve the overhead; ``logged_probe_overhead`` still can);
  both null with one repeat;
- ``logged_probe_overhead``: the callback's own clock over the whole run, probe seconds / the rest of
  ``trainer.train()`` (median over repeats); ``probe_seconds_total`` and, per unit, ``step_seconds`` and
  ``probe_seconds`` (seconds per probe);
- the probes taken and skipped (per repeat: the budget depends on the timings), and ``unbudgeted_overhead``: what the same probes would cost on schedule,
  from the measured step and probe times.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from searchgym.agent.demos import build_demos, to_dataset  # noqa: E402
from searchgym.agent.models import load_model  # noqa: E402
from searchgym.config.agent_recipe import Recipe  # noqa: E402
from searchgym.runs import read_metrics  # noqa: E402
from searchgym.train.probes import make_diversity_callback  # noqa: E402
from searchgym.train.stages import recipe_from_dict  # noqa: E402

# A small world and the hashing embedder: the index builds in a second, and retrieval is a negligible
# part of both a training step and a probe (generation dominates the probe).
SMALL_WORLD = {"embedder": "hashing", "top_k": 3, "max_obs_chars": 400, "max_steps": 8,
               "world_kwargs": {"size": "small", "max_hops": 2, "n_train": 120, "n_test": 40}}


def probes_in(steps: int, every: int) -> int:
    """Probes the callback takes in a run of ``steps`` optimizer steps: the baseline, every ``every``
    steps, and the end (unless it falls on a multiple of ``every``).

    >>> probes_in(100, 50), probes_in(100, 30), probes_in(10, 50)
    (3, 5, 2)
    """
    return 1 + steps // every + (steps % every != 0)


def train_once(recipe: Recipe, dataset, steps: int, run_dir: Path, meters: bool) -> dict:
    """One SFT run of ``steps`` steps on a fresh model + LoRA: the seconds of ``trainer.train()`` (set-up not
    timed) and, with the callback, its probes (seconds each, steps), skipped steps and own overhead clock."""
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    s, lora = recipe.sft, recipe.lora
    model, tokenizer = load_model(recipe.model.base)
    args = SFTConfig(output_dir=str(run_dir / "checkpoints"), assistant_only_loss=True, max_steps=steps,
                     per_device_train_batch_size=s.batch_size, gradient_accumulation_steps=s.grad_accum,
                     max_length=s.max_length, learning_rate=s.learning_rate, logging_steps=s.logging_steps,
                     save_strategy="no", report_to="none", use_cpu=True, activation_checkpointing=False,
                     disable_tqdm=True, seed=recipe.seed)
    peft = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft)
    callback = make_diversity_callback(recipe, run_dir, tokenizer, stage="sft").attach(trainer) if meters else None
    start = time.perf_counter()
    trainer.train()
    run = {"seconds": time.perf_counter() - start}
    if callback:  # its clock over the whole run (the last probe row's ratio may be the baseline's, over ~0 s)
        probes = [r for r in read_metrics(run_dir) if r.get("probe")]
        run.update(overhead=callback.overhead(), skipped=list(callback.skipped),
                   probe_steps=[r["step"] for r in probes], probe_seconds=[r["time/probe_seconds"] for r in probes])
    return run


def spread(values: list[float]) -> float:
    """(max - min) / median: how far identical runs differ, relative to their size.

    >>> spread([10.0, 11.0, 9.0]), spread([5.0])
    (0.2, 0.0)
    """
    return (max(values) - min(values)) / statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny",
                        help="tiny (fast), smollm2-135m-instruct (the default base) or a model folder")
    parser.add_argument("--steps", type=int, default=None, help="SFT steps per run (default 100; --quick 12)")
    parser.add_argument("--every", type=int, default=None, help="probe interval (default: MeterConfig.every)")
    parser.add_argument("--max-overhead", type=float, default=None,
                        help="probe time budget (default: MeterConfig.max_overhead; 0 = on schedule)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="pairs of runs (without, with); medians and min-max reported (default 1; --quick 3)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 3 x 12 steps of batch 1 and a small probe (2 questions x 2 samples, "
                             "2 turns of 16 tokens)")
    args = parser.parse_args()

    defaults = Recipe()
    every = args.every or defaults.meters.every or 50
    steps = args.steps or (12 if args.quick else 100)
    repeats = args.repeats or (3 if args.quick else 1)
    if steps < 1 or repeats < 1:
        parser.error("--steps and --repeats must be >= 1")
    max_overhead = defaults.meters.max_overhead if args.max_overhead is None else args.max_overhead
    data: dict = {"seed": 0, "model": {"base": args.model}, "env": {"kwargs": SMALL_WORLD},
                  "meters": {"every": every, "max_overhead": max_overhead}}
    if args.quick:  # smoke-sized steps and probe: the numbers show the mechanics, not the default cost
        data["meters"].update(probe_questions=2, samples=2)
        data["eval"] = {"max_turns": 2, "max_new_tokens": 16}
        data["sft"] = {"batch_size": 1, "max_length": 1024}
    recipe = recipe_from_dict(data)
    s = recipe.sft
    rows = steps * s.batch_size * s.grad_accum
    demos = build_demos(recipe.env.id, "diverse", num_questions=max(1, rows // 2), demos_per_question=2,
                        seed=0, narrow_strategy=s.narrow_strategy, env_kwargs=recipe.env.kwargs)
    dataset = to_dataset(demos)

    without, with_ = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):  # alternate the order: without first, then with first, ...
            for meters in ((False, True) if i % 2 == 0 else (True, False)):
                run = train_once(recipe, dataset, steps, Path(tmp, f"{i}-{'with' if meters else 'without'}"), meters)
                (with_ if meters else without).append(run)
    print(json.dumps(summarize(without, with_, steps=steps, every=every, model=args.model, quick=args.quick,
                               max_overhead=max_overhead, recipe=recipe)))


def summarize(without: list[dict], with_: list[dict], *, steps: int, every: int, model: str, quick: bool,
              max_overhead: float, recipe: Recipe) -> dict:
    """The result (printed as a table, returned for the JSON line) from the repeats' runs."""
    t_without = [r["seconds"] for r in without]
    t_with = [r["seconds"] for r in with_]
    overheads = sorted((w["seconds"] - o["seconds"]) / o["seconds"] for w, o in zip(with_, without))
    probe_seconds = [p for r in with_ for p in r["probe_seconds"]]
    median = statistics.median
    step_seconds = median(t_without) / steps
    per_probe = median(probe_seconds)
    overhead = median(overheads)
    noise = spread(t_without) if len(t_without) > 1 else None  # one repeat: unknown
    target = max_overhead or 0.05
    result = {"model": model, "steps": steps, "every": every, "max_overhead": max_overhead, "repeats": len(without),
              "probes": median([len(r["probe_steps"]) for r in with_]),
              "probe_steps": [r["probe_steps"] for r in with_], "skipped": [len(r["skipped"]) for r in with_],
              "probe_questions": recipe.meters.probe_questions, "samples": recipe.meters.samples,
              "t_without_s": round(median(t_without), 2), "t_with_s": round(median(t_with), 2),
              "step_seconds": round(step_seconds, 3), "probe_seconds": round(per_probe, 3),
              "probe_seconds_total": round(median([sum(r["probe_seconds"]) for r in with_]), 3),
              "meter_overhead": round(overhead, 4), "meter_overhead_min": round(overheads[0], 4),
              "meter_overhead_max": round(overheads[-1], 4), "meter_overhead_runs": [round(o, 4) for o in overheads],
              "timing_noise": None if noise is None else round(noise, 4),
              "noise_level": None if noise is None else noise >= max(abs(overhead), target),
              "logged_probe_overhead": round(median([r["overhead"] for r in with_]), 4),
              # What the probes would cost on schedule, without the budget: baseline, every `every` steps, end.
              "unbudgeted_overhead": round(probes_in(steps, every) * per_probe / median(t_without), 4),
              # Interval at which the periodic probes alone cost 5% (baseline and end probes not counted).
              "every_for_5pct": math.ceil(per_probe / (0.05 * step_seconds)), "quick": quick}
    width = max(map(len, result))
    print(f"\n{'quantity':<{width}}  value")
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    return result


if __name__ == "__main__":
    main()
