"""Diversity meters: pure functions over sampled trajectories, defined in docs (meters.md).

`METERS` (`searchgym.meters.table`) is the one table of meters: a `Meter` row per key or key pattern with
its compute function, label, unit and headline flag, which the meter command, the report and the live
probes iterate. `aggregate` computes every meter of a trajectory list at a fixed n per question and returns
one flat dict of namespaced keys, the per-question families (`families`) merged. The other submodules
hold the single estimators (entropy, pass@k, cluster and text diversity, search behaviour, reward spread;
`updates`: where a run wrote, over saved weights rather than trajectories),
the statistics (bootstrap CIs), the collapse alarms and the echo-trap warnings the live probes raise
(`echo_trap`; the probes themselves, a TrainerCallback, live in `searchgym.train.probes`). Nothing here
loads a model or reads a run folder: the meter command (`searchgym.report.meter_command`) and the meters
scored under a model (`searchgym.report.support`, the table's "model" rows) live with the report.
"""

from searchgym.meters.aggregate import aggregate, group_by_task, per_question, question_meters
from searchgym.meters.alarms import (
    Above,
    AlarmEvent,
    AlarmRule,
    Below,
    ModeCollapse,
    RelativeDrop,
    fired_alarms,
    parse_alarms,
)
from searchgym.meters.coverage import compare_with_base, coverage, crossing, delta_se
from searchgym.meters.echo_trap import (
    ECHO_TRAP_RULES,
    echo_trap_history,
    echo_trap_readings,
    grad_norm_spikes,
    spike_ratio,
)
from searchgym.meters.literature import (
    cross_input_accuracy,
    depth_adaptivity,
    entropy_reward_points,
    fit_entropy_reward,
    question_retrieval_credit,
)
from searchgym.meters.passk import (
    crossing_k,
    k_ladder,
    pass_at_k,
    pass_at_k_curve,
    pass_at_k_table,
    pass_hat_k,
    pass_hat_k_curve,
    pass_hat_k_table,
    solvable_set_overlap,
)
from searchgym.meters.table import MAIN_KEYS, METERS, Meter
from searchgym.meters.updates import moved_masks, moved_share, update_meters

__all__ = [
    "MAIN_KEYS", "METERS", "Meter", "Above", "AlarmEvent", "AlarmRule", "Below", "ModeCollapse",
    "RelativeDrop", "aggregate", "compare_with_base", "fired_alarms", "coverage", "cross_input_accuracy",
    "crossing", "crossing_k", "delta_se", "depth_adaptivity", "entropy_reward_points", "fit_entropy_reward",
    "group_by_task", "k_ladder", "parse_alarms", "pass_at_k", "pass_at_k_curve", "pass_at_k_table",
    "pass_hat_k", "pass_hat_k_curve", "pass_hat_k_table", "per_question", "question_meters",
    "question_retrieval_credit", "solvable_set_overlap", "moved_masks", "moved_share", "update_meters",
    "ECHO_TRAP_RULES", "echo_trap_history", "echo_trap_readings", "grad_norm_spikes", "spike_ratio",
]
