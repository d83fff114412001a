"""The report's "pass@k by stratum" section: per-stratum pass@k curves of every arm and the k where the base
catches up with each arm, by hop count, question kind and evidence order (`searchgym.meters.strata`).

Trajectories carry each question's id and hop count, not its kind: the kind and the evidence order come from
the tasks themselves, rebuilt from the world the runs were evaluated in (``env.id`` and ``env.kwargs`` of a
run's ``recipe.toml``, or the settings of a ``searchgym eval`` folder's ``eval.json``; worlds are
deterministic functions of their arguments). A rebuilt task is used only when its question text is the
trajectory's, so a world rebuilt with other arguments can never mislabel a question; where it cannot be
rebuilt or does not match, only the hop strata are shown, with a note. The section appears when some axis
splits the shared questions into two or more strata.
"""

from __future__ import annotations

import html
import math
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from searchgym.meters.passk import k_ladder
from searchgym.meters.strata import (
    crossing_strata,
    crossing_text,
    group_strata,
    passk_strata,
    task_strata,
)
from searchgym.report.data import BASE, StudyData, fmt
from searchgym.report.discover import RunData

CAPTION = ("pass@k by stratum (hop count, question kind, evidence order): one panel per stratum, every arm on the "
           "stratum's questions, band = 95% bootstrap CI over them; dotted: the k where the base catches up.")


@dataclass
class StrataData:
    """Everything the section shows: the strata of the shared questions and, per arm, the flat keys of
    `passk_strata` (curves) and, against the base, of `crossing_strata`."""

    n: int
    questions: int  # shared questions (the "all questions" row)
    strata: dict[str, list[str]]  # "<axis>=<value>" -> task ids among the shared questions
    curves: dict[str, dict[str, float]]  # arm -> passk/<stratum>/pass@k (+ _lo, _hi, questions)
    crossings: dict[str, dict[str, float]]  # non-base arm -> passk/<stratum>/crossing_* (empty without a base)
    pooled: dict[str, dict[str, float]]  # non-base arm -> its pooled vs_base keys (the "all questions" row)
    notes: list[str] = field(default_factory=list)


# ---- task metadata: the strata of every question ----------------------------------------------------------

def _env_of(folder: Path) -> tuple[str, dict] | None:
    """The env id and kwargs a run folder was evaluated in: its recipe (a run's ``baseline/`` uses its
    parent's), else a ``searchgym eval`` folder's eval.json settings."""
    import json

    for candidate in (folder, folder.parent):
        try:
            env = tomllib.loads((candidate / "recipe.toml").read_text(encoding="utf-8")).get("env", {})
        except (OSError, tomllib.TOMLDecodeError):
            continue
        if isinstance(env, dict) and isinstance(env.get("id"), str):
            return env["id"], dict(env.get("kwargs") or {})
    try:
        settings = json.loads((folder / "eval.json").read_text(encoding="utf-8")).get("settings", {})
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(settings, dict) and isinstance(settings.get("env_id"), str):
        return settings["env_id"], dict(settings.get("env_kwargs") or {})
    return None


def _world_tasks(env_id: str, kwargs: dict) -> dict:
    """Every task of the world behind ``env_id`` with ``kwargs``, by id (empty for an unknown env). The
    registered kwargs are merged under the given ones the way ``gymnasium.make`` merges them."""
    import gymnasium

    import searchgym.envs  # noqa: F401  (registers every env id, plug-ins included)
    from searchgym.envs.search_env import load_world

    spec = gymnasium.registry.get(env_id)
    if spec is None:
        return {}
    merged = {**(spec.kwargs or {}), **kwargs}
    world = load_world(merged.get("world", "synthetic"), merged.get("world_kwargs"))
    tasks = {}
    for split in ("train", "test", "validation", "dev"):
        try:
            tasks.update({t.id: t for t in world.tasks(split)})
        except (ValueError, KeyError):  # a world without this split
            continue
    return tasks


