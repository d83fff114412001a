"""Live diversity meters in a real (tiny) training run: schedule, logged keys, report_to, alarms, saving.

One short LoRA SFT run of the tiny random model on a small synthetic world (hashing embedder) is shared
by the schedule tests; the alarm tests drive the callback's alarm path with fabricated meter values.
"""

from __future__ import annotations

import math

import pytest
from transformers import TrainerControl, TrainerState
from transformers.integrations import TensorBoardCallback

from searchgym.meters.alarms import Above, RelativeDrop
from searchgym.runs import MetricsLogger, read_metrics
from searchgym.train.probes import (
    DiversityCallback,
    alarm_rules,
    make_diversity_callback,
    probe_task_ids,
)
from searchgym.train.stages import recipe_from_dict
from searchgym.trajectory import read_trajectories

SMALL_WORLD = {"embedder": "hashing", "top_k": 2, "max_obs_chars": 200, "max_steps": 4,
               "world_kwargs": {"size": "small", "max_hops": 2, "n_train": 40, "n_test": 10}}
STEPS, EVERY = 5, 2


def tiny_recipe(**meters) -> object:
    return recipe_from_dict({
        "model": {"base": "tiny"}, "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "env": {"id": "searchgym/SyntheticWorld-Easy-v0", "kwargs": SMALL_WORLD},
        "eval": {"temperature": 1.0, "max_turns": 2, "max_new_tokens": 8, "batch_size": 8},
        # max_overhead 0: this run tests the schedule itself (its probes cost more than its 5 tiny steps)
        "meters": {"every": EVERY, "probe_questions": 2, "samples": 2, "max_overhead": 0, **meters},
    })


class Recorder(TensorBoardCallback):
    """Stands in for a report_to backend (tensorboard is not installed): records what it is sent."""

    def __init__(self):
        self.logs: list[tuple[int, dict]] = []

    def on_train_begin(self, *args, **kwargs):
        pass

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append((state.global_step, dict(logs or {})))

    def on_train_end(self, *args, **kwargs):
        pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 5-step LoRA run of the tiny model (plain Trainer on short token rows: the callback does not care
    what the loss is, and long chat rows would make each step cost seconds) with the callback every 2
    steps, probing the real env. Returns (run_dir, callback, recorder, trainer)."""
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from searchgym.agent.models import load_model

    run_dir = tmp_path_factory.mktemp("run")
    recipe = tiny_recipe()
    model, tokenizer = load_model("tiny")
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    ids = tokenizer("Who founded the company that built the bridge in the capital?")["input_ids"]
    rows = [{"input_ids": ids, "labels": ids}] * 8
    args = TrainingArguments(output_dir=str(run_dir / "checkpoints"), max_steps=STEPS, per_device_train_batch_size=1,
                             logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                             disable_tqdm=True, learning_rate=1e-3)
    recorder = Recorder()
    trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[recorder, MetricsLogger(run_dir, "sft")])
    callback = make_diversity_callback(recipe, run_dir, tokenizer, stage="sft").attach(trainer)
    trainer.train()
    return run_dir, callback, recorder, trainer


def test_probes_run_at_begin_every_and_end(trained):
    run_dir, callback, _, _ = trained
    probes = [r for r in read_metrics(run_dir) if r.get("probe")]
    assert [r["step"] for r in probes] == [0, 2, 4, 5]
    assert {r["stage"] for r in probes} == {"sft"}
    # Each probe's trajectories as JSON lines, with a Parquet copy beside them (datasets.load_dataset("parquet")).
    assert sorted(p.name for p in (run_dir / "probes").glob("*.jsonl")) == [f"step{k}.jsonl" for k in (0, 2, 4, 5)]
    assert sorted(p.stem for p in (run_dir / "probes").glob("*.parquet")) == [f"step{k}" for k in (0, 2, 4, 5)]
    trajectories = list(read_trajectories(run_dir / "probes" / "step4.jsonl"))
    assert len(trajectories) == 4 and len({t.task_id for t in trajectories}) == 2  # 2 questions x 2 samples
    assert {t.task_id for t in trajectories} == set(callback.task_ids)


def test_probe_rows_hold_finite_meters(trained):
    run_dir, _, _, trainer = trained
    row = next(r for r in read_metrics(run_dir) if r.get("probe") and r["step"] == 2)
    for key in ("diversity/vendi", "diversity/signature_entropy_mm", "diversity/distinct_1", "reward/success",
                "search/calls_mean", "search/calls_mode_share", "entropy/token", "passk/pass@1"):
        assert math.isfinite(row[key]), key
    assert row["meta/n"] == 2 and row["meta/questions"] == 2
    assert 1.0 <= row["diversity/vendi"] <= 4.0  # at most the n samples of a question
    assert row["entropy/token"] > 0  # a random model samples from a wide distribution
    assert row["time/probe_seconds"] > 0
    assert all(not k.startswith("train/") for k in row if k not in ("stage", "step", "time", "probe"))
    assert trainer.model.training  # the probe put the model back in train mode


def test_report_to_backends_receive_the_probe_values(trained):
    _, _, recorder, _ = trained
    probe_steps = [step for step, logs in recorder.logs if "diversity/vendi" in logs]
    assert probe_steps == [0, 2, 4, 5]
    train_logs = [logs for _, logs in recorder.logs if "loss" in logs]
    assert len(train_logs) == STEPS and not any("diversity/vendi" in logs for logs in train_logs)


def _fake_probe(monkeypatch, callback: DiversityCallback, values: list[dict]):
    """Make each probe return the next fabricated meter dict (no model, no env)."""
    feed = iter(values)
    monkeypatch.setattr(callback, "measure", lambda model: (next(feed), []))


def _drive(callback: DiversityCallback, steps: int) -> list[TrainerControl]:
    """Call the callback as a trainer would for ``steps`` optimizer steps; returns each step's control."""
    from trl import SFTConfig

    args = SFTConfig(output_dir=str(callback.run_dir / "out"), report_to="none", use_cpu=True)
    state = TrainerState(max_steps=steps)
    callback.on_train_begin(args, state, TrainerControl(), model=None)
    controls = []
    for step in range(1, steps + 1):
        state.global_step = step
        control = TrainerControl()
        callback.on_step_end(args, state, control, model=None)
        controls.append(control)
    callback.on_train_end(args, state, TrainerControl(), model=None)
    return controls


