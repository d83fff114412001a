"""Agent actions are text: parse what an LLM emits into a `ToolCall`, and render calls back to text.

The canonical form is exactly what the bundled ChatML/Qwen2.5 template renders and TRL parses (a call
cut off inside its closing tag, or bare JSON without the tags, is accepted too)::

    <tool_call>
    {"name": "search", "arguments": {"query": "capital of Togo"}}
    </tool_call>

A lenient plain form (``search: capital of Togo``, ``open(wiki:Togo)``) is accepted too, so scripted
agents and humans can drive an env without JSON. Anything else raises `ActionError`, whose message is
written for the model: the env turns it into an error observation, never an exception out of ``step``.

A reasoning model writes ``<think>…</think>`` before its call: every such block is removed before parsing
(`strip_reasoning`), and text after a ``<think>`` that is never closed is reasoning too, never a call.
Here, the one place actions are parsed, so the env's ``step`` and the rollout engine's messages agree;
GRPO training, whose tool calls TRL's response parser reads, drops the same reasoning with this function
(`searchgym.train.grpo_rollout.ignore_reasoning_calls`).

Parsing uses ``str`` methods only, no regular expressions: an action is untrusted text, and a
backtracking pattern such as ``\\s*(.*?)\\s*$`` takes quadratic time on a long run of whitespace
(measured: 100,000 spaces took five minutes). Every step below is one linear pass.
"""

from __future__ import annotations

import json
import re

from searchgym.envs.tools import TOOLS
from searchgym.tasks import ToolCall

# name -> the one required argument, in declaration order (derived from the tools: envs/tools.py).
TOOL_ARGUMENTS = {t.name: t.argument for t in TOOLS}
# The example call the error messages show: the first declared tool.
_EXAMPLE_ARGS = json.dumps({TOOLS[0].argument: "..."})
_EXAMPLE = json.dumps({"name": TOOLS[0].name, "arguments": {TOOLS[0].argument: "..."}})

_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
_END_TOKENS = ("<|im_end|>", "<|endoftext|>")
# A tool call is {"name": ..., "arguments": {...}}: depth 2, 3 for a list argument. json.loads recurses
# once per level and raises RecursionError near 1,000, so deeper text is refused before it is parsed.
MAX_JSON_DEPTH = 32
# json refuses integer literals over 4,300 digits with a ValueError; no tool argument needs a tenth of this.
MAX_INT_DIGITS = 100
_SURROGATES = re.compile("[\ud800-\udfff]")  # a character class: one linear scan, no backtracking
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# With a length limit, the raw text (reasoning included) may be this many times it: reasoning is long, but
# the bound keeps the work ``step`` does on an adversarial string proportional to the limit.
RAW_CHARS_FACTOR = 16


class ActionError(ValueError):
    """An action the env cannot execute; the message tells the agent how to fix it."""


def parse_action(text: object, max_chars: int | None = None) -> ToolCall:
    """Parse one tool call from an agent's text, its ``<think>…</think>`` reasoning removed first.

    ``max_chars`` (None: no limit) bounds the call: the text without its reasoning may be ``max_chars``
    long, the raw text ``RAW_CHARS_FACTOR * max_chars``; longer text raises ActionError.

    >>> parse_action('<tool_call>\\n{"name": "search", "arguments": {"query": "Togo"}}\\n</tool_call>')
    ToolCall(name='search', arguments={'query': 'Togo'})
    >>> parse_action("answer: Lomé")
    ToolCall(name='answer', arguments={'text': 'Lomé'})
    >>> parse_action("open(wiki:Casablanca (film))")
    ToolCall(name='open', arguments={'doc_id': 'wiki:Casablanca (film)'})
    >>> parse_action("<think>" + "Togo's capital? " * 50 + "</think>answer: Lomé", max_chars=100)
    ToolCall(name='answer', arguments={'text': 'Lomé'})
    >>> parse_action("hello")
    Traceback (most recent call last):
    ...
    searchgym.envs.actions.ActionError: no tool call found: reply with <tool_call>{"name": "search", "arguments": {"query": "..."}}</tool_call> (tools: search, open, answer)
    """
    if not isinstance(text, str):
        raise ActionError(f"an action must be text, got {type(text).__name__}")
    if max_chars is not None and len(text) > RAW_CHARS_FACTOR * max_chars:
        raise ActionError(f"the action is {len(text)} characters, over the limit of {max_chars} "
                          f"({RAW_CHARS_FACTOR * max_chars} with <think> reasoning): make one short tool call")
    call_text, unclosed = strip_reasoning(text)
    if max_chars is not None and len(call_text) > max_chars:
        raise ActionError(f"the action is {len(call_text)} characters without its <think> reasoning, over the "
                          f"limit of {max_chars}: make one short tool call")
    try:
        return _parse_call(strip_end_of_turn(call_text))
    except ActionError as e:
        if unclosed:
            raise ActionError(f"<think> is never closed, so nothing after it is a call: write </think> "
                              f"before the tool call ({e})") from None
        raise


