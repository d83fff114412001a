"""Multi-turn rollout throughput vs raw ``model.generate`` on the same number of generated tokens.

    python benchmarks/rollout.py [--quick] [--model smollm2-135m-instruct|tiny] [--env searchgym/SyntheticWorld-v0]

Same model, batch size and max_new_tokens, same run. The rollout plays tasks x samples episodes of up to
``--turns`` turns (rendering, tokenising, per-token logprob/entropy/roles, env steps included). Two raw
``generate`` baselines, forced to full length: *replay* feeds the exact batches the rollout generated from
(so the ratio is the engine's own overhead), *first-turn* repeats the first-turn prompts until it has as
many tokens (so later turns' longer conversations count against the rollout too).
Last line: JSON with ``"rollout_ratio"`` (rollout tokens/s over replay tokens/s; target >= 0.8) and
``"first_turn_ratio"``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import gymnasium
import torch

import searchgym  # noqa: F401  (registers the envs)
from searchgym.models import SMOLLM2, TINY, cache_root, load_model
from searchgym.rollout import rollout


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
    parser.add_argument("--env", default="searchgym/SyntheticWorld-v0")
    parser.add_argument("--embedder", default="hashing", help="hashing keeps retrieval out of the timing")
    parser.add_argument("--quick", action="store_true", help="a small budget (< 2 minutes on 2 cores)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate both measurements; keep the best")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    questions, samples, turns, new_tokens = (2, 2, 2, 32) if args.quick else (4, 4, 3, 64)
    batch_size, temperature = questions * samples, 1.0

    model, tokenizer = load_model(args.model)
    env_kwargs = {"split": "test", "embedder": args.embedder}
    env = gymnasium.make(args.env, **env_kwargs)
    tasks = [t.id for t in env.unwrapped.tasks[:questions]]
    settings = dict(samples=samples, temperature=temperature, max_turns=turns, max_new_tokens=new_tokens,
                    batch_size=batch_size, env_kwargs=env_kwargs, progress=False)
    rollout(model, tokenizer, args.env, tasks[:1], **{**settings, "samples": 1, "max_turns": 1})  # warm-up

    prompts = []
    for task in tasks:
        obs, info = env.reset(options={"task_id": task})
        messages = [{"role": "system", "content": info["system_prompt"]}, {"role": "user", "content": obs}]
        prompts += [tokenizer.apply_chat_template(messages, tools=info["tools"], tokenize=False,
                                                  add_generation_prompt=True)] * samples
    first_turn = [dict(tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False))]

    # Alternate the measurements (a busy machine slows whichever runs during a spike); keep the fastest.
    rollout_s = replay_s = first_s = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        trajectories, batches = recorded_rollout(model, tokenizer, args.env, tasks, **settings)
        rollout_s = min(rollout_s, time.perf_counter() - start)
        generated = sum(len(t.token_logprobs) for t in trajectories)
        every_batch = sum(b["input_ids"].shape[0] for b in batches) * new_tokens  # each batch once
        replay_tokens, seconds = raw_generate(model, tokenizer, batches, new_tokens, every_batch, temperature)
        replay_s = min(replay_s, seconds)
        first_tokens, seconds = raw_generate(model, tokenizer, first_turn, new_tokens, generated, temperature)
        first_s = min(first_s, seconds)

    rollout_tps, replay_tps, first_tps = generated / rollout_s, replay_tokens / replay_s, first_tokens / first_s
    turns_played = sum(t.num_turns for t in trajectories)
    print(f"model {args.model}, env {args.env}, {len(trajectories)} episodes, batch {batch_size}, "
          f"max_new_tokens {new_tokens}, max_turns {turns}, torch threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}")
    print(f"rollout : {generated:6d} tokens in {rollout_s:7.2f} s = {rollout_tps:7.1f} tok/s "
          f"({turns_played} turns, mean {generated / max(turns_played, 1):.1f} tokens/turn)")
    print(f"replay  : {replay_tokens:6d} tokens in {replay_s:7.2f} s = {replay_tps:7.1f} tok/s "
          f"(raw generate on the rollout's own {len(batches)} batches)")
    print(f"1st turn: {first_tokens:6d} tokens in {first_s:7.2f} s = {first_tps:7.1f} tok/s "
          "(raw generate on the first-turn prompts)")
    print(json.dumps({"benchmark": "rollout", "model": args.model, "quick": args.quick,
                      "episodes": len(trajectories), "batch_size": batch_size, "max_new_tokens": new_tokens,
                      "threads": torch.get_num_threads(), "rollout_tokens": generated,
                      "rollout_tok_s": round(rollout_tps, 2), "replay_tok_s": round(replay_tps, 2),
                      "first_turn_tok_s": round(first_tps, 2),
                      "rollout_ratio": round(rollout_tps / replay_tps, 3),
                      "first_turn_ratio": round(rollout_tps / first_tps, 3)}))

if __name__ == "__main__":
    main()
