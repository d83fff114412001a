"""SFT on demonstrations (LoRA, or every weight with ``model.finetune = "full"``): teach a base model the tool-call format and a mix of search strategies.

The demos are the env's own conversations (same system prompt, tool schemas and observation text that
rollouts and GRPO use), rendered with TRL's training variant of the Qwen2.5/ChatML template, which
wraps assistant turns in ``{% generation %}`` markers: with ``assistant_only_loss`` only what the agent
writes is trained, never the tool results it reads. A `PeftModel` passed in keeps training its adapter.
"""

from __future__ import annotations

from pathlib import Path

from searchgym.agent.demos import build_demo_sets, save_demo_sets, to_dataset
from searchgym.config.agent_recipe import Recipe
from searchgym.train.context import latest_checkpoint  # noqa: F401  (re-exported: pretrain and tests use it)


def lora_config(recipe: Recipe):
    """The recipe's LoRA config (`searchgym.train.weights.lora_config`, the one place it is built)."""
    from searchgym.train.weights import lora_config as build

    return build(recipe.lora)


def sft_config(recipe: Recipe, output_dir: Path, settings=None):
    """TRL's SFTConfig for the recipe: ``settings`` is any section with SFT's training fields (epochs,
    learning_rate, batch_size, grad_accum, max_length, logging_steps, save_steps); default ``recipe.sft``
    (the rft stage passes its own, `searchgym.train.rft`)."""
    from trl import SFTConfig

    from searchgym.train.context import trainer_args

    s = recipe.sft if settings is None else settings
    return SFTConfig(
        output_dir=str(output_dir),
        assistant_only_loss=True,  # TRL swaps in the template's training variant (generation markers)
        num_train_epochs=s.epochs,
        learning_rate=s.learning_rate,
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.grad_accum,
        max_length=s.max_length,
        logging_steps=s.logging_steps,
        save_strategy="steps",
        save_steps=s.save_steps,
        save_total_limit=2,
        # Small models: recomputing activations costs more time than the memory it saves.
        activation_checkpointing=False,
        **trainer_args(recipe),  # device, precision, report_to, seed
        disable_tqdm=False,
        dataset_num_proc=None,
    )


def _demo_dataset(ctx):
    """The SFT dataset: rank 0 builds both demo sets over the same questions (saved for comparison under
    ``demos/``) and logs their stats; other ranks wait for it and read the saved set they train on."""
    s, recipe = ctx.recipe.sft, ctx.recipe
    folder = ctx.run_dir / "demos"
    # Rank 0 first; the others then read what it saved (and stop with a clear error if it failed: main_first).
    with ctx.main_first("building the SFT demos"):
        if not ctx.is_main:
            from datasets import load_from_disk

            return load_from_disk(str(folder / s.demos))
        sets = build_demo_sets(recipe.env.id, num_questions=s.num_questions,
                               demos_per_question=s.demos_per_question, seed=recipe.seed,
                               narrow_strategy=s.narrow_strategy, narrow_style=s.narrow_style,
                               env_kwargs=recipe.env.kwargs)
        stats = save_demo_sets(sets, folder)
    ctx.log({"step": 0, **{f"demos/{kind}_{k}": v for kind in stats for k, v in stats[kind].items()
                           if isinstance(v, int | float)}})
    for kind, st in stats.items():
        print(f"demos/{kind}: {st['demos']} demos on {st['questions']} questions, strategy entropy "
              f"{st['strategy_entropy']:.3f} nats{'  <- training on this set' if kind == s.demos else ''}")
    return to_dataset(sets[s.demos])


def train_sft(ctx):
    """The "sft" stage: demos -> SFT of ``ctx.trainable(ctx.model)``; returns the trained model (a `PeftModel`,
    or the whole model with ``model.finetune = "full"``).

    Writes ``run_dir/demos/`` (both demo sets and their stats), checkpoints under
    ``run_dir/checkpoints/sft`` and every trainer log to ``run_dir/metrics.jsonl`` (stage "sft").
    With ``ctx.resume`` training restarts from the latest checkpoint there, if any.
    """
    from peft import PeftModel
    from trl import SFTTrainer

    # 1. Demonstrations: both sets over the same questions (saved for comparison), train on one.
    dataset = _demo_dataset(ctx)

    # 2. Trainer. A PeftModel (an earlier stage's adapter) keeps training; a plain model gets a new LoRA from
    # TRL (its peft_config path also handles added tokens and ZeRO-3), or, with model.finetune = "full",
    # trains every weight.
    new_lora = ctx.recipe.model.finetune == "lora" and not isinstance(ctx.model, PeftModel)
    model = ctx.model if new_lora else ctx.trainable(ctx.model)
    model.train()
    trainer = SFTTrainer(model=model, args=sft_config(ctx.recipe, ctx.checkpoint_dir()), train_dataset=dataset,
                         processing_class=ctx.tokenizer, peft_config=lora_config(ctx.recipe) if new_lora else None,
                         callbacks=[ctx.metrics_logger()])
    ctx.attach(trainer)  # readable progress; live diversity/* probes + collapse alarms
    checkpoint = ctx.resume_checkpoint()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    return trainer.model
