"""Multi-turn GRPO through TRL: the env adapter, loss masking of tool output, dropped tool results, and a
scripted smoke run of agents/smoke-grpo.toml (tiny model, CPU).

A random tiny model never calls a tool, so the trainer runs patch `GRPOTrainer._generate_single_turn` (as
TRL's own tests do) to emit scripted turns: search the question, open the first hit, answer (gold on even
rows, wrong on odd ones, so groups have reward variance), then stop. Everything else is TRL's real loop.
"""

import inspect
import json
import logging
import re

import pytest
import torch
from transformers.utils import get_json_schema

import searchgym  # noqa: F401  (registers the envs and plug-ins)
from searchgym.envs.tools import TOOL_NAMES, SearchTools, ToolError
from searchgym.runs import read_metrics
from searchgym.train.grpo import run_grpo
from searchgym.train.grpo_env import make_environment_factory
from searchgym.train.stages import load_recipe

ELEMENTS = "searchgym_plugin_example/Elements-v0"
SMOKE = "agents/smoke-grpo.toml"


@pytest.fixture(scope="module")
def factory():
    return make_environment_factory(ELEMENTS, {"step_cost": 0.01, "format_penalty": 0.1, "max_steps": 4})


# ---- the adapter ----------------------------------------------------------------------------------

def test_adapter_exposes_exactly_the_three_tools_with_searchtools_schemas(factory):
    env = factory()
    # What TRL does: every public function of the class is a tool, except reset and get_reward.
    public = {n for n, _ in inspect.getmembers(type(env), predicate=inspect.isfunction) if not n.startswith("_")}
    assert public == {"reset", "get_reward", *TOOL_NAMES}
    assert [get_json_schema(getattr(env, n)) for n in TOOL_NAMES] == SearchTools.schemas()
    # ... in TRL's order (getmembers sorts by name), which the other paths must render too
    tools = [n for n, _ in inspect.getmembers(type(env), predicate=inspect.isfunction)
             if n not in ("reset", "get_reward") and not n.startswith("_")]
    assert tuple(tools) == TOOL_NAMES


def test_reset_same_row_same_episode_and_reward(factory):
    env = factory()
    row = {"prompt": [], "task_id": "el-sym-O", "seed": 3, "answers": ["O"]}

    def play():
        assert env.reset(**row) is None  # nothing appended to the prompt: the question is already there
        hits = env.search("atomic number 8")
        page = env.open("el:O")
        return hits, page, env.answer("O"), env.get_reward()

    first, second = play(), play()
    assert first == second
    hits, page, confirmation, reward = first
    assert "[el:O] Oxygen" in hits and page.startswith("[el:O] Oxygen")
    assert reward == pytest.approx(1.0 - 2 * 0.01)  # answer score minus the step cost of search and open
    assert env.state.correct and [c["name"] for c in env.calls] == ["search", "open", "answer"]


def test_call_after_answer_is_an_error_and_is_penalised(factory):
    env = factory()
    env.reset(task_id="el-sym-O")
    env.answer("wrong")
    with pytest.raises(ToolError, match="already answered"):
        env.search("x")
    assert env.get_reward() == pytest.approx(0.0 - 0.1)
    with pytest.raises(ToolError, match="unknown doc_id"):
        env.reset(task_id="el-sym-O") or env.open("el:Zz")
    with pytest.raises(ValueError, match="unknown task_id"):
        env.reset(task_id="nope")


def test_step_budget_ends_the_episode_like_searchenv(factory):
    env = factory()
    env.reset(task_id="el-sym-O")
    for _ in range(4):
        env.search("oxygen")
    assert env.truncated and env.get_reward() == pytest.approx(-0.04)
    with pytest.raises(ToolError, match="step budget"):
        env.answer("O")
    assert env.state.answer is None


@pytest.mark.parametrize("script", [
    [("search", "oxygen"), ("open", "el:Zz"), ("open", "el:O"), ("answer", "O"), ("search", "again")],
    [("search", "gas"), ("search", "noble"), ("open", "nope"), ("search", "x"), ("answer", "O"), ("open", "el:O")],
])
def test_adapter_and_searchenv_play_one_episode_engine_identically(factory, script):
    """The same calls through SearchEnv.step (as text) and through TRL's tool methods: the same records,
    observations, errors, step budget and return — including failed calls and calls after the end."""
    from searchgym.envs.actions import format_tool_call
    from searchgym.tasks import ToolCall

    adapter, env = factory(), factory().__dict__["_env"]
    adapter.reset(task_id="el-sym-O")
    env.reset(options={"task_id": "el-sym-O"})
    rewards = []
    for name, value in script:
        argument = {"search": "query", "open": "doc_id", "answer": "text"}[name]
        obs, reward, terminated, truncated, info = env.step(format_tool_call(ToolCall(name, {argument: value})))
        rewards.append(reward)
        try:
            seen = getattr(adapter, name)(value)
        except ToolError as e:
            seen = f"Error: {e}"
        assert seen == obs and (info["error"] is None) == (not seen.startswith("Error:"))
        assert adapter.truncated == truncated
    assert adapter.calls == env.episode.calls and len(adapter.calls) == len(script)
    assert adapter.get_reward() == pytest.approx(sum(rewards)) == pytest.approx(env.trajectory(messages=[]).reward)
    assert any(not c["valid"] for c in adapter.calls)  # the scripts do exercise failures


