"""Diversity meters: pure functions over sampled trajectories, defined in docs (meters.md).

`aggregate` computes every meter of a trajectory list at a fixed n per question and returns one flat
dict of namespaced keys; the submodules hold the single estimators (entropy, pass@k, cluster and text
diversity, search behaviour, reward spread), the statistics (bootstrap CIs) and the collapse alarms.
"""

from searchgym.meters.aggregate import MAIN_KEYS, aggregate, group_by_task, per_question, question_meters
from searchgym.meters.alarms import (
    Above,
    AlarmEvent,
    AlarmRule,
    Below,
    ModeCollapse,
    RelativeDrop,
    check_alarms,
    parse_alarms,
)
from searchgym.meters.passk import k_ladder, pass_at_k, pass_at_k_curve, solvable_set_overlap

__all__ = [
    "MAIN_KEYS", "Above", "AlarmEvent", "AlarmRule", "Below", "ModeCollapse", "RelativeDrop", "aggregate",
    "check_alarms", "group_by_task", "k_ladder", "parse_alarms", "pass_at_k", "pass_at_k_curve",
    "per_question", "question_meters", "solvable_set_overlap",
]
