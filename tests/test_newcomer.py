"""Issue #14.12, 13, 15, 17: readable training progress, adapters loadable by AutoPeft, trajectories as a
Parquet dataset, and `searchgym meter` readable at 80 columns writing one meters.json."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from searchgym.trajectory import Trajectory, read_parquet, read_trajectories, write_trajectories


def _traj(task_id: str, sample: int, correct: bool = True) -> Trajectory:
    return Trajectory(task_id, "searchgym/SyntheticWorld-Easy-v0", sample, f"Who is {task_id}?",
                      [{"role": "user", "content": "?"}, {"role": "assistant", "content": "answer: x",
                                                          "tool_calls": [{"function": {"name": "answer"}}]}],
                      [{"name": "search", "arguments": {"query": "x", "k": 3}, "valid": True}], "S A", "forward",
                      ["x"], ["d1", "d2"], ["d1"], "x", float(correct), correct, ["x"], [["d1"]], 1,
                      token_logprobs=[-0.5, -1.0], token_entropies=[0.25, 0.5], token_roles=["query", "other"],
                      meta={"stop_reason": "terminated", "step_rewards": [0.0, 1.0]})


# ---- 12. progress ------------------------------------------------------------------------------------------
def test_training_prints_a_bar_and_one_readable_line_per_log(capsys):
    from searchgym.train.progress import ReadableProgress, log_line

    line = log_line("grpo", 2, 10, {"reward": 0.5, "loss": 1e-3, "kl": 0.0, "epoch": 0.1, "note": "x"})
    assert line == "grpo step 2/10 | loss 0.001 | reward 0.5 | kl 0 | epoch 0.1"
    progress, state = ReadableProgress("grpo"), SimpleNamespace(is_world_process_zero=True, max_steps=4,
                                                                 global_step=0)
    progress.on_train_begin(None, state, None)
    for step in (1, 2):
        state.global_step = step
        progress.on_step_end(None, state, None)
        progress.on_log(None, state, None, logs={"loss": 0.5 / step, "reward": 0.1 * step})
    progress.on_train_end(None, state, None)
    err = capsys.readouterr()
    text = err.out + err.err
    assert "grpo step 1/4 | loss 0.5 | reward 0.1" in text and "grpo step 2/4 | loss 0.25 | reward 0.2" in text
    assert "{'loss'" not in text and "2/4" in text  # no raw dicts; the bar counts steps (with an ETA)


def test_trainers_swap_their_raw_printing_for_the_readable_progress():
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from searchgym.train.progress import ReadableProgress, use_readable_progress

    class Trainer:
        callbacks = [PrinterCallback, ProgressCallback]

        def remove_callback(self, cls):
            self.callbacks = [c for c in self.callbacks if c is not cls]

        def add_callback(self, cb):
            self.callbacks.append(cb)

    trainer = Trainer()
    use_readable_progress(trainer, "grpo")
    assert len(trainer.callbacks) == 1 and isinstance(trainer.callbacks[0], ReadableProgress)
    train = Path(__file__).resolve().parents[1] / "searchgym" / "train"  # every stage attaches it through its context
    assert "use_readable_progress(trainer, self.stage)" in (train / "context.py").read_text()
    assert "ctx.attach(trainer)" in (train / "grpo.py").read_text() and "ctx.attach(trainer)" in (train / "sft.py").read_text()


# ---- 13. adapters load with AutoPeft and with load_model ----------------------------------------------------
def test_a_saved_adapter_loads_with_autopeft_and_load_model(tmp_path):
    from peft import AutoPeftModelForCausalLM, LoraConfig, get_peft_model

    from searchgym.agent.models import load_model
    from searchgym.train import save_adapter

    base, _ = load_model("tiny")
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    save_adapter(model, tmp_path / "run" / "adapter", "tiny")
    config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]).is_dir() and Path(config["base_model_name_or_path"]).name == "tiny"
    loaded = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "run" / "adapter"))
    assert type(loaded).__name__ == "PeftModelForCausalLM"
    rebuilt, tokenizer = load_model(str(tmp_path / "run"))
    assert type(rebuilt).__name__ == "PeftModelForCausalLM" and tokenizer.padding_side == "left"


# ---- 15. trajectories as a Parquet dataset -------------------------------------------------------------------
def test_trajectories_are_also_a_parquet_dataset(tmp_path):
    import datasets

    trajectories = [_traj("q1", 0), _traj("q1", 1, correct=False), _traj("q2", 0)]
    write_trajectories(tmp_path / "trajectories.jsonl", trajectories)
    path = tmp_path / "trajectories.parquet"
    dataset = datasets.load_dataset("parquet", data_files=str(path), cache_dir=str(tmp_path / "hf"))["train"]
    assert dataset.num_rows == 3 and dataset[1]["correct"] is False and dataset[0]["queries"] == ["x"]
    assert json.loads(dataset[0]["calls"])[0]["arguments"] == {"query": "x", "k": 3}
    back = read_parquet(path)
    assert [t.to_json() for t in back] == [t.to_json() for t in read_trajectories(tmp_path)]


# ---- 17. searchgym meter at 80 columns, one meters.json ------------------------------------------------------
def test_meter_table_is_readable_at_80_columns_and_writes_one_file(tmp_path, monkeypatch, capsys):
    from searchgym.report.meter_command import meter_command

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "80")
    runs = []
    for name in ("run_a", "run_b"):
        write_trajectories(tmp_path / name / "trajectories.jsonl", [_traj(q, i) for q in ("q1", "q2") for i in (0, 1)])
        runs.append(tmp_path / name)
    written = meter_command(runs, n_boot=50)
    out = capsys.readouterr().out
    assert written == [Path("meters.json")] and (tmp_path / "meters.json").is_file()
    assert not any((r / "meters.json").exists() for r in runs)
    keys = json.loads((tmp_path / "meters.json").read_text())["inputs"][0]["meters"]
    lines = out.splitlines()
    assert max(map(len, lines)) <= 80
    for key in keys:  # every meter name whole on its own row: no two rows truncated alike
        assert any(line.startswith(("│ " + key + " ", "┃ " + key + " ")) for line in lines), key
    written = meter_command(runs, n_boot=50, out=tmp_path / "elsewhere.json")
    assert written == [tmp_path / "elsewhere.json"]


