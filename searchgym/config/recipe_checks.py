"""`validate_recipe` and the checks behind it: ranges of the fields every recipe has, the stage list, the env and its
world, the embedder and the tracker backends; each failure is one `ConfigError` (the one
`searchgym.util.config_schema.ConfigError`) that names the field and what is allowed. Types and ``Literal`` choices are the
config loader's (`searchgym.util.config_schema.build`, and `check_choices` for a recipe changed in code).

No stage is named here: each stage's own checks live with it (`searchgym.train.stages.STAGES` names them) and
reach these functions as the ``stages`` mapping the caller passes in (name -> an object with ``settings``,
``builds_base``, ``validate(recipe)`` and optionally ``needs_train_split`` and ``validate_world(recipe, world,
name)``), because config sits below train and never imports it (tests/test_layers.py).

Nothing here loads a model or builds an index (a plug-in world, small and cached in-process, is built to check
its splits). `searchgym.config.agent_recipe` holds the typed sections and the parsing; this module imports them and
is never imported by them.
"""

from __future__ import annotations

import dataclasses
import math

import searchgym.config.agent_recipe as recipe_module
from searchgym.config.agent_recipe import NAME_PATTERN, SEARCH_ENV, Recipe
from searchgym.util.config_schema import ConfigError, check_choices


def validate_recipe(recipe: Recipe, stages: dict, *, check_model: bool = True) -> Recipe:
    """Check every field before any work: one `ConfigError` naming the field and what is allowed.

    ``stages`` is the stage registry (name -> stage: `searchgym.train.stages.STAGES`, whose ``validate_recipe``
    passes it; config sits below train and does not import it). Nothing here loads a model or builds an index:
    numbers are range-checked, each stage runs its own checks, ``env.id``, the world, the embedder and
    ``report_to`` backends are looked up, and ``model.base`` is resolved to an alias, a folder or a cached
    Hugging Face id (``check_model=False`` skips that last check, for a base model a study builds before its
    arms run). Returns the recipe (its ``report_to`` normalised, world kwargs of another world dropped).
    """
    check_choices(recipe)  # the Literal fields again: a recipe changed or made in code is held to them too
    for name, section in recipe.stage_sections.items():
        if dataclasses.is_dataclass(section):
            check_choices(section, f"{name}.")
    check_fields(recipe, stages)
    check_numbers(recipe)
    recipe.report_to = check_report_to(recipe.report_to, recipe_module.REPORT_TO)  # the table, read now
    check_env(recipe, stages)  # world_kwargs of another world are dropped here
    if check_model and not stages[recipe.stages[0]].builds_base:  # a stage that builds the base needs none
        from searchgym.agent.models import model_problem

        if (problem := model_problem(recipe.model.base)) is not None:
            raise ConfigError(f"model.base: {problem}")
    return recipe


def check_fields(recipe: Recipe, stages: dict) -> None:
    """Name, stages, choices and the counts that must be >= 1 (the first checks `validate_recipe` runs), then
    each registered stage's own ``validate``; ``stages`` is the stage registry (name -> stage)."""
    if not isinstance(recipe.name, str) or not NAME_PATTERN.fullmatch(recipe.name):
        raise ConfigError(f"name: {recipe.name!r:.60} is not a run-folder name; use 1-100 letters, digits, '.', "
                          "'_' or '-', not starting with '.' (pass --out DIR to write elsewhere)")
    for s in recipe.stages:
        if s not in stages:
            raise ConfigError(f"stages: unknown stage {s!r}; allowed: {list(stages)}")
    if not recipe.stages:
        example = next(n for n, st in stages.items() if not st.builds_base)
        raise ConfigError(f"stages: give at least one stage, e.g. stages = [\"{example}\"]")
    for s in recipe.stages:
        if stages[s].builds_base and (recipe.stages[0] != s or recipe.stages.count(s) > 1):
            later = [n for n, st in stages.items() if not st.builds_base]
            raise ConfigError(f"stages: {s!r} must come first (once), optionally followed by "
                              f"{' and/or '.join(later)}, e.g. stages = [\"{s}\", \"{later[0]}\"]")
    for name in recipe.stages:  # a stage with its own section (not a Recipe field) gets its defaults
        if stages[name].settings is not None and not hasattr(recipe, name):
            recipe.stage_sections.setdefault(name, stages[name].settings())
    for n in ("questions", "samples", "max_turns", "max_new_tokens", "batch_size"):
        if getattr(recipe.eval, n) < 1:
            raise ConfigError(f"eval.{n}: must be >= 1, got {getattr(recipe.eval, n)}")
    if not 0 <= recipe.meters.max_overhead < 1:
        raise ConfigError(f"meters.max_overhead: a fraction of training time in [0, 1) (0 = probe on "
                          f"schedule whatever it costs), got {recipe.meters.max_overhead}")
    if not 0 <= recipe.seed < 2**32:  # numpy and torch refuse other seeds, minutes into a run
        raise ConfigError(f"seed: must be an integer in [0, 2**32), got {recipe.seed}")
    check_alarm_rules(recipe.meters.alarms)
    for name, stage in stages.items():  # every stage's section is checked, listed in stages or not ...
        if stage.settings is None or recipe.settings(name) is not None:
            stage.validate(recipe)  # ... except one that is only its defaults (neither listed nor given)


