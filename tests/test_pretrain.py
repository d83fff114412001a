"""The prior lab's pretraining stage: a tiny from-scratch run on a small world, its tokenizer, its
strategy mixture and resume. One shared run (a module fixture, ~20 s on one core) feeds most tests."""

import json
import shutil

import pytest
import torch

from searchgym.config.agent_recipe import RecipeError
from searchgym.runs import read_metrics
from searchgym.train.pretrain import (
    _pretrain_env,
    expected_mix,
    mixture_weights,
    model_dir,
    realised_mix,
    run_pretrain,
    sample_demos,
)
from searchgym.train.stages import recipe_from_dict

SMALL_ENV = {"id": "searchgym/SyntheticWorld-Easy-v0",
             "kwargs": {"embedder": "hashing", "top_k": 2, "max_obs_chars": 300, "max_steps": 6,
                        "world_kwargs": {"size": "small", "max_hops": 2, "n_train": 60, "n_test": 20}}}
MIXTURE = {"forward": 0.5, "question_first": 0.3, "verify": 0.2, "snippet": 0.0}


def tiny_recipe(**pretrain):
    settings = dict(mixture=MIXTURE, num_demos=48, documents=False, vocab_size=1024, hidden_size=64,
                    num_layers=2, num_heads=4, intermediate_size=128, batch_size=8, max_length=512,
                    epochs=4, learning_rate=1e-2, warmup_steps=1, logging_steps=1, save_steps=3)
    settings.update(pretrain)
    return recipe_from_dict({"name": "pretrain-test", "stages": ["pretrain"], "env": SMALL_ENV,
                             "pretrain": settings})


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, one_thread):
    run_dir = tmp_path_factory.mktemp("pretrain-run")
    recipe = tiny_recipe()
    model, tokenizer = run_pretrain(recipe, run_dir, progress=False)
    return recipe, run_dir, model, tokenizer


def _losses(run_dir):
    return [(r["step"], r["train/loss"]) for r in read_metrics(run_dir)
            if r.get("stage") == "pretrain" and "train/loss" in r]


def test_loss_falls(pretrained):
    losses = [loss for _, loss in _losses(pretrained[1])]
    assert len(losses) >= 8
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 1.0, losses


def test_saved_model_reloads_with_load_model_and_speaks_chatml(pretrained):
    from searchgym.agent.models import load_model
    from searchgym.envs.tools import SYSTEM_PROMPT, SearchTools

    _, run_dir, returned, _ = pretrained
    model, tokenizer = load_model(str(model_dir(run_dir)))
    assert model.config.model_type == "llama" and sum(p.numel() for p in model.parameters()) < 1_000_000
    assert torch.equal(model.lm_head.weight, returned.lm_head.weight)  # what the stage returned is what it saved
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "Where was Ada born?"}]
    prompt = tokenizer.apply_chat_template(messages, tools=SearchTools.schemas(), add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]
    # A 24-step model has learned the conversation's structure, not yet its content: what it expects after
    # "<|im_start|>assistant\n" is a ChatML or tool tag (a random init would rank them near chance).
    with torch.no_grad():
        top = model(**prompt).logits[0, -1].topk(5).indices.tolist()
    tags = {"<tool_call>", "</tool_call>", "<|im_end|>", "<|im_start|>", "<tool_response>", "</tool_response>"}
    assert tags & set(tokenizer.convert_ids_to_tokens(top)), tokenizer.convert_ids_to_tokens(top)


def test_tokenizer_round_trips_tool_calls_and_trl_parses_them(pretrained):
    from trl.chat_template_utils import add_response_schema, parse_response

    from searchgym.envs.tools import SearchTools
    from searchgym.trajectory import read_trajectories

    _, run_dir, _, tokenizer = pretrained
    call = '<tool_call>\n{"name": "search", "arguments": {"query": "birthplace of Ilvar Tessa"}}\n</tool_call>'
    ids = tokenizer(call + "<|im_end|>")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids)[0] == "<tool_call>"
    # TRL decodes completions without special tokens: the tool tags must survive that.
    assert tokenizer.decode(ids, skip_special_tokens=True) == call
    demo = next(iter(read_trajectories(run_dir / "stages" / "pretrain" / "demos.jsonl")))
    text = tokenizer.apply_chat_template(demo.messages, tools=SearchTools.schemas(), tokenize=False)
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    parser = add_response_schema(tokenizer)
    prefix = parser.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                        return_dict=False)
    parsed = parse_response(parser, ids, prefix=prefix)
    assert parsed["tool_calls"][0]["function"] == {"name": "search",
                                                   "arguments": {"query": "birthplace of Ilvar Tessa"}}


