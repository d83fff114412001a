"""Agent recipes: their typed sections (`agent_recipe`) and their load-time checks (`recipe_checks`).

The config system every config file is built with (`ConfigError`, the typed loader, ``--set`` overrides, the
one TOML writer) sits below every layer, in `searchgym.util.config_schema`; `ConfigError` is re-exported here,
the name plug-in stages import (docs/architecture.md, "A new training stage").
"""

from searchgym.util.config_schema import ConfigError

__all__ = ["ConfigError"]
