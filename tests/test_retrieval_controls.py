"""Retrieval controls (docs/controls.md): a random retriever, an oracle retriever and a closed book each change
what ``search`` returns (or whether it is offered) and nothing else: same questions, same rewards, same step
costs. On the small synthetic world with the hashing embedder (no model, the index builds in a second)."""

from collections import Counter
from pathlib import Path

import gymnasium
import pytest

import searchgym  # noqa: F401  (registers the envs)
from searchgym.envs.actions import format_tool_call
from searchgym.envs.controls import OracleIndex, RandomIndex
from searchgym.envs.tools import SYSTEM_PROMPT, SearchTools
from searchgym.tasks import ToolCall
from searchgym.testing import fuzz
from searchgym.util.config_schema import ConfigError

ENV_ID = "searchgym/SyntheticWorld-Easy-v0"
KWARGS = {"embedder": "hashing", "top_k": 5, "max_steps": 6, "step_cost": 0.01, "format_penalty": 0.1,
          "world_kwargs": {"size": "small", "max_hops": 2, "n_train": 60, "n_test": 20}}
CONTROLS = {"random": {"retriever": "random"}, "oracle": {"retriever": "oracle"}, "closed book": {"tools": ["answer"]}}


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """An empty $SEARCHGYM_CACHE: nothing here is written to ~/.cache."""
    with pytest.MonkeyPatch.context() as m:
        m.setenv("SEARCHGYM_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def make(**kwargs):
    return gymnasium.make(ENV_ID, **{**KWARGS, **kwargs})


def call(name, **arguments):
    return format_tool_call(ToolCall(name, arguments))


def play(env, seed, actions):
    """reset(seed) then ``actions`` (a function of the reset info, giving texts): every step's outcome."""
    question, info = env.reset(seed=seed)
    steps = [(question, info["task_id"], info["gold_answers"], info["evidence"])]
    for action in actions(question, info):
        obs, reward, terminated, truncated, step_info = env.step(action)
        steps.append((obs, reward, terminated, truncated, step_info["error"], step_info["shown"]))
    return steps


def episode(question, info):
    gold = info["gold_answers"][0]
    return [call("search", query=question), "open: " + info["evidence"][0][0], call("answer", text="not it"),
            call("answer", text=gold)]


@pytest.mark.parametrize("control", list(CONTROLS))
def test_each_control_changes_search_and_nothing_else(control):
    dense, other = make(), make(**CONTROLS[control])
    changed = 0
    for seed in range(8):
        a, b = play(dense, seed, episode), play(other, seed, episode)
        assert a[0] == b[0]  # same question, task, gold answers and evidence
        search_a, search_b = a[1], b[1]
        if control == "closed book":  # refused: an error observation and the invalid-action penalty
            assert search_b[0].startswith("Error: search is not available") and "closed book" in search_b[0]
            assert search_b[1:5] == (-0.1, False, False, search_b[4]) and search_b[4] and search_b[5] == []
            assert b[2][0].startswith("Error: open is not available") and b[2][1] == -0.1
        else:  # same cost, other documents
            assert search_b[1:5] == search_a[1:5] == (-0.01, False, False, None) and len(search_b[5]) == 5
            assert b[2][1:5] == a[2][1:5] == (-0.01, False, False, None)  # open works as before
            changed += search_a[5] != search_b[5]
        # answering is scored exactly alike: a wrong answer ends the episode with 0, the rest is an error
        assert a[3][1:4] == b[3][1:4] == (0.0, True, False)
        assert a[4][1] == b[4][1] == -0.1 and a[4][4] is not None
    if control != "closed book":
        assert changed >= 6, f"{control} returned the dense ranking in {8 - changed} of 8 searches"
    assert dense.unwrapped.reward_range == other.unwrapped.reward_range


@pytest.mark.parametrize("control", list(CONTROLS))
def test_the_gold_answer_earns_the_same_reward_under_every_control(control):
    env = make(**CONTROLS[control])
    for seed in range(5):
        _, info = env.reset(seed=seed)
        obs, reward, terminated, truncated, info = env.step(call("answer", text=info["gold_answers"][0]))
        assert (reward, terminated, truncated, info["correct"]) == (1.0, True, False, True), obs


def test_random_is_reproducible_per_seed_and_draws_afresh_each_search():
    env = make(retriever="random")
    assert isinstance(env.unwrapped.index, RandomIndex)

    def searches(seed, query="anything"):
        env.reset(seed=seed)
        return [tuple(env.step(call("search", query=query))[4]["shown"]) for _ in range(3)]

    first = searches(0)
    assert searches(0) == first == searches(0, "another query")  # same seed: same documents, whatever the query
    assert len(set(first)) == 3  # each search draws afresh
    assert all(len(set(s)) == 5 for s in first)  # top_k distinct documents
    assert searches(1) != first
    # A fresh env (another process would do the same: the task id is hashed stably) gives the same documents.
    again = make(retriever="random")
    again.reset(seed=0)
    assert tuple(again.step(call("search", query="x"))[4]["shown"]) == first[0]


def test_random_draws_are_uniform_over_the_corpus():
    index = make(retriever="random").unwrapped.index
    n, k, draws = len(index), 5, 4000
    counts = Counter(h.doc_id for key in range(draws) for h in index.search(["q"], k, key=(key,))[0])
    expected = draws * k / n
    assert set(counts) == set(index.corpus.ids)  # every document can come up
    # each count is binomial(draws, k/n): within 5 standard deviations of its mean
    assert all(abs(c - expected) < 5 * expected ** 0.5 for c in counts.values()), counts.most_common(3)


def test_oracle_puts_the_first_gold_chain_first_then_the_dense_ranking():
    env, dense = make(retriever="oracle"), make()
    base = dense.unwrapped.index
    assert isinstance(env.unwrapped.index, OracleIndex)
    for task in env.unwrapped.tasks[:20]:
        query = "who was born in the year 1930"
        env.reset(options={"task_id": task.id})
        shown = env.step(call("search", query=query))[4]["shown"]
        gold = list(task.evidence[0])
        assert shown[: len(gold)] == gold  # the first chain, in reading order
        ranking = [h.doc_id for h in base.search([query], 5 + len(gold))[0] if h.doc_id not in gold]
        assert shown[len(gold):] == ranking[: 5 - len(gold)]
        assert env.step(call("search", query="something else"))[4]["shown"][: len(gold)] == gold  # every search


def test_oracle_caps_gold_at_k_and_skips_ids_outside_the_corpus():
    index = make(retriever="oracle").unwrapped.index
    ids = index.corpus.ids
    hits = index.search(["q"], 2, gold=[ids[7], "no-such-doc", ids[3], ids[9]])[0]
    assert [h.doc_id for h in hits] == [ids[7], ids[3]]
    hits = index.search(["q"], 4, gold=[ids[7]])[0]
    assert hits[0].doc_id == ids[7] and len({h.doc_id for h in hits}) == 4
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)  # scores in rank order