def test_agent_loss_counts_the_assistant_turns_only(pretrained):
    from searchgym.envs.tools import SearchTools
    from searchgym.train.pretrain import agent_labels
    from searchgym.trajectory import read_trajectories

    _, run_dir, _, tokenizer = pretrained
    demo = next(iter(read_trajectories(run_dir / "stages" / "pretrain" / "demos.jsonl")))
    text = tokenizer.apply_chat_template(demo.messages, tools=SearchTools.schemas(), tokenize=False)
    enc = tokenizer(text, return_offsets_mapping=True)
    labels = agent_labels(text, enc["input_ids"], enc["offset_mapping"])
    counted = tokenizer.decode([i for i in labels if i != -100])
    first_query = demo.calls[0]["arguments"]["query"]
    assert first_query in counted and demo.answer in counted  # the agent's own words count
    assert demo.question not in counted and "<tool_response>" not in counted  # context does not
    assert counted.count("<|im_end|>") == sum(m["role"] == "assistant" for m in demo.messages)
    assert recipe_from_dict({"pretrain": {"loss_on": "agent"}}).pretrain.loss_on == "agent"
    with pytest.raises(RecipeError, match="pretrain.loss_on"):
        recipe_from_dict({"pretrain": {"loss_on": "tools"}})


def test_prior_mix_file_lists_only_weighted_strategies(pretrained):
    _, run_dir, _, _ = pretrained
    mix = json.loads((run_dir / "stages" / "pretrain" / "prior_mix.json").read_text())
    assert mix["demos"] == 48 and set(mix["realised"]) <= {"forward", "question_first", "verify"}
    assert abs(sum(mix["realised"].values()) - 1) < 1e-9 and mix["configured"]["snippet"] == 0


def test_realised_mixture_matches_the_weights():
    recipe = tiny_recipe(num_demos=300)
    demos = sample_demos(recipe, progress=False)
    env = _pretrain_env(recipe)
    expected = expected_mix(mixture_weights(MIXTURE, env.unwrapped.taskset.strategies), env.unwrapped.tasks)
    env.close()
    realised = realised_mix(demos)
    assert "snippet" not in realised and "parallel" not in realised  # weight 0 (or unnamed) never appears
    assert set(realised) == {"forward", "question_first", "verify"}
    for s, share in expected.items():  # n = 300: 3 standard errors of a share is at most 0.09
        assert abs(realised[s] - share) < 0.09, (s, realised, expected)
    assert all(d.correct and d.strategy == d.meta["demo_strategy"] for d in demos)


def test_agent_loss_run_trains_on_the_agent_turns(tmp_path, one_thread):
    # with documents: they follow the conversations in the training texts and keep their full labels
    recipe = tiny_recipe(loss_on="agent", num_demos=16, epochs=2, save_steps=100, documents=True)
    model, _ = run_pretrain(recipe, tmp_path, progress=False)
    losses = [loss for _, loss in _losses(tmp_path)]
    assert len(losses) >= 4 and all(0 < x < 20 for x in losses)
    assert losses[-1] < losses[0]
    assert (model_dir(tmp_path) / "config.json").exists()


def test_max_hops_limits_the_pretraining_questions():
    demos = sample_demos(tiny_recipe(num_demos=30, max_hops=1), progress=False)
    assert {d.difficulty for d in demos} == {1}


@pytest.mark.parametrize("mixture, message", [({"jump": 1.0}, "not a strategy"), ({"forward": 0.0}, "weight > 0"),
                                              ({}, "give strategy weights"), ({"forward": -1}, ">= 0")])
def test_bad_mixtures_say_what_to_set(mixture, message):
    with pytest.raises(RecipeError, match=message):
        mixture_weights(mixture, ("forward", "question_first", "verify"))


def test_resume_continues_from_the_last_checkpoint(pretrained, tmp_path):
    recipe, run_dir, _, _ = pretrained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    checkpoints = sorted((copy / "checkpoints" / "pretrain").glob("checkpoint-*"), key=lambda p: int(p.name[11:]))
    last_step = int(checkpoints[-1].name[11:])
    shutil.rmtree(checkpoints[-1])  # as if the run had died after the previous checkpoint
    shutil.rmtree(model_dir(copy))
    resume_from = int(checkpoints[-2].name[11:])
    demos_before = (copy / "stages" / "pretrain" / "demos.jsonl").read_bytes()
    metrics_before = len(read_metrics(copy))

    run_pretrain(recipe, copy, resume=True, progress=False)
    new_steps = [r["step"] for r in read_metrics(copy)[metrics_before:] if "train/loss" in r]
    assert new_steps and min(new_steps) == resume_from + 1 and max(new_steps) == last_step
    assert (copy / "stages" / "pretrain" / "demos.jsonl").read_bytes() == demos_before
    assert (model_dir(copy) / "model.safetensors").is_file()


def test_extra_worlds_add_demos_documents_and_names_of_other_worlds():
    from searchgym.train.pretrain import _lexicon, corpus_texts

    one, two = tiny_recipe(num_demos=4, name_tokens=True), tiny_recipe(num_demos=4, name_tokens=True, extra_worlds=1)
    demos = sample_demos(two, progress=False)
    assert len(demos) == 8
    assert {t.task_id.split("-")[1] for t in demos} == {"s0", "s1"}  # world seeds 0 and 1
    assert len(corpus_texts(two)) == 2 * len(corpus_texts(one))
    names_one, names_two = set(_lexicon(one)), set(_lexicon(two))
    assert names_one < names_two and any(not w.startswith("syn:") for w in names_two - names_one)
    with pytest.raises(RecipeError, match="extra_worlds"):
        run_pretrain(tiny_recipe(extra_worlds=-1), "unused", progress=False)
