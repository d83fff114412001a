"""SearchEnv dynamics on the plug-in example world (hashing embedder: no model, fast)."""

import gymnasium
import pytest

import searchgym  # noqa: F401  (registers the envs and plug-ins)
from searchgym.envs.actions import format_tool_call
from searchgym.envs.tools import SearchTools
from searchgym.tasks import ToolCall

ENV_ID = "searchgym_plugin_example/Elements-v0"


def call(name, **args):
    return format_tool_call(ToolCall(name, args))


@pytest.fixture
def env():
    return gymnasium.make(ENV_ID, max_steps=4, step_cost=0.01, format_penalty=0.1)


def test_reset_is_deterministic_and_info_carries_what_meters_need(env):
    obs1, info1 = env.reset(seed=7)
    obs2, info2 = env.reset(seed=7)
    assert obs1 == obs2 and info1["task_id"] == info2["task_id"]
    for key in ("gold_answers", "evidence", "difficulty", "strategies", "seen_docs", "trace", "system_prompt", "tools"):
        assert key in info1
    assert [t["function"]["name"] for t in info1["tools"]] == ["answer", "open", "search"]  # TRL's order
    _, info = env.reset(options={"task_id": "el-sym-O"})
    assert info["question"].endswith("atomic number 8?") and info["gold_answers"] == ["O"]
    with pytest.raises(ValueError, match="unknown task_id"):
        env.reset(options={"task_id": "nope"})


def test_search_open_answer_episode(env):
    env.reset(options={"task_id": "el-sym-O"})
    obs, r, term, trunc, info = env.step(call("search", query="atomic number 8"))
    assert r == pytest.approx(-0.01) and not term and not trunc
    assert "el:O" in info["shown"] and "[el:O] Oxygen" in obs
    obs, r, *_ , info = env.step(call("open", doc_id="el:O"))
    assert obs.startswith("[el:O] Oxygen") and "symbol O" in obs
    obs, r, term, trunc, info = env.step(call("answer", text="O"))
    assert (r, term, trunc, info["correct"]) == (1.0, True, False, True)
    assert info["trace"] == "S O A" and info["seen_docs"] == sorted(set(info["seen_docs"]))


def test_errors_are_observations_with_penalty_never_exceptions(env):
    env.reset(options={"task_id": "el-sym-O"})
    for bad, message in [("garbage", "no tool call found"), (call("open", doc_id="el:Zz"), "unknown doc_id"),
                         ('<tool_call>{"name": "fly"}</tool_call>', "unknown tool")]:
        obs, r, term, trunc, info = env.step(bad)
        assert obs.startswith("Error:") and message in obs and r == -0.1 and not term
    assert trunc is False


def test_call_after_answer_is_an_error(env):
    env.reset(options={"task_id": "el-sym-O"})
    env.step(call("answer", text="wrong"))
    obs, r, term, trunc, info = env.step(call("search", query="x"))
    assert "episode is over" in obs and r == -0.1 and term


def test_truncated_exactly_at_budget(env):
    env.reset(seed=0)
    flags = [env.step(call("search", query="metal"))[3] for _ in range(4)]
    assert flags == [False, False, False, True]


def test_wrong_answer_scores_zero_and_f1_gives_partial_credit():
    env = gymnasium.make(ENV_ID, reward="f1")
    env.reset(options={"task_id": "el-who-O"})  # gold: Carl Wilhelm Scheele
    *_, info = env.step(call("answer", text="Scheele"))
    assert 0 < info["score"] < 1 and not info["correct"]
    env.reset(options={"task_id": "el-who-O"})
    assert env.step(call("answer", text="Humphry Davy"))[1] == 0.0


def test_observation_budget_is_respected():
    env = gymnasium.make(ENV_ID, max_obs_chars=200, top_k=24)
    env.reset(seed=1)
    obs = env.step(call("search", query="element"))[0]
    assert len(obs) <= 200 and obs.endswith("[truncated]")


