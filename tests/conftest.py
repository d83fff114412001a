import os

# Tests never touch a hub, and keep their caches inside the session's cache dir (shared by all tests,
# so the SmolLM2 conversion and index builds happen once per CI run).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest  # noqa: E402  (after the environment is set: torch must not read it first)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module: two threads on a shared 2-core runner spend most of their time
    waiting on each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_slow_work(monkeypatch):
    """Loading a model or building an index before the recipe is validated is a bug: make both fail loudly."""
    import searchgym.agent.models as models
    import searchgym.envs.search_env as search_env

    def slow(*args, **kwargs):
        raise AssertionError("slow work started before the recipe was validated")

    monkeypatch.setattr(models, "load_model", slow)
    monkeypatch.setattr(search_env, "load_index", slow)
