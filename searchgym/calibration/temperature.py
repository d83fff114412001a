"""The temperature sweep of a real model (check 3 of `searchgym.calibration`)."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence

from searchgym.calibration.config import StudySetup


def temperature_sweep(model: str, setup: StudySetup, task_ids: Sequence[str], temperatures: Sequence[float],
                      samples: int, max_turns: int, max_new_tokens: int, seed: int = 0,
                      progress: bool = True) -> dict:
    """Sample ``model`` at each temperature with `searchgym.agent.rollout.rollout` (same questions, seed and
    decoding otherwise) and meter it: mean token entropy (of the temperature-scaled distributions sampled
    from) must rise with temperature; strategy entropy (Miller–Madow, bootstrap CI over questions) must not
    fall below the previous temperature's CI."""
    from searchgym.agent.models import load_model
    from searchgym.agent.rollout import rollout
    from searchgym.meters.aggregate import average, per_question
    from searchgym.meters.stats import bootstrap_ci

    lm, tokenizer = load_model(model)
    rows = []
    for temperature in temperatures:
        start = time.perf_counter()
        trajectories = rollout(lm, tokenizer, setup.env_id, list(task_ids), samples=samples,
                               temperature=temperature, top_p=setup.top_p, max_turns=max_turns,
                               max_new_tokens=max_new_tokens, batch_size=min(64, len(task_ids) * samples),
                               seed=seed, env_kwargs={**setup.env_kwargs, "split": setup.split},
                               progress=progress, source=f"calibrate:{model}@T={temperature}")
        meters, difficulty, _ = per_question(trajectories, samples=samples)
        avg = average(meters, difficulty, samples)
        h, lo, hi = bootstrap_ci([m.get("diversity/strategy_entropy_mm", math.nan) for m in meters.values()],
                                 n_boot=1000)
        rows.append({"temperature": temperature, "token_entropy": avg["entropy/token"], "strategy_entropy": h,
                     "strategy_ci": [lo, hi], "tokens": sum(len(t.token_entropies) for t in trajectories),
                     "strategy_shares": {k: v / len(trajectories) for k, v in
                                         sorted(Counter(t.strategy or "other" for t in trajectories).items())},
                     "success": avg["reward/success"], "seconds": time.perf_counter() - start})
    tokens = [r["token_entropy"] for r in rows]
    token_monotone = all(b > a for a, b in zip(tokens, tokens[1:]))
    strategy_ok = all(not (math.isfinite(b["strategy_entropy"]) and math.isfinite(a["strategy_ci"][0]))
                      or b["strategy_entropy"] >= a["strategy_ci"][0] for a, b in zip(rows, rows[1:]))
    return {"model": model, "questions": len(task_ids), "samples": samples, "max_turns": max_turns,
            "max_new_tokens": max_new_tokens, "rows": rows, "token_monotone": token_monotone,
            "strategy_not_falling": strategy_ok, "monotone": token_monotone and strategy_ok}
