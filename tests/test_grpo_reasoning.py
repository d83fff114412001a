"""GRPO rollouts ignore tool calls written inside ``<think>`` reasoning, the rule SearchEnv's ``step`` applies
(`searchgym.envs.actions.strip_reasoning`): on the engine path (``grpo.rollout = "engine"``) and on TRL's own
tool loop (``"trl"``) once `ignore_reasoning_calls` is on its processing class. Generation is scripted as in
tests/test_grpo.py (a random tiny model never calls a tool).
"""

import copy
import json
import pickle

import pytest
import torch

import searchgym  # noqa: F401  (registers the envs)
from searchgym.agent.models import load_model
from searchgym.envs.actions import ActionError, parse_action
from searchgym.train import grpo, grpo_rollout
from searchgym.train.context import TrainContext
from searchgym.train.grpo_rollout import ReasoningFreeParser, ignore_reasoning_calls
from searchgym.train.stages import load_recipe

SMOKE = "agents/smoke-grpo.toml"
# A long reasoning block that writes out a wrong answer call: running it would end the episode wrongly.
REASONING = "<think>" + "Let me work out which document names the person. " * 60 + (
    '<tool_call>\n{"name": "answer", "arguments": {"text": "FAKE ANSWER"}}\n</tool_call>'
    " No - search first.</think>\n")


def call(name, **arguments):
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


@pytest.fixture(scope="module")
def tokenizer():
    from trl.chat_template_utils import add_response_schema

    _, tok = load_model("tiny")
    return ignore_reasoning_calls(add_response_schema(tok))


PREFIX = "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"


def without_reasoning_field():
    """TRL's ChatML response template without its ``reasoning_content`` field: what a template that knows
    nothing of ``<think>`` parses (there, a call inside reasoning is a call)."""
    from trl.chat_template_utils import qwen3_template

    template = copy.deepcopy(qwen3_template)
    del template["fields"]["reasoning_content"]
    return template


def parsed_calls(tokenizer, text, prefix=PREFIX):
    from trl.chat_template_utils import parse_response

    ids = tokenizer.encode(text + "<|im_end|>", add_special_tokens=False)
    parsed = parse_response(tokenizer, ids, prefix=tokenizer.encode(prefix, add_special_tokens=False))
    return [(c["function"]["name"], c["function"]["arguments"]) for c in parsed.get("tool_calls", [])]


@pytest.mark.parametrize("text, calls", [
    (call("search", query="REAL"), [("search", {"query": "REAL"})]),  # no reasoning: parsed as before
    (REASONING + call("search", query="REAL"), [("search", {"query": "REAL"})]),
    ("<think>maybe " + call("search", query="FAKE") + " no</think>\nI give up.", []),
    (call("search", query="REAL") + "\n<think>" + call("search", query="FAKE") + "</think>", [("search", {"query": "REAL"})]),
    ("<think>out of tokens " + call("search", query="FAKE"), []),  # never closed: nothing after it is a call
    ("<think>a</think>" + call("search", query="REAL") + "<think>" + call("open", doc_id="FAKE"),
     [("search", {"query": "REAL"})]),
    (call("search", query="what is <think>"), []),  # the env refuses it too (an unclosed <think>)
])
def test_parse_ignores_calls_in_reasoning_like_parse_action(tokenizer, text, calls):
    assert parsed_calls(tokenizer, text) == calls
    try:  # the env's rule on the same text: the call its step would run, or none
        env_call = parse_action(text)
    except ActionError:
        assert calls == []
    else:
        assert calls == [(env_call.name, env_call.arguments)]


def test_the_rule_does_not_depend_on_the_response_template(tokenizer):
    """With a template that has no reasoning field, the tokenizer's own parse runs the call written inside
    <think>; the installed parser does not."""
    text = REASONING + call("search", query="REAL")
    plain = copy.copy(tokenizer)
    plain.__dict__.pop("parse_response")
    plain.response_template = tokenizer.response_template = without_reasoning_field()
    try:
        assert [n for n, _ in parsed_calls(plain, text)] == ["answer", "search"]  # the fake answer would run
        assert parsed_calls(tokenizer, text) == [("search", {"query": "REAL"})]
    finally:
        del tokenizer.response_template
        from trl.chat_template_utils import add_response_schema

        add_response_schema(tokenizer)


