"""Dose rungs: snapshots saved along real training, each rung evaluated like the final model with its KL from
the base, a study's [dose] table checked at load, rungs added to a finished study evaluated alone, and
`searchgym experiment --jobs 2` running real runs in two worker processes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from searchgym.cli import app
from searchgym.study import runner as study_mod
from searchgym.study.dose import read_rung
from searchgym.study.runner import run_study
from searchgym.study.spec import DoseTable, load_study
from searchgym.trajectory import read_trajectories
from searchgym.util.config_schema import ConfigError

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "agents" / "breadth-study.toml"


def _study_file(tmp_path: Path, dose: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(f'seeds = [0]\n[dose]\n{dose}\n[arms.a]\nrecipe = "{REPO / "agents" / "smoke-sft.toml"}"\n')
    return path


@pytest.mark.parametrize("dose, message", [
    ("every = 5\nrungs = [5, 7]", r"rungs \[7\] are not on the snapshot grid"),
    ("rungs = [10]", "needs snapshots to evaluate; set dose.every > 0"),
    ("every = -1", "dose.every must be an integer >= 0"),
    ("every = 2\nrungs = [2, 2]", "must be distinct"),
    ("every = 2\nstep = 3", "dose.step"),
])
def test_the_dose_table_is_checked_at_load(tmp_path, dose, message):
    with pytest.raises(ConfigError, match=message):
        load_study(_study_file(tmp_path, dose))


def test_dose_every_reaches_training_arms_only_and_is_pinned(tmp_path):
    study = load_study(STUDY, preset="tiny")
    runs = {r.arm: r for r in study.runs()}
    assert "dose.every=1" in runs["grpo"].overrides and not any("dose" in o for o in runs["base"].overrides)
    with pytest.raises(ConfigError, match="a study pins dose.every"):
        load_study(STUDY, preset="tiny", overrides=["dose.every=3"])
    out = tmp_path / "out"
    study.dose = DoseTable(every=2, rungs=[2])
    study_mod._claim(out, study)
    study.dose = DoseTable(every=2, rungs=[2, 4])  # more rungs: fine, only they will be evaluated
    study_mod._claim(out, study)
    study.dose = DoseTable(every=3)
    with pytest.raises(ConfigError, match=r"differs in: dose\.every"):
        study_mod._claim(out, study)


def test_jobs_must_be_a_positive_count(tmp_path):
    result = CliRunner().invoke(app, ["experiment", str(STUDY), "--preset", "tiny", "--jobs", "0",
                                      "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--jobs: must be an integer >= 1" in result.output
    assert not (tmp_path / "x").exists()


def test_a_real_study_with_two_jobs_evaluates_every_rung_and_only_new_ones_on_resume(tmp_path, monkeypatch):
    """base + SFT + GRPO on the tiny model, two worker processes: every run saves snapshots, every chosen rung
    gets trajectories and a dose.json; adding a rung later evaluates that rung alone."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "study"
    study = load_study(STUDY, preset="tiny")
    study.dose = DoseTable(every=1, rungs=[1])  # sft: 3 steps, grpo: 2 steps; the last step is always a rung
    lines = []
    run_study(study, out, jobs=2, log=lines.append)
    rungs = {p.parent.relative_to(out).as_posix(): read_rung(p.parent) for p in out.glob("*/seed0/dose/*/dose.json")}
    assert sorted(rungs) == ["base/seed0/dose/base-0", "grpo/seed0/dose/grpo-1", "grpo/seed0/dose/grpo-2",
                             "sft-diverse/seed0/dose/sft-1", "sft-diverse/seed0/dose/sft-3"]
    assert {p.name for p in (out / "logs").iterdir()} == {"base-seed0.log", "sft-diverse-seed0.log", "grpo-seed0.log"}
    base = rungs["base/seed0/dose/base-0"]
    assert base["step"] == 0 and base["kl"]["k3"]["value"] == 0.0 and base["final"]
    sft1, sft3 = rungs["sft-diverse/seed0/dose/sft-1"], rungs["sft-diverse/seed0/dose/sft-3"]
    assert (sft1["step"], sft3["step"], sft3["final"], sft1["final"]) == (1, 3, True, False)
    assert sft3["sft_examples"] == 3 and sft3["tokens"] > sft1["tokens"] > 0
    for record in (sft1, sft3):  # a trained adapter has moved: every estimator sees it, k3 and exact are >= 0
        assert record["kl_tokens"] > 0 and record["kl"]["exact"]["value"] > 0 and record["kl"]["k3"]["value"] > 0
        assert record["questions"] == 2 and record["n"] == 2
        assert set(record["kl_per_question"]["k3"]) == {t.task_id for t in
                                                        read_trajectories(out / "sft-diverse/seed0/trajectories.jsonl")}
        assert math.isfinite(record["meters"]["reward/success"]["value"])
    grpo = rungs["grpo/seed0/dose/grpo-2"]
    assert grpo["grpo_episodes"] == 2 * 2 and grpo["step"] == 2  # 2 steps x batch 2
    # The final rung is the run's own evaluation, not a second sample of it.
    final = out / "sft-diverse/seed0/dose/sft-3/trajectories.jsonl"
    assert final.read_bytes() == (out / "sft-diverse/seed0/trajectories.jsonl").read_bytes()
    from searchgym.report import report_command

    report_command([out], out=out)  # what `searchgym experiment` does after the runs
    assert (out / "report_dose.png").stat().st_size > 10_000 and "Dose and distance" in (out / "report.md").read_text()

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/seed0/dose/*/dose.json")}
    study.dose = DoseTable(every=1, rungs=[1, 2])  # one more rung for the SFT arm: only it is evaluated
    lines.clear()
    run_study(study, out, jobs=1, log=lines.append)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert (out / "sft-diverse/seed0/dose/sft-2/dose.json").is_file()
    assert [line for line in lines if "rung " in line and "KL" in line] == [
        line for line in lines if "sft-2" in line and "KL" in line]


def test_dose_json_is_strict_json(tmp_path):
    """NaN never reaches dose.json: other tools (jq, JavaScript) must read it."""
    from searchgym.study.dose import write_rung

    text = write_rung(tmp_path, {"meters": {"x": {"value": float("nan"), "lo": float("inf")}}}).read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["meters"]["x"] == {"value": None, "lo": None}


def _failing_train(run, recipe, run_dir):
    """A training that dies (module level: the spawned workers import it by name)."""
    raise RuntimeError("out of memory in a worker")


def test_a_failed_parallel_run_is_one_line_and_keeps_the_others(tmp_path, monkeypatch):
    """--jobs 2: one run's failure does not stop the others; the command ends with one line that names the
    failed run and its log, exit 1 (work that ran and failed, not a bad config), no traceback."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(study_mod, "_train", _failing_train)  # pickled by reference into the workers
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["experiment", str(STUDY), "--preset", "tiny", "--arms", "base,grpo",
                                      "--out", str(out), "--jobs", "2"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    line = " ".join(result.output.split())  # rich may wrap the one line in a narrow terminal
    assert "1 of 2 study runs failed" in line and "grpo seed 0: RuntimeError: out of memory in a worker" in line
    assert "logs/grpo-seed0.log" in line and "re-run the same command" in line
    assert (out / "base" / "seed0" / "done.json").is_file() and not (out / "grpo" / "seed0" / "done.json").exists()
    assert (out / "base" / "seed0" / "dose" / "base-0" / "dose.json").is_file()
