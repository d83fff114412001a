"""The shipped reference prior (searchgym/data/searchgym-prior): it loads offline, solves held-out questions
through the real env and rollout, and its tokenizer's whole-token names and calls survive TRL's parsing."""

import json

import torch

from searchgym.agent.models import PRIOR, load_model
from searchgym.config.agent_recipe import PretrainConfig
from searchgym.meters.stats import total_variation
from searchgym.train.pretrain import build_model, call_blocks, train_tokenizer
from searchgym.train.priors import (
    REFERENCE_PRIOR,
    evaluate_prior,
    export_prior,
    prior_metadata,
)

CALL = '<tool_call>\n{"name": "open", "arguments": {"doc_id": "syn:person:0042:b"}}\n</tool_call>'
# The shipped prior solves 28.5% of 100 held-out questions x 2 samples (docs/prior-lab.md); on 40 x 2 a
# prior that good clears 0.15 (2.7 standard deviations below its mean), an untrained or broken one scores ~0.
SUCCESS_FLOOR = 0.15


def test_whole_token_calls_and_names_round_trip_and_trl_parses_them():
    from trl.chat_template_utils import add_response_schema, parse_response

    words = ["Ilvar", "Tessa", "syn:person:0042", "syn:person:0042:b"]
    tok = train_tokenizer([CALL] * 20, 300, blocks=call_blocks(), words=words)
    ids = tok(CALL + "<|im_end|>")["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces[:3] == [call_blocks()[1], "syn:person:0042:b", call_blocks()[-1]]  # three tokens, longest id
    assert tok.decode(ids, skip_special_tokens=True) == CALL
    parser = add_response_schema(tok)
    prefix = parser.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                        return_dict=False)
    parsed = parse_response(parser, ids, prefix=prefix)
    assert parsed["tool_calls"][0]["function"] == {"name": "open", "arguments": {"doc_id": "syn:person:0042:b"}}
    assert tok.tokenize("Tessas Tessa")[-1] == "Tessa"  # whole words only: "Tessas" is not "Tessa" + "s"
    assert "Tessa" not in tok.tokenize("Tessas")


def test_shipped_prior_tool_calls_reach_trl_as_tool_calls():
    """transformers >= 5.25 parses token ids and defuses a <tool_call> spelled inside a larger token; the
    prior's whole-call tokens are declared control tokens (models.declare_merged_control_tokens), or GRPO
    sees no call at all (every reward 0, trained = base: what `make run` printed before the fix)."""
    from trl.chat_template_utils import add_response_schema, parse_response

    _, tok = load_model(PRIOR, device="cpu")
    parser = add_response_schema(tok)
    prefix = parser.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                        return_dict=False)
    for call, expected in [(CALL, {"name": "open", "arguments": {"doc_id": "syn:person:0042:b"}}),
                           ('<tool_call>\n{"name": "search", "arguments": {"query": "capital of Togo"}}\n</tool_call>',
                            {"name": "search", "arguments": {"query": "capital of Togo"}})]:
        ids = tok(call + "<|im_end|>", add_special_tokens=False)["input_ids"]
        assert len(ids) < len(call) / 3  # the call's JSON scaffold came as whole tokens
        parsed = parse_response(parser, ids, prefix=prefix)
        assert parsed["tool_calls"][0]["function"] == expected


def test_export_writes_a_loadable_float16_prior_with_its_provenance(tmp_path):
    run = tmp_path / "run"
    tok = train_tokenizer(["hello world"] * 20, 300)
    model = build_model(PretrainConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64), tok, 0)
    (run / "stages" / "pretrain").mkdir(parents=True)
    model.save_pretrained(run / "stages" / "pretrain" / "model")
    tok.save_pretrained(run / "stages" / "pretrain" / "model")
    (run / "recipe.toml").write_text('name = "p"\n[env]\nid = "searchgym/SyntheticWorld-Easy-v0"\n'
                                     'kwargs = { embedder = "hashing" }\n', encoding="utf-8")
    (run / "stages" / "pretrain" / "prior_mix.json").write_text(json.dumps({"realised": {"forward": 1.0}}))
    (run / "metrics.jsonl").write_text(json.dumps({"stage": "sft", "step": 1}) + "\n" + json.dumps(
        {"stage": "pretrain", "step": 7, "train/train_runtime": 12.5}) + "\n", encoding="utf-8")
    dest = export_prior(run, tmp_path / "prior")
    weights = dest / "model.safetensors"
    assert weights.stat().st_size < (run / "stages" / "pretrain" / "model" / "model.safetensors").stat().st_size
    loaded, _ = load_model(str(dest))
    assert loaded.dtype == torch.float32
    for name, p in model.named_parameters():  # float16 round trip: equal to ~3 significant digits
        assert torch.allclose(dict(loaded.named_parameters())[name], p, rtol=1e-2, atol=1e-3)
    meta = prior_metadata(dest)
    assert meta["env_id"] == "searchgym/SyntheticWorld-Easy-v0" and meta["mix"] == {"forward": 1.0}
    assert meta["pretrain_seconds"] == 12.5 and meta["steps"] == 7
    assert [json.loads(x)["stage"] for x in (dest / "training.jsonl").read_text().splitlines()] == ["pretrain"]


def test_total_variation_of_identical_and_disjoint_shares():
    assert total_variation({"a": 0.5, "b": 0.5}, {"b": 0.5, "a": 0.5}) == 0
    assert total_variation({"a": 1.0}, {"b": 1.0}) == 1


def test_reference_prior_loads_by_alias_and_solves_held_out_questions(one_thread):
    model, tokenizer = load_model(PRIOR)
    assert sum(p.numel() for p in model.parameters()) < 3_000_000
    assert (REFERENCE_PRIOR / "model.safetensors").stat().st_size < 5_000_000
    r = evaluate_prior(PRIOR, questions=40, samples=2)
    assert r["success_at_1"] >= SUCCESS_FLOOR, r
    assert r["invalid_share"] <= 0.2, r
    assert r["strategy_tv"] is not None and 0 <= r["strategy_tv"] <= 1


def test_metadata_sums_the_pretraining_seconds_of_resumed_segments(tmp_path):
    # The shipped prior was pretrained in three resumed segments: each logs its own train_runtime row.
    rows = [{"stage": "pretrain", "step": s, "train/train_runtime": t} for s, t in ((10, 5.0), (20, 2.5), (30, 1.5))]
    (tmp_path / "training.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    meta = prior_metadata(tmp_path)
    assert meta["pretrain_seconds"] == 9.0 and meta["steps"] == 30
