"""The three tools of every search environment: ``search``, ``open`` and ``answer``.

This is the one implementation, and the one declaration: each tool is a `SearchTools` method marked
``@tool`` (its name, its one typed argument, its docstring as the schema's prompt, plus a phrase for the
system prompt, the meter role of its argument and its signature letter). Everything else is derived from
it in `TOOLS`: `TOOL_NAMES`, ``actions.TOOL_ARGUMENTS`` and the parser's messages, `SYSTEM_PROMPT`, the JSON
schemas, the rollout's role patterns, ``SearchEnv.signature`` and the GRPO adapter's tool methods.

The Gymnasium `SearchEnv` dispatches parsed actions to it, and the TRL adapter (searchgym.train.grpo_env)
exposes these same methods and docstrings to GRPOTrainer, so SFT demonstrations, evaluation rollouts and
RL all see identical tool schemas and observation text. Docstrings are prompts: they tell the model what
comes back and what to call next. A new tool is one more ``@tool`` method taking one ``str`` argument.
An env may offer a subset (``tools=["answer"]``: closed book); the others then answer with an error, and
`system_prompt` / `SearchTools.schemas` describe only the subset (docs/controls.md).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from searchgym.envs.rewards import SCORERS, exact_match
from searchgym.tasks import Task
from searchgym.trajectory import TOKEN_ROLES


class ToolError(ValueError):
    """A tool call that cannot be executed; the message is shown to the agent."""


@dataclass(frozen=True)
class ToolSpec:
    """One declared tool, read off its `SearchTools` method (see `tool`)."""

    name: str
    argument: str  # the one required argument
    prompt: str  # what the system prompt says it does, after "name(argument)"
    role: str | None  # the meter role of the argument's tokens (rollout.role_spans), or None
    letter: str  # its letter in an episode's action signature (SearchEnv.signature)
    function: Callable


def tool(prompt: str, *, role: str | None = None, letter: str | None = None):
    """Declare a `SearchTools` method as a tool: ``prompt`` is its phrase in the system prompt, ``role``
    the meter role of its argument's tokens, ``letter`` its signature letter (default: its initial)."""
    def mark(function):
        function._tool = {"prompt": prompt, "role": role, "letter": letter}
        return function
    return mark


def declared_tools(cls: type) -> tuple[ToolSpec, ...]:
    """The tools ``cls`` declares with `tool`, in declaration order (each takes exactly one argument)."""
    specs = []
    for name, function in vars(cls).items():
        declared = getattr(function, "_tool", None)
        if declared is None:
            continue
        arguments = list(inspect.signature(function).parameters)[1:]
        if len(arguments) != 1:
            raise TypeError(f"tool {name} must take exactly one argument, got {arguments}")
        if declared["role"] not in (None, *TOKEN_ROLES):
            raise TypeError(f"tool {name}: role must be None or in {TOKEN_ROLES}, got {declared['role']!r}")
        letter = declared["letter"] or name[0].upper()
        specs.append(ToolSpec(name, arguments[0], declared["prompt"], declared["role"], letter, function))
    letters = [s.letter for s in specs]
    if len(set(letters)) != len(letters) or "X" in letters:  # X marks an invalid action
        raise TypeError(f"tool signature letters must be distinct and not X, got {letters}: pass letter=")
    return tuple(specs)


@dataclass
class EpisodeState:
    """Everything the tools have done in the current episode (what meters read back)."""

    task: Task | None = None
    queries: list[str] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)  # doc ids shown by search, in order, with repeats
    opened: list[str] = field(default_factory=list)
    answer: str | None = None
    score: float = 0.0  # the reward scorer's value (em or f1) in [0, 1]
    correct: bool = False  # normalised exact match, whatever the scorer: the success criterion


