"""KV-cache reuse for the rollout engine (``rollout(..., cache="prefix")``): encode the shared system+tools
prefix once per rollout call and extend each episode's cache turn by turn instead of re-encoding its history.

Without it every turn re-encodes every conversation from its first token: the system prompt and tool schemas
(~600 tokens with SmolLM2's tokenizer) plus the whole history, so prefill grows quadratically with the turns.

Correctness by construction. Each turn the engine still renders the conversation with the chat template and
tokenises it exactly as the uncached engine does, so the model sees the same token ids. An episode's cache
(`SequenceCache`: the ids it holds and their keys/values) is reused for the longest common prefix of those ids
and the new ones: in a causal model the keys/values of a position depend only on the tokens up to it and on
its position. Whatever the template does to past turns (an assistant tool call re-serialised as JSON, the
generated tokens re-tokenised differently) can therefore only shorten the reuse, never make it wrong.

Batching with transformers' ``generate``. ``generate`` continues from a cache whose C columns are shared by
every row and encodes the input columns after them. Episodes hold different numbers of reusable tokens p_i
and new tokens n_i, so each turn's batch is laid out per row as ``pad*(C-p_i) + cached(p_i) | pad*(U-n_i) +
new(n_i)`` with C = max p and U = max n, and the attention mask 0 on every pad. ``generate`` derives position
ids from the cumulative sum of the mask, so each token gets the position it has in the unpadded
conversation (the one its cached keys were rotated with), and the holes are masked exactly like left
padding. After ``generate`` each row's valid columns (mask 1: cached, new, and the generated tokens the
model consumed) are gathered back into that episode's own cache.

Why re-pad per turn rather than keep one batched cache: episodes leave and join the batch at different
lengths every turn, and the common prefix may shrink (a re-rendered assistant turn), which one batched
cache cannot express per row. Re-padding copies each cache once in and once out of the batch, memory
traffic linear in the context, against a forward pass over every context token without reuse.

The shared prefix: the longest common prefix of the episode's first prompt rendered with two different
user messages (the system prompt, tool schemas and the user header), encoded once (batch of one) and
handed to each new episode without a copy. Only full-attention caches (``DynamicLayer``) are supported:
a sliding-window or recurrent cache does not hold one key per token, and `check_supported` says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class SequenceCache:
    """The keys/values of one token sequence: ``layers[l] = (keys, values)``, each (heads, len(ids), head_dim)."""

    ids: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences.

    >>> common_prefix([1, 2, 3], [1, 2, 4, 5]), common_prefix([], [1]), common_prefix([7], [7])
    (2, 0, 1)
    """
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def cache_keyword() -> str:
    """The ``generate`` keyword for a cache: ``cache`` since transformers renamed ``past_key_values``."""
    from transformers.generation.utils import GenerateDecoderOnlyOutput

    return "cache" if "cache" in GenerateDecoderOnlyOutput.__dataclass_fields__ else "past_key_values"


