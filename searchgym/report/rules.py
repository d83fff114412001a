"""Step 3 of a report: the verdict — plain-language findings derived from the numbers by fixed rules.

Two arms are compared by `compare_arms`: where both have per-question values of the column on their shared
questions (every table column of a `summarise`d study), by the **paired rule**: the difference of the two
arms' per-question values (each the mean over the arm's seeds), with a two-level bootstrap 95% CI that
draws each arm's seeds and then questions, the same questions for both arms
(`searchgym.report.data.paired_two_level_bootstrap_ci`); a difference is claimed only when that CI
excludes 0. Where per-question values are missing, the fallback: a difference is claimed only when the
two arms' 95% CIs do not overlap (`compare_cis`). A "no change" states the smallest difference the rule used
would detect in 80% of studies of this size (`detectable_difference`, from `searchgym.meters.count_estimators`;
docs/calibration.md measures both rules). `headlines` answers the questions the study exists for;
`verdict` adds the details arm by arm. Reads only `searchgym.report.data`'s summaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from searchgym.meters.claim_rules import paired_rule_mde, question_rule_mde, study_mde
from searchgym.meters.stats import total_variation
from searchgym.meters.table import label as meter_label
from searchgym.meters.table import unit as meter_unit
from searchgym.report.data import (
    BASE,
    STRATEGY_KEY,
    TABLE_METRICS,
    TWO_LEVEL_KEYS,
    ArmSummary,
    Estimate,
    StudyData,
    ci_text,
    fmt,
    paired_difference,
)

CLOSE_TO_DEMOS = 0.15  # total-variation distance under which an arm "stayed near" its demonstration mix
DOMINANT_SHARE = 0.8  # one strategy taking this share of samples is called a collapse onto it
# The table columns the rules read, by their labels in the table of meters (`searchgym.meters.table`).
SUCCESS, PASS_N = meter_label("reward/success"), meter_label("passk/pass@{n}")
STRATEGY, BREADTH = meter_label(STRATEGY_KEY), meter_label("search/query_breadth")


def _count(x: float) -> str:
    """A mean count: whole numbers without decimals.

    >>> _count(3.0), _count(2.3333)
    ('3', '2.3')
    """
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def compare_cis(a: Estimate, b: Estimate) -> str:
    """'higher', 'lower' or 'overlap' (no claim) for a against b, by their 95% CIs; 'n/a' without data. The
    fallback of `compare_arms` where an arm has no per-question values of the column.

    >>> compare_cis(Estimate(0.8, 0.7, 0.9), Estimate(0.5, 0.4, 0.6)), compare_cis(Estimate(0.5, 0.4, 0.6), Estimate(0.55, 0.5, 0.7))
    ('higher', 'overlap')
    """
    if not all(math.isfinite(x) for x in (a.lo, a.hi, b.lo, b.hi)):
        return "n/a"
    if a.lo > b.hi:
        return "higher"
    if a.hi < b.lo:
        return "lower"
    return "overlap"


NO_CLAIM = "no claim"  # `Comparison.side` when neither 'higher' nor 'lower' is claimed
# How the MDE note names the rule used (`detectable_difference`).
PAIRED_RULE = "paired rule: the 95% CI of the paired difference must exclude 0"
CI_RULE = "CI rule: the two arms' 95% CIs must not overlap"


def _signed(x: float) -> str:
    """A difference with its sign.

    >>> _signed(0.1234), _signed(-0.05), _signed(float("nan"))
    ('+0.123', '-0.050', '–')
    """
    return f"{x:+.3f}" if math.isfinite(x) else "–"


@dataclass
class Comparison:
    """Arm a against arm b on one table column, by the rule `compare_arms` chose."""

    side: str  # 'higher', 'lower', NO_CLAIM or 'n/a' (not measured)
    paired: bool  # True: the paired rule; False: the fallback, non-overlapping CIs
    diff: Estimate | None = None  # a - b with its paired 95% CI (the paired rule only)
    questions: int = 0  # shared questions the paired difference used

    @property
    def claimed(self) -> bool:
        return self.side in ("higher", "lower")

    @property
    def rule(self) -> str:
        return PAIRED_RULE if self.paired else CI_RULE

    def evidence(self) -> str:
        """Why the claim was (not) made, for the verdict's parentheses."""
        if not self.paired:
            return "95% CIs do not overlap" if self.claimed else "CIs overlap"
        d = self.diff
        return (f"paired difference {_signed(d.value)} [{_signed(d.lo)}, {_signed(d.hi)}] over {self.questions} "
                f"shared questions: the 95% CI {'excludes' if self.claimed else 'includes'} 0")


