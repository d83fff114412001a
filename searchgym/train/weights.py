"""What a stage trains, and how its result is saved and loaded: a LoRA adapter (the default) or every weight.

``model.finetune`` in a recipe chooses, for every stage after the base model:

- ``"lora"``: a PEFT LoRA adapter from ``[lora]`` (new on a plain model, continued on the previous stage's),
  saved as ``adapter/`` in standard PEFT format; the base is the same weights with the adapter switched off.
- ``"full"``: every parameter trains (the prior lab's small models; docs/where-rl-writes.md), saved as a
  ``model/`` folder with its tokenizer (``save_pretrained``, in the dtype it trained in, so an update below
  float16's precision is kept); the base is loaded again beside it when something compares the two.

A stage's result lands in ``<parent>/adapter`` or ``<parent>/model`` (`weights_folder`), with ``<parent>``
the stage folder, the run folder, a dose rung or an RFT round: one rule for every place a policy is saved.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from searchgym.config.agent_recipe import LoraSettings, Recipe

FOLDER = {"lora": "adapter", "full": "model"}  # what a saved policy's folder is called, per finetune mode


def weights_folder(parent: str | Path, finetune: str) -> Path:
    """Where a policy trained with ``finetune`` is saved under ``parent``.

    >>> weights_folder("runs/x/stages/sft", "lora").as_posix(), weights_folder("runs/x", "full").as_posix()
    ('runs/x/stages/sft/adapter', 'runs/x/model')
    """
    return Path(parent) / FOLDER[finetune]


def lora_config(lora: LoraSettings):
    """The recipe's ``[lora]`` as a PEFT config (the only place one is built)."""
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")


def trainable(model, recipe: Recipe):
    """``model`` with what ``recipe`` trains switched on. LoRA: a PeftModel whose "default" adapter trains (a
    new one from ``[lora]`` on a plain model, or the previous stage's continued: PeftModel.from_pretrained
    loads adapters frozen). Full: the model itself, every parameter requiring a gradient."""
    from peft import PeftModel, get_peft_model

    if recipe.model.finetune == "full":
        if isinstance(model, PeftModel):  # a recipe has one mode for all its stages: this is a bug, not input
            raise RuntimeError("model.finetune = 'full' got a model with a LoRA adapter")
        return model.requires_grad_(True)
    if isinstance(model, PeftModel):
        for name, p in model.named_parameters():
            if "lora_" in name and ".default." in name:
                p.requires_grad_(True)
        return model
    return get_peft_model(model, lora_config(recipe.lora))


def save_weights(model, parent: str | Path, recipe: Recipe, *, tokenizer=None, base_alias: str | None = None,
                 adapters: list[str] | None = None) -> Path:
    """Save the policy under ``parent`` (`weights_folder`); returns its folder. LoRA: `save_adapter` (only the
    ``adapters`` named; default all). Full: the model and ``tokenizer``, written atomically."""
    folder = weights_folder(parent, recipe.model.finetune)
    if recipe.model.finetune == "full":
        from searchgym.runs import save_pretrained_atomic

        if tokenizer is None:
            raise RuntimeError("saving a full-parameter model needs its tokenizer")
        return save_pretrained_atomic(model, tokenizer, folder)
    save_adapter(model, folder, base_alias, adapters=adapters)
    return folder


def load_weights(model, parent: str | Path, recipe: Recipe, *, dtype=None, device: str = "cpu"):
    """The policy saved under ``parent`` by `save_weights`, trainable, so the next stage (or round) continues
    from it: LoRA weights put into ``model``'s adapter (or a new PeftModel over ``model``), or the saved full
    model loaded in place of ``model``."""
    folder = weights_folder(parent, recipe.model.finetune)
    if recipe.model.finetune == "full":
        from searchgym.agent.models import load_model

        loaded, _ = load_model(str(folder.resolve()), dtype=dtype or next(model.parameters()).dtype, device=device)
        return loaded.train().requires_grad_(True)
    return load_stage_adapter(model, folder)


def base_source(recipe: Recipe, run_dir: str | Path, builds_base: bool) -> str:
    """What `load_model` takes to load a run's untrained base: the model its first stage pretrained when that
    stage ``builds_base`` (the prior lab; the caller looks it up in the stage registry), else ``model.base``."""
    from searchgym.runs import RunFolder

    if builds_base:
        return str(RunFolder(run_dir).stage_model(recipe.stages[0]).resolve())
    return recipe.model.base


@contextlib.contextmanager
def base_model(model, recipe: Recipe, run_dir: str | Path, builds_base: bool):
    """The untrained base beside a trained ``model``: the same weights with the LoRA adapter switched off (no
    second copy in memory), or, after full-parameter training, the base loaded again (`base_source`) on the
    model's device and dtype."""
    if recipe.model.finetune == "full":
        from searchgym.agent.models import load_model

        parameter = next(model.parameters())
        base, _ = load_model(base_source(recipe, run_dir, builds_base), dtype=parameter.dtype,
                             device=str(parameter.device), trust_remote_code=recipe.model.trust_remote_code)
        yield base
        return
    with model.disable_adapter():
        yield model


def load_stage_adapter(model, adapter: Path):
    """Put a finished stage's adapter on the model, trainable, so the next stage continues from it."""
    from peft import PeftModel

    if isinstance(model, PeftModel):  # a later stage of a chained run: load its weights into the adapter
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(str(adapter / "adapter_model.safetensors")))
        return model
    return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)


def save_adapter(model, folder: Path, base_alias: str | None, adapters: list[str] | None = None) -> None:
    """Save the LoRA adapter in standard PEFT format, loadable two ways:

        searchgym.agent.models.load_model("runs/x")                                   # model + tokenizer, any machine
        peft.AutoPeftModelForCausalLM.from_pretrained("runs/x/adapter")          # model only, this machine

    Its config names the base by the alias's resolved folder (``$SEARCHGYM_CACHE/models/tiny``…), a path
    transformers can open (an alias is not a Hugging Face id); the folder is named after the alias, so
    `load_model` maps it back to the alias and rebuilds the base on a machine with another cache.
    ``adapters`` names the adapters to save (default: all the model holds).
    """
    from peft import PeftModel

    from searchgym.agent.models import resolve_model_path
    from searchgym.util.files import atomic_write

    if not isinstance(model, PeftModel):
        raise RuntimeError("training returned a model without a LoRA adapter; nothing to save")
    model.save_pretrained(str(folder), **({"selected_adapters": adapters} if adapters else {}))
    config_path = folder / "adapter_config.json"
    if base_alias and config_path.exists():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = str(resolve_model_path(base_alias).resolve())
        atomic_write(config_path, json.dumps(config, indent=2).encode("utf-8"))
