"""GRPO's multi-turn generation on searchgym's KV-cached engine, through TRL's public ``rollout_func`` hook.

TRL's own tool loop (``environment_factory``) re-encodes every conversation from its first token at every
turn, and generates each turn with the whole ``max_completion_length`` budget. `EngineRollout` produces
the same episodes — the same token ids, tools, tool results, truncation and masks — while each episode
keeps its keys/values between turns (`searchgym.agent.rollout_cache`): a turn encodes only the tool
result it appends. What TRL does with a rollout afterwards (loss, masking of tool output, reference KL,
advantages, logging) is TRL's own.

What "the same episodes" means, rule by rule, as TRL 1.16's ``_tool_call_loop`` does it:

* the prompt is the row's messages rendered with the env's tools (the `SearchEnvironment` methods, in
  ``inspect.getmembers`` order), generation prompt added;
* a turn's tokens run up to and including the first end-of-turn token (``trainer.eos_token_ids``), cut to
  what is left of ``max_completion_length``; the tool calls are parsed with TRL's ``parse_response``;
* each call runs on the episode's `SearchEnvironment` (an exception becomes ``{"error": ...}``), and the
  results are appended as the chat template's tool-result tokens (the "tool suffix"); a suffix that would
  overflow the budget or the context is dropped and the episode ends (the call did run: the env keeps it);
* at most ``max_tool_calling_iterations`` rounds of tool results.

The next turn continues from ``prompt + completion`` concatenated, never re-rendered, exactly as TRL.
``tests/test_grpo_rollout.py`` checks both paths agree token for token under greedy decoding.

Reasoning is never a call, on either path: `ignore_reasoning_calls` wraps the tokenizer's ``parse_response``
(the method TRL's ``parse_response`` helper calls, in its own ``_tool_call_loop`` and here) so that a turn's
tool calls are those of its text without ``<think>…</think>`` blocks and without anything after a
``<think>`` never closed — `searchgym.envs.actions.strip_reasoning`, the rule SearchEnv's ``step`` applies
(one definition). A turn with no ``<think>`` is parsed exactly as before. `EngineRollout` installs it on
the trainer's tokenizer itself. TRL's own loop (``grpo.rollout = "trl"``) offers no hook but the processing
class, so it follows the rule only when ``ignore_reasoning_calls(tokenizer)`` ran before ``GRPOTrainer``
was built (in ``train.grpo.grpo_trainer``). Without the wrapper, TRL 1.16's ChatML response template
(transformers >= 5.13) already parses ``<think>`` blocks into ``reasoning_content``, so a call inside one
is not run either; the two rules differ where a template has no reasoning field (then every call inside
``<think>`` would run) and on ``<think>`` inside a call's arguments (the env refuses that call, the
template runs it). ``tests/test_grpo_reasoning.py`` checks both paths.

TRL hands ``rollout_func`` only the prompts, not the dataset rows, so each row's task id rides in its
messages (``grpo_rows`` puts ``task_id`` in every message; chat templates ignore unknown keys).
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field

import torch

from searchgym.agent import rollout_cache
from searchgym.agent.rollout import token_stats
from searchgym.envs.actions import THINK_OPEN, strip_reasoning
from searchgym.train.grpo_env import EnvironmentFactory, SearchEnvironment


class ReasoningFreeParser:
    """A tokenizer's ``parse_response`` that ignores tool calls written in ``<think>`` reasoning.

    Installed as the tokenizer's own ``parse_response`` attribute (`ignore_reasoning_calls`). It parses as the
    tokenizer's class does; when the turn's text holds ``<think>`` reasoning (or the prompt ``prefix`` ends
    in an opened ``<think>``, as reasoning templates write it), the turn is parsed again without that
    reasoning (`strip_reasoning`), so only calls outside it remain; the first parse's ``reasoning_content``
    is kept. A callable object holding its tokenizer, not a closure: a deep copy of the tokenizer carries a
    parser of the copy, and pickling works.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, response, *args, **kwargs):
        tokenizer = self.tokenizer
        parse = type(tokenizer).parse_response.__get__(tokenizer)
        parsed = parse(response, *args, **kwargs)
        if not isinstance(parsed, dict) or not parsed.get("tool_calls"):
            return parsed  # nothing would run (a batch is passed through: TRL parses one turn at a time)
        text, prefix = _text(tokenizer, response), kwargs.get("prefix")
        # The prompt's last tokens tell whether it opened the reasoning (the whole prompt is decoded only then).
        opened = prefix is not None and len(prefix) > 0 and _text(tokenizer, prefix[-16:]).rstrip().endswith(THINK_OPEN)
        prefix_text = _text(tokenizer, prefix) if opened else None
        call_text, _ = strip_reasoning(THINK_OPEN + text if opened else text)
        if not opened and call_text == text:
            return parsed  # no reasoning: exactly the tokenizer's parse
        if opened:  # the template opened the reasoning: parse the rest as if it had not
            kwargs["prefix"] = prefix_text.rstrip()[: -len(THINK_OPEN)]
        again = parse(call_text if isinstance(response, str) else
                      tokenizer.encode(call_text, add_special_tokens=False), *args, **kwargs)
        if not isinstance(again, dict):
            again = {"role": "assistant", "content": call_text}
        again = {k: v for k, v in again.items() if k != "reasoning_content"}
        if parsed.get("reasoning_content") is not None:
            again["reasoning_content"] = parsed["reasoning_content"]
        return again


