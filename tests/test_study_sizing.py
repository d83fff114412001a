"""Issue #14.11: a study is sized from the command line (--arms, --seeds), its --set overrides come last
(or are refused, saying why), and the shipped study has a `tiny` preset."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from test_study import RECIPES, STUDY, FakeRuns
from typer.testing import CliRunner

from searchgym.cli import app
from searchgym.study import runner as study_mod
from searchgym.study.runner import resolve, run_study
from searchgym.study.spec import StudyError, load_study

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def study_file(tmp_path) -> Path:
    for name, text in RECIPES.items():
        (tmp_path / name).write_text(text)
    path = tmp_path / "study.toml"
    path.write_text(STUDY)
    return path


def test_set_overrides_apply_after_the_studys_eval_and_overrides(study_file):
    study = load_study(study_file, overrides=["eval.questions=2", "sft.num_questions=5", "model.base=tiny"])
    recipes = resolve(study)
    assert {(r.eval.questions, r.sft.num_questions, r.model.base) for r in recipes.values()} == {(2, 5, "tiny")}
    assert study.to_dict()["overrides"][-3:] == ["eval.questions=2", "sft.num_questions=5", "model.base=tiny"]


@pytest.mark.parametrize("override, why", [("seed=3", "use --seeds"), ("eval.baseline=true", "baseline"),
                                           ("stages=[\"sft\"]", "--arms")])
def test_what_the_study_pins_is_refused_saying_so(study_file, override, why):
    with pytest.raises(StudyError, match=f"--set {re.escape(repr(override))}: a study pins .*{why}"):
        load_study(study_file, overrides=[override])


def test_model_base_is_refused_when_the_study_pretrains_a_prior(study_file, tmp_path):
    (tmp_path / "prior.toml").write_text('stages = ["pretrain"]\n')
    study_file.write_text(study_file.read_text().replace('name = "mini"', 'name = "mini"\nprior = "prior.toml"'))
    with pytest.raises(StudyError, match="pretrains a prior .* every arm's model.base"):
        load_study(study_file, overrides=["model.base=tiny"])


def test_arms_and_seeds_from_the_command_line(study_file, tmp_path, monkeypatch):
    study = load_study(study_file, arms=["grpo", "base"], seeds=[7])
    assert [(r.arm, r.seed) for r in study.runs()] == [("grpo", 7), ("base", 7)]
    with pytest.raises(StudyError, match="--arms: .* has no arm 'nope'; its arms: \\['base'"):
        load_study(study_file, arms=["nope"])
    fake = FakeRuns()
    monkeypatch.setattr(study_mod, "_train", fake)
    monkeypatch.setattr(study_mod, "_evaluate_base", fake)
    out = tmp_path / "s"
    result = CliRunner().invoke(app, ["experiment", str(study_file), "--arms", "base,grpo", "--seeds", "0,1",
                                      "--set", "eval.questions=1", "--out", str(out), "--no-report"])
    assert result.exit_code == 0, result.output
    assert fake.calls == [("base", 0, False), ("base", 1, False), ("grpo", 0, True), ("grpo", 1, True)]
    # a subset of a finished study runs (nothing new here) and adding an arm keeps the earlier ones
    run_study(load_study(study_file, overrides=["eval.questions=1"], arms=["base"], seeds=[1]), out, train=fake,
              evaluate=fake, log=lambda _: None)
    run_study(load_study(study_file, overrides=["eval.questions=1"], arms=["diverse"], seeds=[0]), out, train=fake,
              evaluate=fake, log=lambda _: None)
    assert fake.calls[4:] == [("diverse", 0, True)]
    claimed = tomllib.loads((out / "study.toml").read_text())
    assert set(claimed["arms"]) == {"base", "grpo", "diverse"} and claimed["arms"]["grpo"]["seeds"] == [0, 1]
    bad = CliRunner().invoke(app, ["experiment", str(study_file), "--seeds", "0,x", "--out", str(out)])
    assert bad.exit_code == 2 and "--seeds '0,x': give a comma-separated list of ints" in bad.output


def test_the_shipped_study_has_a_tiny_preset_on_the_tiny_model():
    study = load_study(REPO / "agents" / "breadth-study.toml", preset="tiny")
    assert study.prior is None and {a.name for a in study.arms} >= {"base", "sft-diverse", "grpo"}
    recipes = resolve(study)
    assert {r.model.base for r in recipes.values()} == {"tiny"}
    assert max(r.eval.questions * r.eval.samples for r in recipes.values()) <= 8
