"""The training context every stage runs in: device and dtype, trained weights, resume, metrics, probes, ranks.

`searchgym.train.pipeline` builds one `TrainContext` per run and hands it to each stage's ``run`` (with
``stage`` set to that stage's name). A stage asks the context instead of deciding for itself:

- ``ctx.device`` / ``ctx.dtype`` / ``ctx.trainer_args()``: where the model lives and the precision flags a
  Trainer config takes (``bf16`` on a GPU when ``model.dtype = "bfloat16"``, whatever the stage);
- ``ctx.trainable(model)`` / ``ctx.save_weights(model, parent)`` / ``ctx.load_weights(model, parent)``: what
  the recipe trains (a LoRA adapter, or every weight with ``model.finetune = "full"``), saved and loaded one
  way everywhere (`searchgym.train.weights`);
- ``ctx.checkpoint_dir()`` / ``ctx.resume_checkpoint()``: the stage's checkpoints and, on ``--resume``, the
  latest one (its metrics rows logged after that step are dropped, since they are about to be logged again);
- ``ctx.log(row)`` / ``ctx.attach(trainer)``: metrics.jsonl rows, the readable progress line and the live
  probes (`searchgym.train.probes`);
- ``ctx.is_main`` / ``ctx.barrier()`` / ``ctx.main_first(what)``: under ``torchrun`` or ``accelerate launch``
  every rank runs the stages, but files, probes and logs come from rank 0 only (docs/scale.md); a failure of
  rank 0 inside ``main_first`` stops the other ranks too, and a malformed ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``
  is refused at load (`rank_env`).

Heavy imports stay inside methods: recipes are checked before torch loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from pathlib import Path

from searchgym.config.agent_recipe import Recipe
from searchgym.util.config_schema import ConfigError

DONE = "done"


# What each launcher variable may hold. A malformed one used to count silently as 1 process / rank 0 (every
# process then trained alone and wrote the same files) or end in a traceback minutes later; now it is one
# line at load (`searchgym.config.ConfigError`: exit 2), before any run folder or process group exists.
_LAUNCHER = "torchrun and accelerate launch set it; unset it to train in one process"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    # Digits only: int() would also take "+1", "1_0" or "١", which no launcher writes.
    if not re.fullmatch(r"[0-9]+", raw.strip()):
        raise ConfigError(f"{name}={raw!r:.40} in the environment is not allowed: it must be an integer >= "
                          f"{1 if name == 'WORLD_SIZE' else 0} ({_LAUNCHER})")
    return int(raw.strip())


def rank_env() -> tuple[int, int, int]:
    """(WORLD_SIZE, RANK, LOCAL_RANK) as torchrun and accelerate launch set them (1, 0, 0 when unset), checked:
    a non-integer, a negative value, WORLD_SIZE 0 or a rank outside 0..WORLD_SIZE-1 is a `ConfigError`
    naming the variable and what it may be."""
    world = _env_int("WORLD_SIZE", 1)
    if world < 1:
        raise ConfigError(f"WORLD_SIZE=0 in the environment is not allowed: it must be an integer >= 1 "
                          f"({_LAUNCHER})")
    ranks = []
    for name in ("RANK", "LOCAL_RANK"):
        value = _env_int(name, 0)
        if value >= world:
            raise ConfigError(f"{name}={value} in the environment is not allowed with WORLD_SIZE={world}: it must "
                              f"be in 0..{world - 1} ({_LAUNCHER})")
        ranks.append(value)
    return world, ranks[0], ranks[1]


def world_size() -> int:
    """Processes in this training (``WORLD_SIZE``, set by torchrun and accelerate launch; 1 otherwise).
    Raises `ConfigError` on a malformed launcher variable (`rank_env`): `train_command` reads it first."""
    return rank_env()[0]


def local_rank() -> int:
    """This process's GPU on its machine (``LOCAL_RANK``; 0 otherwise)."""
    return rank_env()[2]


