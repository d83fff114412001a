"""`searchgym meter`'s literature additions: the base-vs-arm line (Yue et al. 2025's coverage keys) and the
support meters (NLL of an arm's trajectories under the base model, agent tokens only)."""

from __future__ import annotations

import json
import math

import pytest

from searchgym.meters.coverage import compare_with_base
from searchgym.report.meter_command import meter_command
from searchgym.trajectory import Trajectory, write_trajectories


def traj(task_id: str, sample: int, correct: bool, messages: list[dict] | None = None) -> Trajectory:
    return Trajectory(task_id=task_id, env_id="searchgym/Test-v0", sample=sample, question=f"question {task_id}?",
                      messages=messages or [], calls=[{"name": "answer", "arguments": {}, "valid": True}],
                      signature="A", strategy="direct", queries=[], docs_retrieved=[], docs_opened=[], answer="x",
                      reward=float(correct), correct=correct, gold_answers=["x"], evidence=[["d1"]], difficulty=1)


# ---- the base-vs-arm line ----------------------------------------------------------------------------

def test_meter_prints_and_writes_the_base_vs_arm_coverage_keys(tmp_path, capsys):
    # Correct counts out of n = 4: the base solves q1, q2, q3 at k = 4; the arm solves q1 often, q4 once.
    base_counts = {"q1": 1, "q2": 2, "q3": 1, "q4": 0}
    arm_counts = {"q1": 4, "q2": 0, "q3": 0, "q4": 1}
    for name, counts in (("base", base_counts), ("arm", arm_counts)):
        write_trajectories(tmp_path / f"{name}.jsonl",
                           [traj(q, i, i < c) for q, c in counts.items() for i in range(4)])

    meter_command([tmp_path / "base.jsonl", tmp_path / "arm.jsonl"], out=tmp_path / "m.json", n_boot=100)

    vs_base = json.loads((tmp_path / "m.json").read_text())["comparisons"][0]["vs_base"]
    expected = compare_with_base(base_counts, arm_counts, n=4, n_boot=100)
    assert vs_base == pytest.approx(expected, nan_ok=True)
    assert vs_base["coverage/inclusion"] == 0.5  # of the arm's {q1, q4}, the base also solves q1
    assert vs_base["coverage/new"] == 0.25 and vs_base["coverage/lost"] == 0.5
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("arm vs base:")]
    assert len(lines) == 1 and len(lines[0]) <= 80
    assert "inclusion 0.5, new 0.25, lost 0.5" in lines[0] and "ΔSE" in lines[0] and "crossing k" in lines[0]


# ---- support/base_nll: the NLL of the agent's tokens, against a token-by-token reference --------------

def conversation(question: str, query: str, result: str, answer: str) -> list[dict]:
    """A conversation as the rollout stores it: system prompt, question, a tool call, its result, an answer."""
    from searchgym.envs.actions import assistant_message, format_tool_call, tool_message
    from searchgym.envs.tools import SYSTEM_PROMPT
    from searchgym.tasks import ToolCall

    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question},
            assistant_message(format_tool_call(ToolCall("search", {"query": query}))), tool_message(result),
            assistant_message(format_tool_call(ToolCall("answer", {"text": answer})))]


