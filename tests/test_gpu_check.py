"""benchmarks/gpu_check.py, the GPU check ready to run on a lent machine, exercised here without a GPU: its
CPU dry run trains SFT and GRPO for 2 steps each through `searchgym train` and ends with the JSON line;
its GPU mode on a machine without CUDA says what is missing (exit 2) instead of crashing."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
REPORT_KEYS = {"mode", "out", "missing", "environment", "phases", "skipped", "ok"}
PHASE_KEYS = {"status", "command", "run_dir", "wall_s", "steps", "step_time_s", "step_time_mean_s", "tokens_per_s",
              "num_tokens", "peak_memory_allocated_gib", "peak_memory_reserved_gib", "peak_rss_mib"}


def run_check(*args: str, timeout: float) -> tuple[int, dict, subprocess.CompletedProcess]:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-2000:]
    return proc.returncode, json.loads(lines[-1]), proc


def _no_cuda() -> bool:
    import torch

    return not torch.cuda.is_available()


@pytest.mark.skipif(not _no_cuda(), reason="this machine has a GPU")
def test_without_cuda_the_gpu_mode_reports_what_is_missing(tmp_path):
    code, report, proc = run_check("--out", str(tmp_path / "gpu"), timeout=600)
    assert code == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert REPORT_KEYS <= set(report) and report["ok"] is False and report["phases"] == {}
    assert any(m.startswith("cuda") for m in report["missing"]) and "--dry-run" in report["error"]
    assert report["environment"]["cuda_available"] is False
    assert "Traceback" not in proc.stderr


def test_dry_run_trains_sft_and_grpo_through_searchgym_train(tmp_path):
    """2 steps each on the tiny model; the numbers come from each run folder's metrics.jsonl."""
    out = tmp_path / "dry"
    # The budget only guards a wedged run: on an idle 2-core machine the dry run takes a few minutes.
    code, report, proc = run_check("--dry-run", "--out", str(out), "--budget-s", "2400", timeout=2700)
    assert REPORT_KEYS <= set(report)
    assert code == 0 and report["ok"] is True, json.dumps(report, indent=1)[-3000:]
    assert set(report["phases"]) == {"sft", "grpo_hf"} and "grpo_vllm" in report["skipped"]
    for name, phase in report["phases"].items():
        assert PHASE_KEYS <= set(phase), name
        assert phase["status"] == "ok" and phase["steps"] == 2, (name, phase)
        assert phase["step_time_s"] > 0 and phase["tokens_per_s"] > 0, (name, phase)
        assert (Path(phase["run_dir"]) / "metrics.jsonl").is_file()
        if _no_cuda():
            assert phase["peak_memory_allocated_gib"] is None and phase["peak_rss_mib"] > 0
    assert "trl_step_time_s" in report["phases"]["grpo_hf"]  # TRL's own per-step time, generation included
    if _no_cuda():
        assert any(m.startswith("cuda") for m in report["missing"])
    assert json.loads((out / "gpu_check.json").read_text()) == report