def test_closed_book_offers_only_answer_and_never_raises():
    env = make(tools=["answer"])
    _, info = env.reset(seed=0)
    assert [t["function"]["name"] for t in info["tools"]] == ["answer"]
    assert "search(" not in info["system_prompt"] and "answer(text)" in info["system_prompt"]
    assert make().reset(seed=0)[1]["system_prompt"] == SYSTEM_PROMPT  # the default prompt is unchanged
    for text in ["search: x", "open(syn:person:0001)", call("open", doc_id="syn:person:0001"), "garbage", "", None,
                 42, "x" * 5000, '<tool_call>{"name": "search"}</tool_call>']:
        env.reset(seed=1)
        obs, reward, terminated, truncated, info = env.step(text)
        assert obs.startswith("Error:") and reward == -0.1 and not terminated and info["error"]
    assert env.unwrapped.signature() == "X"  # a refused call is an invalid step, like any other


def test_snippets_only_refuses_open_but_searches():
    env = make(tools=["search", "answer"])
    _, info = env.reset(seed=0)
    assert [t["function"]["name"] for t in info["tools"]] == ["answer", "search"]
    obs, reward, *_, info = env.step(call("search", query="Thogous"))
    assert info["error"] is None and info["shown"]
    obs, reward, *_, info = env.step("open: " + info["shown"][0])
    assert obs.startswith("Error: open is not available") and "closed book" not in obs and reward == -0.1