def compare_arms(a: ArmSummary, b: ArmSummary, label: str) -> Comparison:
    """Arm ``a`` against arm ``b`` on the table column ``label``: the paired rule where both arms have
    per-question values of it (`searchgym.report.data.paired_difference`: 'higher'/'lower' when the 95% CI
    of a - b excludes 0), else the fallback `compare_cis` on the two CIs.

    >>> import numpy as np
    >>> from searchgym.report.data import ArmSummary
    >>> wide = Estimate(0.5, 0.0, 1.0)  # the columns' CIs overlap: the fallback would claim nothing
    >>> qs = ["q1", "q2", "q3", "q4"]
    >>> a = ArmSummary("a", [], [], {"x": wide}, {}, {}, {}, per_question={"x": np.array([[0.9, 0.5, 0.2, 0.7]] * 3)}, questions=qs)
    >>> b = ArmSummary("b", [], [], {"x": wide}, {}, {}, {}, per_question={"x": np.array([[0.8, 0.4, 0.1, 0.6]] * 3)}, questions=qs)
    >>> c = compare_arms(a, b, "x")
    >>> c.side, c.paired, round(c.diff.value, 3), compare_cis(a.table["x"], b.table["x"])
    ('higher', True, 0.1, 'overlap')
    """
    paired = paired_difference(a, b, label)
    if paired is None:
        side = compare_cis(a.table[label], b.table[label])
        return Comparison(NO_CLAIM if side == "overlap" else side, False)
    diff, used = paired
    if not (math.isfinite(diff.lo) and math.isfinite(diff.hi)):
        return Comparison("n/a", True, diff, used)
    side = "higher" if diff.lo > 0 else "lower" if diff.hi < 0 else NO_CLAIM
    return Comparison(side, True, diff, used)


def detectable_difference(data: StudyData, label: str, a: ArmSummary, b: ArmSummary) -> tuple[float, str]:
    """The minimum detectable difference (80% power) of the claim rule `compare_arms` uses between arms
    ``a`` and ``b`` for the table column ``label``, at this study's sizes, from its own data, and how it
    was estimated (naming the rule):

    - the paired rule (per-question values in both arms): (z_0.975 + z_0.8) x the standard error of the
      paired difference, read off its 95% CI (`searchgym.meters.claim_rules.paired_rule_mde`): the spread
      of this pair's own per-question differences and seeds;
    - the fallback, non-overlapping CIs: for a column under the seed rule with >= 2 seeds per arm, the
      seed-to-seed standard deviation pooled over every arm times the rule's factor (`study_mde`); for the
      strategy entropy (two-level bootstrap CIs, `searchgym.report.data.TWO_LEVEL_KEYS`) and with one seed,
      from the two CIs (`question_rule_mde`, standard errors read off the 95% CIs).

    NaN when none is possible."""
    cmp = compare_arms(a, b, label)
    if cmp.paired:
        if cmp.diff is None or not all(math.isfinite(x) for x in (cmp.diff.lo, cmp.diff.hi)):
            return math.nan, ""
        se = (cmp.diff.hi - cmp.diff.lo) / (2 * 1.959964)
        return float(paired_rule_mde(se)), (f"{PAIRED_RULE}; from the spread of this pair's two-level paired "
                                            f"bootstrap over {cmp.questions} shared questions and their seeds")
    key = dict(TABLE_METRICS)[label].format(n=data.n)
    seeds = [sum(math.isfinite(m.get(key, math.nan)) for m in arm.meters) for arm in (a, b)]
    two_level = key in TWO_LEVEL_KEYS
    if min(seeds) >= 2 and not two_level:
        values = [[m.get(key, math.nan) for m in arm.meters] for arm in data.arms]
        return study_mde(values, *seeds), f"{CI_RULE}; from the seed-to-seed spread of this study's arms"
    ea, eb = a.table[label], b.table[label]
    if not all(math.isfinite(x) for x in (ea.lo, ea.hi, eb.lo, eb.hi)):
        return math.nan, ""
    se = [(e.hi - e.lo) / (2 * 1.959964) for e in (ea, eb)]
    how = "from the two-level bootstrap CIs" if two_level else "from the CIs over questions (one seed)"
    return question_rule_mde(*se), f"{CI_RULE}; {how}"


