"""Calibration: known mixtures recovered through the real env and meters, the vectorised claim rules equal to
the report's code, MDEs that shrink with size, a temperature sweep of the tiny model, the CLI end to end."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from searchgym.calibration import (
    MIXTURES,
    CalibrationConfig,
    StudySetup,
    best_combinations,
    compare_estimators,
    entropy_power,
    label_table,
    make_env,
    mixture_truth,
    passk_power,
    recover_mixture,
    sample_counts,
    simulated_coverage,
    study_setup,
    temperature_sweep,
)
from searchgym.meters.claim_rules import (
    paired_diff_ci,
    paired_two_level_ci,
    question_ci,
    question_rule_mde,
    seed_ci,
    study_mde,
    two_level_ci,
)
from searchgym.meters.count_estimators import (
    entropy_from_counts,
    estimates_from_counts,
    expected_entropy_estimates,
    expected_estimates,
    jackknife_from_counts,
)
from searchgym.meters.diversity import cluster_stats
from searchgym.meters.stats import bootstrap_ci, paired_bootstrap
from searchgym.report import verdict
from searchgym.report.data import (
    STRATEGY_KEY,
    TABLE_KEYS,
    ArmSummary,
    Estimate,
    StudyData,
    _two_level_estimate,
    key_estimate,
    paired_two_level_bootstrap_ci,
    seed_estimate,
    two_level_bootstrap_ci,
)
from searchgym.report.rules import compare_arms, detectable_difference

SMALL = StudySetup("searchgym/SyntheticWorld-Easy-v0",
                   {"embedder": "hashing", "top_k": 3, "max_obs_chars": 400, "max_steps": 8,
                    "world_kwargs": {"size": "small", "max_hops": 2, "n_train": 40, "n_test": 12}},
                   questions=8, samples=8, seeds=3, source="test")


@pytest.fixture(scope="module")
def world():
    env = make_env(SMALL)
    tasks = list(env.unwrapped.tasks)
    yield env, tasks, label_table(env, tasks, progress=False)
    env.close()


def test_known_mixture_is_recovered_through_env_and_meters(world):
    env, tasks, table = world
    weights = {"forward": 0.5, "verify": 0.5}
    r = recover_mixture(env, tasks[:SMALL.questions], "two", weights, table, SMALL.samples, SMALL.seeds,
                        coverage_reps=200)
    # forward and verify are valid on every question here: the truth is log 2 on each
    assert r["true_entropy"] == pytest.approx(math.log(2))
    assert r["label_fidelity"] == r["expected_label_fidelity"] == 1.0  # each episode labelled as its script
    assert abs(r["expected_mm"] - r["true_entropy"]) < 0.02  # Miller–Madow's exact bias at n = 8 (plug-in: ~0.09)
    assert r["expected_plugin"] < r["expected_mm"] < r["true_entropy"] + 1e-9
    assert abs(r["measured_mm"] - r["true_entropy"]) < 0.12
    assert r["ci_mm"][0] <= r["measured_mm"] <= r["ci_mm"][1] and 0.3 < r["coverage_mm"] <= 1.0
    # the report's column: jackknife per question, two-level bootstrap CI; slightly biased high at n = 8
    assert 0 < r["expected_jk"] - r["true_entropy"] < 0.02 and abs(r["measured"] - r["true_entropy"]) < 0.12
    assert r["ci"][0] <= r["measured"] <= r["ci"][1] and r["coverage"] >= 0.85 and "two-level" in r["ci_method"]
    assert r["measured_shares"]["forward"] == pytest.approx(0.5, abs=0.12)
    assert r["episodes"] == SMALL.questions * SMALL.samples * SMALL.seeds
    one = recover_mixture(env, tasks[:4], "one", {"forward": 1.0}, table, 4, 2, coverage_reps=0)
    assert one["true_entropy"] == one["measured_mm"] == one["measured"] == 0.0
    assert one["measured_shares"] == {"forward": 1.0}


def test_report_ci_covers_the_true_strategy_entropy_where_the_previous_rule_did_not(world):
    """The issue's criterion at a small size (8 questions x 8 samples x 3 seeds): the report's strategy-entropy
    CI contains the true entropy in >= 90% of simulated studies for every mixture; the previous rule
    (Miller–Madow, the range of 3 seed values) did not (0.47 for the uniform mixture here)."""
    env, tasks, table = world
    styles = env.unwrapped.taskset.query_styles
    qs = tasks[:SMALL.questions]
    new, old = {}, {}
    for name, weights in MIXTURES.items():
        truth = mixture_truth(qs, weights, table, styles, SMALL.samples)["true_entropy"]
        new[name], = simulated_coverage(qs, weights, table, styles, SMALL.samples, SMALL.seeds, 400, [truth])
        old[name], = simulated_coverage(qs, weights, table, styles, SMALL.samples, SMALL.seeds, 400, [truth],
                                        rule="previous")
    assert min(new.values()) >= 0.9, new
    assert old["uniform (5)"] < 0.7 and min(old.values()) < 0.9, old


def test_estimator_comparison_finds_the_reports_rule(world):
    env, tasks, table = world
    styles = env.unwrapped.taskset.query_styles
    rows = compare_estimators(tasks[:SMALL.questions], MIXTURES, table, styles, 8, [3, 1], 200)
    assert {r["estimator"] for r in rows} == {"plug-in", "MM", "jackknife", "Chao-Shen", "Grassberger"}
    assert len(rows) == len(MIXTURES) * 5 * (7 + 4)  # 7 intervals with 3 seeds, 4 without seed intervals
    plugin_uniform = [r for r in rows if r["estimator"] == "plug-in" and r["mixture"] == "uniform (5)"]
    assert all(r["bias"] < -0.2 and r["coverage"] < 0.5 for r in plugin_uniform)  # plug-in: hopeless at n = 8
    best = best_combinations(rows)
    assert best[3]["ok"] and best[3]["min_coverage"] >= 0.9


def test_exact_expectation_matches_simulation_and_counts_match_cluster_stats():
    p = [0.5, 0.3, 0.2]
    rng = np.random.default_rng(0)
    counts = rng.multinomial(8, p, size=20000)
    plugin, mm = entropy_from_counts(counts)
    exact_plugin, exact_mm = expected_entropy_estimates(p, 8)
    assert plugin.mean() == pytest.approx(exact_plugin, abs=0.01) and mm.mean() == pytest.approx(exact_mm, abs=0.01)
    for row, h, h_mm in zip(counts[:50], plugin[:50], mm[:50], strict=True):
        stats = cluster_stats([k for k, c in enumerate(row) for _ in range(c)])
        assert (h, h_mm) == pytest.approx((stats["entropy"], stats["entropy_mm"]))
    drawn = sample_counts(np.array([[0.25, 0.75]]), 4000, rng.random((1, 4000)))
    assert drawn[0, 1] / 4000 == pytest.approx(0.75, abs=0.03)


def test_jackknife_twins_agree_and_are_less_biased_than_miller_madow_at_n8():
    rng = np.random.default_rng(2)
    counts = rng.multinomial(8, [0.3, 0.3, 0.2, 0.1, 0.1], size=300)
    jk = jackknife_from_counts(counts)
    assert np.array_equal(jk, estimates_from_counts(counts)["jackknife"])
    for row, value in zip(counts[:60], jk[:60], strict=True):  # the meter on the labels themselves
        assert value == pytest.approx(cluster_stats([k for k, c in enumerate(row) for _ in range(c)])["entropy_jk"])
    p = [0.2] * 5
    exact = expected_estimates(p, 8)
    assert exact["jackknife"] == pytest.approx(jk_mean := jackknife_from_counts(
        rng.multinomial(8, p, size=40000)).mean(), abs=0.01), jk_mean
    truth = math.log(5)
    assert abs(exact["jackknife"] - truth) < abs(exact["MM"] - truth) < abs(exact["plug-in"] - truth)


def test_two_level_twin_is_the_reports_strategy_entropy_ci():
    rng = np.random.default_rng(4)
    values = rng.random((6, 3, 15))
    point, lo, hi = two_level_ci(values)
    for i in range(6):
        assert (point[i], lo[i], hi[i]) == pytest.approx(two_level_bootstrap_ci(values[i]))
    # and `key_estimate`, the report's column, is that function on the per-(seed, question) values
    per_qs = [{f"q{q:02d}": {STRATEGY_KEY: values[0, s, q]} for q in range(15)} for s in range(3)]
    est = key_estimate([{STRATEGY_KEY: float(values[0, s].mean())} for s in range(3)], per_qs,
                        {f"q{q:02d}" for q in range(15)}, STRATEGY_KEY)
    assert (est.value, est.lo, est.hi) == pytest.approx((point[0], lo[0], hi[0]))
    assert STRATEGY_KEY in TABLE_KEYS and STRATEGY_KEY == "diversity/strategy_entropy_jk"
    one = two_level_bootstrap_ci(values[0, :1])  # one seed: a bootstrap over questions
    assert one[1] < one[0] < one[2]


def test_vectorised_rules_are_the_reports_rules():
    rng = np.random.default_rng(1)
    seeds = rng.normal(0.6, 0.05, size=(20, 3))
    point, lo, hi = seed_ci(seeds)
    for i in range(5):
        est = seed_estimate(list(seeds[i]), [])
        assert (point[i], lo[i], hi[i]) == pytest.approx((est.value, est.lo, est.hi))
    a, b = rng.random((4, 15)), rng.random((4, 15))
    d, lo, hi = paired_diff_ci(a, b)
    for i in range(4):
        ref = paired_bootstrap({f"{q:02d}": [a[i, q]] for q in range(15)}, {f"{q:02d}": [b[i, q]] for q in range(15)})
        assert (d[i], lo[i], hi[i]) == pytest.approx((ref["diff"], ref["lo_diff"], ref["hi_diff"]))
        m, qlo, qhi = question_ci(a[i:i + 1])
        assert (m[0], qlo[0], qhi[0]) == pytest.approx(bootstrap_ci(a[i], n_boot=1000))


def test_paired_twin_is_the_reports_claim_between_two_arms():
    """`paired_two_level_ci` (calibration, many studies at once) equals the report's
    `paired_two_level_bootstrap_ci` on the same draws, also with unequal seed counts, and the calibration's
    claim for each simulated study is `report.rules.compare_arms`'s on arms built from the same values."""
    from searchgym.calibration.power import _Rules, two_level_rule_ci

    rng = np.random.default_rng(5)
    a, b = rng.normal(0.8, 0.3, size=(6, 3, 12)), rng.normal(0.8, 0.3, size=(6, 2, 12))
    d, lo, hi = paired_two_level_ci(a, b)
    for i in range(6):
        assert (d[i], lo[i], hi[i]) == pytest.approx(paired_two_level_bootstrap_ci(a[i], b[i])[:3])
    levels = rng.uniform(0.2, 1.6, size=12)
    a = levels + rng.normal(0.0, 0.1, size=(6, 3, 12))
    b = levels - np.array([0.0, 0.01, 0.03, 0.05, 0.1, 0.3])[:, None, None] + rng.normal(0.0, 0.1, size=(6, 3, 12))
    claims = _Rules(a, two_level_rule_ci).claims(b)
    qs = [f"q{q:02d}" for q in range(12)]

    def arm(name, values):
        return ArmSummary(name, [], [], {"strategy entropy": _two_level_estimate(values.tolist())}, {}, {}, {},
                          per_question={"strategy entropy": values}, questions=qs)

    report = [compare_arms(arm("a", a[i]), arm("b", b[i]), "strategy entropy").claimed for i in range(6)]
    assert report == claims["report_rule"].tolist() and 0 < sum(report) < 6, report
    assert claims["report_rule"].sum() > claims["nonoverlap"].sum()  # the CIs overlap where pairing finds it


