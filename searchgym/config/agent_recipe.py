"""Agent recipes: one typed, validated config per training run, loaded from TOML.

A recipe names a base model, a LoRA config, an environment, the training stages to chain
(``stages = ["sft", "grpo"]`` starts GRPO from the SFT adapter) and how to evaluate. Every section
is a dataclass with defaults, built by the one config loader (`searchgym.util.config_schema`): an unknown or ill-typed key
stops with one `ConfigError` that names it and lists what is allowed; ``--set section.key=value`` overrides any
field from the command line. `searchgym.config.recipe_checks.validate_recipe` then runs the semantic checks and each
stage's own (this module only parses: checks imports it, never the other way). The stages are train's (`searchgym.train.stages.STAGES`): config sits below train, so the
registry is passed in, and `searchgym.train.stages.load_recipe` is the loader callers use.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from searchgym.util.config_schema import ConfigError, apply_override, build, read_toml, to_toml

RecipeError = ConfigError  # the name the recipe checks and their callers use: the one config error


# A recipe's name becomes a folder under runs/ and a prefix `--resume` looks up: a slug, never a path.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")

# Hugging Face Trainer report_to backends -> the modules that provide them (any one will do).
REPORT_TO = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "trackio": ("trackio",),
             "mlflow": ("mlflow",), "comet_ml": ("comet_ml",), "clearml": ("clearml",), "dvclive": ("dvclive",),
             "swanlab": ("swanlab",), "neptune": ("neptune",), "azure_ml": ("azureml",),
             "codecarbon": ("codecarbon",), "dagshub": ("dagshub",), "flyte": ("flytekit",),
             "kubeflow": ("kubeflow",), "all": ("transformers",)}
SEARCH_ENV = "searchgym.envs.search_env:SearchEnv"  # env ids with this entry point get their kwargs checked


@dataclass
class ModelConfig:
    base: str = "smollm2-135m-instruct"  # alias ("smollm2-135m-instruct", "tiny"), HF id, local path, or run dir
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False
    # What training changes, in every stage after the base: a LoRA adapter from [lora], or every weight
    # ("full": small models such as the prior lab's; searchgym/train/weights.py, docs/where-rl-writes.md).
    finetune: Literal["lora", "full"] = "lora"


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"


@dataclass
class EnvConfig:
    id: str = "searchgym/SyntheticWorld-Easy-v0"
    kwargs: dict = field(default_factory=dict)  # passed to gymnasium.make (embedder, max_steps, …)


@dataclass
class PretrainConfig:
    """Pretraining a small model from scratch on demonstrator trajectories (the prior lab)."""

    mixture: dict = field(default_factory=dict)  # strategy -> weight, e.g. {forward = 0.5, parallel = 0.3}
    num_demos: int = 2000
    max_hops: int = 2
    vocab_size: int = 4096
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    epochs: int = 1
    learning_rate: float = 1e-3
    batch_size: int = 16
    max_length: int = 1024
    # Added for the prior lab (searchgym.train.pretrain):
    intermediate_size: int = 0  # MLP width; 0 = 4 × hidden_size
    save_steps: int = 200  # checkpoint every N optimizer steps (resume restarts from the latest)
    logging_steps: int = 10  # trainer log (loss, lr) every N steps into metrics.jsonl
    warmup_steps: int = 20  # linear LR warm-up, then cosine decay: from-scratch training diverges without it
    documents: bool = True  # also train on the world's documents as plain text (the prior knows the world)
    # Which tokens of a conversation the loss counts: "all", or "agent" (the assistant's turns only; the
    # question, tool results and scaffold are context). Documents always count whole. Measured
    # (docs/prior-lab.md): "agent" halves invalid calls but copies names worse; success is the same.
    loss_on: Literal["all", "agent"] = "all"
    # Keep each of the world's atomic strings (fictional names, doc ids: `SyntheticWorld.lexicon`) one
    # token, so copying a name or an id is copying one token (docs/prior-lab.md, "the copy lever").
    name_tokens: bool = False
    # Each tool call's fixed JSON text ('<tool_call>\n{"name": "search", "arguments": {"query": "' and the
    # closing '"}}\n</tool_call>') one token: a call is then "choose the tool, write its argument".
    call_tokens: bool = False
    # Also pretrain on this many other worlds of the same kind (world seed + 1, + 2 ...; num_demos each, their
    # documents too): other names in the same roles, so copying pays and memorising names does not.
    extra_worlds: int = 0
    # Rename every demo consistently (a random permutation of the world's names, and of its doc ids within
    # each kind): the roles stay, the names no longer tell the question, so only copying pays.
    scramble_names: bool = False


@dataclass
class SFTTraining:
    """The SFT trainer's fields, shared by every stage that trains with TRL's SFTTrainer (sft, rft)."""

    epochs: float = 1.0
    learning_rate: float = 2e-4
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 2048
    save_steps: int = 50
    logging_steps: int = 5


@dataclass
class SFTSettings(SFTTraining):
    demos: Literal["diverse", "narrow"] = "diverse"
    narrow_strategy: str = "forward"  # the one strategy (and style) of the narrow set
    narrow_style: str = ""  # "" = the world's first query style
    num_questions: int = 200  # train questions; both demo sets use the same questions
    demos_per_question: int = 2  # the same count for diverse and narrow (same information budget)


@dataclass
class GRPOSettings:
    steps: int = 100
    num_questions: int = 256  # train questions the dataset cycles through
    num_generations: int = 8
    batch_size: int = 8  # prompts×generations per device step; must be a multiple of num_generations
    grad_accum: int = 1
    learning_rate: float = 1e-5
    beta: float = 0.0  # KL to the reference policy (0 = no reference model)
    ref_reset_steps: int = 0  # ProRL-style: re-anchor the reference every N steps (0 = never)
    # TRL's GRPOConfig.loss_type (TRL 1.16); TRL itself refuses an unknown one only at the first loss.
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"] = "dapo"
    temperature: float = 1.0
    top_p: float = 1.0
    max_completion_length: int = 1024  # counts tool output too (TRL): size it for max_steps results
    max_tool_calling_iterations: int = 8
    format_reward: float = 0.0  # weight of the format reward (valid tool calls, ends with an answer)
    search_cost: float = 0.0  # reward cost per search call
    save_steps: int = 25
    logging_steps: int = 1
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"  # TRL's GRPOConfig.vllm_mode (docs/scale.md)
    # Entropy-collapse countermeasures: TRL GRPOConfig fields under the same names, passed through as they are
    # (what each does and its source: docs/countermeasures.md; train.grpo.TRL_COUNTERMEASURES lists them).
    epsilon: float = 0.2  # lower clip of the importance ratio, 1 - epsilon
    epsilon_high: float = 0.0  # upper clip, 1 + epsilon_high; 0 = same as epsilon (TOML has no null; DAPO: 0.28)
    top_entropy_quantile: float = 1.0  # loss on the top-ρ share of tokens by entropy only (80/20 rule: 0.2)
    entropy_coef: float = 0.0  # entropy bonus in the loss
    use_adaptive_entropy: bool = False  # Skywork-OR1: move entropy_coef toward keeping entropy at entropy_target
    entropy_target: float = 0.2  # nats per token, with use_adaptive_entropy
    scale_rewards: Literal["group", "batch", "none"] = "group"  # advantage / std of the group; Dr. GRPO: "none"
    mask_truncated_completions: bool = False  # DAPO: no loss on rollouts cut by max_completion_length
    num_iterations: int = 1  # μ: optimizer passes over each generated batch
    importance_sampling_level: Literal["token", "sequence"] = "token"  # GSPO: "sequence"
    # Exploration rewards, gym-side (train/exploration.py; docs/countermeasures.md): weights, 0 = off.
    novelty_reward: float = 0.0  # per distinct query and distinct document opened
    redundancy_penalty: float = 0.0  # per repeated query and re-opened document (subtracted)
    evidence_reward: float = 0.0  # x the share of a gold evidence chain search showed or the agent opened
    rare_answer_reward: float = 0.0  # x how rare the answer is among the group's (1 - its share)
    rare_answer_history: bool = False  # ... and among every earlier answer to the same question
    # Who generates the multi-turn rollouts: searchgym's KV-cached engine through TRL's rollout_func ("engine",
    # train/grpo_rollout.py), or TRL's own tool loop ("trl": re-encodes the conversation every turn; vLLM).
    rollout: Literal["engine", "trl"] = "engine"
    # Recompute activations in the backward pass: "auto" = only for models of >= 1B parameters.
    gradient_checkpointing: Literal["auto", "on", "off"] = "auto"


@dataclass
class EvalConfig:
    questions: int = 50
    samples: int = 4
    split: str = "test"
    temperature: float = 1.0
    top_p: float = 1.0
    max_turns: int = 8
    max_new_tokens: int = 96
    batch_size: int = 32
    baseline: bool = True  # also evaluate the untrained base model on the same questions


@dataclass
class MeterConfig:
    # Optimizer steps between live meter probes (0 = off); there is also a probe at train begin (the baseline)
    # and one at the end. A probe samples probe_questions x samples eval episodes: a few GRPO steps' worth
    # of time for SmolLM2, but ~100 SFT steps of a prior-lab model (benchmarks/README.md).
    every: int = 100
    # The probes' time budget as a fraction of training time: a scheduled probe (not the baseline) is skipped
    # when it would push probe time above this share; the next multiple of `every` tries again. 0 = probe
    # strictly every `every` steps, whatever it costs (finer curves on cheap models).
    max_overhead: float = 0.05
    probe_questions: int = 8
    samples: int = 4
    # [{rule = "relative_drop", key = "...", fraction = 0.5}], or the table form {"<key>" = {relative_drop = 0.5}}
    alarms: list | dict = field(default_factory=list)
    # Save a checkpoint at the step an alarm fires, so the policy just before/at a collapse can be studied
    # or resumed from (a LoRA checkpoint is small). Alarms are logged and warned either way.
    save_on_alarm: bool = True


@dataclass
class DoseConfig:
    """Checkpoints along training, for dose curves (`searchgym.train.dose`, docs/dose.md): every ``every``
    optimizer steps of each LoRA stage, and at each stage's end, the adapter is saved as
    ``dose/<stage>-<step>/adapter`` (a LoRA is small: 0.76 MB on the shipped prior at r = 16).
    A study evaluates the rungs it names among them exactly like the final model."""

    every: int = 0  # 0 = no snapshots


@dataclass
class Recipe:
    name: str = "agent"
    seed: int = 0
    stages: list[str] = field(default_factory=lambda: ["sft"])  # names in the stage registry, in order
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    env: EnvConfig = field(default_factory=EnvConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    sft: SFTSettings = field(default_factory=SFTSettings)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)
    eval: EvalConfig = field(default_factory=EvalConfig)
    meters: MeterConfig = field(default_factory=MeterConfig)
    dose: DoseConfig = field(default_factory=DoseConfig)
    report_to: list[str] | str = field(default_factory=list)  # e.g. ["tensorboard"], ["wandb"] ("wandb" = ["wandb"])
    # Settings of registered stages that are not fields here (the stage registry's): section name
    # -> that stage's settings dataclass; written back as ordinary top-level sections.
    stage_sections: dict = field(default_factory=dict, repr=False, metadata={"toml": False})

    def settings(self, stage: str):
        """A stage's settings: its section (``recipe.sft``…), or a registered stage's own (its defaults once the
        recipe lists the stage; None for a stage with neither)."""
        if stage in _SECTIONS:
            return getattr(self, stage)
        return self.stage_sections.get(stage)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        extra = data.pop("stage_sections")
        return {**data, **{k: v for k, v in extra.items() if v is not None}}

    def to_toml(self) -> str:
        """The resolved recipe as TOML (written into every run folder)."""
        return to_toml(self.to_dict())


_SECTIONS = frozenset(f.name for f in dataclasses.fields(Recipe) if f.name != "stage_sections")


def parse_recipe_file(path: str | Path, stages: dict, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe file and apply overrides (``section.key=value``) into a typed `Recipe`, **not yet
    validated**: `searchgym.config.recipe_checks.validate_recipe` runs the semantic checks, and
    `searchgym.train.stages.load_recipe` does both with the registered stages."""
    path = Path(path)
    data = read_toml(path, f"no recipe at {path}; see agents/ for examples")
    data.setdefault("name", path.stem)
    for item in overrides:
        apply_override(data, item)
    return parse_recipe(data, stages, where=str(path))


def parse_recipe(data: dict, stages: dict, where: str = "recipe") -> Recipe:
    """A typed `Recipe` from parsed TOML, not yet validated: the typed sections (`searchgym.util.config_schema.build`, which
    refuses unknown and ill-typed keys) and a registered stage's own section (one of ``stages`` whose settings
    are not a `Recipe` field) into its settings dataclass. `searchgym.config.recipe_checks.validate_recipe` follows."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the recipe must be a table, got {type(data).__name__}")
    own = {k: s.settings for k, s in stages.items() if s.settings is not None and k not in _SECTIONS}
    data = dict(data)
    sections = {k: build(own[k], data.pop(k), where, f"{k}.") for k in list(data) if k in own}
    recipe = build(Recipe, data, where, more_keys=own)
    recipe.stage_sections = sections
    return recipe
