"""One episode out of another trainer's rollout: chat messages with tool calls, or Search-R1's tagged text.

Both parsers return the same episode dict (the `Trajectory` fields an episode decides: messages, calls,
signature, queries, documents retrieved and opened, answer, assistant turns), so every meter reads an
imported episode as it reads searchgym's own. The rules (docs/meters.md, "Importing rollouts"):

- a tool is a search, an open or an answer by its name (`tool_kind`); any other tool is kept under its own
  name with the signature letter ``T``; call ids are dropped (they would count as generated text);
- a call is invalid (``X``) when its arguments are not a JSON object, a search, open or answer has no
  argument text, or its tool result starts with ``Error``; for Search-R1, an empty or unclosed ``<search>``
  and each "My previous action is invalid" observation of its environment;
- the answer is the first answer call, else the final assistant message's ``<answer>…</answer>`` or, with no
  tag, its text (recorded as an answer call, as searchgym's agents answer through one);
- the documents of a search are read from its result (`result_docs`).

Malformed input (a message that is not an object, an unknown role, a tool call without a function name) is a
`RecordError` naming the field; `searchgym.report.importers` adds the file and line.
"""

from __future__ import annotations

import json
import re

from searchgym.envs.tools import TOOLS

ROLES = ("system", "developer", "user", "assistant", "tool")
LETTERS = {t.name: t.letter for t in TOOLS} | {"other": "T"}
# Substrings of a tool's name that make it an answer, a search or an open, tried in this order.
KINDS = (("answer", ("answer", "submit", "final", "respond")),
         ("search", ("search", "retriev", "query", "lookup")),
         ("open", ("open", "read", "fetch", "browse", "visit", "page", "document")))
# The argument that carries a call's text, by kind; else the call's first string argument.
ARGUMENTS = {"search": ("query", "q", "search_query", "queries"), "open": ("doc_id", "id", "url", "title"),
             "answer": ("answer", "text", "final_answer", "response")}
ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)
# Search-R1: its environment's reply to an action it cannot parse quotes the tags, so it is matched first.
R1_PATTERN = re.compile(r"(?P<invalid>My previous action is invalid\.(?:.*?Let me try again\.|[^\n]*))"
                        r"|<(?P<tag>search|information|answer)>(?P<body>.*?)</(?P=tag)>|(?P<unclosed><search>)", re.S)
ASSISTANT_MARKERS = ("<|im_start|>assistant", "<|start_header_id|>assistant<|end_header_id|>", "<|assistant|>")


