"""`searchgym meter`'s literature additions: the base-vs-arm line (Yue et al. 2025's coverage keys) and the
support meters (NLL of an arm's trajectories under the base model, agent tokens only)."""

from __future__ import annotations

import json

import pytest

from searchgym.meters.cli import meter_command
from searchgym.meters.coverage import compare_with_base
from searchgym.trajectory import Trajectory, write_trajectories


def traj(task_id: str, sample: int, correct: bool, messages: list[dict] | None = None) -> Trajectory:
    return Trajectory(task_id=task_id, env_id="searchgym/Test-v0", sample=sample, question=f"question {task_id}?",
                      messages=messages or [], calls=[{"name": "answer", "arguments": {}, "valid": True}],
                      signature="A", strategy="direct", queries=[], docs_retrieved=[], docs_opened=[], answer="x",
                      reward=float(correct), correct=correct, gold_answers=["x"], evidence=[["d1"]], difficulty=1)


# ---- the base-vs-arm line ----------------------------------------------------------------------------

def test_meter_prints_and_writes_the_base_vs_arm_coverage_keys(tmp_path, capsys):
    # Correct counts out of n = 4: the base solves q1, q2, q3 at k = 4; the arm solves q1 often, q4 once.
    base_counts = {"q1": 1, "q2": 2, "q3": 1, "q4": 0}
    arm_counts = {"q1": 4, "q2": 0, "q3": 0, "q4": 1}
    for name, counts in (("base", base_counts), ("arm", arm_counts)):
        write_trajectories(tmp_path / f"{name}.jsonl",
                           [traj(q, i, i < c) for q, c in counts.items() for i in range(4)])

    meter_command([tmp_path / "base.jsonl", tmp_path / "arm.jsonl"], out=tmp_path / "m.json", n_boot=100)

    vs_base = json.loads((tmp_path / "m.json").read_text())["comparisons"][0]["vs_base"]
    expected = compare_with_base(base_counts, arm_counts, n=4, n_boot=100)
    assert vs_base == pytest.approx(expected, nan_ok=True)
    assert vs_base["coverage/inclusion"] == 0.5  # of the arm's {q1, q4}, the base also solves q1
    assert vs_base["coverage/new"] == 0.25 and vs_base["coverage/lost"] == 0.5
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("arm vs base:")]
    assert len(lines) == 1 and len(lines[0]) <= 80
    assert "inclusion 0.5, new 0.25, lost 0.5" in lines[0] and "ΔSE" in lines[0] and "crossing k" in lines[0]
