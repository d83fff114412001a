"""The agent side: base models and adapters (`models`, which also names the shipped reference prior,
`PRIOR`), batched LLM rollouts through a SearchEnv (`rollout`, with KV-cache reuse across turns in
`rollout_cache`) and SFT demonstration sets (`demos`).

`load_model` and `PRIOR` load on first use, so ``import searchgym.train.priors`` does not import torch.
"""

__all__ = ["PRIOR", "load_model"]


def __getattr__(name: str):
    if name in __all__:
        from searchgym.agent import models

        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
