"""The checks behind `Recipe.validate`: ranges of every field, rules across fields, the env and its world (what
SFT and the prior lab need of it), the embedder and the tracker backends; each failure is one `ConfigError` (the
one `searchgym.config.ConfigError`) that names the field and what is allowed. Types and ``Literal`` choices are
the config loader's (`searchgym.config.build`, and `check_choices` for a recipe changed in code).

Nothing here loads a model or builds an index (a plug-in world, small and cached in-process, is built to check
its splits). `searchgym.config.recipe` holds the typed sections and the loading; this module imports them, and
`Recipe.validate` imports this one when it runs.
"""

from __future__ import annotations

import math

from searchgym.config import ConfigError
from searchgym.config.recipe import NAME_PATTERN, SEARCH_ENV, Recipe, SFTSettings


def check_fields(recipe: Recipe) -> None:
    """Name, stages, choices and the counts that must be >= 1 (the first checks `Recipe.validate` runs)."""
    if not isinstance(recipe.name, str) or not NAME_PATTERN.fullmatch(recipe.name):
        raise ConfigError(f"name: {recipe.name!r:.60} is not a run-folder name; use 1-100 letters, digits, '.', "
                          "'_' or '-', not starting with '.' (pass --out DIR to write elsewhere)")
    from searchgym.train.stages import STAGES

    for s in recipe.stages:
        if s not in STAGES:
            raise ConfigError(f"stages: unknown stage {s!r}; allowed: {list(STAGES)}")
    if not recipe.stages:
        raise ConfigError("stages: give at least one stage, e.g. stages = [\"sft\"]")
    for s in recipe.stages:
        if STAGES[s].builds_base and (recipe.stages[0] != s or recipe.stages.count(s) > 1):
            later = [n for n, st in STAGES.items() if not st.builds_base]
            raise ConfigError(f"stages: {s!r} must come first (once), optionally followed by "
                              f"{' and/or '.join(later)}, e.g. stages = [\"{s}\", \"grpo\"]")
    for name in recipe.stages:  # a stage with its own section (not a Recipe field) gets its defaults
        if STAGES[name].settings is not None and not hasattr(recipe, name):
            recipe.stage_sections.setdefault(name, STAGES[name].settings())
    for n in ("questions", "samples", "max_turns", "max_new_tokens", "batch_size"):
        if getattr(recipe.eval, n) < 1:
            raise ConfigError(f"eval.{n}: must be >= 1, got {getattr(recipe.eval, n)}")
    if not 0 <= recipe.meters.max_overhead < 1:
        raise ConfigError(f"meters.max_overhead: a fraction of training time in [0, 1) (0 = probe on "
                          f"schedule whatever it costs), got {recipe.meters.max_overhead}")
    if not 0 <= recipe.seed < 2**32:  # numpy and torch refuse other seeds, minutes into a run
        raise ConfigError(f"seed: must be an integer in [0, 2**32), got {recipe.seed}")
    check_alarms(recipe.meters.alarms)
    for stage in STAGES.values():  # every stage's section is checked, listed in stages or not
        stage.validate(recipe)


def check_alarms(alarms) -> None:
    """``meters.alarms``: every row parses (`meters.alarms.alarm_rules`) and watches a key some meter makes (a
    row of the table of meters, or an echo-trap reading ``alarm/…``): a rule on a misspelt key never fires."""
    from searchgym.meters.alarms import alarm_rules
    from searchgym.meters.echo_trap import ECHO_TRAP_RULES
    from searchgym.meters.table import row_of

    try:
        rules = alarm_rules(alarms)
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e) if str(e).startswith("meters.alarms") else f"meters.alarms: {e}") from None
    echo_keys = sorted({r.key for r in ECHO_TRAP_RULES})
    for rule in rules:
        if row_of(rule.key) is None and rule.key not in echo_keys:
            raise ConfigError(f"meters.alarms: no meter makes {rule.key!r}; watch a key of the table of meters "
                              f"(docs/meters.md, e.g. 'diversity/strategy_entropy_mm') or one of {echo_keys}")


def check_sft(recipe: Recipe) -> None:
    """The SFT stage's own checks (`searchgym.train.stages.STAGES["sft"]`)."""
    for n in ("num_questions", "demos_per_question", "batch_size", "max_length"):
        if getattr(recipe.sft, n) < 1:
            raise ConfigError(f"sft.{n}: must be >= 1, got {getattr(recipe.sft, n)}")


