"""Rejection-sampling fine-tuning (RFT): sample the policy, keep what it got right, fine-tune on that, repeat.

Each of ``rft.rounds`` rounds samples ``samples`` episodes of the current policy on ``num_questions`` train
questions with searchgym's rollout engine, keeps the correct ones (the env's ``correct``) and trains the LoRA
on them with TRL's SFTTrainer, exactly as the sft stage trains on demonstrations: the same chat template, tool
schemas and assistant-only loss (`searchgym.agent.demos.to_dataset`, `searchgym.train.sft.sft_config`). The
policy's own successes are its demonstrations, so no demonstrator is needed, only a reward that says correct.

Sources: STaR (Zelikman et al., 2022, "STaR: Bootstrapping Reasoning With Reasoning"); RFT (Yuan et al.,
2023, "Scaling Relationship on Learning Mathematical Reasoning with Large Language Models": ``keep =
"distinct"`` keeps distinct correct paths only); ReST / ReST-EM (Gulcehre et al., 2023; Singh et al., 2023),
both forms of expert iteration (Anthony et al., 2017). Here one adapter is continued across rounds on each
round's own kept episodes (STaR and ReST-EM restart from the base model every iteration), the questions are
the same every round, and STaR's rationalization (hinting the answer on failures) is not done.

Per round, ``metrics.jsonl`` gets one row at the step the round's sampling started (``rft/round``,
``rft/episodes``, ``rft/kept``, ``rft/acceptance_rate``, ``rft/questions_solved``, ``rft/train_loss``,
``rft/train_steps``), and the trainer's rows continue its step count, so rounds read as one curve (and dose
rungs never collide). ``stages/rft/round-<r>/`` keeps the sampled ``episodes.jsonl``, the round's adapter and
``round.json``; ``--resume`` skips finished rounds and resumes an unfinished one from its checkpoint. A round
with no correct episode is logged and trains nothing. This module is imported when a recipe loads: the
settings and checks are light, torch and TRL are imported inside `train_rft`.
"""

from __future__ import annotations

import copy
import json
import math
import random
from dataclasses import dataclass
from typing import Literal

from searchgym.config.agent_recipe import SFTTraining
from searchgym.config.recipe_checks import check_rules
from searchgym.train.sft_checks import training_rules
from searchgym.util.config_schema import ConfigError

ROUND = "round.json"  # a finished round's marker and summary


@dataclass
class RFTSettings(SFTTraining):
    """The recipe's ``[rft]`` section."""

    rounds: int = 1  # sample -> keep the correct -> train, this many times
    num_questions: int = 64  # train questions sampled each round (the same ones every round)
    samples: int = 4  # episodes per question per round
    temperature: float = 1.0  # sampling temperature (0 = greedy: every sample alike)
    max_turns: int = 8
    max_new_tokens: int = 96  # per assistant turn
    rollout_batch_size: int = 32  # episodes generated together
    keep: Literal["correct", "distinct"] = "correct"  # "distinct": one of identical correct episodes (RFT)
    # Training on the kept episodes: the sft stage's fields (`SFTTraining`), same meaning and defaults.


_COUNTS = ("rounds", "num_questions", "samples", "max_turns", "max_new_tokens", "rollout_batch_size", "batch_size",
           "max_length")


def check_rft(recipe) -> None:
    """The rft stage's checks (`searchgym.train.stages.STAGES["rft"]`): one `ConfigError` naming the field."""
    s = recipe.settings("rft")
    for name in _COUNTS:
        if getattr(s, name) < 1:
            raise ConfigError(f"rft.{name}: must be an integer >= 1, got {getattr(s, name)!r}")
    check_rules(recipe, [("rft.temperature", math.isfinite(s.temperature) and s.temperature >= 0,
                          "a finite number >= 0 (0 = greedy)"), *training_rules("rft", s)])


def kept_episodes(episodes, keep: str = "correct") -> list:
    """The episodes RFT trains on: the correct ones, in order; with ``keep = "distinct"`` only the first of
    correct episodes of one question whose assistant turns are identical."""
    kept, seen = [], set()
    for t in episodes:
        if not t.correct:
            continue
        key = (t.task_id, json.dumps([m for m in t.messages if m["role"] == "assistant"], sort_keys=True))
        if keep == "distinct" and key in seen:
            continue
        seen.add(key)
        kept.append(t)
    return kept


def round_row(r: int, episodes, kept) -> dict:
    """A round's numbers before training (`train_rft` adds the loss and steps)."""
    return {"rft/round": r, "rft/episodes": len(episodes), "rft/kept": len(kept),
            "rft/acceptance_rate": len(kept) / len(episodes) if episodes else 0.0,
            "rft/questions_solved": len({t.task_id for t in kept}) / max(len({t.task_id for t in episodes}), 1)}


def train_questions(recipe, n: int) -> list[str]:
    """The ``n`` train task ids every round samples, drawn by the recipe's seed (all when there are fewer)."""
    import gymnasium

    env = gymnasium.make(recipe.env.id, **{**recipe.env.kwargs, "split": "train"})
    ids = [t.id for t in env.unwrapped.tasks]
    env.close()
    if not ids:
        raise ValueError(f"rft: {recipe.env.id} with {recipe.env.kwargs} has no train questions to sample")
    return random.Random(recipe.seed).sample(ids, min(n, len(ids)))