def test_trajectory_record_matches_the_episode(env):
    env.reset(options={"task_id": "el-cmp-H-He"})
    env.step(call("search", query="Hydrogen"))
    env.step("nonsense")
    env.step(call("answer", text="Hydrogen"))
    traj = env.unwrapped.trajectory(messages=[], sample=3, source="test")
    assert traj.signature == "S X A" and traj.correct and traj.sample == 3
    assert traj.reward == pytest.approx(-0.01 - 0.1 + 1.0)
    assert traj.queries == ["Hydrogen"] and traj.answer == "Hydrogen"


def test_tool_schemas_come_from_the_one_implementation():
    schemas = {s["function"]["name"]: s["function"] for s in SearchTools.schemas()}
    assert schemas["search"]["parameters"]["required"] == ["query"]
    assert schemas["open"]["parameters"]["required"] == ["doc_id"]
    assert "ends the episode" in schemas["answer"]["description"]


def test_bad_env_arguments_are_rejected_clearly():
    with pytest.raises(ValueError, match="max_steps"):
        gymnasium.make(ENV_ID, max_steps=0)
    with pytest.raises(ValueError, match=r"^reward: must be one of \['em', 'f1'\], got 'bleu'"):
        gymnasium.make(ENV_ID, reward="bleu")
    with pytest.raises(ValueError, match="unknown world"):
        gymnasium.make("searchgym/SyntheticWorld-v0", world="nope")


@pytest.mark.parametrize("kwargs, key", [
    ({"top_k": "3"}, "top_k"), ({"max_steps": True}, "max_steps"), ({"max_steps": 2.5}, "max_steps"),
    ({"step_cost": float("nan")}, "step_cost"), ({"format_penalty": "a"}, "format_penalty"),
    ({"max_obs_chars": 50}, "max_obs_chars"),
])
def test_ill_typed_env_settings_are_one_valueerror_before_any_world_loads(kwargs, key, monkeypatch):
    """A wrong type used to surface as a TypeError from a comparison (or pass: max_steps=2.5, step_cost=nan)."""
    from searchgym.envs import search_env

    def no_world(*a, **k):
        raise AssertionError("the world was loaded before the settings were checked")

    monkeypatch.setattr(search_env, "load_world", no_world)
    with pytest.raises(ValueError, match=f"^{key}: must be "):
        gymnasium.make(ENV_ID, **kwargs)


def test_async_vector_env_with_text_observations():
    envs = gymnasium.make_vec(ENV_ID, num_envs=2, vectorization_mode="async",
                              vector_kwargs={"shared_memory": False})
    try:
        obs, info = envs.reset(seed=[0, 1])
        assert len(obs) == 2 and all(isinstance(o, str) for o in obs)
        obs, rewards, term, trunc, info = envs.step([call("search", query="noble gas"), "garbage"])
        assert rewards[1] == -0.1 and "[el:" in obs[0]
    finally:
        envs.close()


@pytest.mark.parametrize("action, message", [
    ("<tool_call>" + "[" * 1000 + "]" * 1000 + "</tool_call>", "nests JSON deeper"),  # was a RecursionError
    ('<tool_call>{"name": "search", "arguments": {"query": ' + "9" * 4000 + "}}</tool_call>", "digits"),
    ("search: " + "x" * 4089, "over the limit of 4096"),  # 4,097 characters: outside the action space
    (" " * 200_000, "over the limit of 4096"),
    ("open: " + "\ud800" * 10, "unknown doc_id"),
])
def test_step_answers_every_string_with_an_error_observation(env, action, message):
    env.reset(options={"task_id": "el-sym-O"})
    obs, r, term, trunc, info = env.step(action)
    assert obs.startswith("Error:") and message in obs and r == -0.1 and not term
    assert env.unwrapped.observation_space.contains(obs)


def test_an_action_at_the_length_limit_is_still_parsed(env):
    env.reset(options={"task_id": "el-sym-O"})
    action = "search: oxygen" + " " * (4096 - 14)
    assert len(action) == 4096
    obs, r, *_ = env.step(action)
    assert not obs.startswith("Error:") and r == pytest.approx(-0.01)
