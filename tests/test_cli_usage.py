"""Usage errors through the real `searchgym` entry point: one line on stderr naming the command and what was
wrong, exit 2, no traceback and no usage panel; help is unchanged (searchgym.cli._Commands)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from searchgym.cli import app

BOX = re.compile("[\u2500-\u257f]")  # box drawing: the rich usage panel's frame
SCRIPT = shutil.which("searchgym", path=str(Path(sys.executable).parent))
ENTRY = [SCRIPT] if SCRIPT else [sys.executable, "-m", "searchgym.cli"]


def run(*args):
    return subprocess.run([*ENTRY, *args], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parent.parent)


def assert_one_line(result, *expected):
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    err = result.stderr.strip()
    assert "\n" not in err, err
    assert "Traceback" not in err and not BOX.search(err), err
    for text in expected:
        assert text in err, err
    return err


@pytest.mark.parametrize("args, expected", [
    # an unknown option, on two commands and on the group
    (["train", "--foo", "agents/smoke-sft.toml"], ["searchgym train: no such option: --foo", "searchgym train --help"]),
    (["eval", "tiny", "--bogus"], ["searchgym eval: no such option: --bogus", "searchgym eval --help"]),
    (["--bogus"], ["searchgym: no such option: --bogus", "searchgym --help"]),
    (["nosuch"], ["searchgym: no such command 'nosuch'"]),
    # a missing argument
    (["train"], ["searchgym train: missing argument 'recipe'", "searchgym train --help"]),
    (["search", "corpora/tiny.toml"], ["searchgym search: missing argument 'query'", "searchgym search --help"]),
    # a value of the wrong type
    (["serve", "--port", "abc", "corpora/tiny.toml"], ["searchgym serve: invalid value for '--port'"]),
    (["eval", "tiny", "--questions", "many"], ["searchgym eval: invalid value for '--questions'"]),
    # a bad choice: the field and its allowed values (checked by the command, the same one-line shape)
    (["updates", "--precision", "nope", "runs/none"], ["--precision must be one of ['float32', 'bfloat16']"]),
    (["serve", "--retriever", "nope", "corpora/tiny.toml"], ["retriever must be one of ['dense', 'bm25', 'hybrid']"]),
])
def test_usage_error_is_one_line_and_exit_2(args, expected):
    assert assert_one_line(run(*args), *expected).startswith("error: ")


def test_help_is_unchanged():
    result = run("train", "--help")
    assert result.returncode == 0 and "Usage: searchgym train" in result.stdout and "--set" in result.stdout
    bare = run()  # no arguments: the help, exit 2 (click's rule for a bare group), not an error line
    assert bare.returncode == 2 and "Usage: searchgym" in bare.stdout + bare.stderr
    assert "train" in bare.stdout + bare.stderr and "error:" not in bare.stdout + bare.stderr


def test_cli_runner_sees_the_same_one_line():
    result = CliRunner().invoke(app, ["search", "corpora/tiny.toml", "q", "-k", "many"], prog_name="searchgym")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "searchgym search: invalid value for '-k'" in lines[0], result.stderr
    assert not BOX.search(result.output)
