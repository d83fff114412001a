"""The one table of meters: every key `searchgym meter` can print, how it is made, its label and its unit.

A row (`Meter`) names one key, or a key pattern whose placeholders (``{k}``, ``{d}``, ``{role}``,
``{cluster}``, see `PLACEHOLDERS`) stand for what its family fills in. Per-question rows carry the function
that computes their family from one task's n samples (`searchgym.meters.families`; rows of one family share
it): `aggregate.question_meters` runs each family once, in table order, and merges the dicts. Batch rows are
made from all questions at once (`aggregate.average`, `aggregate.cross_input_meters`), model rows by
`support.support_meters` (``searchgym meter --base-nll``). Everything else is read off the table: the
headline keys with bootstrap CIs (`main_keys`, `MAIN_KEYS`), the namespaces the live probes log under
(`namespaces`), the labels and units of the report (`label`, `unit`) and the order of the meter command's
table (`ordered`). The functions read `METERS` when called, so a new meter is one new row.

>>> label("diversity/strategy_entropy_jk"), unit("diversity/strategy_entropy_jk")
('strategy entropy', 'nats (jackknife)')
>>> label("diversity/strategy_entropy_mm")
'strategy entropy (Miller–Madow)'
>>> label("passk/pass@8"), label("passk/pass@{n}"), label("entropy/token_query")
('pass@8', 'pass@n', 'query token entropy')
>>> MAIN_KEYS[:3], namespaces()[:3]
(('reward/success', 'passk/pass@1', 'diversity/strategy_entropy_mm'), ('meta/', 'reward/', 'passk/'))
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from searchgym.meters.families import (
    CLUSTERS,
    call_meters,
    cluster_meters,
    kl_meters,
    passk_meters,
    retrieval_meters,
    reward_meters,
    text_meters,
    token_meters,
)
from searchgym.trajectory import TOKEN_ROLES, Trajectory

QUESTION, BATCH, MODEL = "question", "batch", "model"  # where a row's keys are computed (`Meter.kind`)
# What each placeholder of a key pattern matches; "{name}" itself also matches, so that the report can ask
# for the label of a key it fills in later ("passk/pass@{n}" -> "pass@n").
PLACEHOLDERS = {"k": r"\d+", "d": r"\d+", "role": "|".join(TOKEN_ROLES), "cluster": "|".join(CLUSTERS)}
_DIFFICULTY = "_d{d}"  # a batch row "<key>_d{d}": <key> averaged over the questions of difficulty d


@dataclass(frozen=True)
class Meter:
    """One row of the table: a key (or key pattern), its label and unit, and where it comes from.

    ``compute(group) -> {key: float}`` computes the row's family from one task's n samples (per-question
    rows only); ``headline`` rows get bootstrap CIs and lead the meter command's table; ``missing`` is what
    a question that did not emit the key counts as in the average over questions.

    >>> Meter("toy/spread", "toy spread", compute=lambda g: {"toy/spread": 0.0}).namespace
    'toy/'
    >>> Meter("passk/pass@{k}", "pass@{k}", kind=BATCH).match("passk/pass@16")
    {'k': '16'}
    """

    key: str
    label: str
    unit: str = ""
    compute: Callable[[Sequence[Trajectory]], dict[str, float]] | None = None
    headline: bool = False
    kind: str = QUESTION
    missing: float = math.nan
    doc: str = ""

    def __post_init__(self):
        if "/" not in self.key:
            raise ValueError(f"meter key {self.key!r} needs a namespace: write it as 'namespace/name'")
        if (self.compute is not None) != (self.kind == QUESTION):
            raise ValueError(f"meter {self.key!r}: a {QUESTION!r} row needs a compute function, other kinds "
                             f"({BATCH!r}, {MODEL!r}) are computed elsewhere and take none")
        if self.headline and "{" in self.key:
            raise ValueError(f"meter {self.key!r}: a headline row names one key, not a pattern")
        _regex(self.key)  # an unknown placeholder fails here

    @property
    def namespace(self) -> str:
        return self.key.split("/", 1)[0] + "/"

    def match(self, key: str) -> dict[str, str] | None:
        """The placeholder values if this row declares ``key``, else None."""
        found = _regex(self.key).fullmatch(key)
        return None if found is None else {k: v.strip("{}") for k, v in found.groupdict().items()}


@functools.cache
def _regex(pattern: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", pattern)  # literal, placeholder, literal, ...
    unknown = [p for p in parts[1::2] if p not in PLACEHOLDERS]
    if unknown:
        raise ValueError(f"meter key {pattern!r}: unknown placeholder {unknown[0]!r}; "
                         f"use one of {sorted(PLACEHOLDERS)}")
    return re.compile("".join(re.escape(p) if i % 2 == 0 else rf"(?P<{p}>{PLACEHOLDERS[p]}|\{{\w+\}})"
                              for i, p in enumerate(parts)))


NATS_MM, NATS_JK = "nats (Miller–Madow)", "nats (jackknife)"
M = Meter
METERS: tuple[Meter, ...] = (
    M("meta/n", "samples per question", "samples", kind=BATCH, doc="the fixed n every question is metered at"),
    M("meta/questions", "questions", "questions", kind=BATCH),
    # Reward and pass@k: c correct of n samples.
    M("reward/success", "success@1", "share of samples", reward_meters, headline=True, doc="c/n"),
    M("reward/mean", "reward", "mean episode reward", reward_meters),
    M("reward/std", "reward spread", "std of reward within a group", reward_meters),
    M("reward/zero_var_frac", "zero-variance share", "share of questions", reward_meters,
      doc="questions whose n rewards are all equal: no GRPO gradient"),
    M("reward/success_d{d}", "success@1 at difficulty {d}", "share of samples", kind=BATCH),
    M("reward/std_d{d}", "reward spread at difficulty {d}", "std of reward within a group", kind=BATCH),
    M("reward/zero_var_frac_d{d}", "zero-variance share at difficulty {d}", "share of questions", kind=BATCH),
    M("passk/pass@1", "pass@1", "share of questions", passk_meters, headline=True),
    M("passk/pass@{k}", "pass@{k}", "share of questions", passk_meters, doc="unbiased: any of k correct"),
    M("passk/pass^{k}", "pass^{k}", "share of questions", passk_meters, doc="unbiased: all k samples correct"),
    # Clusters of the n samples: strategy label, action signature, normalised answer.
    # The report's strategy entropy is the jackknife (docs/calibration.md: at n = 8 Miller–Madow is biased
    # low by up to 0.08 nats, more than its CI's width); Miller–Madow stays the headline the live probes and
    # alarms watch, where a drop matters and the bias mostly cancels.
    M("diversity/strategy_entropy_mm", "strategy entropy (Miller–Madow)", NATS_MM, cluster_meters, headline=True),
    M("diversity/strategy_entropy_jk", "strategy entropy", NATS_JK, cluster_meters,
      doc="jackknife: the report's strategy-entropy column (two-level bootstrap CI over seeds and questions)"),
    M("diversity/signature_entropy_mm", "signature entropy", NATS_MM, cluster_meters, headline=True),
    M("diversity/answer_distinct", "distinct answers", "answers", cluster_meters, headline=True),
    M("diversity/{cluster}_distinct", "{cluster} clusters", "clusters", cluster_meters),
    M("diversity/{cluster}_entropy", "{cluster} entropy (plug-in)", "nats", cluster_meters),
    M("diversity/{cluster}_entropy_mm", "{cluster} entropy", NATS_MM, cluster_meters),
    M("diversity/{cluster}_entropy_jk", "{cluster} entropy (jackknife)", NATS_JK, cluster_meters),
    M("diversity/{cluster}_max_share", "{cluster} mode share", "share of samples", cluster_meters),
    # The generated text.
    M("diversity/distinct_1", "distinct-1", "share of unigrams", text_meters),
    M("diversity/distinct_2", "distinct-2", "share of bigrams", text_meters),
    M("diversity/self_bleu", "self-BLEU", "BLEU", text_meters),
    M("diversity/vendi", "Vendi score", "effective samples", text_meters, headline=True),
    M("diversity/cross_input", "cross-input accuracy", "share of samples", kind=BATCH,
      doc="a trajectory's own question retrieved among the batch's (template collapse)"),
    M("diversity/cross_input_chance", "cross-input chance", "share of samples", kind=BATCH, doc="1/B"),
    M("diversity/cross_input_lift", "cross-input lift", "lift over chance", kind=BATCH),
    # Search behaviour.
    M("search/calls_mean", "tool calls per episode", "tool calls", call_meters, headline=True),
    M("search/calls_distinct", "distinct call counts", "counts", call_meters),
    M("search/calls_entropy", "call-count entropy (plug-in)", "nats", call_meters),
    M("search/calls_entropy_mm", "call-count entropy", NATS_MM, call_meters),
    M("search/calls_mode_share", "call-count mode share", "share of samples", call_meters),
    M("search/calls_frac_{k}", "share with {k} tool calls", "share of samples", call_meters, missing=0.0,
      doc="a count no sample of a question made has share 0 there"),
    M("search/invalid_frac", "invalid calls", "share of calls", call_meters),
    M("search/depth_adaptivity", "depth adaptivity", "Spearman rho", kind=BATCH,
      doc="mean tool calls against hops, over questions; _lo/_hi from a bootstrap over questions"),
    M("search/depth_adaptivity_lo", "depth adaptivity (CI low)", "Spearman rho", kind=BATCH),
    M("search/depth_adaptivity_hi", "depth adaptivity (CI high)", "Spearman rho", kind=BATCH),
    M("search/query_redundancy", "query redundancy", "Jaccard similarity", retrieval_meters),
    M("search/query_breadth", "query breadth", "Jaccard distance", retrieval_meters, headline=True),
    M("search/unique_docs", "unique docs", "documents", retrieval_meters, headline=True),
    M("search/unique_opened", "unique docs opened", "documents", retrieval_meters),
    M("search/evidence_coverage", "evidence coverage", "share of a gold chain", retrieval_meters),
    M("search/evidence_coverage_pooled", "pooled evidence coverage", "share of a gold chain", retrieval_meters),
    # Tokens (NaN without token data: scripted demonstrations).
    M("entropy/token", "token entropy", "nats per token (sampled)", token_meters, headline=True),
    M("entropy/token_{role}", "{role} token entropy", "nats per token (sampled)", token_meters),
    M("entropy/sequence", "sequence entropy", "nats per trajectory", token_meters),
    M("entropy/sequence_per_token", "sequence entropy per token", "nats per token", token_meters),
    M("kl/k1", "KL k1", "nats per token", kl_meters, doc="needs the reference policy's log-probs"),
    M("kl/k3", "KL k3", "nats per token", kl_meters),
    # Scored with the base and the run's own model (searchgym meter --base-nll).
    M("support/base_nll", "NLL under the base", "nats per token", kind=MODEL),
    M("support/base_ppl", "perplexity under the base", "perplexity", kind=MODEL),
    M("support/own_nll", "NLL under the own model", "nats per token", kind=MODEL),
    M("support/own_ppl", "perplexity under the own model", "perplexity", kind=MODEL),
    M("support/tokens", "scored agent tokens", "tokens", kind=MODEL),
)
del M


def families() -> tuple[Callable[[Sequence[Trajectory]], dict[str, float]], ...]:
    """The per-question compute functions, each once, in table order."""
    return tuple(dict.fromkeys(m.compute for m in METERS if m.kind == QUESTION))


def main_keys() -> tuple[str, ...]:
    """The headline keys, in table order: they get bootstrap CIs and lead the meter command's table."""
    return tuple(m.key for m in METERS if m.headline)