def test_mde_is_smaller_for_larger_studies(world):
    env, tasks, table = world
    styles = env.unwrapped.taskset.query_styles
    base = {"forward": 0.35, "question_first": 0.25, "snippet": 0.2, "parallel": 0.2}
    small = entropy_power(tasks, base, table, styles, questions=4, samples=4, seeds=3, reps=120)
    large = entropy_power(tasks, base, table, styles, questions=24, samples=16, seeds=3, reps=120)
    inf = math.inf  # NaN: no delta reached 80% power (too small a study for that rule)
    assert 0 < large["mde"] < (small["mde"] if math.isfinite(small["mde"]) else inf)
    assert large["mde_paired"] < small["mde_paired"] and large["mde_nonoverlap"] < small["mde_nonoverlap"]
    assert large["curve"][0]["delta"] == 0.0 and large["false_positive_seed_rule"] < 0.25
    # the report's rule is the paired two-level bootstrap: un-suffixed keys; the old CI rule kept as *_nonoverlap
    assert "paired" in large["rule"] and large["false_positive"] == large["curve"][0]["power_report_rule"]
    assert large["false_positive_nonoverlap"] == large["curve"][0]["power_nonoverlap"]
    assert large["mde"] < large["mde_nonoverlap"] and math.isfinite(large["mde_from_cis"])
    p_small = passk_power(6, 4, 3, reps=120, k=4, rate=0.3, concentration=2.0)
    p_large = passk_power(40, 8, 3, reps=120, k=4, rate=0.3, concentration=2.0)
    assert p_large["mde"] < (p_small["mde"] if math.isfinite(p_small["mde"]) else inf)
    assert p_large["mde_nonoverlap"] < p_small["mde_nonoverlap"]