class _FromStageStart:
    """One of searchgym's callbacks on a round's trainer, shown the optimizer step counted from the stage's
    start: metrics rows, the progress bar, dose rungs and probes of round 2 go on where round 1 ended."""

    def __init__(self, inner, offset: int):
        self.inner, self.offset = inner, offset

    def __getattr__(self, event: str):
        method = getattr(self.inner, event)
        if not event.startswith("on_"):
            return method

        def call(args, state, control, **kwargs):
            shifted = copy.copy(state)
            shifted.global_step, shifted.max_steps = state.global_step + self.offset, state.max_steps + self.offset
            return method(args, shifted, control, **kwargs)

        return call


def _sample(ctx, model, task_ids: list[str], r: int, folder) -> list:
    """Round ``r``'s episodes: rank 0 samples them into ``folder/episodes.jsonl`` (or, resuming, finds them
    there); every rank then reads that file, so all train on the same episodes."""
    from searchgym.agent.rollout import rollout
    from searchgym.trajectory import read_trajectories, write_trajectories

    s, recipe, path = ctx.recipe.settings("rft"), ctx.recipe, folder / "episodes.jsonl"
    with ctx.main_first(f"sampling rft round {r}"):
        if ctx.is_main and not (ctx.resume and path.is_file()):
            print(f"rft round {r}/{s.rounds}: sampling {len(task_ids)} train questions × {s.samples}")
            episodes = rollout(model, ctx.tokenizer, recipe.env.id, task_ids, samples=s.samples,
                               temperature=s.temperature, max_turns=s.max_turns, max_new_tokens=s.max_new_tokens,
                               batch_size=s.rollout_batch_size, seed=1000 * recipe.seed + r,
                               env_kwargs={**recipe.env.kwargs, "split": "train"}, progress=ctx.progress,
                               source=f"{recipe.name}:rft-round-{r}")
            folder.mkdir(parents=True, exist_ok=True)
            write_trajectories(path, episodes, parquet=False)
        return list(read_trajectories(path))


def _train_round(ctx, model, kept, r: int, offset: int, resuming: bool) -> tuple[float, int]:
    """SFT of ``model``'s adapter on the kept episodes (the sft stage's trainer and template); returns the
    round's mean train loss and optimizer steps. Its checkpoints go to ``checkpoints/rft/round-<r>``."""
    from trl import SFTTrainer

    from searchgym.agent.demos import to_dataset
    from searchgym.runs import checkpoint_step
    from searchgym.train.context import latest_checkpoint
    from searchgym.train.sft import sft_config

    folder = ctx.checkpoint_dir() / f"round-{r}"
    trainer = SFTTrainer(model=model, args=sft_config(ctx.recipe, folder, ctx.recipe.settings("rft")),
                         train_dataset=to_dataset(kept), processing_class=ctx.tokenizer,
                         callbacks=[ctx.metrics_logger()])
    ctx.attach(trainer)  # progress bar with ETA, dose snapshots, live probes (rank 0)
    if offset:
        callbacks = trainer.callback_handler.callbacks
        for i, callback in enumerate(callbacks):
            if type(callback).__module__.startswith("searchgym."):
                callbacks[i] = _FromStageStart(callback, offset)
    checkpoint = latest_checkpoint(folder) if resuming else None
    if resuming:  # rows logged after the point training restarts from are about to be logged again
        if ctx.is_main:
            ctx.run.trim_metrics(ctx.stage, offset + checkpoint_step(checkpoint))
        ctx.barrier()
    out = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    return out.training_loss, out.global_step


def train_rft(ctx):
    """The "rft" stage: ``rft.rounds`` rounds of sample -> keep the correct -> SFT, on one policy
    (``ctx.trainable``: a new LoRA adapter, the previous stage's continued, or every weight); returns it."""
    from searchgym.util.files import atomic_write

    s = ctx.recipe.settings("rft")
    model = ctx.trainable(ctx.model)
    task_ids = train_questions(ctx.recipe, s.num_questions)
    step, resuming = 0, ctx.resume  # step: optimizer steps of the stage so far
    for r in range(1, s.rounds + 1):
        folder = ctx.stage_dir / f"round-{r}"
        if ctx.resume and (folder / ROUND).is_file():  # finished before the interruption: its adapter, on
            model = ctx.load_weights(model, folder)
            step += json.loads((folder / ROUND).read_text(encoding="utf-8"))["rft/train_steps"]
            print(f"rft round {r}/{s.rounds}: already finished, loading its policy")
            continue
        episodes = _sample(ctx, model, task_ids, r, folder)
        kept = kept_episodes(episodes, s.keep)
        row = round_row(r, episodes, kept)
        print(f"rft round {r}/{s.rounds}: kept {len(kept)} of {len(episodes)} episodes "
              f"({row['rft/acceptance_rate']:.1%}), solving {row['rft/questions_solved']:.1%} of the questions")
        if kept:
            loss, steps = _train_round(ctx, model, kept, r, step, resuming)
            row.update({"rft/train_loss": loss, "rft/train_steps": steps})
        else:
            print(f"rft round {r}/{s.rounds}: no correct episode, so no training this round")
            row.update({"rft/train_steps": 0, "rft/skipped": True})
        resuming = False
        if ctx.is_main:  # the policy, the row (at the step whose policy was sampled), then the round is done
            ctx.save_weights(model, folder, adapters=["default"])
            ctx.log({"step": step, **row})
            atomic_write(folder / ROUND, json.dumps({"step": step, **row}).encode("utf-8"))
        ctx.barrier()
        step += row["rft/train_steps"]
    return model
