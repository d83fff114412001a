"""Property-based dynamics tests: check_env + the invariant state machine on every registered env,
and a short fuzz run. `make fuzz` runs the long version (>= 100,000 actions)."""

import gymnasium
import pytest

from searchgym.envs import registered_envs
from searchgym.testing import InvariantChecker, InvariantViolation, check_search_env, fuzz

# The hashing embedder keeps these fast; dynamics don't depend on the embedder.
FAST = {"embedder": "hashing"}


@pytest.mark.parametrize("env_id", sorted(registered_envs()))
def test_every_registered_env_passes_the_invariant_suite(env_id):
    check_search_env(env_id, FAST, max_examples=8, steps=15)


def test_short_fuzz_finds_no_exception_or_violation():
    report = fuzz(["searchgym_plugin_example/Elements-v0", "searchgym/SyntheticWorld-v0"], 3000,
                  env_kwargs=FAST, progress=False)
    assert report["actions"] == 3000 and report["episodes"] > 50
    assert (report["exceptions"], report["violations"]) == (0, 0), report["failures"]


def test_checker_catches_a_broken_env(monkeypatch):
    """The invariant suite must be able to fail: break the reward and watch it object."""
    checker = InvariantChecker("searchgym_plugin_example/Elements-v0")
    checker.reset(0)
    monkeypatch.setattr(checker.base, "step_cost", -5.0)  # search now 'earns' +5, outside the bounds
    with pytest.raises(InvariantViolation, match="outside documented bounds"):
        checker.step('<tool_call>{"name": "search", "arguments": {"query": "gas"}}</tool_call>')


def test_checker_catches_nondeterminism(monkeypatch):
    checker = InvariantChecker("searchgym_plugin_example/Elements-v0")
    checker.reset(3)
    checker.step("search: noble gas")
    checker.episode["observations"][-1] += " (tampered)"
    with pytest.raises(InvariantViolation, match="different observations"):
        checker.replay_matches()


def test_gymnasium_make_works_right_after_import():
    import searchgym  # noqa: F401

    env = gymnasium.make("searchgym_plugin_example/Elements-v0")
    assert env.reset(seed=0)[0].endswith("?")
