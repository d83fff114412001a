"""The study runner's orchestration with training and evaluation replaced by fakes that write tiny run
folders: arm × seed expansion, identical evaluation, skipping finished runs, and crash recovery."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from searchgym.cli import app
from searchgym.study import runner as study_mod
from searchgym.study.runner import is_done, resolve, run_study
from searchgym.study.spec import StudyError, load_study
from searchgym.trajectory import Trajectory, write_trajectories
from searchgym.util.config_schema import to_toml

REPO = Path(__file__).resolve().parents[1]

RECIPES = {
    "sft.toml": 'stages = ["sft"]\n[sft]\ndemos = "diverse"\n[eval]\nsamples = 2\ntemperature = 0.7\n',
    "narrow.toml": 'stages = ["sft"]\n[sft]\ndemos = "narrow"\n',
    "grpo.toml": 'stages = ["grpo"]\n[grpo]\nsteps = 3\n[eval]\nmax_turns = 3\n',
}
STUDY = """
name = "mini"
seeds = [0, 1, 2]
overrides = ["sft.num_questions=8"]
[eval]
questions = 3
samples = 4
temperature = 1.0
[arms.base]
recipe = "sft.toml"
train = false
[arms.narrow]
recipe = "narrow.toml"
[arms.diverse]
recipe = "sft.toml"
[arms.grpo]
recipe = "grpo.toml"
[presets.tiny]
arms = ["base", "grpo"]
seeds = [5]
eval = { samples = 2 }
overrides = ["grpo.steps=1"]
"""


@pytest.fixture
def study_file(tmp_path) -> Path:
    for name, text in RECIPES.items():
        (tmp_path / name).write_text(text)
    path = tmp_path / "study.toml"
    path.write_text(STUDY)
    return path


class FakeRuns:
    """Stands in for train_command / eval_command: writes trajectories at the recipe's eval settings."""

    def __init__(self, crash_at: tuple[str, int] | None = None):
        self.calls: list[tuple[str, int, bool]] = []
        self.crash_at = crash_at

    def __call__(self, run, recipe, run_dir: Path) -> None:
        self.calls.append((run.arm, run.seed, run.train))
        run_dir.mkdir(parents=True)
        (run_dir / "recipe.toml").write_text(recipe.to_toml())
        if (run.arm, run.seed) == self.crash_at:
            (run_dir / "checkpoints").mkdir()  # half-way through training
            raise RuntimeError("killed mid-arm")
        write_trajectories(run_dir / "trajectories.jsonl", [
            Trajectory(f"q{q}", recipe.env.id, i, "?", [], [], "A", "forward", [], [], [], "x",
                       float(i == 0), i == 0, ["x"], [], 1)
            for q in range(recipe.eval.questions) for i in range(recipe.eval.samples)])


def test_arms_times_seeds_with_one_evaluation(study_file):
    study = load_study(study_file)
    runs = study.runs()
    assert [(r.arm, r.seed) for r in runs] == [(a, s) for a in ("base", "narrow", "diverse", "grpo") for s in (0, 1, 2)]
    assert [r.train for r in runs[:4]] == [False, False, False, True]
    recipes = resolve(study)
    evals = {json.dumps(r.eval.__dict__, sort_keys=True) for r in recipes.values()}
    assert len(evals) == 1  # the recipes disagree (samples 2, max_turns 3, temperature 0.7): the study wins
    one = next(iter(recipes.values())).eval
    assert (one.questions, one.samples, one.temperature, one.baseline) == (3, 4, 1.0, False)
    assert [r.seed for r in recipes.values()][:3] == [0, 1, 2]
    assert {r.sft.num_questions for r in recipes.values()} == {8}
    assert [r.sft.demos for run, r in recipes.items() if run.seed == 0][:3] == ["diverse", "narrow", "diverse"]


def test_preset_selects_arms_seeds_and_eval(study_file):
    study = load_study(study_file, preset="tiny", overrides=["grpo.learning_rate=0.5"])
    recipes = resolve(study)
    assert [(r.arm, r.seed) for r in recipes] == [("base", 5), ("grpo", 5)]
    grpo = recipes[study.runs()[1]]
    assert (grpo.grpo.steps, grpo.grpo.learning_rate, grpo.eval.samples, grpo.eval.questions) == (1, 0.5, 2, 3)
    with pytest.raises(StudyError, match="no preset 'huge'"):
        load_study(study_file, preset="huge")


