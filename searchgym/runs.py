"""Run folders: where every training/eval run writes its recipe, metrics, adapter and trajectories.

``runs/<recipe>-<timestamp>/`` by default (``--out`` to choose). `MetricsLogger` is the one
`transformers.TrainerCallback` that appends every trainer log (SFT and GRPO alike) to
``metrics.jsonl``, with its step, namespaced as ``train/<key>`` unless already namespaced.
`run_lock` keeps a second process out of a folder a training is writing; `trim_metrics` drops the rows a
resumed stage is about to log again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

from searchgym.corpus.documents import atomic_write
from searchgym.recipe import RecipeError

RUNS_DIR = Path("runs")
LOCK_FILE = ".lock"
_HELD: set[Path] = set()  # run folders this process has locked


class RunLocked(RecipeError):
    """Another process is writing the run folder (the CLI reports it like a bad recipe: one line, exit 2)."""


def new_run_dir(name: str, out: str | Path | None = None) -> Path:
    """Create (or reuse, when ``out`` is given) a run folder."""
    path = Path(out) if out else RUNS_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def run_lock(run_dir: str | Path):
    """Hold ``run_dir``'s lock for the block, or raise `RunLocked` at once if another process holds it.

    Two trainings into one folder would interleave ``metrics.jsonl`` and overwrite each other's checkpoints.
    The lock is an ``flock`` on ``<run_dir>/.lock``: the kernel drops it when the process exits, however it
    dies (kill -9 included), so a crash never leaves a stale lock. flock conflicts between two opens of the
    file even within one process, so a folder this process already holds is entered again without locking.
    """
    folder = Path(run_dir).resolve()
    if folder in _HELD:
        yield folder
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise RunLocked(f"{run_dir} is in use by another process (pid {holder}); wait for it to finish, "
                            "or pass --out NEW_FOLDER") from None
        f.truncate(0)
        f.write(f"{os.getpid()}\n")  # for the message above; the lock itself is the flock
        f.flush()
        _HELD.add(folder)
        try:
            yield folder
        finally:
            _HELD.discard(folder)  # closing the file releases the flock


def append_metrics(run_dir: str | Path, row: dict) -> None:
    """Append one JSON line to ``metrics.jsonl`` (one small write: a crash loses at most this line)."""
    with open(Path(run_dir) / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=float) + "\n")


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a crash: skip it, keep the rest
            continue
    return rows


def checkpoint_step(checkpoint: str | Path | None) -> int:
    """The optimizer step of a Trainer ``checkpoint-<step>`` folder (0 for none: a stage starting over).

    >>> checkpoint_step("runs/x/checkpoints/grpo/checkpoint-25"), checkpoint_step(None)
    (25, 0)
    """
    if checkpoint is None:
        return 0
    step = Path(checkpoint).name.rpartition("-")[2]
    return int(step) if step.isdigit() else 0


def trim_metrics(run_dir: str | Path, stage: str, step: int) -> int:
    """Drop ``stage``'s rows logged after ``step``, and lines a crash cut short; return how many went.

    A stage resumed from its checkpoint at ``step`` logs the steps after it again: without this, a run
    killed between checkpoints would show those steps twice. Other stages' rows are kept as they are.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return 0
    kept = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        later = isinstance(row, dict) and row.get("stage") == stage and isinstance(row.get("step"), int | float) \
            and row["step"] > step
        if not later:
            kept.append(line)
    if len(kept) < len(lines):
        atomic_write(path, "".join(line + "\n" for line in kept).encode("utf-8"))
    return len(lines) - len(kept)


def namespaced(logs: dict, default: str = "train") -> dict:
    """``{"loss": 1}`` -> ``{"train/loss": 1}``; keys that already have a namespace are kept.

    >>> namespaced({"loss": 1.0, "diversity/vendi": 2.0, "epoch": 0.5})
    {'train/loss': 1.0, 'diversity/vendi': 2.0, 'train/epoch': 0.5}
    """
    return {(k if "/" in k else f"{default}/{k}"): v for k, v in logs.items()}


def _metrics_logger_class():
    from transformers import TrainerCallback

    class MetricsLogger(TrainerCallback):
        """Append every ``on_log`` dict to ``<run_dir>/metrics.jsonl`` with the stage and global step."""

        def __init__(self, run_dir: str | Path, stage: str):
            self.run_dir, self.stage = Path(run_dir), stage

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and state.is_world_process_zero:
                append_metrics(self.run_dir, {"stage": self.stage, "step": state.global_step,
                                              "time": time.time(), **namespaced(logs)})

    return MetricsLogger


def __getattr__(name: str):
    # `MetricsLogger` subclasses transformers' TrainerCallback; building it lazily keeps
    # `import searchgym.runs` (used by `searchgym report`) free of the multi-second transformers import.
    if name == "MetricsLogger":
        cls = _metrics_logger_class()
        globals()["MetricsLogger"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def write_text(run_dir: str | Path, name: str, text: str) -> Path:
    path = Path(run_dir) / name
    atomic_write(path, text.encode("utf-8"))
    return path
