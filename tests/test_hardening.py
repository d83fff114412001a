"""Issue #14: recipes are data, run folders are named safely and locked, a resumed stage logs each step once.

(Action parsing and the caches have their own tests in test_actions.py, test_env.py, test_models.py and
test_index.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gymnasium
import pytest

import searchgym  # noqa: F401  (registers the envs and plug-ins)
from searchgym.config.agent_recipe import RecipeError
from searchgym.envs.search_env import load_world
from searchgym.runs import RunLocked, checkpoint_step, read_metrics, run_lock, trim_metrics
from searchgym.train import find_latest_run, train_command
from searchgym.train.stages import load_recipe, recipe_from_dict
from searchgym.worlds import world_names

AGENTS = Path(__file__).resolve().parents[1] / "agents"
SMOKE_SFT = AGENTS / "smoke-sft.toml"


# ---- 1. a recipe cannot name code to run -----------------------------------------------------------------
def test_world_is_a_registered_name_never_an_import_path(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(ValueError, match=r"world: unknown world 'os:system'; allowed: \[.*'synthetic'"):
        gymnasium.make("searchgym/SyntheticWorld-v0", world="os:system",
                       world_kwargs={"command": f"touch {marker}"})
    with pytest.raises(ValueError, match="unknown world 'builtins:print'"):
        load_world("builtins:print")
    with pytest.raises(ValueError, match="expected a world name"):
        load_world({"corpus": 1})
    assert not marker.exists()


def test_plugin_worlds_come_from_the_entry_point_group():
    assert {"elements", "synthetic", "wikifactbook"} <= set(world_names())
    env = gymnasium.make("searchgym_plugin_example/Elements-v0")
    assert env.unwrapped.taskset.name == "Elements"
    env = gymnasium.make("searchgym/SyntheticWorld-v0", world="elements", embedder="hashing")
    assert env.unwrapped.taskset.name == "Elements"


@pytest.mark.parametrize("override, field", [
    ("env.kwargs.world=os:system", "env.kwargs.world"),
    ("env.id=os:system", "env.id"),
    ("env.id=searchgym/NoSuchEnv-v0", "env.id"),
])
def test_train_refuses_code_in_a_recipe_before_any_work(tmp_path, override, field):
    out = tmp_path / "run"
    with pytest.raises(RecipeError, match=f"^{field}: .*allowed"):
        train_command(SMOKE_SFT, overrides=[override, "env.kwargs.world_kwargs={command='touch x'}"], out=out)
    assert not out.exists()


def test_cli_reports_a_refused_world_in_one_line_with_exit_2(tmp_path):
    from typer.testing import CliRunner

    from searchgym.cli import app

    result = CliRunner().invoke(app, ["train", str(SMOKE_SFT), "--set", "env.kwargs.world=os:system",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "env.kwargs.world" in result.output and "Traceback" not in result.output
    assert result.output.startswith("error: env.kwargs.world: unknown world 'os:system'")


# ---- 5. a recipe name is a slug ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../x", "/tmp/x", ".hidden", "a/b", "a b", "x*", "", "é", "a" * 101])
def test_recipe_names_that_are_not_slugs_are_refused(name):
    with pytest.raises(RecipeError, match=r"^name: .* letters, digits, '\.', '_' or '-'"):
        recipe_from_dict({"name": name})


def test_slug_names_load(tmp_path):
    for name in ("sft-diverse", "v1.2_x", "-dash", "a" * 100):
        assert recipe_from_dict({"name": name}).name == name
    with pytest.raises(RecipeError, match="^name: "):
        load_recipe(SMOKE_SFT, overrides=["name=../../escape"])


def test_resume_lookup_is_a_prefix_not_a_glob(tmp_path):
    for name in ("abc-20250101-000000", "abd-20250102-000000", "abc-def-20250103-000000"):
        (tmp_path / name).mkdir()
    (tmp_path / "abc-20250104-000000").write_text("a file, not a run")
    assert find_latest_run("abc", tmp_path) == tmp_path / "abc-20250101-000000"
    assert find_latest_run("ab*", tmp_path) is None and find_latest_run("ab[cd]", tmp_path) is None
    assert find_latest_run("abc", tmp_path / "missing") is None


# ---- 6. one process per run folder ---------------------------------------------------------------------------
HOLD = "import sys, time; from searchgym.runs import run_lock\nwith run_lock(sys.argv[1]):\n" \
       "    print('locked', flush=True); time.sleep(120)\n"


@pytest.fixture
def held(tmp_path):
    """A run folder locked by another process (killed with -9 at teardown)."""
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield folder, proc
    proc.kill()
    proc.wait()


def test_a_locked_run_folder_refuses_a_second_process_and_frees_on_kill(held):
    folder, proc = held
    with pytest.raises(RunLocked, match=f"in use by another process \\(pid {proc.pid}\\)"):
        with run_lock(folder):
            pass
    proc.kill()  # kill -9: the kernel drops the flock, no stale lock is left
    proc.wait()
    with run_lock(folder), run_lock(folder):  # re-entrant within one process
        pass


def test_second_training_into_a_busy_folder_stops_before_any_work(held):
    folder, _ = held
    start = time.perf_counter()
    with pytest.raises(RecipeError, match="in use by another process"):
        train_command(SMOKE_SFT, out=folder, progress=False)
    assert time.perf_counter() - start < 30 and not (folder / "recipe.toml").exists()


def test_cli_reports_a_busy_folder_in_one_line_with_exit_2(held):
    from typer.testing import CliRunner

    from searchgym.cli import app

    folder, _ = held
    result = CliRunner().invoke(app, ["train", str(SMOKE_SFT), "--out", str(folder)])
    assert result.exit_code == 2 and "in use by another process" in " ".join(result.output.split())


def test_a_study_locks_its_folder_and_each_training_locks_its_own(tmp_path):
    from searchgym.study.runner import run_study
    from searchgym.study.spec import StudyError, load_study

    (tmp_path / "r.toml").write_text('name = "r"\nstages = ["sft"]\n[model]\nbase = "tiny"\n')
    (tmp_path / "study.toml").write_text('name = "s"\nseeds = [0, 1]\n[arms.a]\nrecipe = "r.toml"\n')
    study, out = load_study(tmp_path / "study.toml"), tmp_path / "out"
    seen = []

    def train(run, recipe, run_dir):  # what train_command does: lock the run folder, inside the study's lock
        with run_lock(run_dir), run_lock(out):
            seen.append(run_dir.name)
            (run_dir / "trajectories.jsonl").write_text("")

    assert len(run_study(study, out, train=train, evaluate=train, log=lambda _: None)) == 2 and len(seen) == 2
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(StudyError, match="in use by another process"):
            run_study(study, out, train=train, evaluate=train, log=lambda _: None)
    finally:
        proc.kill()
        proc.wait()


# ---- 7. a resumed stage logs each step once ---------------------------------------------------------------
def test_trim_drops_the_resumed_stages_rows_after_the_checkpoint(tmp_path):
    rows = [{"stage": "sft", "step": s, "train/loss": 1.0} for s in range(0, 12)]
    rows += [{"stage": "grpo", "step": s, "train/reward": 0.5} for s in range(1, 13)]
    rows += [{"stage": "grpo", "step": 11, "probe": True}, {"stage": "eval", "step": -1, "eval/x": 1}]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"stage": "grpo", "step": 13, "trai'  # cut by kill -9
    (tmp_path / "metrics.jsonl").write_text(text)
    assert trim_metrics(tmp_path, "grpo", checkpoint_step(tmp_path / "checkpoint-8")) == 6
    kept = read_metrics(tmp_path)
    assert [r["step"] for r in kept if r["stage"] == "grpo"] == list(range(1, 9))
    assert [r["step"] for r in kept if r["stage"] == "sft"] == list(range(0, 12))  # other stages untouched
    assert kept[-1]["stage"] == "eval"
    assert (tmp_path / "metrics.jsonl").read_text().endswith("}\n")  # the next append starts a fresh line
    assert trim_metrics(tmp_path, "grpo", 8) == 0 and trim_metrics(tmp_path / "none", "grpo", 0) == 0


def test_grpo_resume_after_a_kill_logs_each_step_once(tmp_path):
    import shutil

    from searchgym.agent.models import load_model
    from searchgym.train.grpo import run_grpo

    recipe = load_recipe(AGENTS / "smoke-grpo.toml", overrides=[
        "grpo.steps=2", "grpo.save_steps=1", "grpo.beta=0.0", "grpo.ref_reset_steps=0",
        "grpo.max_completion_length=16", "grpo.max_tool_calling_iterations=1"])
    model, tokenizer = load_model("tiny")
    run_grpo(recipe, tmp_path, model, tokenizer)
    # kill -9 after step 2 was logged but before its checkpoint was complete:
    shutil.rmtree(tmp_path / "checkpoints" / "grpo" / "checkpoint-2")
    model, tokenizer = load_model("tiny")
    run_grpo(recipe, tmp_path, model, tokenizer, resume=True)
    steps = [r["step"] for r in read_metrics(tmp_path) if r["stage"] == "grpo" and "train/reward" in r]
    assert steps == [1, 2]
    assert os.path.isdir(tmp_path / "checkpoints" / "grpo" / "checkpoint-2")
