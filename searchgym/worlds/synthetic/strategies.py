"""Search strategies of the synthetic world: the deterministic classifier and scripted demonstrators.

A strategy is a *search behaviour* read off the action trace: follow the chain hop by hop (forward),
search the whole question first (question_first), search every named entity before opening anything
(parallel), answer from snippets alone (snippet), or cross-check a fact in a second page (verify).
The classifier is a fixed rule order over calls and the task's structure (first match wins, "other"
when none fits); each demonstrator is a script the classifier labels as its own strategy.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import searchgym.worlds.synthetic.words as T
from searchgym.tasks import Step, Task, ToolCall

STRATEGIES = ("forward", "question_first", "parallel", "snippet", "verify")
QUERY_STYLES = ("keyword", "natural", "terse", "relation_first")
# A fact counts as visible in a search result when its sentence ends within this many characters
# of the document's start: the env's snippets are ~200 characters cut on a word boundary.
SNIPPET_CHARS = 180
MAX_CALLS = 10  # demonstrators answer at the latest on this call (the env's default max_steps)
QUESTION_LIKE = 0.7  # share of the question's non-entity words a query needs to count as "the question"


def entity_of(doc_id: str) -> str:
    """The entity page family a document belongs to (main and secondary pages share it).

    >>> entity_of("syn:person:0042:b"), entity_of("syn:person:0042")
    ('syn:person:0042', 'syn:person:0042')
    """
    return ":".join(doc_id.split("#")[0].split(":")[:3])


def lookup_query(name: str, relation: str, inverse: bool, style: str) -> str:
    """A query for one lookup in a paraphrase style.

    >>> [lookup_query("Ilvar Tessa", "born_in", False, s) for s in QUERY_STYLES]
    ['Ilvar Tessa birthplace', 'Where was Ilvar Tessa born?', 'Ilvar Tessa', 'birthplace: Ilvar Tessa']
    """
    keyword = (T.INVERSE_KEYWORDS if inverse else T.REL_KEYWORDS)[relation]
    if style == "keyword":
        return f"{name} {keyword}"
    if style == "natural":
        return (T.INVERSE_NATURAL if inverse else T.REL_NATURAL)[relation].format(x=name)
    if style == "terse":
        return name
    return f"{keyword}: {name}"


def question_query(question: str, style: str) -> str:
    """The whole question as a query: verbatim in natural style, its content words otherwise, each as the
    question spells it (names keep their case, so a query copies them rather than rewrites them).

    >>> question_query("Who founded the Ostra Press?", "keyword")
    'founded Ostra Press'
    """
    if style == "natural":
        return question
    return " ".join(w for w in re.findall(r"[A-Za-z0-9]+", question) if w.lower() not in T.STOPWORDS)


def _names(task: Task, query_tokens: set[str]) -> set[int]:
    """Indexes of the question's named entities that a query names (every content word of a variant)."""
    hit = set()
    for i, variants in enumerate(task.meta.get("named", [])):
        for v in variants:
            words = [t for t in T.tokens(v) if t not in T.STOPWORDS]
            if words and all(w in query_tokens for w in words):
                hit.add(i)
    return hit


def is_question_like(task: Task, query: str) -> bool:
    """Does a query carry the whole question: every named entity and most of the other content words?"""
    q = set(T.tokens(query))
    named = task.meta.get("named", [])
    if len(_names(task, q)) < len(named):
        return False
    entity_words = {t for variants in named for v in variants for t in T.tokens(v)}
    content = {t for t in T.tokens(task.question) if t not in T.STOPWORDS and t not in entity_words}
    return not content or len(content & q) / len(content) >= QUESTION_LIKE


