"""Multi-turn GRPO over any searchgym env, through TRL's GRPOTrainer and its ``environment_factory``.

Each dataset row names one train task; TRL samples ``num_generations`` rollouts per row, runs the
search/open/answer tools between turns (tool-output tokens carry no loss), and scores each rollout
with the env's own reward (answer score minus penalties), plus an optional format reward and search
cost. Besides TRL's metrics (reward, reward_std, frac_reward_zero_std, entropy, kl, tools/*,
completions/*, step_time) we log search behaviour and the tool results TRL dropped for lack of budget.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import TrainerCallback

from searchgym.config.agent_recipe import Recipe
from searchgym.envs.tools import SYSTEM_PROMPT
from searchgym.train.exploration import reward_terms
from searchgym.train.grpo_env import make_environment_factory
from searchgym.train.grpo_rollout import EngineRollout, ignore_reasoning_calls

log = logging.getLogger(__name__)



# ---- data -----------------------------------------------------------------------------------------

def grpo_rows(tasks, num_questions: int) -> list[dict]:
    """One row per train task: the prompt plus what ``reset(**row)`` needs to replay that task.

    >>> from searchgym.tasks import Task
    >>> t = Task("t1", "Who?", ("Ada",), (("d1",),), 1, "bridge", "train")
    >>> row = grpo_rows([t], 5)[0]
    >>> [m["role"] for m in row["prompt"]], row["task_id"], row["answers"]
    (['system', 'user'], 't1', ['Ada'])

    Each message also carries ``task_id``: TRL's ``rollout_func`` sees the prompts but not the rows
    (`searchgym.train.grpo_rollout`); chat templates ignore the key.
    """
    return [{"prompt": [{"role": "system", "content": SYSTEM_PROMPT, "task_id": t.id},  # never the default
                        {"role": "user", "content": t.question, "task_id": t.id}],
             "task_id": t.id, "seed": i, "answers": list(t.answers)}
            for i, t in enumerate(tasks[:num_questions])]


# ---- rewards and their side channels ------------------------------------------------------------

def dropped_tool_results(messages: list[dict], max_iterations: int) -> int:
    """Tool calls TRL executed but whose results it cut from the conversation (they did not fit
    ``max_completion_length``). TRL rolls such results back, so the conversation ends on an assistant
    turn with tool calls; the other way to end like that is hitting ``max_tool_calling_iterations``
    (calls never executed), told apart by counting the turns that did get results.

    >>> call = {"role": "assistant", "tool_calls": [{"function": {"name": "search"}}]}
    >>> dropped_tool_results([call], max_iterations=8)
    1
    >>> dropped_tool_results([call, {"role": "tool", "content": "r"}, call], max_iterations=1)
    0
    >>> dropped_tool_results([call, {"role": "tool", "content": "r"}], max_iterations=8)
    0
    """
    answered_turns = sum(1 for m, nxt in zip(messages, messages[1:])
                         if m.get("tool_calls") and nxt.get("role") == "tool")
    last = messages[-1] if messages else {}
    if last.get("role") == "assistant" and last.get("tool_calls") and answered_turns < max_iterations:
        return len(last["tool_calls"])
    return 0


def tool_errors(messages: list[dict]) -> int:
    """Tool messages that report an error (TRL renders a raised exception as ``{'error': ...}``).

    >>> tool_errors([{"role": "tool", "content": "{'error': 'unknown doc_id'}"}, {"role": "tool", "content": "ok"}])
    1
    """
    return sum(1 for m in messages if m.get("role") == "tool" and str(m.get("content", "")).startswith("{'error'"))


def format_reward(completions, environments, messages=None, **kwargs) -> list[float]:
    """1 for a rollout that submitted an answer with the answer tool and had no failed tool call, else 0.

    ``messages`` (from `EngineRollout`) is the completion as messages; TRL's own tool loop puts them in
    ``completions``."""
    return [float(env.state.answer is not None and not tool_errors(c) and all(x["valid"] for x in env.calls))
            for c, env in zip(messages or completions, environments)]


def episode_return(environments, **kwargs) -> list[float]:
    """The env's own reward, ``get_reward()`` of each rollout's episode (weight 1). TRL adds this itself
    for an ``environment_factory`` (logged as ``rewards/SearchEnvironment``); `EngineRollout` passes the
    envs as data, so the engine path names it here."""
    return [e.get_reward() for e in environments]


def make_search_calls_reward(max_iterations: int):
    """The per-search cost (weighted by ``-grpo.search_cost``), which also logs episode diagnostics."""

    def search_calls(completions, environments, log_metric=None, messages=None, tool_calls=None,
                     tool_failures=None, **kwargs) -> list[float]:
        n = len(environments)
        completions = messages or completions
        dropped = [dropped_tool_results(c, max_iterations) for c in completions]
        lost = sum(1 for d in dropped if d)
        if lost:
            log.warning("%d of %d rollouts lost a tool result that did not fit max_completion_length (TRL drops "
                        "it and ends the rollout); raise grpo.max_completion_length or lower env.kwargs "
                        "max_obs_chars/top_k", lost, n)
        if log_metric is not None:
            states = [e.state for e in environments]
            for key, value in {
                "search/tool_result_truncated": lost,  # rollouts per batch (mean over the logging window)
                "search/tool_result_truncated_frac": lost / n,
                "search/answered": sum(s.answer is not None for s in states) / n,
                "search/correct": sum(s.correct for s in states) / n,
                "search/searches_per_episode": sum(len(s.queries) for s in states) / n,
                "search/opens_per_episode": sum(len(s.opened) for s in states) / n,
                "search/tool_calls_per_episode": sum(len(e.calls) for e in environments) / n,
                "search/invalid_calls_per_episode": sum(sum(not c["valid"] for c in e.calls)
                                                        for e in environments) / n,
                "search/tool_errors_per_episode": sum(tool_errors(c) for c in completions) / n,
                "search/step_budget_truncated": sum(e.truncated for e in environments) / n,
            }.items():
                log_metric(key, float(value))
            if tool_calls is not None:  # the engine path: TRL logs these itself only for its own tool loop
                log_metric("tools/call_frequency", sum(tool_calls) / n)
                log_metric("tools/failure_frequency", sum(tool_failures) / max(sum(tool_calls), 1))
        return [float(len(e.state.queries)) for e in environments]

    return search_calls


# ---- callbacks ------------------------------------------------------------------------------------

def reset_reference(model) -> int:
    """Copy the trained LoRA adapter ("default") into TRL's frozen reference adapter ("ref"), so the KL
    term anchors to the current policy. Returns the number of tensors copied."""
    params = dict(model.named_parameters())
    copied = 0
    with torch.no_grad():
        for name, p in params.items():
            ref = params.get(name.replace(".default.", ".ref.")) if ".default." in name else None
            if ref is not None:
                ref.copy_(p)
                copied += 1
    return copied


class ReferenceReset(TrainerCallback):
    """ProRL-style reference reset every ``every`` optimizer steps.

    With PEFT, TRL computes reference log-probs with a frozen copy of the adapter named "ref" (it makes
    one whenever it gets a PeftModel and beta > 0); re-anchoring is copying "default" into it. Checkpoints
    save "ref" in a subfolder and the Trainer reloads it on resume, so a resumed run keeps its last anchor.
    """

    def __init__(self, model, every: int):
        if "ref" not in model.peft_config:
            raise RuntimeError("reference reset needs TRL's 'ref' adapter, which it did not create (peft < 0.20 "
                               "with LoRA target_parameters); set grpo.ref_reset_steps = 0")
        self.model, self.every = model, every

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            reset_reference(self.model)
            log.info("reference policy reset at step %d", state.global_step)


# ---- the stage ------------------------------------------------------------------------------------

# GRPOSettings fields that are TRL GRPOConfig fields of the same name and meaning, passed through untouched
# (docs/countermeasures.md says what each does and where it comes from).
TRL_COUNTERMEASURES = ("epsilon", "epsilon_high", "top_entropy_quantile", "entropy_coef", "use_adaptive_entropy",
                       "entropy_target", "scale_rewards", "mask_truncated_completions", "num_iterations",
                       "importance_sampling_level")


def grpo_config(recipe: Recipe, run_dir: Path, reward_weights: list[float], model_parameters: int = 0):
    """GRPOConfig from the recipe: CPU without a GPU; on a GPU the precision ``model.dtype`` asks for (bf16 for
    "bfloat16", like every stage: `searchgym.train.context.trainer_args`) and optionally vLLM; gradient
    checkpointing by `checkpointing` for a model of ``model_parameters``."""
    from trl import GRPOConfig

    from searchgym.train.context import trainer_args

    g = recipe.grpo
    if inert := off_policy_only(g):
        log.warning("%s: no effect with grpo.num_iterations = 1 (every batch is trained on once, on-policy: the "
                    "probability ratio is 1, never clipped or reweighted); set grpo.num_iterations >= 2 for it to act",
                    ", ".join(inert))
    cuda = torch.cuda.is_available()
    if g.use_vllm and not cuda:
        raise ValueError("grpo.use_vllm needs a CUDA GPU and vllm installed; set grpo.use_vllm = false on CPU")
    return GRPOConfig(
        output_dir=str(run_dir / "checkpoints" / "grpo"), max_steps=g.steps, num_generations=g.num_generations,
        per_device_train_batch_size=g.batch_size, gradient_accumulation_steps=g.grad_accum,
        learning_rate=g.learning_rate, beta=g.beta, loss_type=g.loss_type, temperature=g.temperature,
        top_p=g.top_p, max_completion_length=g.max_completion_length,
        max_tool_calling_iterations=g.max_tool_calling_iterations, reward_weights=reward_weights,
        **trainer_args(recipe), save_strategy="steps",  # device, precision, report_to, seed
        save_steps=g.save_steps, logging_steps=g.logging_steps,
        use_vllm=g.use_vllm, vllm_mode=g.vllm_mode, log_completions=False,
        dataloader_num_workers=0, disable_tqdm=True,
        # Dropout makes the sampled, the trained and the reference log-probs disagree for no reason.
        disable_dropout=True,
        # epsilon_high 0 is the recipe's "unset": TRL then clips symmetrically at epsilon.
        **{name: getattr(g, name) for name in TRL_COUNTERMEASURES if not (name == "epsilon_high" and not g.epsilon_high)},
        activation_checkpointing=checkpointing(g.gradient_checkpointing, model_parameters),
    )


def off_policy_only(g) -> list[str]:
    """The recipe's settings that act only on off-policy updates, when every update is on-policy: TRL trains
    each generated batch once when ``num_iterations`` is 1 (its generation batch is one optimizer step), so the
    ratio of new to old probabilities is exactly 1 and a clip range or the importance-sampling level changes no
    weight (the countermeasure study's clip-higher arm trained bit-identical to plain GRPO that way)."""
    if g.num_iterations > 1:
        return []
    return [f"grpo.{name}" for name, unset in (("epsilon_high", 0.0), ("importance_sampling_level", "token"))
            if getattr(g, name) != unset]


# Recomputing activations in the backward pass runs every layer's forward twice to save activation memory;
# below a billion parameters (the prior: 1.3M, SmolLM2: 135M) the activations of a GRPO batch fit anywhere.
CHECKPOINTING_MIN_PARAMETERS = 1_000_000_000


def checkpointing(setting: str, parameters: int) -> bool:
    """Whether to recompute activations: ``grpo.gradient_checkpointing`` "on"/"off", or "auto" = only for
    models of at least `CHECKPOINTING_MIN_PARAMETERS` parameters, where memory needs it.

    >>> checkpointing("auto", 1_317_120), checkpointing("auto", 3_000_000_000), checkpointing("on", 10)
    (False, True, True)
    """
    return setting == "on" or (setting == "auto" and parameters >= CHECKPOINTING_MIN_PARAMETERS)


def run_grpo(recipe: Recipe, run_dir: str | Path, model, tokenizer, *, resume: bool = False):
    """Train ``model`` (a base model or the SFT PeftModel) with multi-turn GRPO; returns the trained model
    (`train_grpo` in a context of its own: what the pipeline runs as the "grpo" stage)."""
    from searchgym.train.context import TrainContext

    return train_grpo(TrainContext(recipe, Path(run_dir), resume=resume, stage="grpo", model=model,
                                   tokenizer=tokenizer))


def train_grpo(ctx):
    """The "grpo" stage on ``ctx.model``; returns the trained model (the PeftModel, or the whole model).

    We wrap the model in its LoRA ourselves (``ctx.trainable``, rather than passing TRL a peft_config) so a
    new adapter and a continued SFT adapter take one path: with beta > 0 TRL then keeps a frozen copy of the
    starting adapter as the reference ("ref"; for a new LoRA that is exactly the base model), which
    `ReferenceReset` can re-anchor. Checkpoints go to ``run_dir/checkpoints/grpo``; ``ctx.resume`` continues
    from the latest one there. Metrics append to ``run_dir/metrics.jsonl`` (stage "grpo").
    """
    trainer = grpo_trainer(ctx)
    checkpoint = ctx.resume_checkpoint()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    model = trainer.model
    if "ref" in getattr(model, "peft_config", {}):  # the frozen reference is a training device; ship the policy
        model.delete_adapter("ref")
    return model


def grpo_trainer(ctx):
    """The GRPOTrainer `train_grpo` runs, built and attached but not started (benchmarks time it alone).

    With ``model.finetune = "full"`` and beta > 0, TRL loads its reference model from the policy's
    ``config._name_or_path``; we then copy the policy's weights into it, so the reference is the stage's
    starting policy (as with LoRA, where "ref" copies the starting adapter), not whatever that folder holds."""
    from datasets import Dataset
    from trl import GRPOTrainer

    recipe, g = ctx.recipe, ctx.recipe.grpo
    factory = make_environment_factory(recipe.env.id, recipe.env.kwargs)
    rows = grpo_rows(factory.env.tasks, g.num_questions)
    if len(rows) < g.num_questions:
        log.warning("grpo.num_questions=%d but %s has only %d train tasks; using them all",
                    g.num_questions, recipe.env.id, len(rows))
    model = ctx.trainable(ctx.model)
    full_reference = recipe.model.finetune == "full" and g.beta > 0
    if full_reference and not (Path(model.config._name_or_path or "/nonexistent") / "config.json").is_file():
        raise RuntimeError("full-parameter GRPO with grpo.beta > 0 needs the policy loaded from a model folder "
                           f"(TRL builds the reference from it); config._name_or_path is {model.config._name_or_path!r}")
    exploration, exploration_weights = reward_terms(g)  # logged one by one as rewards/<term>/mean
    reward_funcs = [format_reward, make_search_calls_reward(g.max_tool_calling_iterations), *exploration]
    weights = [g.format_reward, -g.search_cost, *exploration_weights]
    if g.rollout == "engine":  # our cached engine generates; the env's reward is a reward function like the rest
        generation = dict(rollout_func=EngineRollout(factory))
        reward_funcs, weights = [*reward_funcs, episode_return], [*weights, 1.0]
    else:  # TRL's own tool loop; it appends the env's get_reward with weight 1 after our reward functions
        generation = dict(environment_factory=factory)
    parameters = sum(p.numel() for p in model.parameters())
    args = grpo_config(recipe, ctx.run_dir, reward_weights=weights, model_parameters=parameters)
    ignore_reasoning_calls(ctx.tokenizer)  # a call inside <think> reasoning is not a call, on both rollout paths
    trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=args, processing_class=ctx.tokenizer,
                          train_dataset=Dataset.from_list(rows), callbacks=[ctx.metrics_logger()], **generation)
    if full_reference:
        trainer.ref_model.load_state_dict(model.state_dict())
    if g.ref_reset_steps:
        trainer.add_callback(ReferenceReset(trainer.model, g.ref_reset_steps))
    ctx.attach(trainer)  # a bar with ETA and one line per logged step; live diversity/* probes + alarms
    return trainer