@pytest.fixture(scope="module")
def tiny():
    """A tiny random Llama and a ChatML tokenizer with the rollouts' chat template, built here (no download)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from searchgym.train.pretrain import chat_texts, scaffold_blocks, train_tokenizer

    trajectories = [traj("q1", 0, True, conversation("Where was Ilvar Tessa born?", "Ilvar Tessa birthplace",
                                                     "[syn:person:0001] Ilvar Tessa was born in Morut.", "Morut")),
                    traj("q2", 0, False, conversation("Who founded Acme?", "Acme founder",
                                                      "[syn:org:0002] Acme was founded in 1901.", "Ada Lovelace")),
                    traj("q3", 0, True, conversation("Capital?", "capital", "No result.", "Lome"))]
    # The scaffold (system prompt + tool schemas) is one token, as in the prior lab: short sequences.
    tokenizer = train_tokenizer(chat_texts(trajectories, train_tokenizer(["x"], 300)), 400, blocks=scaffold_blocks())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=4096,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    return model, tokenizer, trajectories


def reference_nll(model, tokenizer, trajectories) -> tuple[float, int]:
    """Brute force: each assistant token's NLL from its own forward pass over the tokens before it, the
    assistant spans found by a regex over the rendered text (not by agent_labels)."""
    import re

    import torch

    from searchgym.train.pretrain import chat_texts

    total, count = 0.0, 0
    for text in chat_texts(trajectories, tokenizer):
        spans = [(m.start(1), m.end(1)) for m in
                 re.finditer(r"<\|im_start\|>assistant\n(.*?<\|im_end\|>)", text, flags=re.DOTALL)]
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"]
        for t, (start, _) in enumerate(enc["offset_mapping"]):
            if t == 0 or not any(a <= start < b for a, b in spans):
                continue
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids[:t]])).logits[0, -1].double()
            total -= torch.log_softmax(logits, dim=-1)[ids[t]].item()
            count += 1
    return total / count, count


def test_assistant_nll_matches_a_token_by_token_reference(tiny):
    from searchgym.report.support import assistant_nll

    model, tokenizer, trajectories = tiny
    expected, tokens = reference_nll(model, tokenizer, trajectories)
    for batch_size in (1, 2, 3):  # padding and batching change nothing
        got = assistant_nll(model, tokenizer, trajectories, batch_size=batch_size)
        assert got["nll"] == pytest.approx(expected, abs=1e-4)
        assert got["tokens"] == tokens and got["ppl"] == pytest.approx(math.exp(got["nll"]))
    assert not model.training


def test_only_the_agents_tokens_are_scored(tiny):
    from searchgym.report.support import agent_token_labels

    _, tokenizer, trajectories = tiny
    for t, (_, labels) in zip(trajectories, agent_token_labels(tokenizer, trajectories)):
        scored = tokenizer.decode([i for i in labels if i != -100])
        assert t.messages[2]["tool_calls"][0]["function"]["arguments"]["query"] in scored
        assert t.question not in scored and t.messages[3]["content"] not in scored  # context is not
        assert scored.count("<|im_end|>") == 2  # each assistant turn ends with its end-of-turn token


def test_support_meters_keys_and_the_base_scoring_its_own_samples(tiny):
    from searchgym.report.support import assistant_nll, support_meters

    model, tokenizer, trajectories = tiny
    pair = (model, tokenizer)
    values = support_meters(trajectories, pair, pair)
    assert values["support/base_nll"] == values["support/own_nll"]
    assert values["support/base_ppl"] == pytest.approx(math.exp(values["support/base_nll"]))
    assert values["support/base_nll"] == pytest.approx(assistant_nll(model, tokenizer, trajectories)["nll"])
    assert math.isnan(support_meters(trajectories, pair)["support/own_nll"])


def test_run_models_reads_which_model_a_run_names(tmp_path):
    from searchgym.report.support import run_models

    trained = tmp_path / "grpo"
    (trained / "adapter").mkdir(parents=True)
    (trained / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/m/tiny"}))
    (trained / "recipe.toml").write_text('[model]\nbase = "tiny"\n')
    (trained / "baseline").mkdir()
    untrained = tmp_path / "base"
    untrained.mkdir()
    (untrained / "recipe.toml").write_text('[model]\nbase = "/priors/p"\n')
    prior = tmp_path / "prior"
    (prior / "stages" / "pretrain" / "model").mkdir(parents=True)
    (prior / "stages" / "pretrain" / "model" / "config.json").write_text("{}")

    assert run_models(trained) == ("tiny", str(trained))  # an alias's cache folder maps back to the alias
    assert run_models(trained / "trajectories.jsonl") == ("tiny", str(trained))
    assert run_models(trained / "baseline") == ("tiny", "tiny")
    assert run_models(untrained) == ("/priors/p", "/priors/p")
    model = str((prior / "stages" / "pretrain" / "model").resolve())
    assert run_models(prior) == (model, model)
    with pytest.raises(ValueError, match="not in a run folder"):
        run_models(tmp_path / "loose.jsonl")


def test_meter_base_nll_scores_a_run_under_the_model_it_names(tiny, tmp_path, capsys):
    from searchgym.report.support import assistant_nll

    model, tokenizer, trajectories = tiny
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    run = tmp_path / "run"
    write_trajectories(run / "trajectories.jsonl", trajectories)
    (run / "recipe.toml").write_text(f'[model]\nbase = "{tmp_path / "model"}"\n')
    write_trajectories(tmp_path / "loose.jsonl", trajectories)

    meter_command([run, tmp_path / "loose.jsonl"], out=tmp_path / "m.json", n_boot=50, base_nll=True)

    inputs = json.loads((tmp_path / "m.json").read_text())["inputs"]
    expected = assistant_nll(model, tokenizer, trajectories)
    assert inputs[0]["meters"]["support/base_nll"] == pytest.approx(expected["nll"], abs=1e-5)
    assert inputs[0]["meters"]["support/own_nll"] == inputs[0]["meters"]["support/base_nll"]  # untrained
    assert inputs[0]["support_models"] == {"base": str(tmp_path / "model"), "own": str(tmp_path / "model")}
    assert "support/base_nll" not in inputs[1]["meters"]
    assert "support meters skipped for loose" in capsys.readouterr().out