def init_distributed() -> None:
    """Join the launcher's process group before any stage runs (rank 0 picks the run folder and builds the
    demos while the others wait on a barrier, so the group must exist before the first Trainer would make it;
    accelerate and the Trainer then use this one). No-op for one process."""
    if world_size() > 1:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(local_rank())
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def single_process_warning() -> str | None:
    """What to tell a user whose launcher meant several processes but started one: ``accelerate launch --cpu
    --num_processes N`` runs the script once, without RANK/WORLD_SIZE (it expects mpirun for multi-CPU), and
    only its MASTER_ADDR/ACCELERATE_USE_CPU give it away (docs/scale.md)."""
    if world_size() == 1 and os.environ.get("MASTER_ADDR") and os.environ.get("ACCELERATE_USE_CPU", "").lower() \
            in ("true", "1"):
        return ("accelerate launch --cpu started ONE process (it runs several CPU processes only through mpirun); "
                "this run trains alone. For several CPU processes use: torchrun --nproc_per_node N -m "
                "searchgym.cli train RECIPE (docs/scale.md)")
    return None


def rank() -> int:
    """This process's rank (``RANK``; 0 otherwise), checked like every launcher variable (`rank_env`)."""
    return rank_env()[1]


def _distributed() -> bool:
    if world_size() > 1:
        import torch.distributed as dist

        return dist.is_available() and dist.is_initialized()
    return False


def barrier() -> None:
    if _distributed():
        import torch.distributed as dist

        dist.barrier()


@contextlib.contextmanager
def main_first(what: str = "preparing files for the other ranks"):
    """Rank 0 runs the block first (builds and writes files), then the other ranks run it (and find the files
    there to read). One process: just the block.

    If rank 0 fails inside, the other ranks must not wait for it forever (a plain barrier would: a launcher
    other than torchrun does not kill them, and gloo waits 30 minutes): rank 0 tells them, and they stop with
    "rank 0 failed while <what>" while rank 0 raises its own error. ``what`` says what the block does.
    """
    if not _distributed():
        yield
        return
    import torch.distributed as dist

    if rank() == 0:
        try:
            yield
        except Exception as e:  # not KeyboardInterrupt: on Ctrl-C the launcher stops every rank itself
            first_line = (str(e).splitlines() or [""])[0][:300]
            dist.broadcast_object_list([f"{type(e).__name__}: {first_line}"], src=0)
            raise
        dist.broadcast_object_list([None], src=0)
        return
    box: list = [None]
    dist.broadcast_object_list(box, src=0)  # waits for rank 0's block, and hears how it ended
    if box[0] is not None:
        raise RuntimeError(f"rank 0 failed while {what} ({box[0]}); see its log")
    yield


def precision(recipe: Recipe) -> dict:
    """The device and precision flags of every stage's Trainer config: CPU without a GPU, bf16 on a GPU when
    ``model.dtype = "bfloat16"`` (the dtype the model was loaded in; fp32 otherwise)."""
    import torch

    cuda = torch.cuda.is_available()
    return {"use_cpu": not cuda, "bf16": cuda and recipe.model.dtype == "bfloat16"}


def trainer_args(recipe: Recipe) -> dict:
    """Keyword arguments every stage's Trainer config shares: device, precision, trackers, seed (the one place
    they are set; ``report_to`` given as one string counts as a list of it, as the recipe check reads it)."""
    report_to = [recipe.report_to] if isinstance(recipe.report_to, str) else list(recipe.report_to)
    return {**precision(recipe), "report_to": report_to or "none", "seed": recipe.seed}


