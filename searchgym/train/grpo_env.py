"""The TRL adapter: any searchgym env as an ``environment_factory`` for GRPOTrainer's multi-turn rollouts.

TRL turns every public method of the environment class into a tool, so `SearchEnvironment` is a plain
class exposing exactly ``reset``, ``get_reward`` and the three tools, each delegating to a `SearchTools`
(the one implementation the Gymnasium env uses too) with SearchTools' own docstrings, hence identical
schemas. Rewards and penalties are SearchEnv's, summed over the episode; the world and index are built
once per factory and shared by every pooled instance.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium

from searchgym.envs.search_env import SearchEnv, clean_observation
from searchgym.envs.tools import EpisodeState, SearchTools, ToolError
from searchgym.tasks import Task


class SearchEnvironment:
    """One rollout's episode, driven by TRL: ``reset(**row)`` then tool calls, then ``get_reward()``.

    Every call (valid or not) is recorded like a SearchEnv step: ``search``/``open`` cost ``step_cost``,
    a call that fails (unknown doc id, empty query, any call after ``answer`` or after ``max_steps``
    calls) costs ``format_penalty`` and raises `ToolError`, which TRL shows the model as
    ``{"error": ...}``; ``answer`` earns the answer score in [0, 1].
    """

    def __init__(self, env: SearchEnv):
        self._env = env
        self._tasks = {t.id: t for t in env.tasks}
        tools = env.tools
        self._tools = SearchTools(env.index, top_k=tools.top_k, max_obs_chars=tools.max_obs_chars,
                                  scorer=tools.scorer)
        self._calls: list[dict] = []

    # -- TRL's contract ---------------------------------------------------------------------------
    def reset(self, task_id: str, **row) -> None:
        """Begin the task the dataset row names (all generations of a group share the row, so the task).

        Returns None: the question is already in the row's prompt, so nothing is appended to it.
        """
        if task_id not in self._tasks:
            raise ValueError(f"unknown task_id {task_id!r} for split {self._env.split!r} of "
                             f"{self._env.taskset.name}; build the dataset from the same env and split")
        self._tools.begin(self._tasks[task_id])
        self._calls = []
        return None

    def get_reward(self) -> float:
        """The episode return, as SearchEnv's step rewards summed: answer score minus penalties
        (0 score when the model never answered)."""
        env = self._env
        return float(sum(-env.format_penalty if not c["valid"] else
                         (self._tools.state.score if c["name"] == "answer" else -env.step_cost)
                         for c in self._calls))

    # -- the tools (docstrings copied from SearchTools below: they are the schemas) ---------------
    def search(self, query: str) -> str:
        return self._call("search", query=query)

    def open(self, doc_id: str) -> str:
        return self._call("open", doc_id=doc_id)

    def answer(self, text: str) -> str:
        return self._call("answer", text=text)

    search.__doc__ = SearchTools.search.__doc__
    open.__doc__ = SearchTools.open.__doc__
    answer.__doc__ = SearchTools.answer.__doc__

    # -- read-only views for metrics (properties, so TRL does not expose them as tools) ------------
    @property
    def task(self) -> Task | None:
        return self._tools.state.task

    @property
    def state(self) -> EpisodeState:
        return self._tools.state

    @property
    def calls(self) -> list[dict]:
        """Every call of the episode: ``{"name", "arguments", "valid"[, "error"]}``, in order."""
        return [dict(c) for c in self._calls]

    @property
    def truncated(self) -> bool:
        """The step budget ran out without an answer (SearchEnv's ``truncated``)."""
        return not self._tools.done and len(self._calls) >= self._env.max_steps

    def _call(self, name: str, **arguments) -> str:
        record = {"name": name, "arguments": arguments, "valid": True}
        try:
            if self._tools.state.task is not None and self.truncated:
                raise ToolError(f"the step budget ({self._env.max_steps} tool calls) is used up; the episode "
                                "is over")
            observation = self._tools.call(name, arguments)
        except ToolError as e:
            record.update(valid=False, error=str(e))
            raise
        finally:
            if self._tools.state.task is not None:
                self._calls.append(record)
        return clean_observation(observation, self._tools.max_obs_chars)


@dataclass
class EnvironmentFactory:
    """Zero-argument callable TRL calls for each pooled instance; ``env`` is the shared SearchEnv."""

    env: SearchEnv

    def __call__(self) -> SearchEnvironment:
        return SearchEnvironment(self.env)


def make_environment_factory(env_id: str, env_kwargs: dict | None = None) -> EnvironmentFactory:
    """A factory of `SearchEnvironment` over ``gymnasium.make(env_id, **env_kwargs)``.

    The env is made once here (its world and index are memoised per process anyway); every instance
    shares its tasks and index and has its own episode state.
    """
    import searchgym  # noqa: F401  (registers the built-in ids and plug-ins)

    env = gymnasium.make(env_id, disable_env_checker=True, **(env_kwargs or {})).unwrapped
    if not isinstance(env, SearchEnv):
        raise TypeError(f"{env_id} makes a {type(env).__name__}, not a searchgym SearchEnv; GRPO needs an env "
                        "built on searchgym.envs.search_env:SearchEnv (register your world with that entry point)")
    return EnvironmentFactory(env)
