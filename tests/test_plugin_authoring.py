"""Issue #14.18: a plug-in written from the README alone is checked, trained and evaluated.

The package is built from the code blocks of the README's "Plug in a new search environment" section (so the
README cannot drift from what works), put on a temporary sys.path with its entry points in a dist-info
folder (what `pip install -e .` would write), and driven in fresh interpreters, plug-in imported first.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

import searchgym  # noqa: F401  (registers the envs and plug-ins)
from searchgym.config.agent_recipe import RecipeError
from searchgym.train.stages import load_recipe

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Plug in a new search environment"


def readme_blocks() -> dict[str, str]:
    """The section's code blocks by the file their first line names (``# mypkg/__init__.py: ...``)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ", len(SECTION))]
    blocks = {}
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.DOTALL):
        first = body.splitlines()[0]
        if m := re.match(r"# ([\w./-]+\.(?:py|toml))", first):
            blocks[m.group(1)] = body
        elif lang == "bash":
            blocks["commands"] = body
    return blocks


def install(root: Path, name: str, files: dict[str, str], entry_points: dict[str, dict[str, str]]) -> None:
    """Write a package and the dist-info importlib.metadata reads entry points from."""
    for path, body in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(body, encoding="utf-8")
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for group, eps in entry_points.items()))


def python(root: Path, code: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", textwrap.dedent(code)] if code else [sys.executable, "-m", "searchgym", *args]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def readme_plugin(tmp_path_factory) -> Path:
    blocks = readme_blocks()
    assert {"mypkg/__init__.py", "mypkg/register.py", "pyproject.toml"} <= set(blocks), sorted(blocks)
    entry_points = tomllib.loads(blocks["pyproject.toml"])["project"]["entry-points"]
    root = tmp_path_factory.mktemp("plugin")
    install(root, "mypkg", {k: v for k, v in blocks.items() if k.endswith(".py")}, entry_points)
    return root


def test_readme_plugin_registers_whatever_the_import_order_and_passes_the_checks(readme_plugin):
    result = python(readme_plugin, """
        import json, warnings
        warnings.filterwarnings("error", message="searchgym plug-in")  # a plug-in that failed to load: fatal
        import mypkg                     # the plug-in first: the order that used to break registration
        import gymnasium
        import searchgym
        from searchgym.testing import check_search_env
        env = gymnasium.make("mypkg/MyWorld-v0", split="test")
        question, info = env.reset(seed=0)
        env.step("answer: Ilvar")
        print(json.dumps({"question": question, "env_id": env.unwrapped.trajectory(messages=[]).env_id,
                          "ready": check_search_env("mypkg/MyWorld-v0", max_examples=3, steps=5, sft=True)}))
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["env_id"] == "mypkg/MyWorld-v0" and out["question"] == "Where was Bo born?"
    assert out["ready"] == {"sft": [], "grpo": [], "eval": []}


def test_a_plugin_that_imports_searchgym_at_its_top_registers_once_it_has_loaded(tmp_path):
    install(tmp_path, "onepkg", {"onepkg/__init__.py": textwrap.dedent("""
        import gymnasium
        from searchgym.corpus import Corpus, Document   # imports searchgym, which loads this half-built module
        def register():
            gymnasium.register("onepkg/One-v0", entry_point="searchgym.envs.search_env:SearchEnv",
                               kwargs={"world": "elements", "embedder": "hashing", "env_id": "onepkg/One-v0"})
            return {"onepkg/One-v0": "one module"}
    """)}, {"searchgym.envs": {"one": "onepkg:register"}})
    result = python(tmp_path, """
        import warnings
        warnings.filterwarnings("error", message="searchgym plug-in")
        import onepkg
        from searchgym.envs import registered_envs
        assert "onepkg/One-v0" in registered_envs(), registered_envs()
        import gymnasium
        print(gymnasium.make("onepkg/One-v0").unwrapped.env_id)
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "onepkg/One-v0"


def test_the_check_says_what_sft_needs(capsys):
    from searchgym.testing import check_search_env, training_readiness

    ready = training_readiness("searchgym_plugin_example/Elements-v0")
    assert ready["grpo"] == [] and ready["eval"] == []
    assert any("world.strategies is empty" in p for p in ready["sft"])
    with pytest.raises(AssertionError, match="SFT cannot train on this world: world.strategies is empty"):
        check_search_env("searchgym_plugin_example/Elements-v0", max_examples=2, steps=3, sft=True)
    assert "sft: NOT ready" in capsys.readouterr().out


def test_changing_only_env_id_drops_the_other_worlds_kwargs_and_checks_sft_at_load(capsys):
    recipe = load_recipe(REPO / "agents" / "smoke-grpo.toml", ["env.id=searchgym_plugin_example/Elements-v0"])
    assert "world_kwargs" not in recipe.env.kwargs and recipe.env.kwargs["max_steps"] == 6
    assert "belong to another world, not 'elements'; dropped" in capsys.readouterr().err
    with pytest.raises(RecipeError, match="^stages: 'sft' needs demonstrations, but world 'elements' has no strat"):
        load_recipe(REPO / "agents" / "smoke-sft.toml", ["env.id=searchgym_plugin_example/Elements-v0"])


def test_readme_plugin_trains_and_evaluates_from_the_command_line(readme_plugin):
    run, evaluated = readme_plugin / "runs" / "mine", readme_plugin / "eval"
    train = python(readme_plugin, "", "train", str(REPO / "agents" / "smoke-sft.toml"),
                   "--set", "env.id=mypkg/MyWorld-v0", "--set", "sft.narrow_strategy=lookup",
                   "--set", 'env.kwargs={embedder = "hashing", max_steps = 4}', "--set", "meters.every=0",
                   "--out", str(run))
    assert train.returncode == 0, (train.stdout[-2000:], train.stderr[-3000:])
    assert (run / "adapter" / "adapter_config.json").is_file()
    demos = [json.loads(line) for line in (run / "demos" / "diverse.jsonl").read_text().splitlines()]
    assert demos and all(d["correct"] and d["env_id"] == "mypkg/MyWorld-v0" for d in demos)
    ev = python(readme_plugin, "", "eval", str(run), "--questions", "1", "--samples", "1",
                "--max-new-tokens", "8", "--out", str(evaluated))
    assert ev.returncode == 0, (ev.stdout[-2000:], ev.stderr[-3000:])
    [t] = [json.loads(line) for line in (evaluated / "trajectories.jsonl").read_text().splitlines()]
    assert (t["env_id"], t["question"]) == ("mypkg/MyWorld-v0", "Where was Bo born?")
    settings = json.loads((evaluated / "eval.json").read_text())["settings"]
    assert settings["env_kwargs"] == {"embedder": "hashing", "max_steps": 4, "split": "test"}