def _callback(tmp_path, rules, save_on_alarm=True) -> DiversityCallback:
    return DiversityCallback(tmp_path, tokenizer=None, env_id="unused", every=1, rules=rules,
                             save_on_alarm=save_on_alarm, stage="grpo", max_overhead=0)


COLLAPSE = [{"diversity/strategy_entropy_mm": h, "reward/zero_var_frac": z}
            for h, z in [(1.4, 0.1), (1.2, 0.2), (0.9, 0.4), (0.5, 0.9), (0.2, 0.95)]]
STABLE = [{"diversity/strategy_entropy_mm": h, "reward/zero_var_frac": 0.1} for h in (1.4, 1.3, 1.45, 1.35, 1.4)]
RULES = [RelativeDrop("diversity/strategy_entropy_mm", 0.5), Above("reward/zero_var_frac", 0.8)]


def test_alarms_fire_once_on_a_collapse_and_save_a_checkpoint(tmp_path, monkeypatch):
    callback = _callback(tmp_path, RULES)
    _fake_probe(monkeypatch, callback, COLLAPSE)
    controls = _drive(callback, steps=4)  # probes at steps 0..4: the 5 fabricated dicts
    alarms = [r for r in read_metrics(tmp_path) if r.get("event") == "alarm"]
    # entropy 0.5 < 0.5 x 1.4 and zero_var 0.9 > 0.8 both first hold at step 3; later steps stay quiet
    assert sorted((a["step"], a["key"], a["rule"]) for a in alarms) == [
        (3, "diversity/strategy_entropy_mm", "relative_drop(0.5)"), (3, "reward/zero_var_frac", "above(0.8)")]
    assert all(a["stage"] == "grpo" and a["message"] for a in alarms)
    assert [c.should_save for c in controls] == [False, False, True, False]


