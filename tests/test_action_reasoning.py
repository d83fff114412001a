"""Reasoning blocks and the action length limit (``max_action_chars``) in SearchEnv's ``step``.

The plug-in example world with the hashing embedder: no model, an index in well under a second.
"""

import time

import gymnasium
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import searchgym  # noqa: F401  (registers the envs and plug-ins)
from searchgym.envs.actions import RAW_CHARS_FACTOR, assistant_message, format_tool_call, strip_reasoning
from searchgym.tasks import ToolCall
from searchgym.train.stages import load_recipe
from searchgym.util.config_schema import ConfigError

ENV_ID = "searchgym_plugin_example/Elements-v0"
SEARCH = format_tool_call(ToolCall("search", {"query": "atomic number 8"}))
THINK = "<think>\n" + "The question asks for element 8; search for it first. " * 200  # ~11,000 characters


def make(**kwargs):
    env = gymnasium.make(ENV_ID, max_steps=50, step_cost=0.01, format_penalty=0.1, **kwargs)
    env.reset(options={"task_id": "el-sym-O"})
    return env


_ENVS: dict = {}  # one env per limit for the property test (reset per example): making one costs more than a step


def test_a_long_think_block_before_a_call_is_executed_as_that_call():
    assert len(THINK) > 10_000
    env = make()
    obs, r, term, trunc, info = env.step(THINK + "</think>\n" + SEARCH)
    assert info["error"] is None and info["trace"] == "S" and r == pytest.approx(-0.01)
    assert "el:O" in info["shown"] and "[el:O] Oxygen" in obs
    # plain form, several blocks, and a call written inside the reasoning is not a call
    obs, r, *_, info = env.step("<think>maybe " + format_tool_call(ToolCall("answer", {"text": "Fe"}))
                                + "</think>\n<think>no: open it</think> open: el:O")
    assert info["error"] is None and info["trace"] == "S O" and obs.startswith("[el:O] Oxygen")


def test_the_same_length_without_a_think_block_is_refused():
    env = make()
    filler = THINK.replace("<think>", "")
    obs, r, term, trunc, info = env.step(filler + "\n" + SEARCH)
    assert obs.startswith("Error:") and "over the limit of 4096" in obs and r == pytest.approx(-0.1)
    assert info["trace"] == "X" and not term and not trunc


def test_max_action_chars_sets_the_limit_and_the_action_space():
    env = make(max_action_chars=100)
    assert env.unwrapped.action_space.max_length == 100 and env.unwrapped.max_action_chars == 100
    query = "oxygen" + " " * 200
    long_call = format_tool_call(ToolCall("search", {"query": "x"})).replace('"x"', '"' + "x" * 79 + '"')
    assert len(long_call) == 150
    obs, r, *_, info = env.step(long_call)
    assert "over the limit of 100" in obs and info["trace"] == "X"
    at_limit = ("search: " + query)[:100]
    obs, r, *_, info = env.step(at_limit)
    assert info["error"] is None and info["trace"] == "X S"
    # the raw text, reasoning included, is bounded too: RAW_CHARS_FACTOR x the limit
    think = "<think>" + "x" * (RAW_CHARS_FACTOR * 100 - len("<think></think>search: oxygen")) + "</think>"
    assert len(think + "search: oxygen") == RAW_CHARS_FACTOR * 100
    assert env.step(think + "search: oxygen")[-1]["error"] is None
    obs, *_, info = env.step(think + " search: oxygen")
    assert "over the limit of 100 (1600 with <think> reasoning)" in obs and info["trace"] == "X S S X"


def test_an_unclosed_think_is_not_a_call():
    env = make()
    obs, r, term, trunc, info = env.step("<think>I will search: " + SEARCH)
    assert obs.startswith("Error:") and "<think> is never closed" in obs and r == pytest.approx(-0.1)
    assert info["trace"] == "X" and info["shown"] == []
    obs, *_, info = env.step(THINK + "</think>" + SEARCH + "<think>out of tokens")  # the call came first
    assert info["error"] is None and info["trace"] == "X S"


@pytest.mark.parametrize("value", [0, -5, True, 2.5, "100"])
def test_a_bad_max_action_chars_is_one_valueerror(value):
    with pytest.raises(ValueError, match=r"^max_action_chars: must be an integer >= 1 .*, got ") as e:
        gymnasium.make(ENV_ID, max_action_chars=value)
    assert "\n" not in str(e.value)


def test_a_recipe_with_a_bad_max_action_chars_is_refused_at_load():
    with pytest.raises(ConfigError, match=r"^env\.kwargs\.max_action_chars: must be an integer >= 1") as e:
        load_recipe("agents/smoke-grpo.toml", ["env.kwargs.max_action_chars=0"], check_model=False)
    assert "\n" not in str(e.value)
    recipe = load_recipe("agents/smoke-grpo.toml", ["env.kwargs.max_action_chars=8192"], check_model=False)
    assert recipe.env.kwargs["max_action_chars"] == 8192


def test_the_rollout_engine_message_agrees_with_the_env():
    """The engine records each turn with assistant_message, which parses with the same function."""
    message = assistant_message(THINK + "</think>\n" + SEARCH)
    assert message["tool_calls"][0]["function"] == {"name": "search", "arguments": {"query": "atomic number 8"}}
    assert "tool_calls" not in assistant_message("<think>" + SEARCH)


def test_stripping_is_linear_on_adversarial_tags():
    env = make()
    for action in ["<think>" * 9000, "<think></think>" * 4000 + "answer: x", "</think><think>" * 4000,
                   "<think>" + "</thin" * 10_000]:
        start = time.perf_counter()
        obs, *_ = env.step(action)
        assert time.perf_counter() - start < 1.0 and isinstance(obs, str)
    assert strip_reasoning("<think><think>a</think>b</think>c") == ("b</think>c", False)  # non-greedy


FRAGMENTS = ["<think>", "</think>", "<think", "think>", "<tool_call>", "</tool_call>", "<|im_end|>", "\n", " ",
             '{"name": "search", "arguments": {"query": "oxygen"}}', "search: oxygen", "answer: O", "open: el:O",
             "{", "[", '"', "\ud800", "x" * 500]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=40), max_size=30),
       st.sampled_from([None, 1, 20, 4096]))
def test_step_never_raises_on_text_with_think_fragments(parts, limit):
    if limit not in _ENVS:
        _ENVS[limit] = make() if limit is None else make(max_action_chars=limit)
    env = _ENVS[limit]
    env.reset(options={"task_id": "el-sym-O"})
    obs, reward, term, trunc, info = env.step("".join(parts))
    assert isinstance(obs, str) and env.unwrapped.observation_space.contains(obs)
    low, high = env.unwrapped.reward_range
    assert low <= reward <= high
    assert (info["error"] is None) == (info["trace"][-1:] != "X")
