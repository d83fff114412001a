"""Task sets (worlds): a corpus plus questions, strategies and scripted demonstrators.

A world is chosen by name, never by import path: env kwargs come from recipes, and a recipe is data,
so ``world = "os:system"`` must not reach `importlib`. The names are the built-ins below plus the
``searchgym.worlds`` entry-point group, where an installed package registers its own::

    [project.entry-points."searchgym.worlds"]
    elements = "searchgym_plugin_example:ElementsWorld"

Installing a package is the trust decision; naming one of its worlds in a recipe is not.
"""

from __future__ import annotations

import importlib.metadata

GROUP = "searchgym.worlds"
BUILTIN = {
    "synthetic": "searchgym.worlds.synthetic:SyntheticWorld",
    "wikifactbook": "searchgym.worlds.wikifactbook:WikiFactbook",
}


def world_entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """Every world name -> its entry point (built-ins win a name clash with a plug-in)."""
    found = {ep.name: ep for ep in importlib.metadata.entry_points(group=GROUP)}
    found.update({name: importlib.metadata.EntryPoint(name, value, GROUP) for name, value in BUILTIN.items()})
    return dict(sorted(found.items()))


def world_names() -> list[str]:
    """The names ``world`` accepts, e.g. ``['elements', 'synthetic', 'wikifactbook']``."""
    return list(world_entry_points())


def world_class(name: object):
    """The class (or factory) registered as world ``name``; ValueError naming the allowed values."""
    entry_points = world_entry_points()
    if not isinstance(name, str) or name not in entry_points:
        raise ValueError(f"world: unknown world {name!r:.80}; allowed: {sorted(entry_points)} (a plug-in adds "
                         f"one through the {GROUP!r} entry-point group, not an import path)")
    return entry_points[name].load()
