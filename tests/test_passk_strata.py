"""pass@k by stratum (issue #25 item 4): the stratified curves against brute force on a hand-made table, the
crossing k per stratum, the sequential / parallel rule on real synthetic-world tasks, and the report's section
on fabricated run folders (no model is loaded)."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import pytest

from searchgym.meters.coverage import crossing
from searchgym.meters.passk import k_ladder
from searchgym.meters.strata import (
    crossing_strata,
    curves_of,
    evidence_order,
    group_strata,
    passk_strata,
    stratum_crossings,
    task_strata,
)
from searchgym.tasks import Task
from searchgym.trajectory import Trajectory, write_trajectories
from searchgym.worlds.synthetic import SyntheticWorld

# ---- the hand-made table: 6 questions x n = 6 samples, 1 = correct, for two seeds of one model -------------

N = 6
SAMPLES = {  # seed -> question -> the n outcomes
    0: {"a": [1, 0, 0, 0, 0, 0], "b": [0, 0, 0, 0, 0, 0], "c": [1, 1, 0, 1, 0, 0],
        "d": [0, 0, 0, 0, 0, 1], "e": [1, 1, 1, 1, 1, 1], "f": [0, 1, 0, 0, 1, 0]},
    1: {"a": [0, 0, 0, 0, 0, 0], "b": [0, 1, 0, 0, 0, 0], "c": [1, 1, 1, 0, 0, 0],
        "d": [0, 0, 1, 1, 0, 1], "e": [1, 1, 1, 1, 0, 1], "f": [0, 0, 0, 0, 0, 0]},
}
STRATA = {"a": {"hops": "1", "kind": "bridge", "order": "single"},
          "b": {"hops": "2", "kind": "bridge", "order": "sequential"},
          "c": {"hops": "2", "kind": "comparison", "order": "parallel"},
          "d": {"hops": "3", "kind": "bridge", "order": "sequential"},
          "e": {"hops": "2", "kind": "intersection", "order": "parallel"},
          "f": {"hops": "1", "kind": "bridge", "order": "single"}}


def brute_pass_at_k(outcomes: list[int], k: int) -> float:
    """The share of all k-subsets of the n samples that hold a correct one: pass@k by its definition."""
    subsets = list(itertools.combinations(outcomes, k))
    return sum(any(s) for s in subsets) / len(subsets)


def counts(seed: int) -> dict[str, int]:
    return {q: sum(v) for q, v in SAMPLES[seed].items()}


def test_stratified_curves_equal_brute_force_on_a_hand_made_table():
    got = passk_strata([counts(0), counts(1)], N, STRATA, n_boot=200)
    strata = group_strata(STRATA)
    assert list(strata) == ["hops=1", "hops=2", "hops=3", "kind=bridge", "kind=comparison", "kind=intersection",
                            "order=parallel", "order=sequential", "order=single"]
    assert strata["kind=bridge"] == ["a", "b", "d", "f"] and strata["order=parallel"] == ["c", "e"]
    for stratum, questions in strata.items():
        assert got[f"passk/{stratum}/questions"] == len(questions)
        for k in k_ladder(N):  # 1, 2, 4, 6
            # a question's pass@k: the mean over the two seeds; the stratum's: the mean over its questions
            want = sum(sum(brute_pass_at_k(SAMPLES[s][q], k) for s in (0, 1)) / 2 for q in questions) / len(questions)
            value = got[f"passk/{stratum}/pass@{k}"]
            assert value == pytest.approx(want, abs=1e-12), (stratum, k)
            assert got[f"passk/{stratum}/pass@{k}_lo"] <= value + 1e-12 <= got[f"passk/{stratum}/pass@{k}_hi"] + 2e-12
    # one seed alone, and only the axes that split the questions
    one = passk_strata(counts(0), N, {q: {"hops": s["hops"], "kind": "bridge"} for q, s in STRATA.items()},
                       ks=[2], min_values=2)
    assert sorted(one) == sorted(f"passk/hops={h}/{key}" for h in "123" for key in
                                 ("pass@2", "pass@2_lo", "pass@2_hi", "questions"))
    assert one["passk/hops=3/pass@2"] == pytest.approx(brute_pass_at_k(SAMPLES[0]["d"], 2)) == 1 / 3
    # a question one seed did not answer is left out of every stratum
    partial = passk_strata([counts(0), {q: c for q, c in counts(1).items() if q != "a"}], N, STRATA)
    assert partial["passk/hops=1/questions"] == 1 and partial["passk/hops=1/pass@1"] == pytest.approx(0.5 * (2 / 6))


def test_crossing_k_per_stratum():
    # pure curves: crossed, the arm ahead throughout, the arm never ahead
    base = {"s": {1: 0.2, 2: 0.5, 4: 0.7}, "t": {1: 0.1, 2: 0.2, 4: 0.3}, "u": {1: 0.5, 2: 0.6, 4: 0.9}}
    arm = {"s": {1: 0.4, 2: 0.5, 4: 0.6}, "t": {1: 0.5, 2: 0.6, 4: 0.7}, "u": {1: 0.4, 2: 0.7, 4: 0.8}}
    assert stratum_crossings(base, arm) == {"s": 2, "t": None, "u": None}

    # from counts: the arm (a sharpened model) solves a, c, e every time and nothing else; the base spreads
    arm_counts = {"a": N, "b": 0, "c": N, "d": 0, "e": N, "f": 0}
    base_counts = {"a": 2, "b": 1, "c": 1, "d": 3, "e": 1, "f": 2}
    flat = crossing_strata(base_counts, arm_counts, N, STRATA, n_boot=200)
    curves = {side: curves_of(passk_strata(c, N, STRATA, n_boot=10)) for side, c in
              (("base", base_counts), ("arm", arm_counts))}
    by_hand = stratum_crossings(curves["base"], curves["arm"])
    for stratum in group_strata(STRATA):
        k = flat[f"passk/{stratum}/crossing_k"]
        assert (None if math.isnan(k) else int(k)) == by_hand[stratum], stratum
        # the same numbers as the pooled crossing run on the stratum's questions alone
        qs = group_strata(STRATA)[stratum]
        alone = crossing({q: base_counts[q] for q in qs}, {q: arm_counts[q] for q in qs}, N, n_boot=200)
        assert {key: flat[key.replace("passk/", f"passk/{stratum}/")] for key in alone} == pytest.approx(alone,
                                                                                                      nan_ok=True)
    # hops=1: the arm leads (a: 1 vs 1/3) and is caught (f: the base finds it, the arm never does)
    assert flat["passk/hops=1/crossing_state"] == 1.0 and by_hand["hops=1"] == 2
    # intersection (e only): the arm solves it every time, the base catches up only at k = n
    assert by_hand["kind=intersection"] == N
    # sequential (b, d): the arm solves neither, so it is not ahead at k = 1
    assert flat["passk/order=sequential/crossing_state"] == -1.0 and by_hand["order=sequential"] is None
    # parallel (c, e): ahead at every k < n, caught at k = n exactly (both solve both)
    assert flat["passk/order=parallel/crossing_k"] == N and flat["passk/order=parallel/crossing_boot_share"] > 0.9


def test_evidence_order_on_real_synthetic_world_tasks():
    world = SyntheticWorld(seed=3, size="small", n_train=100, n_test=60)
    tasks = world.tasks("train") + world.tasks("test")
    orders = {(t.kind, t.difficulty): set() for t in tasks}
    for t in tasks:
        orders[(t.kind, t.difficulty)].add(evidence_order(t))
    assert {kind for kind, _ in orders} == {"bridge", "comparison", "intersection"}
    assert {d for kind, d in orders if kind == "bridge"} == {1, 2, 3, 4}
    for (kind, hops), found in orders.items():
        want = "single" if hops == 1 else "sequential" if kind == "bridge" else "parallel"
        assert found == {want}, (kind, hops, found)
    for t in tasks:
        steps = t.meta["steps"]
        if evidence_order(t) == "sequential":  # the structure the rule reads: each hop searches the last answer
            assert all(b["search"] == a["value"] for a, b in zip(steps, steps[1:]))
        # the same label from the kind alone, for worlds (or stored tasks) without per-hop steps
        bare = Task.from_json({**t.to_json(), "meta": {}})
        assert evidence_order(bare) == evidence_order(t)
        assert task_strata(t) == {"hops": str(t.difficulty), "kind": t.kind, "order": evidence_order(t)}
    # a count question (WikiFactbook: the border list first, then each neighbour) is sequential; an unknown
    # kind has no order and no order stratum
    assert evidence_order(Task("w", "?", ("2",), (), 3, "count", "test")) == "sequential"
    assert "order" not in task_strata(Task("x", "?", ("y",), (), 2, "riddle", "test"))


# ---- the report: fabricated run folders in a real (small) synthetic world ----------------------------------

WORLD_KWARGS = {"seed": 1, "size": "small", "max_hops": 2, "n_train": 20, "n_test": 24}
RECIPE = ('[env]\nid = "searchgym/SyntheticWorld-Easy-v0"\n[env.kwargs]\nembedder = "hashing"\n'
          '[env.kwargs.world_kwargs]\n' + "".join(f"{k} = {json.dumps(v)}\n" for k, v in WORLD_KWARGS.items())
          + '[eval]\nsplit = "test"\n')


def _trajectory(task: Task, i: int, correct: bool) -> Trajectory:
    calls = [{"name": "search", "arguments": {"query": task.question}, "valid": True},
             {"name": "answer", "arguments": {"answer": "x"}, "valid": True}]
    return Trajectory(task_id=task.id, env_id="searchgym/SyntheticWorld-Easy-v0", sample=i, question=task.question,
                      messages=[], calls=calls, signature="S A", strategy="forward", queries=[task.question],
                      docs_retrieved=[], docs_opened=[], answer=task.answers[0] if correct else "no",
                      reward=float(correct), correct=correct, gold_answers=list(task.answers),
                      evidence=[list(c) for c in task.evidence], difficulty=task.difficulty)


def _study(root: Path, questions: list[Task], n: int = 8) -> Path:
    """A base arm that solves every question now and then, and an arm sharpened on parallel questions: it
    solves half of them every time and nothing else."""
    parallel = [t.id for t in questions if evidence_order(t) == "parallel"]
    for arm in ("base", "grpo"):
        for seed in range(2):
            rng = random.Random(f"{arm}{seed}")
            folder = root / arm / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "recipe.toml").write_text(RECIPE)
            rows = []
            for t in questions:
                p = 0.3 if arm == "base" else (0.97 if t.id in parallel[::2] else 0.0)
                rows += [_trajectory(t, i, rng.random() < p) for i in range(n)]
            write_trajectories(folder / "trajectories.jsonl", rows, parquet=False)
    (root / "study.toml").write_text('name = "t"\n[arms.base]\n[arms.grpo]\n')
    return root


def test_report_section_per_stratum(tmp_path):
    from searchgym.report import report_command

    questions = SyntheticWorld(**WORLD_KWARGS).tasks("test")
    page = report_command([_study(tmp_path / "study", questions)])
    out = page.parent
    numbers = json.loads((out / "report.json").read_text())["strata"]
    assert list(numbers["strata"]) == ["hops=1", "hops=2", "kind=bridge", "kind=comparison", "kind=intersection",
                                       "order=parallel", "order=sequential", "order=single"]
    assert numbers["strata"]["order=sequential"] == sorted(t.id for t in questions if evidence_order(t) == "sequential")
    grpo = numbers["crossings"]["grpo"]
    assert grpo["passk/order=sequential/crossing_state"] == -1.0  # never solves a chain: not ahead at k = 1
    assert grpo["passk/order=parallel/crossing_state"] == 1.0  # ahead at k = 1, then the base catches up
    assert numbers["curves"]["grpo"]["passk/order=parallel/pass@1"] > numbers["curves"]["base"]["passk/order=parallel/pass@1"]
    assert (out / "report_strata.png").read_bytes().startswith(b"\x89PNG")
    html = page.read_text()
    assert "pass@k by stratum" in html and "Where the base catches up, per stratum" in html
    assert "fig-strata" in html and 'data-figures-expected="' in html
    md = (out / "report.md").read_text()
    assert "## pass@k by stratum" in md and "| order=sequential |" in md and "arm not ahead at k = 1" in md


def test_report_strata_without_the_world_and_without_strata(tmp_path):
    """Runs whose env cannot be rebuilt still get hop strata; questions of one hop count and no world: no
    section at all."""
    from searchgym.report import report_command
    from searchgym.report.data import summarise
    from searchgym.report.discover import discover_runs
    from searchgym.report.strata import strata_data

    questions = SyntheticWorld(**WORLD_KWARGS).tasks("test")
    study = _study(tmp_path / "study", questions)
    for recipe in study.glob("*/seed*/recipe.toml"):
        recipe.unlink()
    sd = strata_data(summarise(discover_runs([study])), n_boot=50)
    assert list(sd.strata) == ["hops=1", "hops=2"] and not sd.notes

    for recipe in study.glob("*/seed*"):  # a world rebuilt with other arguments: its questions do not match
        (recipe / "recipe.toml").write_text(RECIPE.replace("seed = 1", "seed = 2"))
    sd = strata_data(summarise(discover_runs([study])), n_boot=50)
    assert list(sd.strata) == ["hops=1", "hops=2"] and "not found with the same text" in sd.notes[0]
    for recipe in study.glob("*/seed*"):  # an env this machine does not have
        (recipe / "recipe.toml").write_text('[env]\nid = "someone/Else-v0"\n')
    sd = strata_data(summarise(discover_runs([study])), n_boot=50)
    assert list(sd.strata) == ["hops=1", "hops=2"] and "no world found for the runs' env (someone/Else-v0)" in sd.notes[0]

    one_hop = _study(tmp_path / "one", [t for t in questions if t.difficulty == 1])
    for recipe in one_hop.glob("*/seed*/recipe.toml"):
        recipe.unlink()
    page = report_command([one_hop])
    assert not (page.parent / "report_strata.png").exists() and "pass@k by stratum" not in page.read_text()
    assert "strata" not in json.loads((page.parent / "report.json").read_text())
