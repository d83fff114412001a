"""Issue #14.9-11: bad values stop at load (one line, exit 2, nothing written, no slow work); `searchgym eval`
of a run folder uses the run's env and `searchgym meter` refuses to pair different questions; a study is
sized from the command line and its --set overrides come last."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import searchgym  # noqa: F401  (registers the envs and plug-ins)
from searchgym.cli import app
from searchgym.config import agent_recipe as recipe_mod
from searchgym.config.agent_recipe import RecipeError
from searchgym.train.stages import load_recipe, recipe_from_dict, validate_recipe
from searchgym.trajectory import Trajectory, write_trajectories
from searchgym.util.config_schema import parse_kwargs, to_toml

REPO = Path(__file__).resolve().parents[1]
SMOKE_SFT = REPO / "agents" / "smoke-sft.toml"


# ---- 9. validation at load ---------------------------------------------------------------------------------
BAD = [
    ("sft.learning_rate=-1", "sft.learning_rate: must be a finite number > 0"),
    ("sft.learning_rate=nan", "sft.learning_rate: must be a finite number > 0, got nan"),
    ("grpo.learning_rate=0", "grpo.learning_rate: must be a finite number > 0"),
    ("sft.epochs=-1", "sft.epochs: must be a finite number of epochs > 0"),
    ("sft.save_steps=0", "sft.save_steps: must be an integer >= 1"),
    ("eval.temperature=-1", "eval.temperature: must be a finite number >= 0"),
    ("lora.r=0", "lora.r: must be the LoRA rank"),
    ("lora.dropout=5", r"lora.dropout: must be a probability in \[0, 1\)"),
    ("env.id=searchgym/Nope-v0", "env.id: 'searchgym/Nope-v0' is not a registered environment; allowed: "),
    ("env.kwargs.embedder=no-such-embedder", "env.kwargs.embedder: unknown embedder 'no-such-embedder'"),
    ("env.kwargs.max_step=3", "env.kwargs: unknown key 'max_step'; allowed: "),
    ("env.kwargs.world_kwargs.max_hop=3", "env.kwargs.world_kwargs: world 'synthetic' takes no 'max_hop'"),
    ("model.base=tinyy", r"model.base: 'tinyy' is not an alias \(smollm2-135m-instruct, tiny"),
    ("model.base=nobody/no-such-model", "model.base: 'nobody/no-such-model' is not in the local Hugging Face cache"),
    ('report_to=["nonsense"]', r"report_to: unknown backend 'nonsense'; allowed: \[.*'tensorboard'"),
    ("sft.narrow_strategy=zigzag", r"sft.narrow_strategy: 'zigzag' is not a strategy of world 'synthetic'; allowed"),
    # Both used to pass load and fail (or be ignored) once training ran: numpy refuses the seed, and a bad
    # alarm was either a traceback at the first probe or silently never checked when probes were off.
    ("seed=99999999999999999999", r"seed: must be an integer in \[0, 2\*\*32\)"),
    ("seed=-1", r"seed: must be an integer in \[0, 2\*\*32\)"),
    ("meters.alarms=[1]", "meters.alarms: each alarm must be a table, got 1"),
    ('meters.alarms=[{rule = "drop", key = "reward/std", fraction = 0.5}]', "meters.alarms: .*unknown condition 'drop'"),
    ('meters.alarms=[{rule = "above", key = "diversity/strategy_entropy", threshold = "x"}]',
     "meters.alarms: .*must be a number"),
    ('meters.alarms={"diversity/strategy_entrpy_mm" = {relative_drop = 0.5}}',
     "meters.alarms: no meter makes 'diversity/strategy_entrpy_mm'"),
]


@pytest.mark.parametrize("override, message", BAD, ids=[b[0] for b in BAD])
def test_bad_values_stop_at_load_with_one_line(override, message, no_slow_work, tmp_path):
    with pytest.raises(RecipeError, match=f"^{message}"):
        load_recipe(SMOKE_SFT, [override])


def test_report_to_needs_an_installed_backend_and_takes_a_string(monkeypatch, no_slow_work):
    monkeypatch.setattr(recipe_mod, "REPORT_TO", {**recipe_mod.REPORT_TO, "tensorboard": ("no_such_module_xyz",)})
    for value in ('["tensorboard"]', '"tensorboard"'):
        with pytest.raises(RecipeError, match=r"^report_to: 'tensorboard' is not installed \(pip install"):
            load_recipe(SMOKE_SFT, [f"report_to={value}"])
    monkeypatch.setattr(recipe_mod, "REPORT_TO", {**recipe_mod.REPORT_TO, "tensorboard": ("json",)})
    assert load_recipe(SMOKE_SFT, ['report_to="tensorboard"']).report_to == ["tensorboard"]  # as HF accepts
    assert load_recipe(SMOKE_SFT, ['report_to="none"']).report_to == []
    assert 'report_to = ["tensorboard"]' in load_recipe(SMOKE_SFT, ['report_to="tensorboard"']).to_toml()


def test_hf_ids_are_allowed_with_downloads_on(monkeypatch, no_slow_work):
    monkeypatch.setenv("SEARCHGYM_ALLOW_DOWNLOAD", "1")
    assert load_recipe(SMOKE_SFT, ["model.base=nobody/no-such-model"]).model.base == "nobody/no-such-model"


@pytest.mark.parametrize("override, field", [
    ("sft.learning_rate=nan", "sft.learning_rate"), ("lora.r=0", "lora.r"),
    ("env.id=searchgym/Nope-v0", "env.id"), ("env.kwargs.embedder=no-such-embedder", "env.kwargs.embedder"),
    ("model.base=tinyy", "model.base"), ('report_to=["nonsense"]', "report_to"),
    ("meters.alarms=[1]", "meters.alarms"), ("seed=4294967296", "seed"),
])
def test_cli_train_exits_2_with_one_unwrapped_line_and_no_run_folder(override, field, tmp_path, monkeypatch,
                                                                      no_slow_work):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(SMOKE_SFT), "--set", override, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}: "), result.output  # not wrapped at 80
    assert "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_cli_eval_with_an_unknown_env_writes_nothing(tmp_path, monkeypatch, no_slow_work):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["eval", "tiny", "--env", "searchgym/Nope-v0"])
    assert result.exit_code == 2 and "--env: 'searchgym/Nope-v0' is not a registered environment" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()
    result = CliRunner().invoke(app, ["eval", "tiny", "--env-kwargs", "max_steps=0", "--out", "e"])
    assert result.exit_code == 2 and "max_steps: must be an integer >= 1, got 0" in result.output and not (tmp_path / "e").exists()
    result = CliRunner().invoke(app, ["eval", "no-such-model", "--out", "e"])
    assert result.exit_code == 2 and "model: 'no-such-model' is not an alias" in result.output


def test_env_kwargs_from_the_command_line():
    assert parse_kwargs(['{"max_steps": 4}', "embedder=hashing", "world_kwargs.size=small"]) == \
        {"max_steps": 4, "embedder": "hashing", "world_kwargs": {"size": "small"}}
    with pytest.raises(RecipeError, match="--env-kwargs 'nope': write it as key=value"):
        parse_kwargs(["nope"])
    with pytest.raises(RecipeError, match="not a JSON object"):
        parse_kwargs(["{bad"])


# ---- one config system: one error class, checks at load, one line from the CLI -------------------------------
def test_the_three_loaders_raise_one_error_class(tmp_path):
    from searchgym.corpus.corpus_recipe import RecipeError as CorpusRecipeError
    from searchgym.corpus.corpus_recipe import load_corpus_recipe
    from searchgym.runs import RunLocked
    from searchgym.study.spec import StudyError, load_study
    from searchgym.util.config_schema import ConfigError

    assert RecipeError is CorpusRecipeError is StudyError is ConfigError and issubclass(RunLocked, ConfigError)
    bad = tmp_path / "bad.toml"
    bad.write_text("[nope]\nx = 1\n")
    for load in (load_recipe, load_corpus_recipe, load_study):
        with pytest.raises(ConfigError) as e:
            load(bad)
        assert type(e.value) is ConfigError and "\n" not in str(e.value)
        assert str(e.value).startswith(f"{bad}: unknown key 'nope'; allowed keys: [")


@pytest.mark.parametrize("pretrain, message", [
    ({"hidden_size": 130}, r"pretrain.hidden_size: must be a multiple of pretrain.num_heads \(4\), got 130"),
    ({"vocab_size": 200}, r"pretrain.vocab_size: byte-level BPE needs >= 300"),
    ({"num_heads": 0}, r"pretrain.num_heads: must be an integer >= 1, got 0"),  # was a ZeroDivisionError
    ({"mixture": {}}, "pretrain.mixture: give strategy weights"),
    ({"mixture": {"jump": 1.0}}, "pretrain.mixture: 'jump' is not a strategy of this world; use some of"),
    ({"mixture": {"forward": 0.0}}, "pretrain.mixture: at least one strategy needs a weight > 0"),
    # nan and inf passed (nan < 0 is false, inf is a weight > 0) and broke the demo shares minutes in
    ({"mixture": {"forward": float("nan")}}, r"pretrain.mixture.forward: a weight must be a finite number >= 0"),
    ({"mixture": {"forward": 1.0, "verify": float("inf")}}, r"pretrain.mixture.verify: a weight must be a finite"),
])
def test_pretrain_settings_are_checked_at_load_not_minutes_into_the_run(pretrain, message, no_slow_work):
    settings = {"mixture": {"forward": 1.0}, **pretrain}
    with pytest.raises(RecipeError, match=f"^{message}"):
        recipe_from_dict({"stages": ["pretrain"], "pretrain": settings})


def test_literal_fields_are_refused_from_files_and_from_code(no_slow_work):
    with pytest.raises(RecipeError, match=r"smoke-sft.toml: grpo.loss_type must be one of \['grpo', 'dr_grpo', "
                                          r"'dapo'.*\], got 'bogus'$"):
        load_recipe(SMOKE_SFT, ["grpo.loss_type=bogus"])
    recipe = load_recipe(SMOKE_SFT, ["grpo.loss_type=dr_grpo"])
    assert recipe.grpo.loss_type == "dr_grpo"
    recipe.model.dtype = "float8"  # a recipe changed in code is held to the same choices
    with pytest.raises(RecipeError, match=r"^model.dtype must be one of \['float32', 'bfloat16', 'float16'\]"):
        validate_recipe(recipe)


def test_grpo_use_vllm_without_vllm_stops_at_load(no_slow_work):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(RecipeError, match="^grpo.use_vllm: vllm is not installed"):
        load_recipe(REPO / "agents" / "smoke-grpo.toml", ["grpo.use_vllm=true", "grpo.rollout=trl"])


def test_grpo_rollout_and_checkpointing_are_checked_at_load(no_slow_work):
    with pytest.raises(RecipeError, match=r"grpo.rollout must be one of \['engine', 'trl'\], got 'fast'"):
        load_recipe(REPO / "agents" / "smoke-grpo.toml", ["grpo.rollout=fast"])
    with pytest.raises(RecipeError, match=r"grpo.gradient_checkpointing must be one of \['auto', 'on', 'off'\]"):
        load_recipe(REPO / "agents" / "smoke-grpo.toml", ["grpo.gradient_checkpointing=true"])
    # vLLM generates only inside TRL's tool loop: refused with the engine rollout before anything else
    with pytest.raises(RecipeError, match=r"^grpo.use_vllm: vLLM generates only in TRL's own tool loop; set "
                                          r"grpo.rollout = \"trl\""):
        load_recipe(REPO / "agents" / "smoke-grpo.toml", ["grpo.use_vllm=true"])
    recipe = load_recipe(REPO / "agents" / "smoke-grpo.toml", ["grpo.rollout=trl", "grpo.gradient_checkpointing=on"])
    assert (recipe.grpo.rollout, recipe.grpo.gradient_checkpointing) == ("trl", "on")


STUDY = REPO / "agents" / "breadth-study.toml"
BAD_CLI = [
    (["train", str(SMOKE_SFT), "--set", "grpo.loss_type=bogus"], "grpo.loss_type must be one of ["),
    (["index", "bad-corpus.toml"], "corpus.source must be one of ['jsonl', 'wiki18', 'wikipedia', 'factbook'"),
    (["search", "bad-corpus.toml", "tea"], "corpus.source must be one of ['jsonl', 'wiki18', 'wikipedia'"),
    (["experiment", str(STUDY), "--preset", "nope"], "no preset 'nope'; choose one of ['full-parameter', 'gpu', 'quick'"),
    (["experiment", "study.toml", "--set", "sft.demos=some"], "sft.demos must be one of ['diverse', 'narrow'], got"),
    (["experiment", "study.toml", "--seeds", "0,0"], "--seeds '0,0': give distinct, non-empty values"),
]


@pytest.mark.parametrize("args, message", BAD_CLI, ids=[" ".join(a[:1] + a[2:]) for a, _ in BAD_CLI])
def test_cli_maps_every_bad_config_to_one_line_exit_2_and_no_folder(args, message, tmp_path, monkeypatch,
                                                                   no_slow_work):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad-corpus.toml").write_text('[corpus]\nsource = "gutenberg"\n')
    (tmp_path / "study.toml").write_text(f'[arms.sft]\nrecipe = "{SMOKE_SFT}"\n')
    result = CliRunner().invoke(app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert message in lines[0] and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad-corpus.toml", "study.toml"]  # no run folder


# ---- 10. eval of a run folder uses the run's env; meter refuses different questions --------------------------
def test_eval_of_a_run_folder_uses_the_runs_env(tmp_path, monkeypatch):
    import gymnasium

    from searchgym.agent.models import resolve_model_path
    from searchgym.train.evaluate import eval_command

    run = tmp_path / "run"
    run.mkdir()
    kwargs = {"embedder": "hashing", "max_steps": 3,
              "world_kwargs": {"size": "small", "max_hops": 2, "n_train": 30, "n_test": 10, "seed": 7}}
    (run / "recipe.toml").write_text(to_toml({"name": "x", "env": {
        "id": "searchgym/SyntheticWorld-Easy-v0", "kwargs": kwargs}, "eval": {"max_turns": 1}}))
    (run / "config.json").symlink_to(resolve_model_path("tiny") / "config.json")  # a model folder too
    import searchgym.agent.models as models

    real = models.load_model
    monkeypatch.setattr(models, "load_model", lambda name, **kw: real("tiny", **kw))
    path = eval_command(str(run), None, 1, 1, out=tmp_path / "e", max_new_tokens=4, progress=False)
    settings = json.loads((tmp_path / "e" / "eval.json").read_text())["settings"]
    assert settings["env_kwargs"] == {**kwargs, "split": "test"} and settings["max_turns"] == 1
    [trajectory] = [json.loads(line) for line in path.read_text().splitlines()]
    expected = gymnasium.make("searchgym/SyntheticWorld-Easy-v0", **kwargs, split="test").unwrapped.tasks[0]
    assert (trajectory["task_id"], trajectory["question"]) == (expected.id, expected.question)


def _traj(task_id: str, question: str, sample: int) -> Trajectory:
    return Trajectory(task_id, "env", sample, question, [], [], "A", None, [], [], [], "x", 1.0, True, ["x"], [], 1)


def test_meter_refuses_to_pair_different_questions(tmp_path):
    from searchgym.report.meter_command import meter_command

    write_trajectories(tmp_path / "a.jsonl", [_traj("q1", "Who founded Ilvar?", i) for i in range(2)])
    write_trajectories(tmp_path / "b.jsonl", [_traj("q1", "Where is Tessa?", i) for i in range(2)])
    with pytest.raises(ValueError, match="task 'q1' asks different questions in .*a.jsonl.* and .*b.jsonl"):
        meter_command([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], out=tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()
    result = CliRunner().invoke(app, ["meter", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")])
    assert result.exit_code == 2 and "asks different questions" in result.output


def test_a_literal_world_kwarg_is_checked_at_load_before_any_run_folder(tmp_path):
    """The synthetic world is not built at load; its Literal-typed holdout must still be refused there."""
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "agents/quick.toml", "--set",
                                      'env.kwargs.world_kwargs.holdout="entity"', "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "world_kwargs.holdout" in result.output and "'anchor', 'question'" in result.output
    assert not out.exists()
    assert load_recipe(Path("agents/quick.toml"), ['env.kwargs.world_kwargs.holdout="anchor"']).env.kwargs


def test_alarms_load_in_both_documented_forms(no_slow_work):
    """docs/meters.md writes alarms as a table ({key = {rule = number}}); recipes may also list rows."""
    table = load_recipe(SMOKE_SFT, ['meters.alarms={"alarm/grad_norm_ratio" = {above = 3}}'])
    rows = load_recipe(SMOKE_SFT, ['meters.alarms=[{rule = "relative_drop", key = "reward/std", fraction = 0.5}]'])
    from searchgym.meters.alarms import Above, RelativeDrop, alarm_rules

    assert alarm_rules(table.meters.alarms) == [Above("alarm/grad_norm_ratio", 3.0)]
    assert alarm_rules(rows.meters.alarms) == [RelativeDrop("reward/std", 0.5)]
