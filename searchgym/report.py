"""`searchgym report`: one readable page per study — figures, a table with CIs, and a verdict from rules.

Takes a study folder or several run folders, meters every run at one fixed n on the shared questions
(`searchgym.report_data`), draws the figures (`searchgym.report_figures`) and writes ``report.html``
(self-contained: PNGs embedded as base64), the PNGs, ``report.md`` and ``report.json``. The verdict is
derived from the numbers by fixed rules: a difference is claimed only when the 95% CIs do not overlap.
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from pathlib import Path

from searchgym.corpus.documents import atomic_write
from searchgym.meters.calibration import question_rule_mde, study_mde
from searchgym.report_data import (
    BASE,
    TABLE_METRICS,
    ArmSummary,
    Estimate,
    StudyData,
    discover_runs,
    summarise,
)
from searchgym.report_figures import arm_colours, figures, fmt

CLOSE_TO_DEMOS = 0.15  # total-variation distance under which an arm "stayed near" its demonstration mix
DOMINANT_SHARE = 0.8  # one strategy taking this share of samples is called a collapse onto it


# ---- 1. the verdict: rules over the numbers ----------------------------------------------------------

def _ci(e: Estimate) -> str:
    return f"{fmt(e.value)} [{fmt(e.lo)}, {fmt(e.hi)}]"


def _count(x: float) -> str:
    """A mean count: whole numbers without decimals.

    >>> _count(3.0), _count(2.3333)
    ('3', '2.3')
    """
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def compare(a: Estimate, b: Estimate) -> str:
    """'higher', 'lower' or 'overlap' (no claim) for a against b, by their 95% CIs; 'n/a' without data.

    >>> compare(Estimate(0.8, 0.7, 0.9), Estimate(0.5, 0.4, 0.6)), compare(Estimate(0.5, 0.4, 0.6), Estimate(0.55, 0.5, 0.7))
    ('higher', 'overlap')
    """
    if not all(math.isfinite(x) for x in (a.lo, a.hi, b.lo, b.hi)):
        return "n/a"
    if a.lo > b.hi:
        return "higher"
    if a.hi < b.lo:
        return "lower"
    return "overlap"


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    """Half the L1 distance between two share dicts (0 = same mix, 1 = disjoint).

    >>> total_variation({"a": 0.5, "b": 0.5}, {"a": 1.0})
    0.5
    """
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def detectable_difference(data: StudyData, label: str, a: ArmSummary, b: ArmSummary) -> tuple[float, str]:
    """The minimum detectable difference (80% power) of the claim rule between arms ``a`` and ``b`` for the
    table column ``label``, at this study's sizes, from its own data, and how it was estimated: with >= 2
    seeds per arm, the seed-to-seed standard deviation pooled over every arm times the rule's factor
    (`searchgym.meters.calibration.study_mde`); with one seed, from the two CIs over questions
    (`question_rule_mde`, standard errors read off the 95% CIs). NaN when neither is possible."""
    key = dict(TABLE_METRICS)[label].format(n=data.n)
    seeds = [sum(math.isfinite(m.get(key, math.nan)) for m in arm.meters) for arm in (a, b)]
    if min(seeds) >= 2:
        values = [[m.get(key, math.nan) for m in arm.meters] for arm in data.arms]
        return study_mde(values, *seeds), "from the seed-to-seed spread of this study's arms"
    ea, eb = a.table[label], b.table[label]
    if not all(math.isfinite(x) for x in (ea.lo, ea.hi, eb.lo, eb.hi)):
        return math.nan, ""
    se = [(e.hi - e.lo) / (2 * 1.959964) for e in (ea, eb)]
    return question_rule_mde(*se), "from the CIs over questions (one seed)"


def _mde_note(data: StudyData, label: str, a: ArmSummary, b: ArmSummary) -> str:
    mde, how = detectable_difference(data, label, a, b)
    if not math.isfinite(mde):
        return ""
    unit = " nats" if label == "strategy entropy" else ""
    return f" (minimum detectable difference at these sizes: {mde:.3f}{unit}, 80% power under this rule, {how})"


def _breadth_label(ref: ArmSummary) -> str:
    """Strategy entropy where the world labels strategies, query breadth otherwise."""
    return "strategy entropy" if math.isfinite(ref.table["strategy entropy"].value) else "query breadth"


def _claim(data: StudyData, label: str, a: ArmSummary, b: ArmSummary) -> str:
    """One comparison in a few words: 'lower'/'higher' with both CIs, or 'no change larger than X'."""
    side = compare(a.table[label], b.table[label])
    values = f"{_ci(a.table[label])} vs {_ci(b.table[label])}"
    if side in ("lower", "higher"):
        return f"{side} ({values}; 95% CIs do not overlap)"
    if side == "n/a":
        return "not measured"
    mde, _ = detectable_difference(data, label, a, b)
    bound = f"no change larger than {mde:.2f}" if math.isfinite(mde) else "no change claimed"
    return f"{bound} ({values}; CIs overlap)"


def headlines(data: StudyData) -> list[str]:
    """One sentence per question the study exists to answer, where its arms are present: RL vs base
    breadth, narrow vs diverse SFT, base vs RL at the largest k, whether RL amplifies the prior's
    dominant strategy, and whether a strategy absent from the prior is ever sampled."""
    base, rl = data.arm(BASE), data.arm("grpo")
    narrow, diverse = data.arm("sft-narrow"), data.arm("sft-diverse")
    out = []
    if base and rl:
        label = _breadth_label(base)
        out.append(f"**RL vs base, {label}:** GRPO {_claim(data, label, rl, base)}.")
    if narrow and diverse:
        label = _breadth_label(diverse)
        out.append(f"**Narrow vs diverse SFT, {label}:** SFT-narrow {_claim(data, label, narrow, diverse)}.")
    if base and rl:
        out.append(f"**Base vs RL at the largest k (pass@{data.n}):** GRPO {_claim(data, 'pass@n', rl, base)}.")
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
        side = compare(a, b)
        if side in ("lower", "higher"):
            verb = "collapsed" if side == "lower" else "widened"
            out.append(f"**{arm.name} {verb} exploration breadth**: {label} {_ci(a)} against {ref.name}'s "
                       f"{_ci(b)} (95% CIs do not overlap).")
        elif side == "overlap":
            out.append(f"{arm.name} kept {label} within noise of {ref.name} ({_ci(a)} vs {_ci(b)}): the CIs "
                       f"overlap, so no change in breadth is claimed{_mde_note(data, label, arm, ref)}.")
        s1, sn = compare(arm.table["success@1"], ref.table["success@1"]), compare(arm.table["pass@n"],
                                                                                   ref.table["pass@n"])
        ceiling = ref.table["pass@n"].value >= 0.98  # the reference solves ~everything: no room to widen
        if s1 == "higher" and (sn == "lower" or (sn == "overlap" and not ceiling)):
            out.append(f"{arm.name} sharpened rather than widened: success@1 rose ({_ci(arm.table['success@1'])} "
                       f"vs {_ci(ref.table['success@1'])}) but pass@{data.n} did "
                       f"{'not rise' if sn == 'overlap' else 'fall'} ({_ci(arm.table['pass@n'])} vs "
                       f"{_ci(ref.table['pass@n'])}).")
        elif sn == "higher":
            out.append(f"{arm.name} solved more of the question set at k = n = {data.n}: pass@{data.n} "
                       f"{_ci(arm.table['pass@n'])} vs {_ci(ref.table['pass@n'])}.")
        elif sn == "lower":
            out.append(f"{arm.name} lost coverage: pass@{data.n} {_ci(arm.table['pass@n'])} vs "
                       f"{_ci(ref.table['pass@n'])}.")
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
        if compare(top.table[label], second.table[label]) == "higher":
            out.append(f"Of the trained arms, **{top.name} kept the most breadth**, clearly ahead of "
                       f"{second.name} ({_ci(top.table[label])} vs {_ci(second.table[label])}).")
        else:
            out.append(f"Of the trained arms {top.name} has the highest {label} ({fmt(top.table[label].value)}), "
                       f"but its CI overlaps {second.name}'s: no ranking is claimed between them.")
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


# ---- 2. writing the report --------------------------------------------------------------------------

def _table_rows(data: StudyData) -> tuple[list[str], list[list[str]]]:
    header = ["arm", "seeds"] + [label.replace("pass@n", f"pass@{data.n}") for label, _ in TABLE_METRICS]
    rows = [[a.name, str(len(a.runs))] + [_ci(a.table[label]) for label, _ in TABLE_METRICS] for a in data.arms]
    return header, rows


def _md_inline(text: str) -> str:
    """**bold** → <strong>, everything else escaped."""
    parts = html.escape(text).split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def render_html(data: StudyData, findings: list[str], figs: dict[str, tuple[str, bytes]], sources: list[str]) -> str:
    colours = arm_colours([a.name for a in data.arms])
    header, rows = _table_rows(data)
    methods = sorted({e.method for a in data.arms for e in a.table.values() if e.method})
    table = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>\n" + "\n".join(
        "<tr>" + f"<td><span class='dot' style='background:{colours[r[0]]}'></span>{html.escape(r[0])}</td>"
        + "".join(f"<td>{html.escape(c)}</td>" for c in r[1:]) + "</tr>" for r in rows)
    figure_html = "\n".join(
        f"<figure id='fig-{stem}'><img alt='{html.escape(caption)}' src='data:image/png;base64,"
        f"{base64.b64encode(png).decode()}'><figcaption>{html.escape(caption)}</figcaption></figure>"
        for stem, (caption, png) in figs.items())
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in data.notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>searchgym report: exploration breadth by training method</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1180px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }}
h1 {{ font-size: 1.6em; margin-bottom: 0.2em; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }}
.sub {{ color: #666; margin-top: 0; }}
table {{ border-collapse: collapse; font-size: 0.92em; }}
th, td {{ border: 1px solid #ddd; padding: 0.35em 0.7em; text-align: right; white-space: nowrap; }}
th {{ background: #f4f4f4; }} td:first-child, th:first-child {{ text-align: left; }}
.dot {{ display: inline-block; width: 0.8em; height: 0.8em; border-radius: 50%; margin-right: 0.4em; }}
figure {{ margin: 1.5em 0; }} figure img {{ max-width: 100%; }} figcaption {{ color: #555; font-size: 0.9em; }}
.verdict li {{ margin: 0.3em 0; }} .small {{ color: #666; font-size: 0.88em; }}
</style></head>
<body data-figures-expected="{len(figs)}">
<h1>Which training method preserves exploration breadth?</h1>
<p class="sub">{len(data.arms)} arms · {data.questions} held-out questions · n = {data.n} samples per question ·
generated {time.strftime('%Y-%m-%d %H:%M')}</p>
<h2>Verdict</h2>
<ul class="verdict">{''.join(f'<li>{_md_inline(f)}</li>' for f in findings)}</ul>
<p class="small">Rules: a difference is claimed only where the 95% CIs do not overlap; the reference is the
untrained base model where the study has one. A "no change" gives the smallest difference the rule would
detect in 80% of studies of this size, estimated from this study's own spread (docs/calibration.md).</p>
<h2>Summary</h2>
<table>{table}</table>
<p class="small">Cells: estimate [95% CI]; {html.escape('; '.join(methods))}. success@1 = mean success of single
samples; pass@{data.n} = unbiased pass@k at k = n; strategy entropy is Miller–Madow over n samples per question;
unique docs = distinct documents retrieved over the n samples; query breadth = diversity of queries across
samples.</p>
<h2>Figures</h2>
{figure_html}
<h2>Inputs and notes</h2>
<ul class="small">{''.join(f'<li>{html.escape(s)}</li>' for s in sources)}{notes}</ul>
<script>
window.addEventListener("load", function () {{
  var ok = Array.prototype.filter.call(document.images, function (i) {{ return i.complete && i.naturalWidth > 0; }});
  document.body.setAttribute("data-figures-loaded", String(ok.length));
}});
</script>
</body></html>
"""


