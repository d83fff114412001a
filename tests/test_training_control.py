"""The training-level positive control (`searchgym.calibration.control`) at its tiny size: narrow SFT through
the real `train_command` on the shipped prior must lower strategy entropy by more than the MDE, so a broken
training path (adapter not trained, not saved or not applied in the eval) fails here instead of passing as
"no effect". About a minute on one core (docs/calibration.md)."""

from __future__ import annotations

import json
import math

import pytest

from searchgym.calibration.control import SIZES, entropy_drop, paired_mde, strategy_key, training_control
from searchgym.meters.families import example


def test_mde_is_2_8_standard_errors():
    assert paired_mde(-0.196, 0.196) == pytest.approx(0.28, abs=1e-3)
    assert paired_mde(0.0, 0.0) == 0.0


def test_no_drop_when_nothing_changed():
    """Identical evaluations: drop 0, CI [0, 0], so a control with an untrained adapter is not detected."""
    base = [example(task_id=q, sample=s, strategy=st) for q in "abcdef"
            for s, st in enumerate(["forward", "snippet", "parallel", "forward"])]
    r = entropy_drop(base, base)
    assert r["drop"] == r["lo"] == r["hi"] == 0.0 and not (r["lo"] > 0)
    assert r["key"] == strategy_key() and r["questions"] == 6 and r["n"] == 4


def test_sizes_are_data():
    assert set(SIZES) == {"tiny", "full"}
    assert all(isinstance(o, str) and "=" in o for overrides in SIZES.values() for o in overrides)


def test_tiny_control_detects_the_drop(tmp_path, one_thread):
    result = training_control("tiny", out=tmp_path / "run", progress=False)
    json.dumps(result)  # JSON-ready

    # Something real happened: SFT moved the LoRA B matrices off their zero init, the run trained the
    # dose's steps, and the trained policy samples the demonstrated strategy more often than its base.
    assert result["adapter_lora_b_max"] > 0
    assert result["steps"] > 0
    assert result["trained_forward_share"] > result["base_forward_share"] + 0.1
    assert result["trained_entropy"] < result["base_entropy"]

    # The drop is detected: the paired CI excludes 0 and the drop exceeds the MDE of that rule.
    drop, lo, hi, mde = (result[f"training_control_{k}"] for k in ("drop", "drop_lo", "drop_hi", "mde"))
    assert all(math.isfinite(x) for x in (drop, lo, hi, mde))
    assert lo > 0 and drop > mde, result
    assert result["training_control_detected"] is True
    assert result["questions"] >= 10 and result["n"] >= 4
    assert (tmp_path / "run" / "trajectories.jsonl").is_file()
    assert (tmp_path / "run" / "baseline" / "trajectories.jsonl").is_file()
