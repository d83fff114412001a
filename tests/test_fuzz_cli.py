"""Issue #27: `searchgym fuzz` (what `make fuzz` runs), the fuzzer's old entry points, and a plain
`searchgym train` that prints no third-party warnings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

import searchgym  # noqa: F401  (registers the envs and plug-ins)
from searchgym.cli import app
from searchgym.envs import registered_envs
from searchgym.quiet import KNOWN_WARNINGS, quiet_known_warnings

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("searchgym")
CLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "searchgym"]


def _env(**extra) -> dict:
    """The test process's environment (offline, set by conftest), one thread, without TRL's silencer:
    what a user typing the command has."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRL_EXPERIMENTAL_SILENCE", "PYTHONWARNINGS")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# ---- searchgym fuzz --------------------------------------------------------------------------------------
def test_fuzz_runs_the_actions_on_every_registered_env_through_the_cli():
    proc = subprocess.run([*CLI, "fuzz", "--actions", "300", "--embedder", "hashing"], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = list(registered_envs())
    per_env = 300 // len(ids)
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["actions"] == per_env * len(ids) and report["exceptions"] == report["violations"] == 0
    assert {env_id: row["actions"] for env_id, row in report["per_env"].items()} == dict.fromkeys(ids, per_env)
    for env_id in ids:  # the human-readable line per env says the same
        assert re.search(rf"^{re.escape(env_id)}\s+{per_env} actions\s+\d+ episodes", proc.stdout, re.M), proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--actions", "0"], "--actions: at least one action per env"),
    (["--actions", "3", "--env", "searchgym/SyntheticWorld-v0", "--env", "searchgym_plugin_example/Elements-v0",
      "--env", "searchgym/WikiFactbook-v0", "--env", "searchgym/SyntheticWorld-Easy-v0"],
     "--actions: at least one action per env (4 envs), got 3"),
    (["--env", "searchgym/Nope-v0"], "--env: 'searchgym/Nope-v0' is not a registered environment; allowed: "),
    (["--embedder", "no-such-embedder"], "unknown embedder 'no-such-embedder'"),
], ids=["zero-actions", "fewer-actions-than-envs", "unknown-env", "unknown-embedder"])
def test_fuzz_refuses_a_bad_option_in_one_line_with_exit_2(args, message):
    result = CliRunner().invoke(app, ["fuzz", *args])
    lines = _lines(result.output)
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert message in lines[0] and "Traceback" not in result.output


def test_fuzz_exits_1_naming_the_failures(monkeypatch):
    import searchgym.testing.fuzzing as fuzzing

    def broken(env_ids, actions, **kwargs):
        return {"actions": actions, "episodes": 1, "exceptions": 1, "violations": 2, "per_env": {},
                "failures": ["x: step raised KeyError", "x: reward 2 outside", "x: reward 3 outside"]}

    monkeypatch.setattr(fuzzing, "fuzz", broken)
    result = CliRunner().invoke(app, ["fuzz", "--actions", "10", "--env", "searchgym/SyntheticWorld-v0"])
    assert result.exit_code == 1 and "FAIL x: step raised KeyError" in result.stdout
    assert json.loads(_lines(result.stdout)[-1])["violations"] == 2
    assert _lines(result.stderr) == ["error: 1 exception(s) and 2 invariant violation(s) in 10 actions "
                                     "(the first ones are listed above)"]


def test_old_entry_points_point_to_searchgym_fuzz_and_run_it():
    from searchgym.testing.__main__ import main

    proc = subprocess.run([sys.executable, "-m", "searchgym.testing", "--actions", "6", "--embedder", "hashing",
                           "--env", "searchgym_plugin_example/Elements-v0"], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _lines(proc.stderr)[0].startswith("python -m searchgym.testing is now `searchgym fuzz`")
    assert json.loads(proc.stdout.splitlines()[-1])["per_env"]["searchgym_plugin_example/Elements-v0"]["actions"] == 6
    assert main(["--actions", "0"]) == 2  # the same command, its exit status
    old = subprocess.run([sys.executable, "-m", "searchgym.testing.fuzzing", "--actions", "0"], cwd=REPO, env=_env(),
                         capture_output=True, text=True, timeout=300)  # the older name runs it too
    assert old.returncode == 2 and _lines(old.stderr)[-1].startswith("error: "), old.stderr[-3000:]


def test_make_fuzz_calls_searchgym_fuzz():
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\nfuzz:", 1)[1].split("\n\n", 1)[0]
    assert "$(BIN)/searchgym fuzz --actions 100000 --embedder hashing" in recipe


# ---- no third-party warnings by default -----------------------------------------------------------------
def test_known_harmless_warnings_are_silenced_and_others_still_show(monkeypatch):
    monkeypatch.setattr(sys, "warnoptions", [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_warnings()
        for category, message in KNOWN_WARNINGS:
            warnings.warn(message + " (and the rest of the library's text)", category, stacklevel=1)
        warnings.warn("searchgym plug-in 'x' (x:register) failed to load: boom", UserWarning, stacklevel=1)
        warnings.warn("`some_other_thing` is deprecated", FutureWarning, stacklevel=1)
        warnings.warn(KNOWN_WARNINGS[0][1], UserWarning, stacklevel=1)  # same text, another category: shown
    assert [str(w.message) for w in caught] == ["searchgym plug-in 'x' (x:register) failed to load: boom",
                                                "`some_other_thing` is deprecated", KNOWN_WARNINGS[0][1]]


def test_known_warnings_match_the_installed_libraries_text():
    """Each filter is the start of a message the pinned library really emits (else it silences nothing)."""
    import transformers
    import trl

    sources = ""
    for package in (transformers, trl):
        root = Path(package.__file__).parent
        for path in (root / "modeling_utils.py", root / "trainer" / "grpo_trainer.py"):
            if path.exists():
                sources += " ".join(re.findall(r'"([^"\n]*)"', path.read_text()))
    for _, message in KNOWN_WARNINGS:
        assert message in sources, message


def test_smoke_sft_through_the_cli_prints_no_library_warnings(tmp_path):
    proc = subprocess.run([*CLI, "train", "agents/smoke-sft.toml", "--out", str(tmp_path / "run"),
                           "--set", "eval.baseline=false"], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = re.findall(r"^.*:\d+: \w*Warning: .*$", proc.stderr, re.M)  # warnings.showwarning's format
    assert shown == [], shown
    assert not [line for line in proc.stderr.splitlines() if "site-packages" in line and "Warning" in line]
