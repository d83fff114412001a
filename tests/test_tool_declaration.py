"""Golden values of the tool declaration: what an LLM is shown (system prompt, tool schemas in TRL's order) and
every table derived from the `SearchTools` methods (names, arguments, parser messages, meter roles, signature
letters, the GRPO adapter's methods). The shipped prior reads the rendered system turn as ONE token, so none of
these may change by a byte; and a tool added to the declaration must reach every derived place."""

import inspect
import json
from types import SimpleNamespace

import pytest
from transformers.utils import get_json_schema

from searchgym.envs.actions import TOOL_ARGUMENTS, ActionError, parse_action
from searchgym.envs.search_env import SearchEnv
from searchgym.envs.tools import SYSTEM_PROMPT, TOOL_NAMES, SearchTools
from searchgym.rollout import role_spans
from searchgym.train.grpo_env import SearchEnvironment
from searchgym.train.prior_tokenizer import call_blocks, scaffold_blocks

SCHEMAS = [
    {
        "type": "function",
        "function": {
            "name": "answer",
            "description": "Submit your final answer. This ends the episode; make no more tool calls after it.",
            "parameters": {
                "type": "object",
                "properties": {
                    "text": {
                        "type": "string",
                        "description": "The answer only: a short name, place or number."
                    }
                },
                "required": [
                    "text"
                ]
            },
            "return": {
                "type": "string",
                "description": "A confirmation that the answer was recorded."
            }
        }
    },
    {
        "type": "function",
        "function": {
            "name": "open",
            "description": "Open a document and read its text.",
            "parameters": {
                "type": "object",
                "properties": {
                    "doc_id": {
                        "type": "string",
                        "description": "The id of a document, exactly as shown in square brackets by search."
                    }
                },
                "required": [
                    "doc_id"
                ]
            },
            "return": {
                "type": "string",
                "description": "The document's title and text (long documents are cut to fit). Search for the next fact,\n    open another document, or answer when you know the answer."
            }
        }
    },
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the document collection.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {
                        "type": "string",
                        "description": "A few keywords or a question, e.g. \"birthplace of Ilvar Tessa\"."
                    }
                },
                "required": [
                    "query"
                ]
            },
            "return": {
                "type": "string",
                "description": "The best-matching documents, one per line as \"[doc_id] title: snippet\". Call open with a\n    doc_id to read a whole document, search again with different words, or answer."
            }
        }
    }
]

SYSTEM = (
    "You answer questions by searching a document collection. Use the tools: search(query) returns "
    "the best-matching documents with their doc_id, title and a snippet; open(doc_id) returns a "
    "document's text; answer(text) submits your final answer and ends the episode. Make one tool call "
    "per turn. Facts may be spread over several documents: search, read, then search again for the next "
    "fact. Answer with a short name, place or number, not a sentence."
)


def test_schemas_and_system_prompt_are_unchanged():
    assert json.dumps(SearchTools.schemas(), ensure_ascii=False) == json.dumps(SCHEMAS, ensure_ascii=False)
    assert SYSTEM_PROMPT == SYSTEM


def test_names_and_arguments_are_unchanged():
    assert TOOL_NAMES == ("answer", "open", "search")  # alphabetical, as TRL lists them
    # declaration order: the parser's messages and the prior's call tokens follow it
    assert list(TOOL_ARGUMENTS.items()) == [("search", "query"), ("open", "doc_id"), ("answer", "text")]
    assert call_blocks() == ['<tool_call>\n{"name": "search", "arguments": {"query": "',
                             '<tool_call>\n{"name": "open", "arguments": {"doc_id": "',
                             '<tool_call>\n{"name": "answer", "arguments": {"text": "', '"}}\n</tool_call>']