def test_study_name_must_be_a_folder_name(tmp_path):
    """The name picks the default output folder (runs/<name>-<preset>): no path may escape runs/."""
    (tmp_path / "r.toml").write_text('stages = ["sft"]\n')
    for name in ("../../etc", "a/b", ".hidden"):  # ("" falls back to the file name)
        (tmp_path / "s.toml").write_text(f'name = "{name}"\n[arms.a]\nrecipe = "r.toml"\n')
        with pytest.raises(StudyError, match="is not a folder name"):
            load_study(tmp_path / "s.toml")


def test_study_promises_are_checked_before_training(study_file, tmp_path):
    (tmp_path / "grpo.toml").write_text('stages = ["grpo"]\n[env]\nid = "searchgym/SyntheticWorld-v0"\n')
    with pytest.raises(StudyError, match="same questions"):
        resolve(load_study(study_file))
    (tmp_path / "grpo.toml").write_text(RECIPES["grpo.toml"])
    (tmp_path / "narrow.toml").write_text('stages = ["sft"]\n[sft]\ndemos = "narrow"\ndemos_per_question = 5\n')
    with pytest.raises(StudyError, match="information budget.*demos_per_question"):
        resolve(load_study(study_file))
    (tmp_path / "narrow.toml").write_text('stages = ["sft"]\n[sft]\ndemoz = 1\n')
    with pytest.raises(StudyError, match="arm 'narrow'.*unknown key 'sft.demoz'"):
        resolve(load_study(study_file))


def test_resume_skips_finished_runs_and_a_crash_loses_only_the_run_in_progress(study_file, tmp_path):
    out = tmp_path / "out"
    study = load_study(study_file)
    crashing = FakeRuns(crash_at=("diverse", 1))
    with pytest.raises(RuntimeError, match="killed"):
        run_study(study, out, train=crashing, evaluate=crashing, log=lambda _: None)
    assert len(crashing.calls) == 8  # base ×3, narrow ×3, diverse seed 0, then the crash
    assert is_done(out / "diverse" / "seed0") and not is_done(out / "diverse" / "seed1")
    resolved = tomllib.loads((out / "study.toml").read_text())
    assert resolved["arms"]["base"]["train"] is False and resolved["eval"]["samples"] == 4

    fake = FakeRuns()
    folders = run_study(study, out, train=fake, evaluate=fake, log=lambda _: None)
    assert fake.calls == [("diverse", 1, True), ("diverse", 2, True), ("grpo", 0, True), ("grpo", 1, True),
                          ("grpo", 2, True)]
    assert not (out / "diverse" / "seed1" / "checkpoints").exists()  # the half-run was started over
    assert all(is_done(f) for f in folders) and len(folders) == 12
    marker = json.loads((out / "grpo" / "seed2" / "done.json").read_text())
    assert marker["seed"] == 2 and "eval.samples=4" in marker["overrides"]

    again = FakeRuns()
    run_study(study, out, train=again, evaluate=again, log=lambda _: None)
    assert again.calls == []

    with pytest.raises(StudyError, match="different settings"):
        run_study(load_study(study_file, overrides=["grpo.steps=9"]), out, train=again, evaluate=again)

    # Adding an arm (or a seed) to a finished study runs only what is new.
    text = study_file.read_text()
    study_file.write_text(text.replace("[presets.tiny]", '[arms.kl]\nrecipe = "grpo.toml"\n'
                                       'overrides = ["grpo.beta=0.1"]\n[presets.tiny]'))
    more = FakeRuns()
    run_study(load_study(study_file), out, train=more, evaluate=more, log=lambda _: None)
    assert more.calls == [("kl", 0, True), ("kl", 1, True), ("kl", 2, True)]
    assert "kl" in tomllib.loads((out / "study.toml").read_text())["arms"]
    study_file.write_text(text.replace('recipe = "narrow.toml"', 'recipe = "narrow.toml"\noverrides = ["x=1"]'))
    # (an arm left out of a later invocation is not an error: --arms runs a subset; see test_study_sizing.py)
    with pytest.raises(StudyError, match=r"differs in: arms\.narrow\)"):
        _ = study_mod._claim(out, load_study(study_file))


