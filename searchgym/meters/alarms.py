"""Collapse alarms: rules over the history of meter dicts logged during training, each firing once.

A rule watches one meter key: ``RelativeDrop`` fires when the value falls below a fraction of its first
value, ``Above`` / ``Below`` on a fixed threshold, ``ModeCollapse`` when one mode's share reaches a
threshold. A recipe carries them as a small table, e.g. in TOML::

    [alarms]
    "diversity/strategy_entropy_mm" = { relative_drop = 0.5 }
    "reward/zero_var_frac" = { above = 0.8 }
    "search/calls_mode_share" = { mode_collapse = 0.9 }
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class AlarmRule:
    """Base of every rule: ``key`` is the meter watched. ``fires(value, first)`` decides one step."""

    key: str

    def fires(self, value: float, first: float) -> bool:
        raise NotImplementedError

    def describe(self, value: float, first: float) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class RelativeDrop(AlarmRule):
    """Fires when value < fraction × the first logged value of the key (e.g. entropy halved)."""

    fraction: float = 0.5

    def fires(self, value: float, first: float) -> bool:
        return value < self.fraction * first

    def describe(self, value: float, first: float) -> str:
        return f"{self.key} fell to {value:.4g}, below {self.fraction:g} x its first value {first:.4g}"


@dataclass(frozen=True)
class Above(AlarmRule):
    """Fires when value > threshold (e.g. most groups give GRPO no gradient)."""

    threshold: float = 0.8

    def fires(self, value: float, first: float) -> bool:
        return value > self.threshold

    def describe(self, value: float, first: float) -> str:
        return f"{self.key} rose to {value:.4g}, above {self.threshold:g}"


@dataclass(frozen=True)
class Below(AlarmRule):
    """Fires when value < threshold."""

    threshold: float = 0.0

    def fires(self, value: float, first: float) -> bool:
        return value < self.threshold

    def describe(self, value: float, first: float) -> str:
        return f"{self.key} fell to {value:.4g}, below {self.threshold:g}"


@dataclass(frozen=True)
class ModeCollapse(AlarmRule):
    """Fires when the share of the most common mode reaches the threshold (value >= threshold)."""

    threshold: float = 0.9

    def fires(self, value: float, first: float) -> bool:
        return value >= self.threshold

    def describe(self, value: float, first: float) -> str:
        return f"mode collapse: {self.key} = {value:.4g} >= {self.threshold:g} (one mode dominates)"


@dataclass(frozen=True)
class AlarmEvent:
    """One rule firing: at which history step, which rule, the key, its value, and a readable message."""

    step: int
    rule: AlarmRule
    key: str
    value: float
    message: str


RULES: dict[str, tuple[type[AlarmRule], str]] = {
    "relative_drop": (RelativeDrop, "fraction"), "above": (Above, "threshold"),
    "below": (Below, "threshold"), "mode_collapse": (ModeCollapse, "threshold"),
}

DEFAULT_RULES = (RelativeDrop("diversity/strategy_entropy_mm", 0.5), Above("reward/zero_var_frac", 0.8),
                 ModeCollapse("search/calls_mode_share", 0.9))


def parse_alarms(table: Mapping[str, Mapping[str, float]]) -> list[AlarmRule]:
    """Rules from the recipe form ``{meter_key: {condition: number, ...}}``.

    >>> parse_alarms({"reward/zero_var_frac": {"above": 0.8}, "search/calls_mode_share": {"mode_collapse": 0.9}})
    [Above(key='reward/zero_var_frac', threshold=0.8), ModeCollapse(key='search/calls_mode_share', threshold=0.9)]
    """
    rules: list[AlarmRule] = []
    for key, conditions in table.items():
        if not isinstance(conditions, Mapping):
            raise ValueError(f'[alarms] "{key}" must be a table like {{ relative_drop = 0.5 }}, got {conditions!r}')
        for name, number in conditions.items():
            if name not in RULES:
                raise ValueError(f'[alarms] "{key}": unknown condition {name!r}; use one of {sorted(RULES)}')
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise ValueError(f'[alarms] "{key}".{name} must be a number, got {number!r}')
            cls, field_name = RULES[name]
            rules.append(cls(key, **{field_name: float(number)}))
    return rules


def alarm_rules(config: Sequence[Mapping] | Mapping | None) -> list[AlarmRule]:
    """Rules from ``recipe.meters.alarms``: a list of ``{rule, key, <number>}`` rows, or the alarms table
    form ``{key: {rule: number}}`` (see `parse_alarms`); empty means `DEFAULT_RULES`.

    >>> alarm_rules([{"rule": "above", "key": "reward/zero_var_frac", "threshold": 0.7}])
    [Above(key='reward/zero_var_frac', threshold=0.7)]
    >>> len(alarm_rules([])) == len(DEFAULT_RULES)
    True
    """
    if not config:
        return list(DEFAULT_RULES)
    if isinstance(config, Mapping):
        return parse_alarms(config)
    rules: list[AlarmRule] = []
    for row in config:
        if not isinstance(row, Mapping):
            raise ValueError(f"meters.alarms: each alarm must be a table, got {row!r}")
        if "rule" not in row:  # a row in the table form: {key = {rule = number}}
            rules += parse_alarms(row)
            continue
        numbers = {k: v for k, v in row.items() if k not in ("rule", "key")}
        if "key" not in row or len(numbers) != 1:
            raise ValueError(f"meters.alarms: write each alarm as {{rule = \"relative_drop\", key = "
                             f"\"diversity/strategy_entropy_mm\", fraction = 0.5}} (one number); got {dict(row)!r}")
        rules += parse_alarms({row["key"]: {row["rule"]: next(iter(numbers.values()))}})
    return rules


def fired_alarms(history: Sequence[Mapping[str, float]], rules: Sequence[AlarmRule]) -> list[AlarmEvent]:
    """Events for every rule at the first step its condition holds (each rule fires at most once).

    ``history`` is the list of meter dicts in logging order; an entry's ``"step"`` key, if present, is its
    step (else its index). Missing or non-finite values are skipped; ``RelativeDrop`` compares with the
    first finite value of its key.

    >>> hist = [{"step": 10, "e": 2.0}, {"step": 20, "e": 1.5}, {"step": 30, "e": 0.9}, {"step": 40, "e": 0.5}]
    >>> [(ev.step, ev.value) for ev in fired_alarms(hist, [RelativeDrop("e", 0.5)])]
    [(30, 0.9)]
    """
    events: list[AlarmEvent] = []
    for rule in rules:
        first = math.nan
        for i, entry in enumerate(history):
            value = entry.get(rule.key)
            if value is None or not math.isfinite(value):
                continue
            if math.isnan(first):
                first = float(value)
            if rule.fires(float(value), first):
                events.append(AlarmEvent(int(entry.get("step", i)), rule, rule.key, float(value),
                                         rule.describe(float(value), first)))
                break
    return sorted(events, key=lambda e: e.step)
