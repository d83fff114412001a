"""Solvability: scripted demonstrators, played through the real env, answer (nearly) every question."""

import gymnasium
import pytest

import searchgym  # noqa: F401
from searchgym.envs.scripted_play import oracle_solve_rate, play


@pytest.mark.parametrize("split", ["test", "train"])
def test_synthetic_oracle_solves_99_percent(split):
    env = gymnasium.make("searchgym/SyntheticWorld-v0", split=split, embedder="hashing")
    ids = [t.id for t in env.unwrapped.tasks][:500]
    result = oracle_solve_rate(env, ids)
    assert result["solve_rate"] >= 0.99, result


@pytest.mark.slow
def test_synthetic_oracle_with_the_default_minilm_retriever():
    env = gymnasium.make("searchgym/SyntheticWorld-v0", split="test")
    ids = [t.id for t in env.unwrapped.tasks][:60]
    assert oracle_solve_rate(env, ids)["solve_rate"] >= 0.99


def test_demonstrations_are_labelled_with_the_strategy_they_follow():
    env = gymnasium.make("searchgym/SyntheticWorld-v0", split="train", embedder="hashing")
    world = env.unwrapped.taskset
    checked = 0
    for task in env.unwrapped.tasks[:60]:
        for strategy in task.strategies:
            traj = play(env, world.demonstrator(strategy, world.query_styles[checked % 4]), task_id=task.id)
            if traj.correct:
                assert traj.strategy == strategy, (task.id, traj.signature, traj.queries)
                checked += 1
    assert checked > 100
