"""The study report on fabricated run folders: arms with known behaviour, so the numbers, figures and
verdict can be checked against what was built in. No model is loaded."""

from __future__ import annotations

import base64
import json
import math
import random
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from searchgym.meters.claim_rules import paired_rule_mde
from searchgym.report import compare_cis, report_command, verdict
from searchgym.report.data import ArmSummary, Estimate, StudyData, _two_level_estimate, summarise
from searchgym.report.discover import discover_runs
from searchgym.report.rules import compare_arms, detectable_difference
from searchgym.runs import append_metrics
from searchgym.trajectory import Trajectory, write_trajectories

STRATEGIES = ("forward", "question_first", "parallel", "snippet", "verify")
QUESTIONS, N = 12, 8

# arm -> (strategy weights, per-question success probability as a function of the question index)
ARMS = {
    "base": ((1, 1, 1, 1, 1), lambda q: 0.3),
    "sft-diverse": ((1, 1, 1, 1, 1), lambda q: 0.45),
    "grpo": ((40, 1, 0, 0, 0), lambda q: 0.95 if q % 2 == 0 else 0.0),  # sharp on half the questions
}


def _trajectory(arm: str, seed: int, q: int, i: int, rng: random.Random) -> Trajectory:
    weights, p = ARMS[arm]
    strategy = rng.choices(STRATEGIES, weights=weights)[0]
    wide = arm != "grpo"
    queries = [f"{strategy} q{q} {rng.randrange(50) if wide else 0}" for _ in range(1 + (i % 3 if wide else 0))]
    docs = [f"d{q}-{rng.randrange(20) if wide else j}" for j in range(3)]
    correct = rng.random() < p(q)
    calls = [{"name": "search", "arguments": {"query": x}, "valid": True} for x in queries]
    calls.append({"name": "answer", "arguments": {"answer": "x"}, "valid": True})
    return Trajectory(task_id=f"q{q:02d}", env_id="searchgym/Fake-v0", sample=i, question=f"question {q}?",
                      messages=[], calls=calls, signature=" ".join(["S"] * len(queries) + ["A"]),
                      strategy=strategy, queries=queries, docs_retrieved=docs, docs_opened=docs[:1],
                      answer="gold" if correct else f"wrong{rng.randrange(3)}", reward=float(correct),
                      correct=correct, gold_answers=["gold"], evidence=[[f"d{q}-0"]], difficulty=1 + q % 2,
                      token_entropies=[rng.uniform(0.2, 0.4) if arm == "grpo" else rng.uniform(0.8, 1.2)
                                       for _ in range(5)])


