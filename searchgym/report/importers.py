"""Other trainers' search-agent rollouts as searchgym `Trajectory` records, for `searchgym meter`.

Two formats beside searchgym's own ``trajectories.jsonl`` (docs/meters.md, "Importing rollouts"), one JSON
object per line, one line per sampled episode:

- ``chat``: OpenAI-style ``messages`` (roles system/user/assistant/tool; assistant ``tool_calls`` with a
  function name and arguments as a JSON string or object), as TRL, ``verifiers`` and most tools log them;
- ``search-r1``: Search-R1 / verl text rollouts, whose generated text holds ``<search>query</search>``,
  ``<information>Doc 1(Title: …) …</information>`` and ``<answer>…</answer>``.

Each record may also carry a question id (else the question or prompt text groups the samples), a reward, a
correctness flag, gold answers and per-token log-probs; `FIELDS` lists the names read for each, and a field
map (``--field question_id=uid``, dotted paths for nested keys) names others. `read_rollouts` detects the
format from the first valid line, reads every line (a malformed one is one ``ValueError`` naming the file,
the line and the field, before any metering), numbers each question's samples and says which meters the
records cannot feed (`left_out`). The parsing itself lives in `searchgym.report.rollout_text`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from searchgym.envs.rewards import exact_match
from searchgym.meters.families import REF_LOGPROBS_KEY
from searchgym.report.rollout_text import RecordError, chat_episode, search_r1_episode, text_of
from searchgym.trajectory import Trajectory, read_trajectories

FORMATS = ("auto", "searchgym", "chat", "search-r1")

# The names each field is read from, first found wins; ``--field name=key`` replaces them with ``key``.
FIELDS: dict[str, tuple[str, ...]] = {
    "question_id": ("question_id", "task_id", "qid", "uid"),
    "question": ("question",),
    "prompt": ("prompt", "input"),
    "messages": ("messages", "conversation"),  # chat
    "completion": ("completion",),  # chat: TRL's conversational prompt + completion message lists
    "text": ("response", "output", "completion", "text", "sequence"),  # search-r1: the generated text
    "reward": ("reward", "score"),
    "correct": ("correct", "is_correct"),
    "gold_answers": ("golden_answers", "gold_answers", "answers", "ground_truth",
                     "reward_model.ground_truth.target"),
    "token_logprobs": ("token_logprobs", "logprobs"),
    "token_entropies": ("token_entropies", "entropies"),
    "ref_token_logprobs": ("ref_token_logprobs", "ref_logprobs"),
    "strategy": ("strategy",),
    "difficulty": ("difficulty", "hops"),
    "evidence": ("evidence",),
    "sample": ("sample",),
    "source": ("model", "source"),
}
SEARCHGYM_KEYS = ("task_id", "signature", "calls")  # a line holding these is searchgym's own record


def parse_field_map(items: Iterable[str]) -> dict[str, str]:
    """``["question_id=uid", "reward=extra.acc"]`` -> ``{"question_id": "uid", "reward": "extra.acc"}``.

    >>> parse_field_map(["question_id=uid"])
    {'question_id': 'uid'}
    >>> parse_field_map(["qid=uid"])
    Traceback (most recent call last):
    ...
    ValueError: --field qid=uid: the field must be one of ['completion', 'correct', 'difficulty', 'evidence', 'gold_answers', 'messages', 'prompt', 'question', 'question_id', 'ref_token_logprobs', 'reward', 'sample', 'source', 'strategy', 'text', 'token_entropies', 'token_logprobs']
    """
    out = {}
    for item in items:
        name, sep, key = item.partition("=")
        if not sep or not name.strip() or not key.strip():
            raise ValueError(f"--field {item!r}: write it as field=key, e.g. question_id=uid")
        if name.strip() not in FIELDS:
            raise ValueError(f"--field {item}: the field must be one of {sorted(FIELDS)}")
        out[name.strip()] = key.strip()
    return out


class Record:
    """One line's JSON object, read through the field map: ``get(field)`` -> ``(key, value)``; a value
    missing under every name is ``(None, None)``, under a mapped name a `RecordError`."""

    def __init__(self, row: dict, fields: dict[str, str]):
        self.row, self.fields = row, fields

    def get(self, name: str) -> tuple[str | None, object]:
        keys = (self.fields[name],) if name in self.fields else FIELDS[name]
        for key in keys:
            found, value = _lookup(self.row, key)
            if found:
                return key, value
        if name in self.fields:
            raise RecordError(self.fields[name], f"missing (mapped by --field {name}={self.fields[name]})")
        return None, None


def _lookup(row: dict, key: str) -> tuple[bool, object]:
    """``row[key]``, else the dotted path ``a.b.c`` into nested objects.

    >>> _lookup({"reward_model": {"ground_truth": {"target": ["x"]}}}, "reward_model.ground_truth.target")
    (True, ['x'])
    """
    if key in row:
        return True, row[key]
    node: object = row
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return "." in key, node


def detect_format(row: dict, fields: dict[str, str] | None = None) -> str | None:
    """The format of one record: ``searchgym`` (its own trajectory keys), ``chat`` (a messages list, or
    prompt and completion lists), ``search-r1`` (a text with a ``<search>``, ``<information>`` or
    ``<answer>`` tag), else None.

    >>> detect_format({"messages": [{"role": "user", "content": "?"}]})
    'chat'
    >>> detect_format({"response": "<search>x</search>"}), detect_format({"text": "hello"})
    ('search-r1', None)
    """
    rec = Record(row, {k: v for k, v in (fields or {}).items() if _lookup(row, v)[0]})
    if all(k in row for k in SEARCHGYM_KEYS):
        return "searchgym"
    if isinstance(rec.get("messages")[1], list) or all(
            isinstance(rec.get(k)[1], list) for k in ("prompt", "completion")):
        return "chat"
    keys = (fields["text"],) if fields and "text" in fields else FIELDS["text"]
    texts = [_lookup(row, k)[1] for k in keys]
    if any(isinstance(t, str) and any(f"<{tag}>" in t for tag in ("search", "information", "answer"))
           for t in texts):
        return "search-r1"
    return None


def record_trajectory(row: object, fmt: str, fields: dict[str, str], source: str = "") -> Trajectory:
    """One chat or search-r1 record as a Trajectory (``sample`` -1 until `read_rollouts` numbers it)."""
    if not isinstance(row, dict):
        raise RecordError("line", f"must be a JSON object, got {type(row).__name__}")
    rec = Record(row, fields)
    question = _question(rec, fmt)
    episode = chat_episode(_messages(rec)) if fmt == "chat" else search_r1_episode(*_text(rec), question)
    if not question:
        raise RecordError("question", "missing: give a question, a prompt or a user message")
    key, qid = rec.get("question_id")
    if qid is not None and (not isinstance(qid, (str, int)) or isinstance(qid, bool)):
        raise RecordError(key, f"must be a string or an integer, got {type(qid).__name__}")
    task_id = str(qid) if qid is not None else "q-" + hashlib.sha1(question.encode()).hexdigest()[:10]
    golds = _strings(rec, "gold_answers")
    reward, correct = _number(rec, "reward"), _flag(rec, "correct")
    answer = episode["answer"]
    if correct is not None:
        correct_from = "correct"
    elif golds:
        correct, correct_from = bool(answer) and exact_match(answer, golds) == 1.0, "gold"
    elif reward is not None:
        correct, correct_from = reward >= 1.0, "reward"
    else:
        correct, correct_from = False, None
    meta = {"format": fmt, "correct_from": correct_from}
    if (ref := _floats(rec, "ref_token_logprobs")) is not None:
        meta[REF_LOGPROBS_KEY] = ref
    evidence = _strings(rec, "evidence", nested=True)
    difficulty, sample = _integer(rec, "difficulty"), _integer(rec, "sample")
    key, strategy = rec.get("strategy")
    if strategy is not None and not isinstance(strategy, str):
        raise RecordError(key, f"must be a string, got {type(strategy).__name__}")
    logprobs = _floats(rec, "token_logprobs")
    if logprobs is None and fmt == "chat":  # OpenAI responses: logprobs on each assistant message
        logprobs = episode["logprobs"]
    model = rec.get("source")[1]
    return Trajectory(
        task_id=task_id, env_id=f"imported/{fmt}", sample=-1 if sample is None else sample, question=question,
        messages=episode["messages"], calls=episode["calls"], signature=episode["signature"], strategy=strategy,
        queries=episode["queries"], docs_retrieved=episode["docs_retrieved"],
        docs_opened=episode["docs_opened"], answer=answer, reward=float(correct) if reward is None else reward,
        correct=bool(correct), gold_answers=golds, evidence=evidence, difficulty=difficulty or 1,
        truncated=answer is None, num_turns=episode["num_turns"], token_logprobs=logprobs or [],
        token_entropies=_floats(rec, "token_entropies") or [], source=str(model) if model else source, meta=meta)


def _question(rec: Record, fmt: str) -> str:
    """The question: its field, else the last user message of a prompt list, else (chat) the first user
    message, else the prompt text; from a prompt or message, the line after its last ``Question:`` when it
    has one (Search-R1's template puts the instructions first).

    >>> _question(Record({"prompt": [{"role": "user", "content": "Search first. Question: Who? \\n"}]}, {}), "chat")
    'Who?'
    """
    key, question = rec.get("question")
    if question is not None:
        if not isinstance(question, str):
            raise RecordError(key, f"must be a string, got {type(question).__name__}")
        return question.strip()
    key, prompt = rec.get("prompt")
    messages = prompt if isinstance(prompt, list) else rec.get("messages")[1] if fmt == "chat" else None
    users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"
             ] if isinstance(messages, list) else []
    if users:
        text = text_of(users[-1] if isinstance(prompt, list) else users[0], f"{key or 'messages'}.content")
    else:
        text = prompt if isinstance(prompt, str) else ""
    _, sep, tail = text.rpartition("Question:")
    return (tail.strip().splitlines() or [""])[0].strip() if sep else text.strip()


def _messages(rec: Record) -> list:
    key, messages = rec.get("messages")
    if messages is None:
        prompt, completion = rec.get("prompt")[1], rec.get("completion")[1]
        if isinstance(prompt, list) and isinstance(completion, list):
            return prompt + completion
        raise RecordError("messages", "missing: give a messages list (or prompt and completion lists)")
    if not isinstance(messages, list):
        raise RecordError(key, f"must be a list of messages, got {type(messages).__name__}")
    return messages


def _text(rec: Record) -> tuple[str, str | None]:
    key, text = rec.get("text")
    if text is None:
        raise RecordError("text", f"missing: the generated text is read from {list(FIELDS['text'])} "
                                  "(or map it: --field text=KEY)")
    if not isinstance(text, str):
        raise RecordError(key, f"must be a string, got {type(text).__name__}")
    prompt = rec.get("prompt")[1]
    return text, prompt if isinstance(prompt, str) else None


def _number(rec: Record, name: str) -> float | None:
    key, value = rec.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecordError(key, f"must be a finite number, got {type(value).__name__} {value!r:.40}")
    return float(value)


def _integer(rec: Record, name: str) -> int | None:
    key, value = rec.get(name)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise RecordError(key, f"must be an integer, got {type(value).__name__} {value!r:.40}")
    return value


def _flag(rec: Record, name: str) -> bool | None:
    key, value = rec.get(name)
    if value is None or isinstance(value, bool):
        return value
    if value in (0, 1) and isinstance(value, (int, float)):
        return bool(value)
    raise RecordError(key, f"must be true, false, 0 or 1, got {type(value).__name__} {value!r:.40}")


def _floats(rec: Record, name: str) -> list[float] | None:
    """A list of numbers, or of ``{"logprob": x}`` objects, or OpenAI's ``{"content": [{"logprob": x}]}``."""
    key, value = rec.get(name)
    if value is None:
        return None
    items = value.get("content") if isinstance(value, dict) else value
    items = [v.get("logprob") if isinstance(v, dict) else v for v in items] if isinstance(items, list) else None
    if items is None or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        raise RecordError(key, "must be a list of numbers (or of {\"logprob\": x} objects)")
    return [float(v) for v in items]


def _strings(rec: Record, name: str, nested: bool = False) -> list:
    """Gold answers: a string or a list of strings (numbers are written as text). ``nested``: evidence, a
    list of document ids (one chain) or a list of such lists."""
    key, value = rec.get(name)
    if value is None:
        return []
    if nested:
        chains = value if isinstance(value, list) and value and all(isinstance(c, list) for c in value) else [value]
        if all(isinstance(c, list) and all(isinstance(d, str) for d in c) for c in chains):
            return [list(c) for c in chains]
        raise RecordError(key, "must be a list of document ids, or a list of such lists")
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
        raise RecordError(key, f"must be a string or a list of strings, got {json.dumps(value)[:40]}")
    return [str(v) for v in values]


@dataclass
class Imported:
    """What `read_rollouts` read: the trajectories, their format and, for imported formats, the meters
    left out (key prefixes) and the notes that say why."""

    trajectories: list[Trajectory]
    format: str
    left_out: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)


