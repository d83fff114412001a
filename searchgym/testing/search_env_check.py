"""`check_search_env`: the property-based checks of a search environment's dynamics (re-exported by
`searchgym.testing`, the name plug-in authors import).

It runs Gymnasium's `check_env`, then a Hypothesis state machine that drives the env with tool calls
and arbitrary text and asserts the invariants every searchgym env promises
(`searchgym.testing.fuzzing.InvariantChecker`), then says what training needs from the world
(`training_readiness`).
"""

from __future__ import annotations

import random

import gymnasium

from searchgym.envs.actions import format_tool_call
from searchgym.tasks import ToolCall
from searchgym.testing.fuzzing import (
    GARBAGE,
    InvariantChecker,
    deep_nesting,
    huge_number,
    parenthesised_ids,
    plain_open,
    whitespace_run,
)


# -- the Hypothesis state machine -------------------------------------------------------------
def make_state_machine(env_id: str, env_kwargs: dict | None = None):
    """A `RuleBasedStateMachine` class over ``env_id`` (one env instance per machine run)."""
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

    checker_cache: dict[str, InvariantChecker] = {}

    class SearchEnvMachine(RuleBasedStateMachine):
        @initialize(seed=st.integers(0, 2**16))
        def start(self, seed):
            if "c" not in checker_cache:
                checker_cache["c"] = InvariantChecker(env_id, env_kwargs)
            self.checker = checker_cache["c"]
            self.checker.reset(seed)

        @rule(words=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=4))
        def search(self, words):
            self.checker.step(format_tool_call(ToolCall("search", {"query": " ".join(words)})))

        @precondition(lambda self: bool(self.checker.base.tools.state.shown))
        @rule(data=st.data())
        def open_shown(self, data):
            doc_id = data.draw(st.sampled_from(self.checker.base.tools.state.shown))
            self.checker.step(format_tool_call(ToolCall("open", {"doc_id": doc_id})))

        @rule(data=st.data())
        def open_plain_form(self, data):
            doc_id = data.draw(st.sampled_from(parenthesised_ids(self.checker.base)))
            rng = random.Random(data.draw(st.integers(0, 2**16)))
            self.checker.step(plain_open(rng, doc_id), opens=doc_id)

        @rule(kind=st.sampled_from(["deep", "number", "whitespace"]), seed=st.integers(0, 2**16))
        def hostile_text(self, kind, seed):
            generate = {"deep": deep_nesting, "number": huge_number, "whitespace": whitespace_run}[kind]
            self.checker.step(generate(random.Random(seed)))

        @rule(doc_id=st.text(max_size=30))
        def open_anything(self, doc_id):
            self.checker.step(format_tool_call(ToolCall("open", {"doc_id": doc_id})))

        @rule()
        def answer_gold(self):
            gold = self.checker.base.task.answers[0]
            self.checker.step(format_tool_call(ToolCall("answer", {"text": gold})))

        @rule(text=st.text(max_size=40))
        def answer_anything(self, text):
            self.checker.step(format_tool_call(ToolCall("answer", {"text": text})))

        @rule(text=st.one_of(st.text(max_size=300), st.sampled_from([g for g in GARBAGE if g is not None])))
        def arbitrary_text(self, text):
            self.checker.step(text)

        @rule(seed=st.integers(0, 2**16))
        def reset(self, seed):
            self.checker.replay_matches()
            self.checker.reset(seed)

        @invariant()
        def episode_recorded(self):
            ep = self.checker.episode
            assert len(ep["observations"]) == ep["steps"] + 1

        def teardown(self):
            if getattr(self, "checker", None) and self.checker.episode["steps"]:
                self.checker.replay_matches()

    SearchEnvMachine.__name__ = f"SearchEnvMachine[{env_id}]"
    return SearchEnvMachine


def _world_of(env_id: str, env_kwargs: dict | None):
    """The task set a SearchEnv id builds (whatever its splits hold)."""
    from searchgym.envs.search_env import load_world

    kwargs = {**gymnasium.spec(env_id).kwargs, **(env_kwargs or {})}
    return load_world(kwargs.get("world", "synthetic"), kwargs.get("world_kwargs"))


