"""WikiFactbook: verified multi-hop questions over Wikipedia leads + CIA World Factbook passages.

Questions come from the Factbook's structure ("the currency of the country whose capital is X": capital
passage -> exchange-rates passage), so every answer is extracted deterministically from a passage and
every hop's evidence is checked to be in the corpus; ambiguous extractions are dropped, not guessed.
The generated set is versioned and saved to corpora/wikifactbook-questions-v0.jsonl with the source
package versions; a mismatch with the installed packages regenerates it (with a warning).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
import unicodedata
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from searchgym.corpus.documents import MAX_DOC_CHARS, Corpus, Document, atomic_write
from searchgym.corpus.sources import SOURCE_VERSIONS, load_source
from searchgym.envs.rewards import normalize_answer
from searchgym.tasks import Step, Task, ToolCall

QUESTION_SET_VERSION = "v0"
DEFAULT_QUESTIONS = Path(__file__).resolve().parents[2] / "corpora" / f"wikifactbook-questions-{QUESTION_SET_VERSION}.jsonl"
STRATEGIES = ("forward", "question_first", "wiki_bridge")
QUERY_STYLES = ("keyword", "natural")
MAX_CALLS = 12  # demonstrators answer at the latest on this call
UNKNOWN = "unknown"  # what a demonstrator answers when it never reached the answer passage
TEST_FRACTION = 0.2


# == 1. Extractors: one passage text in, one unambiguous value out (None when in doubt) ==============
_LOWER_OK = {"de", "la", "of", "el", "al", "es", "du", "da", "do", "dos", "das", "the", "di", "del"}


def parse_capital(text: str) -> tuple[str, list[str]] | None:
    """Capital name (and a local-name alias) from the Capital ``name`` subfield.

    >>> parse_capital("Tripoli (Tarabulus)")
    ('Tripoli', ['Tarabulus'])
    >>> parse_capital("Suva (on Viti Levu)"), parse_capital("Gitega (political capital), Bujumbura (commercial capital)")
    (('Suva', []), None)
    >>> parse_capital("Chisinau in Romanian (Kishinev in Russian)") is None, parse_capital("Baku (Baki, Baky)")
    (True, ('Baku', []))
    """
    m = re.fullmatch(r"(?P<name>[A-Z][^;()\[\]]*?)(?: \((?P<alt>[^()]*)\))?", text.strip())
    if not m or not _is_proper_name(m["name"]):
        return None
    alt = m["alt"] or ""
    simple = alt and not re.search(r"[,/]", alt) and _is_proper_name(alt) and len(alt.split()) <= 3
    aliases = [alt] if simple else []
    return m["name"], aliases


def _is_proper_name(text: str) -> bool:
    words = text.replace(",", " ").split()
    return bool(words) and all(w[0].isupper() or w in _LOWER_OK for w in words) and "capital" not in text.lower()


def parse_currency(text: str) -> tuple[str, str] | None:
    """(currency name as written, ISO code) from the Exchange rates ``Currency`` subfield.

    >>> parse_currency("Kenyan shillings (KES) per US dollar -")
    ('Kenyan shillings', 'KES')
    >>> parse_currency("Belarusian rubles (BYB/BYR) per US dollar -") is None
    True
    """
    m = re.fullmatch(r"(?P<name>[^()]+?) \((?P<iso>[A-Z]{3})\) per US dollar\b.*", text.strip())
    return (m["name"], m["iso"]) if m else None


def parse_official_language(text: str) -> str | None:
    """The single language marked "(official)"; None when there are several or the wording is vaguer.

    >>> parse_official_language("Spanish (official) 95%, English 5%")
    'Spanish'
    >>> parse_official_language("English (official), Kiswahili (official)") is None
    True
    """
    found = re.findall(r"([A-Z][\w'-]*(?: [A-Z][\w'-]*)*)(?: only)? \(official\)", text)
    return found[0] if len(found) == 1 and text.lower().count("official") == 1 else None


def parse_borders(text: str) -> list[tuple[str, float]] | None:
    """(neighbour, km) pairs of the ``border countries`` subfield; None if any item does not parse.

    >>> parse_borders("Ethiopia 867 km; Somalia 684 km; South Sudan 1,317 km")
    [('Ethiopia', 867.0), ('Somalia', 684.0), ('South Sudan', 1317.0)]
    >>> parse_borders("Canada 8,891 km (including 2,475 km with Alaska); Mexico 3,111 km") is None
    True
    """
    out = []
    for item in re.split(r"[;,] (?=[A-Z])", text.strip()):
        m = re.fullmatch(r"(?P<name>[^\d()]+?) (?P<km>\d[\d,]*(?:\.\d+)?) km", item.strip())
        if not m:
            return None
        out.append((m["name"], float(m["km"].replace(",", ""))))
    return out or None


def parse_highest_point(text: str) -> str | None:
    """Name of the highest point from the Elevation ``highest point`` subfield.

    >>> parse_highest_point("Mount Kenya 5,199 m"), parse_highest_point("Mont Blanc 4,810")
    ('Mount Kenya', None)
    """
    m = re.fullmatch(r"(?P<name>[^\d()]+?) -?\d[\d,.]* m", text.strip())
    return m["name"] if m else None


def parse_independence(text: str) -> str | None:
    """Independence date when the field is a single "D Month YYYY (from X)".

    >>> parse_independence("12 December 1963 (from the UK)")
    '12 December 1963'
    >>> parse_independence("4 July 1776 (declared independence); 3 September 1783 (recognized)") is None
    True
    """
    m = re.fullmatch(r"(?P<date>\d{1,2} [A-Z][a-z]+ \d{3,4}) \(from [^()]+\)", text.strip())
    return m["date"] if m else None


def parse_landlocked(text: str) -> bool | None:
    """True for "0 km (landlocked)", False for a positive coastline length, None otherwise.

    >>> parse_landlocked("0 km (landlocked)"), parse_landlocked("536 km"), parse_landlocked("see note")
    (True, False, None)
    """
    m = re.match(r"(\d[\d,]*(?:\.\d+)?) km", text.strip())
    if not m:
        return None
    km = float(m[1].replace(",", ""))
    return True if km == 0 and "landlocked" in text else (False if km > 0 else None)


def strip_accents(text: str) -> str:
    """Remove diacritics (NFKD, drop combining marks), the form many agents type.

    >>> strip_accents("Lomé, Brasília")
    'Lome, Brasilia'
    """
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def contains(text: str, phrase: str) -> bool:
    """Whole-word containment after answer normalisation (accents, case, punctuation, articles).

    >>> contains("Togo. Capital: name: Lomé; ...", "lome"), contains("Kenyan shillings", "Kenya")
    (True, False)
    """
    p = normalize_answer(phrase)
    return bool(p) and f" {p} " in f" {normalize_answer(text)} "


def answer_forms(display: str, *extra: str) -> tuple[str, ...]:
    """Display form first, then accent-free form and aliases, without duplicates.

    >>> answer_forms("Lomé")
    ('Lomé', 'Lome')
    """
    out: list[str] = []
    for form in (display, strip_accents(display), *extra):
        if form and form not in out:
            out.append(form)
    return tuple(out)


# == 2. The Factbook as countries: the fields question templates read ================================
@dataclass
class Country:
    code: str
    name: str
    dependency: bool
    docs: dict[tuple[str, str], Document]  # (section, field) -> passage

    def part(self, section: str, field: str, sub: str = "") -> tuple[Document, str] | None:
        doc = self.docs.get((section, field))
        if doc is None or sub not in doc.meta["parts"]:
            return None
        return doc, doc.meta["parts"][sub]


def countries_of(documents: Sequence[Document]) -> dict[str, Country]:
    out: dict[str, Country] = {}
    for d in documents:
        if d.meta.get("source") != "factbook":
            continue
        c = out.setdefault(d.meta["code"], Country(d.meta["code"], d.meta["country"], d.meta["dependency"], {}))
        c.docs.setdefault((d.meta["section"], d.meta["field"]), d)
    return out


# == 3. Templates ======================================================================================
# Final-hop vocabulary per template: a first query using any of these words asked for the answer
# directly (question_first); a forward agent first resolves the bridge entity and never uses them.
TARGET_TERMS = {
    "capital_currency": ("currency", "exchange"), "capital_language": ("language", "languages"),
    "capital_internet_code": ("internet", "domain"), "capital_highest_point": ("highest", "elevation"),
    "capital_independence": ("independence", "independent"), "border_capital": ("capital",),
    "border_currency": ("currency", "exchange"), "landlocked_count": ("landlocked", "coastline"),
    "internet_code_capital": ("capital",),
}

# Queries (keyword, natural) a demonstrator uses to reach one field of a country, with reformulations.
_FIELD_QUERIES = {
    ("Government", "Capital"): (
        ["{c} capital", "{c} capital name", "{c} capital city"],
        ["What is the capital of {c}?", "Which city is the capital of {c}?", "What is the name of the capital of {c}?"]),
    ("Economy", "Exchange rates"): (
        ["{c} exchange rates currency", "{c} currency", "{c} currency per US dollar"],
        ["What currency does {c} use?", "What is the exchange rate of {c}'s currency?",
         "What are the exchange rates of the {c} currency per US dollar?"]),
    ("People and Society", "Languages"): (
        ["{c} languages official", "{c} languages", "{c} official language"],
        ["What languages are spoken in {c}?", "What is the official language of {c}?",
         "Which languages are official in {c}?"]),
    ("Communications", "Internet country code"): (
        ["{c} internet country code", "{c} internet domain", "{c} country code"],
        ["What is the internet country code of {c}?", "Which internet country code does {c} use?",
         "Which top-level domain does {c} use?"]),
    ("Geography", "Elevation"): (
        ["{c} elevation highest point", "{c} highest point", "{c} highest mountain"],
        ["What is the highest point in {c}?", "What is the highest mountain of {c}?",
         "What is the highest point of elevation in {c}?"]),
    ("Government", "Independence"): (
        ["{c} independence", "{c} independence date", "{c} independence day"],
        ["When did {c} become independent?", "On what date did {c} gain independence?",
         "What is the independence date of {c}?"]),
    ("Geography", "Land boundaries"): (
        ["{c} land boundaries border countries", "{c} borders", "{c} border countries km"],
        ["Which countries border {c}?", "What are the land boundaries of {c}?", "Which border countries does {c} have?"]),
    ("Geography", "Coastline"): (
        ["{c} coastline", "{c} coastline km", "{c} landlocked"],
        ["How long is the coastline of {c}?", "Does {c} have a coastline?", "Is {c} landlocked?"]),
}


def _hop(doc: Document, needs: str, keyword: list[str], natural: list[str]) -> dict:
    return {"doc": doc.id, "needs": needs, "keyword": keyword, "natural": natural}


def _field_hop(country: Country, key: tuple[str, str], needs: str) -> dict:
    kw, nat = _FIELD_QUERIES[key]
    return _hop(country.docs[key], needs, [q.format(c=country.name) for q in kw],
                [q.format(c=country.name) for q in nat])


def _capital_hop(country: Country, capital: str) -> dict:
    return _hop(country.docs[("Government", "Capital")], capital,
                [f"{capital} capital", f"capital name {capital}", capital],
                [f"Which country's capital is {capital}?", f"{capital} is the capital of which country?",
                 f"What country has the capital named {capital}?"])


@dataclass
class _Draft:
    template: str
    code: str
    question: str
    question_keyword: str
    answers: tuple[str, ...]
    hops: list[dict]
    bridge: str
    countries: list[str]
    kind: str = "bridge"
    wiki_hop: dict | None = None


_CAPITAL_TEMPLATES = {
    # template: (field, subfield, extractor -> (display, aliases) | None, question, keyword question)
    "capital_currency": (("Economy", "Exchange rates"), "Currency",
                         lambda t: (lambda p: p and (p[0], [_singular(p[0]), p[1]]))(parse_currency(t)),
                         "What is the currency of the country whose capital is {x}?", "currency country capital {x}"),
    "capital_language": (("People and Society", "Languages"), "Languages",
                         lambda t: (lambda p: p and (p, []))(parse_official_language(t)),
                         "What is the official language of the country whose capital is {x}?",
                         "official language country capital {x}"),
    "capital_internet_code": (("Communications", "Internet country code"), "",
                              lambda t: (t, []) if re.fullmatch(r"\.[a-z]{2}", t) else None,
                              "What is the internet country code of the country whose capital is {x}?",
                              "internet country code capital {x}"),
    "capital_highest_point": (("Geography", "Elevation"), "highest point",
                              lambda t: (lambda p: p and (p, []))(parse_highest_point(t)),
                              "What is the highest point of the country whose capital is {x}?",
                              "highest point country capital {x}"),
    "capital_independence": (("Government", "Independence"), "",
                             lambda t: (lambda p: p and (p, [_us_date(p)]))(parse_independence(t)),
                             "On what date did the country whose capital is {x} gain independence?",
                             "independence date country capital {x}"),
}


def _singular(name: str) -> str:
    """Singular alias of a plural currency name (English plurals only; "leke" stays "leke").

    >>> _singular("Kenyan shillings"), _singular("baht")
    ('Kenyan shilling', 'baht')
    """
    head, _, last = name.rpartition(" ")
    if last.endswith("s") and not last.endswith("ss") and len(last) > 3:
        last = last[:-1]
    return f"{head} {last}".strip()


def _us_date(date: str) -> str:
    """The US spelling of a Factbook date, as an answer alias.

    >>> _us_date("12 December 1963")
    'December 12, 1963'
    """
    day, month, year = date.split()
    return f"{month} {day}, {year}"


def _capitals(countries: dict[str, Country]) -> dict[str, tuple[str, list[str]]]:
    """code -> (capital, aliases) for capitals that name exactly one entity and do not give it away."""
    parsed = {}
    for code, c in countries.items():
        got = c.part("Government", "Capital", "name")
        if got and (cap := parse_capital(got[1])):
            parsed[code] = cap
    uses = Counter(normalize_answer(cap) for cap, _ in parsed.values())
    return {code: (cap, aliases) for code, (cap, aliases) in parsed.items()
            if uses[normalize_answer(cap)] == 1  # "Kingston": Jamaica and Norfolk Island
            and not contains(cap, countries[code].name) and not contains(countries[code].name, cap)}


def _name_index(countries: dict[str, Country]) -> dict[str, str]:
    """Normalised name (short/long form) -> code, without names two entities share."""
    seen: dict[str, set[str]] = defaultdict(set)
    for code, c in countries.items():
        seen[normalize_answer(c.name)].add(code)
        doc = c.docs.get(("Government", "Country name"))
        for form in ("conventional short form", "conventional long form"):
            value = doc.meta["parts"].get(form, "") if doc else ""
            if value and value.lower() != "none":
                seen[normalize_answer(value)].add(code)
    return {name: next(iter(codes)) for name, codes in seen.items() if len(codes) == 1}


def _draft_capital_questions(countries, capitals, wiki) -> list[_Draft]:
    drafts = []
    for code, (cap, cap_aliases) in sorted(capitals.items()):
        c = countries[code]
        if c.dependency:
            continue
        wiki_doc = wiki.get(f"wiki:{cap}")
        wiki_hop = None
        if wiki_doc is not None and contains(wiki_doc.text, c.name):  # the article names its country
            wiki_hop = _hop(wiki_doc, c.name, [cap, f"{cap} city", f"{cap} capital city"],
                           [f"What is {cap}?", f"Tell me about the city of {cap}.", f"Where is {cap}?"])
        for template, (key, sub, extract, question, keyword) in _CAPITAL_TEMPLATES.items():
            got = c.part(*key, sub)
            value = extract(got[1]) if got else None
            if not value:
                continue
            display, aliases = value
            drafts.append(_Draft(template, code, question.format(x=cap), keyword.format(x=cap),
                                 answer_forms(display, *aliases), [_capital_hop(c, cap), _field_hop(c, key, display)],
                                 bridge=cap, countries=[code], wiki_hop=wiki_hop))
        # the reverse direction: a unique internet code -> the capital
        got = c.part("Communications", "Internet country code")
        if got and re.fullmatch(r"\.[a-z]{2}", tld := got[1]):
            code_hop = _hop(c.docs[("Communications", "Internet country code")], tld,
                            [f"internet country code {tld}", f"{tld} domain", tld],
                            [f"Which country uses the internet domain {tld}?", f"Whose internet country code is {tld}?",
                             f"Which country has the internet country code {tld}?"])
            drafts.append(_Draft("internet_code_capital", code,
                                 f"What is the capital of the country whose internet country code is {tld}?",
                                 f"capital country internet code {tld}", answer_forms(cap, *cap_aliases),
                                 [code_hop, _field_hop(c, ("Government", "Capital"), cap)], bridge=tld, countries=[code]))
    return drafts


def _draft_border_questions(countries, capitals, names) -> list[_Draft]:
    drafts = []
    for code, c in sorted(countries.items()):
        got = c.part("Geography", "Land boundaries", "border countries")
        borders = parse_borders(got[1]) if got and not c.dependency else None
        if not borders:
            continue
        codes = [names.get(normalize_answer(n)) for n, _ in borders]
        boundary_hop = _field_hop(c, ("Geography", "Land boundaries"), "")
        # (a) the neighbour with the longest border, when it is strictly the longest
        ranked = sorted(zip(borders, codes), key=lambda bc: -bc[0][1])
        (top_name, top_km), top_code = ranked[0]
        unique_top = len(ranked) == 1 or ranked[1][0][1] < top_km
        if unique_top and top_code and len(set(codes)) == len(codes):
            n = countries[top_code]
            hop1 = {**boundary_hop, "needs": top_name}
            if top_code in capitals:
                cap, aliases = capitals[top_code]
                drafts.append(_Draft(
                    "border_capital", code,
                    f"What is the capital of the country that shares the longest land border with {c.name}?",
                    f"capital of longest border neighbour of {c.name}", answer_forms(cap, *aliases),
                    [hop1, _field_hop(n, ("Government", "Capital"), cap)], bridge=c.name, countries=[code, top_code]))
            cur = n.part("Economy", "Exchange rates", "Currency")
            if cur and (parsed := parse_currency(cur[1])):
                drafts.append(_Draft(
                    "border_currency", code,
                    f"What currency is used by the country that shares the longest land border with {c.name}?",
                    f"currency of longest border neighbour of {c.name}",
                    answer_forms(parsed[0], _singular(parsed[0]), parsed[1]),
                    [hop1, _field_hop(n, ("Economy", "Exchange rates"), parsed[0])], bridge=c.name,
                    countries=[code, top_code]))
        # (b) how many neighbours are landlocked (at most 4 neighbours: the demonstrator's call budget)
        if all(codes) and len(set(codes)) == len(codes) <= 4:
            hops, flags = [{**boundary_hop, "needs": borders[0][0]}], []
            for ncode in codes:
                coast = countries[ncode].part("Geography", "Coastline")
                flag = parse_landlocked(coast[1]) if coast else None
                if flag is None:
                    break
                flags.append(flag)
                hops.append(_field_hop(countries[ncode], ("Geography", "Coastline"),
                                       "landlocked" if flag else coast[1].split(" km")[0]))
            else:
                count = sum(flags)
                drafts.append(_Draft(
                    "landlocked_count", code, f"How many of the countries bordering {c.name} are landlocked?",
                    f"landlocked neighbours of {c.name}", (str(count), _NUMBER_WORDS[count]), hops,
                    bridge=c.name, countries=[code, *codes], kind="count"))
    return drafts


_NUMBER_WORDS = ("zero", "one", "two", "three", "four")


# == 4. Verification, splits and the question set file ===============================================
def verify(task: Task, by_id: dict[str, Document]) -> bool:
    """Every evidence passage exists unchunked and contains what its hop needs; extractive answers
    appear in the final passage of every chain."""
    hops = task.meta["hops"] + ([task.meta["wiki_hop"]] if task.meta.get("wiki_hop") else [])
    for hop in hops:
        doc = by_id.get(hop["doc"])
        if doc is None or len(doc.text) > MAX_DOC_CHARS or (hop["needs"] and not contains(doc.text, hop["needs"])):
            return False
    if task.kind == "count":
        return True
    return all(contains(by_id[chain[-1]].text, task.answers[0]) for chain in task.evidence)


def split_of(code: str, seed: int = 0, test_fraction: float = TEST_FRACTION) -> str:
    """Deterministic country-level split: all questions about one country land on the same side.

    >>> split_of("ke", 0) == split_of("ke", 0)
    True
    """
    h = int(hashlib.sha256(f"wikifactbook:{seed}:{code}".encode()).hexdigest(), 16)
    return "test" if h % 10_000 < test_fraction * 10_000 else "train"


def generate_questions(documents: Sequence[Document], seed: int = 0) -> list[Task]:
    """All verified questions the documents support (needs the factbook passages, and the Wikipedia
    leads for the wiki_bridge chains)."""
    by_id = {d.id: d for d in documents}
    countries = countries_of(documents)
    capitals = _capitals(countries)
    wiki = {d.id: d for d in documents if d.meta.get("source") == "wikipedia"}
    drafts = _draft_capital_questions(countries, capitals, wiki)
    drafts += _draft_border_questions(countries, capitals, _name_index(countries))
    tasks = []
    for d in drafts:
        chains = [tuple(h["doc"] for h in d.hops)]
        strategies = ["forward", "question_first"]
        if d.wiki_hop:
            chains.append((d.wiki_hop["doc"], d.hops[-1]["doc"]))
            strategies.append("wiki_bridge")
        meta = {"template": d.template, "subject": d.code, "countries": d.countries, "bridge": d.bridge,
                "target_terms": list(TARGET_TERMS[d.template]), "question_keyword": d.question_keyword,
                "hops": d.hops, "wiki_hop": d.wiki_hop, "version": QUESTION_SET_VERSION}
        task = Task(id=f"wf-{QUESTION_SET_VERSION}-{d.template}-{d.code}", question=d.question, answers=d.answers,
                    evidence=tuple(chains), difficulty=min(4, len(d.hops)), kind=d.kind,
                    split=split_of(d.code, seed), strategies=tuple(strategies), meta=meta)
        if verify(task, by_id):
            tasks.append(task)
    return tasks


def write_questions(tasks: Sequence[Task], path: str | Path = DEFAULT_QUESTIONS) -> Path:
    """Header record (version, source package versions, counts) then one `Task.to_json` per line."""
    header = {"header": True, "name": "wikifactbook-questions", "version": QUESTION_SET_VERSION,
              "source_versions": SOURCE_VERSIONS, "count": len(tasks),
              "templates": dict(sorted(Counter(t.meta["template"] for t in tasks).items()))}
    lines = [json.dumps(header, ensure_ascii=False)] + [json.dumps(t.to_json(), ensure_ascii=False) for t in tasks]
    atomic_write(path, ("\n".join(lines) + "\n").encode("utf-8"))
    os.chmod(path, 0o644)  # a shipped data file: readable by everyone (atomic_write's temp file is 0600)
    return Path(path)


def read_questions(path: str | Path = DEFAULT_QUESTIONS) -> tuple[dict, list[Task]]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows or not rows[0].get("header"):
        raise ValueError(f"{path}: the first line must be the header record; regenerate the file with "
                         "`python -m searchgym.worlds.wikifactbook`")
    return rows[0], [Task.from_json(r) for r in rows[1:]]


# == 5. Strategies: classifier and demonstrators ======================================================
def classify_strategy(task: Task, calls: Sequence[ToolCall]) -> str:
    """Deterministic label of an action trace, first rule that fires:

    1. ``wiki_bridge``: it opened a Wikipedia article (``wiki:`` id) before answering;
    2. ``question_first``: its first search already asks for the final attribute (a target term);
    3. ``forward``: its first search names the bridge entity (the capital, or the bordered country);
    4. ``other``.
    """
    opened = [c.arguments.get("doc_id", "") for c in calls if c.name == "open"]
    queries = [str(c.arguments.get("query", "")) for c in calls if c.name == "search"]
    if any(str(d).startswith("wiki:") for d in opened):
        return "wiki_bridge"
    if not queries:
        return "other"
    words = set(normalize_answer(queries[0]).split())
    if words & set(task.meta.get("target_terms", ())):
        return "question_first"
    if contains(queries[0], task.meta.get("bridge", "")):
        return "forward"
    return "other"


@dataclass(frozen=True)
class FactbookDemonstrator:
    """Scripted policy: search for the next unread hop, open its passage once a search shows it,
    reformulate when it does not show, answer once every hop is read (``"unknown"`` if it gives up)."""

    strategy: str
    style: str
    max_calls: int = MAX_CALLS

    def __call__(self, task: Task, history: Sequence[Step]) -> ToolCall:
        hops = list(task.meta["hops"])
        if self.strategy == "wiki_bridge":
            if not task.meta.get("wiki_hop"):
                raise ValueError(f"task {task.id} has no wiki_bridge solution; pick a strategy from task.strategies")
            hops = [task.meta["wiki_hop"], hops[-1]]
        searched = {s.call.arguments.get("query") for s in history if s.call.name == "search"}
        opened = {s.call.arguments.get("doc_id") for s in history if s.call.name == "open" and not s.error}
        seen = {d for s in history for d in s.shown}
        if len(history) >= self.max_calls - 1:
            return _answer(task if all(h["doc"] in opened for h in hops) else None)
        if self.strategy == "question_first" and not searched:
            return ToolCall("search", {"query": task.question if self.style == "natural" else task.meta["question_keyword"]})
        for hop in hops:
            if hop["doc"] in opened:
                continue
            if hop["doc"] in seen:
                return ToolCall("open", {"doc_id": hop["doc"]})
            for query in hop[self.style]:
                if query not in searched:
                    return ToolCall("search", {"query": query})
            return _answer(None)  # every reformulation failed to surface this hop
        return _answer(task)


def _answer(task: Task | None) -> ToolCall:
    return ToolCall("answer", {"text": task.answers[0] if task else UNKNOWN})


# == 6. The task set ==================================================================================
class WikiFactbook:
    """Wikipedia leads + Factbook passages indexed together, with the verified question set.

    Args:
        split_seed: which countries are held out for test (~20%, whole countries at a time).
        questions_path: the versioned question file; regenerated in memory (with a warning) when its
            versions differ from the installed packages or its evidence is not in the corpus.
        documents: the corpus documents (default: ``load_source("wikifactbook")``).
    """

    name = "wikifactbook"
    strategies = STRATEGIES
    query_styles = QUERY_STYLES

    def __init__(self, split_seed: int = 0, *, questions_path: str | Path | None = DEFAULT_QUESTIONS,
                 documents: Sequence[Document] | None = None, test_fraction: float = TEST_FRACTION):
        documents = list(documents) if documents is not None else load_source("wikifactbook")
        self.corpus = Corpus(documents, name="wikifactbook")
        self.split_seed = split_seed
        tasks = self._load(questions_path, documents)
        self._tasks = [dataclasses.replace(t, split=split_of(t.meta["subject"], split_seed, test_fraction))
                       for t in tasks]

    def _load(self, path: str | Path | None, documents: Sequence[Document]) -> list[Task]:
        if path is not None and Path(path).exists():
            header, tasks = read_questions(path)
            by_id = {d.id: d for d in documents}
            if header.get("version") != QUESTION_SET_VERSION or header.get("source_versions") != SOURCE_VERSIONS:
                why = (f"it was built from {header.get('source_versions')} ({header.get('version')}), installed are "
                       f"{SOURCE_VERSIONS} ({QUESTION_SET_VERSION})")
            elif not all(d in by_id for t in tasks for d in t.evidence_ids):
                why = "some evidence ids are not in this corpus"
            else:
                return tasks
            warnings.warn(f"{path}: {why}; regenerating the questions (rewrite the file with "
                          "`python -m searchgym.worlds.wikifactbook`)", stacklevel=3)
        return generate_questions(documents)

    def tasks(self, split: str) -> list[Task]:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return [t for t in self._tasks if t.split == split]

    def classify_strategy(self, task: Task, calls: Sequence[ToolCall]) -> str:
        return classify_strategy(task, calls)

    def demonstrator(self, strategy: str, style: str) -> FactbookDemonstrator:
        if strategy not in STRATEGIES or style not in QUERY_STYLES:
            raise ValueError(f"unknown strategy/style {strategy!r}/{style!r}; strategies: {STRATEGIES}, "
                             f"styles: {QUERY_STYLES}")
        return FactbookDemonstrator(strategy, style)


def main(argv: Sequence[str] = ()) -> None:
    """Regenerate the versioned question file: ``python -m searchgym.worlds.wikifactbook [PATH]``."""
    path = Path(argv[0]) if argv else DEFAULT_QUESTIONS
    tasks = generate_questions(load_source("wikifactbook"))
    write_questions(tasks, path)
    print(f"wrote {len(tasks)} questions to {path}: {dict(Counter(t.meta['template'] for t in tasks))}, "
          f"splits {dict(Counter(t.split for t in tasks))}")


if __name__ == "__main__":
    main(sys.argv[1:])
