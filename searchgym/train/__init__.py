"""Training: a recipe's stages in order, then the held-out evaluation (`searchgym train RECIPE`).

The package front only re-exports. Where things live:

- `searchgym.train.pipeline`: `train_command` (run folder, stages in order, saved weights, done markers, eval);
- `searchgym.train.stages`: the stages by name (`STAGES`) and the `Stage` protocol, and the recipe loaders
  that use them (`load_recipe`, `recipe_from_dict`, `validate_recipe`);
- `searchgym.train.context`: `TrainContext`, what every stage runs in (device/dtype, trained weights, resume,
  metrics, probes, ranks); `searchgym.train.weights`: what a stage trains (a LoRA adapter, or every weight
  with ``model.finetune = "full"``) and how it is saved and loaded;
- `searchgym.train.probes`: the live diversity probes; `searchgym.train.evaluate`: `evaluate_run`;
- the stages' own modules: `pretrain` (+ `prior_tokenizer`), `sft`, `grpo` (+ `grpo_env`), `rft`, and the
  light checks of the first three (`pretrain_checks`, `sft_checks`, `grpo_checks`).

Heavy imports stay inside functions, so this package is light to import.
"""

from __future__ import annotations

from searchgym.train.context import DONE
from searchgym.train.pipeline import (
    check_env_names,
    find_latest_run,
    train_command,
    trim_to_latest_checkpoint,
)
from searchgym.train.weights import load_stage_adapter, save_adapter

__all__ = ["DONE", "check_env_names", "evaluate_run", "find_latest_run", "load_stage_adapter", "save_adapter",
           "train_command", "trim_to_latest_checkpoint"]


def __getattr__(name: str):
    # evaluate_run's module imports the meters (numpy): load it on first use.
    if name == "evaluate_run":
        from searchgym.train.evaluate import evaluate_run

        return evaluate_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