def classify_strategy(task: Task, calls: Sequence[ToolCall]) -> str:
    """Strategy label of a trace; rules in fixed order, the first that fits wins.

    1. no search: ``other``; 2. no open: ``snippet``; 3. the first search (before any open) is the
    question, unless the question has one hop (then the question *is* the forward query):
    ``question_first``; 4. two distinct pages of one entity opened: ``verify``; 5. two or more searches
    before the first open that name two or more of the question's entities: ``parallel``; 6. the first
    search names an entity of the question: ``forward``; else ``other``.
    """
    def arg(call: ToolCall, key: str) -> str:  # traces of a model may hold malformed arguments
        return str(call.arguments.get(key, "")) if isinstance(call.arguments, dict) else ""

    searches = [(i, arg(c, "query")) for i, c in enumerate(calls) if c.name == "search"]
    opens = [(i, arg(c, "doc_id")) for i, c in enumerate(calls) if c.name == "open"]
    if not searches:
        return "other"
    if not opens:
        return "snippet"
    first_open = opens[0][0]
    one_hop = task.kind == "bridge" and task.difficulty == 1
    if searches[0][0] < first_open and not one_hop and is_question_like(task, searches[0][1]):
        return "question_first"
    pages: dict[str, set[str]] = {}
    for _, d in opens:
        pages.setdefault(entity_of(d), set()).add(d)
    if any(len(p) >= 2 for p in pages.values()):
        return "verify"
    before = [q for i, q in searches if i < first_open]
    named_before = set().union(*(_names(task, set(T.tokens(q))) for q in before)) if before else set()
    if len(before) >= 2 and len(named_before) >= 2:
        return "parallel"
    if _names(task, set(T.tokens(searches[0][1]))):
        return "forward"
    return "other"


class _Context:
    """What a demonstrator has seen so far, rebuilt from the history on every call."""

    def __init__(self, task: Task, style: str):
        self.task, self.steps = task, task.meta["steps"]
        k = QUERY_STYLES.index(style)
        self.styles = QUERY_STYLES[k:] + QUERY_STYLES[:k]  # own style first, then the others
        self.shown: dict[str, None] = {}
        self.hits: dict[int, list[str]] = {}  # step -> ids shown by the searches made for it
        self.current = -1  # the step the latest search was made for
        self.last_shown: tuple[str, ...] = ()
        self.opened: list[str] = []
        self.texts: list[str] = []
        self.read: set[int] = set()  # steps whose fact was read in an opened page
        self.glimpsed: set[int] = set()  # steps whose fact was read in a search snippet

    def _states(self, i: int, text: str) -> bool:
        s, low = self.steps[i], text.lower()
        return any(v and v.lower() in low for v in (s["value"], s["value_alias"]))

    def observe(self, step: Step) -> None:
        self.texts.append(step.observation)
        if step.error:
            return
        if step.call.name == "search":
            self.shown.update(dict.fromkeys(step.shown))
            self.last_shown = tuple(step.shown)
            self.hits.setdefault(self.current, []).extend(step.shown)
            lines = {d: line for d in step.shown for line in step.observation.splitlines() if f"[{d}]" in line}
            for i, s in enumerate(self.steps):  # snippet reading: the hit's own line states the value
                if any(d in lines and self._states(i, lines[d]) for d in s["snippet_docs"]):
                    self.glimpsed.add(i)
        elif step.call.name == "open":
            doc = str(step.call.arguments.get("doc_id", ""))
            self.opened.append(doc)
            for i, s in enumerate(self.steps):
                if doc in s["docs"] and self._states(i, step.observation):
                    self.read.add(i)

    def best_shown(self, i: int) -> str | None:
        """The preferred shown page stating step i's fact, from an entity not opened yet (a second
        page of an opened entity is the verify strategy's move, not everyone's)."""
        opened = {entity_of(d) for d in self.opened}
        return next((d for d in self.steps[i]["docs"] if d in self.shown and entity_of(d) not in opened), None)

    def fallback(self, i: int) -> str | None:
        """The best candidate when no gold page showed up: the top hit of step i's own searches."""
        opened = {entity_of(d) for d in self.opened}
        return next((d for d in self.hits.get(i, self.last_shown) if entity_of(d) not in opened), None)

    def name_for(self, i: int) -> str:
        """The name to search for step i: for a later hop, the form the agent actually read."""
        s = self.steps[i]
        if i == 0 or s["inverse"] or not s["search_alias"]:
            return s["search"]
        seen = " ".join(self.texts).lower()
        if s["search"].lower() not in seen and s["search_alias"].lower() in seen:
            return s["search_alias"]
        return s["search"]

    def query(self, i: int, style: str) -> ToolCall:
        self.current, s = i, self.steps[i]
        return ToolCall("search", {"query": lookup_query(self.name_for(i), s["relation"], s["inverse"], style)})

    def answer(self) -> ToolCall:
        solved = len(self.read | self.glimpsed) == len(self.steps)
        return ToolCall("answer", {"text": self.task.answers[0] if solved else "unknown"})