def make_run(folder: Path, arm: str, seed: int, n: int = N, questions: int = QUESTIONS) -> Path:
    """A run folder as `searchgym train` leaves it: trajectories.jsonl and metrics.jsonl (plus demos/)."""
    rng = random.Random(f"{arm}-{seed}")
    folder.mkdir(parents=True, exist_ok=True)
    write_trajectories(folder / "trajectories.jsonl",
                       [_trajectory(arm, seed, q, i, rng) for q in range(questions) for i in range(n)])
    if arm != "base":
        stages = [("sft", 10)] if arm.startswith("sft") else [("grpo", 12)]
        for stage, steps in stages:
            for step in range(1, steps + 1):
                drop = step / steps if arm == "grpo" else 0.1 * step / steps
                append_metrics(folder, {"stage": stage, "step": step, "time": 0.0,
                                        "train/entropy": 1.0 - 0.8 * drop + rng.uniform(-0.03, 0.03),
                                        "train/reward": 0.3 + 0.4 * drop, "train/reward_std": 0.4 * (1 - drop),
                                        "diversity/strategy_entropy_mm": 1.6 * (1 - drop) + 0.05 * seed,
                                        "search/tool_calls_per_episode": 2.0 - drop})
    if arm == "sft-diverse":
        (folder / "demos").mkdir(exist_ok=True)
        rows = [{"strategy": s} for s in STRATEGIES for _ in range(4)]
        (folder / "demos" / "diverse.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "demos" / "narrow.jsonl").write_text('{"strategy": "forward"}\n')  # built, not trained on
    return folder


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    for arm in ARMS:
        for seed in range(3):
            make_run(root / arm / f"seed{seed}", arm, seed)
    (root / "study.toml").write_text('name = "t"\n[arms.base]\n[arms.sft-diverse]\n[arms.grpo]\n')
    return root


@pytest.fixture(scope="module")
def report(study) -> Path:
    return report_command([study])


def test_summary_numbers_match_what_was_fabricated(study):
    data = summarise(discover_runs([study]))
    assert [a.name for a in data.arms] == ["base", "sft-diverse", "grpo"]
    assert (data.n, data.questions) == (N, QUESTIONS)
    base, diverse, grpo = data.arms
    assert grpo.shares["forward"] > 0.9 and max(base.shares.values()) < 0.35
    # grpo is sharp: better single-sample success, but half the questions are never solved.
    assert grpo.table["success@1"].value > base.table["success@1"].value
    assert grpo.table["pass@n"].value == pytest.approx(0.5, abs=0.05)
    assert compare_cis(grpo.table["strategy entropy"], base.table["strategy entropy"]) == "lower"
    # each run's per-question values of every table column, on the shared questions: what the paired rule reads
    assert grpo.questions == [f"q{q:02d}" for q in range(QUESTIONS)]
    assert set(grpo.per_question) == set(grpo.table) and grpo.per_question["strategy entropy"].shape == (3, QUESTIONS)
    assert grpo.table["strategy entropy"].value == pytest.approx(np.nanmean(grpo.per_question["strategy entropy"]))
    assert grpo.overlap["only_b"] >= 4 and grpo.overlap["questions"] == QUESTIONS
    assert diverse.demo_share == pytest.approx({s: 0.2 for s in STRATEGIES})
    # pass@k is monotone in k, with CIs around it, on the ladder 1, 2, 4, 8
    assert sorted(base.passk) == [1, 2, 4, 8]
    values = [base.passk[k].value for k in sorted(base.passk)]
    assert values == sorted(values) and all(e.lo <= e.value <= e.hi for e in base.passk.values())
    # training curves: stage steps, mean with min-max band over the 3 seeds
    curve = grpo.curves["Strategy entropy"]
    assert [x for x, *_ in curve] == list(range(1, 13)) and all(lo <= m <= hi for _, m, lo, hi in curve)
    # The fabricated SFT log holds train/entropy only (teacher-forced on demos), never drawn as sampled entropy.
    assert base.curves == {} and "Token entropy" not in diverse.curves and "Strategy entropy" in diverse.curves


def test_verdict_follows_the_numbers(study):
    data = summarise(discover_runs([study]))
    text = " ".join(verdict(data))
    assert "grpo collapsed exploration breadth" in text and "the 95% CI excludes 0" in text
    # grpo's success@1 is 0.95 on half the questions and 0 on the rest: on 12 questions the paired rule does
    # not establish a higher mean (the CIs of the seed rule did), but the pass@8 it lost is claimed
    assert compare_arms(data.arm("grpo"), data.arm("base"), "success@1").side == "no claim"
    assert "grpo lost coverage" in text and "sharpened rather than widened" not in text
    assert "sft-diverse stayed close to its demonstration mix" in text
    assert "grpo put" in text and "(forward)" in text
    # overlapping CIs no longer hide a paired difference: the per-question values still show the collapse
    for arm in data.arms:
        for key in arm.table:
            arm.table[key] = Estimate(0.5, 0.0, 1.0)
    assert "grpo collapsed exploration breadth" in " ".join(verdict(data))
    # flip the evidence: every arm with the base's per-question values, and the verdict stops claiming
    base = data.arm("base")
    for arm in data.arms:
        arm.per_question = {k: v.copy() for k, v in base.per_question.items()}
    text = " ".join(verdict(data))
    assert "collapsed" not in text and "no change in breadth is claimed" in text and "paired rule" in text
    # without per-question values the verdict falls back to the CIs, and says so
    for arm in data.arms:
        arm.per_question = {}
    text = " ".join(verdict(data))
    assert "collapsed" not in text and "CIs overlap" in text and "CI rule" in text


def _planted(name: str, levels: np.ndarray, shift: float, seed: int, noise: float = 0.1) -> ArmSummary:
    """An arm whose per-(seed, question) strategy entropy is each question's level plus ``shift`` plus noise,
    3 seeds; its table column is the report's own two-level estimate of those values."""
    rng = np.random.default_rng(seed)
    values = levels[None, :] + shift + rng.normal(0.0, noise, size=(3, levels.size))
    questions = [f"q{q:02d}" for q in range(levels.size)]
    table = {label: Estimate(math.nan, math.nan, math.nan) for label in ("success@1", "pass@n", "unique docs",
                                                                          "query breadth")}
    table["strategy entropy"] = _two_level_estimate(values.tolist())
    return ArmSummary(name, [], [{"diversity/strategy_entropy_jk": float(v)} for v in values.mean(axis=1)],
                      table, {}, {}, {}, per_question={"strategy entropy": values}, questions=questions)


def test_paired_rule_finds_a_planted_drop_the_overlapping_cis_miss_and_no_null_difference():
    """Questions differ a lot in their own entropy (0.2-1.6 nats): that spread widens each arm's CI, so a
    drop of 0.1 nats on every question leaves the two CIs overlapping; it cancels in the paired difference,
    which claims the drop. A null pair (same levels, fresh noise) is not claimed, and its "no change" states
    the paired rule's minimum detectable difference."""
    levels = np.random.default_rng(0).uniform(0.2, 1.6, size=30)
    base, grpo = _planted("base", levels, 0.0, 1), _planted("grpo", levels, -0.1, 2)
    assert compare_cis(grpo.table["strategy entropy"], base.table["strategy entropy"]) == "overlap"
    found = compare_arms(grpo, base, "strategy entropy")
    assert found.side == "lower" and found.paired and found.diff.hi < 0
    assert found.diff.value == pytest.approx(np.mean(grpo.per_question["strategy entropy"])
                                             - np.mean(base.per_question["strategy entropy"]))
    text = " ".join(verdict(StudyData([base, grpo], n=8, questions=30)))
    assert "**grpo collapsed exploration breadth**" in text and "over 30 shared questions" in text

    null = _planted("grpo", levels, 0.0, 3)
    none = compare_arms(null, base, "strategy entropy")
    assert none.side == "no claim" and none.diff.lo < 0 < none.diff.hi
    data = StudyData([base, null], n=8, questions=30)
    text = " ".join(verdict(data))
    mde, how = detectable_difference(data, "strategy entropy", null, base)
    assert mde == pytest.approx(paired_rule_mde((none.diff.hi - none.diff.lo) / (2 * 1.959964)))
    assert "paired rule" in how and 0.02 < mde < 0.1
    assert "no change in breadth is claimed" in text and f"{mde:.3f} nats, 80% power under the paired rule" in text
    assert "collapsed" not in text and "widened" not in text


def test_report_files_are_self_contained(report):
    out = report.parent
    page = report.read_text()
    assert {p.name for p in out.glob("report*")} >= {"report.html", "report.md", "report.json",
                                                      "report_training.png", "report_passk.png",
                                                      "report_strategy.png", "report_coverage.png",
                                                      "report_entropy_reward.png", "report_template.png",
                                                      "report_strata.png"}  # questions of 1 and 2 hops
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 7 and 'data-figures-expected="7"' in page
    assert all(base64.b64decode(b).startswith(b"\x89PNG") for b in images)
    assert "src='http" not in page and "<link" not in page  # nothing fetched from elsewhere
    md = (out / "report.md").read_text()
    assert "| grpo | 3 |" in md and "![" in md and "## Verdict" in md
    numbers = json.loads((out / "report.json").read_text())
    assert numbers["arms"]["grpo"]["table"]["success@1"]["value"] > numbers["arms"]["base"]["table"]["success@1"]["value"]


def test_single_run_folders_and_baseline(tmp_path):
    run = make_run(tmp_path / "grpo-run", "grpo", 0, n=4)
    make_run(run / "baseline", "base", 0, n=4)
    other = make_run(tmp_path / "sft" / "seed1", "sft-diverse", 1, n=6)  # evaluated at a larger n
    page = report_command([run, other], out=tmp_path / "r")
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert list(data["arms"]) == ["base", "grpo-run", "sft"] and data["n"] == 4
    assert any("different n" in note for note in data["notes"])
    assert "Fewer than 3 seeds" in page.read_text()


def test_report_refuses_folders_without_runs(tmp_path):
    with pytest.raises(ValueError, match="neither a run folder"):
        report_command([tmp_path])


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium "
                    "(apt-get install -y chromium; `make test` installs it)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    from matplotlib.image import imread

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "page.png"
    subprocess.run([str(CHROMIUM), *flags, f"--screenshot={shot}", "--window-size=1200,3000",
                    f"file://{report.resolve()}"], check=True, capture_output=True, timeout=120)
    pixels = imread(str(shot))
    assert pixels.shape[0] >= 2000 and pixels.std() > 0.05  # not a blank page
    dom = subprocess.run([str(CHROMIUM), *flags, "--dump-dom", f"file://{report.resolve()}"], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    assert 'data-figures-loaded="7"' in dom  # every embedded figure decoded with a non-zero size
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_a_prior_lab_base_shows_its_strategy_mix_beside_the_arms(tmp_path, monkeypatch):
    """Runs on a pretrained prior (their own stages/pretrain, or a study's shared prior named by model.base)
    carry the prior's realised mix into the summary, the figure and the verdict."""
    prior_model = tmp_path / "prior" / "stages" / "pretrain" / "model"
    prior_model.mkdir(parents=True)
    (prior_model.parent / "prior_mix.json").write_text(json.dumps({"realised": {"forward": 0.5, "verify": 0.5}}))
    for arm in ("base", "grpo"):
        for seed in range(2):
            run = make_run(tmp_path / arm / f"seed{seed}", arm, seed)
            (run / "recipe.toml").write_text(f'[model]\nbase = "{prior_model}"\n')
    data = summarise(discover_runs([tmp_path]))
    assert data.arm("grpo").prior_share == {"forward": 0.5, "verify": 0.5}
    findings = " ".join(verdict(data))
    share = data.arm("grpo").shares["forward"]
    assert f"the prior's dominant strategy (forward) takes {share:.0%}" in findings
    assert "strategies absent from the prior appear: question_first" in findings
    out = report_command([tmp_path])
    summary = json.loads((out.parent / "report.json").read_text())
    assert summary["arms"]["grpo"]["prior_strategy_share"] == {"forward": 0.5, "verify": 0.5}

    # A base named by alias or hub id is no prior, whatever lies in the working folder.
    from searchgym.report.discover import prior_strategy_share

    monkeypatch.chdir(prior_model.parent)
    other = make_run(tmp_path / "smol", "base", 0)
    (other / "recipe.toml").write_text('[model]\nbase = "smollm2-135m-instruct"\n')
    assert prior_strategy_share(other) is None


def test_training_curves_prefer_the_probe_meters_every_arm_shares():
    from searchgym.report.data import training_curves

    # A GRPO run logs its own rollouts (train/…) and the probes (reward/…, search/…); an SFT run only the
    # probes. The panels must show the probe values for both, or SFT and GRPO arms are not comparable.
    grpo = [{"stage": "grpo", "step": 0, "probe": True, "reward/mean": -0.1, "search/calls_mean": 4.0},
            {"stage": "grpo", "step": 1, "train/reward": 0.5, "search/tool_calls_per_episode": 3.0}]
    sft = [{"stage": "sft", "step": 0, "probe": True, "reward/mean": -0.2, "search/calls_mean": 5.0}]
    for rows in (grpo, sft):
        curves = training_curves([rows])
        assert [y for _, y, _, _ in curves["Reward"]] == [rows[0]["reward/mean"]]
        assert [y for _, y, _, _ in curves["Tool calls per episode"]] == [rows[0]["search/calls_mean"]]
    # without probes, the trainer's own values are used
    assert [y for _, y, _, _ in training_curves([grpo[1:]])["Reward"]] == [0.5]


def test_literature_measurements_against_the_base_and_over_the_log(study, report):
    """Issue #16 in the report: coverage, ΔSE and the pass@k crossing against the base, pass^k, the
    entropy–reward fit over each run's log and the template-collapse meters, in report.json and figures."""
    from searchgym.report.figures import coverage_figure, entropy_reward_figure, template_collapse_figure

    data = summarise(discover_runs([study]))
    base, grpo = data.arm("base"), data.arm("grpo")
    assert base.vs_base is None and base.fit is None  # the base neither compares with itself nor trains
    v = grpo.vs_base
    # grpo solves only the even questions (p = 0.95); the base (p = 0.3, n = 8) solves nearly every question
    assert v["coverage/inclusion"] == 1.0 and v["coverage/new"] == 0.0
    assert v["coverage/lost_lo"] > 0.2 and v["coverage/lost"] == pytest.approx(0.5, abs=0.1)
    assert v["coverage/delta_se_hi"] < 0  # grpo pass@1 ~0.47 against base pass@8 ~1
    assert v["passk/crossing_state"] == 1.0 and v["passk/crossing_k"] in (2.0, 4.0)
    # pass^k falls with k; grpo is the reliable one at k = n
    hat = [grpo.passhat[k].value for k in sorted(grpo.passhat)]
    assert hat == sorted(hat, reverse=True) and grpo.passhat[N].value > base.passhat[N].value
    # the fabricated grpo log: reward rises as train/entropy falls, so a > 0 and the fit explains it
    assert grpo.fit["fit/entropy_reward_a"] > 0 and grpo.fit["fit/entropy_reward_r2"] > 0.9
    assert len(grpo.run_fits) == 3 and grpo.entropy_reward[0][2] == ("train/entropy", "train/reward")
    assert math.isfinite(grpo.extra["cross-input accuracy"].value)
    for draw in (coverage_figure, entropy_reward_figure, template_collapse_figure):
        assert draw(data).startswith(b"\x89PNG")
    for arm in data.arms:  # neither side solves anything: no coverage figure (the verdict says so)
        if arm.vs_base:
            arm.vs_base.update({"coverage/only_arm": 0.0, "coverage/only_base": 0.0, "coverage/both": 0.0})
    assert coverage_figure(data) is None
    numbers = json.loads((report.parent / "report.json").read_text())
    arm = numbers["arms"]["grpo"]
    assert arm["vs_base"]["coverage/inclusion"] == 1.0 and arm["entropy_reward_fit"]["fit/entropy_reward_a"] > 0
    assert set(arm["pass_hat_k"]) == {"1", "2", "4", "8"} and numbers["arms"]["base"]["vs_base"] is None
    assert "grpo vs base: of the questions it solves in n = 8" in " ".join(numbers["verdict"])


def test_new_figures_draw_nothing_without_their_data(tmp_path):
    """No base arm: no coverage figure; no training log: no entropy–reward figure."""
    from searchgym.report.figures import coverage_figure, entropy_reward_figure

    make_run(tmp_path / "base-only" / "seed0", "base", 0, n=4, questions=4)
    data = summarise(discover_runs([tmp_path / "base-only" / "seed0"]))
    assert coverage_figure(data) is None and entropy_reward_figure(data) is None


def test_the_headline_asks_whether_rl_after_narrow_sft_reopens_the_palette():
    """With SFT-narrow and SFT-narrow then GRPO in a study, the verdict's headlines compare them (and the chained
    arm with the base) by the paired rule: a planted reopening is claimed 'higher', a null one is not."""
    from searchgym.report.rules import headlines

    levels = np.random.default_rng(1).uniform(0.2, 1.0, size=30)
    base, narrow = _planted("base", levels + 0.6, 0.0, 1), _planted("sft-narrow", levels, 0.0, 2)
    reopened = _planted("sft-narrow-grpo", levels, 0.3, 3)
    line = next(h for h in headlines(StudyData([base, narrow, reopened], n=8, questions=30)) if "reopen" in h)
    assert "against SFT-narrow alone: higher" in line and "against the base: lower" in line
    same = _planted("sft-narrow-grpo", levels, 0.0, 4)
    line = next(h for h in headlines(StudyData([base, narrow, same], n=8, questions=30)) if "reopen" in h)
    assert "against SFT-narrow alone: no change larger than" in line
    assert not any("reopen" in h for h in headlines(StudyData([base, narrow], n=8, questions=30)))


def test_each_countermeasure_arm_gets_a_headline_against_plain_grpo():
    """A grpo-* arm (one setting apart from plain GRPO) is compared with GRPO by the paired rule: a planted
    gain in breadth is claimed 'higher', a null arm is not; without plain GRPO there is no such headline."""
    from searchgym.report.rules import headlines

    levels = np.random.default_rng(2).uniform(0.2, 1.0, size=30)
    grpo, kept = _planted("grpo", levels, 0.0, 1), _planted("grpo-entropy", levels, 0.3, 2)
    null = _planted("grpo-novelty", levels, 0.0, 3)
    lines = headlines(StudyData([grpo, kept, null], n=8, questions=30))
    entropy = next(h for h in lines if "grpo-entropy keep more breadth" in h)
    novelty = next(h for h in lines if "grpo-novelty keep more breadth" in h)
    assert "grpo-entropy higher" in entropy and "success@1" in entropy
    assert "grpo-novelty no change larger than" in novelty
    assert not any("keep more breadth" in h for h in headlines(StudyData([kept, null], n=8, questions=30)))