def test_trl_derives_the_same_tools_from_the_grpo_adapter():
    # What GRPOTrainer does: every public function of the class but reset/get_reward, in getmembers order.
    members = [n for n, _ in inspect.getmembers(SearchEnvironment, predicate=inspect.isfunction)
               if n not in ("reset", "get_reward") and not n.startswith("_")]
    assert tuple(members) == TOOL_NAMES
    schemas = [get_json_schema(getattr(SearchEnvironment, n)) for n in members]
    assert json.dumps(schemas, ensure_ascii=False) == json.dumps(SCHEMAS, ensure_ascii=False)
    # a call with bad arguments fails as a plain method's would (TRL shows the model this message)
    with pytest.raises(TypeError) as missing:
        SearchEnvironment.search(object())
    assert str(missing.value) == "SearchEnvironment.search() missing 1 required positional argument: 'query'"
    with pytest.raises(TypeError) as extra:
        SearchEnvironment.answer(object(), text="x", k=1)
    assert str(extra.value) == "SearchEnvironment.answer() got an unexpected keyword argument 'k'"


@pytest.mark.parametrize("text, error", [
    ("hello", 'no tool call found: reply with <tool_call>{"name": "search", "arguments": {"query": "..."}}'
              "</tool_call> (tools: search, open, answer)"),
    ('{"name": "fly", "arguments": {}}', "unknown tool 'fly': the tools are search(query), open(doc_id), answer(text)"),
    ('{"x": 1}', 'a tool call needs a "name" and "arguments": {"name": "search", "arguments": {"query": "..."}}'),
    ('{"name": "search", "arguments": []}', '"arguments" must be a JSON object, e.g. {"query": "..."}'),
    ('{"name": "search", "arguments": "[1"}', "the tool call is not valid JSON (Expecting ',' delimiter at char 2); "
                                              'make "arguments" a JSON object, e.g. {"query": "..."}'),
    ('{"name": "open", "arguments": {"doc_id": "a", "k": 1}}', "open takes only 'doc_id', got unexpected argument(s) ['k']"),
    ("answer: ", "answer needs a non-empty 'text' argument (a string)"),
])
def test_parser_messages_are_unchanged(text, error):
    with pytest.raises(ActionError) as e:
        parse_action(text)
    assert str(e.value) == error


@pytest.mark.parametrize("text, spans", [
    ('<tool_call>\n{"name": "search", "arguments": {"query": "capital of Togo"}}\n</tool_call>', [(55, 70, "query")]),
    ('<tool_call>\n{"name": "answer", "arguments": {"text": "Lom\\u00e9 \\"x\\""}}\n</tool_call>', [(54, 69, "answer")]),
    ('<tool_call>\n{"name": "open", "arguments": {"doc_id": "wiki:Togo"}}\n</tool_call>', []),
    ("answer: Lome", [(8, 12, "answer")]),
    ("  Search( capital of Togo ) ", [(10, 25, "query")]),
    ("ANSWER:42\n", [(7, 9, "answer")]),
    ("open: wiki:Togo", []),
    ("I am not sure.", []),
    ('{"query": "a", "text": "b"}', [(11, 12, "query"), (24, 25, "answer")]),
])
def test_role_spans_are_unchanged(text, spans):
    assert role_spans(text) == spans


def test_signature_letters_are_unchanged():
    calls = [{"name": "search", "valid": True}, {"name": "open", "valid": True}, {"name": None, "valid": False},
             {"name": "answer", "valid": True}]
    assert SearchEnv.signature(SimpleNamespace(_calls=calls)) == "S O X A"


def test_shipped_prior_reads_the_rendered_system_turn_as_one_token():
    from searchgym.models import PRIOR, load_model

    _, tok = load_model(PRIOR, device="cpu")
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "Where was Ada born?"}]
    text = tok.apply_chat_template(messages, tools=SearchTools.schemas(), add_generation_prompt=True, tokenize=False)
    pieces = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])
    assert pieces[0] == "<|im_start|>" and pieces[2] == "<|im_end|>"
    assert pieces[1] == scaffold_blocks()[0] and pieces[1].startswith("system\n" + SYSTEM)
    assert len(pieces) == 19
