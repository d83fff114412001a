"""SyntheticWorld: a procedurally generated fictional world, its corpus and its multi-hop questions.

People, cities, countries, organisations and works with functional relations (born_in, works_for, ...)
and numeric attributes are drawn from ``random.Random(seed)``; every fact is rendered into documents
from varied templates, and questions (1-4 hop bridges, comparisons, intersections) carry their gold
evidence chains and valid strategies. Knobs: hops, distractors, redundancy, aliases. Fictional names
keep the answers out of any model's pretraining, so an agent has to search.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

import searchgym.worlds.synthetic.words as T
from searchgym.corpus.documents import Corpus
from searchgym.tasks import Demonstrator, Task, ToolCall
from searchgym.worlds.synthetic.entities import Entity, generate_entities, page_id, render_corpus
from searchgym.worlds.synthetic.strategies import (
    QUERY_STYLES,
    SNIPPET_CHARS,
    STRATEGIES,
    SyntheticDemonstrator,
    classify_strategy,
)

COMPARISON_PAIRS = 1500  # candidate pairs drawn per compared attribute
MAX_CHAINS = 16  # evidence chains listed per question (redundancy multiplies them per hop)
KIND_MIX = {"bridge": 0.7, "comparison": 0.15, "intersection": 0.15}

# -- 1. the world: entities, relations, attributes (entities.generate_entities) ----------
# -- 2. the corpus: pages per entity, facts with their offsets (entities.render_corpus) ---


# -- 3. questions ---------------------------------------------------------------------------------
def _step(entities, facts, subject: Entity, rel: str, search: Entity | None = None, value=None) -> dict:
    """One lookup a solver must make: which entity to search, which fact it reveals, where it is stated."""
    search = search or subject
    if value is None:
        value = entities[subject.rels[rel]] if rel in subject.rels else subject.attrs[rel]
    places = facts[(subject.id, rel)]
    if search is not subject:  # looking the fact up from the object's side: its main page first
        places = sorted(places, key=lambda p: p[0] != page_id(search.id))
    return {"search": search.name, "search_alias": search.alias, "target": search.id,
            "subject": subject.name, "relation": rel, "inverse": search is not subject,
            "value": value.name if isinstance(value, Entity) else str(value),
            "value_alias": value.alias if isinstance(value, Entity) else None,
            "docs": [d for d, _ in places], "snippet_docs": [d for d, end in places if end <= SNIPPET_CHARS]}


def _evidence(steps: list[dict]) -> tuple[tuple[str, ...], ...]:
    chains = []
    for combo in itertools.islice(itertools.product(*[s["docs"] for s in steps]), MAX_CHAINS):
        chains.append(tuple(dict.fromkeys(combo)))  # one document may serve two consecutive hops
    return tuple(dict.fromkeys(chains))


def _valid_strategies(kind: str, steps: list[dict], redundancy: int, hops: int) -> tuple[str, ...]:
    ok = {"forward"}
    if kind != "bridge" or hops >= 2:
        ok.add("question_first")  # for a one-hop question, the question IS the forward query
    if kind != "bridge":
        ok.add("parallel")  # independent lookups (two named entities) can be searched up front
    if all(s["snippet_docs"] for s in steps):
        ok.add("snippet")
    if redundancy >= 2:
        ok.add("verify")
    return tuple(s for s in STRATEGIES if s in ok)


def _bridge_chains(entities: dict[str, Entity], start: Entity, max_hops: int):
    """Every relation path from ``start`` of 1..max_hops hops that never revisits an entity."""
    stack = [(start, ())]
    while stack:
        e, path = stack.pop()
        for rel in T.BRIDGE_RELATIONS[e.kind]:
            new = path + ((e.id, rel),)
            target = e.rels.get(rel)
            if target and any(target == s for s, _ in new):
                continue
            yield new
            if target and len(new) < max_hops:
                stack.append((entities[target], new))


def _split_of(e: Entity, test_ids: set[str]) -> str:
    return "test" if e.id in test_ids else "train"


def candidate_questions(rng: random.Random, entities: dict[str, Entity], max_hops: int,
                        test_ids: set[str]) -> dict[tuple[str, str], list[tuple]]:
    """Answerable questions pooled by (split, pool); a pool is ``bridge-<hops>``, ``comparison`` or
    ``intersection``, a candidate ``(key, spec)``: a stable key and what `build_task` needs."""
    real = [e for e in entities.values() if not e.distractor]
    pools: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for start in real:
        for path in _bridge_chains(entities, start, max_hops):
            key = "bridge:" + "|".join(f"{s}.{r}" for s, r in path)
            pools[(_split_of(start, test_ids), f"bridge-{len(path)}")].append((key, path))
    for attr in T.COMPARISON_TEMPLATES:
        owners = [e for e in real if attr in e.attrs]
        # A bounded random subset of pairs: all O(n^2) of them would dominate generation time.
        n_pairs = min(len(owners) * (len(owners) - 1) // 2, COMPARISON_PAIRS)
        pairs: set[tuple[int, int]] = set()
        while len(pairs) < n_pairs:
            i, j = sorted(rng.sample(range(len(owners)), 2))
            pairs.add((i, j))
        for i, j in sorted(pairs):
            x, y = owners[i], owners[j]
            if x.attrs[attr] != y.attrs[attr] and _split_of(x, test_ids) == _split_of(y, test_ids):
                pools[(_split_of(x, test_ids), "comparison")].append((f"cmp:{attr}:{x.id}:{y.id}", (attr, x, y)))
    for (kind, r1, r2) in T.INTERSECTION_TEMPLATES:
        groups: dict[tuple[str, str], list[Entity]] = defaultdict(list)
        for e in entities.values():  # distractors count: the answer must be unique among all
            if e.kind == kind:
                groups[(e.rels[r1], e.rels[r2])].append(e)
        for (_b1, _b2), members in groups.items():
            if len(members) == 1 and not members[0].distractor:
                a = members[0]
                pools[(_split_of(a, test_ids), "intersection")].append((f"int:{a.id}:{r1}:{r2}", (kind, r1, r2, a)))
    return pools


def build_task(entities, facts, kind: str, spec, rng: random.Random, redundancy: int) -> dict:
    """The fields of one Task (without id/split) from a candidate's spec."""
    if kind == "bridge":
        path = spec
        steps = [_step(entities, facts, entities[s], r) for s, r in path]
        phrase = entities[path[0][0]].name
        for _subject, r in path[:-1]:
            phrase = rng.choice(T.NOUN_PHRASES[r]).format(x=phrase)
        question = rng.choice(T.QUESTION_TEMPLATES[path[-1][1]]).format(x=phrase)
        last_subject, last_rel = entities[path[-1][0]], path[-1][1]
        target = entities.get(last_subject.rels.get(last_rel, ""))
        answers = tuple(target.names) if target else (str(last_subject.attrs[last_rel]),)
        named, hops = [entities[path[0][0]]], len(path)
        answer_type = target.kind if target else last_rel
        verify = last_subject
    elif kind == "comparison":
        attr, x, y = spec
        if rng.random() < 0.5:
            x, y = y, x
        templates, wins = T.COMPARISON_TEMPLATES[attr]
        question = rng.choice(templates).format(x=x.name, y=y.name)
        steps = [_step(entities, facts, x, attr), _step(entities, facts, y, attr)]
        pick = min if wins == "min" else max
        winner = pick((x, y), key=lambda e: e.attrs[attr])
        answers, named, hops, answer_type, verify = tuple(winner.names), [x, y], 2, x.kind, y
    else:
        akind, r1, r2, a = spec
        b1, b2 = entities[a.rels[r1]], entities[a.rels[r2]]
        question = rng.choice(T.INTERSECTION_TEMPLATES[(akind, r1, r2)]).format(a=b1.name, b=b2.name)
        steps = [_step(entities, facts, a, r1, search=b1, value=a), _step(entities, facts, a, r2, search=b2, value=a)]
        answers, named, hops, answer_type, verify = tuple(a.names), [b1, b2], 2, akind, a
    return {"question": question[0].upper() + question[1:], "answers": answers, "evidence": _evidence(steps),
            "difficulty": hops, "kind": kind,
            "strategies": _valid_strategies(kind, steps, redundancy, hops),
            "meta": {"steps": steps, "named": [e.names for e in named], "answer_type": answer_type,
                     "verify_target": verify.id, "verify_name": verify.name}}