def _count(least: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= least


def _penalty(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


# The settings of a search episode, with the rule each must meet and how to say it: SearchTools, the episode
# engine, SearchEnv (before it loads any world or index) and recipe loading (env.kwargs) all check with this.
SETTINGS = {
    "top_k": (_count(1), "an integer >= 1"),
    "max_obs_chars": (_count(200), "an integer >= 200 (one search result must fit)"),
    "max_steps": (_count(1), "an integer >= 1"),
    "step_cost": (_penalty, "a finite penalty >= 0"),
    "format_penalty": (_penalty, "a finite penalty >= 0"),
    "reward": (lambda v: isinstance(v, str) and v in SCORERS, f"one of {sorted(SCORERS)}"),
}


def check_settings(**settings) -> None:
    """Refuse a setting outside its range with one line naming it and what is allowed (`SETTINGS`; other
    names are not checked here).

    >>> check_settings(top_k=3, step_cost=0.0)
    >>> check_settings(max_steps=True)
    Traceback (most recent call last):
    ...
    ValueError: max_steps: must be an integer >= 1, got True
    """
    for key, value in settings.items():
        if key in SETTINGS and not SETTINGS[key][0](value):
            raise ValueError(f"{key}: must be {SETTINGS[key][1]}, got {value!r:.60}")


class SearchTools:
    """Stateful tools over a `SearchIndex` for one episode at a time.

    Arguments:
        index: a `searchgym.corpus.index.SearchIndex` (anything with ``search(queries, k)`` and
            ``corpus``).
        top_k: hits returned by ``search``.
        max_obs_chars: budget for one observation; ``open`` truncates the document to fit.
        scorer: ``"em"`` (normalised exact match) or ``"f1"`` (token F1), the answer score in [0, 1].
    """

    def __init__(self, index, *, top_k: int = 5, max_obs_chars: int = 1500, scorer: str = "em",
                 tools: Sequence[str] | None = None):
        check_settings(reward=scorer, top_k=top_k, max_obs_chars=max_obs_chars)
        self.index = index
        self.top_k = top_k
        self.max_obs_chars = max_obs_chars
        self.scorer = scorer
        self.enabled = enabled_tools(tools)
        self.state = EpisodeState()
        self._searched = index  # what search asks: the index, or its per-episode view (envs.controls)

    def begin(self, task: Task, seed: int = 0) -> None:
        """Start a new episode on ``task``. An index with ``for_episode`` (the retrieval controls, whose
        results depend on the task and ``seed``) gives this episode its own view to search."""
        self.state = EpisodeState(task=task)
        for_episode = getattr(self.index, "for_episode", None)
        self._searched = for_episode(task, seed) if for_episode is not None else self.index

    @property
    def done(self) -> bool:
        return self.state.answer is not None

    # -- the tools (declaration order: the system prompt, parser messages and call tokens follow it) ----
    @tool("returns the best-matching documents with their doc_id, title and a snippet", role="query")
    def search(self, query: str) -> str:
        """Search the document collection.

        Args:
            query: A few keywords or a question, e.g. "birthplace of Ilvar Tessa".

        Returns:
            The best-matching documents, one per line as "[doc_id] title: snippet". Call open with a
            doc_id to read a whole document, search again with different words, or answer.
        """
        self._check_open_episode()
        query = str(query).strip()
        if not query:
            raise ToolError("search needs a non-empty query")
        hits = self._searched.search([query], self.top_k)[0]
        self.state.queries.append(query)
        self.state.shown.extend(h.doc_id for h in hits)
        if not hits:
            return f"No documents match {query!r}. Try other words."
        lines = [f"[{h.doc_id}] {h.title}: {h.snippet}" for h in hits]
        return _fit("\n".join(lines), self.max_obs_chars)

    @tool("returns a document's text")
    def open(self, doc_id: str) -> str:
        """Open a document and read its text.

        Args:
            doc_id: The id of a document, exactly as shown in square brackets by search.

        Returns:
            The document's title and text (long documents are cut to fit). Search for the next fact,
            open another document, or answer when you know the answer.
        """
        self._check_open_episode()
        doc_id = str(doc_id).strip().strip("[]")
        corpus = self.index.corpus
        if doc_id not in corpus:
            raise ToolError(f"unknown doc_id {doc_id!r}: pass an id exactly as search shows it in [brackets]")
        doc = corpus[doc_id]
        self.state.opened.append(doc_id)
        return _fit(f"[{doc.id}] {doc.title}\n{doc.text}", self.max_obs_chars)

    @tool("submits your final answer and ends the episode", role="answer")
    def answer(self, text: str) -> str:
        """Submit your final answer. This ends the episode; make no more tool calls after it.

        Args:
            text: The answer only: a short name, place or number.

        Returns:
            A confirmation that the answer was recorded.
        """
        self._check_open_episode()
        text = str(text).strip()
        if not text:
            raise ToolError("answer needs a non-empty text")
        task = self.state.task
        self.state.answer = text
        self.state.score = SCORERS[self.scorer](text, task.answers)
        self.state.correct = exact_match(text, task.answers) == 1.0
        return f"Answer recorded: {text}. The episode is over."

    def _check_open_episode(self) -> None:
        if self.state.task is None:
            raise ToolError("no episode in progress: reset the environment first")
        if self.done:
            raise ToolError("the episode is over: you already answered, make no more tool calls")

    def call(self, name: str, arguments: dict) -> str:
        """Dispatch a parsed call (name in TOOL_NAMES) to its tool; a tool this episode does not offer
        (``tools=``, e.g. closed book) is a `ToolError`, so the agent sees an error, not a crash."""
        if name not in self.enabled:
            closed = " (closed book: answer from what you know)" if "search" not in self.enabled else ""
            raise ToolError(f"{name} is not available in this environment; its tools are {list(self.enabled)}"
                            + closed)
        return getattr(self, name)(**arguments)

    @staticmethod
    def schemas(tools: Sequence[str] | None = None) -> list[dict]:
        """JSON tool schemas (the ones chat templates render and TRL derives from these methods) of
        ``tools`` (default: all), in `TOOL_NAMES` order."""
        from transformers.utils import get_json_schema

        return [get_json_schema(getattr(SearchTools, n)) for n in enabled_tools(tools)]


TOOLS = declared_tools(SearchTools)
# Alphabetical: TRL's GRPOTrainer lists an environment's tools with inspect.getmembers, which sorts by name,
# and every other path (rollouts, SFT, the prior lab's pretraining) must render the very same tools block.
# A prior-lab model sees that block as one token; in another order it is ~550 tokens it never read.
TOOL_NAMES = tuple(sorted(t.name for t in TOOLS))


def _tool_subset(v) -> bool:
    return v is None or (isinstance(v, list | tuple) and all(isinstance(n, str) for n in v)
                         and len(set(v)) == len(v) and set(v) <= set(TOOL_NAMES) and "answer" in v
                         and ("open" not in v or "search" in v))


# A subset filter on the one declaration, not a second one: ["answer"] is closed book, ["search", "answer"]
# snippets only. answer must stay (the only way an episode earns its reward), and open needs search (the
# only place doc ids come from).
SETTINGS["tools"] = (_tool_subset, f"a list of distinct tool names from {list(TOOL_NAMES)} with 'answer', "
                                   "and 'search' if 'open' (['answer'] = closed book), or none for all")


def enabled_tools(tools: Sequence[str] | None = None) -> tuple[str, ...]:
    """``tools`` checked and in `TOOL_NAMES` order (None: every tool).

    >>> enabled_tools(["search", "answer"]), enabled_tools() == TOOL_NAMES
    (('answer', 'search'), True)
    """
    check_settings(tools=tools)
    return TOOL_NAMES if tools is None else tuple(n for n in TOOL_NAMES if n in tools)


def system_prompt(tools: Sequence[str] | None = None) -> str:
    """The system prompt for ``tools`` (default: all, `SYSTEM_PROMPT`). Without search it says there is
    nothing to search, so a closed-book agent is not told to search.

    >>> system_prompt(["answer"])[:73]
    'You answer questions from what you know: there is no document collection.'
    """
    enabled = enabled_tools(tools)
    specs = [t for t in TOOLS if t.name in enabled]
    searching = "search" in enabled
    return (("You answer questions by searching a document collection." if searching else
             "You answer questions from what you know: there is no document collection.")
            + (" Use the tools: " if len(specs) > 1 else " Use the tool: ")
            + "; ".join(f"{t.name}({t.argument}) {t.prompt}" for t in specs) + ". Make one tool call per turn."
            + (" Facts may be spread over several documents: search, read, then search again for the next fact."
               if searching else "")
            + " Answer with a short name, place or number, not a sentence.")


SYSTEM_PROMPT = system_prompt()


def _fit(text: str, budget: int) -> str:
    """Cut ``text`` to ``budget`` characters on a word boundary, marking the cut."""
    if len(text) <= budget:
        return text
    marker = " …[truncated]"
    cut = text[: budget - len(marker)]
    space = cut.rfind(" ")
    if space > budget // 2:
        cut = cut[:space]
    return cut + marker
