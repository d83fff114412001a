"""Every searchgym environment id, registered with Gymnasium in this one place.

Built-in ids are versioned (bump the suffix when rewards or the corpus snapshot change). Third-party
environments register through the ``searchgym.envs`` entry-point group: each entry point names a
zero-argument callable that calls ``gymnasium.register`` (and may return ``{id: description}``).
Gymnasium 1.x has no discovery of its own, so `register_all` loads the group on ``import searchgym``.
"""

from __future__ import annotations

import importlib.metadata
import sys
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
        # BM25 by default: built in seconds with no model, and it found an evidence document in the top 5 for
        # 0.775 of the test questions; dense MiniLM 0.818 (within noise of BM25) and hybrid MiniLM+BM25 0.843
        # (better, p = 0.009) cost ~16-27 min to embed the 42k documents on a 2-core CPU first
        # (benchmarks/README.md, "Evidence recall"). retriever="dense" or "hybrid" asks for them.
        _ENV, {"world": "wikifactbook", "retriever": "bm25", "env_id": "searchgym/WikiFactbook-v0"},
        "real text: Wikipedia vital-article leads + CIA World Factbook, multi-hop Factbook questions"),
}

_DESCRIPTIONS: dict[str, str] = {}
_REGISTERED = False
_PENDING: list[importlib.metadata.EntryPoint] = []  # plug-ins whose module was still being imported


def register_all() -> None:
    """Register built-in ids and load plug-ins (idempotent; retries plug-ins deferred earlier)."""
    global _REGISTERED
    if not _REGISTERED:
        _REGISTERED = True
        for env_id, (entry_point, kwargs, description) in BUILTIN.items():
            if env_id not in gymnasium.registry:
                gymnasium.register(env_id, entry_point=entry_point, kwargs=kwargs, disable_env_checker=True)
            _DESCRIPTIONS[env_id] = description
        _PENDING.extend(importlib.metadata.entry_points(group="searchgym.envs"))
    _load_plugins()


def _load_plugins() -> None:
    still: list[importlib.metadata.EntryPoint] = []
    for ep in list(_PENDING):
        try:
            described = ep.load()()
        except Exception as e:  # a broken plug-in must not break `import searchgym`
            if _initializing(ep.module):
                # `import mypkg` ran first and mypkg imports searchgym at its top: mypkg is half-built here,
                # its register() not defined yet. Retried by the next register_all (searchgym's commands,
                # recipe validation, registered_envs) once mypkg has finished importing.
                still.append(ep)
                continue
            warnings.warn(f"searchgym plug-in {ep.name!r} ({ep.value}) failed to load: {e}", stacklevel=3)
            continue
        for env_id, description in (described or {}).items():
            _DESCRIPTIONS[env_id] = description
    _PENDING[:] = still


def _initializing(module: str) -> bool:
    """Whether ``module`` (or a package above it) is in the middle of its own import."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        spec = getattr(sys.modules.get(".".join(parts[:i])), "__spec__", None)
        if getattr(spec, "_initializing", False):
            return True
    return False


def registered_envs() -> dict[str, str]:
    """Every searchgym environment id (built-in and plug-ins) with its one-line description."""
    register_all()
    return dict(sorted(_DESCRIPTIONS.items()))
