#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): environment, then `searchgym train` SFT 20 steps, GRPO 10 steps
# with transformers generation and, where vLLM imports, 10 with vLLM colocate; bf16 SmolLM2-135M, offline.
#   bash benchmarks/gpu_check.sh                # one H100/H200, <= 8 minutes
#   bash benchmarks/gpu_check.sh --dry-run      # CPU: tiny model, 2 steps each, float32
#   bash benchmarks/gpu_check.sh --out DIR      # run folders, logs and gpu_check.json (default runs/gpu-check-*)
# The last line printed is one JSON object. Exit 0: every phase passed; 1: one failed; 2: no CUDA.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TRL_EXPERIMENTAL_SILENCE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
# The script keeps to its own budget (--budget-s, default 420 s); this is the backstop at 8 minutes.
timeout --kill-after=10 480 "$PY" benchmarks/gpu_check.py "$@"
code=$?
if [ "$code" = 124 ] || [ "$code" = 137 ]; then
  echo '{"ok":false,"error":"gpu_check.py ran past 480 s and was stopped"}'
fi
exit "$code"
