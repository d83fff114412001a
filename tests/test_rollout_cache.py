"""KV-cache reuse in the rollout engine (``cache="prefix"``) against the uncached engine (``cache="none"``).

Both feed the model the same token ids, so they must play the same episodes: the same tokens (greedy, and
sampled with the same seed, since each generate call draws from the same RNG stream over the same shapes),
the same messages, rewards and roles, and per-token logprobs/entropies equal up to float rounding. The
edge cases are the ones the cache layout has to get right: rows that finish at different turns, rows that
join a half-played batch, a conversation that outgrows the context, a batch of one. A spy on `build_batch`
checks that the cache is really reused (equal outputs alone would also pass with no reuse at all).
"""

from __future__ import annotations

import gymnasium
import pytest
import torch
from test_rollout import ENDS_AFTER, FAKE_ID

from searchgym.agent import rollout_cache
from searchgym.agent.models import load_model
from searchgym.agent.rollout import rollout
from searchgym.agent.rollout_cache import (
    SequenceCache,
    build_batch,
    check_supported,
    common_prefix,
    split_batch,
)

TOL = 1e-4  # logprob/entropy agreement (float32 sums in another order: ~1e-6 seen)


@pytest.fixture(scope="module")
def tiny(one_thread):
    return load_model("tiny")


def both(model, tokenizer, env_id, tasks, **kw):
    """The same rollout with and without the cache."""
    settings = dict(samples=2, max_turns=4, max_new_tokens=6, batch_size=8, seed=0, progress=False)
    return [rollout(model, tokenizer, env_id, list(tasks), **{**settings, **kw}, cache=c) for c in ("prefix", "none")]


def assert_same(cached, uncached):
    assert len(cached) == len(uncached) > 0
    for a, b in zip(cached, uncached):
        assert (a.task_id, a.sample, a.num_turns, a.truncated) == (b.task_id, b.sample, b.num_turns, b.truncated)
        assert a.messages == b.messages  # the same generated text, turn by turn
        assert a.token_roles == b.token_roles
        assert a.meta == b.meta  # stop reason, step rewards, tokens per turn
        assert a.reward == b.reward
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=TOL)
        assert a.token_entropies == pytest.approx(b.token_entropies, abs=TOL)


@pytest.fixture
def reuse_log(monkeypatch):
    """(prompt lengths, reused tokens) of every cached generate call."""
    log = []

    def spy(model, caches, prompts, pad_id, device):
        batch = build_batch(model, caches, prompts, pad_id, device)
        log.append(([len(p) for p in prompts], batch.reused))
        return batch

    monkeypatch.setattr(rollout_cache, "build_batch", spy)
    return log


def test_greedy_same_tokens_as_uncached_with_episodes_ending_at_different_turns(tiny, reuse_log):
    cached, uncached = both(*tiny, FAKE_ID, ENDS_AFTER, temperature=0.0)
    assert_same(cached, uncached)
    assert sorted({t.num_turns for t in cached}) == [1, 2, 3, 4]  # rows leave the batch at every turn
    # Turn 1 reuses the shared system+tools prefix; later turns the whole previous prompt and more.
    (first_lengths, first_reused), *later = reuse_log
    assert all(0 < r < n for r, n in zip(first_reused, first_lengths))
    assert len(later) == 3
    previous = first_lengths
    for lengths, reused in later:
        # The whole previous prompt but maybe its last token: the "\n" after "assistant" can merge with the
        # first characters of the turn when the conversation is re-tokenised.
        assert min(reused) >= min(previous) - 1
        previous = lengths


def test_sampling_same_seed_gives_the_same_episodes(tiny):
    cached, uncached = both(*tiny, FAKE_ID, ENDS_AFTER, temperature=1.0, top_p=0.9, seed=3)
    assert_same(cached, uncached)
    assert cached[0].token_logprobs != cached[1].token_logprobs  # real sampling: samples differ


def test_refill_of_a_small_batch(tiny, reuse_log):
    # batch of 2: "one" ends after turn 1 and "two" joins (fresh, from the shared prefix) beside "three"
    cached, uncached = both(*tiny, FAKE_ID, ["one", "three", "two"], samples=1, batch_size=2, temperature=1.0)
    assert_same(cached, uncached)
    assert [(t.task_id, t.num_turns) for t in cached] == [("one", 1), ("three", 3), ("two", 2)]
    lengths, reused = reuse_log[1]  # turn 2: "three" continues, "two" is new
    assert reused[0] > reused[1] and reused[1] == reuse_log[0][1][0]