def _find(ctx: _Context, i: int, min_searches: int = 0) -> Iterator[ToolCall]:
    """Search (own style, then reformulations) until a page stating step i's fact is shown."""
    for n, style in enumerate(ctx.styles[:3]):
        if n >= min_searches and (ctx.best_shown(i) or i in ctx.read):
            return
        yield ctx.query(i, style)


def _read(ctx: _Context, i: int) -> Iterator[ToolCall]:
    """Open the best page shown for step i, or the best candidate when no gold page showed up."""
    if i in ctx.read:
        return
    doc = ctx.best_shown(i) or ctx.fallback(i)
    if doc:
        yield ToolCall("open", {"doc_id": doc})


def _forward(ctx: _Context) -> Iterator[ToolCall]:
    for i in range(len(ctx.steps)):
        if i not in ctx.read:
            yield from _find(ctx, i)
            yield from _read(ctx, i)


def _question_first(ctx: _Context, style: str) -> Iterator[ToolCall]:
    yield ToolCall("search", {"query": question_query(ctx.task.question, style)})
    yield from _forward(ctx)


def _parallel(ctx: _Context) -> Iterator[ToolCall]:
    if ctx.task.kind == "bridge":  # later hops are unknown until read: nothing to parallelise
        yield from _forward(ctx)
        return
    for i in range(len(ctx.steps)):
        yield from _find(ctx, i, min_searches=1)
    for i in range(len(ctx.steps)):
        yield from _read(ctx, i)


def _snippet(ctx: _Context) -> Iterator[ToolCall]:
    for i in range(len(ctx.steps)):
        for style in ctx.styles[:3]:
            if i in ctx.glimpsed:
                break
            yield ctx.query(i, style)


def _verify(ctx: _Context) -> Iterator[ToolCall]:
    """Forward, but cross-check: open a second page of the first entity that shows one; if none ever
    does, search the last entity again (another phrasing) for its second page."""

    def second_page() -> str | None:
        opened = [entity_of(d) for d in ctx.opened]
        return next((d for d in ctx.shown if entity_of(d) in opened and d not in ctx.opened), None)

    def verified() -> bool:
        return len({entity_of(d) for d in ctx.opened}) < len(ctx.opened)

    for i in range(len(ctx.steps)):
        if i not in ctx.read:
            yield from _find(ctx, i)
            yield from _read(ctx, i)
        if not verified() and second_page():
            yield ToolCall("open", {"doc_id": second_page()})
    target = "syn:" + ctx.task.meta["verify_target"]
    name, rel = ctx.task.meta["verify_name"], ctx.steps[-1]["relation"]
    for style in ctx.styles[1:] + ctx.styles[:1]:  # a different phrasing for the second look
        if verified():
            return
        page = next((d for d in ctx.shown if entity_of(d) == target and d not in ctx.opened), None)
        if page:
            yield ToolCall("open", {"doc_id": page})
        else:
            yield ToolCall("search", {"query": lookup_query(name, rel, False, style)})


class SyntheticDemonstrator:
    """A scripted policy for one strategy and query style (see the module docstring).

    It may use the task's gold structure to decide what to search and which shown page to open, but
    opens only ids an earlier observation showed, and answers "unknown" unless it read every fact.
    """

    def __init__(self, strategy: str, style: str):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
        if style not in QUERY_STYLES:
            raise ValueError(f"unknown query style {style!r}; choose one of {QUERY_STYLES}")
        self.strategy, self.style = strategy, style

    def _plan(self, ctx: _Context) -> Iterator[ToolCall]:
        if self.strategy == "question_first":
            return _question_first(ctx, self.style)
        return {"forward": _forward, "parallel": _parallel, "snippet": _snippet, "verify": _verify}[
            self.strategy](ctx)

    def __call__(self, task: Task, history: Sequence[Step]) -> ToolCall:
        # Replay the (deterministic) plan against the history, then take its next call.
        ctx = _Context(task, self.style)
        plan = self._plan(ctx)
        call = next(plan, None)
        for step in history:
            ctx.observe(step)
            call = next(plan, None)
        if call is None or len(history) >= MAX_CALLS - 1:
            return ctx.answer()
        return call

    def __repr__(self) -> str:
        return f"SyntheticDemonstrator({self.strategy!r}, {self.style!r})"
