"""The bottom of the package: helpers every layer shares, importing nothing else of searchgym.

- `files`: `atomic_write` (a temp file renamed into place: readers see the old file or the new one);
- `text`: `normalize_answer` (the answer normal form rewards, meters and worlds all compare in);
- `config_schema`: the one config system (`ConfigError`, the typed TOML loader, ``--set`` overrides, the one
  TOML writer) that agent recipes, corpus recipes and study files are built with.

Import each from its module (``from searchgym.util.files import atomic_write``); this front re-exports nothing.
"""
