"""`searchgym report`: one readable page per study — figures, a table with CIs, and a verdict from rules.

Takes a study folder or several run folders and runs the report's steps in order: find the runs
(`searchgym.report.discover`), meter every run at one fixed n on the shared questions
(`searchgym.report.data`), derive the verdict (`searchgym.report.rules`), draw the figures
(`searchgym.report.figures`), then write ``report.html`` (self-contained: PNGs embedded as base64), the
PNGs, ``report.md`` and ``report.json`` (this module). A study with a dose ladder gets one more section,
"Dose and distance" (`searchgym.report.dose`), questions of several hop counts, kinds or evidence orders
one more, "pass@k by stratum" (`searchgym.report.strata`), and arms that trained every weight one more,
"Where each arm wrote" (`searchgym.report.updates`).
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from pathlib import Path

from searchgym.report.data import TABLE_METRICS, Estimate, StudyData, ci_text, summarise
from searchgym.report.discover import discover_runs
from searchgym.report.dose import DoseData, dose_data, dose_findings, dose_table, rung_table, slope_table
from searchgym.report.dose import to_json as dose_json
from searchgym.report.figures import DOSE_CAPTION, arm_colours, dose_figure, figures
from searchgym.report.importers import FORMATS
from searchgym.report.rules import verdict
from searchgym.report.strata import CAPTION as STRATA_CAPTION
from searchgym.report.strata import StrataData, strata_data, strata_figure, strata_html, strata_markdown
from searchgym.report.strata import to_json as strata_json
from searchgym.report.updates import REPORT_SETTINGS, arm_update_table
from searchgym.util.files import atomic_write


def _table_rows(data: StudyData) -> tuple[list[str], list[list[str]]]:
    header = ["arm", "seeds"] + [label.replace("pass@n", f"pass@{data.n}") for label, _ in TABLE_METRICS]
    rows = [[a.name, str(len(a.runs))] + [ci_text(a.table[label]) for label, _ in TABLE_METRICS] for a in data.arms]
    return header, rows


def _md_inline(text: str) -> str:
    """**bold** → <strong>, everything else escaped."""
    parts = html.escape(text).split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def _figure_html(stem: str, caption: str, png: bytes) -> str:
    return (f"<figure id='fig-{stem}'><img alt='{html.escape(caption)}' src='data:image/png;base64,"
            f"{base64.b64encode(png).decode()}'><figcaption>{html.escape(caption)}</figcaption></figure>")


def _plain_table(header: list[str], rows: list[list[str]]) -> str:
    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>\n" + "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")


def _dose_html(dose: DoseData, png: bytes) -> str:
    """The "Dose and distance" section: its sentences, the figure, the matched-KL table and the slopes."""
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in dose.notes)
    return f"""<h2>Dose and distance</h2>
