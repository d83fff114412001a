"""The train path end to end on the tiny model (agents/smoke-sft.toml): demos -> LoRA SFT -> adapter -> eval.

One module-scoped run through `train_command` feeds most tests; the masking test builds an SFTTrainer on
that run's saved demo dataset, so it checks exactly the rows training used.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium
import pytest
import torch
from safetensors.torch import load_file

from searchgym.agent.models import load_model
from searchgym.config.agent_recipe import RecipeError
from searchgym.envs.actions import format_tool_call
from searchgym.runs import read_metrics
from searchgym.tasks import ToolCall
from searchgym.train import find_latest_run, train_command
from searchgym.train.sft import latest_checkpoint
from searchgym.train.stages import load_recipe
from searchgym.trajectory import read_trajectories

RECIPE = str(Path(__file__).resolve().parents[1] / "agents" / "smoke-sft.toml")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_command(RECIPE, out=tmp_path_factory.mktemp("smoke") / "run", progress=False)


def test_lora_weights_changed_and_loss_fell(run_dir):
    weights = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    assert lora_b, "the adapter holds no LoRA B matrices"
    # PEFT initialises every B to zero: a non-zero B is a weight the optimiser moved.
    assert all(v.abs().sum() > 0 for v in lora_b.values())
    losses = [row["train/loss"] for row in read_metrics(run_dir) if row["stage"] == "sft" and "train/loss" in row]
    assert len(losses) >= 2
    assert losses[-1] < losses[0]


def test_run_folder_has_recipe_demos_checkpoints_and_summary(run_dir):
    assert load_recipe(run_dir / "recipe.toml").model.base == "tiny"
    assert (run_dir / "stages" / "sft" / "done").exists()
    assert latest_checkpoint(run_dir / "checkpoints" / "sft").name == "checkpoint-3"
    assert (run_dir / "demos" / "diverse" / "dataset_info.json").exists()
    summary = (run_dir / "summary.md").read_text()
    assert "| success rate |" in summary and "| metric | trained | base |" in summary


def test_adapter_loads_with_peft_and_load_model(run_dir):
    from peft import PeftModel

    base, tokenizer = load_model("tiny")
    model = PeftModel.from_pretrained(base, str(run_dir / "adapter"))
    assert Path(model.peft_config["default"].base_model_name_or_path).name == "tiny"  # the alias's folder
    rebuilt, _ = load_model(str(run_dir))  # the run folder alone is enough
    ids = tokenizer("<tool_call>", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        trained, reloaded = model(ids).logits, rebuilt(ids).logits
        with model.disable_adapter():
            untrained = model(ids).logits
    assert torch.allclose(trained, reloaded, atol=1e-5)
    assert not torch.allclose(trained, untrained, atol=1e-5)


def _replay(env_id: str, env_kwargs: dict, trajectory) -> float:
    """Play a recorded episode's assistant turns through a fresh env; return the summed reward."""
    env = gymnasium.make(env_id, **env_kwargs)
    env.reset(options={"task_id": trajectory.task_id})
    total = 0.0
    for m in trajectory.messages:
        if m["role"] != "assistant":
            continue
        if m.get("tool_calls"):
            f = m["tool_calls"][0]["function"]
            action = format_tool_call(ToolCall(f["name"], f["arguments"]))
        else:
            action = m["content"]
        total += env.step(action)[1]
    return total


def test_eval_trajectories_are_valid_and_rewards_replay(run_dir):
    recipe = load_recipe(RECIPE)
    env_kwargs = {**recipe.env.kwargs, "split": recipe.eval.split}
    for folder in (run_dir, run_dir / "baseline"):
        trajectories = list(read_trajectories(folder))
        assert len(trajectories) == recipe.eval.questions * recipe.eval.samples
        for t in trajectories:
            assert 1 <= t.num_turns <= recipe.eval.max_turns
            assert len(t.token_entropies) == len(t.token_logprobs) == len(t.token_roles) > 0
            assert t.reward == pytest.approx(_replay(recipe.env.id, env_kwargs, t))


def test_resume_skips_finished_stages(run_dir):
    rows_before = [r for r in read_metrics(run_dir) if r["stage"] == "sft"]
    adapter_before = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    train_command(RECIPE, out=run_dir, resume=True, progress=False)
    assert [r for r in read_metrics(run_dir) if r["stage"] == "sft"] == rows_before
    adapter_after = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert all(torch.equal(adapter_before[k], adapter_after[k]) for k in adapter_before)


def test_rerun_without_resume_or_with_a_changed_recipe_is_refused(run_dir):
    with pytest.raises(RecipeError, match="--resume"):
        train_command(RECIPE, out=run_dir, progress=False)
    with pytest.raises(RecipeError, match=r"sft\.epochs"):
        train_command(RECIPE, overrides=["sft.epochs=3"], out=run_dir, resume=True, progress=False)


def test_resume_without_an_earlier_run_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_latest_run("smoke-sft") is None
    with pytest.raises(RecipeError, match="no earlier run"):
        train_command(RECIPE, resume=True, progress=False)


def test_tool_outputs_are_masked_from_the_loss(run_dir):
    """Only assistant turns are trained: tool results and the prompt carry label -100."""
    from datasets import load_from_disk
    from trl import SFTTrainer

    from searchgym.train.sft import lora_config, sft_config

    recipe = load_recipe(RECIPE, ["sft.max_length=4096"])  # no truncation: every turn is checked
    model, tokenizer = load_model("tiny")
    dataset = load_from_disk(str(run_dir / "demos" / "diverse"))
    trainer = SFTTrainer(model=model, args=sft_config(recipe, run_dir / "masking"), train_dataset=dataset,
                         processing_class=tokenizer, peft_config=lora_config(recipe))
    row = trainer.train_dataset[0]
    messages = dataset[0]["messages"]
    trained = tokenizer.decode([i for i, label in zip(row["input_ids"], row["labels"]) if label != -100])
    masked = tokenizer.decode([i for i, label in zip(row["input_ids"], row["labels"]) if label == -100])
    for m in messages:
        if m["role"] == "tool":
            assert m["content"] not in trained and m["content"].strip() in masked
        elif m["role"] == "assistant" and m.get("tool_calls"):
            f = m["tool_calls"][0]["function"]
            assert format_tool_call(ToolCall(f["name"], f["arguments"])) in trained
    assert messages[-1]["role"] == "assistant" and trained.rstrip().endswith(messages[-1]["content"] + "<|im_end|>")
    assert "<tool_response>" not in trained and messages[1]["content"] not in trained  # nor the question