def test_no_alarm_on_a_stable_run(tmp_path, monkeypatch):
    callback = _callback(tmp_path, RULES)
    _fake_probe(monkeypatch, callback, STABLE)
    controls = _drive(callback, steps=4)
    assert not [r for r in read_metrics(tmp_path) if r.get("event") == "alarm"]
    assert not any(c.should_save for c in controls)
    assert len([r for r in read_metrics(tmp_path) if r.get("probe")]) == 5


def test_save_on_alarm_off_only_logs(tmp_path, monkeypatch):
    callback = _callback(tmp_path, RULES, save_on_alarm=False)
    _fake_probe(monkeypatch, callback, COLLAPSE)
    controls = _drive(callback, steps=4)
    assert len(callback.events) == 2 and not any(c.should_save for c in controls)


def test_a_resumed_run_compares_with_the_original_baseline(tmp_path, monkeypatch):
    first = _callback(tmp_path, RULES)
    _fake_probe(monkeypatch, first, COLLAPSE[:2])
    _drive(first, steps=1)  # probes at 0 and 1: entropy 1.4 then 1.2, no alarm
    resumed = _callback(tmp_path, RULES)
    _fake_probe(monkeypatch, resumed, [COLLAPSE[2], {"diversity/strategy_entropy_mm": 0.6}])
    from trl import SFTConfig

    args = SFTConfig(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True)
    state = TrainerState(max_steps=10, global_step=1)
    resumed.on_train_begin(args, state, TrainerControl(), model=None)
    state.global_step = 2
    resumed.on_step_end(args, state, TrainerControl(), model=None)
    # 0.6 < 0.5 x 1.4, the step-0 baseline read back from metrics.jsonl; measured against the resumed run's
    # own first probe (0.9) it would not fire.
    assert [(e.step, e.key) for e in resumed.events] == [(2, "diversity/strategy_entropy_mm")]


class FakeClock:
    """Wall time that advances only when told: a training step costs ``step`` s, a probe ``probe`` s."""

    def __init__(self, step: float, probe: float):
        self.now, self.step, self.probe = 0.0, step, probe

    def __call__(self) -> float:
        return self.now


def _budgeted(tmp_path, monkeypatch, clock: FakeClock, every: int, max_overhead: float) -> DiversityCallback:
    callback = DiversityCallback(tmp_path, tokenizer=None, env_id="unused", every=every, rules=[],
                                 stage="sft", max_overhead=max_overhead, clock=clock)

    def measure(model):
        clock.now += clock.probe
        return {"diversity/strategy_entropy_mm": 1.0}, []

    monkeypatch.setattr(callback, "measure", measure)
    return callback


def _train(callback: DiversityCallback, clock: FakeClock, steps: int) -> list[int]:
    """Drive a run of ``steps`` steps on the fake clock; returns the probed steps."""
    from trl import SFTConfig

    args = SFTConfig(output_dir=str(callback.run_dir / "out"), report_to="none", use_cpu=True)
    state = TrainerState(max_steps=steps)
    callback.on_train_begin(args, state, TrainerControl(), model=None)
    for step in range(1, steps + 1):
        clock.now += clock.step
        state.global_step = step
        callback.on_step_end(args, state, TrainerControl(), model=None)
    callback.on_train_end(args, state, TrainerControl(), model=None)
    return [r["step"] for r in read_metrics(callback.run_dir) if r.get("probe")]


def test_the_overhead_budget_skips_probes_a_cheap_step_cannot_pay_for(tmp_path, monkeypatch):
    # A prior-lab-like model: 1.5 s per step, 20 s per probe, a probe scheduled every 10 steps. Probes on
    # schedule would cost 20 / 15 = 133% of training; under a 5% budget (probe time incl. the baseline
    # <= 5% of training time) the next probe waits until training time reaches 40 s / 0.05 = 800 s.
    clock = FakeClock(step=1.5, probe=20.0)
    callback = _budgeted(tmp_path, monkeypatch, clock, every=10, max_overhead=0.05)
    probed = _train(callback, clock, steps=1000)
    assert probed[0] == 0 and probed[1] == 540  # 2 x 20 s <= 0.05 x 1.5 x 540 = 40.5 s (530: 39.75)
    train_seconds = 1000 * 1.5
    assert callback.probe_seconds / train_seconds <= 0.05 + 20 / train_seconds  # within one probe of budget
    assert all(s % 10 == 0 for s in probed[1:])  # skipped probes wait for the grid: seeds stay aligned
    assert len(callback.skipped) == 100 + 1 - len(probed)
    rows = [r for r in read_metrics(tmp_path) if r.get("probe")]
    assert rows[-1]["time/probe_overhead"] <= 0.05


