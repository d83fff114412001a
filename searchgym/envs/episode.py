"""The episode engine: the rules of one search episode, shared by `SearchEnv` and the GRPO adapter.

`SearchTools` executes a tool; `Episode` decides what a call *means* for the episode: it records every
call (valid or not, in order), counts steps against ``max_steps``, prices each call (``call_reward``),
ends the episode on a valid ``answer`` (terminated) or on a used-up budget (truncated), refuses calls
after the end, and cleans observations to the observation space's charset and length. The Gymnasium
env (``SearchEnv.step``: parse the text, then `Episode.call`) and TRL's ``environment_factory`` adapter
(``searchgym.train.grpo_env``: a typed tool method, then `Episode.call`) both drive one `Episode`, so an
episode under GRPO is scored, truncated and recorded exactly like an episode under evaluation.

`searchgym.testing.fuzzing.InvariantChecker` stays an independent model of these rules on purpose: a checker that
shared this code could not find a bug in it.
"""

from __future__ import annotations

from dataclasses import dataclass

from searchgym.envs.tools import TOOLS, EpisodeState, SearchTools, ToolError, check_settings
from searchgym.tasks import Task, ToolCall

# Real text is unicode: every Basic Multilingual Plane character except surrogates and C0 controls
# (plus tab/newline). Characters outside it (rare emoji etc.) are replaced by U+FFFD in observations.
CHARSET = "\t\n" + "".join(chr(c) for c in range(0x20, 0xFFFE) if not 0xD800 <= c <= 0xDFFF)
_CHARSET_SET = frozenset(CHARSET)
_LETTERS = {t.name: t.letter for t in TOOLS}  # a valid call's letter in the episode's signature


def call_reward(call: dict, state: EpisodeState, step_cost: float, format_penalty: float) -> float:
    """One recorded call's reward: ``-format_penalty`` for an invalid call, the answer score for
    ``answer``, ``-step_cost`` for any other tool.

    >>> state = EpisodeState(score=1.0)
    >>> [call_reward({"name": n, "valid": v}, state, 0.01, 0.1) for n, v in
    ...  [("search", True), ("answer", True), ("open", False)]]
    [-0.01, 1.0, -0.1]
    """
    if not call["valid"]:
        return -format_penalty
    return state.score if call["name"] == "answer" else -step_cost


def clean_observation(text: str, budget: int) -> str:
    """``text`` in CHARSET (others become U+FFFD) and at most ``budget`` characters (cut with "…").

    >>> clean_observation("a\\x00b" + "c" * 10, 6)
    'a\\ufffdbcc…'
    """
    text = "".join(c if c in _CHARSET_SET else "\ufffd" for c in text)
    return text if len(text) <= budget else text[: budget - 1] + "…"


@dataclass(frozen=True)
class Outcome:
    """What one call did: the cleaned observation, its reward, the error shown to the agent (None when
    valid) and the doc ids it showed (a search's hits, an open's document)."""

    observation: str
    reward: float
    error: str | None
    shown: tuple[str, ...] = ()


_NOT_STARTED = Outcome("Error: no episode in progress: reset the environment first.", 0.0,
                       "no episode in progress: reset the environment first")


class Episode:
    """One episode at a time over ``tools``: ``begin(task)``, then `call` / `reject` per action.

    Every action taken after `begin` is one step and one recorded call ``{"name", "arguments", "valid"
    [, "error"]}``, including actions after the end (they are invalid: ``-format_penalty``). The episode is
    ``terminated`` by a valid ``answer`` and ``truncated`` when ``max_steps`` actions were taken without one;
    both flags are fixed once the episode is over. ``total`` is the sum of the step rewards.
    """

    def __init__(self, tools: SearchTools, *, max_steps: int, step_cost: float, format_penalty: float):
        check_settings(max_steps=max_steps, step_cost=step_cost, format_penalty=format_penalty)
        self.tools = tools
        self.max_steps = max_steps
        self.step_cost = float(step_cost)
        self.format_penalty = float(format_penalty)
        self.calls: list[dict] = []
        self.total = 0.0
        self.terminated = self.truncated = False

    def begin(self, task: Task, seed: int = 0) -> None:
        """Start a new episode on ``task`` (``seed``: what a random retrieval control draws with)."""
        self.tools.begin(task, seed)
        self.calls, self.total = [], 0.0
        self.terminated = self.truncated = False

    @property
    def task(self) -> Task | None:
        return self.tools.state.task

    @property
    def state(self) -> EpisodeState:
        return self.tools.state

    @property
    def steps(self) -> int:
        return len(self.calls)

    @property
    def over(self) -> bool:
        return self.terminated or self.truncated

    def call(self, name: str, arguments: dict) -> Outcome:
        """Run a parsed call (``name`` a declared tool, ``arguments`` its keyword arguments) as the
        episode's next step. Never raises on a bad call: a failure is an invalid step with its error."""
        if self.task is None:  # nothing to record: no episode yet
            return _NOT_STARTED
        state = self.tools.state
        n_shown = len(state.shown)
        try:
            if self.over:
                raise ToolError(self._over_message())
            observation = self.tools.call(name, arguments)
        except ToolError as e:
            return self.reject(str(e), name)
        shown = tuple(state.shown[n_shown:]) if name == "search" else (state.opened[-1],) if name == "open" else ()
        return self._record({"name": name, "arguments": dict(arguments), "valid": True}, observation, None, shown)

    def reject(self, error: str, name: str | None = None) -> Outcome:
        """Record an action that could not be run (unparsable text, a failed tool call) as an invalid step."""
        if self.task is None:
            return _NOT_STARTED
        return self._record({"name": name, "arguments": {}, "valid": False, "error": error}, f"Error: {error}",
                            error, ())

    def signature(self) -> str:
        """Action-type string of the episode so far: each tool's letter (S(earch) O(pen) A(nswer)), X(invalid).

        >>> from searchgym.envs.tools import SearchTools
        >>> ep = Episode(SearchTools(index=None), max_steps=3, step_cost=0, format_penalty=0.1)
        >>> ep.calls = [{"name": "search", "valid": True}, {"name": None, "valid": False}]
        >>> ep.signature()
        'S X'
        """
        return " ".join(_LETTERS[c["name"]] if c["valid"] else "X" for c in self.calls)

    def valid_calls(self) -> list[ToolCall]:
        return [ToolCall(c["name"], c["arguments"]) for c in self.calls if c["valid"]]

    def _over_message(self) -> str:
        if self.truncated:
            return f"the step budget ({self.max_steps} tool calls) is used up; the episode is over"
        return "the episode is over: you already answered, make no more tool calls"

    def _record(self, call: dict, observation: str, error: str | None, shown: tuple[str, ...]) -> Outcome:
        was_over = self.over
        self.calls.append(call)
        reward = call_reward(call, self.tools.state, self.step_cost, self.format_penalty)
        self.total += reward
        if not was_over:
            self.terminated = self.tools.done
            self.truncated = not self.terminated and self.steps >= self.max_steps
        return Outcome(clean_observation(observation, self.tools.max_obs_chars), float(reward), error, shown)