def check_grpo(recipe: Recipe) -> None:
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
    if g.use_vllm and g.rollout == "engine":
        raise ConfigError("grpo.use_vllm: vLLM generates only in TRL's own tool loop; set grpo.rollout = \"trl\" "
                          "with it (the engine rollout generates with transformers)")
    if g.use_vllm and "grpo" in recipe.stages:  # was refused only when the GRPO stage started
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise ConfigError("grpo.use_vllm: vllm is not installed (pip install vllm, on a CUDA machine); set "
                              "grpo.use_vllm = false")
        import torch  # only for this check: a recipe without vLLM is checked before torch loads

        if not torch.cuda.is_available():  # was refused only once the GRPO stage built its config
            raise ConfigError("grpo.use_vllm: vLLM needs a CUDA GPU and none is visible here "
                              "(torch.cuda.is_available() is False); set grpo.use_vllm = false")


def check_pretrain(recipe: Recipe) -> None:
    """The prior lab's own checks (`searchgym.train.stages.STAGES["pretrain"]`)."""
    p = recipe.pretrain
    if p.max_hops < 1:
        raise ConfigError(f"pretrain.max_hops: must be >= 1, got {p.max_hops}")
    if p.extra_worlds < 0:
        raise ConfigError(f"pretrain.extra_worlds: must be >= 0 (0 = the env's world only), got {p.extra_worlds}")
    if p.vocab_size < 300:  # was refused only when the tokenizer was trained, minutes into a run
        raise ConfigError(f"pretrain.vocab_size: byte-level BPE needs >= 300 (256 bytes + merges), got "
                          f"{p.vocab_size}")
    # was refused only when the model was built, after the demos (num_heads < 1 is check_numbers')
    if p.num_heads >= 1 and p.hidden_size % p.num_heads:
        raise ConfigError(f"pretrain.hidden_size: must be a multiple of pretrain.num_heads ({p.num_heads}), "
                          f"got {p.hidden_size}")


def check_numbers(recipe: Recipe) -> None:
    """Ranges of the numeric fields (NaN fails every one of them)."""
    positive = "a finite number > 0"
    rules = [  # (key, ok, what is allowed)
        *((f"{sec}.learning_rate", _finite(getattr(recipe, sec).learning_rate)
           and getattr(recipe, sec).learning_rate > 0, positive) for sec in ("sft", "grpo", "pretrain")),
        ("sft.epochs", _finite(recipe.sft.epochs) and recipe.sft.epochs > 0, "a finite number of epochs > 0"),
        *((f"{sec}.{k}", getattr(getattr(recipe, sec), k) >= 1, "an integer >= 1")
          for sec, keys in (("sft", ("save_steps", "logging_steps", "grad_accum")),
                            ("grpo", ("save_steps", "logging_steps", "grad_accum", "batch_size",
                                      "max_tool_calling_iterations")),
                            ("pretrain", ("epochs", "save_steps", "logging_steps", "num_demos", "vocab_size",
                                          "hidden_size", "num_layers", "num_heads", "batch_size",
                                          "max_length")),
                            ("meters", ("probe_questions", "samples")))
          for k in keys),
        *((f"{sec}.{k}", getattr(getattr(recipe, sec), k) >= 0, "an integer >= 0")
          for sec, k in (("pretrain", "warmup_steps"), ("pretrain", "intermediate_size"),
                         ("grpo", "ref_reset_steps"), ("meters", "every"), ("dose", "every"))),
        ("eval.temperature", _finite(recipe.eval.temperature) and recipe.eval.temperature >= 0,
         "a finite number >= 0 (0 = greedy)"),
        ("grpo.temperature", _finite(recipe.grpo.temperature) and recipe.grpo.temperature > 0, positive),
        *((f"{sec}.top_p", _finite(getattr(recipe, sec).top_p) and 0 < getattr(recipe, sec).top_p <= 1,
           "a number in (0, 1]") for sec in ("eval", "grpo")),
        ("grpo.beta", _finite(recipe.grpo.beta), "a finite number >= 0"),
        ("grpo.epsilon", _finite(recipe.grpo.epsilon) and 0 < recipe.grpo.epsilon < 1, "a clip range in (0, 1)"),
        ("grpo.epsilon_high", _finite(recipe.grpo.epsilon_high) and recipe.grpo.epsilon_high >= 0,
         "a finite number >= 0 (0 = same as grpo.epsilon; DAPO uses 0.28)"),
        ("grpo.top_entropy_quantile", _finite(recipe.grpo.top_entropy_quantile)
         and 0 <= recipe.grpo.top_entropy_quantile <= 1, "a share in [0, 1] (1 = every token; 0.2 in the paper)"),
        ("grpo.entropy_coef", _finite(recipe.grpo.entropy_coef) and recipe.grpo.entropy_coef >= 0,
         "a finite number >= 0 (0 = no entropy bonus)"),
        ("grpo.entropy_target", _finite(recipe.grpo.entropy_target) and recipe.grpo.entropy_target >= 0,
         "a finite entropy in nats >= 0"),
        ("grpo.num_iterations", recipe.grpo.num_iterations >= 1, "an integer >= 1"),
        *((f"grpo.{k}", _finite(getattr(recipe.grpo, k)) and getattr(recipe.grpo, k) >= 0,
           "a finite weight >= 0 (0 = off)")
          for k in ("novelty_reward", "redundancy_penalty", "evidence_reward", "rare_answer_reward")),
        ("grpo.format_reward", _finite(recipe.grpo.format_reward), "a finite number"),
        ("grpo.search_cost", _finite(recipe.grpo.search_cost) and recipe.grpo.search_cost >= 0,
         "a finite cost >= 0"),
        ("lora.r", recipe.lora.r >= 1, "the LoRA rank, an integer >= 1 (e.g. 8 or 16)"),
        ("lora.alpha", recipe.lora.alpha >= 1, "an integer >= 1 (e.g. 2 × lora.r)"),
        ("lora.dropout", _finite(recipe.lora.dropout) and 0 <= recipe.lora.dropout < 1, "a probability in [0, 1)"),
    ]
    for key, ok, allowed in rules:
        if not ok:
            section, _, name = key.rpartition(".")
            raise ConfigError(f"{key}: must be {allowed}, got {getattr(getattr(recipe, section), name)!r}")