def read_rollouts(path: str | os.PathLike, fmt: str = "auto", fields: dict[str, str] | None = None) -> Imported:
    """Read a rollout file in ``fmt`` (``auto``: detected from its first valid line). A malformed line is a
    ``ValueError`` ``"<file>:<line>: <field>: <problem>"``; searchgym's own files read as before."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {list(FORMATS)}, got {fmt!r}")
    path, fields = Path(path), fields or {}
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    if fmt == "auto":
        fmt = _detect_file(path, lines, fields)
    if fmt == "searchgym":
        return Imported(list(read_trajectories(path)), fmt)
    trajectories = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: line: not JSON ({e})") from None
        try:
            trajectories.append(record_trajectory(row, fmt, fields, source=path.stem))
        except RecordError as e:
            raise ValueError(f"{path}:{n}: {e} ({fmt} format)") from None
    if not trajectories:
        raise ValueError(f"{path} holds no rollouts")
    _number_samples(trajectories)
    prefixes, notes = left_out(trajectories, fmt)
    return Imported(trajectories, fmt, prefixes, notes)


def _detect_file(path: Path, lines: list[str], fields: dict[str, str]) -> str:
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            found = detect_format(row, fields)
            if found is None:
                raise ValueError(f"{path}:{n}: cannot tell the format of the first record: no searchgym keys "
                                 f"{list(SEARCHGYM_KEYS)}, no messages list (chat) and no text with <search>, "
                                 "<information> or <answer> tags (search-r1); pass --format chat|search-r1 "
                                 "and map its fields with --field")
            return found
    raise ValueError(f"{path} holds no JSON object per line; pass searchgym, chat or search-r1 rollouts")


def _number_samples(trajectories: list[Trajectory]) -> None:
    """Samples without a ``sample`` field are numbered in file order within their question."""
    taken: dict[str, set[int]] = {}
    for t in trajectories:
        if t.sample >= 0:
            taken.setdefault(t.task_id, set()).add(t.sample)
    for t in trajectories:
        if t.sample < 0:
            used = taken.setdefault(t.task_id, set())
            t.sample = next(i for i in range(len(used) + 1) if i not in used)
            used.add(t.sample)


def left_out(trajectories: list[Trajectory], fmt: str) -> tuple[tuple[str, ...], list[str]]:
    """The meter key prefixes imported records cannot feed, and notes saying why (and where correctness
    came from). Strategy labels come from a searchgym world's classifier, so they are left out unless the
    records carry a ``strategy``.

    >>> from searchgym.meters.families import example
    >>> prefixes, notes = left_out([example(strategy=None, docs_retrieved=["d1"], meta={"correct_from": "reward"},
    ...                                     token_logprobs=[-0.5])], "chat")
    >>> prefixes
    ('diversity/strategy_', 'entropy/token', 'kl/')
    >>> notes[1]
    'correct = reward >= 1 (no correct field or gold answers; map one with --field correct=KEY)'
    """
    no_correct = all(t.meta.get("correct_from") is None for t in trajectories)
    logprobs = any(t.token_logprobs for t in trajectories)
    checks = [
        (("diversity/strategy_",), all(t.strategy is None for t in trajectories),
         "no world's strategy labels: give a strategy field"),
        (("reward/", "passk/"), no_correct, "no reward, correct flag or gold answers"),
        (("entropy/token",), not any(t.token_entropies for t in trajectories), "no per-token entropies"
         + ("; entropy/sequence_per_token samples the same mean from the log-probs" if logprobs else "")),
        (("entropy/sequence",), not logprobs, "no per-token log-probs"),
        (("kl/",), not any(REF_LOGPROBS_KEY in t.meta for t in trajectories), "no reference log-probs"),
        (("search/evidence_coverage",), not any(t.evidence for t in trajectories), "no gold evidence"),
        (("search/unique_docs",), not any(t.docs_retrieved for t in trajectories), "no document in any result"),
        (("search/unique_opened",), fmt == "search-r1", "Search-R1 has no open action"),
    ]
    dropped = [(prefixes, why) for prefixes, missing, why in checks if missing]
    notes = ["left out: " + "; ".join(f"{', '.join(p + '…' for p in prefixes)} ({why})" for prefixes, why in dropped)
             ] if dropped else []
    sources = {t.meta.get("correct_from") for t in trajectories} - {None, "correct"}
    said = {"gold": "an exact match of the answer with a gold answer", "reward": "reward >= 1"}
    if sources:
        notes.append("correct = " + " or ".join(said[s] for s in sorted(sources))
                     + " (no correct field" + (" or gold answers" if "reward" in sources else "")
                     + "; map one with --field correct=KEY)")
    return tuple(p for prefixes, _ in dropped for p in prefixes), notes
