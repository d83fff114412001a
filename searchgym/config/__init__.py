"""One config system for every config file (`searchgym.config.schema`): `ConfigError`, the typed loader,
``--set`` overrides and the one TOML writer."""

from searchgym.config.schema import (
    ConfigError,
    apply_override,
    build,
    check_choices,
    check_value,
    choices,
    expected,
    parse_kwargs,
    parse_value,
    read_toml,
    to_toml,
    toml_value,
)

__all__ = ["ConfigError", "apply_override", "build", "check_choices", "check_value", "choices", "expected",
           "parse_kwargs", "parse_value", "read_toml", "to_toml", "toml_value"]
