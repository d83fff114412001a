"""The report's dose and distance section on fabricated dose ladders: arms whose meters move with KL as
built in, so the curves, the matched-KL differences and the slopes can be checked against the plant."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from searchgym.meters.families import example
from searchgym.meters.stats import interpolate_at
from searchgym.meters.table import label
from searchgym.report import report_command
from searchgym.report.dose import HEADLINE, dose_data, dose_findings, dose_table
from searchgym.report.figures import dose_figure
from searchgym.trajectory import write_trajectories

QUESTIONS, N = 12, 8
STRATEGIES = ("forward", "question_first", "parallel", "snippet")
STRATEGY = HEADLINE[2]  # whatever the report's strategy-entropy estimator is called, and its label
SE = label(STRATEGY)
# arm -> (stage, [(stage step, planted KL k3 of seed 0, dominant-strategy count of n, token entropy)])
# sft-narrow collapses onto one strategy as it moves away from the base; sft-diverse and grpo keep sampling
# all four at random: the null pair.
LADDERS = {
    "sft-narrow": ("sft", [(10, 0.05, 6, 0.9), (20, 0.10, 7, 0.7), (40, 0.20, 8, 0.5)]),
    "sft-diverse": ("sft", [(10, 0.04, None, 1.0), (20, 0.10, None, 1.0), (40, 0.30, None, 1.0)]),
    "grpo": ("grpo", [(25, 0.02, None, 1.0), (50, 0.12, None, 1.0), (100, 0.25, None, 1.0)]),
}
BASE_TOKEN_ENTROPY = 1.0


def _samples(tag: str, dominant: int | None, token_entropy: float) -> list:
    """n samples of every question: ``dominant`` of them on the first strategy and the rest spread over the
    others in turn (None: each sample's strategy at random), with success at random (p = 0.5) for every arm."""
    rng = random.Random(tag)
    out = []
    for q in range(QUESTIONS):
        for i in range(N):
            if dominant is None:
                strategy = rng.choice(STRATEGIES)
            else:
                strategy = STRATEGIES[0] if i < dominant else STRATEGIES[1 + (i - dominant) % 3]
            correct = rng.random() < 0.5
            out.append(example(sample=i, task_id=f"q{q:02d}", question=f"question {q}?", strategy=strategy,
                               queries=[f"{strategy} {q} {rng.randrange(9)}"], correct=correct, reward=float(correct),
                               answer="x" if correct else "y", token_entropies=[token_entropy] * 4,
                               token_roles=["query", "answer", "post_tool", "other"]))
    return out


def _kl_per_question(mean: float) -> dict[str, float]:
    """Per-question KL whose mean over the 12 questions is exactly ``mean``."""
    return {f"q{q:02d}": mean * (1 + 0.5 * (q % 3 - 1)) for q in range(QUESTIONS)}


def _rung(study: Path, arm: str, seed: int, stage: str, stage_step: int, step: int, kl: float,
          trajectories: list, final: bool) -> None:
    folder = study / arm / f"seed{seed}" / "dose" / f"{stage}-{stage_step}"
    folder.mkdir(parents=True)
    write_trajectories(folder / "trajectories.jsonl", trajectories, parquet=False)
    per_q = _kl_per_question(kl)
    record = {"version": 1, "arm": arm, "seed": seed, "rung": f"{stage}-{stage_step}", "stage": stage,
              "stage_step": stage_step, "step": step, "sft_examples": 8 * step if stage == "sft" else 0,
              "grpo_episodes": 8 * step if stage == "grpo" else 0, "tokens": None, "final": final,
              "questions": QUESTIONS, "n": N,
              "kl": {e: {"value": kl, "lo": kl, "hi": kl} for e in ("k1", "k3", "exact")},
              "kl_per_question": {e: per_q for e in ("k1", "k3", "exact")}, "kl_tokens": 1000, "meters": {},
              "seconds": 1.0}
    (folder / "dose.json").write_text(json.dumps(record))
    if final:  # the arm's final eval, where `searchgym report` finds the runs
        write_trajectories(study / arm / f"seed{seed}" / "trajectories.jsonl", trajectories, parquet=False)


def make_study(root: Path, seeds: int = 2) -> Path:
    for seed in range(seeds):
        _rung(root, "base", seed, "base", 0, 0, 0.0, _samples(f"base-{seed}", None, BASE_TOKEN_ENTROPY), True)
        for arm, (stage, ladder) in LADDERS.items():
            for j, (stage_step, kl, dominant, entropy) in enumerate(ladder):
                _rung(root, arm, seed, stage, stage_step, stage_step, kl * (1 + 0.1 * seed),
                      _samples(f"{arm}-{seed}-{j}", dominant, entropy), j == len(ladder) - 1)
    (root / "study.toml").write_text('name = "dose"\n[arms.base]\n[arms.sft-narrow]\n[arms.sft-diverse]\n'
                                     "[arms.grpo]\n")
    return root


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return make_study(tmp_path_factory.mktemp("dose-study"))


@pytest.fixture(scope="module")
def data(study):
    return dose_data(study, n_boot=1000)


def test_curves_recover_the_planted_ladder(data):
    assert data.arms == ["base", "sft-narrow", "sft-diverse", "grpo"]
    assert (data.n, len(data.questions)) == (N, QUESTIONS)
    narrow = data.curves["sft-narrow"]
    # rung 0 is the base model, then the rungs by step; KL is the mean over seeds of the planted means
    assert [p.rung for p in narrow[STRATEGY]] == ["base-0", "sft-10", "sft-20", "sft-40"]
    assert [p.step for p in narrow[STRATEGY]] == [0, 10, 20, 40]
    assert [p.kl for p in narrow[STRATEGY]] == pytest.approx([0.0, 0.0525, 0.105, 0.21])
    assert [p.value for p in narrow["entropy/token"]] == pytest.approx([1.0, 0.9, 0.7, 0.5])
    assert [p.value for p in narrow["entropy/token_answer"]] == pytest.approx([1.0, 0.9, 0.7, 0.5])
    # strategy entropy falls to 0 (one strategy) for sft-narrow; its trained rungs are the same mix in both
    # seeds, so the band is a line there, while the base's random mix differs by seed
    values = [p.value for p in narrow[STRATEGY]]
    assert values == sorted(values, reverse=True) and values[-1] == 0.0
    assert all(p.lo == p.value == p.hi and p.seeds == 2 for p in narrow[STRATEGY][1:])
    assert narrow[STRATEGY][0].lo < narrow[STRATEGY][0].hi
    diverse = data.curves["sft-diverse"][STRATEGY]
    assert all(p.lo <= p.value <= p.hi for p in diverse) and min(p.value for p in diverse) > 1.0
    assert [p.rung for p in data.curves["base"][STRATEGY]] == ["base-0"]


def test_matched_kl_difference_is_claimed_only_where_planted(data):
    pairs = {(m.a, m.b, m.key): m for m in data.matched}
    narrow = pairs[("sft-narrow", "sft-diverse", STRATEGY)]
    # κ: the largest KL every seed of both arms reaches = sft-narrow seed 0's last rung
    assert narrow.kappa == pytest.approx(0.2)
    assert narrow.claimed and narrow.diff.hi < 0 and narrow.diff.value == pytest.approx(
        narrow.a_value.value - narrow.b_value.value)
    assert narrow.a_value.value < 0.1  # seed 0 sits at its end (0), seed 1 just short of its end
    null = pairs[("sft-diverse", "grpo", STRATEGY)]
    assert not null.claimed and null.diff.lo < 0 < null.diff.hi
    assert not any(m.claimed for m in data.matched if m.key == HEADLINE[0])  # success is p = 0.5 everywhere
    text = " ".join(dose_findings(data))
    assert f"{SE} is lower for sft-narrow" in text
    assert f"no difference in {SE} larger than {null.bound:.3f}" in text


def test_slopes_have_the_planted_sign(data):
    narrow, diverse = data.slopes["sft-narrow"][STRATEGY], data.slopes["sft-diverse"][STRATEGY]
    assert narrow.hi < 0 and narrow.lo <= narrow.value <= narrow.hi
    assert not (diverse.lo > 0 or diverse.hi < 0)
    token = data.slopes["sft-narrow"]["entropy/token"]
    assert token.value == pytest.approx(-0.5 / 0.21 * 1.0, rel=0.2) and token.hi < 0  # 1.0 -> 0.5 over ~0.21 nats
    assert f"{SE} falls along its dose ladder" in " ".join(dose_findings(data))


def test_interpolation_and_bootstrap_are_vectorised():
    x = np.array([[0.0, 0.1, 0.3], [0.0, 0.4, 0.5]])
    y = np.array([[1.0, 0.8, 0.2], [0.0, 1.0, 2.0]])
    assert interpolate_at(x, y, 0.2).tolist() == pytest.approx([0.5, 0.5])


def test_missing_base_seed_and_missing_kl_are_noted(tmp_path):
    study = make_study(tmp_path / "s")
    shutil.rmtree(study / "base" / "seed1")
    rung = study / "grpo" / "seed0" / "dose" / "grpo-50" / "dose.json"
    record = json.loads(rung.read_text())
    record["kl_per_question"]["k3"] = {q: None for q in record["kl_per_question"]["k3"]}  # NaN is written null
    rung.write_text(json.dumps(record))
    data = dose_data(study, n_boot=200)
    assert any("no base-0 rung of seed 1" in note for note in data.notes)
    assert any("grpo seed 0: rung(s) grpo-50 have no KL" in note for note in data.notes)
    # seed 1's rung 0 is the mean of the base seeds there are (seed 0 only here): the same as seed 0's
    narrow = {p.seed: p for p in data.paths if p.arm == "sft-narrow"}
    assert narrow[1].rungs[0] == "base-0" and np.array_equal(narrow[1].values[STRATEGY][0],
                                                             narrow[0].values[STRATEGY][0])
    assert [p.rung for p in data.curves["grpo"][STRATEGY]] == ["base-0", "grpo-25", "grpo-50", "grpo-100"]
    assert [p.seeds for p in data.curves["grpo"][STRATEGY]] == [2, 2, 1, 2]


def test_report_writes_the_dose_section(study, data):
    page = report_command([study], out=study / "out")
    out = page.parent
    assert (out / "report_dose.png").read_bytes().startswith(b"\x89PNG")
    html = page.read_text()
    header, rows = dose_table(data)
    assert "Dose and distance" in html and "id='fig-dose'" in html and header[2] in html
    assert "sft-narrow − sft-diverse" in html and 'data-figures-expected="' in html
    md = (out / "report.md").read_text()
    assert "## Dose and distance" in md and "![" in md and "report_dose.png" in md
    assert f"| sft-narrow − sft-diverse | {SE} |" in md
    assert f"{SE} is lower for sft-narrow" in md
    numbers = json.loads((out / "report.json").read_text())
    assert numbers["dose"]["kl_estimator"] == "k3" and numbers["dose"]["matched"]
    assert dose_figure(data).startswith(b"\x89PNG")


def test_study_without_a_dose_ladder_reports_as_before(study, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(study, plain, ignore=shutil.ignore_patterns("dose", "out"))
    assert dose_data(plain) is None
    page = report_command([plain])
    html, md = page.read_text(), (plain / "report.md").read_text()
    assert "Dose and distance" not in html and "Dose and distance" not in md
    assert not (plain / "report_dose.png").exists()
    assert "dose" not in json.loads((plain / "report.json").read_text())
    images = html.count("src='data:image/png;base64,")
    assert f'data-figures-expected="{images}"' in html and not math.isnan(images)


def test_an_arm_that_continues_another_is_not_compared_inside_their_shared_path():
    """SFT-narrow then GRPO repeats SFT-narrow's rungs seed for seed: at matched KL the two would meet on that
    shared path (a difference of exactly 0 that says nothing about GRPO), so the pair is skipped and named."""
    import numpy as np

    from searchgym.report.dose import SeedPath, continues

    def path(arm, rungs, values):
        return SeedPath(arm, 0, rungs, np.arange(len(rungs)), {"kl/k3": np.array(values)}, [{}] * len(rungs))

    sft = path("sft-narrow", ["base-0", "sft-10"], [[0.0, 0.0], [0.2, 0.1]])
    chained = path("sft-narrow-grpo", ["base-0", "sft-10", "grpo-10"], [[0.0, 0.0], [0.2, 0.1], [0.3, 0.1]])
    other = path("sft-narrow-grpo", ["base-0", "sft-10", "grpo-10"], [[0.0, 0.0], [0.25, 0.1], [0.3, 0.1]])
    assert continues([sft], [chained]) and not continues([chained], [sft])
    assert not continues([sft], [other])  # the same rung names but another training: a real comparison


def test_arms_that_trained_the_same_weights_are_called_identical(data):
    """A setting with no effect (clip-higher while every update is on-policy) gives an arm whose rungs equal
    another's value for value: the findings say so once, not that each continues the other."""
    import dataclasses

    twin = [dataclasses.replace(p, arm="sft-narrow-twin") for p in data.paths if p.arm == "sft-narrow"]
    same = dataclasses.replace(data, paths=[*data.paths, *twin], arms=[*data.arms, "sft-narrow-twin"],
                               slopes={**data.slopes, "sft-narrow-twin": data.slopes["sft-narrow"]})
    found = dose_findings(same)
    assert sum("**sft-narrow and sft-narrow-twin are identical:**" in f for f in found) == 1
    assert not [f for f in found if "continues sft-narrow" in f or "twin continues" in f]


def test_the_rung_table_shows_how_far_each_arm_moved(data):
    """One row per arm and rung with its step and KL (mean over seeds; the seeds' min-max for k3): seed 1's KL is
    planted 10% above seed 0's, so the mean is 1.05 x the ladder's value and the band spans 1.0-1.1 x."""
    from searchgym.report.dose import rung_table

    header, rows = rung_table(data)
    assert header[:4] == ["arm", "rung", "step", "KL k3 [min–max over seeds]"] and header[-1] == "seeds"
    assert rows[0][:3] == ["base", "base-0", "0"] and rows[0][3].startswith("0.0000")
    stage, ladder = LADDERS["sft-narrow"]
    narrow = [r for r in rows if r[0] == "sft-narrow"]
    assert [r[1] for r in narrow] == [f"{stage}-{k}" for k, *_ in ladder]  # no rung 0 row: that is the base's
    last = ladder[-1][1]
    assert narrow[-1][3] == f"{1.05 * last:.4f} [{last:.4f}, {1.1 * last:.4f}]" and narrow[-1][-1] == "2"
