"""Cost of the live diversity meters: the same short LoRA SFT run without and with `DiversityCallback`.

    python benchmarks/meters.py [--quick] [--model tiny|smollm2-135m-instruct|PATH] [--steps N] [--every K]
                                [--max-overhead F]

Both runs train the same model on the same demo rows (scripted demonstrators played through a small
synthetic world) with the default recipe's SFT settings; the second adds the callback at ``--every``
(default: the recipe default, ``MeterConfig.every``) with the default probe (questions x samples, the
recipe's eval decoding) and the default time budget (``MeterConfig.max_overhead``). ``--model`` may be a
prior-lab model folder (``runs/<run>/stages/pretrain/model``): its steps are cheap and its probes long,
the case the budget exists for. Prints a table, then (last line) JSON with ``"meter_overhead"`` =
(t_with - t_without) / t_without (target <= 0.05 at the defaults), the probes taken and skipped, and
``unbudgeted_overhead``: what the same probes would cost on schedule, from the measured step and probe
times.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from searchgym.agent.demos import build_demos, to_dataset  # noqa: E402
from searchgym.agent.models import load_model  # noqa: E402
from searchgym.config.recipe import Recipe, recipe_from_dict  # noqa: E402
from searchgym.runs import read_metrics  # noqa: E402
from searchgym.train.probes import make_diversity_callback  # noqa: E402

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


def train_once(recipe: Recipe, dataset, steps: int, run_dir: Path, meters: bool) -> tuple[float, list[int]]:
    """Seconds of ``trainer.train()`` for ``steps`` SFT steps on a fresh model + LoRA (set-up not timed),
    and the scheduled probe steps the budget skipped."""
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    s, lora = recipe.sft, recipe.lora
    model, tokenizer = load_model(recipe.model.base)
    args = SFTConfig(output_dir=str(run_dir / "checkpoints"), assistant_only_loss=True, max_steps=steps,
                     per_device_train_batch_size=s.batch_size, gradient_accumulation_steps=s.grad_accum,
                     max_length=s.max_length, learning_rate=s.learning_rate, logging_steps=s.logging_steps,
                     save_strategy="no", report_to="none", use_cpu=True, gradient_checkpointing=False,
                     disable_tqdm=True, seed=recipe.seed)
    peft = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft)
    callback = make_diversity_callback(recipe, run_dir, tokenizer).attach(trainer) if meters else None
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start, (callback.skipped if callback else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny",
                        help="tiny (fast), smollm2-135m-instruct (the default base) or a model folder")
    parser.add_argument("--steps", type=int, default=None, help="SFT steps per run (default 100; --quick 8)")
    parser.add_argument("--every", type=int, default=None, help="probe interval (default: MeterConfig.every)")
    parser.add_argument("--max-overhead", type=float, default=None,
                        help="probe time budget (default: MeterConfig.max_overhead; 0 = on schedule)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 8 steps of batch 1 and a small probe (2 questions x 2 samples, 2 turns of 16 tokens)")
    args = parser.parse_args()

    defaults = Recipe()
    every = args.every or defaults.meters.every or 50
    steps = args.steps or (8 if args.quick else 100)
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

    with tempfile.TemporaryDirectory() as tmp:
        t_without, _ = train_once(recipe, dataset, steps, Path(tmp, "without"), meters=False)
        t_with, skipped = train_once(recipe, dataset, steps, Path(tmp, "with"), meters=True)
        probes = [r for r in read_metrics(Path(tmp, "with")) if r.get("probe")]
    probe_seconds = sum(r["time/probe_seconds"] for r in probes) / len(probes)
    step_seconds = t_without / steps
    overhead = (t_with - t_without) / t_without
    # What the probes would cost on schedule, without the budget: baseline, every `every` steps, end.
    unbudgeted = probes_in(steps, every) * probe_seconds / t_without
    # Interval at which the periodic probes alone cost 5% (baseline and end probes not counted).
    every_for_5pct = math.ceil(probe_seconds / (0.05 * step_seconds))

    result = {"model": args.model, "steps": steps, "every": every, "max_overhead": max_overhead,
              "probes": len(probes), "probe_steps": [r["step"] for r in probes], "skipped": len(skipped),
              "probe_questions": recipe.meters.probe_questions, "samples": recipe.meters.samples,
              "t_without_s": round(t_without, 2), "t_with_s": round(t_with, 2),
              "step_seconds": round(step_seconds, 3), "probe_seconds": round(probe_seconds, 2),
              "meter_overhead": round(overhead, 4), "logged_probe_overhead": probes[-1].get("time/probe_overhead"),
              "unbudgeted_overhead": round(unbudgeted, 4), "every_for_5pct": every_for_5pct,
              "quick": args.quick}
    width = max(map(len, result))
    print(f"\n{'quantity':<{width}}  value")
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