def task_metadata(runs: list[RunData], questions: list[str]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """``{task_id: {"hops", "kind", "order"}}`` for ``questions`` and notes on what could not be found: hops
    from the trajectories, kind and order from the world rebuilt from the runs' env (`task_strata`),
    kept only when every question is found there with the same question text."""
    text, hops = {}, {}
    for r in runs:
        for t in r.trajectories:
            text.setdefault(t.task_id, t.question)
            hops.setdefault(t.task_id, str(t.difficulty))
    strata = {q: {"hops": hops[q]} for q in questions if q in hops}
    envs = {repr(env): env for env in (_env_of(r.path) for r in runs) if env is not None}
    tasks, notes = {}, []
    for env_id, kwargs in envs.values():
        try:
            tasks.update(_world_tasks(env_id, kwargs))
        except Exception as e:  # a plug-in world's constructor may raise anything: the hop strata remain
            notes.append(f"pass@k by stratum: the world of {env_id} could not be rebuilt ({type(e).__name__}: "
                         f"{e}); only hop strata are shown")
    matched = {q: tasks[q] for q in questions if q in tasks and tasks[q].question == text.get(q)}
    if matched and len(matched) == len(questions):
        for q, task in matched.items():
            strata[q] = task_strata(task) | {"hops": strata[q]["hops"]}  # the trajectories' own hops
    elif envs and not tasks and not notes:
        notes.append(f"pass@k by stratum: no world found for the runs' env ({', '.join(sorted({e for e, _ in envs.values()}))}"
                     "); only hop strata are shown")
    elif envs and not notes:
        notes.append(f"pass@k by stratum: {len(questions) - len(matched)} of {len(questions)} questions were not "
                     "found with the same text in the world rebuilt from the runs' env; only hop strata are shown")
    return strata, notes


# ---- the numbers --------------------------------------------------------------------------------------------

def arm_counts(runs: list[RunData], questions: list[str], n: int) -> list[dict[str, int]]:
    """Each run's correct count among the first n samples of each question (the rule of the pooled curve)."""
    out = []
    for r in runs:
        groups = defaultdict(list)
        for t in r.trajectories:
            groups[t.task_id].append(t)
        out.append({q: sum(t.correct for t in sorted(groups[q], key=lambda t: t.sample)[:n]) for q in questions})
    return out


def strata_data(data: StudyData, n_boot: int = 1000) -> StrataData | None:
    """The section's numbers, or None when no axis splits the shared questions into two or more strata."""
    questions = data.arms[0].questions if data.arms else []
    if not questions:
        return None
    runs = [r for a in data.arms for r in a.runs]
    meta, notes = task_metadata(runs, questions)
    strata = group_strata(meta, questions, min_values=2)
    if not strata:
        return None
    counts = {a.name: arm_counts(a.runs, questions, data.n) for a in data.arms}
    curves = {a.name: passk_strata(counts[a.name], data.n, meta, n_boot=n_boot, min_values=2) for a in data.arms}
    crossings, pooled = {}, {}
    if BASE in counts:
        for a in data.arms:
            if a.name != BASE:
                crossings[a.name] = crossing_strata(counts[BASE], counts[a.name], data.n, meta, n_boot=n_boot,
                                                    min_values=2)
                pooled[a.name] = a.vs_base or {}
    return StrataData(data.n, len(questions), strata, curves, crossings, pooled, notes)


def crossing_table(sd: StrataData) -> tuple[list[str], list[list[str]]]:
    """Rows: all questions, then each stratum; columns: its size and, per arm, where the base catches up."""
    arms = list(sd.crossings)
    header = ["stratum", "questions"] + [f"{a} vs base" for a in arms]
    rows = [["all questions", str(sd.questions)] + [crossing_text(sd.pooled[a]) for a in arms]]
    rows += [[s, str(len(qs))] + [crossing_text(sd.crossings[a], s) for a in arms] for s, qs in sd.strata.items()]
    return header, rows


def passk_table(sd: StrataData) -> tuple[list[str], list[list[str]]]:
    """pass@1 and pass@n of every arm per stratum (the two ends of each panel's curves)."""
    arms = list(sd.curves)
    header = ["stratum"] + [f"{a} pass@{k}" for a in arms for k in (1, sd.n)]
    return header, [[s] + [fmt(sd.curves[a].get(f"passk/{s}/pass@{k}", math.nan)) for a in arms for k in (1, sd.n)]
                    for s in sd.strata]


# ---- the figure --------------------------------------------------------------------------------------------

def strata_figure(sd: StrataData) -> bytes:
    """One panel per stratum: each arm's pass@k on a log-k axis with its 95% CI band (the base dashed), and a
    dotted line at the k where the base catches up with an arm that led at k = 1."""
    import matplotlib.pyplot as plt

    from searchgym.report.figures import _png, arm_colours

    colours = arm_colours(list(sd.curves))
    ks = k_ladder(sd.n)
    cols = min(3, len(sd.strata))
    rows = -(-len(sd.strata) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.5 * rows), squeeze=False)
    for ax, (stratum, qs) in zip(axes.flat, sd.strata.items()):
        for arm, flat in sd.curves.items():
            def get(suffix: str, flat=flat, stratum=stratum) -> list[float]:
                return [flat.get(f"passk/{stratum}/pass@{k}{suffix}", math.nan) for k in ks]

            ax.plot(ks, get(""), marker="o", ms=3, lw=1.6, color=colours[arm], ls="--" if arm == BASE else "-",
                    label=arm)
            ax.fill_between(ks, get("_lo"), get("_hi"), color=colours[arm], alpha=0.1, lw=0)
            k = sd.crossings.get(arm, {}).get(f"passk/{stratum}/crossing_k", math.nan)
            if math.isfinite(k):
                ax.axvline(k, color=colours[arm], ls=":", lw=1.3)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks], fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{stratum.replace('=', ' = ')} ({len(qs)} question{'s' if len(qs) != 1 else ''})", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    for ax in axes[:, 0]:
        ax.set_ylabel("pass@k (unbiased)", fontsize=9)
    for ax in axes.flat[max(0, len(sd.strata) - cols):len(sd.strata)]:  # the lowest panel of each column
        ax.set_xlabel("k (log scale)", fontsize=9)
    handles, names = axes.flat[0].get_legend_handles_labels()
    title = f"arm (n = {sd.n}; band: 95% CI;\ndotted: the base catches up)"
    spare = list(axes.flat[len(sd.strata):])
    for ax in spare:
        ax.axis("off")
    if spare:  # the legend fills an empty cell
        spare[0].legend(handles, names, loc="center", frameon=False, fontsize=9, title=title)
        fig.tight_layout()
    else:
        fig.legend(handles, names, loc="upper center", ncol=min(6, len(names)), frameon=False, fontsize=9,
                   title=title.replace("\n", " "))
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.7 / (3.5 * rows)))  # room for the legend, ~0.7 in
    return _png(fig)


