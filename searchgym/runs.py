"""Run folders: where every training/eval run writes its recipe, metrics, adapter and trajectories.

``runs/<recipe>-<timestamp>/`` by default (``--out`` to choose). `MetricsLogger` is the one
`transformers.TrainerCallback` that appends every trainer log (SFT and GRPO alike) to
``metrics.jsonl``, with its step, namespaced as ``train/<key>`` unless already namespaced.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from searchgym.corpus.documents import atomic_write

RUNS_DIR = Path("runs")


def new_run_dir(name: str, out: str | Path | None = None) -> Path:
    """Create (or reuse, when ``out`` is given) a run folder."""
    path = Path(out) if out else RUNS_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path.mkdir(parents=True, exist_ok=True)
    return path


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