def test_temperature_sweep_of_the_tiny_model_raises_token_entropy(world):
    _, tasks, _ = world
    r = temperature_sweep("tiny", SMALL, [t.id for t in tasks[:2]], (0.3, 0.7, 1.3), samples=2, max_turns=2,
                          max_new_tokens=12, progress=False)
    tokens = [row["token_entropy"] for row in r["rows"]]
    assert r["token_monotone"] and tokens == sorted(tokens) and all(row["tokens"] > 0 for row in r["rows"])
    assert r["monotone"] == (r["token_monotone"] and r["strategy_not_falling"])


def test_study_setup_reads_the_quick_preset():
    from searchgym.study.spec import load_study

    setup, study = study_setup(), load_study("agents/breadth-study.toml", "quick")
    assert (setup.questions, setup.samples, setup.seeds) == (study.eval["questions"], study.eval["samples"],
                                                             len(study.seeds))
    assert setup.env_kwargs["world_kwargs"]["size"] == 30 and "quick" in setup.source  # the shipped prior's world


def _arm(name: str, values: list[float], lo: float, hi: float, strategy: bool = True) -> ArmSummary:
    key = STRATEGY_KEY if strategy else "search/query_breadth"
    table = {label: Estimate(0.5, 0.4, 0.6) for label in ("success@1", "pass@n", "unique docs", "query breadth",
                                                         "strategy entropy")}
    table["strategy entropy" if strategy else "query breadth"] = Estimate(float(np.mean(values)), lo, hi)
    if not strategy:  # a world without strategy labels: the verdict reads query breadth
        table["strategy entropy"] = Estimate(math.nan, math.nan, math.nan)
    return ArmSummary(name, [], [{key: v} for v in values], table, {}, {}, {})