def _text(tokenizer, response) -> str:
    return response if isinstance(response, str) else tokenizer.decode(response, skip_special_tokens=False)


def ignore_reasoning_calls(processing_class):
    """Make ``processing_class``'s tokenizer (a processor's inner one) parse turns with `ReasoningFreeParser`;
    idempotent, and a no-op for a tokenizer without ``parse_response`` (transformers < 5). Returns it."""
    tokenizer = getattr(processing_class, "tokenizer", None)
    tokenizer = tokenizer if hasattr(tokenizer, "parse_response") else processing_class
    if hasattr(type(tokenizer), "parse_response") and not isinstance(
            tokenizer.__dict__.get("parse_response"), ReasoningFreeParser):
        tokenizer.parse_response = ReasoningFreeParser(tokenizer)
    return processing_class


def env_tools(environment: SearchEnvironment) -> list:
    """The bound tool methods of an environment, in the order TRL renders them (public, not reset/get_reward).

    >>> [m.__name__ for m in env_tools(SearchEnvironment.__new__(SearchEnvironment))]
    ['answer', 'open', 'search']
    """
    return [getattr(environment, name) for name, _ in inspect.getmembers(type(environment), inspect.isfunction)
            if name not in ("reset", "get_reward") and not name.startswith("_")]


def tool_suffix_ids(tokenizer, tool_messages: list[dict], chat_template_kwargs: dict | None = None,
                    prefixes: dict | None = None) -> list[int]:
    """The tokens the chat template puts after an assistant turn for these tool results, generation prompt
    included: rendered after a dummy tool-calling turn and cut at that turn's end-of-turn token (TRL's rule).
    ``prefixes`` memoises the dummy turn's tokens by tool name (they depend on nothing else)."""
    kwargs = chat_template_kwargs or {}
    name = tool_messages[0]["name"]
    calls = [{"type": "function", "function": {"name": name, "arguments": {}}}]
    dummy = [{"role": "user", "content": "dummy"}, {"role": "assistant", "content": "", "tool_calls": calls}]
    prefix = (prefixes or {}).get(name)
    if prefix is None:
        prefix = tokenizer.apply_chat_template(dummy, add_generation_prompt=False, tokenize=True,
                                               return_dict=False, **kwargs)
        eos = [i for i, t in enumerate(prefix) if t == tokenizer.eos_token_id]
        prefix = prefix[: eos[-1] + 1] if eos else prefix
        if prefixes is not None:
            prefixes[name] = prefix
    full = tokenizer.apply_chat_template(dummy + tool_messages, add_generation_prompt=True, tokenize=True,
                                         return_dict=False, **kwargs)
    if full[: len(prefix)] != prefix:
        raise ValueError("the chat template renders tool results in a way TRL cannot splice (the dummy turn is "
                         "not a prefix of the conversation with its results); use grpo.rollout = 'trl'")
    return full[len(prefix):]


def run_tool_calls(environment: SearchEnvironment, tool_calls: list[dict]) -> tuple[list[dict], int]:
    """Execute one turn's parsed calls on the episode's env as TRL does; returns the tool messages and the
    number of calls that failed (an unknown tool, a bad argument, a `ToolError`)."""
    tools = {m.__name__: m for m in env_tools(environment)}
    messages, failures = [], 0
    for call in tool_calls:
        if call.get("type") != "function":
            failures += 1
            name, result = call.get("name", "unknown"), {"error": f"Unsupported tool call type: {call.get('type')}"}
        else:
            name = call["function"]["name"]
            try:
                if name not in tools:
                    raise ValueError(f"Tool {name} not found.")
                result = tools[name](**call["function"]["arguments"])
            except Exception as e:  # noqa: BLE001 - TRL shows the model any failure as {"error": ...}
                failures += 1
                result = {"error": str(e)}
        messages.append({"role": "tool", "name": name, "content": str(result)})
    return messages, failures