def check_report_to(report_to: list[str] | str, backends: dict[str, tuple[str, ...]]) -> list[str]:
    """``report_to``: a list (or one string, as Hugging Face accepts) of installed tracker backends among
    ``backends`` (`searchgym.config.recipe.REPORT_TO`); returns it as a list ([] for "none")."""
    import importlib.util

    value = [report_to] if isinstance(report_to, str) else list(report_to)
    value = [] if value in (["none"], []) else value
    for name in value:
        if not isinstance(name, str) or name not in backends:
            raise ConfigError(f"report_to: unknown backend {name!r:.60}; allowed: {sorted(backends)} (or "
                              "\"none\"), e.g. report_to = [\"tensorboard\"]")
        if not any(importlib.util.find_spec(m) for m in backends[name]):
            raise ConfigError(f"report_to: {name!r} is not installed (pip install {backends[name][0]}); "
                              "remove it or install it")
    return value


def check_env(recipe: Recipe) -> None:
    """``env.id`` registered, ``env.kwargs`` known to SearchEnv, its world registered and its world_kwargs
    the world's own, the embedder resolvable, and (for SFT) the world's strategies: all without building
    a world's index or loading a model."""
    import gymnasium

    from searchgym.envs import register_all, registered_envs

    register_all()
    env_id = recipe.env.id
    # A "module:Env" id would make gymnasium import a module named by the recipe.
    if ":" in env_id or env_id not in gymnasium.registry:
        raise ConfigError(f"env.id: {env_id!r:.80} is not a registered environment; allowed: "
                          f"{list(registered_envs())}")
    spec = gymnasium.spec(env_id)
    if spec.entry_point != SEARCH_ENV:
        return  # not a SearchEnv: its kwargs are its own business
    _check_env_kwargs(recipe.env.kwargs)
    if recipe.env.kwargs.get("tools") is not None and "grpo" in recipe.stages:  # else trained open-book, silently
        raise ConfigError("env.kwargs.tools: GRPO offers every tool (train/grpo_env builds its own); evaluate a "
                          "subset instead: searchgym eval RUN --env-kwargs 'tools=[\"answer\"]'")
    recipe.env.kwargs = _world_kwargs_for(spec.kwargs, recipe.env.kwargs)
    kwargs = {**spec.kwargs, **recipe.env.kwargs}
    world = _world(kwargs.get("world", "synthetic"))
    from searchgym.corpus.embedders import EmbedderError, check_embedder, known_dim
    from searchgym.corpus.specs import IndexSpec, IndexSpecError, check_fits

    try:
        check_embedder(embedder := kwargs.get("embedder", "minilm"))
    except EmbedderError as e:
        raise ConfigError(f"env.kwargs.embedder: {e}") from None
    try:  # was read only when the env built its index, after the run folder, the model and the world
        check_fits(IndexSpec.parse(kwargs.get("index", "flat")), known_dim(embedder))
    except IndexSpecError as e:
        raise ConfigError(f"env.kwargs.index: {e}") from None
    if "sft" in recipe.stages:
        _check_sft_world(recipe.sft, world, kwargs.get("world", "synthetic"))
    if "pretrain" in recipe.stages:
        _check_pretrain_world(recipe, world, kwargs.get("world", "synthetic"))
    from searchgym.worlds import BUILTIN

    if kwargs.get("world", "synthetic") not in BUILTIN:  # a plug-in world: cheap to build, so check its splits
        _check_splits(recipe, kwargs, env_id)


