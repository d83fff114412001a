"""Run folders: where every training/eval run writes its recipe, metrics, adapter and trajectories.

``runs/<recipe>-<timestamp>/`` by default (``--out`` to choose). `RunFolder` owns the layout (which file is
where) and its writes, all atomic (`atomic_write`: a temp file renamed into place) except the one-line appends
to ``metrics.jsonl``; training, the study and the prior lab ask it for paths instead of assembling them.
`MetricsLogger` is the one
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

from searchgym.util.config_schema import ConfigError
from searchgym.util.files import atomic_write

__all__ = ["LOCK_FILE", "RUNS_DIR", "RunFolder", "RunLocked", "append_metrics",
           "checkpoint_step", "jsonable", "namespaced", "new_run_dir", "parse_rung", "read_metrics", "rung_name",
           "run_lock", "save_pretrained_atomic", "trim_metrics", "write_text"]

RUNS_DIR = Path("runs")
LOCK_FILE = ".lock"
_HELD: set[Path] = set()  # run folders this process has locked


class RunLocked(ConfigError):
    """Another process is writing the run folder (the CLI reports it like a bad config: one line, exit 2)."""


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


def jsonable(x):
    """A value as strict JSON takes it: NaN and infinities as null, numpy scalars as Python numbers, tuples
    as lists (what every JSON file of a run holds: jq and JavaScript refuse NaN).

    >>> import numpy as np
    >>> jsonable({"a": float("nan"), "b": (np.float32(0.5), np.int64(2), np.bool_(True))})
    {'a': None, 'b': [0.5, 2, True]}
    """
    import math

    import numpy as np

    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def rung_name(stage: str, step: int) -> str:
    """A dose rung's folder name: the stage and its optimizer step.

    >>> rung_name("grpo", 40), parse_rung("grpo-40"), parse_rung("checkpoint-3x")
    ('grpo-40', ('grpo', 40), None)
    """
    return f"{stage}-{int(step)}"


def parse_rung(name: str) -> tuple[str, int] | None:
    """``(stage, step)`` of a rung folder name, None for anything else."""
    stage, _, step = name.rpartition("-")
    return (stage, int(step)) if stage and step.isdigit() else None


def write_text(run_dir: str | Path, name: str, text: str) -> Path:
    path = Path(run_dir) / name
    atomic_write(path, text.encode("utf-8"))
    return path


def save_pretrained_atomic(model, tokenizer, target: str | Path) -> Path:
    """``save_pretrained`` (model and tokenizer) into a temp folder next to ``target``, then rename: never a
    half-written model folder."""
    import shutil
    import tempfile

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.chmod(0o755)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


class RunFolder:
    """One run folder: its layout and its (atomic) writes.

    ::

        recipe.toml                      the resolved recipe, written first
        metrics.jsonl                    one JSON row per trainer log, probe, eval (append-only)
        demos/                           SFT demonstration sets
        stages/<stage>/adapter, done     each finished stage's LoRA adapter (``stages/<stage>/model`` with
                                         ``model.finetune = "full"``, `searchgym.train.weights`) and its marker
        stages/pretrain/model            a prior-lab base model (``stage_model``)
        checkpoints/<stage>/checkpoint-N Trainer checkpoints (``--resume`` continues from the latest)
        adapter/ (or model/)             the final adapter, or the whole model after full-parameter training
                                         (`searchgym.agent.models.load_model(run)` loads either)
        trajectories.jsonl, eval.json, summary.md, baseline/trajectories.jsonl   the held-out evaluation
        dose/<stage>-<step>/adapter      snapshots along training (``dose.every``; ``…/model`` when full); a study adds each rung's
        dose/<stage>-<step>/dose.json    trajectories.jsonl and dose.json (`searchgym.study.dose`)
        done.json                        a study run's marker, written last

    >>> run = RunFolder("runs/x")
    >>> run.stage_adapter("sft").as_posix(), run.checkpoints("grpo").as_posix(), run.trajectories("base").as_posix()
    ('runs/x/stages/sft/adapter', 'runs/x/checkpoints/grpo', 'runs/x/baseline/trajectories.jsonl')
    """

    RECIPE, METRICS, SUMMARY, EVAL = "recipe.toml", "metrics.jsonl", "summary.md", "eval.json"
    TRAJECTORIES, BASELINE, ADAPTER, DEMOS = "trajectories.jsonl", "baseline", "adapter", "demos"
    STAGE_DONE, RUN_DONE, DOSE = "done", "done.json", "dose"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @classmethod
    def create(cls, name: str, out: str | Path | None = None) -> RunFolder:
        """``out``, or a new ``runs/<name>-<timestamp>``; made if missing."""
        return cls(new_run_dir(name, out))

    @classmethod
    def latest(cls, name: str, runs_dir: str | Path | None = None) -> RunFolder | None:
        """The newest ``runs/<name>-<timestamp>`` folder (timestamps sort as text), or None.

        >>> RunFolder.latest("no-such-recipe", "/nonexistent") is None
        True
        """
        root, prefix = Path(runs_dir) if runs_dir else RUNS_DIR, f"{name}-"
        if not root.is_dir():
            return None
        # A prefix test, not a glob: a name holding "*" or "[" must not match other recipes' runs.
        runs = sorted(p for p in root.iterdir()
                      if p.name.startswith(prefix) and p.name[len(prefix):][:1].isdigit() and p.is_dir())
        return cls(runs[-1]) if runs else None

    # ---- layout ------------------------------------------------------------------------------------------

    @property
    def recipe_file(self) -> Path:
        return self.path / self.RECIPE

    @property
    def metrics_file(self) -> Path:
        return self.path / self.METRICS

    @property
    def adapter(self) -> Path:
        return self.path / self.ADAPTER

    @property
    def demos(self) -> Path:
        return self.path / self.DEMOS

    def stage_dir(self, stage: str) -> Path:
        return self.path / "stages" / stage

    def stage_adapter(self, stage: str) -> Path:
        return self.stage_dir(stage) / self.ADAPTER

    def stage_model(self, stage: str) -> Path:
        """Where a stage that builds the base model (pretrain) saves it."""
        return self.stage_dir(stage) / "model"

    def checkpoints(self, stage: str) -> Path:
        return self.path / "checkpoints" / stage

    def dose_dir(self, rung: str = "") -> Path:
        """``dose/`` or one rung's folder in it, ``dose/<stage>-<step>`` (`rung_name`)."""
        return self.path / self.DOSE / rung if rung else self.path / self.DOSE

    def eval_dir(self, label: str = "trained") -> Path:
        """The trained model's evaluation lands in the folder itself, the base model's in ``baseline/``."""
        return self.path / self.BASELINE if label == "base" else self.path

    def trajectories(self, label: str = "trained") -> Path:
        return self.eval_dir(label) / self.TRAJECTORIES

    # ---- markers -----------------------------------------------------------------------------------------

    def stage_done(self, stage: str) -> bool:
        return (self.stage_dir(stage) / self.STAGE_DONE).exists()

    def mark_stage_done(self, stage: str) -> None:
        self.write_text(f"stages/{stage}/{self.STAGE_DONE}", "")

    def finished_stages(self) -> list[str]:
        return sorted(p.parent.name for p in self.path.glob(f"stages/*/{self.STAGE_DONE}"))

    def is_done(self, marker_only: bool = False) -> bool:
        """A finished study run: its ``done.json`` and its trajectories (the marker is written last)."""
        return (self.path / self.RUN_DONE).is_file() and (marker_only or self.trajectories().is_file())

    def mark_done(self, marker: dict) -> None:
        self.write_json(self.RUN_DONE, marker)

    # ---- writes ------------------------------------------------------------------------------------------

    def write_text(self, name: str, text: str) -> Path:
        return write_text(self.path, name, text)

    def write_json(self, name: str, data) -> Path:
        path = self.path / name
        atomic_write(path, json.dumps(data, indent=2, default=float).encode("utf-8"))
        return path

    def append_metrics(self, row: dict) -> None:
        append_metrics(self.path, row)

    def read_metrics(self) -> list[dict]:
        return read_metrics(self.path)

    def trim_metrics(self, stage: str, step: int) -> int:
        return trim_metrics(self.path, stage, step)

    def lock(self):
        """`run_lock` on this folder (a second process writing it stops with `RunLocked`)."""
        return run_lock(self.path)
