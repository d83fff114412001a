"""The engine rollout (``grpo.rollout = "engine"``) against TRL's own tool loop (``"trl"``), on the shipped
prior, which writes real tool calls: the batches TRL trains on must be the same.

Greedy: token for token (prompt, completion, tool mask, rewards). Sampled: the same distribution of rewards,
tool calls and lengths (a two-sample test on a few hundred episodes per path).
"""

import math

import pytest
import torch

import searchgym  # noqa: F401  (registers the envs)
from searchgym.agent.models import PRIOR, load_model
from searchgym.train import grpo
from searchgym.train.context import TrainContext
from searchgym.train.grpo_rollout import EngineRollout, env_tools, tool_suffix_ids
from searchgym.train.stages import load_recipe

PRIOR_WORLD = ('env.kwargs={ embedder = "hashing", top_k = 3, max_obs_chars = 400, max_steps = 8, world_kwargs = '
               '{ size = 30, max_hops = 2, n_train = 1500, n_test = 300, holdout = "question" } }')


def build(tmp_path, rollout: str, monkeypatch, *, greedy: bool, generations: int = 2):
    """A GRPOTrainer on the prior for ``rollout`` (built, not trained) and the dataset rows it would see."""
    recipe = load_recipe("agents/grpo.toml", [f'model.base="{PRIOR}"', PRIOR_WORLD, f"grpo.rollout={rollout}",
                                               f"grpo.num_generations={generations}", f"grpo.batch_size={generations}",
                                               "grpo.format_reward=0.1", "grpo.search_cost=0.01",
                                               "grpo.max_completion_length=1024", "grpo.max_tool_calling_iterations=8",
                                               "meters.every=0"])
    if greedy:
        real = grpo.grpo_config

        def greedy_config(*args, **kwargs):
            config = real(*args, **kwargs)
            config.generation_kwargs = {"do_sample": False}
            return config

        monkeypatch.setattr(grpo, "grpo_config", greedy_config)
    model, tokenizer = load_model(recipe.model.base)
    trainer = grpo.grpo_trainer(TrainContext(recipe, tmp_path / rollout, stage="grpo", model=model,
                                             tokenizer=tokenizer))
    return trainer, list(trainer.train_dataset)


def batch(trainer, rows, questions, generations):
    """TRL's generate-and-score on ``questions`` rows x ``generations`` (what one training step consumes)."""
    inputs = [dict(row) for row in rows[:questions] for _ in range(generations)]
    with torch.no_grad():
        out = trainer._generate_and_score_completions(inputs)
    completions = [ids[mask.bool()].tolist() for ids, mask in zip(out["completion_ids"], out["completion_mask"])]
    prompts = [ids[mask.bool()].tolist() for ids, mask in zip(out["prompt_ids"], out["prompt_mask"])]
    tool_mask = [t[m.bool()].tolist() for t, m in zip(out["tool_mask"], out["completion_mask"])]
    return prompts, completions, tool_mask, out["advantages"].tolist()


def test_engine_and_trl_tool_loop_agree_token_for_token_greedy(tmp_path, monkeypatch):
    torch.manual_seed(0)
    ours, rows = build(tmp_path, "engine", monkeypatch, greedy=True)
    theirs, _ = build(tmp_path, "trl", monkeypatch, greedy=True)
    assert ours.rollout_func is not None and theirs.rollout_func is None
    a = batch(ours, rows, questions=12, generations=2)
    b = batch(theirs, rows, questions=12, generations=2)
    prompts, completions, tool_mask, _ = a
    assert prompts == b[0]
    assert completions == b[1]  # every model token and every tool-result token
    assert tool_mask == b[2]
    assert a[3] == pytest.approx(b[3], abs=1e-6)  # advantages: the same rewards
    # The prior really searched: several rounds of tool results (mask 0) between model turns (mask 1).
    rounds = [sum(1 for x, y in zip(m, m[1:]) if x == 1 and y == 0) for m in tool_mask]
    assert max(rounds) >= 2 and sum(rounds) >= 12


def test_engine_and_trl_tool_loop_sample_the_same_episode_distribution(tmp_path, monkeypatch):
    """Sampled at temperature 1 on 24 questions x 8: the episode return, the number of tool calls and the
    completion length agree within sampling error (|difference| < 4 standard errors)."""
    torch.manual_seed(1)
    ours, rows = build(tmp_path, "engine", monkeypatch, greedy=False, generations=8)
    theirs, _ = build(tmp_path, "trl", monkeypatch, greedy=False, generations=8)
    stats = {}
    for name, trainer, seed in (("engine", ours, 11), ("trl", theirs, 12)):
        torch.manual_seed(seed)  # different streams: the paths must agree in distribution, not by sharing draws
        returns, calls, lengths = [], [], []
        for start in range(0, 24, 6):
            inputs = [dict(row) for row in rows[start:start + 6] for _ in range(8)]
            with torch.no_grad():
                out = trainer._generate_and_score_completions(inputs)
            envs = trainer.environments if trainer.rollout_func is None else trainer.rollout_func.pool
            returns += [e.get_reward() for e in envs[:48]]
            calls += [len(e.calls) for e in envs[:48]]
            lengths += out["completion_mask"].sum(1).tolist()
        stats[name] = {"return": returns, "calls": calls, "length": lengths}
    for key in ("return", "calls", "length"):
        x, y = stats["engine"][key], stats["trl"][key]
        assert len(x) == len(y) == 192
        se = math.sqrt(variance(x) / len(x) + variance(y) / len(y))
        assert abs(mean(x) - mean(y)) < 4 * se + 1e-9, (key, mean(x), mean(y), se)
    assert mean(stats["engine"]["calls"]) > 1.5 and max(stats["engine"]["return"]) > 0.5  # it searches, it solves


def mean(xs):
    return sum(xs) / len(xs)


def variance(xs):
    m = mean(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def test_tool_suffix_matches_the_chat_template_rendering():
    """The tool-result tokens spliced after a turn are what the template renders for that tool message."""
    _, tokenizer = load_model(PRIOR)
    messages = [{"role": "tool", "name": "search", "content": "[d1] Ada Lovelace ..."}]
    memo = {}
    suffix = tool_suffix_ids(tokenizer, messages, prefixes=memo)
    assert suffix == tool_suffix_ids(tokenizer, messages, prefixes=memo) and "search" in memo
    text = tokenizer.decode(suffix)
    assert "[d1] Ada Lovelace" in text and text.rstrip().endswith("assistant")


def test_env_tools_are_the_three_declared_tools_in_trl_order():
    from searchgym.train.grpo_env import make_environment_factory

    env = make_environment_factory("searchgym_plugin_example/Elements-v0")()
    assert [m.__name__ for m in env_tools(env)] == ["answer", "open", "search"]
    assert isinstance(EngineRollout(make_environment_factory("searchgym_plugin_example/Elements-v0")).pool, list)
