"""Live diversity meters during training: probe a fixed held-out question set and raise collapse alarms.

At the start of training (the baseline), every ``meters.every`` optimizer steps and at the end,
`DiversityCallback` samples n trajectories per probe question with the current policy (the recipe's eval
decoding), meters them with `aggregate`, and logs the values to ``metrics.jsonl`` (rows with
``"probe": true``), to the trainer's report_to backends and to ``probes/step<k>.jsonl``. After each probe
the collapse alarms run over the probe history; an alarm is logged once, warned, and may save a checkpoint.

Probes cost wall time, and how much depends on the model: a probe is a few GRPO steps of SmolLM2 but a
hundred SFT steps of a prior-lab model. So the schedule has a budget, ``meters.max_overhead`` (default
0.05): a scheduled probe after the baseline runs only when the time spent probing, this probe included
(predicted from the last one), stays within that fraction of the time spent training; otherwise it is
skipped (logged once) and the next multiple of ``every`` tries again. Steps stay on the ``every`` grid,
so seeds line up in the report. ``max_overhead = 0`` probes strictly on schedule.

Between probes the callback also reads the trainer's own log (``on_log``: every ``logging_steps``) for the
echo-trap warnings (`searchgym.meters.echo_trap`): GRPO's ``frac_reward_zero_std`` and gradient-norm spikes,
beside the probes' within-group reward std. They are logged as ``alarm/…`` rows of metrics.jsonl and watched
by their own rules (`ECHO_TRAP_RULES`, or the ``alarm/…`` rules of ``meters.alarms``), which warn, log and
save a checkpoint like the collapse alarms.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from transformers import TrainerCallback

from searchgym.meters import table as meter_table
from searchgym.meters.aggregate import aggregate
from searchgym.meters.alarms import DEFAULT_RULES, RULES, AlarmEvent, AlarmRule, alarm_rules, fired_alarms
from searchgym.meters.echo_trap import ECHO_TRAP_RULES, GRAD_NORM, echo_trap_history, echo_trap_readings
from searchgym.runs import append_metrics, namespaced, read_metrics
from searchgym.trajectory import Trajectory, write_trajectories

log = logging.getLogger(__name__)

ALARM = "alarm/"  # the echo-trap readings: a rule on such a key watches them, not the probes
_RULE_NAME = {cls: name for name, (cls, _) in RULES.items()}  # RelativeDrop -> "relative_drop"


def probe_task_ids(task_ids: Sequence[str], k: int, seed: int) -> list[str]:
    """The fixed probe set: ``k`` task ids drawn by ``seed`` (all of them when there are fewer).

    Every probe of a run (and every run with the same seed) uses the same questions, so a change in the
    meters is a change in the policy, not in the questions.

    >>> probe_task_ids(["a", "b", "c", "d"], 2, seed=0) == probe_task_ids(["a", "b", "c", "d"], 2, seed=0)
    True
    >>> sorted(probe_task_ids(["a", "b"], 5, seed=0))
    ['a', 'b']
    """
    if k < 1:
        raise ValueError(f"meters.probe_questions must be >= 1, got {k}")
    return random.Random(seed).sample(list(task_ids), min(k, len(task_ids)))


def meter_logs(values: Mapping[str, float]) -> dict[str, float]:
    """Meter values as log keys: the namespaces of the table of meters (`searchgym.meters.table.namespaces`)
    are kept, anything else goes under diversity/.

    >>> meter_logs({"diversity/vendi": 2.0, "search/calls_mean": 1.5, "probe_seconds": 3.0})
    {'diversity/vendi': 2.0, 'search/calls_mean': 1.5, 'diversity/probe_seconds': 3.0}
    """
    namespaces = meter_table.namespaces()
    return {(k if k.startswith(namespaces) else f"diversity/{k}"): v for k, v in values.items()}


def _rule_id(rule: AlarmRule) -> str:
    """A rule as written in metrics.jsonl, e.g. ``relative_drop(0.5)``: identifies it across a resume."""
    limit = getattr(rule, "fraction", getattr(rule, "threshold", None))
    return f"{_RULE_NAME.get(type(rule), type(rule).__name__)}({limit:g})"


def _report_backends() -> tuple[type, ...]:
    """The callback classes behind ``report_to`` (TensorBoard, W&B, MLflow ...)."""
    from transformers.integrations import INTEGRATION_TO_CALLBACK

    return tuple(c for c in INTEGRATION_TO_CALLBACK.values() if isinstance(c, type))


class DiversityCallback(TrainerCallback):
    """Probe the policy at train begin, every ``every`` optimizer steps and at the end (see module doc).

    Build it with `make_diversity_callback` and register it with `attach` (which also gives it the
    trainer's report_to callbacks: transformers runs those before user callbacks, so a value added to a
    later ``on_log`` would never reach them).
    """

    def __init__(self, run_dir: str | Path, tokenizer, env_id: str, *, every: int, probe_questions: int = 8,
                 samples: int = 4, seed: int = 0, env_kwargs: dict | None = None, decoding: dict | None = None,
                 rules: Sequence[AlarmRule] = DEFAULT_RULES, save_on_alarm: bool = True,
                 stage: str = "train", max_overhead: float = 0.05, clock=time.perf_counter,
                 echo_rules: Sequence[AlarmRule] = ECHO_TRAP_RULES):
        if every < 1:
            raise ValueError(f"meters.every must be >= 1 for a probe callback (0 = off), got {every}")
        if samples < 1:
            raise ValueError(f"meters.samples must be >= 1, got {samples}")
        if not 0 <= max_overhead < 1:
            raise ValueError(f"meters.max_overhead must be in [0, 1) (0 = no budget), got {max_overhead}")
        self.run_dir, self.tokenizer, self.env_id = Path(run_dir), tokenizer, env_id
        self.every, self.probe_questions, self.samples, self.seed = every, probe_questions, samples, seed
        self.env_kwargs = {**(env_kwargs or {}), "split": "test"}  # held out: never a training question
        self.decoding = dict(decoding or {})
        # Rules on alarm/ keys (from meters.alarms) replace the default echo-trap rules; the rest watch probes.
        self.rules = [r for r in rules if not r.key.startswith(ALARM)]
        self.echo_rules = [r for r in rules if r.key.startswith(ALARM)] or list(echo_rules)
        self.save_on_alarm, self.stage = save_on_alarm, stage
        self.history: list[dict[str, float]] = []  # one meter dict per probe, with its "step"
        self.echo: list[dict[str, float]] = []  # echo-trap readings (probes' and trainer logs'), with "step"
        self.grad_norms: list[float] = []  # every gradient norm the trainer logged: the spike baseline
        self._warned_unattached = False
        self.events: list[AlarmEvent] = []
        self._fired: set[tuple[str, str]] = set()  # (rule id, key): each alarm is reported once per run
        self._task_ids: list[str] | None = None
        self._handler = None  # the trainer's CallbackHandler, set by attach()
        self._last_step: int | None = None
        # The overhead budget: wall time since train begin, of which probe_seconds went to probes.
        self.max_overhead, self.clock = max_overhead, clock
        self._t0: float | None = None
        self.probe_seconds = 0.0
        self._last_probe_seconds = 0.0
        self.skipped: list[int] = []  # scheduled steps skipped by the budget

    # ---- wiring ---------------------------------------------------------------------------------------

    def attach(self, trainer) -> DiversityCallback:
        """Add this callback to ``trainer`` and keep its handler, so probes reach the report_to backends."""
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        self._handler = trainer.callback_handler
        return self

    @property
    def task_ids(self) -> list[str]:
        """The probe questions (built on first use: making the env loads its index)."""
        if self._task_ids is None:
            import gymnasium

            env = gymnasium.make(self.env_id, **self.env_kwargs)
            self._task_ids = probe_task_ids([t.id for t in env.unwrapped.tasks], self.probe_questions, self.seed)
            env.close()
        return self._task_ids

    # ---- one probe ------------------------------------------------------------------------------------

    def measure(self, model) -> tuple[dict[str, float], list[Trajectory]]:
        """Sample the probe set with ``model`` and meter it: ``(aggregate values, trajectories)``.

        `rollout` switches the model to eval mode under inference mode and restores train mode; its seed
        is the same at every probe, so successive probes differ by the policy, not by sampling luck.
        """
        from searchgym.agent.rollout import rollout

        trajectories = rollout(model, self.tokenizer, self.env_id, self.task_ids, samples=self.samples,
                               seed=self.seed, env_kwargs=self.env_kwargs, progress=False, source="probe",
                               **self.decoding)
        return aggregate(trajectories, samples=self.samples), trajectories

    def probe(self, args, state, control, model) -> list[AlarmEvent]:
        """Measure, log everywhere, check alarms. Returns the alarm events this probe fired."""
        step = state.global_step
        self._last_step = step
        if not state.is_world_process_zero:  # one process meters; the others keep training
            return []
        stage = self.stage
        start = self.clock()
        values, trajectories = self.measure(model)
        seconds = self.clock() - start
        self.probe_seconds += seconds
        self._last_probe_seconds = seconds
        readings = echo_trap_readings(values, self.grad_norms)
        logs = {**meter_logs(values), **readings, "time/probe_seconds": seconds, "time/probe_overhead": self.overhead()}
        if trajectories:
            write_trajectories(self.run_dir / "probes" / f"step{step}.jsonl", trajectories)
        append_metrics(self.run_dir, {"stage": stage, "step": step, "time": time.time(), "probe": True,
                                      **{k: _json_number(v) for k, v in logs.items()}})
        self._report(args, state, control, {k: v for k, v in logs.items() if _finite(v)})

        self.history.append({**values, "step": step})
        if readings:
            self.echo.append({**readings, "step": step})
        return (self._fire(stage, control, self.history, self.rules, "diversity")
                + self._fire(stage, control, self.echo, self.echo_rules, "echo-trap"))

    def _fire(self, stage: str, control, history: list[dict[str, float]], rules: Sequence[AlarmRule],
              kind: str) -> list[AlarmEvent]:
        """Warn, log and (``save_on_alarm``) checkpoint for every rule that fires for the first time."""
        events = [e for e in fired_alarms(history, rules) if (_rule_id(e.rule), e.key) not in self._fired]
        for e in events:
            self._fired.add((_rule_id(e.rule), e.key))
            log.warning("%s alarm at step %d: %s", kind, e.step, e.message)
            append_metrics(self.run_dir, {"stage": stage, "step": e.step, "time": time.time(), "event": "alarm",
                                          "rule": _rule_id(e.rule), "key": e.key, "value": e.value,
                                          "message": e.message})
        if events and self.save_on_alarm:
            control.should_save = True  # the trainer saves after on_step_end / on_log: a checkpoint at the alarm
        self.events += events
        return events

    # ---- the overhead budget --------------------------------------------------------------------------

    def _train_seconds(self) -> float:
        """Wall time since train begin that was not spent probing."""
        return self.clock() - self._t0 - self.probe_seconds

    def overhead(self) -> float:
        """Probe time so far as a fraction of training time so far (NaN before any training happened)."""
        train = self._train_seconds() if self._t0 is not None else 0.0
        return self.probe_seconds / train if train > 0 else math.nan

    def affordable(self) -> bool:
        """Whether one more probe (costed as the last one) keeps probe time within ``max_overhead`` of the
        training time so far. Always true without a budget."""
        if not self.max_overhead or self._t0 is None:
            return True
        return self.probe_seconds + self._last_probe_seconds <= self.max_overhead * self._train_seconds()

    def _scheduled(self, args, state, control, model, step: int) -> None:
        if self.affordable():
            self.probe(args, state, control, model)
            return
        if not self.skipped:
            log.info("diversity probe at step %d skipped: probes would exceed meters.max_overhead = %g of "
                     "training time (a probe takes %.1f s); later probes run when the budget allows. Raise "
                     "meters.max_overhead or meters.every, or set max_overhead = 0 to probe on schedule.",
                     step, self.max_overhead, self._last_probe_seconds)
        self.skipped.append(step)

    def _report(self, args, state, control, logs: dict[str, float]) -> None:
        """Hand the probe values to the report_to callbacks only (not to MetricsLogger: the probe row is
        already in metrics.jsonl; not to callbacks that edit a training log in place)."""
        if self._handler is None:
            if args.report_to and args.report_to != ["none"] and not self._warned_unattached:
                self._warned_unattached = True
                log.warning("DiversityCallback was not attached to the trainer, so probe meters reach "
                            "metrics.jsonl but not %s; register it with callback.attach(trainer)", args.report_to)
            return
        backends = _report_backends()
        for callback in self._handler.callbacks:
            if isinstance(callback, backends):
                callback.on_log(args, state, control, logs=dict(logs))

    def _resume_history(self, stage: str, step: int) -> None:
        """On a resumed run, earlier probes (the baseline above all), the echo-trap readings (the gradient
        norms a spike is measured against) and fired alarms come from metrics.jsonl."""
        if self.history or step == 0:
            return
        # Rows up to the checkpoint's step (trimmed after it), bar that step's probe: it is taken again now.
        earlier = [row for row in read_metrics(self.run_dir) if row.get("stage") == stage
                   and row.get("step", math.inf) <= step and not (row.get("probe") and row["step"] == step)]
        self.echo = echo_trap_history(earlier)
        self.grad_norms = [float(row[GRAD_NORM]) for row in earlier if _finite(row.get(GRAD_NORM))]
        for row in earlier:
            if row.get("probe"):
                self.history.append({k: (math.nan if v is None else v) for k, v in row.items()
                                     if v is None or (isinstance(v, int | float) and not isinstance(v, bool))})
            elif row.get("event") == "alarm":
                self._fired.add((row.get("rule"), row.get("key")))

    # ---- TrainerCallback events -----------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._resume_history(self.stage, state.global_step)
        self._t0, self.probe_seconds = self.clock(), 0.0
        self.probe(args, state, control, model)  # the baseline: always, the alarms compare against it

    def on_log(self, args, state, control, logs=None, **kwargs):
        """The trainer's own log row: its echo-trap readings (GRPO's frac_reward_zero_std, the gradient norm
        against the running median) are logged and checked. Transformers ran MetricsLogger and the report_to
        backends before this callback, so the readings go out as a row of their own."""
        if not logs or not state.is_world_process_zero:
            return
        row = namespaced(logs)  # as metrics.jsonl writes it: train/grad_norm, train/frac_reward_zero_std
        readings = echo_trap_readings(row, self.grad_norms)
        if _finite(row.get(GRAD_NORM)):
            self.grad_norms.append(float(row[GRAD_NORM]))
        if not readings:
            return
        stage, step = self.stage, state.global_step
        append_metrics(self.run_dir, {"stage": stage, "step": step, "time": time.time(), **readings})
        self._report(args, state, control, readings)
        self.echo.append({**readings, "step": step})
        self._fire(stage, control, self.echo, self.echo_rules, "echo-trap")

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step % self.every == 0 or (state.max_steps and step >= state.max_steps):
            self._scheduled(args, state, control, model, step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if self._last_step != step and step not in self.skipped:  # stopped early: probe the final policy
            self._scheduled(args, state, control, model, step)
        if self.skipped:
            log.info("diversity probes: %d scheduled probe(s) skipped by meters.max_overhead = %g; probes took "
                     "%.1f s, %.1f%% of training time", len(self.skipped), self.max_overhead, self.probe_seconds,
                     100 * self.overhead())


def make_diversity_callback(recipe, run_dir: str | Path, tokenizer, env_id: str | None = None, *,
                            stage: str = "train") -> DiversityCallback | None:
    """The live-meter callback ``recipe.meters`` asks for, or None when ``meters.every`` is 0.

    ``env_id`` defaults to ``recipe.env.id`` (with ``recipe.env.kwargs``); decoding is ``recipe.eval``'s.
    ``stage`` labels the rows: the running stage's name (`TrainContext` passes it), else "train".
    """
    m, e = recipe.meters, recipe.eval
    if m.every == 0:
        return None
    if m.every < 0:
        raise ValueError(f"meters.every must be >= 0 (0 = off), got {m.every}")
    decoding = dict(temperature=e.temperature, top_p=e.top_p, max_turns=e.max_turns,
                    max_new_tokens=e.max_new_tokens, batch_size=e.batch_size)
    return DiversityCallback(run_dir, tokenizer, env_id or recipe.env.id, every=m.every,
                             probe_questions=m.probe_questions, samples=m.samples, seed=recipe.seed,
                             env_kwargs=recipe.env.kwargs, decoding=decoding, rules=alarm_rules(m.alarms),
                             save_on_alarm=getattr(m, "save_on_alarm", True), stage=stage,
                             max_overhead=m.max_overhead)


def _finite(v) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _json_number(v):
    """NaN (a meter that does not apply) is written as null: metrics.jsonl stays standard JSON."""
    return v if not isinstance(v, float) or math.isfinite(v) else None