def test_a_template_that_opens_the_reasoning_is_honoured(tokenizer):
    """A prompt ending in ``<think>`` (reasoning templates pre-write it): the turn starts inside reasoning."""
    text = "reasoning " + call("search", query="FAKE") + "</think>\n" + call("search", query="REAL")
    assert parsed_calls(tokenizer, text, prefix=PREFIX + "<think>\n") == [("search", {"query": "REAL"})]


def test_the_parser_is_installed_once_survives_copies_and_is_not_saved(tokenizer, tmp_path):
    parser = tokenizer.__dict__["parse_response"]
    assert isinstance(parser, ReasoningFreeParser) and ignore_reasoning_calls(tokenizer) is tokenizer
    assert tokenizer.__dict__["parse_response"] is parser
    clone = copy.deepcopy(tokenizer)
    assert clone.parse_response.tokenizer is clone  # the copy parses with itself, not the original
    assert pickle.loads(pickle.dumps(tokenizer)).parse_response.tokenizer is not None
    tokenizer.save_pretrained(tmp_path)
    assert not any("ReasoningFree" in p.read_text() for p in tmp_path.glob("*.json"))


# ---- both rollout paths, scripted ----------------------------------------------------------------------

def build(tmp_path, rollout):
    recipe = load_recipe(SMOKE, [f"grpo.rollout={rollout}", "grpo.steps=1", "grpo.max_completion_length=1536"])
    model, tok = load_model(recipe.model.base)
    trainer = grpo.grpo_trainer(TrainContext(recipe, tmp_path / rollout, stage="grpo", model=model, tokenizer=tok))
    return trainer, [dict(r) for r in trainer.train_dataset]


def scripted(tokenizer, gold_by_question):
    """Turn 0: long reasoning holding a wrong answer call, then a real search; turn 1: the gold answer."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def generate(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        out = []
        for ids in prompt_ids:
            text = tokenizer.decode(ids)
            question = text.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
            turn = text.count("<tool_response>")
            reply = (REASONING + call("search", query=question) if turn == 0 else
                     call("answer", text=gold_by_question[question]) if turn == 1 else "Done.")
            out.append(tokenizer.encode(reply, add_special_tokens=False) + [end])
        return out, None

    return generate


@pytest.mark.parametrize("template", ["chatml", "no-reasoning-field"])
@pytest.mark.parametrize("rollout", ["engine", "trl"])
def test_a_call_inside_a_long_think_block_is_not_run(tmp_path, monkeypatch, rollout, template):
    from trl import GRPOTrainer

    from tests.test_grpo import scripted_engine_turn

    trainer, rows = build(tmp_path, rollout)
    tokenizer = trainer.processing_class
    # Both paths: grpo_trainer put the rule on the processing class (TRL's loop has no hook of its own).
    assert isinstance(getattr(tokenizer, "parse_response", None), ReasoningFreeParser)
    if template != "chatml":
        monkeypatch.setattr(tokenizer, "response_template", without_reasoning_field())
    generate = scripted(tokenizer, {row["prompt"][-1]["content"]: row["answers"][0] for row in rows})
    monkeypatch.setattr(GRPOTrainer, "_generate_single_turn", generate)
    monkeypatch.setattr(grpo_rollout, "sample_turn", scripted_engine_turn(generate))
    with torch.no_grad():
        out = trainer._generate_and_score_completions([rows[0], rows[0]])
    envs = trainer.environments if rollout == "trl" else trainer.rollout_func.pool
    for e in envs[:2]:
        assert [c["name"] for c in e.calls] == ["search", "answer"], e.calls  # the reasoning's answer never ran
        assert e.calls[1]["arguments"]["text"] == rows[0]["answers"][0] and e.get_reward() > 0.9
    completion = tokenizer.decode(out["completion_ids"][0][out["completion_mask"][0].bool()].tolist())
    assert completion.count("FAKE ANSWER") == 1  # the reasoning is still in the trained tokens, only not run