def test_not_a_searchenv_is_refused():
    with pytest.raises(TypeError, match="SearchEnv"):
        make_environment_factory("CartPole-v1")


# ---- scripted trainer runs ------------------------------------------------------------------------

def scripted_generation(tokenizer, gold_by_question):
    """A replacement for `GRPOTrainer._generate_single_turn` playing search -> open -> answer -> stop."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    emitted = []  # (row text so far, ids) for every turn, to compare with the loss mask
    generate_prompts = []  # the first-turn prompts exactly as TRL rendered them

    def call(name, **arguments):
        return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"

    def generate(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        out = []
        for i, ids in enumerate(prompt_ids):
            text = tokenizer.decode(ids)
            question = text.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
            turn = text.count("<tool_response>")
            if turn == 0:
                generate_prompts.append(text)
                reply = call("search", query=question)
            elif turn == 1:
                hit = re.search(r"<tool_response>\n\[([^\]]+)\]", text)
                reply = call("open", doc_id=hit.group(1) if hit else "none")
            elif turn == 2:
                gold = gold_by_question[question]
                reply = call("answer", text=gold if i % 2 == 0 else "certainly not " + gold)
            else:
                reply = "Done."
            out.append(tokenizer.encode(reply, add_special_tokens=False) + [end])
            emitted.append(out[-1])
        return out, None

    generate.prompts = generate_prompts
    return generate, emitted


def scripted_engine_turn(generate):
    """The same script as a replacement for the engine path's `grpo_rollout.sample_turn`."""
    from searchgym.agent.rollout_cache import SequenceCache

    def sample_turn(model, trainer, contexts, caches, max_new_tokens, stops):
        ids, _ = generate(None, contexts, None, None, 1)
        return ids, [[0.0] * len(i) for i in ids], [SequenceCache([], []) for _ in ids]

    return sample_turn


def run_scripted(tmp_path, monkeypatch, overrides=(), rollout="trl"):
    """Run agents/smoke-grpo.toml with scripted generation on either rollout path (TRL's tool loop or our
    engine); return (model, first batch, emitted turns)."""
    from trl import GRPOTrainer

    from searchgym.agent.models import load_model
    from searchgym.train import grpo_rollout

    recipe = load_recipe(SMOKE, overrides=[*overrides, f"grpo.rollout={rollout}"])
    env = make_environment_factory(recipe.env.id, recipe.env.kwargs).env
    model, tokenizer = load_model(recipe.model.base)
    generate, emitted = scripted_generation(tokenizer, {t.question: t.answers[0] for t in env.tasks})
    monkeypatch.setattr(GRPOTrainer, "_generate_single_turn", generate)
    monkeypatch.setattr(grpo_rollout, "sample_turn", scripted_engine_turn(generate))
    batches = []
    original = GRPOTrainer._generate_and_score_completions

    def capture(self, inputs):
        output = original(self, inputs)
        batches.append({k: v.clone() if torch.is_tensor(v) else v for k, v in output.items()})
        return output

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", capture)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trained = run_grpo(recipe, tmp_path, model, tokenizer)
    run_scripted.prompts = generate.prompts
    return trained, before, batches, emitted, tokenizer


