"""Tracker backends (the `trackers` extra): a smoke SFT with report_to = ["tensorboard"] writes an event file."""

from pathlib import Path

import pytest

from searchgym.train import train_command

RECIPE = str(Path(__file__).resolve().parents[1] / "agents" / "smoke-sft.toml")


def test_tensorboard_backend_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard", reason="the trackers extra is not installed: pip install -e '.[trackers]'")
    run = train_command(RECIPE, overrides=['report_to=["tensorboard"]', "eval.questions=1", "eval.samples=1",
                                           "eval.baseline=false"], out=tmp_path / "run", progress=False)
    events = list(run.rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
