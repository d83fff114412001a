"""A training stage is one module plus one line in `searchgym.train.stages.STAGES`: a toy stage registered here
(typed settings, validate, run in the shared context) runs through the real `searchgym train` command, with its
own recipe section, checks, metrics rows, adapter, done marker and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from searchgym.cli import app
from searchgym.config.agent_recipe import RecipeError
from searchgym.runs import RunFolder, read_metrics
from searchgym.train import stages
from searchgym.train.stages import load_recipe

SMOKE_SFT = Path(__file__).resolve().parents[1] / "agents" / "smoke-sft.toml"


@dataclass
class ToySettings:
    steps: int = 2
    learning_rate: float = 0.05


class ToyStage:
    """A few plain SGD steps of next-token loss on one fixed string, on the context's LoRA."""

    name, settings, builds_base = "toy", ToySettings, False

    def validate(self, recipe) -> None:
        s = recipe.settings("toy")
        if s.steps < 1:
            raise RecipeError(f"toy.steps: must be >= 1, got {s.steps}")

    def run(self, ctx):
        import torch

        s = ctx.recipe.settings("toy")
        model = ctx.trainable(ctx.model)
        model.train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=s.learning_rate)
        ids = ctx.tokenizer("<tool_call>search the answer</tool_call>", return_tensors="pt")["input_ids"]
        for step in range(1, s.steps + 1):
            loss = model(input_ids=ids.to(model.device), labels=ids.to(model.device)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            ctx.log({"step": step, "train/loss": loss.item()})
        return model


@pytest.fixture
def toy(monkeypatch, tmp_path):
    monkeypatch.setitem(stages.STAGES, "toy", ToyStage())
    recipe = tmp_path / "toy.toml"
    text = SMOKE_SFT.read_text().replace('name = "smoke-sft"', 'name = "toy"').replace('stages = ["sft"]',
                                                                                      'stages = ["toy"]')
    recipe.write_text(text + "\n[toy]\nsteps = 3\n")
    return recipe


def test_a_registered_stage_runs_through_searchgym_train(toy, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(toy), "--out", str(out), "--set", "eval.baseline=false",
                                      "--set", "meters.every=0"])
    assert result.exit_code == 0, result.output
    run = RunFolder(out)
    assert run.stage_done("toy") and run.finished_stages() == ["toy"]
    assert load_recipe(run.recipe_file).settings("toy") == ToySettings(steps=3)  # its section is kept
    assert [r["step"] for r in read_metrics(out) if r["stage"] == "toy"] == [1, 2, 3]
    weights = load_file(str(run.stage_adapter("toy") / "adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)  # B starts at zero: it moved
    assert run.trajectories().is_file() and (out / "summary.md").is_file()


def test_a_stages_settings_are_typed_and_validated_before_any_work(toy, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(toy), "--out", str(out), "--set", "toy.steps=0"])
    assert result.exit_code == 2 and "toy.steps: must be >= 1, got 0" in result.output
    result = CliRunner().invoke(app, ["train", str(toy), "--out", str(out), "--set", "toy.step=2"])
    assert result.exit_code == 2 and "unknown key 'toy.step'" in result.output
    result = CliRunner().invoke(app, ["train", str(toy), "--out", str(out), "--set", "toy.steps='many'"])
    assert result.exit_code == 2 and "toy.steps must be int" in result.output
    assert not out.exists()
    assert load_recipe(toy).settings("toy") == ToySettings(steps=3)


def test_an_unregistered_stage_or_section_is_refused(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "r"\nstages = ["toy"]\n[model]\nbase = "tiny"\n')
    with pytest.raises(RecipeError, match=r"stages: unknown stage 'toy'; allowed: \['pretrain', 'sft', 'grpo', 'rft'\]"):
        load_recipe(recipe)
    recipe.write_text('name = "r"\nstages = ["sft"]\n[model]\nbase = "tiny"\n[toy]\nsteps = 1\n')
    with pytest.raises(RecipeError, match="unknown key 'toy'"):
        load_recipe(recipe)


def test_every_builtin_stage_follows_the_protocol():
    for name, stage in stages.STAGES.items():
        assert isinstance(stage, stages.Stage) and stage.name == name
    assert [n for n, s in stages.STAGES.items() if s.builds_base] == ["pretrain"]
    assert [n for n, s in stages.STAGES.items() if s.needs_train_split] == ["sft", "grpo", "rft"]
    for stage in stages.STAGES.values():  # every "module:function" a row names resolves
        for path in (stage.check, stage.train, stage.check_world):
            assert path is None or callable(stages._function(path)), path


class _NoTrainTasks:
    """A plug-in world whose train split is empty (the other splits are the real world's)."""

    def __init__(self, world):
        self.world = world

    def __getattr__(self, name):
        return getattr(self.world, name)

    def tasks(self, split):
        return [] if split == "train" else self.world.tasks(split)


def test_a_stage_that_needs_the_train_split_is_refused_on_a_world_without_one(monkeypatch):
    """needs_train_split on the row, not a list of stage names in config: rft trains on train questions too."""
    from searchgym.envs import search_env

    elements = ["env.id=searchgym_plugin_example/Elements-v0", "env.kwargs={ max_steps = 6 }"]
    world = search_env.load_world("elements")
    monkeypatch.setitem(search_env._WORLD_CACHE, ("elements", ()), _NoTrainTasks(world))
    for stage in ("grpo", "rft"):
        with pytest.raises(RecipeError, match=r"^stages: world 'elements' of searchgym_plugin_example/Elements-v0 "
                                              r"has no 'train' tasks; its splits with tasks: \['test'"):
            load_recipe(SMOKE_SFT, [f"stages=[\"{stage}\"]", *elements], check_model=False)


def test_a_stage_without_the_optional_attributes_needs_nothing_of_the_world(monkeypatch, toy):
    """A stage without needs_train_split or validate_world (the toy) loads on a world without train tasks."""
    from searchgym.envs import search_env

    world = search_env.load_world("elements")
    monkeypatch.setitem(search_env._WORLD_CACHE, ("elements", ()), _NoTrainTasks(world))
    recipe = load_recipe(toy, ["env.id=searchgym_plugin_example/Elements-v0", "env.kwargs={ max_steps = 6 }"],
                         check_model=False)
    assert recipe.stages == ["toy"]