def render_markdown(data: StudyData, findings: list[str], figs: dict[str, tuple[str, bytes]],
                    sources: list[str]) -> str:
    header, rows = _table_rows(data)
    lines = ["# Which training method preserves exploration breadth?", "",
             f"{len(data.arms)} arms · {data.questions} held-out questions · n = {data.n} samples per question", "",
             "## Verdict", ""] + [f"- {f}" for f in findings] + [
             "", "## Summary (estimate [95% CI])", "", "| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "## Figures", ""]
    for stem, (caption, _) in figs.items():
        lines += [f"![{caption}](report_{stem}.png)", "", f"*{caption}*", ""]
    lines += ["## Inputs and notes", ""] + [f"- {s}" for s in sources] + [f"- {n}" for n in data.notes]
    return "\n".join(lines) + "\n"


def _finite(values: dict[str, float] | None) -> dict[str, float | None] | None:
    """A flat meter dict for JSON: NaN becomes null."""
    if values is None:
        return None
    return {k: (float(v) if math.isfinite(v) else None) for k, v in values.items()}


def to_json(data: StudyData, findings: list[str]) -> dict:
    def est(e: Estimate) -> dict:
        return {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                for k, v in (("value", e.value), ("lo", e.lo), ("hi", e.hi), ("method", e.method))}

    return {"n": data.n, "questions": data.questions, "notes": data.notes, "verdict": findings,
            "arms": {a.name: {"seeds": a.seeds, "runs": [str(r.path) for r in a.runs],
                              "table": {k: est(e) for k, e in a.table.items()},
                              "passk": {str(k): est(e) for k, e in a.passk.items()},
                              "strategy_share": a.shares, "demo_strategy_share": a.demo_share,
                              "prior_strategy_share": a.prior_share,
                              "solvable_overlap_with_base": a.overlap,
                              "pass_hat_k": {str(k): est(e) for k, e in a.passhat.items()},
                              "meters": {k: est(e) for k, e in a.extra.items()},
                              "vs_base": _finite(a.vs_base), "entropy_reward_fit": _finite(a.fit),
                              "entropy_reward_run_fits": [_finite(f) for f in a.run_fits]} for a in data.arms}}


def report_command(paths: list[str | Path], out: str | Path | None = None) -> Path:
    """Write report.html, report.md, report.json and the PNGs into ``out`` (default: the single input
    folder, else ./report); returns the path of report.html."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("give a study folder or one or more run folders")
    for p in paths:
        if not p.is_dir():
            raise ValueError(f"{p} is not a folder; pass a study folder or run folders")
    out = Path(out) if out else (paths[0] if len(paths) == 1 else Path("report"))
    out.mkdir(parents=True, exist_ok=True)
    runs = discover_runs(paths)
    data = summarise(runs)
    findings = verdict(data)
    figs = figures(data)
    sources = [f"{a.name}: " + ", ".join(str(r.path) for r in a.runs) for a in data.arms]
    for stem, (_, png) in figs.items():
        atomic_write(out / f"report_{stem}.png", png)
    atomic_write(out / "report.md", render_markdown(data, findings, figs, sources).encode("utf-8"))
    atomic_write(out / "report.json", json.dumps(to_json(data, findings), indent=2).encode("utf-8"))
    page = out / "report.html"
    atomic_write(page, render_html(data, findings, figs, sources).encode("utf-8"))
    return page
