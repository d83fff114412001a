"""Echo-trap warnings: the spike detector against a brute-force median, and the live callback fed synthetic
trainer logs and probes, firing exactly where the history says it should (and nowhere else)."""

from __future__ import annotations

import random
import statistics
from types import SimpleNamespace

import pytest
from transformers import TrainerControl, TrainerState

from searchgym.meters.alarms import Above, alarm_rules, fired_alarms
from searchgym.meters.echo_trap import ECHO_TRAP_RULES, echo_trap_history, grad_norm_spikes
from searchgym.runs import append_metrics, read_metrics
from searchgym.train.probes import DiversityCallback

ARGS = SimpleNamespace(report_to=[])  # all the callback reads of the training arguments here


# ---- the pure detector -----------------------------------------------------------------------------------

def brute_force_spikes(values: list[float], factor: float, min_history: int) -> list[int]:
    out = []
    for i, v in enumerate(values):
        earlier = values[:i]
        if len(earlier) >= min_history:
            ordered = sorted(earlier)
            mid = len(ordered) // 2
            median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
            if v > factor * median:
                out.append(i)
    return out


def test_spike_detector_matches_a_brute_force_running_median():
    rng = random.Random(0)
    for _ in range(200):
        values = [rng.lognormvariate(0, 1.0) for _i in range(rng.randint(0, 40))]
        for factor, min_history in ((5.0, 3), (2.0, 1), (3.0, 6)):
            assert grad_norm_spikes(values, factor, min_history) == brute_force_spikes(values, factor, min_history)


def test_history_alarms_fire_at_the_first_spike_and_the_first_zero_std_excess():
    rows = ([{"step": s, "train/grad_norm": 1.0 + 0.1 * (s % 3), "train/frac_reward_zero_std": 0.3} for s in range(1, 9)]
            + [{"step": 9, "train/grad_norm": 5.4, "train/frac_reward_zero_std": 0.85},  # 5.4 / 1.1 < 5: no spike
               {"step": 10, "train/grad_norm": 6.0, "train/frac_reward_zero_std": 0.9}])   # 6.0 / 1.1 > 5
    events = fired_alarms(echo_trap_history(rows), ECHO_TRAP_RULES)
    assert [(e.step, e.key) for e in events] == [(9, "alarm/frac_reward_zero_std"), (10, "alarm/grad_norm_ratio")]


# ---- the live callback -----------------------------------------------------------------------------------

def callback(tmp_path, rules=(), **kwargs) -> DiversityCallback:
    return DiversityCallback(tmp_path, tokenizer=None, env_id="unused", every=1, rules=list(rules), stage="grpo",
                             max_overhead=0, **kwargs)


def feed_logs(cb: DiversityCallback, logs: list[dict], first_step: int = 1) -> list[TrainerControl]:
    """Hand the callback one trainer log per step, as Trainer.log does; returns each step's control."""
    state, controls = TrainerState(), []
    for step, row in enumerate(logs, start=first_step):
        state.global_step = step
        control = TrainerControl()
        cb.on_log(ARGS, state, control, logs=dict(row))
        controls.append(control)
    return controls


NORMS = [2.0, 1.5, 1.8, 1.6, 1.7, 1.4, 1.6, 9.5, 1.5, 20.0]  # spikes at steps 8 (9.5 > 5 × 1.65) and 10


def grpo_logs(norms: list[float], zero_std: list[float] | None = None) -> list[dict]:
    zero_std = zero_std or [0.2] * len(norms)
    return [{"loss": 0.1, "grad_norm": g, "reward": 0.4, "reward_std": 0.3, "frac_reward_zero_std": z}
            for g, z in zip(norms, zero_std)]


def test_a_grad_norm_spike_alarms_once_logs_every_ratio_and_saves(tmp_path, caplog):
    cb = callback(tmp_path)
    with caplog.at_level("WARNING"):
        controls = feed_logs(cb, grpo_logs(NORMS))
    assert grad_norm_spikes(NORMS) == [7, 9]  # steps 8 and 10
    alarms = [r for r in read_metrics(tmp_path) if r.get("event") == "alarm"]
    assert [(a["step"], a["key"], a["rule"]) for a in alarms] == [(8, "alarm/grad_norm_ratio", "above(5)")]
    assert [c.should_save for c in controls] == [i == 8 for i in range(1, 11)]  # the second spike: logged only
    assert "echo-trap alarm at step 8" in caplog.text and "alarm/grad_norm_ratio rose to" in caplog.text
    rows = [r for r in read_metrics(tmp_path) if "alarm/grad_norm_ratio" in r]
    assert [r["step"] for r in rows] == list(range(4, 11))  # a ratio once 3 norms make a baseline
    assert rows[-1]["alarm/grad_norm_ratio"] == pytest.approx(20.0 / statistics.median(NORMS[:9]))
    assert all(r["stage"] == "grpo" and r["alarm/frac_reward_zero_std"] == 0.2 for r in rows)


