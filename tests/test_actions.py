"""Action parsing: every malformed action becomes an ActionError with a message for the model."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from searchgym.envs.actions import ActionError, assistant_message, format_tool_call, parse_action
from searchgym.envs.rewards import exact_match, token_f1
from searchgym.tasks import ToolCall
from searchgym.util.text import normalize_answer


@pytest.mark.parametrize("text, expected", [
    ('<tool_call>\n{"name": "search", "arguments": {"query": "Togo"}}\n</tool_call>', ToolCall("search", {"query": "Togo"})),
    ('<tool_call>{"name": "open", "arguments": {"doc_id": "wiki:Togo"}}</tool_call><|im_end|>', ToolCall("open", {"doc_id": "wiki:Togo"})),
    ('Let me look.\n<tool_call>\n{"name": "answer", "arguments": "{\\"text\\": \\"Lomé\\"}"}\n</tool_call>', ToolCall("answer", {"text": "Lomé"})),
    ('<tool_call>\n{"name": "search", "arguments": {"query": "cut off by the budget"}}', ToolCall("search", {"query": "cut off by the budget"})),
    ('<tool_call>\n{"name": "search", "arguments": {"query": "Togo"}}\n</tool', ToolCall("search", {"query": "Togo"})),
    ('{"name": "open", "arguments": {"doc_id": "wiki:Togo"}}', ToolCall("open", {"doc_id": "wiki:Togo"})),
    ("search: capital of Togo", ToolCall("search", {"query": "capital of Togo"})),
    ("OPEN: syn:person:0001", ToolCall("open", {"doc_id": "syn:person:0001"})),
    ("answer(42)", ToolCall("answer", {"text": "42"})),
    ('<tool_call>{"name": "answer", "arguments": {"text": 1999}}</tool_call>', ToolCall("answer", {"text": "1999"})),
])
def test_parses_canonical_and_lenient_forms(text, expected):
    assert parse_action(text) == expected


@pytest.mark.parametrize("text, message", [
    ("just chatting", "no tool call found"),
    ("<tool_call>{oops}</tool_call>", "not valid JSON"),
    ('<tool_call>{"name": "fly", "arguments": {}}</tool_call>', "unknown tool 'fly'"),
    ('<tool_call>{"name": "search", "arguments": {}}</tool_call>', "needs a non-empty 'query'"),
    ('<tool_call>{"name": "search", "arguments": {"query": "a", "k": 2}}</tool_call>', "unexpected argument"),
    ('<tool_call>{"name": "open", "arguments": ["x"]}</tool_call>', "must be a JSON object"),
    ('<tool_call>{"arguments": {}}</tool_call>', 'needs a "name"'),
    ('<tool_call>{"name": "search", "arguments": {"query": "a"}}</tool_call>'
     '<tool_call>{"name": "search", "arguments": {"query": "b"}}</tool_call>', "one tool call per turn"),
    (None, "must be text"),
    ('<tool_call>{"name": "answer", "arguments": {"text": true}}</tool_call>', "non-empty 'text'"),
])
def test_malformed_actions_name_the_problem(text, message):
    with pytest.raises(ActionError, match=message):
        parse_action(text)


@given(st.sampled_from(["search", "open", "answer"]), st.text(min_size=1).filter(lambda s: s.strip()))
def test_format_then_parse_round_trips(name, value):
    arg = {"search": "query", "open": "doc_id", "answer": "text"}[name]
    call = ToolCall(name, {arg: value.strip()})
    assert parse_action(format_tool_call(call)) == call


@given(st.text(max_size=200))
def test_parse_action_raises_only_action_error(text):
    try:
        parse_action(text)
    except ActionError:
        pass


def test_assistant_message_structures_tool_calls():
    text = format_tool_call(ToolCall("search", {"query": "x"}))
    msg = assistant_message(text + "<|im_end|>")
    assert msg["tool_calls"][0]["function"] == {"name": "search", "arguments": {"query": "x"}}
    assert assistant_message("no call here")["content"] == "no call here"


def test_rewards_normalise_accents_articles_and_punctuation():
    assert normalize_answer("The Côte d'Ivoire") == "cote d ivoire"
    assert exact_match("LOMÉ.", ["Lome"]) == 1.0
    assert exact_match("", ["x"]) == 0.0
    assert token_f1("the west african cfa franc", ["West African CFA franc"]) == 1.0
    assert 0 < token_f1("cfa", ["West African CFA franc"]) < 1


# -- hardening (issue #14): every string parses, in linear time, to a call or an ActionError -------------
@pytest.mark.parametrize("text, expected", [
    ("open: wiki:Casablanca (film)", ToolCall("open", {"doc_id": "wiki:Casablanca (film)"})),
    ("open(wiki:Casablanca (film))", ToolCall("open", {"doc_id": "wiki:Casablanca (film)"})),
    ("answer: Foo (Bar)", ToolCall("answer", {"text": "Foo (Bar)"})),
    ("Search ( x )", ToolCall("search", {"query": "x"})),
    ("answer(42", ToolCall("answer", {"text": "42"})),  # cut off before its ")": still a call
    ("search: capital of Togo <|im_end|>\n", ToolCall("search", {"query": "capital of Togo"})),
])
def test_plain_form_keeps_parentheses_that_belong_to_the_value(text, expected):
    assert parse_action(text) == expected


@pytest.mark.parametrize("text, message", [
    ("<tool_call>" + "[" * 1000 + "]" * 1000 + "</tool_call>", "nests JSON deeper"),
    ('<tool_call>{"name": "search", "arguments": "' + "[" * 1000 + '"}</tool_call>', "nests JSON deeper"),
    ('<tool_call>{"name": "search", "arguments": {"query": ' + "9" * 5000 + "}}</tool_call>", "digits"),
    ('{"name": "answer", "arguments": {"text": -' + "1" * 101 + "}}", "digits"),
])
def test_deep_json_and_huge_numbers_are_action_errors(text, message):
    with pytest.raises(ActionError, match=message):
        parse_action(text)


def test_brackets_inside_strings_do_not_count_as_nesting():
    query = "[" * 500 + "{" * 500
    assert parse_action(format_tool_call(ToolCall("search", {"query": query}))).arguments["query"] == query
    assert parse_action('<tool_call>{"name": "answer", "arguments": {"text": 1234567}}</tool_call>') \
        == ToolCall("answer", {"text": "1234567"})


def test_lone_surrogates_become_replacement_characters():
    # A tokenizer raises TypeError on a lone surrogate; the JSON escape \ud800 makes one too.
    call = parse_action('<tool_call>{"name": "search", "arguments": {"query": "a\\ud800"}}</tool_call>')
    assert call.arguments["query"] == "a\ufffd"
    assert parse_action("search: \udfffb").arguments["query"] == "\ufffdb"


PATHOLOGICAL = [" " * 200_000, "\n\t" * 100_000, "<tool_call>" + " " * 200_000 + "x", " " * 200_000 + "</tool",
                "<tool_call>" + " " * 200_000 + "<", "search:" + " " * 200_000 + ")x", "open(" * 40_000,
                "<tool_call>" * 20_000, "{" * 200_000, "[" * 100_000 + "]" * 100_000, '"' * 200_000,
                " " * 100_000 + "<|im_end|>" + " " * 100_000, "<" * 200_000]


def test_pathological_strings_parse_in_linear_time():
    # The regex parser took 1.8 s on 8,000 spaces and ~5 minutes on 100,000 (quadratic backtracking);
    # linear parsing does all of these 200,000-character strings in milliseconds. The bound is generous.
    import time

    start = time.perf_counter()
    for text in PATHOLOGICAL:
        try:
            parse_action(text)
        except ActionError:
            pass
        assert assistant_message(text)["role"] == "assistant"  # renders the same text: linear too
    assert time.perf_counter() - start < 2.0
