"""The one config system: one error type, the typed loader, the command-line overrides and the TOML writer.

Agent recipes (`searchgym.config.agent_recipe`), corpus recipes (`searchgym.corpus.corpus_recipe`) and study files
(`searchgym.study.spec`) are dataclasses with typed fields (``Literal[...]`` where a value is one of a few
words), built from parsed TOML by `build`: an unknown key, a missing required key, a value of the wrong type or
a word outside its ``Literal`` stops with one `ConfigError` line naming the field (its dotted path) and what is
allowed. Each config's semantic checks (ranges, rules across fields, lookups) raise the same `ConfigError`, so the
command line maps it to one line and exit status 2 in one place. `to_toml` is the only TOML writer.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Literal


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line naming the field and what is allowed."""


def read_toml(path: str | Path, missing: str) -> dict:
    """Parse a TOML file; a missing file is a `ConfigError` saying ``missing``, a bad one names the position."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(missing)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None


# ---- the typed loader -------------------------------------------------------------------------------------

def build(cls, data, where: str, prefix: str = "", more_keys: typing.Iterable[str] = ()):
    """A ``cls`` dataclass from a parsed TOML table, every value checked against the field's annotation.

    Nested dataclasses are built from sub-tables, ``dict[str, X]`` of a dataclass ``X`` from a table of
    tables, ``list[X]`` element by element; a ``float`` field takes an integer. A field without a default is
    required (its ``metadata["example"]`` is quoted when it is missing); ``metadata={"toml": False}`` keeps a
    field out of the file. ``where`` (the file) prefixes every message; ``more_keys`` are keys the caller
    takes out of ``data`` first, named in the allowed list.

    >>> @dataclasses.dataclass
    ... class Index:
    ...     type: Literal["flat", "hnsw"] = "flat"
    ...     nlist: int | Literal["auto"] = "auto"
    >>> build(Index, {"type": "hnsw", "nlist": 64}, "r.toml", "index.")
    Index(type='hnsw', nlist=64)
    >>> build(Index, {"type": "annoy"}, "r.toml", "index.")
    Traceback (most recent call last):
    ...
    searchgym.util.config_schema.ConfigError: r.toml: index.type must be one of ['flat', 'hnsw'], got 'annoy'
    >>> build(Index, {"nlists": 4}, "r.toml", "index.")
    Traceback (most recent call last):
    ...
    searchgym.util.config_schema.ConfigError: r.toml: unknown key 'index.nlists'; allowed keys in [index]: ['nlist', 'type']
    """
    section = prefix.rstrip(".")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {section or 'the file'} must be a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("toml", True)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {prefix + str(unknown[0])!r}; allowed keys"
                          f"{f' in [{section}]' if section else ''}: {sorted({*fields, *more_keys})}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = check_value(data[name], hints[name], prefix + name, where)
        elif dataclasses.is_dataclass(hints[name]) and _required(f):  # a required section: its required keys
            kwargs[name] = build(hints[name], {}, where, f"{prefix}{name}.")
        elif _required(f):
            example = f", e.g. {f.metadata['example']}" if "example" in f.metadata else ""
            raise ConfigError(f"{where}: {prefix}{name} is required ({expected(hints[name])}){example}")
    return cls(**kwargs)


def check_value(value, hint, key: str, where: str = ""):
    """``value`` checked against the annotation ``hint`` (see `build`); returns it (an int made float where
    the field is a float), or raises one `ConfigError` naming ``key``."""
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where, key + ".")
    options = _options(hint)
    for option in options:
        origin, args = typing.get_origin(option) or option, typing.get_args(option)
        if origin is Literal:
            if value in args and type(value) in {type(a) for a in args}:
                return value
        elif origin is type(None):
            if value is None:
                return value
        elif origin is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        elif origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        elif origin in (str, bool) and type(value) is origin:
            return value
        elif origin is typing.Any:
            return value
        elif origin is dict and isinstance(value, dict):
            return {k: check_value(v, args[1], f"{key}.{k}", where) for k, v in value.items()} if args else value
        elif origin is list and isinstance(value, list):
            return [check_value(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value)] if args else value
    words_only = all(typing.get_origin(o) is Literal for o in options if o is not type(None))
    shown = f"{value!r:.60}" if words_only else f"{type(value).__name__} {value!r:.60}"
    raise ConfigError(f"{where + ': ' if where else ''}{key} must be {expected(hint)}, got {shown}")


def check_choices(obj, prefix: str = "") -> None:
    """Re-check the ``Literal`` fields of a built dataclass (and of the dataclasses in it): a config changed or
    made in code is held to the same choices as one read from a file."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_choices(value, f"{prefix}{f.name}.")
        elif any(typing.get_origin(o) is Literal for o in _options(hint)):
            check_value(value, hint, prefix + f.name)