def _mde_note(data: StudyData, label: str, a: ArmSummary, b: ArmSummary) -> str:
    mde, how = detectable_difference(data, label, a, b)
    if not math.isfinite(mde):
        return ""
    unit = " nats" if meter_unit(dict(TABLE_METRICS)[label]).startswith("nats") else ""
    return f" (minimum detectable difference at these sizes: {mde:.3f}{unit}, 80% power under the {how})"


def _breadth_label(ref: ArmSummary) -> str:
    """Strategy entropy where the world labels strategies, query breadth otherwise."""
    return STRATEGY if math.isfinite(ref.table[STRATEGY].value) else BREADTH


def _claim(data: StudyData, label: str, a: ArmSummary, b: ArmSummary) -> str:
    """One comparison in a few words: 'lower'/'higher' with both CIs and the evidence, or 'no change larger
    than X' (X: the minimum detectable difference of the rule used)."""
    cmp = compare_arms(a, b, label)
    values = f"{ci_text(a.table[label])} vs {ci_text(b.table[label])}"
    if cmp.claimed:
        return f"{cmp.side} ({values}; {cmp.evidence()})"
    if cmp.side == "n/a":
        return "not measured"
    mde, _ = detectable_difference(data, label, a, b)
    rule = "paired rule" if cmp.paired else "CI rule"
    bound = f"no change larger than {mde:.2f} (the {rule}'s minimum detectable difference)" if math.isfinite(
        mde) else "no change claimed"
    return f"{bound} ({values}; {cmp.evidence()})"


def headlines(data: StudyData) -> list[str]:
    """One sentence per question the study exists to answer, where its arms are present: RL vs base
    breadth, narrow vs diverse SFT, base vs RL at the largest k, whether RL after narrow SFT reopens the
    strategy palette narrow SFT closed, whether RL amplifies the prior's dominant strategy, and whether a
    strategy absent from the prior is ever sampled."""
    base, rl = data.arm(BASE), data.arm("grpo")
    narrow, diverse = data.arm("sft-narrow"), data.arm("sft-diverse")
    narrow_rl = data.arm("sft-narrow-grpo")
    out = []
    if base and rl:
        label = _breadth_label(base)
        out.append(f"**RL vs base, {label}:** GRPO {_claim(data, label, rl, base)}.")
    if narrow and diverse:
        label = _breadth_label(diverse)
        out.append(f"**Narrow vs diverse SFT, {label}:** SFT-narrow {_claim(data, label, narrow, diverse)}.")
    if base and rl:
        out.append(f"**Base vs RL at the largest k (pass@{data.n}):** GRPO {_claim(data, PASS_N, rl, base)}.")
    if narrow and narrow_rl:
        label = _breadth_label(narrow)
        reference = f"; against the base: {_claim(data, label, narrow_rl, base)}" if base else ""
        out.append(f"**Does RL after narrow SFT reopen the palette ({label})?** SFT-narrow then GRPO, against "
                   f"SFT-narrow alone: {_claim(data, label, narrow_rl, narrow)}{reference}.")
    for variant in (a for a in data.arms if rl and a.name.startswith("grpo-")):  # countermeasure arms
        label = _breadth_label(rl)
        out.append(f"**Does {variant.name} keep more breadth than plain GRPO ({label})?** {variant.name} "
                   f"{_claim(data, label, variant, rl)}; success@1 {_claim(data, SUCCESS, variant, rl)}.")
    prior = next((a.prior_share for a in data.arms if a.prior_share), None)
    if prior and rl and rl.shares and base and base.shares:
        top = max(prior, key=prior.get)
        before, after = base.shares.get(top, 0.0), rl.shares.get(top, 0.0)
        out.append(f"**Does RL amplify the prior's dominant strategy ({top}, {prior[top]:.0%} of its demos)?** "
                   f"It takes {after:.0%} of GRPO's samples vs {before:.0%} of the base's "
                   f"({'more' if after > before else 'not more'}; pooled over seeds, no CI).")
    if prior:
        absent = sorted(s for a in data.arms for s in (a.shares or {}) if s != "other" and not prior.get(s))
        world = sorted({s for a in data.arms for s in (a.demo_share or {})} - set(prior) - {"other"})
        candidates = sorted(set(absent) | {s for s in world if not prior.get(s)})
        if candidates:
            counts = [f"{a.name} {round(a.shares.get(s, 0.0) * data.n * data.questions * len(a.runs))}"
                      for a in data.arms for s in candidates[:1]]
            out.append(f"**Is a strategy absent from the prior ever sampled ({candidates[0]})?** Samples labelled "
                       f"{candidates[0]}, of {data.n * data.questions} per seed: " + ", ".join(counts) + ".")
    return out