def _sample(pools: dict[str, list], quotas: dict[str, int], rng: random.Random) -> list[tuple[str, tuple]]:
    """Take each pool's quota; a short pool's deficit is filled from the others, in order."""
    chosen, leftovers = [], {}
    for name, quota in quotas.items():
        items = sorted(pools.get(name, []), key=lambda c: c[0])
        rng.shuffle(items)
        chosen += [(name, c) for c in items[:quota]]
        leftovers[name] = items[quota:]
    deficit = sum(quotas.values()) - len(chosen)
    while deficit > 0 and any(leftovers.values()):
        for name in quotas:
            if deficit > 0 and leftovers[name]:
                chosen.append((name, leftovers[name].pop()))
                deficit -= 1
    return chosen


# -- 4. the task set ------------------------------------------------------------------------------
class SyntheticWorld:
    """A fictional world as a `TaskSet`: corpus, train/test questions, strategies, demonstrators.

    Arguments (all knobs; same arguments, same world: corpus hash and tasks are a function of them):
        seed: drives every random choice (``random.Random(seed)``).
        size: ``"small"`` (~280 docs), ``"medium"`` (~930), ``"large"`` (~2800) or a number of people.
        max_hops: longest bridge chain (1-4); bridge questions are spread evenly over 1..max_hops.
        distractors: near-miss entities (one name syllable changed, half their facts shared) per real
            entity; they appear in the corpus but never in a question's chain or answer.
        redundancy: pages per entity (main + secondary ``:b``, ``:c``...), each stating all its facts.
        aliases: fraction of entities with an alias, used in some mentions; answers include it.
        n_train, n_test: questions per split (fewer when the world is too small to supply them).
        holdout: what a test question holds out. ``"anchor"`` (default): its named start entity is never
            the start of a train question, so copying that name from the question is the generalisation
            tested. ``"question"``: only the question is new (a relation chain, comparison or intersection
            no train question asks); its entities start other train questions, so an agent that learned
            the world's names can answer it (what a from-scratch prior lab model can reach on a CPU,
            docs/prior-lab.md).

    >>> w = SyntheticWorld(seed=1, size="small", n_train=20, n_test=5)
    >>> len(w.tasks("train")), len(w.tasks("test")), w.tasks("test")[0].id
    (20, 5, 'syn-s1-test-00000')
    """

    strategies = STRATEGIES
    query_styles = QUERY_STYLES

    def __init__(self, seed: int = 0, size: str | int = "medium", max_hops: int = 4, distractors: float = 0.3,
                 redundancy: int = 2, aliases: float = 0.3, n_train: int = 2000, n_test: int = 500,
                 holdout: Literal["anchor", "question"] = "anchor"):
        if holdout not in ("anchor", "question"):
            raise ValueError(f"holdout must be 'anchor' or 'question', got {holdout!r}")
        if not 1 <= max_hops <= 4:
            raise ValueError(f"max_hops must be 1-4, got {max_hops}")
        if not 1 <= redundancy <= 5:
            raise ValueError(f"redundancy (documents stating each fact) must be 1-5, got {redundancy}")
        for knob, value in (("distractors", distractors), ("aliases", aliases)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{knob} is a fraction of entities: set it within [0, 1], got {value}")
        if n_train < 0 or n_test < 0:
            raise ValueError("n_train and n_test must be >= 0")
        self.seed, self.size, self.max_hops, self.redundancy = seed, size, max_hops, redundancy
        self.holdout = holdout
        self.name = f"synthetic-s{seed}"
        rng = random.Random(seed)
        self.entities = generate_entities(rng, size, distractors, aliases)
        docs, self.facts = render_corpus(rng, self.entities, redundancy)
        self.corpus = Corpus(docs, name=self.name)
        self._tasks = self._make_tasks(rng, n_train, n_test)

    def _make_tasks(self, rng: random.Random, n_train: int, n_test: int) -> dict[str, list[Task]]:
        # Split on the question's anchor entity (the named start of a chain, the answer of an
        # intersection, both sides of a comparison), so test questions start from unseen entities.
        real = sorted(e.id for e in self.entities.values() if not e.distractor)
        fraction = min(0.5, max(0.1, n_test / max(1, n_train + n_test)))
        test_ids = set(rng.sample(real, round(fraction * len(real))))
        pools = candidate_questions(rng, self.entities, self.max_hops, test_ids)
        if self.holdout == "question":  # re-split every candidate by a hash of its key, not its anchor
            every = [(pool, c) for (_s, pool), cs in sorted(pools.items()) for c in cs]
            pools = defaultdict(list)
            for pool, (key, spec) in every:
                draw = random.Random(f"{self.seed}:split:{key}").random()
                pools[("test" if draw < fraction else "train", pool)].append((key, spec))
        out: dict[str, list[Task]] = {}
        seen: set[str] = set()
        for split, n in (("test", n_test), ("train", n_train)):
            quotas = {f"bridge-{h}": round(n * KIND_MIX["bridge"] / self.max_hops)
                      for h in range(1, self.max_hops + 1)}
            quotas["comparison"] = round(n * KIND_MIX["comparison"])
            quotas["intersection"] = n - sum(quotas.values())
            chosen = _sample({p: c for (s, p), c in pools.items() if s == split}, quotas, rng)
            rng.shuffle(chosen)
            tasks = []
            for pool, (key, spec) in chosen:
                kind = pool.split("-")[0]
                fields = build_task(self.entities, self.facts, kind, spec, random.Random(f"{self.seed}:{key}"),
                                    self.redundancy)
                if fields["question"] in seen:
                    continue
                seen.add(fields["question"])
                tasks.append(Task(id=f"syn-s{self.seed}-{split}-{len(tasks):05d}", split=split, **fields))
            out[split] = tasks
        return out

    def tasks(self, split: str) -> list[Task]:
        if split not in self._tasks:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return list(self._tasks[split])

    def classify_strategy(self, task: Task, calls: Sequence[ToolCall]) -> str:
        return classify_strategy(task, calls)

    def demonstrator(self, strategy: str, style: str) -> Demonstrator:
        return SyntheticDemonstrator(strategy, style)

    def lexicon(self) -> list[str]:
        """The world's atomic strings: every fictional word (names, aliases, currencies) and doc id.

        A tokenizer that keeps each of them whole turns copying a name or an id from a question, a
        search result or a page into copying one token (the prior lab's ``pretrain.name_tokens``).

        >>> w = SyntheticWorld(seed=1, size="small", n_train=0, n_test=0)
        >>> lex = w.lexicon()
        >>> "syn:person:0000" in lex, "Press" in lex, all(" " not in x for x in lex)
        (True, False, True)
        """
        common = {w for phrase in (*T.ORG_TYPES, *T.WORK_NOUNS, "The of") for w in phrase.split()}
        words: set[str] = set()
        for e in self.entities.values():
            for name in e.names:
                words.update(w for w in name.split() if w not in common)
            words.update(str(v) for v in e.attrs.values() if isinstance(v, str))
        return sorted(words) + list(self.corpus.ids)
