"""The rollout engine: run an LLM agent, many episodes at once, in any registered search environment.

Each turn, every active episode's conversation is rendered with the chat template and all of them are
extended by ONE batched ``generate`` call (inference mode); each episode's env then executes its generated
text. By default (``cache="prefix"``, `searchgym.agent.rollout_cache`) the shared system+tools prefix is encoded
once and each episode's KV cache is extended turn by turn; ``cache="none"`` re-encodes every conversation
every turn (left padding), for comparison. Episodes that end leave the batch and waiting ones take their place, so the
batch stays full. Per generated token we keep its log-probability, the entropy of the distribution it was
sampled from and its role (query / answer / post_tool / other) — the inputs of the entropy meters.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import gymnasium
import torch

from searchgym.envs.tools import TOOLS
from searchgym.trajectory import Trajectory

POST_TOOL_WINDOW = 8  # tokens after a tool result counted as "post_tool" (meters.md: the w first tokens)

# Argument values whose tokens get a role (tools.TOOLS: a search's query, an answer's text), JSON or plain form.
_ROLED = [t for t in TOOLS if t.role]
_ROLE_OF = {**{t.argument: t.role for t in _ROLED}, **{t.name: t.role for t in _ROLED}}
_JSON_ARG = re.compile(r'"(' + "|".join(re.escape(t.argument) for t in _ROLED) + r')"\s*:\s*"((?:[^"\\]|\\.)*)')
_PLAIN_ARG = re.compile(r"^\s*(" + "|".join(re.escape(t.name) for t in _ROLED) + r")\s*[:(]\s*(.*?)\s*\)?\s*$",
                        re.IGNORECASE | re.DOTALL)


def role_spans(text: str) -> list[tuple[int, int, str]]:
    """Character spans of search queries and answers in an assistant turn, as ``(start, end, role)``.

    >>> t = '<tool_call>\\n{"name": "search", "arguments": {"query": "capital of Togo"}}\\n</tool_call>'
    >>> [(t[s:e], r) for s, e, r in role_spans(t)]
    [('capital of Togo', 'query')]
    >>> [(s, e, r) for s, e, r in role_spans("answer: Lome")]
    [(8, 12, 'answer')]
    >>> role_spans("I am not sure.")
    []
    """
    spans = [(m.start(2), m.end(2), _ROLE_OF[m.group(1)]) for m in _JSON_ARG.finditer(text)]
    if not spans and "<tool_call>" not in text:
        plain = _PLAIN_ARG.match(text)
        if plain:
            spans.append((plain.start(2), plain.end(2), _ROLE_OF[plain.group(1).lower()]))
    return spans


def assign_roles(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int, str]],
                 after_tool: bool, window: int = POST_TOOL_WINDOW) -> list[str]:
    """Role of each token given its character range: a token overlapping a query/answer span takes that
    role (it carries the content), else the first ``window`` tokens of a turn that follows a tool result
    are "post_tool", else "other".

    >>> assign_roles([(0, 3), (3, 8), (8, 12)], [(8, 12, "answer")], after_tool=True, window=1)
    ['post_tool', 'other', 'answer']
    """
    roles = []
    for i, (start, end) in enumerate(offsets):
        role = next((r for s, e, r in spans if start < e and s < max(end, start + 1)), None)
        if role is None:
            role = "post_tool" if after_tool and i < window else "other"
        roles.append(role)
    return roles


def token_offsets(tokenizer, ids: Sequence[int]) -> list[tuple[int, int]]:
    """Character range of each token in ``tokenizer.decode(ids)`` (by decoding growing prefixes, which
    stays right for byte-level BPE where one character spans several tokens)."""
    offsets, previous = [], 0
    for i in range(len(ids)):
        end = len(tokenizer.decode(ids[: i + 1], skip_special_tokens=False))
        offsets.append((previous, max(end, previous)))
        previous = max(end, previous)
    return offsets


def token_stats(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> tuple[torch.Tensor, ...]:
    """Log-probability of each sampled token and the entropy of the temperature-scaled distribution,
    ``H = -sum p log p`` with ``log p = log_softmax(z)`` and ``z = logits / T`` (T = 1 for greedy decoding).

    Computed from the log-probabilities, every term ``-p log p`` is >= 0, so H is never negative (the
    ``logsumexp(z) - sum softmax(z) * z`` form cancels two large numbers in float32 and came out slightly
    negative on peaked logits); a masked logit (-inf) has p = 0 and adds 0, not NaN (0 * -inf).

    >>> lp, h = token_stats(torch.zeros(1, 4), torch.tensor([2]), temperature=1.0)
    >>> round(lp.item(), 4), round(h.item(), 4)  # uniform over 4: log(1/4), log(4)
    (-1.3863, 1.3863)
    >>> round(token_stats(torch.tensor([[0.0, 0.0, -float("inf")]]), torch.tensor([0]), 1.0)[1].item(), 4)
    0.6931
    """
    z = logits.float() / (temperature if temperature > 0 else 1.0)
    logp = torch.log_softmax(z, dim=-1)
    p = logp.exp()
    # p == 0 (a masked or underflowed logit) contributes nothing; without the where, 0 * -inf is NaN.
    entropy = torch.where(p > 0, p * -logp, 0.0).sum(-1)
    logprob = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return logprob, entropy


# Idle envs by (env id, kwargs), reused across rollout calls: making a search env costs far more than
# resetting one (spaces, index lookup), and eval loops call rollout again and again with the same env.
_IDLE_ENVS: dict[tuple[str, str], list[gymnasium.Env]] = {}


def _env_key(env_id: str, env_kwargs: dict | None) -> tuple[str, str]:
    return env_id, repr(sorted((env_kwargs or {}).items()))


@dataclass
class _Episode:
    """One (task, sample) pair in flight: its env, its conversation and its per-token records."""

    index: int
    task_id: str
    sample: int
    env: gymnasium.Env
    messages: list[dict]
    tools: list[dict]
    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    step_rewards: list[float] = field(default_factory=list)
    turn_tokens: list[int] = field(default_factory=list)
    after_tool: bool = False
    done: bool = False
    stop_reason: str = ""
    kv: object = None  # its rollout_cache.SequenceCache with cache="prefix"


def rollout(model, tokenizer, env_id: str, task_ids: Sequence[str], *, samples: int = 1,
            temperature: float = 1.0, top_p: float = 1.0, max_turns: int = 8, max_new_tokens: int = 128,
            batch_size: int = 16, seed: int = 0, env_kwargs: dict | None = None, progress: bool = True,
            source: str = "", cache: Literal["prefix", "none"] = "prefix") -> list[Trajectory]:
    """Play ``samples`` episodes of every task in ``task_ids`` and return their trajectories, ordered by
    task then sample.

    An episode ends when its env terminates or truncates, after ``max_turns`` assistant turns, or when its
    prompt no longer fits the model's context (the last two are recorded as ``truncated``, with the
    reason in ``meta["stop_reason"]``). Results are deterministic given ``seed`` and ``batch_size``.

    ``cache="prefix"`` encodes the shared system+tools prefix once and extends each episode's KV cache
    turn by turn (`searchgym.agent.rollout_cache`); ``"none"`` re-encodes every conversation every turn. Both
    feed the model the same token ids, so they agree up to floating-point rounding.
    """
    from tqdm.auto import tqdm

    import searchgym.agent.rollout_cache as rollout_cache
    from searchgym.agent.models import stop_token_ids
    from searchgym.envs.actions import assistant_message, tool_message

    if samples < 1 or batch_size < 1 or max_turns < 1 or max_new_tokens < 1:
        raise ValueError("samples, batch_size, max_turns and max_new_tokens must all be >= 1")
    if cache not in ("prefix", "none"):
        raise ValueError(f"cache must be 'prefix' or 'none'; got {cache!r}")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 (0 = greedy) and 0 < top_p <= 1; got {temperature}, {top_p}")
    # A deque: the queue holds questions x samples episodes (25,600 for 100 questions at n = 256), and taking
    # each from the front of a list would move all the others, quadratic work in n.
    queue = deque((i, t, s) for i, (t, s) in enumerate((t, s) for t in task_ids for s in range(samples)))
    free_envs = _IDLE_ENVS.setdefault(_env_key(env_id, env_kwargs), [])
    active: list[_Episode] = []
    finished: dict[int, Trajectory] = {}
    device = next(model.parameters()).device
    context = getattr(model.config, "max_position_embeddings", None) or 1 << 30
    stops = stop_token_ids(tokenizer)
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 \
        else dict(do_sample=False)
    bar = tqdm(total=len(queue), desc="rollout", unit="episode", disable=not progress)
    was_training = model.training
    model.eval()
    calls, prefix = 0, None
    try:
        while queue or active:
            # 1. Refill the batch: each new episode gets a free env (or a new one) reset to its task.
            while queue and len(active) < batch_size:
                index, task_id, sample = queue.popleft()
                env = free_envs.pop() if free_envs else gymnasium.make(env_id, **(env_kwargs or {}))
                obs, info = env.reset(seed=seed + index, options={"task_id": task_id})
                messages = [{"role": "system", "content": info["system_prompt"]},
                            {"role": "user", "content": obs}]
                active.append(_Episode(index, task_id, sample, env, messages, info["tools"]))
                if cache == "prefix":  # encoded once per call, shared by every episode (a copy is never made)
                    prefix = prefix or rollout_cache.shared_prefix(model, tokenizer, info["system_prompt"],
                                                                   info["tools"])
                    active[-1].kv = prefix
            # 2. One batched generate for every active episode.
            prompts = [tokenizer.apply_chat_template(e.messages, tools=e.tools, tokenize=False,
                                                     add_generation_prompt=True) for e in active]
            if cache == "prefix":
                prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
                lengths = [len(ids) for ids in prompt_ids]
            else:
                # Left padding whatever the tokenizer's default: generation appends on the right, so prompts
                # must end aligned (a tokenizer reloaded from disk forgets padding_side; right padding breaks it).
                batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left",
                                  add_special_tokens=False).to(device)
                lengths = batch["attention_mask"].sum(-1).tolist()
            fits = [n + max_new_tokens <= context for n in lengths]
            if not all(fits):  # conversation outgrew the context window: end those episodes here
                for e, ok in zip(active, fits):
                    if not ok:
                        e.done, e.stop_reason = True, "context"
                active = _retire(active, finished, free_envs, bar, source, temperature, top_p)
                continue
            if cache == "prefix":
                with torch.inference_mode():
                    cached = rollout_cache.build_batch(model, [e.kv for e in active], prompt_ids,
                                                       tokenizer.pad_token_id, device)
                batch = cached.inputs
            with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]), torch.inference_mode():
                torch.manual_seed(seed * 1_000_003 + calls)  # one stream per generate call: reproducible
                out = model.generate(**batch, max_new_tokens=max_new_tokens, eos_token_id=stops,
                                     pad_token_id=tokenizer.pad_token_id, output_logits=True,
                                     return_dict_in_generate=True, **sampling)
            calls += 1
            generated = out.sequences[:, batch["input_ids"].shape[1]:]
            # out.logits are the raw (pre-temperature) logits, one (batch, vocab) tensor per new token;
            # reduce them step by step rather than stacking a (batch, tokens, vocab) copy.
            stats = [token_stats(step, generated[:, t], temperature) for t, step in enumerate(out.logits)]
            logprobs = torch.stack([lp for lp, _ in stats], dim=1)
            entropies = torch.stack([h for _, h in stats], dim=1)
            sequences = out.sequences
            del out, stats
            # 3. Each env executes its episode's text; finished episodes leave the batch.
            for row, e in enumerate(active):
                ids = generated[row].tolist()
                n = next((i + 1 for i, t in enumerate(ids) if t in stops), len(ids))  # keep the stop token
                text = tokenizer.decode(ids[:n], skip_special_tokens=False)
                spans = role_spans(text)
                e.roles += assign_roles(token_offsets(tokenizer, ids[:n]), spans, e.after_tool)
                e.logprobs += logprobs[row, :n].tolist()
                e.entropies += entropies[row, :n].tolist()
                e.turn_tokens.append(n)
                action = _strip_stop(text, tokenizer, stops)
                obs, reward, terminated, truncated, _ = e.env.step(action)
                e.step_rewards.append(float(reward))
                e.messages.append(assistant_message(action))
                if terminated or truncated:
                    e.done, e.stop_reason = True, "terminated" if terminated else "env_truncated"
                elif len(e.turn_tokens) >= max_turns:  # the model never reads this last result: drop it
                    e.done, e.stop_reason = True, "max_turns"
                else:
                    e.messages.append(tool_message(obs))
                    e.after_tool = True
            if cache == "prefix":  # the continuing episodes keep their conversation's keys/values
                with torch.inference_mode():
                    rows = [row for row, e in enumerate(active) if not e.done]
                    keep = [lengths[r] + active[r].turn_tokens[-1] for r in rows]
                    for row, kv in zip(rows, rollout_cache.split_batch(cached, sequences, rows, keep)):
                        active[row].kv = kv
                del cached, batch
            active = _retire(active, finished, free_envs, bar, source, temperature, top_p)
    finally:
        bar.close()
        model.train(was_training)
    return [finished[i] for i in sorted(finished)]


def _strip_stop(text: str, tokenizer, stops: Sequence[int]) -> str:
    """The turn's text without its end-of-turn token (the env sees what the assistant wrote)."""
    for token in tokenizer.convert_ids_to_tokens(list(stops)):
        if text.endswith(token):
            return text[: -len(token)]
    return text


def _retire(active: list[_Episode], finished: dict[int, Trajectory], free_envs: list, bar, source: str,
            temperature: float, top_p: float) -> list[_Episode]:
    """Record finished episodes as trajectories, return their envs to the pool, keep the rest."""
    still = []
    for e in active:
        if not e.done:
            still.append(e)
            continue
        env = e.env.unwrapped
        trajectory = env.trajectory(messages=e.messages, sample=e.sample, source=source,
                                    token_logprobs=e.logprobs, token_entropies=e.entropies,
                                    token_roles=e.roles)
        trajectory.num_turns = len(e.turn_tokens)
        if e.stop_reason in ("max_turns", "context"):
            trajectory.truncated = True
        trajectory.meta.update(stop_reason=e.stop_reason, step_rewards=e.step_rewards,
                               turn_tokens=e.turn_tokens, temperature=temperature, top_p=top_p)
        finished[e.index] = trajectory
        free_envs.append(e.env)
        e.kv = None  # free its keys/values now, not when the rollout returns
        bar.update(1)
    return still
