"""Checks for search environments, reusable by plug-in authors in one line::

    from searchgym.testing import check_search_env
    check_search_env("mypkg/MyEnv-v0")

`search_env_check` holds `check_search_env` (Gymnasium's ``check_env``, a Hypothesis state machine, what training
needs from the world); `fuzzing` the invariant checker, the generated actions and the fuzzer
(``searchgym fuzz``, ``make fuzz``). Names load on first use.
"""

_FROM = {"check_search_env": "search_env_check", "make_state_machine": "search_env_check",
         "training_readiness": "search_env_check",
         "InvariantChecker": "fuzzing", "InvariantViolation": "fuzzing", "fuzz": "fuzzing", "fuzz_command": "fuzzing",
         "random_action": "fuzzing", "random_case": "fuzzing"}
__all__ = sorted(_FROM)


def __getattr__(name: str):
    if name in _FROM:
        import importlib

        return getattr(importlib.import_module(f"searchgym.testing.{_FROM[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
