"""The table of meters (`searchgym.meters.table`): it declares every key `aggregate` emits, its headline
keys are emitted, and one new row is all a new meter needs to reach aggregate, `searchgym meter` and the
live probes."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from test_meters_aggregate import hand_built, traj
from transformers import TrainerControl, TrainerState

from searchgym.meters import METERS, Meter, aggregate, table
from searchgym.report.meter_command import meter_command
from searchgym.runs import read_metrics
from searchgym.trajectory import write_trajectories

# The headline keys as they were written by hand before the table existed: the table must keep them.
LEGACY_MAIN_KEYS = ("reward/success", "passk/pass@1", "diversity/strategy_entropy_mm",
                    "diversity/signature_entropy_mm", "diversity/answer_distinct", "diversity/vendi",
                    "search/calls_mean", "search/query_breadth", "search/unique_docs", "entropy/token")


def batches() -> dict[str, list]:
    """Trajectory lists that between them exercise every family: token data and reference log-probs, two
    difficulties, several tool-call counts, and a world without strategy labels."""
    wide = [traj(f"w{q}", i, "S " * (i + q) + "A", difficulty=1 + q % 3, correct=bool((i + q) % 2),
                 queries=[f"a{i}", f"b{q}"]) for q in range(4) for i in range(4)]
    return {"hand_built": hand_built(), "wide": wide,
            "no_strategy": [traj("q", i, strategy=None) for i in range(3)]}


@pytest.mark.parametrize("name", ["hand_built", "wide", "no_strategy"])
def test_every_emitted_key_is_declared_by_a_row(name):
    m = aggregate(batches()[name])
    undeclared = [k for k in m if table.row_of(k) is None]
    assert not undeclared, f"keys no row of METERS declares: {undeclared}"
    assert all(table.label(k) and "{" not in table.label(k) for k in m)  # every key gets a filled-in label


def test_every_row_but_the_model_meters_is_emitted():
    emitted = {k for trajectories in batches().values() for k in aggregate(trajectories)}
    silent = [m.key for m in METERS
              if m.kind != table.MODEL and all(m.match(k) is None for k in emitted)]
    assert not silent, f"rows that no batch emits (dead rows or a renamed key): {silent}"


def test_headline_keys_are_derived_from_the_table_and_emitted():
    assert table.MAIN_KEYS == table.main_keys() == LEGACY_MAIN_KEYS
    m = aggregate(hand_built())
    assert all(math.isfinite(m[k]) for k in table.MAIN_KEYS)
    assert set(table.NAMESPACES) >= {"diversity/", "search/", "reward/", "entropy/", "passk/", "kl/", "meta/"}


def test_ordered_puts_meta_then_headlines_then_rows_in_table_order():
    keys = list(aggregate(hand_built()))
    ordered = table.ordered(keys)
    assert sorted(ordered) == sorted(keys)
    assert ordered[:2] == ["meta/n", "meta/questions"] and ordered[2:12] == list(table.MAIN_KEYS)
    rest = ordered[12:]
    order = [rest.index(k) for k in ("reward/mean", "passk/pass@2", "passk/pass^1", "kl/k3")]
    assert order == sorted(order)


def test_rows_are_checked_when_written():
    with pytest.raises(ValueError, match="needs a compute function"):
        Meter("toy/x", "x")
    with pytest.raises(ValueError, match="unknown placeholder 'q'"):
        Meter("toy/x_{q}", "x", kind=table.BATCH)
    with pytest.raises(ValueError, match="namespace"):
        Meter("x", "x", kind=table.BATCH)
    with pytest.raises(KeyError, match="declares 'toy/x'"):
        table.label("toy/x")


def distinct_raw_answers(group) -> dict[str, float]:
    """A toy meter: distinct final answers before normalisation (q1 answers 'Paris' and 'paris!')."""
    return {"toy/raw_answers": float(len({t.answer for t in group}))}


def test_a_new_meter_is_one_table_row(tmp_path, monkeypatch, capsys):
    import searchgym.agent.rollout
    from searchgym.train.probes import DiversityCallback, meter_logs

    before = aggregate(hand_built())
    assert "toy/raw_answers" not in before
    assert meter_logs({"toy/raw_answers": 1.0}) == {"diversity/toy/raw_answers": 1.0}  # not a namespace yet
    toy = Meter("toy/raw_answers", "raw answers", "answers", distinct_raw_answers, headline=True)
    monkeypatch.setattr(table, "METERS", METERS + (toy,))

    # aggregate: the new key, averaged over questions; every other value unchanged
    m = aggregate(hand_built())
    assert m["toy/raw_answers"] == 2.0
    assert {k: v for k, v in m.items() if k != "toy/raw_answers"} == pytest.approx(before, nan_ok=True)
    assert table.main_keys() == LEGACY_MAIN_KEYS + ("toy/raw_answers",)
    assert table.label(toy.key) == "raw answers"

    # searchgym meter: printed among the headline rows (after the old ones, before the rest), with a CI
    monkeypatch.chdir(tmp_path)
    write_trajectories(tmp_path / "run" / "trajectories.jsonl", hand_built())
    meter_command([tmp_path / "run"], n_boot=50)
    printed = capsys.readouterr().out
    assert printed.index("entropy/token ") < printed.index("toy/raw_answers") < printed.index("reward/mean")
    block = json.loads((tmp_path / "meters.json").read_text())["inputs"][0]
    assert block["meters"]["toy/raw_answers"] == 2.0 and block["ci95"]["toy/raw_answers"] == [2.0, 2.0]

    # live probes: logged under its own namespace in metrics.jsonl (the real measure, with a canned rollout)
    monkeypatch.setattr(searchgym.agent.rollout, "rollout", lambda *args, **kwargs: hand_built())
    callback = DiversityCallback(tmp_path / "probe", tokenizer=None, env_id="unused", every=1, samples=2,
                                 stage="grpo", max_overhead=0)
    callback._task_ids = ["q1", "q2"]
    callback.probe(SimpleNamespace(report_to=["none"]), TrainerState(), TrainerControl(), model=None)
    row = next(r for r in read_metrics(tmp_path / "probe") if r.get("probe"))
    assert row["toy/raw_answers"] == 2.0 and "diversity/toy/raw_answers" not in row
    assert row["reward/success"] == before["reward/success"]