<p class="small">Every checkpoint of the dose ladder was evaluated on the same {len(dose.questions)} questions at
n = {dose.n}. Arms are compared at matched KL: κ is the largest per-token KL to the base that every seed of both
arms reaches; each seed's meter is interpolated at κ along its own path from the base, and the difference gets a
95% percentile bootstrap CI (questions resampled jointly for both arms, seeds within each arm). A difference is
claimed only where that CI excludes 0; otherwise the CI bounds it.</p>
<ul class="verdict">{''.join(f'<li>{_md_inline(f)}</li>' for f in dose_findings(dose))}</ul>
{_figure_html("dose", DOSE_CAPTION, png)}
<h3>Matched KL</h3>
{_plain_table(*dose_table(dose))}
<h3>Change per nat of KL (least squares over every rung and seed, base included)</h3>
{_plain_table(*slope_table(dose))}
<h3>Distance from the base, per arm and rung (per-token KL on each rung's own samples, nats)</h3>
{_plain_table(*rung_table(dose))}
{f'<ul class="small">{notes}</ul>' if notes else ''}
"""


UPDATES_NOTE = ("Full-parameter runs (model.finetune = \"full\") against their base, at each run's last step: the share "
                "of parameters moved by more than 1e-5 after rounding to bfloat16 (Mukherjee et al. 2025's setting) and "
                "by more than 1e-3, and how much two seeds' > 1e-3 sets overlap (|A ∩ B| / |A|) against a random set of "
                "the same size. Mean [min–max] over runs or ordered seed pairs. Adam moves every weight by about the "
                "learning rate a step, so compare arms at matched KL: searchgym updates RUN/dose/<rung> "
                "(docs/where-rl-writes.md).")
assert REPORT_SETTINGS == (("bfloat16", 1e-5), ("float32", 1e-3)), "UPDATES_NOTE describes these settings"


def _updates_html(updates: tuple[list[str], list[list[str]]]) -> str:
    return f"<h2>Where each arm wrote</h2>\n<p class='small'>{html.escape(UPDATES_NOTE)}</p>\n{_plain_table(*updates)}\n"


def render_html(data: StudyData, findings: list[str], figs: dict[str, tuple[str, bytes]], sources: list[str],
                dose: tuple[DoseData, bytes] | None = None, strata: tuple[StrataData, bytes] | None = None,
                updates: tuple[list[str], list[list[str]]] | None = None) -> str:
    colours = arm_colours([a.name for a in data.arms])
    header, rows = _table_rows(data)
    methods = sorted({e.method for a in data.arms for e in a.table.values() if e.method})
    table = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>\n" + "\n".join(
        "<tr>" + f"<td><span class='dot' style='background:{colours[r[0]]}'></span>{html.escape(r[0])}</td>"
        + "".join(f"<td>{html.escape(c)}</td>" for c in r[1:]) + "</tr>" for r in rows)
    figure_html = "\n".join(_figure_html(stem, caption, png) for stem, (caption, png) in figs.items())
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
<body data-figures-expected="{len(figs) + (dose is not None) + (strata is not None)}">
<h1>Which training method preserves exploration breadth?</h1>
<p class="sub">{len(data.arms)} arms · {data.questions} held-out questions · n = {data.n} samples per question ·
generated {time.strftime('%Y-%m-%d %H:%M')}</p>
<h2>Verdict</h2>
<ul class="verdict">{''.join(f'<li>{_md_inline(f)}</li>' for f in findings)}</ul>
<p class="small">Rules: two arms are compared on the questions they share by the paired difference of their
per-question values (each arm: mean over its seeds); a difference is claimed only where its 95% CI (two-level
bootstrap: each arm's seeds, then the questions, one draw shared by both arms) excludes 0. Where per-question
values are missing, only where the two arms' 95% CIs do not overlap. The reference is the untrained base model
where the study has one. A "no change" gives the smallest difference the rule used would detect in 80% of
studies of this size, estimated from this study's own spread (docs/calibration.md).</p>
<h2>Summary</h2>
<table>{table}</table>
<p class="small">Cells: estimate [95% CI]; {html.escape('; '.join(methods))}. success@1 = mean success of single
samples; pass@{data.n} = unbiased pass@k at k = n; strategy entropy is the jackknife estimate over n samples per question (CI: two-level bootstrap over seeds, then questions);
unique docs = distinct documents retrieved over the n samples; query breadth = diversity of queries across
samples.</p>
<h2>Figures</h2>
{figure_html}
{strata_html(strata[0], _figure_html("strata", STRATA_CAPTION, strata[1])) if strata else ''}
{_dose_html(*dose) if dose else ''}{_updates_html(updates) if updates else ''}<h2>Inputs and notes</h2>
<ul class="small">{''.join(f'<li>{html.escape(s)}</li>' for s in sources)}{notes}</ul>
<script>
window.addEventListener("load", function () {{
  var ok = Array.prototype.filter.call(document.images, function (i) {{ return i.complete && i.naturalWidth > 0; }});
  document.body.setAttribute("data-figures-loaded", String(ok.length));
}});
</script>
</body></html>
"""


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
            + ["| " + " | ".join(r) + " |" for r in rows])


