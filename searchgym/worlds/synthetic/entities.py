"""SyntheticWorld's entities and corpus: sections 1-2 of the world generator (see `world`).

Entities (people, cities, countries, organisations, works; near-miss distractors; aliases) with their
relations and attributes, drawn from a ``random.Random``, and their rendering into pages whose facts are
recorded with character offsets.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

import searchgym.worlds.synthetic.words as T
from searchgym.corpus.documents import Document
from searchgym.worlds.synthetic.strategies import entity_of

SIZES = {"small": 60, "medium": 200, "large": 600}  # number of people; other kinds scale with it
DISTRACTOR_KINDS = ("person", "city", "org", "work")  # a fake country would contradict capitals



@dataclass
class Entity:
    """One world entity. ``rels`` maps relation -> object entity id, ``attrs`` relation -> value."""

    id: str  # "person:0042"; its main page is "syn:person:0042"
    kind: str
    name: str
    alias: str | None = None
    flavour: str = ""
    rels: dict[str, str] = field(default_factory=dict)
    attrs: dict[str, int | str] = field(default_factory=dict)
    distractor: bool = False
    original: Entity | None = None  # the real entity a distractor imitates

    @property
    def names(self) -> list[str]:
        return [self.name] + ([self.alias] if self.alias else [])


def page_id(entity_id: str, page: int = 0) -> str:
    """Document id of an entity's page: the main page, then ``:b``, ``:c``... for secondary pages.

    >>> page_id("person:0042"), page_id("person:0042", 1)
    ('syn:person:0042', 'syn:person:0042:b')
    """
    return f"syn:{entity_id}" + (f":{chr(ord('a') + page)}" if page else "")


def counts_for(size: str | int) -> dict[str, int]:
    """Entities per kind for a size preset or a number of people.

    >>> counts_for("small")
    {'person': 60, 'city': 12, 'country': 4, 'org': 12, 'work': 20}
    """
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)} or a number of people (>= 20), got {size!r}")
        size = SIZES[size]
    if not isinstance(size, int) or size < 20:
        raise ValueError(f"size as a number of people must be an int >= 20, got {size!r}")
    return {"person": size, "city": max(6, size // 5), "country": max(3, size // 15),
            "org": max(6, size // 5), "work": max(8, size // 3)}


class _Namer:
    """Fresh fictional words; a word is never reused, so each name token identifies one entity."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: int | None = None, stem: str = "") -> str:
        for _ in range(1000):
            if stem:  # near miss: keep the first letters, change the ending
                w = (stem[:3] + T.make_word(self.rng, 1).lower()).capitalize()
            else:
                w = T.make_word(self.rng, syllables or self.rng.choice((2, 2, 3)))
            if w.lower() not in self.used and len(w) >= 5:  # short words are often real ones
                self.used.add(w.lower())
                return w
        raise RuntimeError("ran out of fictional names; lower size")


def _name(kind: str, namer: _Namer, rng: random.Random, like: Entity | None = None) -> str:
    """A fresh name for a kind; with ``like``, a near miss of that entity's distinctive word."""
    if kind == "person":
        first, last = like.name.split(" ", 1) if like else ("", "")
        if like and rng.random() < 0.5:
            return f"{first} {namer.word(stem=last)}"
        return f"{namer.word(2, stem=first)} {last}" if like else f"{namer.word(2)} {namer.word()}"
    if kind == "city":
        return namer.word(stem=like.name) if like else namer.word()
    if kind == "country":
        return namer.word(2) + rng.choice(("ia", "or", "an", "essa"))
    if kind == "org":
        if like:
            word, rest = like.name.split(" ", 1)
            return f"{namer.word(stem=word)} {rest}"
        return f"{namer.word()} {rng.choice(T.ORG_TYPES)}"
    # work: "The <Word> <Noun>" or "<Noun> of <Word>"; the word is its distinctive token
    noun, word = rng.choice(T.WORK_NOUNS), (namer.word(stem=_work_word(like.name)) if like else namer.word())
    return f"The {word} {noun}" if rng.random() < 0.5 else f"{noun} of {word}"


def _work_word(title: str) -> str:
    parts = title.split(" ")
    return parts[1] if parts[0] == "The" else parts[-1]


def _alias(e: Entity, namer: _Namer) -> str:
    if e.kind == "org":  # acronym, unless another entity already owns it
        acronym = "".join(w[0] for w in e.name.split()).upper()
        if acronym.lower() not in namer.used:
            namer.used.add(acronym.lower())
            return acronym
    if e.kind == "work":
        return _work_word(e.name)
    return namer.word(2)


# -- 1. the world: entities, relations, attributes -----------------------------------------------
def generate_entities(rng: random.Random, size: str | int, distractors: float, aliases: float
                      ) -> dict[str, Entity]:
    namer = _Namer(rng)
    by_kind: dict[str, list[Entity]] = {}
    for kind, n in counts_for(size).items():
        by_kind[kind] = [Entity("", kind, _name(kind, namer, rng)) for _ in range(n)]
        for e in by_kind[kind]:
            if rng.random() < aliases:
                e.alias = _alias(e, namer)
    real = {k: list(v) for k, v in by_kind.items()}
    for kind in DISTRACTOR_KINDS:
        for like in rng.sample(real[kind], round(distractors * len(real[kind]))):
            by_kind[kind].append(Entity("", kind, _name(kind, namer, rng, like), distractor=True, original=like))
    # Ids are assigned after shuffling so an id never tells a distractor from a real entity.
    for kind, items in by_kind.items():
        rng.shuffle(items)
        for i, e in enumerate(items):
            e.id = f"{kind}:{i:04d}"
    flavours = {"person": T.OCCUPATIONS, "city": T.CITY_FLAVOURS, "country": T.COUNTRY_FLAVOURS,
                "org": T.ORG_FLAVOURS, "work": T.GENRES}
    for kind, items in by_kind.items():
        for e in items:
            e.flavour = rng.choice(flavours[kind])
    _relate(rng, real, namer)
    for kind in DISTRACTOR_KINDS:  # overlapping facts: half copied from the imitated entity
        for e in by_kind[kind]:
            if e.distractor:
                _relate_distractor(rng, e, real)
    return {e.id: e for kind in by_kind for e in sorted(by_kind[kind], key=lambda x: x.id)}


