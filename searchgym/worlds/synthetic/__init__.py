"""SyntheticWorld, a procedurally generated fictional world (the built-in world ``"synthetic"``).

`world`: the world (questions and the task set); `entities`: its entities and their pages; `strategies`: the
strategy classifier and the scripted demonstrators; `words`: names, templates and phrasings. This front only
re-exports the world.
"""

from searchgym.worlds.synthetic.world import SyntheticWorld

__all__ = ["SyntheticWorld"]