@pytest.mark.parametrize("rollout", ["trl", "engine"])
def test_smoke_run_masks_tool_output_trains_lora_and_logs_metrics(tmp_path, monkeypatch, rollout):
    model, before, batches, emitted, tokenizer = run_scripted(tmp_path, monkeypatch, rollout=rollout)

    # TRL renders the prompt exactly as rollouts, SFT and the prior lab's pretraining do: the same system
    # prompt and the same tools block in the same order (a prior-lab model reads that block as one token).
    from searchgym.envs.tools import SYSTEM_PROMPT

    question = run_scripted.prompts[0].split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
    ours = tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM_PROMPT},
                                          {"role": "user", "content": question}],
                                         tools=SearchTools.schemas(), add_generation_prompt=True, tokenize=False)
    assert run_scripted.prompts[0] == ours

    # Loss weight: tool-output tokens 0, the model's own tokens 1, checked token by token on a real batch.
    batch, rows_per_batch = batches[0], batches[0]["completion_ids"].shape[0]
    for row in range(rows_per_batch):
        ids = batch["completion_ids"][row].tolist()
        in_completion, model_made = batch["completion_mask"][row].tolist(), batch["tool_mask"][row].tolist()
        trained_ids = [t for t, c, m in zip(ids, in_completion, model_made) if c and m]
        # Each scripted call covered the whole batch, so row r's k-th turn is emitted[k * rows + r].
        assert trained_ids == [t for k in range(4) for t in emitted[k * rows_per_batch + row]]
        masked = tokenizer.decode([t for t, c, m in zip(ids, in_completion, model_made) if c and not m])
        assert masked.count("<tool_response>") == 3 and "Answer recorded" in masked
        assert "<tool_call>" not in masked

    # The LoRA adapter moved (B starts at zero); the base weights did not; only LoRA weights train.
    after = dict(model.named_parameters())
    lora_b = [p for n, p in after.items() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)
    assert all("lora_" in n for n, p in after.items() if p.requires_grad)
    for name, p in before.items():
        wrapped = "base_model.model." + name
        wrapped = wrapped if wrapped in after else wrapped.replace(".weight", ".base_layer.weight")
        assert torch.equal(p, after[wrapped]), name
    assert "ref" not in model.peft_config  # the training-only reference adapter is removed

    rows = [r for r in read_metrics(tmp_path) if r["stage"] == "grpo" and "train/reward" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ("train/reward", "train/reward_std", "train/frac_reward_zero_std", "train/entropy", "train/kl",
                "tools/call_frequency", "completions/mean_length", "completions/clipped_ratio", "train/step_time",
                "search/tool_result_truncated", "search/answered", "search/correct",
                "search/searches_per_episode",
                "rewards/SearchEnvironment/mean" if rollout == "trl" else "rewards/episode_return/mean"):
        assert key in rows[0], key
    assert rows[0]["search/answered"] == 1.0 and rows[0]["search/correct"] == 0.5
    assert rows[0]["tools/call_frequency"] == 3.0 and rows[0]["search/tool_result_truncated"] == 0
    # KL to the reference: 0 before any update, > 0 after one, 0 again right after the reset at step 2.
    kl = [r["train/kl"] for r in rows]
    assert kl[0] == pytest.approx(0, abs=1e-7) and kl[1] > 1e-6 and kl[2] == pytest.approx(0, abs=1e-7)


@pytest.mark.parametrize("rollout", ["trl", "engine"])
def test_tool_result_that_does_not_fit_is_counted_and_warned(tmp_path, monkeypatch, caplog, rollout):
    caplog.set_level(logging.WARNING, logger="searchgym.train.grpo")
    run_scripted(tmp_path, monkeypatch, overrides=["grpo.steps=1", "grpo.max_completion_length=80",
                                                   "grpo.ref_reset_steps=0", "grpo.beta=0.0"], rollout=rollout)
    row = next(r for r in read_metrics(tmp_path) if "train/reward" in r)
    # The search call fits, its ~100-token result does not: TRL drops it and ends every rollout.
    assert row["search/tool_result_truncated"] == 2 and row["search/tool_result_truncated_frac"] == 1.0
    assert row["search/answered"] == 0 and row["search/searches_per_episode"] == 1.0
    assert any("did not fit max_completion_length" in r.getMessage() for r in caplog.records)


# ---- countermeasures: recipe settings that are TRL's own ---------------------------------------------

COUNTERMEASURES = {"epsilon": 0.25, "epsilon_high": 0.28, "top_entropy_quantile": 0.2, "entropy_coef": 0.01,
                   "use_adaptive_entropy": True, "entropy_target": 0.3, "scale_rewards": "none",
                   "mask_truncated_completions": True, "num_iterations": 2, "importance_sampling_level": "sequence"}


def test_every_countermeasure_reaches_the_built_trainer(tmp_path):
    from searchgym.agent.models import load_model
    from searchgym.train.context import TrainContext
    from searchgym.train.grpo import TRL_COUNTERMEASURES, grpo_trainer

    assert set(COUNTERMEASURES) == set(TRL_COUNTERMEASURES)
    overrides = [f"grpo.{k}={json.dumps(v)}" for k, v in COUNTERMEASURES.items()]
    recipe = load_recipe(SMOKE, overrides)
    model, tokenizer = load_model(recipe.model.base)
    trainer = grpo_trainer(TrainContext(recipe, tmp_path, stage="grpo", model=model, tokenizer=tokenizer))
    for name, value in COUNTERMEASURES.items():
        assert getattr(trainer.args, name) == value, name
    # and TRL acts on them: its trainer copies what its loss reads
    assert (trainer.epsilon_low, trainer.epsilon_high, trainer.num_iterations) == (0.25, 0.28, 2)
    assert trainer.top_entropy_quantile == 0.2 and trainer.importance_sampling_level == "sequence"
    default = load_recipe(SMOKE)
    assert default.grpo.epsilon_high == 0 and default.grpo.scale_rewards == "group"
    model, tokenizer = load_model(default.model.base)  # a fresh model: the first trainer gave this one its ref
    symmetric = grpo_trainer(TrainContext(default, tmp_path / "default", stage="grpo", model=model, tokenizer=tokenizer))
    assert symmetric.epsilon_high == symmetric.epsilon_low == default.grpo.epsilon  # 0 = unset: TRL's default


def test_settings_that_act_only_off_policy_are_flagged_when_updates_are_on_policy(tmp_path, caplog):
    """TRL trains each batch once at num_iterations = 1: the probability ratio is 1, so clip-higher and
    sequence-level importance sampling change nothing; building the config says so, and stays quiet once they
    can act."""
    from searchgym.train.grpo import grpo_config, off_policy_only

    inert = load_recipe(SMOKE, ["grpo.epsilon_high=0.28", 'grpo.importance_sampling_level="sequence"'])
    assert off_policy_only(inert.grpo) == ["grpo.epsilon_high", "grpo.importance_sampling_level"]
    with caplog.at_level("WARNING", logger="searchgym.train.grpo"):
        grpo_config(inert, tmp_path, [1.0])
    assert "grpo.epsilon_high, grpo.importance_sampling_level: no effect with grpo.num_iterations = 1" in caplog.text
    acting = load_recipe(SMOKE, ["grpo.epsilon_high=0.28", "grpo.num_iterations=2"])
    assert off_policy_only(acting.grpo) == [] and off_policy_only(load_recipe(SMOKE).grpo) == []


@pytest.mark.parametrize("item, allowed", [
    ("grpo.epsilon=0", "grpo.epsilon: must be a clip range in (0, 1)"),
    ("grpo.epsilon_high=-1", "grpo.epsilon_high: must be a finite number >= 0"),
    ("grpo.top_entropy_quantile=1.5", "grpo.top_entropy_quantile: must be a share in [0, 1]"),
    ("grpo.entropy_coef=-0.1", "grpo.entropy_coef: must be a finite number >= 0"),
    ("grpo.num_iterations=0", "grpo.num_iterations: must be an integer >= 1"),
    ("grpo.scale_rewards=std", "grpo.scale_rewards must be one of ['group', 'batch', 'none']"),
    ("grpo.importance_sampling_level=seq", "grpo.importance_sampling_level must be one of ['token', 'sequence']"),
])
def test_countermeasure_out_of_range_is_one_line_at_load(item, allowed):
    from searchgym.util.config_schema import ConfigError

    with pytest.raises(ConfigError) as e:
        load_recipe(SMOKE, [item])
    assert allowed in str(e.value) and "\n" not in str(e.value)


def test_exploration_rewards_are_paid_and_logged_one_by_one(tmp_path, monkeypatch):
    """Scripted episodes (search the question, open the first hit, answer: gold on even rows, wrong on odd):
    one distinct query + one document each, nothing repeated, two different answers per group of two."""
    run_scripted(tmp_path, monkeypatch, overrides=["grpo.steps=1", "grpo.ref_reset_steps=0", "grpo.beta=0.0",
                                                   "grpo.novelty_reward=0.1", "grpo.redundancy_penalty=0.2",
                                                   "grpo.evidence_reward=0.3", "grpo.rare_answer_reward=0.5"],
                 rollout="engine")
    row = next(r for r in read_metrics(tmp_path) if "train/reward" in r)
    assert row["rewards/novelty_reward/mean"] == 2.0
    assert row["rewards/redundancy_penalty/mean"] == 0.0
    assert row["rewards/rare_answer_reward/mean"] == 0.5
    assert 0.0 <= row["rewards/evidence_reward/mean"] <= 1.0
    paid = {"format_reward": 0.1, "search_calls": -0.01, "novelty_reward": 0.1, "redundancy_penalty": -0.2,
            "evidence_reward": 0.3, "rare_answer_reward": 0.5, "episode_return": 1.0}
    total = sum(weight * row[f"rewards/{name}/mean"] for name, weight in paid.items())
    assert row["train/reward"] == pytest.approx(total, abs=1e-5)
