"""Full-parameter training (``model.finetune = "full"``, `searchgym.train.weights`) and where it wrote
(`searchgym updates`, `searchgym.meters.updates`).

End to end through `searchgym train` on the shipped prior in its own world: SFT then GRPO (beta > 0) with
every weight trainable, dose rungs every step, eval against the base. Then what is saved and loaded, the GRPO
reference (the stage's starting policy, not the folder TRL loads it from), the rungs' KL from a base loaded
beside them, the updates meter against a brute-force count on the saved files, and what is refused at load.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from typer.testing import CliRunner

from searchgym.cli import app
from searchgym.runs import RunFolder

ROOT = Path(__file__).resolve().parents[1]
PRIOR_WORLD = ('env.kwargs={ embedder = "hashing", top_k = 3, max_obs_chars = 400, max_steps = 8, world_kwargs = '
               '{ size = 30, max_hops = 2, n_train = 1500, n_test = 300, holdout = "question" } }')
FULL = ["--set", "model.base=searchgym-prior", "--set", "model.finetune=full", "--set", PRIOR_WORLD,
        "--set", "sft.num_questions=4", "--set", "sft.demos_per_question=1", "--set", "sft.batch_size=2",
        "--set", "sft.learning_rate=1e-3", "--set", "sft.max_length=1024",
        "--set", "grpo.steps=2", "--set", "grpo.num_questions=4", "--set", "grpo.learning_rate=1e-4",
        "--set", "grpo.ref_reset_steps=0",
        "--set", "eval.max_new_tokens=48", "--set", "eval.max_turns=4", "--set", "meters.every=0"]


def _train(recipe: str, out: Path, *args: str) -> Path:
    result = CliRunner().invoke(app, ["train", str(ROOT / "agents" / recipe), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    return out


def _weights(folder: Path) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float32) for k, v in load_file(str(folder / "model.safetensors")).items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    """Two full-parameter runs (SFT then GRPO with a KL term; GRPO alone, another seed) and one LoRA run."""
    root = tmp_path_factory.mktemp("full")
    chained = _train("smoke-grpo.toml", root / "sft-grpo" / "seed0", *FULL, "--set", 'stages=["sft", "grpo"]',
                     "--set", "grpo.beta=0.04", "--set", "dose.every=1", "--set", "eval.baseline=true")
    grpo = _train("smoke-grpo.toml", root / "grpo" / "seed1", *FULL, "--set", "seed=1")
    lora = _train("smoke-grpo.toml", root / "lora" / "seed0", *FULL, "--set", "model.finetune=lora")
    return {"chained": chained, "grpo": grpo, "lora": lora}


def test_every_stage_saves_a_whole_model_and_the_run_loads_it(runs):
    from searchgym.agent.models import load_model, resolve_model_path

    run = RunFolder(runs["chained"])
    assert sorted(run.finished_stages()) == ["grpo", "sft"]
    assert not (run.path / "adapter").exists() and not (run.stage_dir("sft") / "adapter").exists()
    prior, sft, final = (_weights(p) for p in (resolve_model_path("searchgym-prior"), run.stage_dir("sft") / "model",
                                                run.path / "model"))
    # SFT moved the prior, GRPO moved the SFT model further, and the final model is the GRPO stage's.
    assert any(not np.array_equal(prior[k], sft[k]) for k in prior)
    assert any(not np.array_equal(sft[k], final[k]) for k in sft)
    assert all(np.array_equal(final[k], v) for k, v in _weights(run.stage_dir("grpo") / "model").items())
    model, tokenizer = load_model(str(run.path))
    loaded = dict(model.named_parameters())
    assert all(np.array_equal(loaded[k].detach().numpy(), final[k]) for k in final if k in loaded)
    assert tokenizer.chat_template == load_model("searchgym-prior")[1].chat_template
    evaluation = json.loads((run.path / "eval.json").read_text())
    assert {"trained", "base"} <= set(evaluation) and run.trajectories("base").is_file()


def test_the_base_beside_a_full_model_is_the_untouched_prior(runs):
    from searchgym.agent.models import load_model
    from searchgym.train.stages import load_recipe
    from searchgym.train.weights import base_model

    recipe = load_recipe(runs["chained"] / "recipe.toml")
    trained, _ = load_model(str(runs["chained"]))
    prior = dict(load_model("searchgym-prior")[0].named_parameters())
    with base_model(trained, recipe, runs["chained"], builds_base=False) as base:
        assert base is not trained
        assert all(torch.equal(p, prior[k]) for k, p in base.named_parameters())


def test_dose_rungs_are_whole_models_and_their_kl_uses_the_base(runs):
    from searchgym.study.dose import evaluate_rungs, read_rung
    from searchgym.train.stages import load_recipe

    run = RunFolder(runs["chained"])
    rungs = sorted(p.name for p in run.dose_dir().iterdir())
    assert rungs == ["grpo-1", "grpo-2", "sft-1", "sft-2"]
    assert all((run.dose_dir(r) / "model" / "config.json").is_file() for r in rungs)
    recipe = load_recipe(run.recipe_file)
    folders = evaluate_rungs(run.path, recipe, "sft-grpo", 0, wanted=[1], progress=False)
    record = read_rung(folders[0])
    assert record["rung"] == "sft-1" and record["kl"]["k3"]["value"] > 0  # moved from the base after one step


def test_full_grpo_reference_is_the_starting_policy(runs, tmp_path):
    from searchgym.agent.models import load_model
    from searchgym.train.context import TrainContext
    from searchgym.train.grpo import grpo_trainer
    from searchgym.train.stages import load_recipe

    recipe = load_recipe(runs["chained"] / "recipe.toml")
    start, tokenizer = load_model(str(RunFolder(runs["chained"]).stage_dir("sft") / "model"))
    ctx = TrainContext(recipe, tmp_path, stage="grpo", model=start, tokenizer=tokenizer, progress=False)
    trainer = grpo_trainer(ctx)
    policy, reference = dict(trainer.model.named_parameters()), dict(trainer.ref_model.named_parameters())
    assert set(policy) == set(reference) and all(p.requires_grad for p in policy.values())
    assert all(torch.equal(policy[k], reference[k]) for k in policy)
    prior = dict(load_model("searchgym-prior")[0].named_parameters())
    assert any(not torch.equal(reference[k], prior[k]) for k in prior)  # not the base TRL loaded it from


def test_updates_meter_matches_a_brute_force_count(runs, tmp_path):
    from searchgym.agent.models import resolve_model_path

    out = tmp_path / "updates.json"
    result = CliRunner().invoke(app, ["updates", str(runs["chained"]), str(runs["grpo"].parent),
                                      str(runs["lora"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    rows = {r["label"]: r for r in data["runs"]}
    assert set(rows) == {"sft-grpo/seed0", "grpo/seed1", "lora/seed0"}
    assert rows["lora/seed0"]["finetune"] == "lora" and "dense in every matrix" in result.output
    prior = _weights(Path(resolve_model_path("searchgym-prior")))
    for label, run in (("sft-grpo/seed0", runs["chained"]), ("grpo/seed1", runs["grpo"])):
        trained = _weights(run / "model")
        moved = sum(int((np.abs(trained[k] - prior[k]) > 1e-5).sum()) for k in prior if k in trained)
        total = sum(prior[k].size for k in prior if k in trained)
        assert rows[label]["parameters"] == total
        assert rows[label]["updates/moved_share"] == pytest.approx(moved / total)
        assert 0 < rows[label]["updates/moved_share"] <= 1
    # A LoRA merge writes only into the matrices it adapts: norms and embeddings stay where they were.
    assert rows["lora/seed0"]["updates/moved_share_norm"] == 0
    pair = next(p for p in data["overlaps"] if p["a"] == "sft-grpo/seed0" and p["b"] == "grpo/seed1")
    assert 0 <= pair["updates/overlap"] <= 1
    assert pair["updates/overlap_chance"] == pytest.approx(rows["grpo/seed1"]["updates/moved_share"])
    bf16 = CliRunner().invoke(app, ["updates", str(runs["grpo"]), "--precision", "bfloat16", "--tolerance", "0"])
    assert bf16.exit_code == 0, bf16.output


def test_updates_meters_dose_rungs_against_the_runs_base(runs, tmp_path):
    from searchgym.agent.models import resolve_model_path

    out = tmp_path / "rungs.json"
    dose = runs["chained"] / "dose"
    result = CliRunner().invoke(app, ["updates", str(dose), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = {r["label"]: r for r in json.loads(out.read_text())["runs"]}
    assert set(rows) == {f"sft-grpo/seed0@{r}" for r in ("grpo-1", "grpo-2", "sft-1", "sft-2")}
    prior = _weights(Path(resolve_model_path("searchgym-prior")))
    rung = _weights(dose / "sft-1" / "model")
    # A snapshot a crash interrupted ("<rung>.tmp", never renamed into place) is not a rung.
    import shutil

    copy = tmp_path / "copy" / "seed0"
    shutil.copytree(runs["chained"], copy)
    shutil.copytree(copy / "dose" / "sft-1", copy / "dose" / "sft-3.tmp")
    (copy / "dose" / "sft-3.tmp" / "snapshot.json").unlink()
    again = CliRunner().invoke(app, ["updates", str(copy / "dose"), "--out", str(tmp_path / "again.json")])
    assert again.exit_code == 0, again.output
    assert len(json.loads((tmp_path / "again.json").read_text())["runs"]) == 4
    moved = sum(int((np.abs(rung[k] - prior[k]) > 1e-5).sum()) for k in prior if k in rung)
    assert rows["sft-grpo/seed0@sft-1"]["updates/moved_share"] == pytest.approx(moved / rows["sft-grpo/seed0@sft-1"]["parameters"])


@pytest.mark.parametrize("args, message", [
    (["/no/such/run"], "is not a trained run folder"),
    (["--precision", "float8", "RUN"], "--precision must be one of"),
    (["--tolerance", "-1", "RUN"], "--tolerance must be a finite number >= 0"),
])
def test_updates_bad_input_is_one_line(runs, args, message):
    args = [str(runs["grpo"]) if a == "RUN" else a for a in args]
    result = CliRunner().invoke(app, ["updates", *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("sets, message", [
    (["model.finetune=partial"], "model.finetune must be one of ['lora', 'full']"),
    (["model.finetune=full", "grpo.beta=0.04", "grpo.ref_reset_steps=2"],
     "grpo.ref_reset_steps: reference resets are supported with model.finetune = \"lora\" only"),
])
def test_refused_at_load(sets, message, tmp_path):
    args = [a for s in sets for a in ("--set", s)]
    result = CliRunner().invoke(app, ["train", str(ROOT / "agents" / "smoke-grpo.toml"), "--out",
                                      str(tmp_path / "run"), *args])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "run").exists()


def test_the_report_shows_where_each_full_parameter_arm_wrote(runs, tmp_path):
    from searchgym.report import report_command

    page = report_command([runs["chained"], runs["grpo"], runs["lora"]], out=tmp_path / "report")
    numbers = json.loads((tmp_path / "report" / "report.json").read_text())
    rows = {r[0]: r for r in numbers["updates"]["rows"]}
    assert set(rows) == {"sft-grpo", "grpo"}  # the LoRA arm's merged update is dense by construction: not shown
    moved = float(rows["grpo"][2].split()[0])
    assert 0 < moved <= 1 and rows["grpo"][1] == "1"
    assert "Where each arm wrote" in page.read_text() and "## Where each arm wrote" in (page.parent / "report.md").read_text()
    lora_only = report_command([runs["lora"]], out=tmp_path / "lora")
    assert "updates" not in json.loads((tmp_path / "lora" / "report.json").read_text())
    assert "Where each arm wrote" not in lora_only.read_text()


def test_an_interrupted_full_parameter_grpo_resumes_from_its_whole_model_checkpoint(tmp_path, one_thread):
    import shutil

    from searchgym.agent.models import load_model
    from searchgym.runs import read_metrics
    from searchgym.train.grpo import run_grpo
    from searchgym.train.stages import load_recipe

    overrides = [a for a in FULL if a != "--set"] + ["grpo.save_steps=1", "grpo.beta=0.04"]
    recipe = load_recipe(ROOT / "agents" / "smoke-grpo.toml", overrides=overrides)
    model, tokenizer = load_model("searchgym-prior")
    run_grpo(recipe, tmp_path, model, tokenizer)
    checkpoint = tmp_path / "checkpoints" / "grpo" / "checkpoint-1"
    assert (checkpoint / "model.safetensors").is_file() and not (checkpoint / "adapter_config.json").exists()
    shutil.rmtree(tmp_path / "checkpoints" / "grpo" / "checkpoint-2")  # killed before step 2's checkpoint
    model, tokenizer = load_model("searchgym-prior")
    trained = run_grpo(recipe, tmp_path, model, tokenizer, resume=True)
    steps = [r["step"] for r in read_metrics(tmp_path) if r["stage"] == "grpo" and "train/reward" in r]
    assert steps == [1, 2]
    prior = dict(load_model("searchgym-prior")[0].named_parameters())
    assert any(not torch.equal(p.detach(), prior[k]) for k, p in trained.named_parameters())
