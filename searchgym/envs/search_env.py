"""SearchEnv: a Gymnasium environment where an agent answers questions by searching a corpus.

The agent's actions are the text an LLM emits (tool calls); observations are the tool results an LLM
reads. Any task set (a `searchgym.tasks.TaskSet`: corpus + questions) becomes an env; its retriever (a
FAISS index, BM25, or both fused) is built once per (corpus, settings) and cached on disk, so envs are
cheap to make. Retrieval controls (a random or an oracle retriever, a closed book) isolate what search
contributes: docs/controls.md.
"""

from __future__ import annotations

import copy
from typing import Any, Literal, get_args

import gymnasium
from gymnasium import spaces

from searchgym.envs.actions import ActionError, parse_action
from searchgym.envs.episode import CHARSET, Episode, clean_observation
from searchgym.envs.tools import SETTINGS, SearchTools, check_settings, system_prompt
from searchgym.tasks import Task, TaskSet, ToolCall
from searchgym.trajectory import Trajectory
from searchgym.worlds import world_class, world_names

MAX_ACTION_CHARS = 4096  # the default max_action_chars

_WORLD_CACHE: dict[tuple, TaskSet] = {}
_INDEX_CACHE: dict[tuple, Any] = {}

Ranker = Literal["dense", "bm25", "hybrid"]
Control = Literal["random", "oracle"]  # not rankers: they measure what search contributes (envs.controls)
Retriever = Ranker | Control
RANKERS: tuple[str, ...] = get_args(Ranker)
CONTROLS: tuple[str, ...] = get_args(Control)
RETRIEVERS: tuple[str, ...] = RANKERS + CONTROLS
# Recipe loading (config.recipe_checks) checks env.kwargs against SETTINGS; the two kinds are named apart there too.
SETTINGS["retriever"] = (lambda v: isinstance(v, str) and v in RETRIEVERS,
                         f"one of {list(RANKERS)} or a control {list(CONTROLS)}")
SETTINGS["max_action_chars"] = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                                "an integer >= 1 (the longest tool call, <think> reasoning not counted)")


def load_world(world: str | TaskSet, world_kwargs: dict | None = None) -> TaskSet:
    """Build (once per process) the task set named ``world`` with ``world_kwargs``.

    ``world`` is a name from `searchgym.worlds` (built-in or the ``searchgym.worlds`` entry-point group),
    never an import path: env kwargs come from recipes, and a recipe must not choose code to run. Python
    callers may pass a `TaskSet` instance instead.
    """
    if not isinstance(world, str):
        if not (hasattr(world, "corpus") and callable(getattr(world, "tasks", None))):
            raise ValueError(f"world: expected a world name {world_names()} or a TaskSet instance, "
                             f"got {type(world).__name__}")
        return world
    if not isinstance(world_kwargs, dict | None):
        raise ValueError(f"world_kwargs: expected a table of arguments, got {type(world_kwargs).__name__}")
    key = (world, tuple(sorted((world_kwargs or {}).items())))
    if key not in _WORLD_CACHE:
        _WORLD_CACHE[key] = world_class(world)(**(world_kwargs or {}))
    return _WORLD_CACHE[key]


def check_retriever(retriever: object) -> None:
    """Refuse a retriever name outside RETRIEVERS with one line naming the field and the allowed values."""
    if not isinstance(retriever, str) or retriever not in RETRIEVERS:
        raise ValueError(f"retriever must be one of {list(RANKERS)} or a control {list(CONTROLS)}, "
                         f"got {retriever!r:.60}")


def load_index(taskset: TaskSet, embedder: str, index: str, progress: bool = True, retriever: str = "dense"):
    """The search index over ``taskset.corpus`` (memoised in-process, cached on disk by its builder):
    ``"dense"`` the FAISS index of ``embedder``/``index`` (corpus.index.build_index), ``"bm25"`` the BM25
    index (corpus.lexical; ``embedder``/``index`` unused), ``"hybrid"`` both fused by reciprocal rank
    fusion (corpus.hybrid); the controls (envs.controls) ``"random"`` (uniform documents; nothing to build)
    and ``"oracle"`` (gold evidence first, then the dense ranking)."""
    check_retriever(retriever)
    corpus = taskset.corpus
    key = (retriever, corpus.hash) if retriever in ("bm25", "random") else (retriever, corpus.hash, embedder, index)
    if key not in _INDEX_CACHE:
        if retriever == "random":
            from searchgym.envs.controls import RandomIndex

            _INDEX_CACHE[key] = RandomIndex(corpus)
        elif retriever == "oracle":
            from searchgym.envs.controls import OracleIndex

            _INDEX_CACHE[key] = OracleIndex(load_index(taskset, embedder, index, progress, "dense"))
        elif retriever == "dense":
            from searchgym.corpus.index import build_index

            _INDEX_CACHE[key] = build_index(corpus, embedder=embedder, index=index, progress=progress)
        elif retriever == "bm25":
            from searchgym.corpus.lexical import build_lexical_index

            _INDEX_CACHE[key] = build_lexical_index(corpus, progress=progress)
        else:
            from searchgym.corpus.hybrid import HybridIndex

            _INDEX_CACHE[key] = HybridIndex(load_index(taskset, embedder, index, progress, "dense"),
                                            load_index(taskset, embedder, index, progress, "bm25"))
    return _INDEX_CACHE[key]