def training_readiness(env_id: str, env_kwargs: dict | None = None, *, tasks_per_strategy: int = 3) -> dict:
    """What `searchgym train` and `searchgym eval` will need from ``env_id``'s world, checked by playing it.

    Returns ``{"sft": [...], "grpo": [...], "eval": [...]}``: for each, the problems that would stop it
    (empty: ready). SFT needs ``strategies`` and ``query_styles`` (non-empty), train tasks that list a
    strategy in ``Task.strategies``, and a ``demonstrator(strategy, style)`` whose policy ``(task, history)
    -> ToolCall`` answers correctly and is labelled that strategy by ``classify_strategy``; GRPO needs train
    tasks; eval (default split "test") needs test tasks.
    """
    from searchgym.envs.scripted_play import play

    kwargs = {k: v for k, v in (env_kwargs or {}).items() if k != "split"}
    world = _world_of(env_id, kwargs)
    splits = {s: list(world.tasks(s)) for s in ("train", "test")}
    out: dict[str, list[str]] = {"sft": [], "grpo": [], "eval": []}
    if not splits["train"]:
        out["grpo"].append("world.tasks('train') is empty: GRPO and SFT train on the train split")
        out["sft"].append("world.tasks('train') is empty")
    if not splits["test"]:
        out["eval"].append("world.tasks('test') is empty: evaluation defaults to the test split (pass --split "
                           "train to searchgym eval, or set eval.split in the recipe)")
    strategies, styles = tuple(getattr(world, "strategies", ())), tuple(getattr(world, "query_styles", ()))
    if not strategies:
        out["sft"].append("world.strategies is empty: SFT builds its demonstrations from the world's strategies "
                          "(and sft.narrow_strategy must be one of them); GRPO and eval need none")
    if not styles:
        out["sft"].append("world.query_styles is empty: SFT plays demonstrator(strategy, style) for each style; "
                          "give at least one, e.g. (\"plain\",)")
    if out["sft"]:
        return out
    env = gymnasium.make(env_id, disable_env_checker=True, **{**kwargs, "split": "train"})
    for strategy in strategies:
        candidates = [t for t in splits["train"] if strategy in t.strategies][:tasks_per_strategy]
        if not candidates:
            out["sft"].append(f"strategy {strategy!r}: no train task lists it in Task.strategies (SFT demonstrates "
                              "a strategy only on the tasks that list it)")
            continue
        outcomes = []
        for task in candidates:
            try:
                t = play(env, world.demonstrator(strategy, styles[0]), task_id=task.id)
            except Exception as e:  # a demonstrator may raise anything
                outcomes.append(f"demonstrator({strategy!r}, {styles[0]!r}) raised {type(e).__name__}: {e}")
                break
            if not t.correct:
                outcomes.append(f"did not answer {task.id!r} correctly (answer {t.answer!r})")
            elif t.strategy != strategy:
                outcomes.append(f"classify_strategy labelled its episode on {task.id!r} {t.strategy!r}")
            else:
                outcomes = []
                break  # one good demo per strategy is enough to train on it
        if outcomes:
            out["sft"].append(f"strategy {strategy!r}: no usable demo on {len(candidates)} train task(s): "
                              f"{outcomes[0]}")
    env.close()
    return out


def check_search_env(env_id: str, env_kwargs: dict | None = None, *, max_examples: int = 25,
                     steps: int = 20, check_gymnasium: bool = True, sft: bool | None = None) -> dict:
    """Run Gymnasium's env checker and the searchgym invariant state machine on ``env_id``, then say what
    training will need (`training_readiness`, printed).

    Raises AssertionError (an `InvariantViolation` or Gymnasium's error) on the first failure, with
    Hypothesis' minimal failing sequence of actions. ``sft``: True raises when SFT could not run on this
    world; None (default) raises only when the world declares strategies whose demonstrators do not work
    (a world without strategies is fine for GRPO and eval, and the report says so); False never.
    Returns the readiness report.
    """
    from hypothesis import HealthCheck, settings
    from hypothesis.stateful import run_state_machine_as_test

    if check_gymnasium:
        from gymnasium.utils.env_checker import check_env

        env = gymnasium.make(env_id, disable_env_checker=True, **(env_kwargs or {}))
        check_env(env.unwrapped, skip_render_check=True)
    machine = make_state_machine(env_id, env_kwargs)
    run_state_machine_as_test(machine, settings=settings(
        max_examples=max_examples, stateful_step_count=steps, deadline=None, database=None,
        suppress_health_check=list(HealthCheck)))
    readiness = training_readiness(env_id, env_kwargs)
    for stage, problems in readiness.items():
        print(f"{env_id}: {stage}: " + ("ready" if not problems else "NOT ready: " + "; ".join(problems)))
    declared = getattr(_world_of(env_id, env_kwargs), "strategies", ())
    if readiness["sft"] and (sft or (sft is None and declared)):
        raise AssertionError(f"{env_id}: SFT cannot train on this world: " + "; ".join(readiness["sft"]))
    return readiness

