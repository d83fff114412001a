"""Issue #27 reliability: malformed launcher variables are refused at load, a failure of rank 0 inside
``main_first`` reaches every rank instead of leaving them at a barrier, Ctrl-C during embedding checkpoints
what is done, and index specs and vLLM without CUDA are refused at load (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import searchgym  # noqa: F401  (registers the envs)
from searchgym.cli import app
from searchgym.corpus.documents import Corpus, Document
from searchgym.corpus.embedders import HashingEmbedder
from searchgym.corpus.embedding import embed_corpus
from searchgym.train.context import rank_env
from searchgym.util.config_schema import ConfigError

REPO = Path(__file__).resolve().parents[1]
SMOKE_SFT = REPO / "agents" / "smoke-sft.toml"
SMOKE_GRPO = REPO / "agents" / "smoke-grpo.toml"
LAUNCHER_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    return {**env, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


def _cli(args: list[str], cwd: Path, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "searchgym", *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    output = done.stdout + done.stderr
    lines = [line for line in output.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), output[-3000:]
    assert "Traceback" not in output
    return lines[0]


# ---- 1. malformed launcher variables ------------------------------------------------------------------------
BAD_RANKS = [
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc' in the environment is not allowed: it must be an integer >= 1"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0 in the environment is not allowed: it must be an integer >= 1"),
    ({"WORLD_SIZE": "-2"}, "WORLD_SIZE='-2' in the environment is not allowed: it must be an integer >= 1"),
    ({"WORLD_SIZE": ""}, "WORLD_SIZE='' in the environment is not allowed"),
    ({"WORLD_SIZE": "2", "RANK": "x"}, "RANK='x' in the environment is not allowed: it must be an integer >= 0"),
    ({"WORLD_SIZE": "2", "RANK": "-1"}, "RANK='-1' in the environment is not allowed: it must be an integer >= 0"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2 in the environment is not allowed with WORLD_SIZE=2: it must be "
                                       "in 0..1"),
    ({"RANK": "1"}, "RANK=1 in the environment is not allowed with WORLD_SIZE=1: it must be in 0..0"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1.0"}, "LOCAL_RANK='1.0' in the environment is not allowed"),
    ({"WORLD_SIZE": "2", "LOCAL_RANK": "5"}, "LOCAL_RANK=5 in the environment is not allowed with WORLD_SIZE=2"),
]


@pytest.mark.parametrize("env, message", BAD_RANKS, ids=[" ".join(f"{k}={v}" for k, v in e.items())
                                                         for e, _ in BAD_RANKS])
def test_malformed_rank_variables_are_one_config_error(env, message, monkeypatch):
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        rank_env()
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert "torchrun and accelerate launch set it" in str(caught.value)


def test_good_rank_variables(monkeypatch):
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    assert rank_env() == (1, 0, 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", " 3 ")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert rank_env() == (4, 3, 1)


def test_train_with_a_malformed_world_size_exits_2_before_any_work(tmp_path):
    out = tmp_path / "run"
    start = time.monotonic()
    done = _cli(["train", str(SMOKE_SFT), "--out", str(out)], cwd=tmp_path, WORLD_SIZE="abc")
    line = _one_error_line(done)
    assert "WORLD_SIZE='abc' in the environment is not allowed: it must be an integer >= 1" in line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []  # no run folder, no runs/
    assert time.monotonic() - start < 120  # nothing slow ran (a model load, demos, training)


@pytest.mark.parametrize("env, message", BAD_RANKS[5:8], ids=["RANK=-1", "RANK=WORLD_SIZE", "RANK alone"])
def test_train_refuses_bad_ranks_through_the_cli(env, message, tmp_path, monkeypatch, no_slow_work):
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", str(SMOKE_SFT), "--out", str(tmp_path / "run")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
    assert list(tmp_path.iterdir()) == []


# ---- 2. a failure of rank 0 inside main_first reaches every rank -----------------------------------------------
RANK_SCRIPT = """
import sys, time
from pathlib import Path
from searchgym.train.context import TrainContext, init_distributed

init_distributed()
ctx = TrainContext(recipe=None, run_dir=Path(sys.argv[1]))
shared = Path(sys.argv[1]) / "demos.txt"
try:
    with ctx.main_first("building the demos"):
        if ctx.is_main:
            if sys.argv[2] != "ok":
                raise ValueError("no demos today")
            shared.write_text("built by rank 0")
        else:
            print("rank 1 read:", shared.read_text())
except ValueError:
    if sys.argv[2] == "linger":  # a failed rank 0 still alive (its teardown, a log upload, a slow exit):
        time.sleep(600)          # its peers cannot tell from a closed connection
    raise
