"""Rejection-sampling fine-tuning (`searchgym.train.rft`), a stage that is one module plus its row in STAGES.

End to end through `searchgym train agents/smoke-rft.toml` on the shipped prior in its own world (it answers
a good share of train questions, so every round keeps episodes): two rounds of sample -> keep the correct ->
LoRA SFT, with continuous steps, per-round rows, dose rungs, eval and --resume inside a round. Then the kept
set and its conversations on hand-made and sampled episodes, a round with nothing correct (the random 'tiny'
model), and settings refused at load.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from searchgym.cli import app
from searchgym.config.agent_recipe import RecipeError
from searchgym.runs import RunFolder, checkpoint_step, read_metrics, trim_metrics
from searchgym.train.rft import RFTSettings, kept_episodes, round_row
from searchgym.train.stages import load_recipe
from searchgym.trajectory import Trajectory, read_trajectories

RECIPE = Path(__file__).resolve().parents[1] / "agents" / "smoke-rft.toml"


def _train(*args: str):
    result = CliRunner().invoke(app, ["train", str(RECIPE), *args])
    return result


def _rounds(run_dir: Path) -> list[dict]:
    return [r for r in read_metrics(run_dir) if r["stage"] == "rft" and "rft/round" in r]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("rft") / "run"
    result = _train("--out", str(out), "--set", "dose.every=2")
    assert result.exit_code == 0, result.output
    return out


def test_two_rounds_train_the_lora_on_kept_episodes_and_log_each_round(run_dir):
    run = RunFolder(run_dir)
    assert run.stage_done("rft") and run.finished_stages() == ["rft"]
    weights = load_file(str(run.adapter / "adapter_model.safetensors"))
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # PEFT starts B at zero: training moved it
    rows = _rounds(run_dir)
    assert [r["rft/round"] for r in rows] == [1, 2]
    for r in rows:
        episodes = list(read_trajectories(run.stage_dir("rft") / f"round-{r['rft/round']}" / "episodes.jsonl"))
        assert r["rft/episodes"] == len(episodes) == 4 * 4
        assert r["rft/kept"] == sum(t.correct for t in episodes) > 0
        assert r["rft/acceptance_rate"] == pytest.approx(r["rft/kept"] / 16)
        assert r["rft/train_steps"] > 0 and r["rft/train_loss"] > 0
    # One step count over the rounds: round 2 is logged where round 1 ended, its trainer's rows continue it.
    assert rows[0]["step"] == 0 and rows[1]["step"] == rows[0]["rft/train_steps"]
    total = sum(r["rft/train_steps"] for r in rows)
    assert [r["step"] for r in read_metrics(run_dir) if "train/loss" in r] == list(range(1, total + 1))
    rungs = sorted(int(p.name.split("-")[1]) for p in run.dose_dir().glob("rft-*"))
    assert rungs[-1] == total and rows[0]["rft/train_steps"] in rungs  # each round's end, no rung overwritten
    # The evaluation ran on the trained adapter and its base.
    assert run.trajectories().is_file() and "| success rate |" in (run_dir / "summary.md").read_text()
    assert any(r["stage"] == "eval" for r in read_metrics(run_dir))


def test_resume_inside_a_round_reuses_its_episodes_and_logs_each_step_once(run_dir, tmp_path):
    """Killed in round 2 after its next-to-last checkpoint (steps count from the round's start there): the
    rows up to that checkpoint stay, so a round trained again from its start would log steps twice."""
    out = tmp_path / "resumed"
    shutil.copytree(run_dir, out)
    run = RunFolder(out)
    offset = _rounds(out)[1]["step"]
    round2 = run.stage_dir("rft") / "round-2"
    (run.stage_dir("rft") / "done").unlink()
    (round2 / "round.json").unlink()
    shutil.rmtree(round2 / "adapter")
    *earlier, last = sorted((run.checkpoints("rft") / "round-2").glob("checkpoint-*"), key=checkpoint_step)
    assert earlier, "round 2 trained too few steps to leave a checkpoint before its last"
    shutil.rmtree(last)
    resume_at = offset + checkpoint_step(earlier[-1])
    trim_metrics(out, "rft", resume_at)
    lines = [line for line in (out / "metrics.jsonl").read_text().splitlines() if '"rft/round": 2' not in line]
    (out / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    stamps = {p: p.stat().st_mtime_ns for p in run.stage_dir("rft").glob("round-*/episodes.jsonl")}

    started = time.time()
    result = _train("--out", str(out), "--resume", "--set", "dose.every=2")
    assert result.exit_code == 0, result.output
    assert run.stage_done("rft") and (round2 / "round.json").is_file()
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # no round sampled again
    assert [r["rft/round"] for r in _rounds(out)] == [1, 2]
    steps = [r["step"] for r in read_metrics(out) if "train/loss" in r]
    assert steps == list(range(1, steps[-1] + 1)) and steps[-1] == sum(r["rft/train_steps"] for r in _rounds(out))
    trained_now = [r["step"] for r in read_metrics(out) if "train/loss" in r and r["time"] > started]
    assert trained_now == list(range(resume_at + 1, steps[-1] + 1))  # from the checkpoint, not the round's start


def _t(task: str, correct: bool, query: str = "q") -> Trajectory:
    call = {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
        "name": "search", "arguments": {"query": query}}}]}
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": f"who is {task}?"}, call,
                {"role": "tool", "content": "doc"}, {"role": "assistant", "content": "answer: x"}]
    return Trajectory(task, "e", 0, "?", messages, [], "S A", "forward", [query], [], [], "x", float(correct),
                      correct, ["x"], [], 1)


def test_the_kept_set_is_exactly_the_correct_episodes():
    episodes = [_t("a", True), _t("a", False), _t("a", True), _t("b", False), _t("b", True, "other"), _t("c", False)]
    kept = kept_episodes(episodes)
    assert kept == [episodes[0], episodes[2], episodes[4]]
    assert kept_episodes(episodes, "distinct") == [episodes[0], episodes[4]]  # a's two are the same episode
    row = round_row(1, episodes, kept)
    assert (row["rft/kept"], row["rft/acceptance_rate"], row["rft/questions_solved"]) == (3, 0.5, 2 / 3)
    assert kept_episodes([_t("a", False)]) == [] and round_row(1, [], [])["rft/acceptance_rate"] == 0.0


def test_kept_episodes_train_only_the_assistant_turns(run_dir):
    """The rows a round trains on, through the sft stage's config and TRL: the prompt, the question and every
    tool result carry label -100; each tool call and the final answer are trained."""
    from trl import SFTTrainer

    from searchgym.agent.demos import to_dataset
    from searchgym.agent.models import load_model
    from searchgym.envs.actions import format_tool_call
    from searchgym.tasks import ToolCall
    from searchgym.train.sft import lora_config, sft_config

    recipe = load_recipe(RECIPE, ["rft.max_length=4096"])  # no truncation: every turn is checked
    kept = kept_episodes(read_trajectories(RunFolder(run_dir).stage_dir("rft") / "round-1" / "episodes.jsonl"))
    model, tokenizer = load_model("searchgym-prior")
    trainer = SFTTrainer(model=model, args=sft_config(recipe, run_dir / "masking", recipe.settings("rft")),
                         train_dataset=to_dataset(kept), processing_class=tokenizer, peft_config=lora_config(recipe))
    for row, episode in zip(trainer.train_dataset, kept):
        labels = list(zip(row["input_ids"], row["labels"]))
        trained = tokenizer.decode([i for i, label in labels if label != -100])
        masked = tokenizer.decode([i for i, label in labels if label == -100])
        assert episode.messages[1]["role"] == "user" and episode.messages[1]["content"] in masked
        for m in episode.messages:
            if m["role"] == "tool":
                assert m["content"].strip() in masked and m["content"].strip() not in trained
            elif m["role"] == "assistant" and m.get("tool_calls"):
                f = m["tool_calls"][0]["function"]
                assert format_tool_call(ToolCall(f["name"], f["arguments"])) in trained
        assert "<tool_response>" not in trained


def test_a_round_with_no_correct_episode_trains_nothing(tmp_path, one_thread):
    """The random 'tiny' model answers nothing: both rounds are logged as skipped, no trainer is built, the
    stage still finishes with its (untrained) adapter and the run is evaluated."""
    out = tmp_path / "run"
    result = _train("--out", str(out), "--set", 'model.base="tiny"', "--set", "rft.num_questions=2",
                    "--set", "rft.samples=2", "--set", "rft.max_turns=2", "--set", "rft.max_new_tokens=8",
                    "--set", "eval.max_turns=2", "--set", "eval.max_new_tokens=8", "--set", "eval.baseline=false")
    assert result.exit_code == 0, result.output
    assert "no correct episode, so no training this round" in result.output
    rows = _rounds(out)
    assert [(r["rft/round"], r["rft/kept"], r["rft/train_steps"], r["rft/skipped"]) for r in rows] == \
        [(1, 0, 0, True), (2, 0, 0, True)]
    assert [r["step"] for r in rows] == [0, 0] and not any("train/loss" in r for r in read_metrics(out))
    run = RunFolder(out)
    assert run.stage_done("rft") and not run.checkpoints("rft").exists() and run.trajectories().is_file()
    weights = load_file(str(run.adapter / "adapter_model.safetensors"))
    assert all(v.abs().sum() == 0 for k, v in weights.items() if "lora_B" in k)


@pytest.mark.parametrize(("override", "message"), [
    ("rft.rounds=0", "rft.rounds: must be an integer >= 1, got 0"),
    ("rft.samples=-1", "rft.samples: must be an integer >= 1, got -1"),
    ("rft.temperature=nan", "rft.temperature: must be a finite number >= 0 (0 = greedy), got nan"),
    ("rft.learning_rate=0", "rft.learning_rate: must be a finite number > 0, got 0"),
    ('rft.keep="best"', "rft.keep"),
    ("rft.round=2", "unknown key 'rft.round'"),
])
def test_bad_settings_stop_at_load_with_one_line(tmp_path, override, message):
    out = tmp_path / "run"
    result = _train("--out", str(out), "--set", override)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not out.exists()


def test_the_section_is_typed_and_written_back():
    recipe = load_recipe(RECIPE, ["rft.keep=\"distinct\""])
    assert recipe.settings("rft") == RFTSettings(rounds=2, num_questions=4, samples=4, max_new_tokens=64,
                                                 rollout_batch_size=16, keep="distinct", learning_rate=5e-3,
                                                 batch_size=2, max_length=1024, logging_steps=1, save_steps=2)
    assert "[rft]" in recipe.to_toml() and 'keep = "distinct"' in recipe.to_toml()
    with pytest.raises(RecipeError, match=r"rft\.keep.*'correct'.*'distinct'"):
        load_recipe(RECIPE, ['rft.keep="best"'])
    assert json.loads(json.dumps(round_row(1, [_t("a", True)], [_t("a", True)])))["rft/acceptance_rate"] == 1.0
