"""WikiFactbook's extractors: one Factbook passage in, one unambiguous value out (None when in doubt), the
text helpers answers are checked with, and the Factbook read as countries (the fields question templates
read, their unique capitals and names). Used by `searchgym.worlds.wikifactbook.questions`.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from searchgym.corpus.documents import Document
from searchgym.util.text import normalize_answer

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
