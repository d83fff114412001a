"""Golden values of the tool declaration: what an LLM is shown (system prompt, tool schemas in TRL's order) and
every table derived from the `SearchTools` methods (names, arguments, parser messages, meter roles, signature
letters, the GRPO adapter's methods). The shipped prior reads the rendered system turn as ONE token, so none of
these may change by a byte; and a tool added to the declaration must reach every derived place."""

import inspect
import json
from types import SimpleNamespace

import pytest
from transformers.utils import get_json_schema

from searchgym.agent.rollout import role_spans
from searchgym.envs.actions import TOOL_ARGUMENTS, ActionError, parse_action
from searchgym.envs.episode import Episode
from searchgym.envs.tools import SYSTEM_PROMPT, TOOL_NAMES, SearchTools
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
    assert Episode.signature(SimpleNamespace(calls=calls)) == "S O X A"


def test_shipped_prior_reads_the_rendered_system_turn_as_one_token():
    from searchgym.agent.models import PRIOR, load_model

    _, tok = load_model(PRIOR, device="cpu")
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "Where was Ada born?"}]
    text = tok.apply_chat_template(messages, tools=SearchTools.schemas(), add_generation_prompt=True, tokenize=False)
    pieces = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])
    assert pieces[0] == "<|im_start|>" and pieces[2] == "<|im_end|>"
    assert pieces[1] == scaffold_blocks()[0] and pieces[1].startswith("system\n" + SYSTEM)
    assert len(pieces) == 19


def test_derived_tables_equal_the_declaration():
    from searchgym.agent.rollout import _ROLE_OF
    from searchgym.envs import episode
    from searchgym.envs.tools import TOOLS

    assert [t.name for t in TOOLS] == list(TOOL_ARGUMENTS) and sorted(TOOL_ARGUMENTS) == list(TOOL_NAMES)
    assert all(TOOL_ARGUMENTS[t.name] == t.argument == list(inspect.signature(t.function).parameters)[1]
               for t in TOOLS)
    assert [s["function"]["name"] for s in SearchTools.schemas()] == list(TOOL_NAMES)
    assert episode._LETTERS == {t.name: t.letter for t in TOOLS}
    assert _ROLE_OF == {k: t.role for t in TOOLS if t.role for k in (t.argument, t.name)}
    for t in TOOLS:
        assert f"{t.name}({t.argument}) {t.prompt}" in SYSTEM_PROMPT
        assert getattr(SearchEnvironment, t.name).__doc__ == t.function.__doc__


# A fourth tool, added to SearchTools' source in a fresh interpreter: every derived place must carry it.
NEW_TOOL = '''
    @tool("returns the glossary entry of a term", role="query")
    def lookup(self, term: str) -> str:
        """Look a term up in the glossary.

        Args:
            term: The term to look up.

        Returns:
            The term's definition.
        """
        self._check_open_episode()
        return f"{term}: a term"

'''
FLOW = '''
import importlib.util, inspect, pathlib, sys
import gymnasium
import searchgym.envs
from transformers.utils import get_json_schema

path = pathlib.Path(searchgym.envs.__file__).with_name("tools.py")
source = path.read_text()
assert "searchgym.envs.tools" not in sys.modules and source.count("    def _check_open_episode") == 1
source = source.replace("    def _check_open_episode", NEW_TOOL + "    def _check_open_episode")
tools = importlib.util.module_from_spec(importlib.util.spec_from_loader("searchgym.envs.tools", loader=None))
sys.modules["searchgym.envs.tools"] = tools
exec(compile(source, str(path), "exec"), tools.__dict__)

from searchgym.envs import search_env
from searchgym.envs.actions import TOOL_ARGUMENTS, ActionError, parse_action
from searchgym.agent.rollout import role_spans
from searchgym.tasks import ToolCall
from searchgym.train.grpo_env import SearchEnvironment, make_environment_factory
from searchgym.train.prior_tokenizer import call_blocks

assert tools.TOOL_NAMES == ("answer", "lookup", "open", "search")
assert list(TOOL_ARGUMENTS.items())[-1] == ("lookup", "term")
assert "answer(text) submits your final answer and ends the episode; lookup(term) returns the glossary entry" \\
    in tools.SYSTEM_PROMPT
schemas = tools.SearchTools.schemas()
assert [s["function"]["name"] for s in schemas] == list(tools.TOOL_NAMES)
assert schemas[1]["function"]["parameters"]["required"] == ["term"]
assert parse_action("lookup: tarn") == ToolCall("lookup", {"term": "tarn"})
for text, end in [('{"name": "fly", "arguments": {}}', "answer(text), lookup(term)"), ("x", "answer, lookup)")]:
    try:
        parse_action(text)
    except ActionError as e:
        assert str(e).endswith(end), e
assert role_spans('{"name": "lookup", "arguments": {"term": "tarn"}}') == [(42, 46, "query")]
assert role_spans("Lookup: tarn") == [(8, 12, "query")]
assert call_blocks()[3] == '<tool_call>\\n{"name": "lookup", "arguments": {"term": "'
members = [n for n, _ in inspect.getmembers(SearchEnvironment, predicate=inspect.isfunction)
           if n not in ("reset", "get_reward") and not n.startswith("_")]
assert tuple(members) == tools.TOOL_NAMES
assert [get_json_schema(getattr(SearchEnvironment, n)) for n in members] == schemas

env = gymnasium.make("searchgym_plugin_example/Elements-v0", disable_env_checker=True).unwrapped
env.reset(options={"task_id": "el-sym-O"})
assert env.step("lookup: tarn")[0] == "tarn: a term" and env.signature() == "L"
adapter = make_environment_factory("searchgym_plugin_example/Elements-v0")()
adapter.reset(task_id="el-sym-O")
assert adapter.lookup(term="tarn") == "tarn: a term" and adapter.calls[0]["name"] == "lookup"
print("flowed")
'''


def test_a_new_tool_flows_to_every_derived_place():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", f"NEW_TOOL = {NEW_TOOL!r}\n" + FLOW], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("flowed"), result.stderr[-3000:]