def coverage_sentence(arm: ArmSummary, n: int) -> str:
    """The arm against the base at k = n in one sentence: coverage inclusion, ΔSE and the pass@k crossing
    (`searchgym.meters.coverage.compare_with_base`)."""
    v = arm.vs_base or {}

    def ci(key: str) -> str:
        return f"{fmt(v.get(key, math.nan))} [{fmt(v.get(key + '_lo', math.nan))}, {fmt(v.get(key + '_hi', math.nan))}]"

    if math.isfinite(v.get("coverage/inclusion", math.nan)):
        cover = (f"of the questions it solves in n = {n}, a share of {ci('coverage/inclusion')} is also solved by "
                 f"the base (coverage inclusion, 1 = a subset; new {ci('coverage/new')}, lost {ci('coverage/lost')} "
                 "of all questions)")
    else:
        cover = f"it solves no question in n = {n}"
    state = v.get("passk/crossing_state", math.nan)
    if state == 1.0:
        cross = (f"the base's pass@k catches up at k = {v['passk/crossing_k']:.0f} (a crossing in "
                 f"{v.get('passk/crossing_boot_share', math.nan):.0%} of bootstrap resamples of the questions)")
    elif state == 0.0:
        cross = f"it stays ahead of the base up to k = {n}"
    else:
        cross = "it is not ahead of the base at k = 1, so there is no crossing"
    return (f"{arm.name} vs base: {cover}; ΔSE = pass@1 − base pass@{n} = {ci('coverage/delta_se')}; {cross}.")