def _relate(rng: random.Random, real: dict[str, list[Entity]], namer: _Namer) -> None:
    """Relations among real entities only, so no question's chain ever passes through a distractor."""
    countries, cities = real["country"], real["city"]
    for i, c in enumerate(cities):  # every country gets at least one city
        c.rels["in_country"] = (countries[i] if i < len(countries) else rng.choice(countries)).id
    populations = rng.sample(range(20, 9000), len(cities))
    for c, p in zip(cities, populations):
        c.attrs["population"] = p * 100
    for k in countries:
        k.rels["capital"] = rng.choice([c for c in cities if c.rels["in_country"] == k.id]).id
        k.attrs["currency"] = namer.word(2).lower()
    for p in real["person"]:
        p.rels["born_in"] = rng.choice(cities).id
        p.rels["works_for"] = rng.choice(real["org"]).id
        p.attrs["birth_year"] = rng.randint(1650, 1960)
    for o in real["org"]:
        o.rels["based_in"] = rng.choice(cities).id
        o.attrs["founding_year"] = year = rng.randint(1680, 1990)
        old_enough = [p for p in real["person"] if year - 80 <= p.attrs["birth_year"] <= year - 20]
        o.rels["founded_by"] = rng.choice(old_enough or real["person"]).id
    for w in real["work"]:
        author = rng.choice(real["person"])
        w.rels["created_by"] = author.id
        w.attrs["year"] = year = author.attrs["birth_year"] + rng.randint(20, 60)
        existing = [o for o in real["org"] if o.attrs["founding_year"] <= year]
        w.rels["published_by"] = rng.choice(existing or real["org"]).id


def _relate_distractor(rng: random.Random, e: Entity, real: dict[str, list[Entity]]) -> None:
    like = e.original
    for rel, target in like.rels.items():
        kind = T.RELATIONS[e.kind][rel]
        e.rels[rel] = target if rng.random() < 0.5 else rng.choice(real[kind]).id
    for rel, value in like.attrs.items():
        e.attrs[rel] = value + rng.choice((-1, 1)) * rng.randint(1, 5) * (100 if rel == "population" else 1)


# -- 2. the corpus: pages per entity, facts recorded with their character offsets ----------------
def render_corpus(rng: random.Random, entities: dict[str, Entity], redundancy: int
                  ) -> tuple[list[Document], dict[tuple[str, str], list[tuple[str, int]]]]:
    """Every entity gets a main page and ``redundancy - 1`` secondary pages, each stating all its facts;
    main pages also list inverse mentions (natives of a city, staff of an organisation...).

    Returns the documents and ``facts[(subject id, relation)] = [(doc id, end offset of the sentence)]``,
    subject pages first, so questions can list evidence and tell which facts fit in a search snippet.
    """
    inverse: dict[tuple[str, str], list[Entity]] = defaultdict(list)
    for e in entities.values():
        for rel, target in e.rels.items():
            inverse[(target, rel)].append(e)
    docs: list[Document] = []
    facts: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)

    def ref(e: Entity, alias_p: float) -> str:
        return e.alias if e.alias and rng.random() < alias_p else e.name

    for e in entities.values():
        for page in range(redundancy):
            doc_id = page_id(e.id, page)
            aka = f", also known as {e.alias}," if e.alias and (page == 0 or rng.random() < 0.5) else ""
            lead = rng.choice(T.LEADS[e.kind]).format(name=e.name, aka=aka, flavour=e.flavour,
                                                      a="an" if e.flavour[0] in "aeiou" else "a")
            if lead.endswith(",."):
                lead = lead[:-2] + "."
            sentences: list[tuple[str, list[tuple[str, str]]]] = [(lead, [])]
            items = [(rel, entities[t]) for rel, t in e.rels.items()] + list(e.attrs.items())
            rng.shuffle(items)
            for rel, obj in items:
                o = ref(obj, 0.35) if isinstance(obj, Entity) else str(obj)
                text = rng.choice(T.FACT_TEMPLATES[rel]).format(s=ref(e, 0.2 if page == 0 else 0.5), o=o)
                sentences.append((text[0].upper() + text[1:], [(e.id, rel)]))
            for rel in T.BACKLINK_TEMPLATES if page == 0 else ():
                members = sorted(inverse.get((e.id, rel), []), key=lambda x: x.id)
                if members:
                    names = [ref(m, 0.35) for m in members]
                    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
                    text = rng.choice(T.BACKLINK_TEMPLATES[rel]).format(o=e.name, items=listed)
                    sentences.append((text, [(m.id, rel) for m in members]))
            text = ""
            for sentence, stated in sentences:
                text += (" " if text else "") + sentence
                for fact in stated:
                    facts[fact].append((doc_id, len(text)))
            title = e.name if page == 0 else rng.choice(T.SECONDARY_TITLES).format(name=e.name)
            docs.append(Document(doc_id, title, text, {"entity": e.id, "kind": e.kind, "page": page,
                                                       "distractor": e.distractor}))
    for (subject, _rel), places in facts.items():  # the subject's own pages first, main page first
        places.sort(key=lambda p: (entity_of(p[0]) != page_id(subject), p[0]))
    return docs, dict(facts)