def namespaces() -> tuple[str, ...]:
    """Every namespace of the table (``"diversity/"``, ``"search/"`` ...), in table order."""
    return tuple(dict.fromkeys(m.namespace for m in METERS))


def difficulty_keys() -> tuple[str, ...]:
    """The keys `aggregate.average` also stratifies by difficulty (those with a ``<key>_d{d}`` row)."""
    return tuple(m.key.removesuffix(_DIFFICULTY) for m in METERS if m.key.endswith(_DIFFICULTY))


def row_of(key: str) -> Meter | None:
    """The first row that declares ``key`` (None when no row does)."""
    return next((m for m in METERS if m.match(key) is not None), None)


def _row(key: str) -> Meter:
    row = row_of(key)
    if row is None:
        raise KeyError(f"no row of searchgym.meters.table.METERS declares {key!r}")
    return row


def label(key: str) -> str:
    """The human label of ``key``, its placeholders filled in."""
    row = _row(key)
    return row.label.format(**row.match(key))


def unit(key: str) -> str:
    """The unit of ``key``."""
    return _row(key).unit


def missing(key: str) -> float:
    """What a question that did not emit ``key`` counts as in the average over questions (NaN: left out)."""
    row = row_of(key)
    return math.nan if row is None else row.missing


def ordered(keys: Iterable[str]) -> list[str]:
    """``keys`` in the order of the meter command's table: meta rows, the headline keys, every other key
    by its row (a pattern's keys in natural order: pass@2 before pass@16), keys no row declares last.

    >>> ordered(["passk/pass@16", "toy/x", "diversity/vendi", "passk/pass@2", "meta/n", "reward/mean"])
    ['meta/n', 'diversity/vendi', 'reward/mean', 'passk/pass@2', 'passk/pass@16', 'toy/x']
    """
    index = {id(m): i for i, m in enumerate(METERS)}

    def place(key: str) -> tuple:
        row = row_of(key)
        group = 3 if row is None else 0 if row.namespace == "meta/" else 1 if row.headline else 2
        natural = [(0, int(s), "") if s.isdigit() else (1, 0, s) for s in re.split(r"(\d+)", key)]
        return group, index[id(row)] if row is not None else 0, natural

    return sorted(set(keys), key=place)


MAIN_KEYS = main_keys()  # as the table stands at import; `main_keys()` reads it when called
NAMESPACES = namespaces()