print("rank", 0 if ctx.is_main else 1, "after the block")
ctx.barrier()
import torch.distributed as dist
dist.destroy_process_group()  # as the pipeline does: exiting with the group alive aborts the process
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(tmp_path: Path, mode: str, timeout: float = 90) -> list[tuple[int | None, str]]:
    """Two plain processes in one gloo group (not torchrun: it kills the survivors of a failed rank itself,
    which would hide a hang). Rank 1 is waited for first; returns (exit code, or None when it was still
    running at the timeout and killed, output) per rank."""
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), mode], cwd=REPO,
                              env=_env(WORLD_SIZE="2", RANK=str(r), LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=port, CUDA_VISIBLE_DEVICES=""),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    deadline, results = time.monotonic() + timeout, {}
    for r in (1, 0):
        # a lingering rank 0 sleeps on after its failure: once rank 1 has answered, stop waiting for it
        wait = 1.0 if r == 0 and mode == "linger" else max(1.0, deadline - time.monotonic())
        try:
            out, _ = procs[r].communicate(timeout=wait)
            results[r] = (procs[r].returncode, out)
        except subprocess.TimeoutExpired:
            procs[r].kill()
            results[r] = (None, procs[r].communicate()[0])
    return [results[0], results[1]]


def test_main_first_runs_rank_0_first(tmp_path):
    (code0, out0), (code1, out1) = _two_ranks(tmp_path, "ok")
    assert code0 == 0 and code1 == 0, out0[-3000:] + out1[-3000:]
    assert "rank 1 read: built by rank 0" in out1 and "rank 1 after the block" in out1


def test_a_failure_of_rank_0_in_main_first_stops_the_other_ranks(tmp_path):
    (code0, out0), (code1, out1) = _two_ranks(tmp_path, "fail")
    assert code1 is not None, "rank 1 hung waiting for rank 0:\n" + out1[-3000:]
    assert code0 not in (None, 0) and code1 != 0, out0[-3000:] + out1[-3000:]
    assert "ValueError: no demos today" in out0
    # the cause, not gloo's "connection closed by peer" from a rank that merely saw rank 0 exit
    assert "rank 0 failed while building the demos (ValueError: no demos today); see its log" in out1
    assert "after the block" not in out0 + out1


def test_other_ranks_stop_even_while_a_failed_rank_0_lingers(tmp_path):
    (code0, out0), (code1, out1) = _two_ranks(tmp_path, "linger", timeout=60)
    assert code1 is not None, "rank 1 hung at the barrier while rank 0 lingered:\n" + out1[-3000:]
    assert code1 != 0 and "rank 0 failed while building the demos" in out1, out1[-3000:]
    assert code0 is None  # still sleeping after its failure: killed by the test


# ---- 3. Ctrl-C during embedding checkpoints what is done -------------------------------------------------------
class Interrupting(HashingEmbedder):
    """The hashing embedder; its k-th encode call raises KeyboardInterrupt, as a Ctrl-C there would."""

    def __init__(self, dim=16, interrupt_on=None):
        super().__init__(dim)
        self.calls, self.interrupt_on, self.texts = 0, interrupt_on, 0

    def encode(self, texts, batch_size=64, progress=False):
        self.calls += 1
        if self.calls == self.interrupt_on:
            raise KeyboardInterrupt
        self.texts += len(texts)
        return super().encode(texts, batch_size, progress)


def _corpus(n=3000):
    return Corpus([Document(f"d{i}", f"T{i}", f"word{i % 41} text {i}") for i in range(n)], name="ctrl-c")


def test_ctrl_c_between_checkpoints_keeps_the_embedded_chunks(tmp_path, caplog):
    corpus = _corpus()
    reference = embed_corpus(corpus, HashingEmbedder(16), progress=False)
    folder = tmp_path / "partial"
    # Chunks of 1024 documents, a checkpoint only every 2500: the third chunk is interrupted before the
    # first scheduled checkpoint, with 2048 documents embedded.
    with pytest.raises(KeyboardInterrupt):
        embed_corpus(corpus, Interrupting(interrupt_on=3), folder=folder, batch_size=10, progress=False,
                     checkpoint_every=2500)
    marker = json.loads((folder / "progress.json").read_text())
    assert marker["done"] == 2048 and marker["n"] == 3000
    on_disk = np.load(folder / "vectors.npy", mmap_mode="r")
    np.testing.assert_array_equal(on_disk[:2048], reference[:2048])
    assert "interrupted: 2048 of 3000 documents embedded and checkpointed" in caplog.text

    resumed = Interrupting()
    vectors = embed_corpus(corpus, resumed, folder=folder, batch_size=10, progress=False, checkpoint_every=2500)
    assert resumed.texts == 3000 - 2048  # only the rest
    np.testing.assert_array_equal(np.asarray(vectors), reference)


def test_other_errors_do_not_write_a_checkpoint(tmp_path):
    class Broken(Interrupting):
        def encode(self, texts, batch_size=64, progress=False):
            if self.calls == 2:
                raise RuntimeError("out of memory")
            return super().encode(texts, batch_size, progress)

    folder = tmp_path / "partial"
    with pytest.raises(RuntimeError):
        embed_corpus(_corpus(), Broken(), folder=folder, batch_size=10, progress=False, checkpoint_every=2500)
    assert json.loads((folder / "progress.json").read_text())["done"] == 0  # only the scheduled markers


