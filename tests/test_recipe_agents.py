"""The shipped agent recipes load and validate; bad recipes and --set overrides fail naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from searchgym.config.agent_recipe import RecipeError
from searchgym.train import train_command
from searchgym.train.stages import load_recipe

AGENTS = Path(__file__).resolve().parents[1] / "agents"


@pytest.mark.parametrize("name", ["quick-smollm2", "sft-diverse", "sft-narrow", "smoke-sft"])
def test_shipped_recipes_validate(name):
    recipe = load_recipe(AGENTS / f"{name}.toml")
    assert recipe.name == name
    assert recipe.stages == ["sft"]
    assert recipe.env.id == "searchgym/SyntheticWorld-Easy-v0"
    assert recipe.eval.baseline  # every shipped agent is compared with its base


def test_diverse_and_narrow_differ_only_in_the_demo_set():
    diverse, narrow = (load_recipe(AGENTS / f"sft-{k}.toml").to_dict() for k in ("diverse", "narrow"))
    assert (diverse.pop("name"), narrow.pop("name")) == ("sft-diverse", "sft-narrow")
    assert (diverse["sft"].pop("demos"), narrow["sft"].pop("demos")) == ("diverse", "narrow")
    assert diverse == narrow


def test_quick_is_grpo_on_the_reference_prior_in_its_own_world():
    import tomllib

    from searchgym.train.priors import REFERENCE_PRIOR

    quick = load_recipe(AGENTS / "quick.toml")
    assert quick.model.base == "searchgym-prior" and quick.stages == ["grpo"]
    assert quick.eval.samples >= 2 and quick.eval.baseline  # n > 1 for the meters; trained vs base
    prior = tomllib.loads((REFERENCE_PRIOR / "recipe.toml").read_text())
    assert quick.env.id == prior["env"]["id"]
    assert quick.env.kwargs["world_kwargs"] == prior["env"]["kwargs"]["world_kwargs"]  # the world it knows
    smollm2 = load_recipe(AGENTS / "quick-smollm2.toml")
    assert smollm2.model.base == "smollm2-135m-instruct" and smollm2.sft.demos == "diverse"


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(RecipeError, match=r"unknown key 'sft\.epoch'.*epochs"):
        load_recipe(_write(tmp_path, "[sft]\nepoch = 2\n"))
    with pytest.raises(RecipeError, match=r"unknown key 'stage'"):
        load_recipe(_write(tmp_path, 'stage = ["sft"]\n'))


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(RecipeError, match=r"sft\.batch_size must be int, got str"):
        load_recipe(_write(tmp_path, '[sft]\nbatch_size = "four"\n'))
    with pytest.raises(RecipeError, match=r"eval\.baseline must be bool"):
        load_recipe(_write(tmp_path, "[eval]\nbaseline = 1\n"))


def test_bad_set_overrides_are_named():
    quick = AGENTS / "quick.toml"
    with pytest.raises(RecipeError, match=r"--set 'sft\.epochs'"):
        load_recipe(quick, ["sft.epochs"])
    with pytest.raises(RecipeError, match=r"unknown key 'sft\.nope'"):
        load_recipe(quick, ["sft.nope=1"])
    with pytest.raises(RecipeError, match=r"eval\.samples must be int, got str"):
        load_recipe(quick, ["eval.samples=many"])
    with pytest.raises(RecipeError, match=r"sft\.demos"):
        load_recipe(quick, ["sft.demos=medium"])
    assert load_recipe(quick, ["sft.demos=narrow", "eval.questions=3"]).sft.demos == "narrow"


def test_train_command_stops_on_a_bad_recipe_before_doing_anything(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RecipeError, match="unknown key"):
        train_command(AGENTS / "smoke-sft.toml", overrides=["lora.rank=8"], out=out)
    with pytest.raises(RecipeError, match="'pretrain' must come first"):
        train_command(AGENTS / "smoke-sft.toml", overrides=['stages=["sft", "pretrain"]'], out=out)
    assert not out.exists()


def test_cli_prints_recipe_errors_verbatim(tmp_path):
    """The CLI names the bad key and its table (rich must not swallow '[lora]' as markup)."""
    from typer.testing import CliRunner

    from searchgym.cli import app

    result = CliRunner().invoke(app, ["train", str(AGENTS / "quick.toml"), "--set", "lora.rank=3",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "unknown key 'lora.rank'" in result.output and "[lora]" in result.output
    assert not (tmp_path / "run").exists()
