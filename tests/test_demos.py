"""Demo sets on a small synthetic world: honest labels, same questions and size, diverse beats narrow."""

from __future__ import annotations

import gymnasium
import pytest

from searchgym.agent.demos import build_demo_sets, build_demos, save_demo_sets, strategy_entropy, to_dataset
from searchgym.envs.tools import SearchTools
from searchgym.tasks import ToolCall

ENV_ID = "searchgym/SyntheticWorld-Easy-v0"
ENV_KWARGS = {"embedder": "hashing", "top_k": 3, "max_obs_chars": 600,
              "world_kwargs": {"size": "small", "max_hops": 2, "n_train": 80, "n_test": 10}}
SETTINGS = dict(num_questions=12, demos_per_question=2, seed=3, narrow_strategy="forward", env_kwargs=ENV_KWARGS)


@pytest.fixture(scope="module")
def sets():
    return build_demo_sets(ENV_ID, **SETTINGS)


@pytest.fixture(scope="module")
def world():
    return gymnasium.make(ENV_ID, **ENV_KWARGS).unwrapped.taskset


def test_labels_match_the_world_classifier_of_their_own_trace(sets, world):
    tasks = {t.id: t for t in world.tasks("train")}
    for demos in sets.values():
        for t in demos:
            calls = [ToolCall(c["name"], c["arguments"]) for c in t.calls if c["valid"]]
            assert world.classify_strategy(tasks[t.task_id], calls) == t.meta["demo_strategy"] == t.strategy
            assert t.meta["demo_strategy"] in tasks[t.task_id].strategies


def test_same_questions_same_count_all_correct(sets):
    diverse, narrow = sets["diverse"], sets["narrow"]
    assert len(diverse) == len(narrow) == SETTINGS["num_questions"] * SETTINGS["demos_per_question"]
    assert [t.task_id for t in diverse] == [t.task_id for t in narrow]
    assert len({t.task_id for t in diverse}) == SETTINGS["num_questions"]
    assert all(t.correct and t.reward > 0 for t in diverse + narrow)
    assert {(t.meta["demo_strategy"], t.meta["demo_style"]) for t in narrow} == {("forward", "keyword")}


def test_diverse_has_higher_strategy_entropy_than_narrow(sets):
    assert strategy_entropy(sets["narrow"]) == 0.0
    assert strategy_entropy(sets["diverse"]) > 1.0  # several strategies, fairly evenly
    assert len({t.meta["demo_style"] for t in sets["diverse"]}) >= 3


def test_building_is_deterministic_and_seeded():
    again = build_demos(ENV_ID, "diverse", **SETTINGS)
    assert [t.to_json() for t in again] == [t.to_json() for t in build_demos(ENV_ID, "diverse", **SETTINGS)]
    other = build_demos(ENV_ID, "diverse", **{**SETTINGS, "seed": 4})
    assert [t.task_id for t in other] != [t.task_id for t in again]


def test_dataset_rows_render_the_exact_conversation(sets, tmp_path):
    from datasets import load_from_disk

    stats = save_demo_sets(sets, tmp_path)
    assert stats["diverse"]["strategy_entropy"] > stats["narrow"]["strategy_entropy"]
    dataset = load_from_disk(str(tmp_path / "diverse"))
    assert dataset.column_names == ["messages", "tools", "strategy", "style", "task_id"]
    row, demo = dataset[0], sets["diverse"][0]
    assert row["messages"] == demo.messages  # no null fields merged into tool calls
    assert row["tools"] == SearchTools.schemas()
    assert (row["strategy"], row["style"], row["task_id"]) == (demo.meta["demo_strategy"],
                                                               demo.meta["demo_style"], demo.task_id)
    calls = [m["tool_calls"][0]["function"] for m in row["messages"] if m.get("tool_calls")]
    assert calls[-1]["name"] == "answer" and row["messages"][-1] == {"role": "assistant", "content": demo.answer}
    assert to_dataset(sets["narrow"]).num_rows == len(sets["narrow"])


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="sft.narrow_strategy"):
        build_demos(ENV_ID, "narrow", **{**SETTINGS, "narrow_strategy": "telepathy"})
    with pytest.raises(ValueError, match="sft.narrow_style"):
        build_demos(ENV_ID, "narrow", **SETTINGS, narrow_style="shouting")
    with pytest.raises(ValueError, match="demo kind"):
        build_demos(ENV_ID, "medium", **SETTINGS)