_TEXT_SPACES: dict[int, spaces.Text] = {}


def _text_space(max_length: int) -> spaces.Text:
    """A Text space over CHARSET. Gymnasium indexes the 65k-character charset on construction (~1 s),
    so build one per length and hand out shallow copies (each copy gets its own RNG when seeded)."""
    if max_length not in _TEXT_SPACES:
        _TEXT_SPACES[max_length] = spaces.Text(max_length=max_length, min_length=0, charset=CHARSET)
    return copy.copy(_TEXT_SPACES[max_length])


class SearchEnv(gymnasium.Env):
    """
    ## Description
    Answer a (multi-hop) question by searching a document collection. Each step the agent makes one
    tool call: ``search(query)`` returns the top-k documents (id, title, snippet), ``open(doc_id)``
    returns a document's text, ``answer(text)`` submits the answer and ends the episode. Questions
    come from a task set (``SyntheticWorld``: a fictional, procedurally generated world whose
    questions know their gold evidence chains and valid strategies; ``WikiFactbook``: Wikipedia
    leads + CIA World Factbook passages). ``search`` ranks documents with the ``retriever``: dense
    embeddings (FAISS), BM25 keywords, or both fused.

    ## Action Space
    ``Text(max_length=max_action_chars, charset=CHARSET)`` (default 4096): the text an LLM emits.
    Canonical form (what the bundled ChatML/Qwen2.5 template renders and TRL parses)::

        <tool_call>
        {"name": "search", "arguments": {"query": "..."}}
        </tool_call>

    or the plain form ``search: ...`` / ``open: DOC_ID`` (or ``open(DOC_ID)``) / ``answer: ...``.
    A reasoning model's ``<think>…</think>`` blocks are removed before parsing and do not count towards
    ``max_action_chars`` (so an action with its reasoning may be longer than the space's ``max_length``,
    up to 16 x ``max_action_chars`` in all); text after a ``<think>`` that is never closed is not a call.
    Garbage, a call over ``max_action_chars`` characters without its reasoning (or raw text over 16 x
    that), unknown tools, bad JSON (also JSON nested over 32 levels or numbers over 100 digits), missing
    or extra arguments, unknown doc ids, several calls in one turn, and any call after the episode ended
    all return an error observation and ``-format_penalty``; ``step`` never raises, whatever the string
    (parsing is linear in its length).

    ## Observation Space
    ``Text(max_length=max_obs_chars, charset=CHARSET)``, where CHARSET is every Basic Multilingual
    Plane character but surrogates and control characters (others become U+FFFD). ``reset`` returns
    the question; ``step`` returns the tool result, or an error message starting with ``Error:``.

    ## Starting State
    ``reset(seed=s)`` draws a task of the split from the env's RNG (same seed, same task);
    ``reset(options={"task_id": id})`` picks one. ``info`` carries the system prompt and the JSON tool
    schemas an LLM agent needs, plus the gold answers, gold evidence chains, difficulty and the
    task's valid strategies (for meters; an agent must not read them).

    ## Rewards
    Per step: ``search``/``open`` give ``-step_cost``; an invalid action gives ``-format_penalty``;
    ``answer`` gives the answer score in [0, 1]: normalised exact match (NFKD, accents stripped,
    casefolded, punctuation and articles removed) or token F1 (``reward="f1"``). So every step reward
    lies in [-max(step_cost, format_penalty), 1], and a gold answer earns the maximum, 1.

    ## Episode End
    Terminated when a valid ``answer`` call is made. Truncated when ``max_steps`` actions (valid or
    not) have been taken without an answer.

    ## Arguments
    ```python
    gymnasium.make("searchgym/SyntheticWorld-v0", split="train", retriever="dense", embedder="minilm",
                   index="flat", top_k=5, max_steps=10, max_obs_chars=1500, max_action_chars=4096,
                   reward="em", step_cost=0.0, format_penalty=0.1, world_kwargs={"seed": 0})
    ```
    ``max_action_chars`` (an integer >= 1, else a ValueError at construction) is the longest tool call
    accepted, ``<think>`` reasoning not counted (see Action Space).
    ``world`` is a built-in name (``"synthetic"``, ``"wikifactbook"``), a name a plug-in registers in the
    ``searchgym.worlds`` entry-point group, or a `TaskSet` instance (never an import path).
    ``retriever`` chooses how ``search`` ranks documents:

    * ``"dense"`` (default, but ``searchgym/WikiFactbook-v0`` registers ``"bm25"``: its 42k documents take
      minutes to embed, and dense MiniLM's evidence recall is within noise of BM25's): cosine similarity of
      ``embedder`` vectors in a FAISS ``index``
      (searchgym.corpus specs; ``"hashing"`` needs no model, ``"minilm"`` embeds the corpus once, which
      takes minutes on a large corpus, then loads from the cache).
    * ``"bm25"``: keyword BM25 (the ``bm25s`` package, k1=1.5, b=0.75, English stopwords, accents
      folded); built in seconds, no model; ``embedder``/``index`` are ignored. A query that shares no
      word with any document returns "No documents match".
    * ``"hybrid"``: the BM25 and dense rankings fused by reciprocal rank fusion (k=60, top 50 of each).
    * ``"random"`` (a control): ``top_k`` documents drawn uniformly from the corpus, whatever the query;
      the n-th search of an episode is seeded by (the last ``reset`` seed, the task id, n).
    * ``"oracle"`` (a control): the task's first gold evidence chain in reading order, then the dense
      ranking for the rest of ``top_k``.

    ``tools`` (default: all) is the subset of tools the episode offers: ``["answer"]`` is closed book,
    ``["search", "answer"]`` snippets only. Other calls return an error observation (``-format_penalty``)
    and ``info["system_prompt"]``/``info["tools"]`` describe only the subset. The controls change what
    search returns or offers, never the questions, rewards or step costs (docs/controls.md).

    Every index is cached under ``$SEARCHGYM_CACHE`` (default ``~/.cache/searchgym``) keyed by the corpus
    hash and its settings; a corrupt cache is reported and rebuilt. Any other ``retriever`` is refused
    at construction with a ValueError naming the allowed values.

    ## Version History
    * v0: initial release; ``retriever`` added later (default ``"dense"``: unchanged behaviour), then
      its controls ``"random"``/``"oracle"`` and ``tools`` (default: all, unchanged); then
      ``max_action_chars`` (default 4096, the old fixed limit) and ``<think>`` reasoning removed before
      parsing (before, reasoning counted towards the fixed 4096 characters and hid a plain-form call);
      then ``searchgym/WikiFactbook-v0`` with ``retriever="bm25"`` by default (before: dense MiniLM).
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, world: str | TaskSet = "synthetic", *, world_kwargs: dict | None = None,
                 split: str = "train", retriever: Retriever = "dense", embedder: str = "minilm",
                 index: str = "flat", top_k: int = 5,
                 max_steps: int = 10, max_obs_chars: int = 1500, reward: str = "em", step_cost: float = 0.0,
                 format_penalty: float = 0.1, render_mode: str | None = None, env_id: str | None = None,
                 progress: bool = False, tools: list[str] | None = None, max_action_chars: int = MAX_ACTION_CHARS):
        check_settings(top_k=top_k, max_obs_chars=max_obs_chars, max_steps=max_steps, step_cost=step_cost,
                       format_penalty=format_penalty, reward=reward, tools=tools,
                       max_action_chars=max_action_chars)  # before any world or index
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        check_retriever(retriever)
        self.taskset = load_world(world, world_kwargs)
        self.tasks: list[Task] = list(self.taskset.tasks(split))
        if not self.tasks:
            have = [s for s in ("train", "test", "validation", "dev") if s != split and self.taskset.tasks(s)]
            raise ValueError(f"world {self.taskset.name!r} has no {split!r} tasks; splits with tasks: {have} "
                             "(choose one: split= in gymnasium.make, --split in searchgym eval, eval.split in "
                             "a recipe)")
        self._by_id = {t.id: t for t in self.tasks}
        self.split = split
        self.env_id = env_id or f"searchgym/{self.taskset.name}"
        self.retriever = retriever
        self.index = load_index(self.taskset, embedder, index, progress=progress, retriever=retriever)
        self.tools = SearchTools(self.index, top_k=top_k, max_obs_chars=max_obs_chars, scorer=reward, tools=tools)
        self.episode = Episode(self.tools, max_steps=max_steps, step_cost=step_cost, format_penalty=format_penalty)
        self.max_obs_chars = max_obs_chars
        self.max_action_chars = max_action_chars
        self.render_mode = render_mode
        self.observation_space = _text_space(max_obs_chars)
        # The call's limit, not the raw one (actions.RAW_CHARS_FACTOR x it): a sampled action is a call.
        self.action_space = _text_space(max_action_chars)
        self.reward_range = (-max(self.step_cost, self.format_penalty), 1.0)
        self._schemas = SearchTools.schemas(tools)
        self._system_prompt = system_prompt(tools)
        self._retrieval_seed = 0  # the last reset seed: what the random control draws with
        self._last_obs = ""

    # The episode rules live in the engine; these read (and, for experiments, set) them there.
    max_steps = property(lambda self: self.episode.max_steps,
                         lambda self, v: setattr(self.episode, "max_steps", v), doc="actions per episode")
    step_cost = property(lambda self: self.episode.step_cost,
                         lambda self, v: setattr(self.episode, "step_cost", v), doc="cost of a search/open")
    format_penalty = property(lambda self: self.episode.format_penalty,
                              lambda self, v: setattr(self.episode, "format_penalty", v),
                              doc="penalty of an invalid action")

    # -- Gymnasium API ------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._retrieval_seed = int(seed)
        options = options or {}
        if "task_id" in options:
            task_id = options["task_id"]
            if task_id not in self._by_id:
                raise ValueError(f"unknown task_id {task_id!r} for split {self.split!r} of {self.taskset.name}")
            task = self._by_id[task_id]
        else:
            task = self.tasks[int(self.np_random.integers(len(self.tasks)))]
        self.task = task
        self.episode.begin(task, self._retrieval_seed)
        self._last_obs = clean_observation(task.question, self.max_obs_chars)
        info = self._info(shown=())
        info.update(system_prompt=self._system_prompt, tools=self._schemas)
        return self._last_obs, info

    def step(self, action):
        if self.episode.task is None:  # Gymnasium's contract: reset first. Still, never raise.
            return "Error: reset the environment before stepping.", 0.0, False, True, {"error": "not reset"}
        # The episode engine records, prices and ends the episode; this method only turns text into a call.
        try:
            call = parse_action(action, max_chars=self.max_action_chars)
        except ActionError as e:
            outcome = self.episode.reject(str(e))
        else:
            outcome = self.episode.call(call.name, call.arguments)
        self._last_obs = outcome.observation
        info = self._info(shown=outcome.shown)
        info["error"] = outcome.error
        return self._last_obs, outcome.reward, self.episode.terminated, self.episode.truncated, info

    def render(self):
        if self.render_mode == "ansi":
            return f"[{self.task.id}] step {self.episode.steps}/{self.max_steps}\n{self._last_obs}"
        return None

    # -- helpers --------------------------------------------------------------------------------
    def _info(self, shown: tuple[str, ...]) -> dict:
        state, task = self.tools.state, self.task
        return {
            "task_id": task.id, "question": task.question, "gold_answers": list(task.answers),
            "evidence": [list(c) for c in task.evidence], "difficulty": task.difficulty, "kind": task.kind,
            "strategies": list(task.strategies), "shown": list(shown),
            "seen_docs": sorted(set(state.shown) | set(state.opened)),
            "trace": self.signature(), "steps": self.episode.steps, "answer": state.answer,
            "score": state.score, "correct": state.correct,
        }

    def signature(self) -> str:
        """Action-type string of the episode so far: each tool's letter (S(earch) O(pen) A(nswer)), X(invalid)."""
        return self.episode.signature()

    def valid_calls(self) -> list[ToolCall]:
        return self.episode.valid_calls()

    def trajectory(self, *, messages: list[dict], sample: int = 0, source: str = "",
                   token_logprobs=(), token_entropies=(), token_roles=(), meta: dict | None = None) -> Trajectory:
        """The record of the episode just played (call after it ended), in the meters' format."""
        state, task = self.tools.state, self.task
        calls = self.valid_calls()
        strategy = self.taskset.classify_strategy(task, calls) if self.taskset.strategies else None
        return Trajectory(
            task_id=task.id, env_id=self.env_id, sample=sample, question=task.question, messages=messages,
            calls=[dict(c) for c in self.episode.calls], signature=self.signature(), strategy=strategy,
            queries=list(state.queries), docs_retrieved=list(state.shown), docs_opened=list(state.opened),
            answer=state.answer, reward=self.episode.total, correct=state.correct,
            gold_answers=list(task.answers), evidence=[list(c) for c in task.evidence],
            difficulty=task.difficulty, truncated=self.episode.truncated, num_turns=self.episode.steps,
            token_logprobs=list(token_logprobs), token_entropies=list(token_entropies),
            token_roles=list(token_roles), source=source, meta=dict(meta or {}),
        )
