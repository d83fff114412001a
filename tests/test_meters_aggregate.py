"""aggregate() against hand-computed values, the collapse alarms, and the `searchgym meter` entry point."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from searchgym.cli import app
from searchgym.meters import Above, ModeCollapse, RelativeDrop, aggregate, fired_alarms, parse_alarms
from searchgym.report.meter_command import meter_command
from searchgym.trajectory import Trajectory, write_trajectories


def traj(task_id, sample, signature="S A", strategy="direct", queries=("q",), retrieved=(), opened=(),
         answer="x", correct=True, evidence=(("d1",),), difficulty=1, **kw) -> Trajectory:
    calls = [{"name": {"S": "search", "O": "open", "A": "answer"}[a], "arguments": {}, "valid": True}
             for a in signature.split()]
    return Trajectory(task_id=task_id, env_id="searchgym/Test-v0", sample=sample, question="?", messages=[],
                      calls=calls, signature=signature, strategy=strategy, queries=list(queries),
                      docs_retrieved=list(retrieved), docs_opened=list(opened), answer=answer,
                      reward=float(correct), correct=correct, gold_answers=["x"],
                      evidence=[list(c) for c in evidence], difficulty=difficulty, **kw)


def hand_built() -> list[Trajectory]:
    ev1 = (("d1", "d3"),)
    return [
        traj("q1", 0, "S A", "direct", ["acme founder"], ["d1", "d2"], [], "Paris", True, ev1,
             token_entropies=[1.0, 2.0], token_roles=["query", "answer"], token_logprobs=[-1.0, -1.0],
             meta={"ref_token_logprobs": [-1.0, -2.0]}),
        traj("q1", 1, "S O A", "bridge", ["acme founder"], ["d2", "d4"], ["d3"], "paris!", True, ev1,
             token_entropies=[3.0], token_roles=["query"], token_logprobs=[-2.0]),
        traj("q2", 0, "S A", "direct", ["x y"], ["d5"], [], "London", False, (("d6",),), difficulty=2),
        traj("q2", 1, "S A", "direct", ["z"], ["d6"], [], "Rome", True, (("d6",),), difficulty=2),
    ]


def test_aggregate_matches_hand_computed_values():
    m = aggregate(hand_built())
    ln2 = math.log(2)
    c = math.sqrt(5 / 7)  # q1 texts share 5 of their 1-2-grams; the second has 7
    lam = np.array([(1 + c) / 2, (1 - c) / 2])
    vendi_q1 = math.exp(-(lam * np.log(lam)).sum())
    expected = {
        "meta/n": 2, "meta/questions": 2,
        "reward/success": 0.75, "passk/pass@1": 0.75, "passk/pass@2": 1.0,
        "reward/std": 0.25, "reward/zero_var_frac": 0.5, "reward/success_d1": 1.0, "reward/success_d2": 0.5,
        "diversity/strategy_distinct": 1.5, "diversity/strategy_entropy": ln2 / 2,
        "diversity/strategy_entropy_mm": (ln2 + 0.25) / 2, "diversity/strategy_max_share": 0.75,
        "diversity/signature_entropy_mm": (ln2 + 0.25) / 2,
        "diversity/answer_distinct": 1.5,  # "Paris" and "paris!" are one answer
        "diversity/vendi": (vendi_q1 + 2.0) / 2,
        "search/calls_mean": 2.25, "search/calls_mode_share": 0.75,
        "search/calls_frac_2": 0.75, "search/calls_frac_3": 0.25,
        "search/query_breadth": 0.5, "search/unique_docs": 2.5, "search/unique_opened": 0.5,
        "search/evidence_coverage": 0.5, "search/evidence_coverage_pooled": 1.0,
        "entropy/token": 2.0, "entropy/token_query": 2.0, "entropy/token_answer": 2.0,
        "entropy/sequence": 2.0, "entropy/sequence_per_token": 4 / 3,
        "kl/k1": 0.5, "kl/k3": (math.exp(-1)) / 2,
    }
    for key, value in expected.items():
        assert m[key] == pytest.approx(value), key
    assert math.isnan(m["search/query_redundancy"])  # one query per episode
    assert math.isnan(m["entropy/token_post_tool"])


def test_aggregate_fixes_n():
    extra = hand_built() + [traj("q1", 2, "S S A", "other", correct=False)]
    with pytest.raises(ValueError, match="--samples 2"):
        aggregate(extra)
    assert aggregate(extra, samples=2) == pytest.approx(aggregate(hand_built()), nan_ok=True)
    with pytest.raises(ValueError, match="fewer than 3 samples"):
        aggregate(extra, samples=3)


def test_aggregate_without_token_data_or_strategies_gives_nan_not_errors():
    m = aggregate([traj("q", i, strategy=None) for i in range(3)])
    assert math.isnan(m["entropy/token"]) and math.isnan(m["kl/k1"])
    assert math.isnan(m["diversity/strategy_entropy_mm"])
    assert m["diversity/signature_distinct"] == 1.0 and m["diversity/vendi"] == pytest.approx(1.0)


# --- alarms -------------------------------------------------------------------------------------------

RULES = [RelativeDrop("diversity/strategy_entropy_mm", 0.5), Above("reward/zero_var_frac", 0.8),
         ModeCollapse("search/calls_mode_share", 0.9)]


def test_alarms_fire_once_on_a_collapsing_run():
    history = [{"step": 10 * i, "diversity/strategy_entropy_mm": h, "reward/zero_var_frac": z,
                "search/calls_mode_share": s}
               for i, (h, z, s) in enumerate([(2.0, 0.1, 0.4), (1.6, 0.3, 0.6), (0.9, 0.85, 0.92),
                                              (0.3, 0.95, 1.0), (0.2, 0.99, 1.0)])]
    events = fired_alarms(history, RULES)
    assert [(e.step, e.key) for e in events] == [(20, "diversity/strategy_entropy_mm"),
                                                 (20, "reward/zero_var_frac"), (20, "search/calls_mode_share")]
    assert "below 0.5 x its first value 2" in events[0].message


def test_alarms_stay_quiet_on_a_stable_run():
    rng = np.random.default_rng(0)
    history = [{"diversity/strategy_entropy_mm": 2.0 + 0.1 * rng.standard_normal(), "reward/zero_var_frac": 0.3,
                "search/calls_mode_share": 0.5, "diversity/vendi": math.nan} for _ in range(50)]
    assert fired_alarms(history, RULES + [RelativeDrop("diversity/vendi", 0.5)]) == []


def test_alarms_parse_from_recipe_toml():
    table = tomllib.loads('[alarms]\n"diversity/strategy_entropy_mm" = { relative_drop = 0.5 }\n'
                          '"reward/zero_var_frac" = { above = 0.8 }\n'
                          '"search/calls_mode_share" = { mode_collapse = 0.9 }\n')["alarms"]
    assert parse_alarms(table) == RULES
    with pytest.raises(ValueError, match="unknown condition 'drop'"):
        parse_alarms({"x": {"drop": 0.5}})


# --- searchgym meter ----------------------------------------------------------------------------------

def test_meter_command_writes_meters_json_and_refuses_mismatched_n(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run_a"
    write_trajectories(run / "trajectories.jsonl", hand_built())
    wider = hand_built() + [traj("q1", 2, correct=False), traj("q2", 2, difficulty=2)]
    write_trajectories(tmp_path / "b.jsonl", wider)

    written = meter_command([run], n_boot=200)
    assert written == [Path("meters.json")] and not (run / "meters.json").exists()  # inputs are only read
    block = json.loads((tmp_path / "meters.json").read_text())["inputs"][0]
    assert block["n"] == 2 and block["meters"]["reward/success"] == 0.75
    assert block["meters"]["search/query_redundancy"] is None  # NaN is written as null
    lo, hi = block["ci95"]["reward/success"]
    assert lo <= 0.75 <= hi
    assert "reward/success" in capsys.readouterr().out

    # different n: down-sampled to the smallest (one rule with the report), with a printed warning
    meter_command([run, tmp_path / "b.jsonl"], n_boot=200)
    assert "warning: equalised to n = 2" in capsys.readouterr().err
    with pytest.raises(ValueError, match="samples = 3 but run_a has only 2"):
        meter_command([run, tmp_path / "b.jsonl"], samples=3)

    written = meter_command([run, tmp_path / "b.jsonl"], samples=2, n_boot=200)
    combined = json.loads((tmp_path / "meters.json").read_text())
    assert tmp_path / "meters.json" in [p.resolve() for p in written]
    assert "equalised to n = 2" in combined["note"] and "b n=3" in combined["note"]
    assert combined["inputs"][1]["meters"] == combined["inputs"][0]["meters"]  # same first 2 samples
    assert combined["comparisons"][0]["delta"]["reward/success"]["diff"] == 0.0


def test_meter_inputs_with_one_name_keep_their_own_n(tmp_path, monkeypatch, capsys):
    """One arm of two studies (both "grpo/seed0"): each input keeps its own n in the common-n rule, so the
    larger one is down-sampled with the warning, in either order, and the columns stay apart."""
    monkeypatch.chdir(tmp_path)
    small, large = tmp_path / "s1" / "grpo" / "seed0", tmp_path / "s2" / "grpo" / "seed0"
    write_trajectories(small / "trajectories.jsonl", [t for t in hand_built() if t.sample == 0])
    write_trajectories(large / "trajectories.jsonl", hand_built())
    for paths in ([small, large], [large, small]):
        meter_command(paths, n_boot=50)
        assert "warning: equalised to n = 1" in capsys.readouterr().err
        inputs = json.loads((tmp_path / "meters.json").read_text())["inputs"]
        assert [block["n"] for block in inputs] == [1, 1]
        assert sorted(block["original_n"] for block in inputs) == ["1", "2"]


def test_cli_meter_exits_2_with_the_fix_in_the_message(tmp_path):
    write_trajectories(tmp_path / "a.jsonl", hand_built())
    write_trajectories(tmp_path / "b.jsonl", hand_built()[:3] + [traj("q2", 1, difficulty=2),
                                                                  traj("q2", 2, difficulty=2)])
    # questions sampled unevenly: metered at the smallest n, with the warning (the rule of `common_n`)
    result = CliRunner().invoke(app, ["meter", str(tmp_path / "b.jsonl"), "--out", str(tmp_path / "b.json")])
    assert result.exit_code == 0 and "warning: equalised to n = 2" in result.output
    result = CliRunner().invoke(app, ["meter", str(tmp_path / "b.jsonl"), "--samples", "3"])
    assert result.exit_code == 2 and "pass samples <= 2" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["meter", str(tmp_path / "a.jsonl"), "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m.json").read_text())["inputs"][0]["questions"] == 2


@pytest.mark.parametrize("field, value, said", [
    ("reward", "x", "reward must be a number, got str 'x'"), ("difficulty", None, "difficulty must be an integer"),
    ("correct", 1, "correct must be true or false, got int"), ("sample", True, "sample must be an integer, got bool"),
    ("calls", {}, "calls must be a list"), ("strategy", 3, "strategy must be a string or null"),
])
def test_a_hand_edited_record_of_the_wrong_kind_is_one_line_naming_the_field(field, value, said, tmp_path):
    """Such records used to load and crash a meter later with a numpy or int() traceback (exit 1)."""
    path = tmp_path / "t.jsonl"
    write_trajectories(path, hand_built(), parquet=False)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1][field] = value
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(app, ["meter", str(path), "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 2 and f"t.jsonl:2: not a trajectory record ({said}" in result.output, result.output
    assert "Traceback" not in result.output
    rows[1][field] = hand_built()[1].to_json()[field]  # the same file, mended, meters again
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert CliRunner().invoke(app, ["meter", str(path), "--out", str(tmp_path / "m.json")]).exit_code == 0