def _check_literals(world, name: str, given: dict) -> None:
    """A world kwarg annotated ``Literal[...]`` must be one of its values: refused at load, not when the
    world is first built minutes later (built-in worlds are not built at load)."""
    import typing

    try:
        hints = typing.get_type_hints(world.__init__)
    except Exception:  # a plug-in's annotations may not resolve: its constructor will say
        return
    for key, value in given.items():
        hint = hints.get(key)
        if typing.get_origin(hint) is typing.Literal and value not in typing.get_args(hint):
            raise ConfigError(f"env.kwargs.world_kwargs.{key}: world {name!r} takes one of "
                              f"{list(typing.get_args(hint))}, got {value!r:.60}")


def _finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _check_env_kwargs(kwargs: dict) -> None:
    """The env kwargs a SearchEnv takes (names and the ranges its constructor would refuse later)."""
    import inspect
    import typing

    from searchgym.envs.search_env import SearchEnv
    from searchgym.envs.tools import check_settings

    allowed = sorted(p for p in inspect.signature(SearchEnv.__init__).parameters if p != "self")
    hints = typing.get_type_hints(SearchEnv.__init__)
    for key, value in kwargs.items():
        if key not in allowed:
            raise ConfigError(f"env.kwargs: unknown key {key!r:.60}; allowed: {allowed}")
        choices = typing.get_args(hints.get(key)) if typing.get_origin(hints.get(key)) is typing.Literal else None
        if choices and value not in choices:  # e.g. retriever: refused at load, not when the env is built
            raise ConfigError(f"env.kwargs.{key}: must be one of {list(choices)}, got {value!r:.60}")
        try:
            check_settings(**{key: value})  # the env's own ranges (searchgym.envs.tools.SETTINGS)
        except ValueError as e:
            raise ConfigError(f"env.kwargs.{e}") from None
        if key == "world_kwargs" and not isinstance(value, dict):
            raise ConfigError(f"env.kwargs.world_kwargs: must be a table, got {type(value).__name__}")


def _world(name):
    from searchgym.worlds import world_class, world_names

    try:
        return world_class(name)
    except ValueError:
        raise ConfigError(f"env.kwargs.world: unknown world {name!r:.80}; allowed: {world_names()} (plug-ins "
                          "register worlds in the 'searchgym.worlds' entry-point group)") from None


def _init_params(world) -> set[str] | None:
    """The keyword arguments a world's constructor takes (None: it takes any)."""
    import inspect

    try:
        params = inspect.signature(world).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _world_kwargs_for(registered: dict, kwargs: dict) -> dict:
    """``kwargs`` with world_kwargs that belong to another world dropped (with a note), so a recipe written
    for the synthetic world (``size``, ``max_hops``…) runs on a plug-in's env when only ``env.id`` changes.
    A key no registered world takes is a typo: refused, naming what the world takes."""
    import sys

    from searchgym.worlds import world_names

    given = kwargs.get("world_kwargs")
    name = kwargs.get("world", registered.get("world", "synthetic"))
    if not given:
        return kwargs
    accepted = _init_params(_world(name))
    _check_literals(_world(name), name, given)
    foreign = [k for k in given if accepted is not None and k not in accepted]
    if not foreign:
        return kwargs
    others = set()
    for other in world_names():
        if other != name:
            others |= _init_params(_world(other)) or set()
    typos = [k for k in foreign if k not in others]
    if typos:
        raise ConfigError(f"env.kwargs.world_kwargs: world {name!r} takes no {typos[0]!r}; allowed: "
                          f"{sorted(accepted)}")
    kept = {k: v for k, v in given.items() if k not in foreign}
    print(f"note: env.kwargs.world_kwargs {foreign} belong to another world, not {name!r}; dropped",
          file=sys.stderr)
    return {**{k: v for k, v in kwargs.items() if k != "world_kwargs"}, **({"world_kwargs": kept} if kept else {})}


