"""The study report's figures, drawn with matplotlib (Agg) into PNG bytes.

One colour per arm everywhere (the base model grey), so a reader can follow an arm across figures:
meters over training steps, pass@k curves with the solvable-set overlap, and strategy shares next to
the demonstration mix. Each function returns None when there is nothing to draw.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

from searchgym.report_data import BASE, TRAINING_PANELS, StudyData  # noqa: E402

# Fixed colours for the study's arms so reports of different studies match; other arms take the rest.
ARM_COLOURS = {BASE: "#7f7f7f", "sft-narrow": "#ff7f0e", "sft-diverse": "#2ca02c", "grpo": "#d62728",
               "sft-diverse-grpo": "#9467bd", "grpo-kl": "#1f77b4"}
SPARE = ("#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939", "#843c39")
STRATEGY_COLOURS = ("#66c2a5", "#fc8d62", "#8da0cb", "#e78ac3", "#a6d854", "#ffd92f", "#e5c494", "#b3b3b3")


def arm_colours(names: list[str]) -> dict[str, str]:
    """Each arm's colour: the fixed one if it has one, else the next spare.

    >>> arm_colours(["base", "mine", "grpo"])
    {'base': '#7f7f7f', 'mine': '#8c564b', 'grpo': '#d62728'}
    """
    spare = iter(SPARE * (1 + len(names) // len(SPARE)))
    return {n: ARM_COLOURS.get(n) or next(spare) for n in names}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def training_figure(data: StudyData) -> bytes | None:
    """Meters over training steps per arm: mean over seeds, min–max band."""
    trained = [a for a in data.arms if a.curves]
    if not trained:
        return None
    colours = arm_colours([a.name for a in data.arms])
    cols = 3
    rows = -(-(len(TRAINING_PANELS) + 1) // cols)  # one spare cell holds the legend
    fig, axes = plt.subplots(rows, cols, figsize=(13, 3.6 * rows), squeeze=False)
    cells = list(axes.flat)
    for ax, (title, ylabel, _) in zip(cells, TRAINING_PANELS):
        drawn = False
        for arm in trained:
            points = arm.curves.get(title)
            if not points:
                continue
            x, mean, lo, hi = zip(*points)
            ax.plot(x, mean, color=colours[arm.name], lw=1.8, label=f"{arm.name} ({len(arm.runs)} seeds)")
            if len(arm.runs) > 1:
                ax.fill_between(x, lo, hi, color=colours[arm.name], alpha=0.18, lw=0)
            drawn = True
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("training step (GRPO steps follow SFT steps)", fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.ticklabel_format(axis="y", useOffset=False)  # flat curves: plain numbers, not "1e-5 + 10.79"
        ax.grid(alpha=0.3)
        if not drawn:
            ax.text(0.5, 0.5, "not logged\nby any run", ha="center", va="center", transform=ax.transAxes,
                    color="#888888")
    handles, labels = [], []
    for ax in cells:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    legend_cell = cells[len(TRAINING_PANELS)]
    legend_cell.axis("off")
    legend_cell.legend(handles, labels, loc="center", frameon=False, title="arm (line: mean over seeds;\n"
                       "band: min–max)", fontsize=10)
    for ax in cells[len(TRAINING_PANELS) + 1:]:
        ax.axis("off")
    fig.suptitle("Meters over training", fontsize=12)
    fig.tight_layout()
    return _png(fig)


def passk_figure(data: StudyData) -> bytes | None:
    """pass@k on a log-k axis with 95% bootstrap CIs, and each arm's solvable-set overlap with the base."""
    colours = arm_colours([a.name for a in data.arms])
    with_overlap = [a for a in data.arms if a.overlap]
    fig, axes = plt.subplots(1, 2 if with_overlap else 1, figsize=(12 if with_overlap else 6.5, 4.2),
                             squeeze=False, gridspec_kw={"width_ratios": [3, 2]} if with_overlap else None)
    ax = axes[0][0]
    for arm in data.arms:
        ks = sorted(arm.passk)
        mean = [arm.passk[k].value for k in ks]
        ax.plot(ks, mean, marker="o", ms=4, color=colours[arm.name], lw=1.8, label=arm.name,
                ls="--" if arm.name == BASE else "-")
        ax.fill_between(ks, [arm.passk[k].lo for k in ks], [arm.passk[k].hi for k in ks],
                        color=colours[arm.name], alpha=0.15, lw=0)
    ax.set_xscale("log", base=2)
    ks = sorted(data.arms[0].passk)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k (samples per question, log scale)")
    ax.set_ylabel("pass@k (unbiased estimator)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"pass@k on {data.questions} held-out questions (n = {data.n}; band: 95% CI)", fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=9)
    if with_overlap:
        ax = axes[0][1]
        names = [a.name for a in with_overlap]
        only = [a.overlap["only_a"] for a in with_overlap]
        both = [a.overlap["both"] for a in with_overlap]
        base_only = [a.overlap["only_b"] for a in with_overlap]
        y = range(len(names))
        ax.barh(y, both, color="#bbbbbb", label="solved by both")
        ax.barh(y, only, left=both, color=[colours[n] for n in names], label="only this arm")
        ax.barh(y, base_only, left=[b + o for b, o in zip(both, only)], color="white", edgecolor="#555555",
                hatch="//", label="only the base model")
        ax.set_yticks(list(y), names)
        ax.invert_yaxis()
        ax.set_xlim(0, max(data.questions, 1))
        ax.set_xlabel(f"questions solved at least once in n = {data.n} (mean over seed pairs)")
        ax.set_title("Solvable-set overlap with the base model", fontsize=11)
        ax.legend(frameon=False, fontsize=8, loc="lower right")
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return _png(fig)


def strategy_figure(data: StudyData) -> bytes | None:
    """Strategy share per arm (stacked bars), next to the demonstration mixes the runs recorded."""
    bars = [(a.name, a.shares) for a in data.arms if a.shares]
    demos = []  # reference mixes: what each arm was pretrained on (prior lab) and fine-tuned on (demos)
    priors = [a for a in data.arms if a.prior_share]
    for a in priors:
        if all(a.prior_share != d for _, d in demos):
            label = "prior" if all(p.prior_share == a.prior_share for p in priors) else f"prior of\n{a.name}"
            demos.append((label, a.prior_share))
    for a in data.arms:
        if a.demo_share and all(a.demo_share != d for _, d in demos):
            demos.append((f"demos of\n{a.name}", a.demo_share))
    if not bars or all(set(s) <= {"other"} for _, s in bars):
        return None
    rows = bars + demos
    strategies = sorted({s for _, share in rows for s in share}, key=lambda s: (s == "other", s))
    colours = {s: ("#d9d9d9" if s == "other" else STRATEGY_COLOURS[i % len(STRATEGY_COLOURS)])
               for i, s in enumerate(strategies)}
    arm_colour = arm_colours([a.name for a in data.arms])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.25 * len(rows) + 2.5), 4.4))
    x = list(range(len(bars))) + [len(bars) + 0.5 + i for i in range(len(demos))]
    bottom = [0.0] * len(rows)
    for s in strategies:
        heights = [share.get(s, 0.0) for _, share in rows]
        ax.bar(x, heights, bottom=bottom, color=colours[s], edgecolor="white", width=0.75, label=s)
        for xi, b, h in zip(x, bottom, heights):
            if h >= 0.08:
                ax.text(xi, b + h / 2, f"{h:.0%}", ha="center", va="center", fontsize=8)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_xticks(x, [name for name, _ in rows], fontsize=9)
    for tick, (name, _) in zip(ax.get_xticklabels(), rows):
        tick.set_color(arm_colour.get(name, "#333333"))
    if demos:
        ax.axvline(len(bars) - 0.25, color="#999999", lw=1, ls=":")
    ax.set_ylabel(f"share of samples (n = {data.n} per question, seeds pooled)")
    ax.set_ylim(0, 1)
    ax.set_title("Strategy share per arm" + (" vs the prior / demonstration mix" if demos else ""), fontsize=11)
    ax.legend(title="strategy", frameon=False, fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return _png(fig)


def figures(data: StudyData) -> dict[str, tuple[str, bytes]]:
    """Every figure that has data: {file stem: (caption, PNG bytes)}."""
    out = {}
    for stem, caption, make in (
        ("training", "Meters over training steps per arm (mean over seeds, band min–max).", training_figure),
        ("passk", "pass@k with 95% bootstrap CIs over questions, and the solvable-set overlap with the base "
                  "model.", passk_figure),
        ("strategy", "Strategy share per arm against the demonstration mix.", strategy_figure),
    ):
        png = make(data)
        if png is not None:
            out[stem] = (caption, png)
    return out


def fmt(value: float, digits: int = 3) -> str:
    """A number for a table; '–' for a meter that is not available.

    >>> fmt(0.12345), fmt(float("nan"))
    ('0.123', '–')
    """
    return f"{value:.{digits}f}" if value is not None and math.isfinite(value) else "–"
