"""Agent actions are text: parse what an LLM emits into a `ToolCall`, and render calls back to text.

The canonical form is exactly what the bundled ChatML/Qwen2.5 template renders and TRL parses (a call
cut off inside its closing tag, or bare JSON without the tags, is accepted too)::

    <tool_call>
    {"name": "search", "arguments": {"query": "capital of Togo"}}
    </tool_call>

A lenient plain form (``search: capital of Togo``) is accepted too, so scripted agents and humans can
drive an env without JSON. Anything else raises `ActionError`, whose message is written for the
model: the env turns it into an error observation, never an exception out of ``step``.
"""

from __future__ import annotations

import json
import re

from searchgym.tasks import ToolCall

# name -> the one required argument. The env's tools define the same names (tools.py).
TOOL_ARGUMENTS = {"search": "query", "open": "doc_id", "answer": "text"}

_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_PLAIN = re.compile(r"^\s*(search|open|answer)\s*[:(]\s*(.*?)\s*\)?\s*$", re.IGNORECASE | re.DOTALL)
# Generation cut off inside the closing tag ("…}}\n</tool"): the JSON before it is complete.
_PARTIAL_CLOSE = re.compile(r"\s*<(/(t(o(o(l(_(c(a(l(l)?)?)?)?)?)?)?)?)?)?$")
_EOT = re.compile(r"\s*(<\|im_end\|>|<\|endoftext\|>)\s*$")


class ActionError(ValueError):
    """An action the env cannot execute; the message tells the agent how to fix it."""


def parse_action(text: object) -> ToolCall:
    """Parse one tool call from an agent's text.

    >>> parse_action('<tool_call>\\n{"name": "search", "arguments": {"query": "Togo"}}\\n</tool_call>')
    ToolCall(name='search', arguments={'query': 'Togo'})
    >>> parse_action("answer: Lomé")
    ToolCall(name='answer', arguments={'text': 'Lomé'})
    >>> parse_action("hello")
    Traceback (most recent call last):
    ...
    searchgym.envs.actions.ActionError: no tool call found: reply with <tool_call>{"name": "search", "arguments": {"query": "..."}}</tool_call> (tools: search, open, answer)
    """
    if not isinstance(text, str):
        raise ActionError(f"an action must be text, got {type(text).__name__}")
    text = _EOT.sub("", text)
    calls = _CALL.findall(text)
    if len(calls) > 1:
        raise ActionError(f"{len(calls)} tool calls in one turn: make exactly one tool call per turn")
    if calls:
        return _from_json(_PARTIAL_CLOSE.sub("", calls[0]))
    if text.strip().startswith("{"):  # a bare JSON call without the tags
        return _from_json(text.strip())
    plain = _PLAIN.match(text)
    if plain:
        name = plain.group(1).lower()
        value = plain.group(2).strip().strip('"')
        return _validated(name, {TOOL_ARGUMENTS[name]: value})
    raise ActionError('no tool call found: reply with <tool_call>{"name": "search", "arguments": '
                      '{"query": "..."}}</tool_call> (tools: search, open, answer)')


def _from_json(body: str) -> ToolCall:
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as e:
        raise ActionError(f"the tool call is not valid JSON ({e.msg} at char {e.pos}); write "
                          '{"name": ..., "arguments": {...}} inside <tool_call></tool_call>') from None
    if not isinstance(obj, dict) or "name" not in obj:
        raise ActionError('a tool call needs a "name" and "arguments": {"name": "search", '
                          '"arguments": {"query": "..."}}')
    args = obj.get("arguments", {})
    if isinstance(args, str):  # some models double-encode the arguments
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            raise ActionError('"arguments" must be a JSON object, e.g. {"query": "..."}') from None
    if not isinstance(args, dict):
        raise ActionError('"arguments" must be a JSON object, e.g. {"query": "..."}')
    return _validated(str(obj["name"]), args)


def _validated(name: str, args: dict) -> ToolCall:
    if name not in TOOL_ARGUMENTS:
        raise ActionError(f"unknown tool {name!r}: the tools are search(query), open(doc_id), answer(text)")
    required = TOOL_ARGUMENTS[name]
    extra = sorted(set(args) - {required})
    if extra:
        raise ActionError(f"{name} takes only {required!r}, got unexpected argument(s) {extra}")
    value = args.get(required)
    if not isinstance(value, str | int | float) or isinstance(value, bool) or not str(value).strip():
        raise ActionError(f"{name} needs a non-empty {required!r} argument (a string)")
    return ToolCall(name, {required: str(value).strip()})


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
        return {"role": "assistant", "content": _EOT.sub("", text)}
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