def test_a_steady_run_stays_quiet(tmp_path):
    cb = callback(tmp_path)
    controls = feed_logs(cb, grpo_logs([1.0 + 0.3 * (i % 4) for i in range(30)], [0.5] * 30))
    assert not cb.events and not any(c.should_save for c in controls)
    assert len(cb.echo) == 30  # frac_reward_zero_std is a reading from the first log on


def test_zero_std_groups_alarm_when_most_groups_give_no_gradient(tmp_path):
    cb = callback(tmp_path)
    feed_logs(cb, grpo_logs([1.0] * 6, [0.2, 0.5, 0.7, 0.8, 0.85, 0.95]))  # 0.8 is not above 0.8
    assert [(e.step, e.key, e.value) for e in cb.events] == [(5, "alarm/frac_reward_zero_std", 0.85)]


def test_sft_logs_without_rewards_watch_the_grad_norm_only(tmp_path):
    cb = callback(tmp_path)
    feed_logs(cb, [{"loss": 1.0, "grad_norm": g, "learning_rate": 1e-4} for g in NORMS])
    assert [(e.step, e.key) for e in cb.events] == [(8, "alarm/grad_norm_ratio")]
    assert not any("alarm/frac_reward_zero_std" in r for r in read_metrics(tmp_path))


def test_the_probes_within_group_reward_std_alarms_when_it_halves(tmp_path, monkeypatch):
    cb = callback(tmp_path)
    probes = iter([{"reward/std": s, "reward/success": 0.5} for s in (0.40, 0.35, 0.25, 0.19, 0.1)])
    monkeypatch.setattr(cb, "measure", lambda model: (next(probes), []))
    state, controls = TrainerState(max_steps=4), []
    cb.on_train_begin(ARGS, state, TrainerControl(), model=None)  # the baseline probe: 0.40
    for step in range(1, 5):
        state.global_step = step
        controls.append(TrainerControl())
        cb.on_step_end(ARGS, state, controls[-1], model=None)
    # 0.19 < 0.5 × 0.40 first at the probe of step 3
    assert [(e.step, e.key) for e in cb.events] == [(3, "alarm/reward_std")]
    assert [c.should_save for c in controls] == [False, False, True, False]
    probe_rows = [r for r in read_metrics(tmp_path) if r.get("probe")]
    assert [r["alarm/reward_std"] for r in probe_rows] == [0.40, 0.35, 0.25, 0.19, 0.1]


def test_a_resumed_run_measures_spikes_against_the_norms_logged_before(tmp_path, monkeypatch):
    for step, g in enumerate([1.0, 1.2, 0.9, 1.1], start=1):  # what MetricsLogger wrote before the crash
        append_metrics(tmp_path, {"stage": "grpo", "step": step, "train/loss": 0.1, "train/grad_norm": g})
    cb = callback(tmp_path)
    monkeypatch.setattr(cb, "measure", lambda model: ({"reward/std": 0.3}, []))
    cb.on_train_begin(ARGS, TrainerState(global_step=4, max_steps=10), TrainerControl(), model=None)
    assert cb.grad_norms == [1.0, 1.2, 0.9, 1.1]
    feed_logs(cb, [{"loss": 0.1, "grad_norm": 6.0}], first_step=5)  # 6.0 > 5 × 1.05: a fresh run would wait
    assert [(e.step, e.key) for e in cb.events] == [(5, "alarm/grad_norm_ratio")]


def test_recipe_alarms_on_alarm_keys_replace_the_echo_trap_defaults(tmp_path):
    rules = alarm_rules({"alarm/grad_norm_ratio": {"above": 3.0}, "reward/zero_var_frac": {"above": 0.9}})
    cb = callback(tmp_path, rules)
    assert cb.echo_rules == [Above("alarm/grad_norm_ratio", 3.0)] and cb.rules == [Above("reward/zero_var_frac", 0.9)]
    feed_logs(cb, [{"grad_norm": g} for g in (1.0, 1.0, 1.0, 4.0)])
    assert [(e.step, e.rule) for e in cb.events] == [(4, Above("alarm/grad_norm_ratio", 3.0))]
    assert callback(tmp_path / "off", echo_rules=()).echo_rules == []  # echo-trap alarms off