@pytest.mark.parametrize("control", ["random", "oracle"])
def test_the_grpo_adapter_searches_the_same_control(control):
    """TRL's adapter builds its own SearchTools over the env's index: the control reaches it too."""
    from searchgym.train.grpo_env import SearchEnvironment

    env = make(retriever=control).unwrapped
    adapter = SearchEnvironment(env)
    task = env.tasks[0]
    adapter.reset(task_id=task.id)
    adapter.search(query="a query")
    env.reset(seed=0, options={"task_id": task.id})  # seed 0: the adapter's episodes draw with seed 0
    env.step(call("search", query="a query"))
    assert adapter.state.shown == env.tools.state.shown
    if control == "oracle":
        assert adapter.state.shown[: len(task.evidence[0])] == list(task.evidence[0])


@pytest.mark.parametrize("control", ["random", "oracle"])
def test_controls_keep_every_env_invariant(control):
    report = fuzz([ENV_ID], 600, env_kwargs={**KWARGS, "retriever": control}, progress=False)
    assert (report["exceptions"], report["violations"]) == (0, 0), report["failures"]


@pytest.mark.parametrize("kwargs, start", [
    ({"retriever": "orcale"}, "retriever must be one of ['dense', 'bm25', 'hybrid'] or a control "
                              "['random', 'oracle'], got 'orcale'"),
    ({"tools": ["search"]}, "tools: must be a list of distinct tool names"),
    ({"tools": ["answer", "fly"]}, "tools: must be a list"),
    ({"tools": ["open", "answer"]}, "tools: must be a list"),
    ({"tools": ["answer", "answer"]}, "tools: must be a list"),
    ({"tools": "answer"}, "tools: must be a list"),
    ({"tools": []}, "tools: must be a list"),
])
def test_bad_values_are_refused_at_construction_in_one_line(kwargs, start):
    with pytest.raises(ValueError) as e:
        make(**kwargs)
    assert "\n" not in str(e.value) and str(e.value).startswith(start), str(e.value)
    if "tools" in kwargs:
        with pytest.raises(ValueError, match="^tools: must be"):
            SearchTools(None, tools=kwargs["tools"])


def test_recipes_take_the_controls_and_refuse_bad_values_at_load():
    from searchgym.train.stages import load_recipe

    recipe = Path("agents/smoke-sft.toml")
    for override in ['env.kwargs.retriever="random"', 'env.kwargs.retriever="oracle"', 'env.kwargs.tools=["answer"]']:
        load_recipe(recipe, [override])
    for override, start in [('env.kwargs.retriever="randm"', "env.kwargs.retriever: must be one of ['dense', "
                                                             "'bm25', 'hybrid'] or a control ['random', 'oracle']"),
                            ('env.kwargs.tools=["search"]', "env.kwargs.tools: must be a list")]:
        with pytest.raises(ConfigError) as e:
            load_recipe(recipe, [override])
        assert "\n" not in str(e.value) and str(e.value).startswith(start), str(e.value)
    # GRPO's adapter offers every tool: a tool subset there would train open-book without a word
    with pytest.raises(ConfigError, match="^env.kwargs.tools: GRPO offers every tool"):
        load_recipe(Path("agents/quick.toml"), ['env.kwargs.tools=["answer"]'])
