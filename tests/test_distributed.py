"""Rank-safe training: SFT and GRPO of the tiny model under ``torchrun --nproc_per_node 2`` (gloo, CPU).

Both ranks train (the Trainer shards the batches); rank 0 alone builds the demos, writes metrics.jsonl, probes,
evaluates and prints the summary. Each run is a subprocess through the real `searchgym train` command line;
GRPO's generations are scripted as in test_grpo.py (a random tiny model never calls a tool, so its rewards
would all be equal and nothing would train).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from safetensors.torch import load_file

from searchgym.runs import RunFolder, read_metrics

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")

# Every rank runs this: script GRPO's generations when asked, then the real command line.
LAUNCHER = """
import sys
sys.path.insert(0, {tests!r})
if sys.argv[1] == "--scripted":
    del sys.argv[1]
    from trl import GRPOTrainer
    from test_grpo import scripted_engine_turn, scripted_generation
    from searchgym.train import grpo_rollout
    from searchgym.agent.models import load_model
    from searchgym.train.stages import load_recipe
    from searchgym.train.grpo_env import make_environment_factory

    recipe = load_recipe(sys.argv[2], [a for a in sys.argv[3:] if "=" in a])
    env = make_environment_factory(recipe.env.id, recipe.env.kwargs).env
    _, tokenizer = load_model("tiny")
    generate = scripted_generation(tokenizer, {{t.question: t.answers[0] for t in env.tasks}})[0]
    GRPOTrainer._generate_single_turn = generate  # grpo.rollout = "trl"
    grpo_rollout.sample_turn = scripted_engine_turn(generate)  # grpo.rollout = "engine" (the default)
from searchgym.cli import app
app(sys.argv[1:], prog_name="searchgym")
"""

pytestmark = pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")


def torchrun(tmp_path: Path, recipe: str, out: Path, *args: str, scripted: bool = False) -> str:
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER.format(tests=str(ROOT / "tests")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("WORLD_SIZE", None)
    command = [TORCHRUN, "--standalone", "--nproc_per_node", "2", str(launcher),
               *(["--scripted"] if scripted else []), "train", recipe, "--out", str(out), *args]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3000)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    return output


def assert_one_set_of_outputs(out: Path, output: str, stage: str) -> None:
    assert output.count("run folder: ") == 1, output[-3000:]
    assert output.count("success rate") == 1  # the summary table, printed once (by rank 0)
    rows = read_metrics(out)
    # Two ranks writing would give every row twice (alike but for their "time").
    keys = Counter(json.dumps({k: v for k, v in r.items() if k != "time"}, sort_keys=True) for r in rows)
    assert not [k for k, n in keys.items() if n > 1], "duplicate metrics rows"
    assert sum(r["stage"] == "eval" for r in rows) == 1
    assert [r["step"] for r in rows if r["stage"] == stage and "train/loss" in r]
    run = RunFolder(out)
    assert run.stage_done(stage) and run.trajectories().is_file() and (out / "summary.md").is_file()
    weights = load_file(str(run.adapter / "adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)  # B starts at zero: it moved


def test_sft_under_torchrun_two_ranks(tmp_path):
    out = tmp_path / "sft"
    output = torchrun(tmp_path, "agents/smoke-sft.toml", out, "--set", "eval.baseline=false")
    assert_one_set_of_outputs(out, output, "sft")
    assert output.count("demos/diverse:") == 1  # demos built once, by rank 0
    assert sorted(p.name for p in (out / "checkpoints" / "sft").glob("checkpoint-*"))
    assert sum(1 for r in read_metrics(out) if r.get("probe")) >= 1  # live probes ran, on one rank


def test_grpo_under_torchrun_two_ranks_and_resume(tmp_path):
    out = tmp_path / "grpo"
    output = torchrun(tmp_path, "agents/smoke-grpo.toml", out, "--set", "grpo.steps=2", "--set", "grpo.beta=0.0",
                      "--set", "grpo.ref_reset_steps=0", scripted=True)
    assert_one_set_of_outputs(out, output, "grpo")
    assert (out / "checkpoints" / "grpo" / "checkpoint-2").is_dir()
    # A resumed run finds its stage done and only re-evaluates, still once.
    output = torchrun(tmp_path, "agents/smoke-grpo.toml", out, "--set", "grpo.steps=2", "--set", "grpo.beta=0.0",
                      "--set", "grpo.ref_reset_steps=0", "--resume", scripted=True)
    assert output.count("stage grpo: already finished") >= 1 and output.count("success rate") == 1