def test_no_change_verdict_carries_the_minimum_detectable_difference():
    # strategy entropy: the two-level bootstrap CIs, whatever the seeds (SEs read off the CIs)
    base, grpo = _arm("base", [0.62, 0.64, 0.66], 0.58, 0.70), _arm("grpo", [0.63, 0.65, 0.69], 0.60, 0.72)
    data = StudyData([base, grpo], n=8, questions=20)
    text = " ".join(verdict(data))
    se = 0.12 / (2 * 1.959964)
    assert "no change in breadth is claimed" in text
    assert f"minimum detectable difference at these sizes: {question_rule_mde(se, se):.3f} nats" in text
    how = detectable_difference(data, "strategy entropy", grpo, base)[1]
    assert "two-level bootstrap CIs" in how and "CI rule" in how  # no per-question values: the fallback
    # a column under the seed rule (query breadth) keeps the seed-spread MDE
    base, grpo = (_arm("base", [0.62, 0.64, 0.66], 0.62, 0.66, strategy=False),
                  _arm("grpo", [0.63, 0.65, 0.69], 0.63, 0.69, strategy=False))
    text = " ".join(verdict(StudyData([base, grpo], n=8, questions=20)))
    expected = study_mde([[0.62, 0.64, 0.66], [0.63, 0.65, 0.69]], 3, 3)
    assert f"minimum detectable difference at these sizes: {expected:.3f}" in text
    one_a, one_b = (_arm("base", [0.64], 0.60, 0.68, strategy=False),
                    _arm("grpo", [0.65], 0.61, 0.69, strategy=False))  # one seed: from the CIs
    text = " ".join(verdict(StudyData([one_a, one_b], n=8, questions=20)))
    se = 0.04 / 1.959964
    assert f"{question_rule_mde(se, se):.3f}" in text and "one seed" in text