def verdict(data: StudyData) -> list[str]:
    """Plain-language findings, each derived from the table by a fixed rule: the headline claims first
    (`headlines`), then the details arm by arm."""
    if not data.arms:
        return ["No runs to compare."]
    ref = data.arm(BASE) or data.arms[0]
    label = _breadth_label(ref)
    out = headlines(data)
    others = [a for a in data.arms if a is not ref]
    for arm in others:
        a, b = arm.table[label], ref.table[label]
        breadth = compare_arms(arm, ref, label)
        if breadth.claimed:
            verb = "collapsed" if breadth.side == "lower" else "widened"
            out.append(f"**{arm.name} {verb} exploration breadth**: {label} {ci_text(a)} against {ref.name}'s "
                       f"{ci_text(b)} ({breadth.evidence()}).")
        elif breadth.side == NO_CLAIM:
            out.append(f"{arm.name} kept {label} within noise of {ref.name} ({ci_text(a)} vs {ci_text(b)}; "
                       f"{breadth.evidence()}), so no change in breadth is claimed"
                       f"{_mde_note(data, label, arm, ref)}.")
        s1, sn = compare_arms(arm, ref, SUCCESS).side, compare_arms(arm, ref, PASS_N).side
        ceiling = ref.table[PASS_N].value >= 0.98  # the reference solves ~everything: no room to widen
        if s1 == "higher" and (sn == "lower" or (sn == NO_CLAIM and not ceiling)):
            out.append(f"{arm.name} sharpened rather than widened: {SUCCESS} rose "
                       f"({ci_text(arm.table[SUCCESS])} vs {ci_text(ref.table[SUCCESS])}) but pass@{data.n} did "
                       f"{'fall' if sn == 'lower' else 'not measurably rise'} ({ci_text(arm.table[PASS_N])} vs "
                       f"{ci_text(ref.table[PASS_N])}).")
        elif sn == "higher":
            out.append(f"{arm.name} solved more of the question set at k = n = {data.n}: pass@{data.n} "
                       f"{ci_text(arm.table[PASS_N])} vs {ci_text(ref.table[PASS_N])}.")
        elif sn == "lower":
            out.append(f"{arm.name} lost coverage: pass@{data.n} {ci_text(arm.table[PASS_N])} vs "
                       f"{ci_text(ref.table[PASS_N])}.")
        if arm.overlap and ref.name == BASE:
            o = arm.overlap
            out.append(f"{arm.name} solves {_count(o['only_a'])} question(s) the base never solves in n = {data.n} "
                       f"and misses {_count(o['only_b'])} that the base solves (of {_count(o['questions'])}; "
                       "mean over seed pairs).")
        if arm.vs_base and ref.name == BASE:
            out.append(coverage_sentence(arm, data.n))
    ranked = [a for a in others if math.isfinite(a.table[label].value)]
    if len(ranked) >= 2:
        ranked.sort(key=lambda a: a.table[label].value, reverse=True)
        top, second = ranked[0], ranked[1]
        ranking = compare_arms(top, second, label)
        if ranking.side == "higher":
            out.append(f"Of the trained arms, **{top.name} kept the most breadth**, clearly ahead of "
                       f"{second.name} ({ci_text(top.table[label])} vs {ci_text(second.table[label])}; "
                       f"{ranking.evidence()}).")
        else:
            why = ranking.evidence() if ranking.side == NO_CLAIM else "not measured"
            out.append(f"Of the trained arms {top.name} has the highest {label} ({fmt(top.table[label].value)}), "
                       f"but not clearly ahead of {second.name} ({why}): no ranking is claimed between them.")
    for arm in data.arms:
        if arm.shares:
            top_strategy, share = max(arm.shares.items(), key=lambda kv: kv[1])
            if share >= DOMINANT_SHARE and len(arm.shares) > 0 and top_strategy != "other":
                out.append(f"{arm.name} put {share:.0%} of its samples on one strategy ({top_strategy}).")
        if arm.demo_share and arm.shares:
            tv = total_variation(arm.shares, arm.demo_share)
            where = "stayed close to" if tv < CLOSE_TO_DEMOS else "drifted away from"
            out.append(f"{arm.name} {where} its demonstration mix (total-variation distance {tv:.2f}).")
        if arm.prior_share and arm.shares:
            top, prior_top = max(arm.prior_share.items(), key=lambda kv: kv[1])
            now = arm.shares.get(top, 0.0)
            absent = sorted(s for s in arm.shares if s != "other" and arm.prior_share.get(s, 0.0) == 0.0
                            and arm.shares[s] > 0)
            out.append(f"{arm.name}: the prior's dominant strategy ({top}) takes {now:.0%} of its samples vs "
                       f"{prior_top:.0%} of the pretraining demos (total-variation distance to the prior mix "
                       f"{total_variation(arm.shares, arm.prior_share):.2f})"
                       + (f"; strategies absent from the prior appear: {', '.join(absent)}." if absent else "."))
    few = [a.name for a in data.arms if a.name != BASE and len(a.runs) < 3]
    if few:
        out.append(f"Fewer than 3 seeds for {', '.join(few)}: treat their comparisons as anecdotes.")
    return out