class RecordError(ValueError):
    """A malformed record; the message starts with the field (``messages[3].role: must be one of …``)."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")


def text_of(content: object, where: str) -> str:
    """A message's content as text: a string, null, or a list of ``{"type": "text", "text": …}`` parts.

    >>> text_of([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "content")
    'ab'
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        return "".join(p["text"] for p in content if isinstance(p.get("text"), str))
    raise RecordError(where, f"must be a string or a list of text parts, got {type(content).__name__}")


def tool_kind(name: str) -> str:
    """``search``, ``open`` or ``answer`` by the tool's name, else ``other``.

    >>> [tool_kind(n) for n in ("web_search", "final_answer", "read_page", "calculator")]
    ['search', 'answer', 'open', 'other']
    """
    lower = name.lower()
    return next((kind for kind, parts in KINDS if any(p in lower for p in parts)), "other")


def make_call(name: str, arguments: object) -> tuple[dict, str | None]:
    """A searchgym call record ``{"name", "arguments", "valid"}`` (+ ``"error"``, and ``"tool"`` when the
    name was mapped) and the text it carries (query, document, answer).

    >>> make_call("web_search", '{"query": "capital of Peru"}')
    ({'name': 'search', 'arguments': {'query': 'capital of Peru'}, 'valid': True, 'tool': 'web_search'}, 'capital of Peru')
    >>> make_call("search", '{"query": "Lima')[0]["error"]
    'arguments are not valid JSON'
    """
    kind = tool_kind(name)
    call = {"name": name if kind == "other" else kind, "arguments": {}, "valid": False}
    if kind != name and kind != "other":
        call["tool"] = name
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return call | {"error": "arguments are not valid JSON"}, None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return call | {"error": "arguments are not a JSON object"}, None
    strings = [v for k, v in arguments.items() if k in ARGUMENTS.get(kind, ()) and isinstance(v, str)]
    strings += [v for v in arguments.values() if isinstance(v, str)]
    value = strings[0].strip() if strings else None
    if kind != "other" and not value:
        return call | {"arguments": arguments, "error": f"a {kind} call without its text"}, None
    return call | {"arguments": arguments, "valid": True}, value


def result_docs(text: str) -> list[str]:
    """Document ids in a search result: a JSON list (or ``{"results": […]}``) of objects with an id, doc_id,
    docid, url or title; searchgym's ``[doc_id] title: snippet`` lines; Search-R1's ``Doc k(Title: t) text``
    (the title: wiki-18 passages show no id, so passages of one article count as one document).

    >>> result_docs('Doc 1(Title: "Paris (band)") A band.\\nDoc 2(Title: Lyon) A city.')
    ['Paris (band)', 'Lyon']
    >>> result_docs('[{"doc_id": "d3", "text": "…"}]'), result_docs("[d7] Lima: capital of Peru")
    (['d3'], ['d7'])
    """
    stripped = text.strip()
    if stripped[:1] in "[{" and stripped:
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            data = next((data[k] for k in ("results", "documents", "docs", "hits") if isinstance(data.get(k), list)),
                        None)
        if isinstance(data, list):
            ids = [next((str(d[k]) for k in ("id", "doc_id", "docid", "url", "title") if d.get(k) is not None), None)
                   for d in data if isinstance(d, dict)]
            return [i for i in ids if i]
    titles = []
    for m in re.finditer(r"Doc \d+\s*\(Title:", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:  # the title ends at the bracket that closes "(Title:"
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        titles.append(text[m.end():i - 1].strip().strip('"').strip())
    if titles:
        return [t for t in titles if t]
    return re.findall(r"^\[([^\]\n]+)\]", text, re.M)


def _episode(messages: list[dict], steps: list[tuple[dict, str | None, str | None]], answer: str | None) -> dict:
    """The episode's fields from its messages and its (call, text, result) steps."""
    calls = [c for c, _, _ in steps]
    valid = [(c["name"], value, result) for c, value, result in steps if c["valid"]]
    return {"messages": messages, "calls": calls, "answer": answer,
            "signature": " ".join(LETTERS.get(c["name"], "T") if c["valid"] else "X" for c in calls),
            "queries": [v for name, v, _ in valid if name == "search"],
            "docs_retrieved": [d for name, _, r in valid if name == "search" for d in result_docs(r or "")],
            "docs_opened": [v for name, v, _ in valid if name == "open"],
            "num_turns": sum(m["role"] == "assistant" for m in messages)}


def chat_episode(messages: list) -> dict:
    """The episode of an OpenAI-style message list (module rules); ``logprobs``: those found on assistant
    messages (OpenAI's ``{"content": [{"logprob": x}]}``), else None.

    >>> ep = chat_episode([{"role": "user", "content": "Capital of Peru?"},
    ...     {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "search",
    ...      "arguments": '{"query": "Peru capital"}'}}]},
    ...     {"role": "tool", "tool_call_id": "c1", "content": "[d1] Lima: capital of Peru"},
    ...     {"role": "assistant", "content": "<answer>Lima</answer>"}])
    >>> ep["signature"], ep["queries"], ep["docs_retrieved"], ep["answer"]
    ('S A', ['Peru capital'], ['d1'], 'Lima')
    """
    out: list[dict] = []
    steps: list[list] = []  # [call, text, result]
    pending: list[tuple[object, int]] = []  # (tool_call_id, step) awaiting a tool message
    answer, logprobs = None, []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RecordError(where, f"must be an object, got {type(m).__name__}")
        role = m.get("role")
        if role not in ROLES:
            raise RecordError(f"{where}.role", f"must be one of {list(ROLES)}, got {role!r:.40}")
        content = text_of(m.get("content"), f"{where}.content")
        if role == "tool":
            index = next((j for j, (cid, _) in enumerate(pending) if cid == m.get("tool_call_id")), 0)
            if pending:
                step = steps[pending.pop(index)[1]]
                step[2] = content
                if content.lstrip().lower().startswith("error") and step[0]["valid"]:
                    step[0] = step[0] | {"valid": False, "error": content.strip()[:120]}
            out.append({"role": "tool", "content": content})
            continue
        if role != "assistant":
            out.append({"role": role, "content": content})
            continue
        raw = m.get("tool_calls") or []
        if not isinstance(raw, list):
            raise RecordError(f"{where}.tool_calls", f"must be a list, got {type(raw).__name__}")
        message: dict = {"role": "assistant", "content": content}
        pending, kept = [], []
        for j, c in enumerate(raw):
            function = c.get("function", c) if isinstance(c, dict) else None
            name = function.get("name") if isinstance(function, dict) else None
            if not isinstance(name, str) or not name:
                raise RecordError(f"{where}.tool_calls[{j}].function.name", "missing: every tool call names its "
                                                                            "function")
            call, value = make_call(name, function.get("arguments"))
            kept.append({"type": "function", "function": {"name": name, "arguments": function.get("arguments")}})
            pending.append((c.get("id"), len(steps)))
            steps.append([call, value, None])
        message |= {"tool_calls": kept} if kept else {}
        out.append(message)
        lp = m.get("logprobs")
        lp = lp.get("content") if isinstance(lp, dict) else None
        logprobs += [t["logprob"] for t in lp or [] if isinstance(t, dict) and isinstance(t.get("logprob"), float)]
    answered = [s for s in steps if s[0]["valid"] and s[0]["name"] == "answer"]
    if answered:
        answer = answered[0][1]
    elif out and out[-1]["role"] == "assistant" and "tool_calls" not in out[-1]:
        tagged = ANSWER_TAG.findall(out[-1]["content"])
        answer = (tagged[-1] if tagged else out[-1]["content"]).strip() or None
        if answer:
            steps.append([{"name": "answer", "arguments": {"answer": answer}, "valid": True}, answer, None])
    return _episode(out, [tuple(s) for s in steps], answer) | {"logprobs": logprobs or None}


def generated_text(text: str, prompt: str | None) -> str:
    """The part of a full Search-R1 text the model generated: after the prompt when the text starts with
    it, else after the first assistant marker of a chat template; else all of it.

    >>> generated_text("<|im_start|>user\\nUse <search> query </search>.<|im_start|>assistant\\n<search>x</search>", None)
    '\\n<search>x</search>'
    """
    if prompt and text.startswith(prompt):
        return text[len(prompt):]
    for marker in ASSISTANT_MARKERS:
        if marker in text:
            return text.split(marker, 1)[1]
    return text


def search_r1_episode(text: str, prompt: str | None, question: str = "") -> dict:
    """The episode of a Search-R1 rollout text (module rules): assistant text up to each ``<information>``
    block, the block as a tool message, the first ``<answer>`` ending it.

    >>> ep = search_r1_episode("<think>?</think><search>Peru capital</search><information>Doc 1(Title: Lima) "
    ...     "Lima is the capital.</information>Lima.My previous action is invalid. If I want to "
    ...     "search, I should put the query between <search> and </search>. Let me try again.<answer>Lima</answer>",
    ...     None)
    >>> ep["signature"], ep["queries"], ep["docs_retrieved"], ep["answer"], ep["num_turns"]
    ('S X A', ['Peru capital'], ['Lima'], 'Lima', 3)
    """
    generated = generated_text(text, prompt)
    messages: list[dict] = [{"role": "user", "content": question}] if question else []
    steps: list[tuple[dict, str | None, str | None]] = []
    buffer, pos, answer = "", 0, None

    def flush(observation: str) -> None:
        nonlocal buffer
        messages.extend([{"role": "assistant", "content": buffer}, {"role": "tool", "content": observation}])
        buffer = ""

    for m in R1_PATTERN.finditer(generated):
        buffer += generated[pos:m.start()]
        pos = m.end()
        if m["invalid"]:
            steps.append(({"name": None, "arguments": {}, "valid": False, "error": "invalid action"}, None, None))
            flush(m[0])
        elif m["tag"] == "information":
            body = m["body"].strip()
            last = next((i for i in range(len(steps) - 1, -1, -1) if steps[i][0]["name"] == "search"), None)
            if last is not None and steps[last][2] is None:
                steps[last] = (steps[last][0], steps[last][1], body)
            flush(body)
        elif m["unclosed"]:  # cut off inside a search: the rest is its text
            pos = m.start()
            steps.append(({"name": "search", "arguments": {}, "valid": False, "error": "unclosed <search>"}, None,
                          None))
            break
        else:  # a search or the answer, which ends the episode
            buffer += m[0]
            kind, value = m["tag"], m["body"].strip()
            call = {"name": kind, "arguments": {"query" if kind == "search" else "answer": value}, "valid": bool(value)}
            steps.append((call if value else call | {"error": f"empty <{kind}>"}, value or None, None))
            if kind == "answer":
                answer, pos = value or None, len(generated)
                break
    buffer += generated[pos:]
    if buffer.strip():
        messages.append({"role": "assistant", "content": buffer})
    return _episode(messages, steps, answer)