def expected(hint) -> str:
    """What an annotation allows, in a message: ``int or one of ['auto']``, ``list of str``, ``table``."""
    names = []
    for option in _options(hint):
        origin, args = typing.get_origin(option) or option, typing.get_args(option)
        if origin is Literal:
            names.append(f"one of {list(args)}")
        elif origin is list:
            names.append(f"list of {expected(args[0])}" if args else "list")
        elif origin is dict or dataclasses.is_dataclass(origin):
            names.append("table")
        elif origin is not type(None):
            names.append(getattr(origin, "__name__", str(origin)))
    return " or ".join(names)


def choices(hint) -> tuple:
    """The words a ``Literal`` annotation (or an optional one) allows."""
    return tuple(a for o in _options(hint) if typing.get_origin(o) is Literal for a in typing.get_args(o))


def _options(hint) -> tuple:
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


# ---- command-line values and overrides ----------------------------------------------------------------------

def parse_value(raw: str):
    """A command-line value: a TOML literal (``4``, ``1e-3``, ``true``, ``["a"]``, ``{k = 1}``), else the
    bare word as a string.

    >>> parse_value("4"), parse_value("1e-3"), parse_value("hashing"), parse_value('"4"'), parse_value("[1, 2]")
    (4, 0.001, 'hashing', '4', [1, 2])
    """
    try:
        parsed = tomllib.loads(f"v = {raw}")
    except tomllib.TOMLDecodeError:
        return raw
    return parsed["v"] if set(parsed) == {"v"} else raw


def apply_override(data: dict, item: str, option: str = "--set") -> None:
    """Apply one ``section.key=value`` to parsed TOML ``data`` (sections are made as needed).

    >>> d = {"sft": {"epochs": 1}}
    >>> apply_override(d, "sft.epochs=2"); apply_override(d, "env.kwargs.top_k=3"); d
    {'sft': {'epochs': 2}, 'env': {'kwargs': {'top_k': 3}}}
    """
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{option} {item!r}: write it as section.key=value, e.g. {option} grpo.steps=10")
    *parents, leaf = key.strip().split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{option} {item!r}: {p!r} is not a section")
    node[leaf] = parse_value(raw)


def parse_kwargs(items: typing.Sequence[str], option: str = "--env-kwargs") -> dict:
    """Keyword arguments from the command line: a JSON object, or ``key=value`` items (values are TOML
    literals, bare words strings; ``world_kwargs.size=small`` nests).

    >>> parse_kwargs(['{"max_steps": 4}', "embedder=hashing", "world_kwargs.size=small", "top_k=3"])
    {'max_steps': 4, 'embedder': 'hashing', 'world_kwargs': {'size': 'small'}, 'top_k': 3}
    """
    data: dict = {}
    for item in items:
        if item.strip().startswith("{"):
            try:
                value = json.loads(item)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{option} {item!r:.80}: not a JSON object ({e})") from None
            if not isinstance(value, dict):
                raise ConfigError(f"{option} {item!r:.80}: give a JSON object or key=value")
            data.update(value)
            continue
        try:
            apply_override(data, item, option)
        except ConfigError:
            raise ConfigError(f"{option} {item!r:.80}: write it as key=value (e.g. max_steps=4) or a JSON "
                              "object") from None
    return data


# ---- the one TOML writer ---------------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def to_toml(data: dict) -> str:
    """``data`` as TOML: a table's values first, then each nested table as a ``[section]`` (a dict inside a
    list as an inline table). None, which TOML cannot write, is left out; otherwise
    ``tomllib.loads(to_toml(d)) == d``.

    >>> print(to_toml({"a": 1, "none": None, "t": {"b": "x", "u": {"c": [1, 2.5], "d": [{"e": True}]}}}), end="")
    a = 1
    <BLANKLINE>
    [t]
    b = "x"
    <BLANKLINE>
    [t.u]
    c = [1, 2.5]
    d = [{e = true}]
    """
    return "\n".join(_table(data, ())).lstrip("\n") + "\n"


def _table(data: dict, path: tuple[str, ...]) -> list[str]:
    lines = [f"{_key(k)} = {toml_value(v)}" for k, v in data.items() if v is not None and not isinstance(v, dict)]
    subtables = [(k, v) for k, v in data.items() if isinstance(v, dict)]
    if path and (lines or not subtables):  # a table holding only tables needs no header of its own
        lines.insert(0, f"\n[{'.'.join(_key(p) for p in path)}]")
    for k, v in subtables:
        lines += _table(v, (*path, k))
    return lines


def toml_value(value) -> str:
    """One value as a TOML literal (also what ``--set`` parses back).

    >>> toml_value(1.0), toml_value("test"), toml_value(True), toml_value(64), toml_value({"a b": [1e-05]})
    ('1.0', '"test"', 'true', '64', '{"a b" = [1e-05]}')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(int(value))
    if isinstance(value, str):  # a JSON string is a TOML basic string, but for DEL
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"to_toml: a {type(value).__name__} ({value!r:.60}) has no TOML form")


def _key(key) -> str:
    key = str(key)
    return key if _BARE_KEY.fullmatch(key) else toml_value(key)