def _dose_markdown(dose: DoseData) -> list[str]:
    return (["## Dose and distance", "", f"![{DOSE_CAPTION}](report_dose.png)", "", f"*{DOSE_CAPTION}*", "",
             "Matched KL: κ = the largest per-token KL to the base every seed of both arms reaches; each seed's "
             "meter interpolated at κ along its path; 95% bootstrap CI over questions (paired) and seeds. A "
             "difference is claimed only where the CI excludes 0.", ""]
            + [f"- {f}" for f in dose_findings(dose)] + ["", "### Matched KL", ""] + _md_table(*dose_table(dose))
            + ["", "### Change per nat of KL", ""] + _md_table(*slope_table(dose))
            + ["", "### Distance from the base, per arm and rung (per-token KL, nats)", ""] + _md_table(*rung_table(dose))
            + [""]
            + [f"- {n}" for n in dose.notes] + ([""] if dose.notes else []))


def render_markdown(data: StudyData, findings: list[str], figs: dict[str, tuple[str, bytes]],
                    sources: list[str], dose: DoseData | None = None, strata: StrataData | None = None,
                    updates: tuple[list[str], list[list[str]]] | None = None) -> str:
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
    lines += strata_markdown(strata) if strata else []
    lines += _dose_markdown(dose) if dose else []
    lines += ["## Where each arm wrote", "", UPDATES_NOTE, ""] + _md_table(*updates) + [""] if updates else []
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


def report_command(paths: list[str | Path], out: str | Path | None = None, fmt: str = "auto",
                   fields: dict[str, str] | None = None) -> Path:
    """Write report.html, report.md, report.json and the PNGs into ``out`` (default: the single input
    folder, else ./report); returns the path of report.html. Rollout files are arms too (named by their
    stem, ``base.jsonl`` the base), read with ``fmt`` and ``fields`` (`searchgym.report.importers`)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("give a study folder or one or more run folders")
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {list(FORMATS)}, got {fmt!r}")
    for p in paths:
        if not p.is_dir() and not (p.is_file() and p.suffix == ".jsonl"):
            raise ValueError(f"{p} is neither a folder nor a .jsonl file; pass a study folder, run folders or "
                             "rollout files")
    out = Path(out) if out else (paths[0] if len(paths) == 1 and paths[0].is_dir() else Path("report"))
    runs = discover_runs(paths, fmt, fields)  # reads (and checks) every input before anything is written
    out.mkdir(parents=True, exist_ok=True)
    data = summarise(runs)
    data.notes += [f"{r.arm}: {note}" for r in runs for note in r.notes]  # imported files: meters left out
    findings = verdict(data)
    figs = figures(data)
    # the dose ladder of a study folder (None for older studies and run folders: the page is as before)
    dose = dose_data(paths[0]) if len(paths) == 1 and not (paths[0] / "trajectories.jsonl").is_file() else None
    dose_png = dose_figure(dose) if dose else None
    strata = strata_data(data)  # None unless hop count, kind or evidence order splits the questions
    strata_png = strata_figure(strata) if strata else None
    try:  # loads each full-parameter run's weights and its base; a base that cannot load is a note, not a failure
        updates = arm_update_table({a.name: [r.path for r in a.runs] for a in data.arms})
    except (ValueError, OSError) as e:  # ModelError is a ValueError
        updates = None
        data.notes.append(f"where each arm wrote: not measured ({str(e).splitlines()[0][:200]})")
    sources = [f"{a.name}: " + ", ".join(str(r.path) for r in a.runs) for a in data.arms]
    for stem, (_, png) in figs.items():
        atomic_write(out / f"report_{stem}.png", png)
    numbers = to_json(data, findings)
    if dose:
        atomic_write(out / "report_dose.png", dose_png)
        numbers["dose"] = dose_json(dose)
    if strata:
        atomic_write(out / "report_strata.png", strata_png)
        numbers["strata"] = strata_json(strata)
    if updates:
        numbers["updates"] = {"note": UPDATES_NOTE, "header": updates[0], "rows": updates[1]}
    atomic_write(out / "report.md", render_markdown(data, findings, figs, sources, dose, strata, updates).encode("utf-8"))
    atomic_write(out / "report.json", json.dumps(numbers, indent=2).encode("utf-8"))
    page = out / "report.html"
    atomic_write(page, render_html(data, findings, figs, sources, (dose, dose_png) if dose else None,
                                   (strata, strata_png) if strata else None, updates).encode("utf-8"))
    return page
