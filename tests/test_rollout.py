"""The rollout engine on the tiny random model: counts, rewards, token records, determinism, batching.

A scripted env (same contract as searchgym's envs) lets the tests know exactly when each episode must end;
one test also runs the real SyntheticWorld env once it is registered.
"""

from __future__ import annotations

import json

import gymnasium
import pytest
import torch
from gymnasium import spaces

from searchgym.agent.models import load_model, stop_token_ids
from searchgym.agent.rollout import assign_roles, role_spans, rollout, token_offsets, token_stats
from searchgym.tasks import Task
from searchgym.train.evaluate import eval_command
from searchgym.trajectory import TOKEN_ROLES, Trajectory, read_trajectories

FAKE_ID = "searchgym-test/Scripted-v0"
# task id -> number of steps after which the env terminates (None: never, so only max_turns ends it)
ENDS_AFTER = {"one": 1, "two": 2, "three": 3, "never": None}
STEP_LOG: list[tuple[str, int]] = []  # (task_id, reset number) of every step taken, across instances


class ScriptedEnv(gymnasium.Env):
    """Terminates after ENDS_AFTER[task] steps; rewards depend on the action text, so a test can check
    that the engine recorded what the env returned."""

    def __init__(self, split: str = "test"):
        self.tasks = [Task(t, f"question {t}?", ("x",), (), 1, "bridge", split) for t in ENDS_AFTER]
        self.observation_space = spaces.Text(100)
        self.action_space = spaces.Text(4096)
        self.resets = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.task = next(t for t in self.tasks if t.id == options["task_id"])
        self.resets += 1
        self.rewards, self.steps = [], 0
        schema = {"type": "function", "function": {"name": "search", "description": "Search.",
                                                   "parameters": {"type": "object", "properties": {
                                                       "query": {"type": "string"}}}}}
        return self.task.question, {"system_prompt": "Answer by searching.", "tools": [schema]}

    def step(self, action):
        self.steps += 1
        STEP_LOG.append((self.task.id, id(self), self.resets))
        reward = (len(action) % 7) / 10
        self.rewards.append(reward)
        limit = ENDS_AFTER[self.task.id]
        return f"result {self.steps}", reward, limit is not None and self.steps >= limit, False, {}

    def trajectory(self, *, messages, sample=0, source="", token_logprobs=(), token_entropies=(),
                   token_roles=()):
        return Trajectory(self.task.id, FAKE_ID, sample, self.task.question, messages,
                          [{"name": "search", "arguments": {}, "valid": True}] * self.steps, "S" * self.steps,
                          None, [], [], [], None, sum(self.rewards), False, ["x"], [], 1,
                          num_turns=self.steps, token_logprobs=list(token_logprobs),
                          token_entropies=list(token_entropies), token_roles=list(token_roles), source=source)


if FAKE_ID not in gymnasium.registry:
    gymnasium.register(FAKE_ID, entry_point=ScriptedEnv, disable_env_checker=True)


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


def run(tiny, tasks=tuple(ENDS_AFTER), **kw):
    model, tokenizer = tiny
    settings = dict(samples=2, max_turns=4, max_new_tokens=6, batch_size=8, seed=0, progress=False)
    return rollout(model, tokenizer, FAKE_ID, list(tasks), **{**settings, **kw})


@pytest.fixture(scope="module")
def played(tiny):
    """One rollout of every scripted task x 2 samples, recording each generate call's batch size and
    every env step, shared by the tests below (generation is the expensive part)."""
    model, _ = tiny
    STEP_LOG.clear()
    sizes = []
    generate = model.generate

    def recording(*args, **kw):
        sizes.append(kw["input_ids"].shape[0])
        return generate(*args, **kw)

    model.generate = recording
    try:
        trajectories = run(tiny)
    finally:
        del model.generate
    return trajectories, sizes, list(STEP_LOG)


def test_episode_count_order_rewards_and_token_records(played):
    trajectories, _, _ = played
    assert [(t.task_id, t.sample) for t in trajectories] == [(t, s) for t in ENDS_AFTER for s in range(2)]
    for t in trajectories:
        rewards = t.meta["step_rewards"]
        assert t.reward == pytest.approx(sum(rewards))  # what the env summed is what the engine saw
        assert len(rewards) == t.num_turns == len(t.meta["turn_tokens"])
        n = sum(t.meta["turn_tokens"])
        assert 0 < n <= 6 * t.num_turns
        assert len(t.token_logprobs) == len(t.token_entropies) == len(t.token_roles) == n
        assert set(t.token_roles) <= set(TOKEN_ROLES)
        assert all(lp <= 0 for lp in t.token_logprobs) and all(h >= 0 for h in t.token_entropies)
        # system, user, then assistant/tool alternating, ending on the last assistant turn
        roles = [m["role"] for m in t.messages]
        assert roles == ["system", "user"] + ["assistant", "tool"] * (t.num_turns - 1) + ["assistant"]
    # the first tokens after a tool result are labelled post_tool; turn 1 follows the question
    long = next(t for t in trajectories if t.num_turns > 1)
    first = long.meta["turn_tokens"][0]
    assert "post_tool" not in long.token_roles[:first] and "post_tool" in long.token_roles[first:]