def strip_reasoning(text: str) -> tuple[str, bool]:
    """``text`` without its ``<think>…</think>`` blocks (each ends at the first ``</think>`` after it), and
    whether a ``<think>`` was never closed: then everything from it to the end is dropped too.

    ``str.find`` only: each character is scanned once, where ``<think>.*?</think>`` would rescan to the end
    from every unclosed tag (quadratic on ``"<think>" * n``; see the module docstring).

    >>> strip_reasoning("<think>Lomé? Check.</think>\\nanswer: Lomé")
    ('\\nanswer: Lomé', False)
    >>> strip_reasoning("<think>a</think>search: x<think>out of tokens")
    ('search: x', True)
    """
    kept, pos = [], 0
    while (start := text.find(THINK_OPEN, pos)) != -1:
        kept.append(text[pos:start])
        end = text.find(THINK_CLOSE, start + len(THINK_OPEN))
        if end == -1:
            return "".join(kept), True
        pos = end + len(THINK_CLOSE)
    kept.append(text[pos:])
    return "".join(kept), False


def _parse_call(text: str) -> ToolCall:
    calls = _tagged_calls(text)
    if len(calls) > 1:
        raise ActionError(f"{len(calls)} tool calls in one turn: make exactly one tool call per turn")
    if calls:
        return _from_json(_without_partial_close(calls[0]))
    stripped = text.strip()
    if stripped.startswith("{"):  # a bare JSON call without the tags
        return _from_json(stripped)
    plain = _plain_call(stripped)
    if plain is not None:
        return _validated(*plain)
    raise ActionError(f"no tool call found: reply with <tool_call>{_EXAMPLE}</tool_call> "
                      f"(tools: {', '.join(TOOL_ARGUMENTS)})")


def strip_end_of_turn(text: str) -> str:
    """Drop one trailing ``<|im_end|>`` / ``<|endoftext|>`` (and the whitespace around it), if any.

    >>> strip_end_of_turn("answer: 42 <|im_end|>\\n")
    'answer: 42'
    """
    stripped = text.rstrip()
    for token in _END_TOKENS:
        if stripped.endswith(token):
            return stripped[: -len(token)].rstrip()
    return text


def _tagged_calls(text: str) -> list[str]:
    """The stripped body of each ``<tool_call>``, up to its ``</tool_call>`` or the end of the text."""
    bodies, pos = [], 0
    while (start := text.find(_OPEN, pos)) != -1:
        start += len(_OPEN)
        end = text.find(_CLOSE, start)
        if end == -1:  # generation stopped before the closing tag
            bodies.append(text[start:].strip())
            break
        bodies.append(text[start:end].strip())
        pos = end + len(_CLOSE)
    return bodies


def _without_partial_close(body: str) -> str:
    """Generation cut off inside the closing tag ("…}}\\n</tool"): the JSON before it is complete."""
    cut = body.rfind("<")
    if cut != -1 and _CLOSE.startswith(body[cut:]):
        return body[:cut].rstrip()
    return body


def _plain_call(text: str) -> tuple[str, dict] | None:
    """``name: value`` or ``name(value)`` (case-insensitive name), or None. Only the ``name(...)`` form
    loses a closing parenthesis: in ``open: wiki:Casablanca (film)`` the ")" belongs to the id."""
    for name, arg in TOOL_ARGUMENTS.items():
        if text[: len(name)].lower() != name:
            continue
        rest = text[len(name):].lstrip()
        if not rest or rest[0] not in ":(":
            return None
        value = rest[1:].strip()
        if rest[0] == "(" and value.endswith(")"):
            value = value[:-1].rstrip()
        return name, {arg: value.strip('"')}
    return None