def check_alarm_rules(alarms) -> None:
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


def check_numbers(recipe: Recipe) -> None:
    """Ranges of the numeric fields every recipe has (NaN fails every one of them); a stage's section has its
    ranges in that stage's checks."""
    check_rules(recipe, [  # (key, ok, what is allowed)
        *((f"meters.{k}", getattr(recipe.meters, k) >= 1, "an integer >= 1") for k in ("probe_questions", "samples")),
        *((f"{sec}.every", getattr(recipe, sec).every >= 0, "an integer >= 0") for sec in ("meters", "dose")),
        ("eval.temperature", finite(recipe.eval.temperature) and recipe.eval.temperature >= 0,
         "a finite number >= 0 (0 = greedy)"),
        ("eval.top_p", finite(recipe.eval.top_p) and 0 < recipe.eval.top_p <= 1, "a number in (0, 1]"),
        ("lora.r", recipe.lora.r >= 1, "the LoRA rank, an integer >= 1 (e.g. 8 or 16)"),
        ("lora.alpha", recipe.lora.alpha >= 1, "an integer >= 1 (e.g. 2 × lora.r)"),
        ("lora.dropout", finite(recipe.lora.dropout) and 0 <= recipe.lora.dropout < 1, "a probability in [0, 1)"),
    ])


def check_rules(recipe: Recipe, rules) -> None:
    """The first failing ``(key, ok, allowed)`` rule as one ConfigError: ``key: must be <allowed>, got <value>``
    (the stages' checks use it for their sections too)."""
    for key, ok, allowed in rules:
        if not ok:
            section, _, name = key.rpartition(".")
            raise ConfigError(f"{key}: must be {allowed}, got {getattr(recipe.settings(section), name)!r}")


def check_report_to(report_to: list[str] | str, backends: dict[str, tuple[str, ...]]) -> list[str]:
    """``report_to``: a list (or one string, as Hugging Face accepts) of installed tracker backends among
    ``backends`` (`searchgym.config.agent_recipe.REPORT_TO`); returns it as a list ([] for "none")."""
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


def check_env(recipe: Recipe, stages: dict) -> None:
    """``env.id`` registered, ``env.kwargs`` known to SearchEnv, its world registered and its world_kwargs
    the world's own, the embedder resolvable, and what each listed stage needs of the world (its
    ``validate_world``; the train split for a stage that ``needs_train_split``): all without building a
    world's index or loading a model. ``stages`` is the stage registry (name -> stage)."""
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
    listed = [stages[name] for name in dict.fromkeys(recipe.stages)]
    for stage in listed:
        if (validate_world := getattr(stage, "validate_world", None)) is not None:
            validate_world(recipe, world, kwargs.get("world", "synthetic"))
    from searchgym.worlds import BUILTIN

    if kwargs.get("world", "synthetic") not in BUILTIN:  # a plug-in world: cheap to build, so check its splits
        _check_splits(recipe, kwargs, env_id, any(getattr(s, "needs_train_split", False) for s in listed))


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


def finite(x) -> bool:
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


def _check_splits(recipe: Recipe, kwargs: dict, env_id: str, train_split: bool) -> None:
    """A plug-in world is built (it is small, and cached in-process) to check the splits the stages use."""
    from searchgym.envs.search_env import load_world

    try:
        world = load_world(kwargs.get("world", "synthetic"), kwargs.get("world_kwargs"))
    except Exception as e:  # a plug-in's constructor may raise anything
        raise ConfigError(f"env.kwargs.world_kwargs: world {kwargs.get('world')!r} of {env_id} cannot be built "
                          f"({type(e).__name__}: {e})") from None
    needs = [("eval.split", recipe.eval.split)]
    needs += [("stages", "train")] if train_split else []
    for key, split in needs:
        if not list(world.tasks(split)):
            have = [s for s in ("train", "test", "validation", "dev") if list(world.tasks(s))]
            raise ConfigError(f"{key}: world {kwargs.get('world')!r} of {env_id} has no {split!r} tasks; its splits "
                              f"with tasks: {have}{' (set eval.split)' if key == 'eval.split' else ''}")
