"""searchgym: a gym for measuring exploration diversity in LLM search agents.

`import searchgym` registers the built-in environments (``searchgym/SyntheticWorld-v0``,
``searchgym/WikiFactbook-v0``…) and every plug-in of the ``searchgym.envs`` entry-point group with
Gymnasium, so ``gymnasium.make(id)`` works right after the import.
"""

__version__ = "0.1.0"

from searchgym.envs import register_all as _register_all  # noqa: E402

_register_all()