def check_supported(cache) -> None:
    """Raise ValueError unless every layer of ``cache`` holds one key/value per token (full attention)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if not isinstance(cache, DynamicCache) or any(type(layer) is not DynamicLayer for layer in cache.layers):
        kinds = sorted({type(layer).__name__ for layer in getattr(cache, "layers", [])}) or [type(cache).__name__]
        raise ValueError(f"cache='prefix' needs a full-attention DynamicCache; this model uses {kinds}: "
                         "use cache='none'")


def shared_prefix(model, tokenizer, system_prompt: str, tools: list[dict]) -> SequenceCache:
    """Encode the tokens every first prompt with this system prompt and these tools starts with."""
    from transformers.cache_utils import DynamicCache

    def ids(user: str) -> list[int]:
        messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]
        text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    # Two different user messages: what they share is the part that does not depend on the question.
    a, b = ids("a"), ids("b")
    prefix = a[: common_prefix(a, b)]
    if not prefix:
        return SequenceCache([], [])
    device = next(model.parameters()).device
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        model(input_ids=torch.tensor([prefix], device=device), **{cache_keyword(): cache}, use_cache=True)
    check_supported(cache)
    return SequenceCache(prefix, [(layer.keys[0], layer.values[0]) for layer in cache.layers])


@dataclass
class CachedBatch:
    """One turn's ``generate`` inputs built from the episodes' caches, and how much of each was reused."""

    inputs: dict  # input_ids, attention_mask and the cache (of the reused columns), for generate(**inputs)
    reused: list[int]  # tokens taken from each row's cache


def build_batch(model, caches: Sequence[SequenceCache], prompts: Sequence[list[int]], pad_id: int,
                device) -> CachedBatch:
    """Lay out the rows as ``pad + cached | pad + new`` (module docstring) with a DynamicCache of the cached part."""
    from transformers.cache_utils import DynamicCache

    # Keep at least one new token per row: generate needs an input column to produce the next logits.
    reused = [min(common_prefix(c.ids, ids), len(ids) - 1) for c, ids in zip(caches, prompts)]
    width_c = max(reused)
    width_u = max(len(ids) - k for ids, k in zip(prompts, reused))
    rows = len(prompts)
    input_ids = torch.full((rows, width_c + width_u), pad_id, dtype=torch.long)
    mask = torch.zeros((rows, width_c + width_u), dtype=torch.long)
    for i, (ids, k) in enumerate(zip(prompts, reused)):
        input_ids[i, width_c - k: width_c] = torch.tensor(ids[:k], dtype=torch.long)
        input_ids[i, width_c + width_u - (len(ids) - k):] = torch.tensor(ids[k:], dtype=torch.long)
        mask[i, width_c - k: width_c] = 1
        mask[i, width_c + width_u - (len(ids) - k):] = 1
    inputs = {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}
    layers = []  # an empty cache when nothing is reused: generate fills it, split_batch reads it
    if width_c:
        template = next(c for c, k in zip(caches, reused) if k).layers
        for layer, (k0, v0) in enumerate(template):
            # Zeros under the pads: masked out, but finite (garbage there could be NaN and poison the softmax).
            keys = k0.new_zeros((rows, k0.shape[0], width_c, k0.shape[-1]))
            values = v0.new_zeros((rows, v0.shape[0], width_c, v0.shape[-1]))
            for i, (c, k) in enumerate(zip(caches, reused)):
                if k:
                    keys[i, :, width_c - k:] = c.layers[layer][0][:, :k]
                    values[i, :, width_c - k:] = c.layers[layer][1][:, :k]
            layers.append((keys, values))
    inputs[cache_keyword()] = DynamicCache(layers or None, config=model.config)
    return CachedBatch(inputs, reused)


def split_batch(batch: CachedBatch, sequences: torch.Tensor, rows: Sequence[int],
                keep: Sequence[int]) -> list[SequenceCache]:
    """The own caches of ``rows`` after ``generate`` returned ``sequences``: each row's valid columns
    (mask 1), the first ``keep`` of them (the conversation so far, up to its stop token; later columns hold
    the pads generate fed a finished row)."""
    cache = batch.inputs[cache_keyword()]  # generate extended it in place
    check_supported(cache)
    length = cache.get_seq_length()
    mask = batch.inputs["attention_mask"]
    steps = sequences.shape[1] - mask.shape[1]
    # generate extends the mask with ones for every generated token, finished rows included.
    valid = torch.cat([mask, mask.new_ones((mask.shape[0], steps))], dim=1)[:, :length].bool()
    result = []
    for i, n in zip(rows, keep):
        columns = valid[i].nonzero().squeeze(-1)[:n]
        ids = sequences[i, columns].tolist()
        result.append(SequenceCache(ids, [(layer.keys[i].index_select(1, columns),
                                           layer.values[i].index_select(1, columns)) for layer in cache.layers]))
    return result
