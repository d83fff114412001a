"""The reference prior: a small model pretrained from scratch (the prior lab) that ships with searchgym.

`make run`, the quick breadth study and the tests start from it, so nobody waits for pretraining to see an
agent that solves questions. It lives in
``searchgym/data/searchgym-prior/`` as an ordinary model folder (weights in float16, ~3 MB, loaded as
float32), with what made it: the resolved recipe (``recipe.toml``), the strategy mixture it was trained
on (``prior_mix.json``), its training log (``training.jsonl``) and its learning curve (``curve.json``,
success vs step from `benchmarks/prior.py --curve`, when that was run). ``make prior`` regenerates it::

    searchgym train agents/prior-reference.toml --out runs/prior-reference
    python -m searchgym.train.priors runs/prior-reference      # export into searchgym/data/searchgym-prior/

Load it as the model alias ``searchgym-prior`` (`searchgym.agent.models.load_model`) or by its folder.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from searchgym.paths import REFERENCE_PRIOR

FILES = ("recipe.toml", "prior_mix.json", "training.jsonl")


def prior_metadata(folder: str | Path = REFERENCE_PRIOR) -> dict:
    """What a prior folder records about its making: its recipe's env (id, kwargs), the realised strategy
    mix of its pretraining demos and the pretraining seconds (None where a file is missing)."""
    import tomllib

    folder = Path(folder)
    meta: dict = {"env_id": None, "env_kwargs": {}, "mix": None, "pretrain_seconds": None, "steps": None}
    if (folder / "recipe.toml").is_file():
        recipe = tomllib.loads((folder / "recipe.toml").read_text(encoding="utf-8"))
        meta["env_id"], meta["env_kwargs"] = recipe["env"]["id"], recipe["env"].get("kwargs", {})
    # A shipped prior folder, or the pretraining run folder it was exported from.
    mix = next((p for p in (folder / "prior_mix.json", folder / "stages" / "pretrain" / "prior_mix.json")
                if p.is_file()), None)
    if mix:
        meta["mix"] = json.loads(mix.read_text(encoding="utf-8"))["realised"]
    log = next((p for p in (folder / "training.jsonl", folder / "metrics.jsonl") if p.is_file()), None)
    if log:
        for line in log.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if "train/train_runtime" in row and row.get("stage") == "pretrain":  # one row per (resumed) segment
                meta["pretrain_seconds"] = (meta["pretrain_seconds"] or 0.0) + row["train/train_runtime"]
                meta["steps"] = row.get("step")
    return meta


def export_prior(run_dir: str | Path, dest: str | Path = REFERENCE_PRIOR) -> Path:
    """Copy a pretraining run's model into ``dest`` as a shippable prior (float16 weights, recipe, mix, log).

    The folder is built beside ``dest`` and renamed into place, so a crash never leaves half a prior.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from searchgym.train.pretrain import model_dir

    run_dir, dest = Path(run_dir), Path(dest)
    source = model_dir(run_dir)
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"{source} holds no pretrained model: run the pretrain stage first")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float16)
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(source)).save_pretrained(tmp)
        shutil.copy(run_dir / "recipe.toml", tmp / "recipe.toml")
        shutil.copy(run_dir / "stages" / "pretrain" / "prior_mix.json", tmp / "prior_mix.json")
        rows = [line for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
                if json.loads(line).get("stage") == "pretrain"]
        (tmp / "training.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
        if (run_dir / "curve.json").is_file():  # benchmarks/prior.py --curve
            shutil.copy(run_dir / "curve.json", tmp / "curve.json")
        tmp.chmod(0o755)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def evaluate_prior(model: str | Path = REFERENCE_PRIOR, *, questions: int = 100, samples: int = 2,
                   temperature: float = 1.0, seed: int = 0, tokenizer: str | Path | None = None,
                   progress: bool = False, split: str = "test") -> dict:
    """Sample a prior on the first ``questions`` held-out questions (``split="train"``: its training questions) of the world it was pretrained in
    (its folder's recipe, or its run's for a model or checkpoint inside a run folder) and
    return its competence: success (mean over every sample, i.e. success@1), pass@n, the invalid-call
    share, tool calls per episode, the strategy shares and their total variation from the pretraining mix.
    """
    import gymnasium
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import searchgym  # noqa: F401  (registers the env ids)
    from searchgym.agent.models import load_model, prepare_tokenizer, resolve_model_path, stop_token_ids
    from searchgym.agent.rollout import rollout
    from searchgym.meters import aggregate
    from searchgym.meters.stats import total_variation
    from searchgym.train.evaluate import strategy_share

    folder = resolve_model_path(str(model))
    # A shipped prior holds its recipe; a run's stages/pretrain/model or checkpoints/pretrain/checkpoint-N
    # find it two folders up.
    home = next((p for p in (folder, *list(folder.resolve().parents)[:3]) if (p / "recipe.toml").is_file()), None)
    if home is None:
        raise FileNotFoundError(f"{folder} has no recipe.toml (nor its run folder): cannot tell which world "
                                "it was pretrained in")
    meta = prior_metadata(home)
    if tokenizer is None and not (folder / "tokenizer.json").is_file():
        tokenizer = home / "stages" / "pretrain" / "tokenizer"
    if tokenizer is None:
        net, tok = load_model(str(folder))
    else:  # a trainer checkpoint: weights only, the run's tokenizer beside it
        tok = prepare_tokenizer(AutoTokenizer.from_pretrained(str(tokenizer)), chatml=True)
        net = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
        net.generation_config.pad_token_id, net.generation_config.eos_token_id = tok.pad_token_id, stop_token_ids(tok)
    env_kwargs = {**meta["env_kwargs"], "split": split}
    env = gymnasium.make(meta["env_id"], **env_kwargs)
    task_ids = [t.id for t in env.unwrapped.tasks[:questions]]
    env.close()
    trajectories = rollout(net, tok, meta["env_id"], task_ids, samples=samples, temperature=temperature, seed=seed,
                           max_turns=8, max_new_tokens=64, batch_size=64, env_kwargs=env_kwargs, progress=progress,
                           source="prior-eval")
    m = aggregate(trajectories)
    shares = strategy_share(trajectories)
    return {"questions": len(task_ids), "samples": samples, "temperature": temperature,
            "success_at_1": m["reward/success"], f"pass_at_{samples}": m.get(f"passk/pass@{samples}"),
            "invalid_share": m["search/invalid_frac"], "tool_calls": m["search/calls_mean"],
            "strategy_entropy": m.get("diversity/strategy_entropy_mm"), "strategy_share": shares,
            "strategy_tv": total_variation(shares, meta["mix"]) if meta["mix"] else None,
            "pretrain_seconds": meta["pretrain_seconds"]}


if __name__ == "__main__":  # python -m searchgym.train.priors RUN_DIR [DEST]
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m searchgym.train.priors RUN_DIR [DEST]   (DEST defaults to searchgym/data/searchgym-prior)")
    print(export_prior(*sys.argv[1:]))