@dataclasses.dataclass
class TrainContext:
    recipe: Recipe
    run_dir: Path
    resume: bool = False
    progress: bool = True
    stage: str = ""
    model: object = None  # the current model (the base, then each stage's result)
    tokenizer: object = None
    base_alias: str | None = None  # adapters record the alias's cache folder as their base (see save_adapter)

    # ---- device, precision, ranks ---------------------------------------------------------------------

    @property
    def device(self) -> str:
        import torch

        if not torch.cuda.is_available():
            return "cpu"
        return f"cuda:{local_rank()}" if world_size() > 1 else "cuda"

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.recipe.model.dtype)

    @property
    def is_main(self) -> bool:
        return rank() == 0

    def barrier(self) -> None:
        barrier()

    def main_first(self, what: str = "preparing files for the other ranks"):
        """Rank 0 runs the block first, the others after it; a failure of rank 0 stops every rank
        (module-level `main_first`)."""
        return main_first(what)

    def trainer_args(self) -> dict:
        """Keyword arguments every stage's Trainer config shares: device, precision, trackers, seed."""
        return trainer_args(self.recipe)

    # ---- folders, resume, metrics ---------------------------------------------------------------------

    @property
    def run(self):
        """The run folder's layout (`searchgym.runs.RunFolder`)."""
        from searchgym.runs import RunFolder

        return RunFolder(self.run_dir)

    @property
    def stage_dir(self) -> Path:
        return self.run.stage_dir(self.stage)

    def checkpoint_dir(self) -> Path:
        return self.run.checkpoints(self.stage)

    def resume_checkpoint(self) -> Path | None:
        """On ``--resume``, the stage's latest ``checkpoint-<step>`` (None: start the stage afresh); the metrics
        rows it logged after that step are dropped, because they are about to be trained and logged again."""
        if not self.resume:
            return None
        from searchgym.runs import checkpoint_step

        checkpoint = latest_checkpoint(self.checkpoint_dir())
        if self.is_main:
            self.run.trim_metrics(self.stage, checkpoint_step(checkpoint))
        barrier()
        return checkpoint

    def log(self, row: dict) -> None:
        """One metrics.jsonl row for this stage (rank 0 only)."""
        if self.is_main:
            self.run.append_metrics({"stage": self.stage, **row})

    def metrics_logger(self):
        """The TrainerCallback that appends every trainer log to metrics.jsonl (it writes on rank 0 only)."""
        from searchgym.runs import MetricsLogger

        return MetricsLogger(self.run_dir, self.stage)

    def attach(self, trainer, *, probes: bool = True) -> None:
        """The readable progress line instead of the Trainer's raw dicts, (rank 0, ``dose.every`` > 0) policy
        snapshots for dose curves (`searchgym.train.dose`), and (rank 0, ``meters.every`` > 0) the live
        diversity probes with their collapse alarms."""
        from searchgym.train.progress import use_readable_progress

        use_readable_progress(trainer, self.stage)
        if self.recipe.dose.every and self.is_main:
            from searchgym.train.dose import DoseSnapshots

            def snapshot(model, parent: Path) -> Path:
                # Only the policy: TRL's frozen reference copy ("ref", with beta > 0) is a training device.
                return self.save_weights(model, parent, adapters=["default"])

            trainer.add_callback(DoseSnapshots(self.run_dir, self.stage, self.recipe.dose.every, snapshot))
        if probes and self.is_main:
            from searchgym.train.probes import make_diversity_callback

            if (meters := make_diversity_callback(self.recipe, self.run_dir, self.tokenizer,
                                                  stage=self.stage)) is not None:
                # A checkpoint is a collective step under DDP: one asked for by rank 0 alone would hang the
                # others, so with several processes alarms are logged and warned but save nothing.
                meters.save_on_alarm = meters.save_on_alarm and world_size() == 1
                meters.attach(trainer)

    # ---- the trained weights (searchgym.train.weights) ---------------------------------------------------

    def trainable(self, model):
        """``model`` with what the recipe trains switched on: a LoRA adapter (new, or the previous stage's
        continued) or, with ``model.finetune = "full"``, every parameter (`searchgym.train.weights.trainable`)."""
        from searchgym.train.weights import trainable

        return trainable(model, self.recipe)

    def save_weights(self, model, parent: Path, adapters: list[str] | None = None) -> Path:
        """Save the policy as ``parent/adapter`` (LoRA; only ``adapters``, default all) or ``parent/model``
        (full, with the tokenizer); returns the folder."""
        from searchgym.train.weights import save_weights

        return save_weights(model, parent, self.recipe, tokenizer=self.tokenizer, base_alias=self.base_alias,
                            adapters=adapters)

    def load_weights(self, model, parent: Path):
        """The policy `save_weights` saved under ``parent``, trainable, to continue from."""
        from searchgym.train.weights import load_weights

        return load_weights(model, parent, self.recipe, dtype=self.dtype, device=self.device)


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The ``checkpoint-<step>`` folder with the highest step, or None.

    >>> latest_checkpoint("/nonexistent") is None
    True
    """
    folder = Path(folder)
    steps = [(int(p.name.split("-")[1]), p) for p in folder.glob("checkpoint-*") if p.name.split("-")[1].isdigit()]
    return max(steps)[1] if steps else None
