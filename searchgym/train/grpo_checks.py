"""The grpo stage's load-time checks (its row in `searchgym.train.stages.STAGES` names them): rules across its
fields, the ranges of every number (the entropy-collapse countermeasures included) and what it needs of the env.
Kept apart from `searchgym.train.grpo`, which imports torch at its top: these run whenever any recipe loads."""

from __future__ import annotations

from searchgym.config.recipe_checks import check_rules, finite
from searchgym.util.config_schema import ConfigError


def check_grpo(recipe) -> None:
    """The GRPO stage's own checks (`searchgym.train.stages.STAGES["grpo"]`)."""
    g = recipe.grpo
    if g.num_generations < 2:
        raise ConfigError("grpo.num_generations: GRPO needs >= 2 generations per prompt to compare them")
    if (g.batch_size * g.grad_accum) % g.num_generations:
        raise ConfigError(f"grpo.batch_size: batch_size × grad_accum ({g.batch_size}×{g.grad_accum}) must be "
                          f"a multiple of num_generations ({g.num_generations}); set grpo.batch_size to "
                          f"{g.num_generations} or a multiple of it")
    for n in ("steps", "num_questions", "max_completion_length"):
        if getattr(g, n) < 1:
            raise ConfigError(f"grpo.{n}: must be >= 1, got {getattr(g, n)}")
    if g.beta < 0:
        raise ConfigError(f"grpo.beta: the KL coefficient must be >= 0, got {g.beta}")
    if g.ref_reset_steps and not g.beta:
        raise ConfigError("grpo.ref_reset_steps: reference resets need a reference model; set grpo.beta > 0")
    if g.ref_reset_steps and recipe.model.finetune == "full":
        # A LoRA reference ("ref") travels in the checkpoints; TRL's full reference model does not, so a
        # resumed run would lose its last anchor.
        raise ConfigError("grpo.ref_reset_steps: reference resets are supported with model.finetune = \"lora\" "
                          "only; set grpo.ref_reset_steps = 0 or model.finetune = \"lora\"")
    if g.use_vllm and g.rollout == "engine":
        raise ConfigError("grpo.use_vllm: vLLM generates only in TRL's own tool loop; set grpo.rollout = \"trl\" "
                          "with it (the engine rollout generates with transformers)")
    check_rules(recipe, _ranges(g))
    if g.use_vllm and "grpo" in recipe.stages:  # at load: not minutes into a run
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise ConfigError("grpo.use_vllm: vllm is not installed (pip install vllm, on a CUDA machine); set "
                              "grpo.use_vllm = false")
        import torch  # only for this check: a recipe without vLLM is checked before torch loads

        if not torch.cuda.is_available():  # at load, not when the stage builds its config
            raise ConfigError("grpo.use_vllm: vLLM needs a CUDA GPU and none is visible here "
                              "(torch.cuda.is_available() is False); set grpo.use_vllm = false")


def _ranges(g) -> list[tuple[str, bool, str]]:
    """(key, ok, what is allowed) for each number of ``[grpo]`` (NaN fails every one of them)."""
    return [
        ("grpo.learning_rate", finite(g.learning_rate) and g.learning_rate > 0, "a finite number > 0"),
        *((f"grpo.{k}", getattr(g, k) >= 1, "an integer >= 1")
          for k in ("save_steps", "logging_steps", "grad_accum", "batch_size", "max_tool_calling_iterations")),
        ("grpo.ref_reset_steps", g.ref_reset_steps >= 0, "an integer >= 0"),
        ("grpo.temperature", finite(g.temperature) and g.temperature > 0, "a finite number > 0"),
        ("grpo.top_p", finite(g.top_p) and 0 < g.top_p <= 1, "a number in (0, 1]"),
        ("grpo.beta", finite(g.beta), "a finite number >= 0"),
        ("grpo.epsilon", finite(g.epsilon) and 0 < g.epsilon < 1, "a clip range in (0, 1)"),
        ("grpo.epsilon_high", finite(g.epsilon_high) and g.epsilon_high >= 0,
         "a finite number >= 0 (0 = same as grpo.epsilon; DAPO uses 0.28)"),
        ("grpo.top_entropy_quantile", finite(g.top_entropy_quantile) and 0 <= g.top_entropy_quantile <= 1,
         "a share in [0, 1] (1 = every token; 0.2 in the paper)"),
        ("grpo.entropy_coef", finite(g.entropy_coef) and g.entropy_coef >= 0, "a finite number >= 0 (0 = no entropy bonus)"),
        ("grpo.entropy_target", finite(g.entropy_target) and g.entropy_target >= 0, "a finite entropy in nats >= 0"),
        ("grpo.num_iterations", g.num_iterations >= 1, "an integer >= 1"),
        *((f"grpo.{k}", finite(getattr(g, k)) and getattr(g, k) >= 0, "a finite weight >= 0 (0 = off)")
          for k in ("novelty_reward", "redundancy_penalty", "evidence_reward", "rare_answer_reward")),
        ("grpo.format_reward", finite(g.format_reward), "a finite number"),
        ("grpo.search_cost", finite(g.search_cost) and g.search_cost >= 0, "a finite cost >= 0"),
    ]


def check_grpo_world(recipe, world, name: str) -> None:
    """What GRPO needs of a SearchEnv: every tool (``train/grpo_env`` builds its own env), else it would train
    open-book silently."""
    if recipe.env.kwargs.get("tools") is not None:
        raise ConfigError("env.kwargs.tools: GRPO offers every tool (train/grpo_env builds its own); evaluate a "
                          "subset instead: searchgym eval RUN --env-kwargs 'tools=[\"answer\"]'")
