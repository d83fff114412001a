"""Every searchgym environment id, registered with Gymnasium in this one place.

Built-in ids are versioned (bump the suffix when rewards or the corpus snapshot change). Third-party
environments register through the ``searchgym.envs`` entry-point group: each entry point names a
zero-argument callable that calls ``gymnasium.register`` (and may return ``{id: description}``).
Gymnasium 1.x has no discovery of its own, so `register_all` loads the group on ``import searchgym``.
"""

from __future__ import annotations

import importlib.metadata
import warnings

import gymnasium

# id -> (entry point, default kwargs, one-line description)
_ENV = "searchgym.envs.search_env:SearchEnv"
BUILTIN: dict[str, tuple[str, dict, str]] = {
    "searchgym/SyntheticWorld-v0": (
        _ENV, {"world": "synthetic", "env_id": "searchgym/SyntheticWorld-v0"},
        "fictional procedurally generated world, 1-4 hop / comparison / intersection questions"),
    "searchgym/SyntheticWorld-Easy-v0": (
        _ENV, {"world": "synthetic", "world_kwargs": {"max_hops": 2}, "env_id": "searchgym/SyntheticWorld-Easy-v0"},
        "SyntheticWorld with at most 2 hops (the CPU-sized default for training)"),
    "searchgym/WikiFactbook-v0": (
        _ENV, {"world": "wikifactbook", "env_id": "searchgym/WikiFactbook-v0"},
        "real text: Wikipedia vital-article leads + CIA World Factbook, multi-hop Factbook questions"),
}

_DESCRIPTIONS: dict[str, str] = {}
_REGISTERED = False


def register_all() -> None:
    """Register built-in ids and load plug-ins (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    _REGISTERED = True
    for env_id, (entry_point, kwargs, description) in BUILTIN.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(env_id, entry_point=entry_point, kwargs=kwargs, disable_env_checker=True)
        _DESCRIPTIONS[env_id] = description
    for ep in importlib.metadata.entry_points(group="searchgym.envs"):
        try:
            described = ep.load()()
        except Exception as e:  # a broken plug-in must not break `import searchgym`
            warnings.warn(f"searchgym plug-in {ep.name!r} ({ep.value}) failed to load: {e}", stacklevel=2)
            continue
        for env_id, description in (described or {}).items():
            _DESCRIPTIONS[env_id] = description


def registered_envs() -> dict[str, str]:
    """Every searchgym environment id (built-in and plug-ins) with its one-line description."""
    register_all()
    return dict(sorted(_DESCRIPTIONS.items()))
