"""Multi-turn rollout throughput vs raw ``model.generate`` on the same number of generated tokens, and the
speedup of the KV-cache reuse (``cache="prefix"``) over re-encoding every conversation (``cache="none"``).

    python benchmarks/rollout.py [--quick] [--model smollm2-135m-instruct|tiny|searchgym-prior] [--env ID]

Same model, batch size and max_new_tokens, same run. The rollout plays tasks x samples episodes of up to
``--turns`` turns (rendering, tokenising, per-token logprob/entropy/roles, env steps included), once with
each cache mode, same seed (so the same episodes, up to floating-point rounding: ``same_episodes`` says
whether every generated token agreed). Two raw ``generate`` baselines, forced to full length: *replay*
feeds the exact batches the uncached rollout generated from (so ``uncached_ratio`` is the engine's own
overhead), *first-turn* repeats the first-turn prompts until it has as many tokens.
The prior (``searchgym-prior``) plays in the world it was pretrained in unless ``--env`` says otherwise.
Wall seconds on a shared machine depend on what else runs; CPU seconds of this process (``*_cpu_*``) much
less so (with one torch thread they equal wall seconds on an idle machine).
Last line: JSON with ``"prefix_cache_speedup"`` (cached over uncached rollout tokens/s, wall; target >= 2),
``"prefix_cache_speedup_cpu"`` (the same on CPU seconds), ``"rollout_ratio"`` (the default, cached rollout
over replay tokens/s; target >= 0.8), ``"uncached_ratio"`` and ``"first_turn_ratio"``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import gymnasium
import torch

import searchgym  # noqa: F401  (registers the envs)
from searchgym.agent.models import PRIOR, SMOLLM2, TINY, cache_root, load_model
from searchgym.agent.rollout import rollout


def timed(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, wall seconds, CPU seconds of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def raw_generate(model, tokenizer, batches: list[dict], max_new_tokens: int, tokens: int, temperature: float):
    """Plain full-length ``generate`` over ``batches`` (cycled) until ``tokens`` exist; (tokens, seconds)."""
    done, calls, start = 0, 0, time.perf_counter()
    with torch.inference_mode():
        while done < tokens:
            batch = batches[calls % len(batches)]
            out = model.generate(**batch, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                                 do_sample=True, temperature=temperature, top_k=0,
                                 pad_token_id=tokenizer.pad_token_id)
            done += (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]
            calls += 1
    return done, time.perf_counter() - start


def recorded_rollout(model, *args, **kwargs):
    """Run `rollout`, also returning the input batches of its generate calls (for the replay baseline)."""
    batches, generate = [], model.generate

    def recording(**kw):
        batches.append({"input_ids": kw["input_ids"], "attention_mask": kw["attention_mask"]})
        return generate(**kw)

    model.generate = recording
    try:
        return rollout(model, *args, **kwargs), batches
    finally:
        del model.generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    converted = (cache_root() / "models" / SMOLLM2 / "model.safetensors").is_file()
    parser.add_argument("--model", default=SMOLLM2 if converted else TINY)
    parser.add_argument("--env", default=None, help="default: SyntheticWorld-v0; the prior's own world for the prior")
    parser.add_argument("--embedder", default="hashing", help="hashing keeps retrieval out of the timing")
    parser.add_argument("--quick", action="store_true", help="a small budget (a few minutes on 2 cores for SmolLM2)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate both measurements; keep the best")
    parser.add_argument("--size", default=None, help="questions,samples,turns,new_tokens (overrides --quick)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    questions, samples, turns, new_tokens = (2, 2, 2, 32) if args.quick else (4, 4, 3, 64)
    if args.size:
        questions, samples, turns, new_tokens = (int(x) for x in args.size.split(","))
    batch_size, temperature = questions * samples, 1.0

    model, tokenizer = load_model(args.model)
    env_kwargs = {"split": "test", "embedder": args.embedder}
    if args.model == PRIOR and args.env is None:
        from searchgym.train.priors import prior_metadata

        meta = prior_metadata()
        args.env, env_kwargs = meta["env_id"], {**meta["env_kwargs"], "split": "test", "embedder": args.embedder}
    args.env = args.env or "searchgym/SyntheticWorld-v0"
    env = gymnasium.make(args.env, **env_kwargs)
    tasks = [t.id for t in env.unwrapped.tasks[:questions]]
    settings = dict(samples=samples, temperature=temperature, max_turns=turns, max_new_tokens=new_tokens,
                    batch_size=batch_size, env_kwargs=env_kwargs, progress=False)
    for cache in ("prefix", "none"):  # warm-up
        rollout(model, tokenizer, args.env, tasks[:1], **{**settings, "samples": 1, "max_turns": 1, "cache": cache})

    prompts = []
    for task in tasks:
        obs, info = env.reset(options={"task_id": task})
        messages = [{"role": "system", "content": info["system_prompt"]}, {"role": "user", "content": obs}]
        prompts += [tokenizer.apply_chat_template(messages, tools=info["tools"], tokenize=False,
                                                  add_generation_prompt=True)] * samples
    first_turn = [dict(tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False))]

    # Alternate the measurements (a busy machine slows whichever runs during a spike); keep the fastest.
    best = {k: (float("inf"), float("inf")) for k in ("cached", "uncached")}
    replay_s = first_s = float("inf")
    for _ in range(args.repeats):
        trajectories, wall, cpu = timed(rollout, model, tokenizer, args.env, tasks, **settings, cache="prefix")
        best["cached"] = min(best["cached"], (wall, cpu))
        (uncached, batches), wall, cpu = timed(recorded_rollout, model, tokenizer, args.env, tasks, **settings,
                                               cache="none")
        best["uncached"] = min(best["uncached"], (wall, cpu))
        generated = sum(len(t.token_logprobs) for t in trajectories)
        every_batch = sum(b["input_ids"].shape[0] for b in batches) * new_tokens  # each batch once
        replay_tokens, seconds = raw_generate(model, tokenizer, batches, new_tokens, every_batch, temperature)
        replay_s = min(replay_s, seconds)
        first_tokens, seconds = raw_generate(model, tokenizer, first_turn, new_tokens, generated, temperature)
        first_s = min(first_s, seconds)

    uncached_tokens = sum(len(t.token_logprobs) for t in uncached)
    same = [t.messages for t in trajectories] == [t.messages for t in uncached] and generated == uncached_tokens
    (cached_s, cached_cpu), (uncached_s, uncached_cpu) = best["cached"], best["uncached"]
    rollout_tps, replay_tps, first_tps = generated / cached_s, replay_tokens / replay_s, first_tokens / first_s
    uncached_tps = uncached_tokens / uncached_s
    turns_played = sum(t.num_turns for t in trajectories)
    print(f"model {args.model}, env {args.env}, {len(trajectories)} episodes, batch {batch_size}, "
          f"max_new_tokens {new_tokens}, max_turns {turns}, torch threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    print(f"cached  : {generated:6d} tokens in {cached_s:7.2f} s = {rollout_tps:7.1f} tok/s, "
          f"{cached_cpu:7.2f} cpu s ({turns_played} turns, mean {generated / max(turns_played, 1):.1f} tokens/turn)")
    print(f"uncached: {uncached_tokens:6d} tokens in {uncached_s:7.2f} s = {uncached_tps:7.1f} tok/s, "
          f"{uncached_cpu:7.2f} cpu s (same episodes: {same})")
    print(f"replay  : {replay_tokens:6d} tokens in {replay_s:7.2f} s = {replay_tps:7.1f} tok/s "
          f"(raw generate on the uncached rollout's own {len(batches)} batches)")
    print(f"1st turn: {first_tokens:6d} tokens in {first_s:7.2f} s = {first_tps:7.1f} tok/s "
          "(raw generate on the first-turn prompts)")
    print(json.dumps({"benchmark": "rollout", "model": args.model, "env": args.env, "quick": args.quick,
                      "episodes": len(trajectories), "batch_size": batch_size, "max_new_tokens": new_tokens,
                      "max_turns": turns, "threads": torch.get_num_threads(), "rollout_tokens": generated,
                      "same_episodes": same, "rollout_tok_s": round(rollout_tps, 2),
                      "uncached_tok_s": round(uncached_tps, 2), "replay_tok_s": round(replay_tps, 2),
                      "first_turn_tok_s": round(first_tps, 2),
                      "prefix_cache_speedup": round(rollout_tps / uncached_tps, 3),
                      "prefix_cache_speedup_cpu": round((generated / cached_cpu) / (uncached_tokens / uncached_cpu), 3),
                      "rollout_ratio": round(rollout_tps / replay_tps, 3),
                      "uncached_ratio": round(uncached_tps / replay_tps, 3),
                      "first_turn_ratio": round(rollout_tps / first_tps, 3),
                      "load_average": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
