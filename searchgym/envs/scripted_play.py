"""Play scripted policies (demonstrators, the oracle) through a SearchEnv, recording chat messages.

The messages are built exactly as an LLM agent would see and write them (the canonical tool-call
text, the env's observations as tool results), so demonstrations rendered from them match what RL
sees token for token.
"""

from __future__ import annotations

from searchgym.envs.actions import assistant_message, format_tool_call, tool_message
from searchgym.tasks import Demonstrator, Step
from searchgym.trajectory import Trajectory


def play(env, policy: Demonstrator, *, task_id: str, seed: int | None = None, sample: int = 0,
         source: str | None = None) -> Trajectory:
    """Run ``policy`` on one task until the episode ends; return its trajectory (with messages).

    A final assistant message repeating the answer closes the conversation: under TRL's multi-turn
    GRPO the model speaks once more after its last tool result, so SFT should teach it to stop there.
    """
    base = env.unwrapped
    obs, info = env.reset(seed=seed, options={"task_id": task_id})
    messages = [{"role": "system", "content": info["system_prompt"]}, {"role": "user", "content": obs}]
    history: list[Step] = []
    terminated = truncated = False
    while not (terminated or truncated):
        call = policy(base.task, history)
        text = format_tool_call(call)
        obs, _, terminated, truncated, info = env.step(text)
        messages += [assistant_message(text), tool_message(obs, call.name)]
        history.append(Step(call, obs, tuple(info["shown"]), info["error"] is not None))
    if terminated and info["answer"] is not None:
        messages.append({"role": "assistant", "content": info["answer"]})
    label = source or f"demo:{getattr(policy, 'strategy', '?')}/{getattr(policy, 'style', '?')}"
    return base.trajectory(messages=messages, sample=sample, source=label,
                           meta={"demo_strategy": getattr(policy, "strategy", None),
                                 "demo_style": getattr(policy, "style", None)})


def honest_demo(env, strategy: str, style: str, *, task_id: str, sample: int = 0) -> Trajectory | None:
    """One demonstration: the world's scripted ``strategy``/``style`` demonstrator played on ``task_id``,
    kept only when it answers correctly and the world's classifier labels it ``strategy`` (what SFT demos and
    the prior lab's pretraining demos both require); None otherwise."""
    t = play(env, env.unwrapped.taskset.demonstrator(strategy, style), task_id=task_id, sample=sample)
    return t if t.correct and t.strategy == strategy else None


def oracle_solve_rate(env, task_ids, *, styles: tuple[str, ...] | None = None, progress: bool = False) -> dict:
    """Prove solvability: for each task try its valid strategies (and query styles) with the world's
    scripted demonstrators until one answers correctly. Returns the solve rate of that oracle and of
    the first (strategy, style) alone.
    """
    from tqdm.auto import tqdm

    world = env.unwrapped.taskset
    styles = styles or tuple(world.query_styles)
    by_id = {t.id: t for t in env.unwrapped.tasks}
    solved = first = 0
    unsolved = []
    for task_id in tqdm(task_ids, desc="oracle", disable=not progress):
        task = by_id[task_id]
        attempts = [(s, st) for s in (task.strategies or world.strategies) for st in styles]
        for i, (strategy, style) in enumerate(attempts):
            if play(env, world.demonstrator(strategy, style), task_id=task_id).correct:
                solved += 1
                first += i == 0
                break
        else:
            unsolved.append(task_id)
    n = max(1, len(task_ids))
    return {"tasks": len(task_ids), "solve_rate": solved / n, "first_try_rate": first / n, "unsolved": unsolved}