@dataclass
class _Rollout:
    """One completion in flight: its env, ids, masks, sampled log-probs and the messages TRL would record."""

    env: SearchEnvironment
    prompt: list[int]
    completion: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)  # 1 = model token (trained), 0 = tool result
    logprobs: list[float] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    rounds: int = 0  # tool-result rounds appended
    calls: int = 0
    failures: int = 0
    done: bool = False
    kv: rollout_cache.SequenceCache | None = None

    @property
    def context(self) -> list[int]:
        return self.prompt + self.completion


class EngineRollout:
    """TRL ``rollout_func`` running every rollout of a generation batch on the cached engine.

    Returns ``prompt_ids``, ``completion_ids``, ``logprobs`` (of the sampled tokens at the sampling
    temperature; 0 on tool tokens), ``env_mask`` (TRL's tool mask) and, for the reward functions,
    ``environments`` (each rollout's `SearchEnvironment`, as with ``environment_factory``) and ``messages``
    (the completion as messages: assistant turns and tool results).
    """

    def __init__(self, factory: EnvironmentFactory):
        self.factory = factory
        self.pool: list[SearchEnvironment] = []  # envs are reused across steps, like TRL's pool
        self.suffix_prefixes: dict[str, list[int]] = {}  # tool_suffix_ids' memo

    def __call__(self, prompts: list[list[dict]], trainer) -> dict:
        from transformers.utils import get_json_schema
        from trl.chat_template_utils import add_response_schema, parse_response
        from trl.models import unwrap_model_for_generation

        tokenizer = trainer.processing_class
        if getattr(tokenizer, "response_template", None) is None and getattr(tokenizer, "response_schema", None) is None:
            add_response_schema(tokenizer)  # what TRL does for its own tool loop: parse tool calls as it does
        ignore_reasoning_calls(tokenizer)  # a call inside <think> reasoning is not a call (envs.actions)
        while len(self.pool) < len(prompts):
            self.pool.append(self.factory())
        # Every env has the same tools: their schemas once (what apply_chat_template makes of the methods).
        tools = [get_json_schema(m) for m in env_tools(self.pool[0])] or None
        rendered: dict[str, list[int]] = {}  # a group's generations share one prompt: render it once
        rollouts = []
        for prompt, env in zip(prompts, self.pool):
            task_id = next((m.get("task_id") for m in prompt if m.get("task_id")), None)
            env.reset(task_id=task_id)
            key = repr(prompt)
            if key not in rendered:
                rendered[key] = list(tokenizer.apply_chat_template(
                    [_plain(m) for m in prompt], tools=tools, add_generation_prompt=True, tokenize=True,
                    return_dict=False, **trainer.chat_template_kwargs))
            rollouts.append(_Rollout(env, rendered[key]))
        budget, stops = trainer.max_completion_length, list(trainer.eos_token_ids)
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                         gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
                                         generation_kwargs=trainer.generation_kwargs,
                                         gradient_checkpointing_kwargs=trainer.args.activation_checkpointing_kwargs
                                         ) as model, torch.no_grad():
            context_limit = getattr(model.config, "max_position_embeddings", None) or 1 << 30
            shared = _shared_prefix(model, [r.prompt for r in rollouts])
            for r in rollouts:
                r.kv = shared
            while active := [r for r in rollouts if not r.done]:
                fresh = self._generate(model, tokenizer, trainer, active, budget, stops)
                for r, ids in zip(active, fresh):
                    parsed = parse_response(tokenizer, ids, prefix=r.context, tools=tools) if ids else {}
                    r.completion += ids
                    r.mask += [1] * len(ids)
                    if parsed:
                        r.messages.append(parsed)
                    calls = parsed.get("tool_calls") if parsed else None
                    if not calls or r.rounds >= trainer.max_tool_calling_iterations:
                        r.done, r.kv = True, None
                        continue
                    results, failures = run_tool_calls(r.env, calls)
                    r.calls, r.failures = r.calls + len(calls), r.failures + failures
                    suffix = tool_suffix_ids(tokenizer, results, trainer.chat_template_kwargs, self.suffix_prefixes)
                    if len(r.completion) + len(suffix) > budget or len(r.context) + len(suffix) >= context_limit:
                        r.done, r.kv = True, None  # TRL drops results that do not fit; the call did run
                        continue
                    r.messages += results
                    r.completion += suffix
                    r.mask += [0] * len(suffix)
                    r.logprobs += [0.0] * len(suffix)
                    r.rounds += 1
        for r in rollouts:
            r.kv = None
        return {"prompt_ids": [r.prompt for r in rollouts], "completion_ids": [r.completion for r in rollouts],
                "logprobs": [r.logprobs for r in rollouts], "env_mask": [r.mask for r in rollouts],
                "environments": [r.env for r in rollouts], "messages": [r.messages for r in rollouts],
                "tool_calls": [r.calls for r in rollouts], "tool_failures": [r.failures for r in rollouts]}

    def _generate(self, model, tokenizer, trainer, active: list[_Rollout], budget: int,
                  stops: list[int]) -> list[list[int]]:
        """One turn for every active rollout that has budget left: its new tokens, cut to what is left of
        ``max_completion_length``; their log-probs and the extended caches are recorded on the rollouts."""
        left = [budget - len(r.completion) for r in active]
        rows = [i for i, n in enumerate(left) if n > 0]
        fresh: list[list[int]] = [[] for _ in active]
        if rows:
            ids, logprobs, caches = sample_turn(model, trainer, [active[i].context for i in rows],
                                                [active[i].kv for i in rows], max(left[i] for i in rows), stops)
            for i, row_ids, row_logprobs, kv in zip(rows, ids, logprobs, caches):
                fresh[i] = row_ids[: left[i]]
                active[i].logprobs += row_logprobs[: left[i]]
                active[i].kv = kv
        return fresh