def test_batch_of_one(tiny):
    assert_same(*both(*tiny, FAKE_ID, ["three", "one"], samples=1, batch_size=1, temperature=1.0))


def test_context_overflow_ends_the_same_episodes(tiny, monkeypatch):
    model, tokenizer = tiny
    question, info = gymnasium.make(FAKE_ID).reset(options={"task_id": "never"})
    messages = [{"role": "system", "content": info["system_prompt"]}, {"role": "user", "content": question}]
    prompt = tokenizer.apply_chat_template(messages, tools=info["tools"], tokenize=False, add_generation_prompt=True)
    # Room for turn 1 only: the second prompt (first + answer + tool result) cannot fit max_new_tokens more.
    monkeypatch.setattr(model.config, "max_position_embeddings",
                        len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) + 6 + 4)
    cached, uncached = both(model, tokenizer, FAKE_ID, ["one", "never"], temperature=1.0)
    assert_same(cached, uncached)
    by_task = {t.task_id: t for t in cached}
    assert by_task["never"].meta["stop_reason"] == "context" and by_task["never"].num_turns == 1
    assert by_task["one"].meta["stop_reason"] == "terminated"


def test_the_shipped_prior_in_its_world_greedy_and_sampled(one_thread):
    from searchgym.train.priors import prior_metadata

    meta = prior_metadata()
    kwargs = {**meta["env_kwargs"], "split": "test"}
    env = gymnasium.make(meta["env_id"], **kwargs)
    tasks = [t.id for t in env.unwrapped.tasks[:3]]
    env.close()
    model, tokenizer = load_model("searchgym-prior")
    for temperature in (0.0, 1.0):
        cached, uncached = both(model, tokenizer, meta["env_id"], tasks, samples=2, max_turns=5,
                                max_new_tokens=48, batch_size=4, temperature=temperature, env_kwargs=kwargs)
        assert_same(cached, uncached)
        assert max(t.num_turns for t in cached) > 1  # the history is reused, not only the prefix


def test_build_and_split_lay_rows_out_around_their_caches(tiny):
    model, tokenizer = tiny
    prompt = [5, 6, 7, 8, 9]
    with torch.inference_mode():
        whole = rollout_cache.shared_prefix(model, tokenizer, "Answer.", [])
        base = build_batch(model, [SequenceCache([], [])], [prompt], tokenizer.pad_token_id, "cpu")
        out = model.generate(**base.inputs, max_new_tokens=1, do_sample=False, return_dict_in_generate=True,
                             pad_token_id=tokenizer.pad_token_id)
        [kv] = split_batch(base, out.sequences, [0], [5])
        # Row 0 reuses 3 of kv's 5 tokens (it diverges at the 4th), row 1 nothing: C = 3, U = max(2, 4).
        batch = build_batch(model, [kv, SequenceCache([], [])], [[5, 6, 7, 1, 2], [1, 2, 3, 4]],
                            tokenizer.pad_token_id, "cpu")
    assert whole.ids and len(whole.layers) == model.config.num_hidden_layers
    assert kv.ids == prompt and kv.layers[0][0].shape[1] == 5
    assert batch.reused == [3, 0]
    assert batch.inputs["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1, 1]]
    assert batch.inputs["input_ids"][0, :3].tolist() == [5, 6, 7] and batch.inputs["input_ids"][0, -2:].tolist() == [1, 2]
    keys = batch.inputs[rollout_cache.cache_keyword()].layers[0].keys
    assert torch.equal(keys[0, :, :3], kv.layers[0][0][:, :3]) and not keys[1].any()


def test_unsupported_caches_and_settings_are_refused(tiny):
    from transformers.cache_utils import DynamicCache, DynamicSlidingWindowLayer

    cache = DynamicCache()
    cache.layers = [DynamicSlidingWindowLayer(sliding_window=4)]
    with pytest.raises(ValueError, match="cache='none'"):
        check_supported(cache)
    with pytest.raises(ValueError, match="cache must be"):
        rollout(*tiny, FAKE_ID, ["one"], cache="yes", progress=False)
    assert common_prefix([1, 2, 3], [1, 2]) == 2
