"""The report as `make run` leaves it for a new user (issue #27): the training figure draws only the panels some
run logged, a single run is named by its method (recipe name and stages), not its timestamped folder, and per-step
curves are smoothed with the raw values faint behind them. Run folders are fabricated; no model is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgba
from test_report import make_run

from searchgym.report import report_command
from searchgym.report.data import TRAINING_PANELS, summarise
from searchgym.report.discover import discover_runs
from searchgym.report.style import plt
from searchgym.report.training import EMA_SPAN, SMOOTH_MIN_POINTS, draw_training, training_caption
from searchgym.runs import append_metrics

STEPS = 40  # GRPO steps logged one by one (quick.toml: logging_steps = 1), more than SMOOTH_MIN_POINTS


def _planted_rewards(steps: int = STEPS) -> list[float]:
    """A noisy rising reward: what a per-step GRPO log looks like."""
    rng = np.random.default_rng(7)
    return [float(v) for v in np.clip(0.3 + 0.3 * np.arange(steps) / steps + rng.normal(0, 0.15, steps), 0, 1)]


def quick_run(folder: Path, rewards: list[float] | None = None, name: str = "quick",
              stages: tuple[str, ...] = ("grpo",)) -> Path:
    """A run folder like `make run`'s: the recipe it wrote, held-out trajectories, its baseline, and a GRPO log
    of the trainer's own keys only (quick.toml sets [meters] every = 0: no live probes, so no token or strategy
    entropy rows)."""
    make_run(folder, "grpo", 0, n=4, questions=6)
    make_run(folder / "baseline", "base", 0, n=4, questions=6)
    (folder / "metrics.jsonl").unlink(missing_ok=True)  # make_run's own log has strategy-entropy rows
    (folder / "recipe.toml").write_text(f'name = "{name}"\nseed = 0\nstages = {json.dumps(list(stages))}\n')
    for step, reward in enumerate(rewards if rewards is not None else _planted_rewards(), start=1):
        append_metrics(folder, {"stage": "grpo", "step": step, "time": 0.0, "train/reward": reward,
                                "train/reward_std": 0.4, "search/tool_calls_per_episode": 3.0 + 0.01 * step,
                                "train/entropy": 0.5})  # TRL's, never drawn as sampled token entropy
    return folder


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(plt.Text)]


def _panel(fig, title: str):
    return next(ax for ax in fig.axes if ax.get_title() == title)


def test_only_panels_some_run_logged_are_drawn_and_the_caption_names_the_rest(tmp_path):
    data = summarise(discover_runs([quick_run(tmp_path / "quick-20261207-120000")]))
    fig = draw_training(data)
    try:
        titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
        assert titles == ["Tool calls per episode", "Reward", "Reward spread"]  # TRAINING_PANELS order
        for title in titles:  # every drawn panel holds data
            assert any(len(line.get_xdata()) for line in _panel(fig, title).lines)
        texts = " ".join(_texts(fig)).replace("\n", " ").lower()
        assert "not logged by any run" not in texts
        # the PNG alone says why two panels are absent (the README shows it without its caption)
        assert "not drawn, as no run logged them: token entropy, strategy entropy" in texts
    finally:
        plt.close(fig)
    caption = training_caption(data)
    assert "Not drawn, as no run logged them: Token entropy, Strategy entropy" in caption
    assert "[meters] every > 0" in caption and f"span {EMA_SPAN} points" in caption
    # a log of every panel: all five drawn, nothing said missing
    run = tmp_path / "probed"
    make_run(run, "grpo", 0, n=4, questions=6)
    for step in (0, 5, 10):
        append_metrics(run, {"stage": "grpo", "step": step, "probe": True, "entropy/token": 0.4,
                             "diversity/strategy_entropy_jk": 1.0, "search/calls_mean": 3.0, "reward/mean": 0.3,
                             "reward/std": 0.4})
    full = summarise(discover_runs([run]))
    fig = draw_training(full)
    try:
        assert [ax.get_title() for ax in fig.axes if ax.get_title()] == [t for t, _, _ in TRAINING_PANELS]
    finally:
        plt.close(fig)
    assert "Not drawn" not in training_caption(full)


def test_a_single_run_is_named_by_its_method_and_study_arms_keep_their_names(tmp_path):
    run = quick_run(tmp_path / "quick-20261207-120000")
    page = report_command([run], out=tmp_path / "r")
    numbers = json.loads((tmp_path / "r" / "report.json").read_text())
    assert list(numbers["arms"]) == ["base", "quick (grpo)"]
    text = page.read_text()
    assert "quick (grpo)" in text and "| quick (grpo) | 1 |" in (tmp_path / "r" / "report.md").read_text()
    fig = draw_training(summarise(discover_runs([run])))
    try:
        legend = [t for t in _texts(fig) if "quick" in t]
        assert legend == ["quick (grpo), 1 seed"]  # the method in the legend, not the folder's timestamp
    finally:
        plt.close(fig)
    # where the folder is all that is known (no recipe), the folder's name stays
    (run / "recipe.toml").unlink()
    assert [r.arm for r in discover_runs([run])] == ["base", "quick-20261207-120000"]
    # stages in order; two runs of one method stay two arms (not seeds of one), told apart by their folders
    a = quick_run(tmp_path / "agent-1", name="agent", stages=("sft", "grpo"))
    b = quick_run(tmp_path / "agent-2", name="agent", stages=("sft", "grpo"))
    assert [r.arm for r in discover_runs([a, b])][-2:] == ["agent (sft → grpo) · agent-1",
                                                         "agent (sft → grpo) · agent-2"]
    # a study: arm folder names, whatever recipe the seed folders wrote; a seed folder alone is its study's arm
    study = tmp_path / "study"
    for arm in ("base", "grpo-clip"):
        quick_run(study / arm / "seed0")
    (study / "study.toml").write_text('name = "s"\n[arms.base]\n[arms.grpo-clip]\n')
    assert [r.arm for r in discover_runs([study])] == ["base", "grpo-clip"]
    assert [r.arm for r in discover_runs([study / "grpo-clip" / "seed0"])] == ["base", "grpo-clip"]


def test_per_step_curves_are_an_ema_with_the_raw_values_faint_behind(tmp_path):
    rewards = _planted_rewards()
    data = summarise(discover_runs([quick_run(tmp_path / "quick-20261207-120000", rewards)]))
    # the EMA written out: each point the average of all so far, weight (1 - 2/(span+1))^age
    keep = 1 - 2 / (EMA_SPAN + 1)
    expected = [sum(keep ** (t - i) * rewards[i] for i in range(t + 1)) / sum(keep ** (t - i) for i in range(t + 1))
                for t in range(len(rewards))]
    fig = draw_training(data)
    try:
        ax = _panel(fig, "Reward")
        smooth = [line for line in ax.lines if np.allclose(line.get_ydata(), expected)]
        raw = [line for line in ax.lines if np.allclose(line.get_ydata(), rewards)]
        assert len(smooth) == 1 and len(raw) == 1
        assert list(smooth[0].get_xdata()) == list(range(1, STEPS + 1))
        assert (smooth[0].get_alpha() or 1.0) == 1.0 and smooth[0].get_linestyle() != "None"
        assert (raw[0].get_alpha() or 1.0) < 1 and raw[0].get_linestyle() == "None" and raw[0].get_marker() != "None"
        assert smooth[0].get_label().startswith("quick (grpo)") and raw[0].get_label().startswith("_")
        # the smoothing is real: the EMA moves less from step to step than the planted values
        assert np.std(np.diff(expected)) < 0.5 * np.std(np.diff(rewards))
        assert to_rgba(smooth[0].get_color())[:3] == to_rgba(raw[0].get_color())[:3]  # one arm, one colour
    finally:
        plt.close(fig)
    # a short series (probes every N steps, each an average already) is drawn raw at full strength
    short = rewards[:SMOOTH_MIN_POINTS - 1]
    fig = draw_training(summarise(discover_runs([quick_run(tmp_path / "short", short)])))
    try:
        lines = _panel(fig, "Reward").lines
        assert len(lines) == 1 and np.allclose(lines[0].get_ydata(), short) and lines[0].get_alpha() > 0.8
    finally:
        plt.close(fig)



def test_sharpening_without_a_pass_at_n_claim_does_not_say_pass_at_n_fell():
    """`make run`'s verdict read "pass@4 did fall (0.620 vs 0.580)": a pass@n with no claim either way must read
    "did not measurably rise"; only a claimed drop reads "fall"."""
    from searchgym.report import verdict
    from searchgym.report.data import ArmSummary, Estimate, StudyData

    def arm(name: str, success: Estimate, pass_n: Estimate) -> ArmSummary:
        nan = Estimate(float("nan"), float("nan"), float("nan"))
        table = {"success@1": success, "pass@n": pass_n, "strategy entropy": nan, "unique docs": nan,
                 "query breadth": nan}
        return ArmSummary(name, [], [], table, {}, {}, {})

    base = arm("base", Estimate(0.20, 0.15, 0.25), Estimate(0.58, 0.48, 0.67))
    rose = arm("quick (grpo)", Estimate(0.34, 0.28, 0.40), Estimate(0.62, 0.53, 0.71))  # CIs overlap: no claim
    text = " ".join(verdict(StudyData([base, rose], n=4, questions=100)))
    assert "quick (grpo) sharpened rather than widened" in text
    assert "pass@4 did not measurably rise (0.620" in text and "did fall" not in text
    fell = arm("quick (grpo)", Estimate(0.34, 0.28, 0.40), Estimate(0.30, 0.22, 0.38))
    assert "pass@4 did fall (0.300" in " ".join(verdict(StudyData([base, fell], n=4, questions=100)))
