"""The readable progress of every training stage: a bar with ETA over optimizer steps and one line per logged
step, in place of the Trainer's raw dicts (`searchgym.train.context.TrainContext.attach` puts it on every
stage's Trainer). metrics.jsonl is written elsewhere (`searchgym.runs.MetricsLogger`).
"""

from __future__ import annotations

from transformers import TrainerCallback

# The keys a progress line shows first, in this order (then any other numeric key, up to LINE_KEYS in all).
_LINE_ORDER = ("loss", "reward", "reward_std", "frac_reward_zero_std", "kl", "entropy", "grad_norm", "learning_rate",
               "search/correct", "search/searches_per_episode", "completions/mean_length", "step_time")
LINE_KEYS = 9


def log_line(stage: str, step: int, max_steps: int, logs: dict) -> str:
    """One readable line for a Trainer log (instead of its raw dict).

    >>> log_line("grpo", 3, 15, {"loss": 0.0123456, "reward": 0.25, "learning_rate": 1e-4, "epoch": 0.2})
    'grpo step 3/15 | loss 0.01235 | reward 0.25 | learning_rate 0.0001 | epoch 0.2'
    >>> log_line("sft", 6, 6, {"train_runtime": 12.5, "train_loss": 1.5, "total_flos": 1e9})
    'sft step 6/6 | done: train_runtime 12.5 | train_loss 1.5 | total_flos 1e+09'
    """
    numeric = {k: v for k, v in logs.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    keys = [k for k in _LINE_ORDER if k in numeric] + [k for k in numeric if k not in _LINE_ORDER]
    parts = [f"{k.removeprefix('rewards/')} {numeric[k]:.4g}" for k in keys[:LINE_KEYS]]
    done = "done: " if "train_runtime" in numeric else ""
    return f"{stage} step {step}/{max_steps} | {done}" + " | ".join(parts)


class ReadableProgress(TrainerCallback):
    """A progress bar with ETA over the stage's optimizer steps, and one `log_line` per logged step in place
    of the Trainer's raw dicts (PrinterCallback / ProgressCallback). metrics.jsonl is written elsewhere."""

    def __init__(self, stage: str):
        self.stage, self.bar = stage, None

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.stage, unit="step",
                            dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs:
            self.bar.write(log_line(self.stage, state.global_step, state.max_steps, logs))

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def use_readable_progress(trainer, stage: str) -> None:
    """Swap the Trainer's own printing (raw dicts, or nothing for minutes) for `ReadableProgress`."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(ReadableProgress(stage))