def test_experiment_command_runs_and_reports(study_file, tmp_path, monkeypatch):
    fake = FakeRuns()
    monkeypatch.setattr(study_mod, "_train", fake)
    monkeypatch.setattr(study_mod, "_evaluate_base", fake)
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["experiment", str(study_file), "--preset", "tiny", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert fake.calls == [("base", 5, False), ("grpo", 5, True)]
    assert (out / "report.html").is_file() and (out / "base" / "seed5" / "done.json").is_file()
    bad = CliRunner().invoke(app, ["experiment", str(study_file), "--preset", "nope"])
    assert bad.exit_code == 2 and "no preset 'nope'" in bad.output


def test_the_shipped_breadth_study_is_well_formed():
    for preset in ("quick", "standard", "gpu"):
        study = load_study(REPO / "agents" / "breadth-study.toml", preset=preset)
        trained = {a.name for a in study.arms if a.train}
        assert {"sft-narrow", "sft-diverse", "grpo", "sft-narrow-grpo"} <= trained
        assert preset == "quick" or "sft-diverse-grpo" in trained  # quick leaves it out to fit its hour
        assert [a.name for a in study.arms if not a.train] == ["base"] and len(study.seeds) >= 3
        assert study.dose.every > 0 and all(r % study.dose.every == 0 for r in study.dose.rungs)
    assert load_study(REPO / "agents" / "breadth-study.toml", preset="gpu").eval["samples"] >= 64
    missing = [a.recipe for a in study.arms if not (REPO / a.recipe).exists()]
    if missing:
        pytest.skip(f"arm recipes not written yet: {missing}")
    for preset in ("quick", "standard", "gpu"):
        resolve(load_study(REPO / "agents" / "breadth-study.toml", preset=preset))


def test_a_study_prior_is_pretrained_once_and_becomes_every_arms_base(study_file, tmp_path):
    (tmp_path / "prior.toml").write_text('stages = ["pretrain"]\n[pretrain]\nmixture = { forward = 1.0 }\n')
    text = study_file.read_text().replace('name = "mini"', 'name = "mini"\nprior = "prior.toml"')
    study_file.write_text(text)
    study = load_study(study_file, preset="tiny")
    assert study.prior == tmp_path / "prior.toml"
    built = []

    def fake_pretrain(recipe, prior_dir: Path) -> None:
        built.append((recipe.seed, recipe.sft.num_questions))  # the study's overrides reach the prior too
        (prior_dir / "stages" / "pretrain" / "model").mkdir(parents=True)

    out, fake = tmp_path / "out", FakeRuns()
    run_study(study, out, train=fake, evaluate=fake, pretrain=fake_pretrain, log=lambda _: None)
    assert built == [(0, 8)] and is_done(out / "prior", marker_only=True)
    model = str((out / "prior" / "stages" / "pretrain" / "model").resolve())
    for arm in ("base", "grpo"):
        recipe = tomllib.loads((out / arm / "seed5" / "recipe.toml").read_text())
        assert recipe["model"]["base"] == model
    assert tomllib.loads((out / "study.toml").read_text())["prior"].endswith("prior.toml")

    run_study(study, out, train=fake, evaluate=fake, pretrain=fake_pretrain, log=lambda _: None)
    assert built == [(0, 8)]  # done once, skipped on resume

    (tmp_path / "prior.toml").write_text('stages = ["pretrain", "sft"]\n[pretrain]\nmixture = { forward = 1.0 }\n')
    with pytest.raises(StudyError, match=r"stages must be \[\"pretrain\"\]"):
        resolve(load_study(study_file))
    study_file.write_text(text.replace('prior = "prior.toml"', 'prior = "nope.toml"'))
    with pytest.raises(StudyError, match="prior = .*nope.toml.* is not a file"):
        load_study(study_file)


def test_one_toml_writer_round_trips_resolved_recipes_and_the_study(study_file):
    """`searchgym.util.config_schema.to_toml` writes run folders' recipe.toml and a study's study.toml: what it writes
    reads back equal."""
    study = load_study(study_file)
    for recipe in resolve(study).values():
        data = recipe.to_dict()
        assert tomllib.loads(to_toml(data)) == data and recipe.to_toml() == to_toml(data)
    data = {k: v for k, v in study.to_dict().items() if v is not None}  # TOML has no None: prior is left out
    assert tomllib.loads(to_toml(data)) == data
    awkward = {"a b": "quote \" back\\slash\ttab é \x7f", "x": [{"y": 1.5e-05, "z": [True, -3]}], "t": {"": {}},
               "f": {"inf": float("inf"), "big": 10**18}}
    assert tomllib.loads(to_toml(awkward)) == awkward

