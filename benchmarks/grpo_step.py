"""GRPO step time: searchgym's cached engine (``grpo.rollout = "engine"``) against TRL's own tool loop
(``"trl"``, the path before it), and the eval engine's episode rate on the same model and questions.

    python benchmarks/grpo_step.py [--quick] [--steps 6] [--models searchgym-prior,smollm2-135m-instruct]

Each model trains the breadth study's ``grpo`` arm as its quick preset sets it (the prior: one question x 8
rollouts a step in its own world, up to 8 tool rounds in 1,024 completion tokens; SmolLM2: the smollm2
preset's world and sizes), from the same base, seed and questions, once per path, in this process one after
the other. The old path is exactly the previous default: TRL's tool loop, gradient checkpointing on a GPU
only. Timed: the optimizer steps after the first (the first pays one-off set-up), split into generation
(TRL's ``_generate``, which runs either path's rollouts) and the rest (rewards, reference/old log-probs,
forward, backward, optimizer). ``--quick``: the prior only, 6 steps.

Last line JSON per model (``prior_``/``smollm2_`` prefixes): ``steps_per_s_{engine,trl}``,
``episodes_per_s_{engine,trl}``, ``grpo_step_speedup`` (trl seconds per step / engine seconds per step;
target >= 2 on the prior, >= 1.5 on SmolLM2), ``rollout_share_{engine,trl}`` (share of step time in
generation) and ``engine_episodes_per_s`` (the eval engine, `searchgym.agent.rollout`, sampling the same
questions x 8 at the same temperature and token budget with the base model: the limit to approach), plus
``load_before`` (1-minute load average at the start) and ``threads``.
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

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from searchgym.agent.models import PRIOR, SMOLLM2  # noqa: E402
from searchgym.study.spec import load_study  # noqa: E402
from searchgym.train.stages import load_recipe  # noqa: E402

STUDY = Path(__file__).resolve().parents[1] / "agents" / "breadth-study.toml"
PRESET = {PRIOR: "quick", SMOLLM2: "smollm2"}
SHORT = {PRIOR: "prior", SMOLLM2: "smollm2"}


class StepClock(TrainerCallback):
    """Wall seconds of each optimizer step."""

    def __init__(self):
        self.seconds: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)


def arm_recipe(model: str, rollout: str, steps: int, extra: list[str] = ()):
    """The study preset's ``grpo`` arm for ``model`` with this rollout path and no snapshots or probes."""
    study = load_study(STUDY, PRESET[model])
    run = next(r for r in study.runs() if r.arm == "grpo" and r.seed == 0)
    old_checkpointing = "on" if torch.cuda.is_available() else "off"  # the previous default: cuda only
    return load_recipe(run.recipe, [*run.overrides, f"grpo.steps={steps}", f"grpo.rollout={rollout}",
                                    f"grpo.gradient_checkpointing={'auto' if rollout == 'engine' else old_checkpointing}",
                                    "grpo.save_steps=100000", "dose.every=0", "meters.every=0", *extra])


def time_path(model: str, rollout: str, steps: int, extra: list[str] = ()) -> dict:
    """Train ``steps`` GRPO steps on ``rollout``; seconds per step and in generation, after the first."""
    from trl import GRPOTrainer

    from searchgym.agent.models import load_model
    from searchgym.train.context import TrainContext
    from searchgym.train.grpo import grpo_trainer

    recipe = arm_recipe(model, rollout, steps, extra)
    generation: list[tuple[int, float]] = []  # (step, seconds) of each _generate call
    original = GRPOTrainer._generate

    def timed(self, prompts):
        start = time.perf_counter()
        try:
            return original(self, prompts)
        finally:
            generation.append((self.state.global_step, time.perf_counter() - start))

    GRPOTrainer._generate = timed
    try:
        with tempfile.TemporaryDirectory() as tmp:
            torch.manual_seed(0)
            base, tokenizer = load_model(recipe.model.base)
            ctx = TrainContext(recipe, Path(tmp), stage="grpo", model=base, tokenizer=tokenizer)
            trainer = grpo_trainer(ctx)
            clock = StepClock()
            trainer.add_callback(clock)
            trainer.train()
    finally:
        GRPOTrainer._generate = original
    step_seconds = sum(clock.seconds[1:])
    gen_seconds = sum(s for step, s in generation if step >= 1)
    timed_steps = len(clock.seconds) - 1
    episodes = timed_steps * recipe.grpo.batch_size * recipe.grpo.grad_accum
    return {"seconds_per_step": step_seconds / timed_steps, "steps_per_s": timed_steps / step_seconds,
            "episodes_per_s": episodes / step_seconds, "rollout_share": gen_seconds / step_seconds,
            "first_step_s": clock.seconds[0]}