def test_cli_quick_writes_calibration_json(tmp_path):
    from typer.testing import CliRunner

    from searchgym.cli import app

    # The training control trains for a minute: tests/test_training_control.py runs it for real, and
    # test_the_training_control_reaches_the_result below checks its wiring.
    result = CliRunner().invoke(app, ["calibrate", "--quick", "--training-control", "off", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "calibration.json").read_text())
    assert data["training_control"] is None and data["training_control_drop"] is None
    for key in ("max_entropy_error", "mde_strategy_entropy", "mde_strategy_entropy_paired", "mde_pass_at_k",
                "size_sweep", "temperature_monotone", "mean_coverage", "estimator_comparison",
                "mde_strategy_entropy_from_cis"):
        assert key in data
    assert data["entropy_ci_coverage_min"] == min(m["coverage"] for m in data["mixtures"])
    assert data["strategy_entropy_rule"] == {"estimator": "jackknife", "interval": "two-level bootstrap"}
    assert data["setup"]["questions"] == CalibrationConfig.quick().questions
    assert data["temperature"]["token_monotone"] is True
    assert Counter(m["name"] for m in data["mixtures"]) == Counter(list(CalibrationConfig().mixtures))
    assert "Recovery" in result.output


def test_the_training_control_reaches_the_result(monkeypatch):
    """calibrate() runs the control at the size asked for and lifts its headline keys to the top level (the
    benchmark's JSON) and into a summary line that says whether the drop was detected."""
    from searchgym.calibration import control, run

    asked = []
    fake = {"training_control_drop": 0.75, "training_control_drop_lo": 0.59, "training_control_drop_hi": 0.89,
            "training_control_mde": 0.21, "training_control_detected": True, "key": "diversity/strategy_entropy_jk",
            "steps": 150, "questions": 30, "n": 8, "base_entropy": 1.07, "trained_entropy": 0.28}
    monkeypatch.setattr(control, "training_control", lambda size, progress=True: asked.append(size) or fake)
    result = run.calibrate(CalibrationConfig.quick(skip_temperature=True, coverage_reps=20, reps=20))
    assert asked == ["tiny"] and result["training_control"] == fake
    assert {k: result[k] for k in run.CONTROL_KEYS} == {k: fake[k] for k in run.CONTROL_KEYS}
    line = next(x for x in run.summary_lines(result) if x.startswith("training control"))
    assert "150 steps" in line and "drop 0.750 [0.590, 0.890] nats vs MDE 0.210: detected" in line
    with pytest.raises(ValueError, match="training_control: choose one of off, tiny, full"):
        run.calibrate(CalibrationConfig.quick(training_control="big"))