# ---- the page's section and report.json --------------------------------------------------------------------

INTRO = ("Questions split by hop count, question kind and evidence order (sequential: a later hop searches for "
         "what an earlier hop found; parallel: every lookup is named by the question; single: one lookup). Each "
         "curve is the unbiased pass@k averaged over the stratum's questions (seeds averaged per question); the "
         "crossing is the smallest k at which the base's pass@k reaches the arm's, given the arm leads at k = 1, "
         "with the share of bootstrap resamples of the stratum's questions that cross. Small strata have wide CIs.")


def _table_html(header: list[str], rows: list[list[str]]) -> str:
    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>\n" + "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")


def _table_md(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
            + ["| " + " | ".join(r) + " |" for r in rows])


def strata_html(sd: StrataData, figure_html: str) -> str:
    crossings = (f"<h3>Where the base catches up, per stratum</h3>\n{_table_html(*crossing_table(sd))}"
                 if sd.crossings else "")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in sd.notes)
    return f"""<h2 id="strata">pass@k by stratum</h2>
<p class="small">{html.escape(INTRO)}</p>
{figure_html}
{crossings}
<h3>pass@1 and pass@{sd.n} per stratum</h3>
{_table_html(*passk_table(sd))}
{f'<ul class="small">{notes}</ul>' if notes else ''}
"""


def strata_markdown(sd: StrataData) -> list[str]:
    lines = ["## pass@k by stratum", "", INTRO, "", f"![{CAPTION}](report_strata.png)", "", f"*{CAPTION}*", ""]
    if sd.crossings:
        lines += ["### Where the base catches up, per stratum", ""] + _table_md(*crossing_table(sd)) + [""]
    lines += [f"### pass@1 and pass@{sd.n} per stratum", ""] + _table_md(*passk_table(sd)) + [""]
    return lines + [f"- {n}" for n in sd.notes] + ([""] if sd.notes else [])


def to_json(sd: StrataData) -> dict:
    """The section's numbers for report.json (NaN as null)."""
    def clean(flat: dict[str, float]) -> dict[str, float | None]:
        return {k: (v if math.isfinite(v) else None) for k, v in flat.items()}

    return {"n": sd.n, "strata": sd.strata, "curves": {a: clean(f) for a, f in sd.curves.items()},
            "crossings": {a: clean(f) for a, f in sd.crossings.items()}, "notes": sd.notes}