def _from_json(body: str) -> ToolCall:
    obj = _loads(body, 'write {"name": ..., "arguments": {...}} inside <tool_call></tool_call>')
    if not isinstance(obj, dict) or "name" not in obj:
        raise ActionError(f'a tool call needs a "name" and "arguments": {_EXAMPLE}')
    args = obj.get("arguments", {})
    if isinstance(args, str):  # some models double-encode the arguments
        args = _loads(args, f'make "arguments" a JSON object, e.g. {_EXAMPLE_ARGS}')
    if not isinstance(args, dict):
        raise ActionError(f'"arguments" must be a JSON object, e.g. {_EXAMPLE_ARGS}')
    return _validated(str(obj["name"]), args)


def _loads(body: str, hint: str):
    """``json.loads`` that fails only with ActionError, whatever the text (depth and number size too)."""
    if json_too_deep(body):
        raise ActionError(f"the tool call nests JSON deeper than {MAX_JSON_DEPTH} levels; {hint}")
    try:
        return json.loads(body, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        raise ActionError(f"the tool call is not valid JSON ({e.msg} at char {e.pos}); {hint}") from None


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ActionError(f"a number in the tool call has {len(digits)} digits (at most {MAX_INT_DIGITS}); "
                          "pass text as a JSON string")
    return int(digits)


def json_too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests brackets deeper than ``limit`` (brackets inside strings do not count).
    One linear pass, skipped when the text holds too few brackets to get that deep.

    >>> json_too_deep('{"a": [1, {"b": "[[[["}]}', limit=3), json_too_deep('[[[[]]]]', limit=3)
    (False, True)
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    depth, in_string, escaped = 0, False, False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > limit:
                return True
        elif c in "]}":
            depth -= 1
    return False


def _validated(name: str, args: dict) -> ToolCall:
    if name not in TOOL_ARGUMENTS:
        raise ActionError(f"unknown tool {name[:100]!r}: the tools are "
                          + ", ".join(f"{n}({a})" for n, a in TOOL_ARGUMENTS.items()))
    required = TOOL_ARGUMENTS[name]
    extra = sorted(set(args) - {required})
    if extra:
        raise ActionError(f"{name} takes only {required!r}, got unexpected argument(s) {extra}"[:300])
    value = args.get(required)
    if not isinstance(value, str | int | float) or isinstance(value, bool) or not str(value).strip():
        raise ActionError(f"{name} needs a non-empty {required!r} argument (a string)")
    # A lone surrogate (raw, or a JSON "\ud800" escape) is not encodable text: tokenizers raise on it.
    return ToolCall(name, {required: _SURROGATES.sub("\ufffd", str(value).strip())})


def format_tool_call(call: ToolCall) -> str:
    """The canonical text of a call, byte-identical to the chat template's rendering.

    >>> print(format_tool_call(ToolCall("open", {"doc_id": "wiki:Togo"})))
    <tool_call>
    {"name": "open", "arguments": {"doc_id": "wiki:Togo"}}
    </tool_call>
    """
    body = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


def assistant_message(text: str) -> dict:
    """A chat message for an assistant turn: structured ``tool_calls`` when the text parses, so the
    template renders it exactly as SFT data and TRL's GRPO do; otherwise the raw text."""
    try:
        call = parse_action(text)
    except ActionError:
        return {"role": "assistant", "content": strip_end_of_turn(text)}
    if "<tool_call>" not in text:  # plain form: keep what the agent wrote
        return {"role": "assistant", "content": text.strip()}
    return {"role": "assistant", "content": "",
            "tool_calls": [{"type": "function", "function": {"name": call.name, "arguments": call.arguments}}]}


def tool_message(observation: str, name: str | None = None) -> dict:
    """A chat message carrying a tool result (rendered as ``<tool_response>`` by the template)."""
    message = {"role": "tool", "content": observation}
    if name:
        message["name"] = name
    return message
