"""Snapshots along training: the policy every ``dose.every`` optimizer steps, for dose curves.

A method is compared at the doses it reached, not only at the end (docs/dose.md): with ``dose.every = d``
each training stage after the base (SFT, GRPO, RFT, any registered one that calls ``ctx.attach``) saves its
policy at steps d, 2d, 3d, ... and at its last step into ``dose/<stage>-<step>/adapter`` of the run folder
(``…/model`` with ``model.finetune = "full"``, `searchgym.train.weights`), with a
``snapshot.json`` (stage, step, the stage's step count). A study then evaluates the rungs it names
(`searchgym.study.dose`) exactly like the final model. Snapshots are written by rank 0, atomically (a
temp folder renamed into place), so a crash never leaves half a policy behind.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from transformers import TrainerCallback

from searchgym.runs import RunFolder, rung_name
from searchgym.util.files import atomic_write

SNAPSHOT = "snapshot.json"


def snapshot_due(step: int, every: int) -> bool:
    """Whether optimizer step ``step`` is on the snapshot grid (the stage's last step is saved separately).

    >>> [s for s in range(1, 11) if snapshot_due(s, 4)], snapshot_due(3, 0)
    ([4, 8], False)
    """
    return every > 0 and step > 0 and step % every == 0


class DoseSnapshots(TrainerCallback):
    """Save the trained policy (LoRA: the "default" adapter) on the snapshot grid and at the end of the stage."""

    def __init__(self, run_dir: str | Path, stage: str, every: int, save_policy: Callable[[object, Path], Path]):
        # save_policy(model, parent) -> its folder: the context's, so snapshots load like the run's own policy
        self.run, self.stage, self.every, self.save_policy = RunFolder(run_dir), stage, every, save_policy

    def save(self, model, step: int, max_steps: int) -> Path:
        folder = self.run.dose_dir(rung_name(self.stage, step))
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.save_policy(model, tmp)
        atomic_write(tmp / SNAPSHOT, json.dumps({"stage": self.stage, "stage_step": step,
                                                 "stage_steps": max_steps}).encode("utf-8"))
        folder.mkdir(parents=True, exist_ok=True)
        for item in tmp.iterdir():
            if (folder / item.name).is_dir():  # a resumed stage saves the steps after its checkpoint again
                shutil.rmtree(folder / item.name)
            item.rename(folder / item.name)
        tmp.rmdir()
        return folder

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and snapshot_due(state.global_step, self.every) \
                and state.global_step < state.max_steps:
            self.save(model, state.global_step, state.max_steps)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        # The stage's last step is always a rung: the point its curve ends on.
        if state.is_world_process_zero and state.global_step > 0:
            self.save(model, state.global_step, state.global_step)
