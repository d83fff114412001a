"""Offline models: the conversion cache (atomic, self-repairing), the tiny alias, the tool-calling chat
template TRL parses, and run folders with LoRA adapters."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from searchgym.agent import models
from searchgym.agent.models import ModelError, load_model, resolve_model_path

SEARCH = {"type": "function", "function": {
    "name": "search", "description": "Search the corpus; returns the top hits with their doc ids.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string", "description": "what to find"}},
                   "required": ["query"]}}}
CALL = {"role": "assistant", "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": {"query": "Togo"}}}]}


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty SEARCHGYM_CACHE holding only a copy of the converted tokenizer (saves its ~7 s build)."""
    tokenizer = models._tokenizer_folder()  # in the real cache, built once
    shutil.copytree(tokenizer, tmp_path / "models" / tokenizer.name)
    monkeypatch.setenv("SEARCHGYM_CACHE", str(tmp_path))
    return tmp_path / "models"


def test_tiny_loads_ready_for_batched_generation(tiny):
    model, tokenizer = tiny
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.pad_token_id != tokenizer.convert_tokens_to_ids("<|im_end|>")
    batch = tokenizer(["hi", "a longer prompt here"], return_tensors="pt", padding=True)
    assert batch["attention_mask"][0, 0] == 0  # the short prompt is padded on the left
    out = model.generate(**batch, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape == (2, batch["input_ids"].shape[1] + 3)


def test_chat_template_renders_tools_and_tool_calls(tiny):
    _, tokenizer = tiny
    messages = [{"role": "system", "content": "Answer with the tools."}, {"role": "user", "content": "Capital?"},
                CALL, {"role": "tool", "content": "1. wiki:Togo"}]
    text = tokenizer.apply_chat_template(messages, tools=[SEARCH], tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nAnswer with the tools.\n\n# Tools")
    assert json.dumps(SEARCH) in text and "Qwen" not in text
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "search", "arguments": {"query": "Togo"}}\n'
            "</tool_call><|im_end|>") in text
    assert "<tool_response>\n1. wiki:Togo\n</tool_response>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_trl_recognises_the_template_and_parses_tool_calls(tiny):
    from trl.chat_template_utils import add_response_schema, parse_response, supports_tool_calling

    _, tokenizer = tiny
    assert supports_tool_calling(tokenizer)
    add_response_schema(tokenizer)  # raises for a template TRL does not bundle
    text = '<tool_call>\n{"name": "search", "arguments": {"query": "Togo"}}\n</tool_call><|im_end|>'
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Capital?"}], tokenize=False,
                                           add_generation_prompt=True)
    ids, prefix = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in (text, prompt))
    parsed = parse_response(tokenizer, ids, prefix=prefix)  # the prompt tells it where the turn starts
    assert parsed["tool_calls"][0]["function"] == {"name": "search", "arguments": {"query": "Togo"}}


def test_conversion_cache_is_atomic_and_rebuilds_broken_folders(fresh_cache, monkeypatch):
    def crash(model, tokenizer, dest):  # a build that dies half-way through writing
        (dest / "config.json").write_text("{}")
        raise KeyboardInterrupt

    real_save = models._save
    monkeypatch.setattr(models, "_save", crash)
    with pytest.raises(KeyboardInterrupt):
        resolve_model_path("tiny")
    assert sorted(p.name for p in fresh_cache.iterdir()) == ["smollm2-tokenizer"]  # no half folder left

    monkeypatch.setattr(models, "_save", real_save)
    path = resolve_model_path("tiny")
    assert path == fresh_cache / "tiny" and (path / "model.safetensors").is_file()
    model, _ = load_model("tiny")
    weights = model.model.embed_tokens.weight.clone()

    (path / "model.safetensors").unlink()  # a folder missing a file is detected and rebuilt
    rebuilt, _ = load_model("tiny")
    assert torch.equal(rebuilt.model.embed_tokens.weight, weights)  # seeded: same weights again

    def must_not_build(dest):
        raise AssertionError("a complete cache folder must be reused")

    monkeypatch.setattr(models, "_build_tiny", must_not_build)
    assert resolve_model_path("tiny") == path


def test_run_folder_loads_base_and_adapter(tiny, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    base, tokenizer = load_model("tiny")
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "run" / "adapter")
    config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"].endswith("tiny")
    ids = tokenizer("a question", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        expected = lora(ids).logits
        plain = tiny[0](ids).logits
        model, _ = load_model(str(tmp_path / "run"))
        assert isinstance(model, PeftModel)
        got = model(ids).logits
    assert torch.allclose(got, expected, atol=1e-5) and not torch.allclose(got, plain, atol=1e-3)


def test_unknown_model_says_what_to_do(tmp_path):
    with pytest.raises(ModelError, match="SEARCHGYM_ALLOW_DOWNLOAD"):
        load_model(str(tmp_path / "no-such-model"))


@pytest.mark.slow
def test_smollm2_converts_and_answers():
    model, tokenizer = load_model("smollm2-135m-instruct")
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1]:])


def _flip_a_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:100])


def _replace_with_folder(path):
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize("corrupt, reason", [
    (lambda p: _flip_a_bit(p / "model.safetensors"), "model.safetensors does not match its checksum"),
    (lambda p: _truncate(p / "model.safetensors"), "model.safetensors does not match its checksum"),
    (lambda p: _replace_with_folder(p / "model.safetensors"), "model.safetensors cannot be read"),
    (lambda p: (p / "checksums.json").unlink(), "checksums.json is missing"),
    (lambda p: (shutil.rmtree(p), p.write_text("a file")), "it is not a folder"),
])
def test_conversion_cache_is_verified_by_checksum_and_rebuilt(fresh_cache, caplog, monkeypatch, corrupt, reason):
    import logging

    path = resolve_model_path("tiny")
    weights = (path / "model.safetensors").read_bytes()
    corrupt(path)
    with caplog.at_level(logging.WARNING, logger="searchgym.agent.models"):
        assert resolve_model_path("tiny") == path
    assert reason in caplog.text and "rebuilding" in caplog.text
    assert (path / "model.safetensors").read_bytes() == weights  # seeded: the same model again
    assert sorted(p.name for p in fresh_cache.iterdir()) == ["smollm2-tokenizer", "tiny"]  # nothing left aside

    def must_not_build(dest):
        raise AssertionError("a verified cache folder must be reused")

    monkeypatch.setattr(models, "_build_tiny", must_not_build)
    assert resolve_model_path("tiny") == path
    load_model("tiny")  # loads, no traceback


def test_the_agent_front_is_the_models_module():
    """`searchgym.agent.load_model` (the documented front) is agent.models' own function, loaded on first use;
    the 0.1 package keeps no old import path (`searchgym.models` is gone)."""
    import importlib.util

    import searchgym.agent
    import searchgym.agent.models

    assert importlib.util.find_spec("searchgym.models") is None
    assert searchgym.agent.load_model is searchgym.agent.models.load_model
    assert searchgym.agent.PRIOR == "searchgym-prior"