def sample_turn(model, trainer, contexts: list[list[int]], caches: list[rollout_cache.SequenceCache],
                max_new_tokens: int, stops: list[int]):
    """One batched ``generate`` with the trainer's generation config, each row continuing from its cache
    (`rollout_cache.build_batch`). Returns per row: the new tokens up to and including the first stop token,
    their log-probs at the sampling temperature, and the row's cache extended over them."""
    tokenizer = trainer.processing_class
    # TRL's sampling settings (temperature, top-p/k, min-p, stop tokens) with this turn's budget and logits.
    config = copy.copy(trainer.generation_config)
    config.max_new_tokens, config.output_logits, config.return_dict_in_generate = max_new_tokens, True, True
    cached = rollout_cache.build_batch(model, caches, contexts, tokenizer.pad_token_id,
                                       next(model.parameters()).device)
    out = model.generate(**cached.inputs, generation_config=config)
    generated = out.sequences[:, cached.inputs["input_ids"].shape[1]:]
    temperature = config.temperature if config.do_sample else 0.0
    logprobs = torch.stack([token_stats(step, generated[:, t], temperature)[0]
                            for t, step in enumerate(out.logits)], dim=1)
    ids, lps, keep = [], [], []
    for b, context in enumerate(contexts):
        row = generated[b].tolist()
        n = next((k + 1 for k, t in enumerate(row) if t in stops), len(row))
        ids.append(row[:n])
        lps.append(logprobs[b, :n].tolist())
        keep.append(len(context) + n)
    return ids, lps, rollout_cache.split_batch(cached, out.sequences, range(len(contexts)), keep)


def _plain(message: dict) -> dict:
    """A message without the ``task_id`` routing key (and without keys Arrow filled with None)."""
    return {k: v for k, v in message.items() if k != "task_id" and v is not None}


def _shared_prefix(model, prompts: list[list[int]]) -> rollout_cache.SequenceCache:
    """Keys/values of the tokens every prompt of the batch starts with (system prompt, tool schemas, and for
    a group of generations the whole question), encoded once for the batch."""
    from transformers.cache_utils import DynamicCache

    length = min(len(p) for p in prompts) - 1  # leave each row one token to feed generate
    for p in prompts[1:]:
        length = min(length, rollout_cache.common_prefix(prompts[0], p))
    if length <= 0:
        return rollout_cache.SequenceCache([], [])
    ids = prompts[0][:length]
    cache = DynamicCache(config=model.config)
    model(input_ids=torch.tensor([ids], device=next(model.parameters()).device),
          **{rollout_cache.cache_keyword(): cache}, use_cache=True)
    rollout_cache.check_supported(cache)
    return rollout_cache.SequenceCache(ids, [(layer.keys[0], layer.values[0]) for layer in cache.layers])