# ---- 4. index specs and vLLM at load ---------------------------------------------------------------------------
BAD_ENV_INDEX = [
    ("env.kwargs.index=bogus", "env.kwargs.index: unknown index type 'bogus'; choose one of ['flat', 'hnsw'"),
    ("env.kwargs.index=ivfpq:m=7", "env.kwargs.index: index option m=7 must divide the embedding dimension 512; "
                                   "allowed: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]"),
    ("env.kwargs.index=ivfpq:q=1", "env.kwargs.index: unknown option 'q' for index type 'ivfpq'; allowed: "),
    ("env.kwargs.index=hnsw:M=0", "env.kwargs.index: index option M must be a positive integer, got 0"),
]


@pytest.mark.parametrize("override, message", BAD_ENV_INDEX, ids=[o for o, _ in BAD_ENV_INDEX])
def test_env_index_spec_is_checked_at_load(override, message, tmp_path, monkeypatch, no_slow_work):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", str(SMOKE_SFT), "--set", override, "--out", str(tmp_path / "r")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
    assert list(tmp_path.iterdir()) == []


def test_good_env_index_specs_load(no_slow_work):
    from searchgym.train.stages import load_recipe

    for spec in ("ivfpq:m=0", "ivfpq:m=auto,nbits=4", "opq+ivfpq:m=64", "hnsw:M=16", "flat"):
        assert load_recipe(SMOKE_SFT, [f"env.kwargs.index={spec}"]).env.kwargs["index"] == spec


CORPUS_HEAD = '[corpus]\nsource = "jsonl"\npath = "{docs}"\n{limit}[embedder]\nname = "hashing:dim=32"\n'
BAD_CORPUS_INDEX = [
    ("", '[index]\ntype = "ivfpq"\nm = 7\n',
     "[index] index option m=7 must divide the embedding dimension 32; allowed: [1, 2, 4, 8, 16, 32]"),
    ("limit = 100\n", '[index]\ntype = "opq+ivfpq"\nm = 0\n',
     "[index] index option nbits=8 needs at least 256 vectors to train its codebooks, the corpus has 100"),
]


@pytest.mark.parametrize("limit, index, message", BAD_CORPUS_INDEX, ids=["m=7", "nbits-vs-limit"])
@pytest.mark.parametrize("command", ["index", "search", "serve"])
def test_corpus_index_spec_is_checked_at_load(command, limit, index, message, tmp_path, monkeypatch):
    import searchgym.corpus.corpus_recipe as corpus_recipe

    def slow(*args, **kwargs):
        raise AssertionError("the corpus was loaded before the recipe was checked")

    monkeypatch.setattr(corpus_recipe.CorpusRecipe, "load_corpus", slow)
    monkeypatch.chdir(tmp_path)
    docs = REPO / "corpora" / "tiny.jsonl"
    (tmp_path / "c.toml").write_text(CORPUS_HEAD.format(docs=docs, limit=limit) + index)
    args = {"index": ["index", "c.toml"], "search": ["search", "c.toml", "tea"], "serve": ["serve", "c.toml"]}
    result = CliRunner().invoke(app, args[command])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert f"c.toml: {message}" in lines[0]


def test_build_index_checks_the_spec_before_embedding(tmp_path):
    from searchgym.corpus.index import IndexSpecError, build_index

    class NoEmbedding(HashingEmbedder):
        calls = 0

        def encode(self, texts, batch_size=64, progress=False):
            self.calls += 1
            raise AssertionError("embedding started before the index spec was checked")

    embedder = NoEmbedding(32)
    with pytest.raises(IndexSpecError, match="m=7 must divide the embedding dimension 32"):
        build_index(_corpus(300), embedder, "ivfpq:m=7", cache_dir=tmp_path, progress=False)
    with pytest.raises(IndexSpecError, match="nbits=10 needs at least 1024 vectors.*the corpus has 300"):
        build_index(_corpus(300), embedder, "ivfpq:m=8,nbits=10", cache_dir=tmp_path, progress=False)
    assert embedder.calls == 0


def test_use_vllm_without_cuda_exits_2_at_load(tmp_path):
    # A stand-in vllm package so the "not installed" check passes and the CUDA check is the one that speaks;
    # CUDA_VISIBLE_DEVICES="" hides any GPU of the machine running the test.
    (tmp_path / "fake" / "vllm").mkdir(parents=True)
    (tmp_path / "fake" / "vllm" / "__init__.py").write_text("")
    work = tmp_path / "work"
    work.mkdir()
    done = _cli(["train", str(SMOKE_GRPO), "--set", "grpo.use_vllm=true", "--set", "grpo.rollout=trl",
                 "--out", str(work / "run")], cwd=work, CUDA_VISIBLE_DEVICES="",
                PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path / "fake"), os.environ.get("PYTHONPATH")])))
    line = _one_error_line(done)
    assert "grpo.use_vllm: vLLM needs a CUDA GPU and none is visible here" in line
    assert "set grpo.use_vllm = false" in line
    assert list(work.iterdir()) == []