def test_finished_episodes_leave_the_batch(played):
    trajectories, sizes, step_log = played
    by_task = {t.task_id: t for t in trajectories}
    assert {k: by_task[k].num_turns for k in ENDS_AFTER} == {"one": 1, "two": 2, "three": 3, "never": 4}
    assert by_task["never"].truncated and by_task["never"].meta["stop_reason"] == "max_turns"
    assert not by_task["one"].truncated
    # 8 episodes advance together; each turn the ones that ended are no longer generated for or stepped
    assert sizes == [8, 6, 4, 2]
    steps_per_task = {k: sum(1 for task, *_ in step_log if task == k) for k in ENDS_AFTER}
    assert steps_per_task == {"one": 2, "two": 4, "three": 6, "never": 8}


def test_a_small_batch_refills_as_episodes_end(tiny):
    # batch of 2: "one" ends after turn 1 and "two" takes its slot while "three" is at turn 2
    trajectories = run(tiny, tasks=["one", "three", "two"], samples=1, batch_size=2)
    assert [(t.task_id, t.num_turns) for t in trajectories] == [("one", 1), ("three", 3), ("two", 2)]


def test_same_seed_same_trajectories_other_seed_differs(tiny):
    a, b = run(tiny, tasks=["two"]), run(tiny, tasks=["two"])
    assert [t.to_json() for t in a] == [t.to_json() for t in b]
    c = run(tiny, tasks=["two"], seed=1)
    assert [t.token_logprobs for t in a] != [t.token_logprobs for t in c]
    assert a[0].token_logprobs != a[1].token_logprobs  # the two samples of a task are different draws


def test_greedy_decoding_is_repeatable_across_samples(tiny):
    a = run(tiny, tasks=["one"], temperature=0.0)
    assert a[0].messages == a[1].messages
    # Same tokens, and entropies equal to float32 precision: a batched forward on several threads can give two
    # identical rows logits ~1e-7 apart, which moves a near-uniform entropy (~10.8 nats here) by ~1e-6.
    assert a[0].token_entropies == pytest.approx(a[1].token_entropies, rel=1e-5)
    assert a[0].token_logprobs == pytest.approx(a[1].token_logprobs, rel=1e-5)


def test_rollout_does_not_disturb_global_rng(tiny):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run(tiny, tasks=["one"])
    assert torch.equal(torch.rand(3), expected)


def test_token_stats_match_the_temperature_scaled_distribution():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    lp, h = token_stats(logits, torch.tensor([0]), temperature=0.5)
    p = torch.softmax(logits / 0.5, -1)
    assert lp.item() == pytest.approx(torch.log(p[0, 0]).item(), abs=1e-6)
    assert h.item() == pytest.approx(-(p * p.log()).sum().item(), abs=1e-6)


def test_roles_of_a_tool_call_follow_its_characters(tiny):
    _, tokenizer = tiny
    text = '<tool_call>\n{"name": "search", "arguments": {"query": "capital of Togo"}}\n</tool_call><|im_end|>'
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    offsets = token_offsets(tokenizer, ids)
    assert offsets[-1][1] == len(text) and ids[-1] in stop_token_ids(tokenizer)
    roles = assign_roles(offsets, role_spans(text), after_tool=False)
    query = "".join(tokenizer.decode([i]) for i, r in zip(ids, roles) if r == "query")
    assert query.strip() == "capital of Togo"
    answer = 'answer: Lomé'
    a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    a_roles = assign_roles(token_offsets(tokenizer, a_ids), role_spans(answer), after_tool=True, window=1)
    assert a_roles[0] == "post_tool" and a_roles[-1] == "answer"


def test_invalid_settings_say_what_to_change(tiny):
    with pytest.raises(ValueError, match="top_p"):
        run(tiny, top_p=0.0)


def test_eval_command_writes_trajectories(tiny, tmp_path, capsys):
    path = eval_command("tiny", FAKE_ID, questions=2, samples=2, temperature=1.0, top_p=0.9, max_turns=2,
                        max_new_tokens=4, batch_size=4, seed=0, out=tmp_path, progress=False)
    rows = list(read_trajectories(path))
    assert [(t.task_id, t.sample) for t in rows] == [("one", 0), ("one", 1), ("two", 0), ("two", 1)]
    written = json.loads((tmp_path / "eval.json").read_text())
    assert written["model"]["episodes"] == 4 and written["model"]["n"] == 2  # training's eval_summary schema
    assert written["settings"]["samples"] == 2
    assert "success rate" in capsys.readouterr().out


def test_rollout_in_the_real_synthetic_world(tiny):
    try:
        env = gymnasium.make("searchgym/SyntheticWorld-v0", split="test", embedder="hashing")
    except gymnasium.error.Error as e:
        pytest.skip(f"searchgym/SyntheticWorld-v0 is not available: {e}")
    model, tokenizer = tiny
    kwargs = {"split": "test", "embedder": "hashing"}
    tasks = env.unwrapped.tasks[:2]
    trajectories = rollout(model, tokenizer, "searchgym/SyntheticWorld-v0", [t.id for t in tasks], samples=2,
                           max_turns=2, max_new_tokens=8, batch_size=4, env_kwargs=kwargs, progress=False)
    assert len(trajectories) == 4
    for t in trajectories:
        assert t.reward == pytest.approx(sum(t.meta["step_rewards"]))
        assert len(t.token_logprobs) == len(t.token_roles) == sum(t.meta["turn_tokens"])
        assert t.signature.replace(" ", "") == "X" * t.num_turns  # random text is never a valid call