def test_an_expensive_step_probes_on_schedule_within_budget(tmp_path, monkeypatch):
    # SmolLM2-like GRPO at the default interval: 160 s per step, 60 s per probe, every 100 steps: the
    # baseline and one probe per 16,000 s of training are 0.75%.
    clock = FakeClock(step=160.0, probe=60.0)
    callback = _budgeted(tmp_path, monkeypatch, clock, every=100, max_overhead=0.05)
    assert _train(callback, clock, steps=300) == [0, 100, 200, 300] and not callback.skipped
    # every 10 steps: the baseline's 60 s + 60 s > 5% of 1,600 s, so step 10 waits for step 20 (120 <= 160)
    clock = FakeClock(step=160.0, probe=60.0)
    (tmp_path / "b").mkdir()
    callback = _budgeted(tmp_path / "b", monkeypatch, clock, every=10, max_overhead=0.05)
    assert _train(callback, clock, steps=40) == [0, 20, 30, 40] and callback.skipped == [10]


def test_no_budget_probes_strictly_on_schedule(tmp_path, monkeypatch):
    clock = FakeClock(step=1.5, probe=20.0)
    callback = _budgeted(tmp_path, monkeypatch, clock, every=10, max_overhead=0)
    assert _train(callback, clock, steps=25) == [0, 10, 20, 25]


def test_max_overhead_is_validated():
    with pytest.raises(ValueError, match="max_overhead"):
        DiversityCallback("unused", tokenizer=None, env_id="unused", every=1, max_overhead=1.5)
    from searchgym.config.agent_recipe import RecipeError

    with pytest.raises(RecipeError, match="meters.max_overhead"):
        tiny_recipe(max_overhead=-0.1)


def test_make_diversity_callback_reads_the_recipe(tmp_path):
    assert make_diversity_callback(tiny_recipe(every=0), tmp_path, tokenizer=None) is None
    callback = make_diversity_callback(
        tiny_recipe(alarms=[{"rule": "mode_collapse", "key": "search/calls_mode_share", "threshold": 0.95}],
                    save_on_alarm=False), tmp_path, tokenizer=None)
    assert callback.every == EVERY and callback.samples == 2 and not callback.save_on_alarm
    assert callback.max_overhead == 0 and make_diversity_callback(recipe_from_dict({}), tmp_path, None).max_overhead == 0.05
    assert callback.decoding == {"temperature": 1.0, "top_p": 1.0, "max_turns": 2, "max_new_tokens": 8,
                                 "batch_size": 8}
    assert callback.env_kwargs["split"] == "test"
    assert [type(r).__name__ for r in callback.rules] == ["ModeCollapse"]


def test_alarm_config_errors_say_what_to_write():
    with pytest.raises(ValueError, match="relative_drop"):
        alarm_rules([{"rule": "relative_drop", "key": "x"}])
    with pytest.raises(ValueError, match="unknown condition"):
        alarm_rules([{"rule": "drop", "key": "x", "fraction": 0.5}])
    assert alarm_rules({"x": {"below": 1}}) == alarm_rules([{"x": {"below": 1}}])


def test_probe_set_is_fixed_by_the_seed():
    ids = [f"t{i}" for i in range(50)]
    assert probe_task_ids(ids, 8, seed=3) == probe_task_ids(ids, 8, seed=3)
    assert probe_task_ids(ids, 8, seed=3) != probe_task_ids(ids, 8, seed=4)
    assert len(set(probe_task_ids(ids, 8, seed=3))) == 8