def _check_sft_world(sft: SFTSettings, world, name: str) -> None:
    """SFT plays the world's demonstrators: it needs strategies, and sft.narrow_strategy among them."""
    strategies = getattr(world, "strategies", None)
    if not isinstance(strategies, tuple | list):
        return  # set per instance: checked when the demos are built
    if not strategies:
        raise ConfigError(f"stages: 'sft' needs demonstrations, but world {name!r} has no strategies (its "
                          "demonstrator(strategy, style) makes them); give the world strategies and a "
                          "demonstrator, or use stages = [\"grpo\"]")
    styles = getattr(world, "query_styles", None)
    if isinstance(styles, tuple | list) and not styles:
        raise ConfigError(f"stages: 'sft' plays world {name!r}'s demonstrator(strategy, style) for each of its "
                          "query_styles, and it has none; give the world query_styles = (\"plain\",) or more")
    if sft.narrow_strategy not in strategies:
        raise ConfigError(f"sft.narrow_strategy: {sft.narrow_strategy!r} is not a strategy of world {name!r}; "
                          f"allowed: {list(strategies)}")
    if sft.narrow_style and isinstance(styles, tuple | list) and sft.narrow_style not in styles:
        raise ConfigError(f"sft.narrow_style: {sft.narrow_style!r} is not a query style of world {name!r}; "
                          f"allowed: {list(styles)} (or \"\" for the first)")


def check_mixture(mixture: dict, strategies) -> dict[str, float]:
    """``pretrain.mixture`` as weights for every strategy of the world (strategies not named get 0).

    >>> check_mixture({"forward": 0.5, "verify": 0.5}, ["forward", "snippet", "verify"])
    {'forward': 0.5, 'snippet': 0.0, 'verify': 0.5}
    """
    if not mixture:
        raise ConfigError(f"pretrain.mixture: give strategy weights, e.g. mixture = {{ forward = 0.5, "
                          f"question_first = 0.3, verify = 0.2 }}; strategies: {list(strategies)}")
    for name, w in mixture.items():
        if name not in strategies:
            raise ConfigError(f"pretrain.mixture: {name!r} is not a strategy of this world; use some of "
                              f"{list(strategies)}")
        if not isinstance(w, int | float) or isinstance(w, bool) or not 0 <= w < math.inf:  # nan, inf: no share
            raise ConfigError(f"pretrain.mixture.{name}: a weight must be a finite number >= 0, got {w!r}")
    if not any(mixture.values()):
        raise ConfigError("pretrain.mixture: at least one strategy needs a weight > 0")
    return {s: float(mixture.get(s, 0.0)) for s in strategies}


def _check_pretrain_world(recipe: Recipe, world, name: str) -> None:
    """The prior lab plays the world's demonstrators in ``pretrain.mixture``'s proportions: its strategies, the
    mixture and (for ``name_tokens``) its lexicon are checked at load, not after the run folder is made."""
    strategies = getattr(world, "strategies", None)
    if not isinstance(strategies, tuple | list):
        return  # set per instance: checked when the demos are sampled
    if not strategies:
        raise ConfigError(f"env.id: world {name!r} of {recipe.env.id} has no scripted strategies to pretrain on; "
                          "use searchgym/SyntheticWorld-v0 or searchgym/SyntheticWorld-Easy-v0")
    check_mixture(recipe.pretrain.mixture, strategies)
    if recipe.pretrain.name_tokens and not callable(getattr(world, "lexicon", None)):
        raise ConfigError(f"pretrain.name_tokens: world {name!r} lists no lexicon (names, doc ids) to keep whole; "
                          "set pretrain.name_tokens = false")


def _check_splits(recipe: Recipe, kwargs: dict, env_id: str) -> None:
    """A plug-in world is built (it is small, and cached in-process) to check the splits the stages use."""
    from searchgym.envs.search_env import load_world

    try:
        world = load_world(kwargs.get("world", "synthetic"), kwargs.get("world_kwargs"))
    except Exception as e:  # a plug-in's constructor may raise anything
        raise ConfigError(f"env.kwargs.world_kwargs: world {kwargs.get('world')!r} of {env_id} cannot be built "
                          f"({type(e).__name__}: {e})") from None
    needs = [("eval.split", recipe.eval.split)]
    needs += [("stages", "train")] if {"sft", "grpo"} & set(recipe.stages) else []
    for key, split in needs:
        if not list(world.tasks(split)):
            have = [s for s in ("train", "test", "validation", "dev") if list(world.tasks(s))]
            raise ConfigError(f"{key}: world {kwargs.get('world')!r} of {env_id} has no {split!r} tasks; its splits "
                              f"with tasks: {have}{' (set eval.split)' if key == 'eval.split' else ''}")