def engine_rate(recipe) -> float:
    """Episodes/s of the eval engine sampling 3 train questions x num_generations with the base model."""
    from searchgym.agent.models import load_model
    from searchgym.agent.rollout import rollout
    from searchgym.train.grpo_env import make_environment_factory

    g = recipe.grpo
    model, tokenizer = load_model(recipe.model.base)
    tasks = [t.id for t in make_environment_factory(recipe.env.id, recipe.env.kwargs).env.tasks[:3]]
    kwargs = dict(samples=g.num_generations, temperature=g.temperature, top_p=g.top_p,
                  max_turns=g.max_tool_calling_iterations + 1, max_new_tokens=recipe.eval.max_new_tokens,
                  batch_size=g.batch_size, env_kwargs=recipe.env.kwargs, progress=False)
    rollout(model, tokenizer, recipe.env.id, tasks[:1], **kwargs)  # warm-up: the env, index and prefix
    start = time.perf_counter()
    episodes = rollout(model, tokenizer, recipe.env.id, tasks, **kwargs)
    return len(episodes) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the prior only, 6 steps")
    parser.add_argument("--steps", type=int, help="optimizer steps per path (default 6 quick, 11 otherwise)")
    parser.add_argument("--models", help=f"comma-separated, default {PRIOR},{SMOLLM2} ({PRIOR} with --quick)")
    args = parser.parse_args()
    models = args.models.split(",") if args.models else [PRIOR] if args.quick else [PRIOR, SMOLLM2]
    steps = args.steps or (6 if args.quick else 11)
    result = {"load_before": round(os.getloadavg()[0], 2), "threads": torch.get_num_threads(), "steps": steps}
    for model in models:
        engine = time_path(model, "engine", steps)
        trl = time_path(model, "trl", steps)
        limit = engine_rate(arm_recipe(model, "engine", steps))
        key = SHORT.get(model, model)
        speedup = trl["seconds_per_step"] / engine["seconds_per_step"]
        print(f"{model}: engine {engine['seconds_per_step']:.2f} s/step ({engine['rollout_share']:.0%} generating), "
              f"TRL tool loop {trl['seconds_per_step']:.2f} s/step ({trl['rollout_share']:.0%} generating): "
              f"{speedup:.2f}x; eval engine {limit:.1f} episodes/s vs {engine['episodes_per_s']:.1f} in training")
        for path, r in (("engine", engine), ("trl", trl)):
            result.update({f"{key}_steps_per_s_{path}": round(r["steps_per_s"], 4),
                           f"{key}_episodes_per_s_{path}": round(r["episodes_per_s"], 3),
                           f"{key}_rollout_share_{path}": round(r["rollout_share"], 3)})
        result.update({f"{key}_grpo_step_speedup": round(speedup, 3), f"{key}_engine_episodes_per_s": round(limit, 2)})
    first = SHORT.get(models[0], models[0])
    result["grpo_step_speedup"] = result[f"{first}_grpo_step_speedup"]
    result["rollout_share"] = result[f"{first}_rollout_share_engine"]
    result["engine_episodes_per_s"] = result[f"{first}_engine_episodes_per_s"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
