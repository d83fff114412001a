"""WikiFactbook's question set: templates over the Factbook's structure, verification, the country-level
split, and the versioned question file.

Questions come from the Factbook's structure ("the currency of the country whose capital is X": capital
passage -> exchange-rates passage), so every answer is extracted deterministically from a passage and
every hop's evidence is checked to be in the corpus; ambiguous extractions are dropped, not guessed.

The set is versioned. A checkout ships it as ``corpora/wikifactbook-questions-v0.jsonl`` (`DEFAULT_QUESTIONS`,
with the source package versions in its header); where that file is absent (an installed package), stale or
for other documents, `question_set` generates the set once and caches it under the user cache
(``$SEARCHGYM_CACHE/questions``, default ``~/.cache/searchgym/questions``), never in the source tree.
``python -m searchgym.worlds.wikifactbook [PATH]`` regenerates it: into the cache, or to PATH (pass the
``corpora/`` path to refresh the shipped file).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from searchgym.corpus.documents import MAX_DOC_CHARS, Corpus, Document
from searchgym.corpus.sources import SOURCE_VERSIONS, load_source
from searchgym.paths import cache_root
from searchgym.tasks import Task
from searchgym.util.files import atomic_write
from searchgym.util.text import normalize_answer
from searchgym.worlds.wikifactbook.extract import (
    Country,
    _capitals,
    _name_index,
    _singular,
    _us_date,
    answer_forms,
    contains,
    countries_of,
    parse_borders,
    parse_currency,
    parse_highest_point,
    parse_independence,
    parse_landlocked,
    parse_official_language,
)

log = logging.getLogger(__name__)

QUESTION_SET_VERSION = "v0"
# The set a checkout ships (an installed wheel has no corpora/ folder): read, never written, by the world.
DEFAULT_QUESTIONS = Path(__file__).resolve().parents[3] / "corpora" / f"wikifactbook-questions-{QUESTION_SET_VERSION}.jsonl"
TEST_FRACTION = 0.2


# == 1. Templates ======================================================================================
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


# == 2. Verification, splits and the question set file ===============================================
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


def write_questions(tasks: Sequence[Task], path: str | Path) -> Path:
    """Header record (version, source package versions, counts) then one `Task.to_json` per line."""
    header = {"header": True, "name": "wikifactbook-questions", "version": QUESTION_SET_VERSION,
              "source_versions": SOURCE_VERSIONS, "count": len(tasks),
              "templates": dict(sorted(Counter(t.meta["template"] for t in tasks).items()))}
    lines = [json.dumps(header, ensure_ascii=False)] + [json.dumps(t.to_json(), ensure_ascii=False) for t in tasks]
    atomic_write(path, ("\n".join(lines) + "\n").encode("utf-8"))
    os.chmod(path, 0o644)  # readable by everyone, whatever the umask (a shipped file, a shared cache)
    return Path(path)


def read_questions(path: str | Path = DEFAULT_QUESTIONS) -> tuple[dict, list[Task]]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows or not rows[0].get("header"):
        raise ValueError(f"{path}: the first line must be the header record; regenerate the file with "
                         f"`python -m searchgym.worlds.wikifactbook {path}`")
    return rows[0], [Task.from_json(r) for r in rows[1:]]


# == 3. Which set a world uses: the shipped file, else the user cache, else generated and cached =======
def cache_path(corpus_hash: str) -> Path:
    """Where the set generated from a corpus is cached: ``cache_root()/questions`` (``$SEARCHGYM_CACHE``,
    default ``~/.cache/searchgym``), named by the set's version and the corpus hash."""
    name = f"wikifactbook-questions-{QUESTION_SET_VERSION}-{corpus_hash[:16]}.jsonl"
    return cache_root() / "questions" / name


def _current(path: Path, by_id: dict[str, Document]) -> tuple[list[Task] | None, str]:
    """A question file's tasks when its versions are the installed ones and its evidence is in the corpus;
    else None and why not."""
    header, tasks = read_questions(path)
    if header.get("version") != QUESTION_SET_VERSION or header.get("source_versions") != SOURCE_VERSIONS:
        return None, (f"it was built from {header.get('source_versions')} ({header.get('version')}), installed are "
                      f"{SOURCE_VERSIONS} ({QUESTION_SET_VERSION})")
    if not all(d in by_id for t in tasks for d in t.evidence_ids):
        return None, "some evidence ids are not in this corpus"
    return tasks, ""


def question_set(documents: Sequence[Document], corpus: Corpus,
                 path: str | Path | None = DEFAULT_QUESTIONS) -> list[Task]:
    """The verified questions over ``documents`` (``corpus`` is them indexed; its hash keys the cache): the
    file at ``path`` when it is current, else the set cached for this corpus, else generated now and cached
    (`cache_path`; a cache that cannot be written is skipped with a log warning). A file at ``path`` that is
    not current is warned about; ``path=None`` generates in memory and touches no file."""
    if path is None:
        return generate_questions(documents)
    by_id = {d.id: d for d in documents}
    if Path(path).exists():
        tasks, why = _current(Path(path), by_id)
        if tasks is not None:
            return tasks
        warnings.warn(f"{path}: {why}; regenerating the questions (rewrite the file with "
                      f"`python -m searchgym.worlds.wikifactbook {path}`)", stacklevel=3)
    cached = cache_path(corpus.hash)
    try:
        tasks = _current(cached, by_id)[0] if cached.exists() else None
    except (OSError, ValueError) as e:  # a damaged cache file is regenerated
        log.warning("question cache %s is unusable (%s); regenerating it", cached, e)
        tasks = None
    if tasks is not None:
        return tasks
    tasks = generate_questions(documents)
    try:
        write_questions(tasks, cached)
    except OSError as e:
        log.warning("could not write the question cache %s (%s); using the questions in memory only", cached, e)
    return tasks


def main(argv: Sequence[str] = ()) -> None:
    """Regenerate the question set: ``python -m searchgym.worlds.wikifactbook [PATH]`` writes it into the
    user cache (where a world looks when no current file ships), or to PATH (give the ``corpora/`` file's
    path to refresh the set a checkout ships)."""
    documents = load_source("wikifactbook")
    tasks = generate_questions(documents)
    path = Path(argv[0]) if argv else cache_path(Corpus(documents, name="wikifactbook").hash)
    write_questions(tasks, path)
    print(f"wrote {len(tasks)} questions to {path}: {dict(Counter(t.meta['template'] for t in tasks))}, "
          f"splits {dict(Counter(t.split for t in tasks))}")
