"""The report's training figure: meters over training steps per arm (`searchgym.report.data.training_curves`).

Only panels some run logged are drawn; the caption names the others and what logs them (a blank panel tells a
reader nothing, and ``make run``'s recipe logs no live probes). Per-step series are noisy (GRPO's reward of one
step is the mean of one batch), so a long series is drawn as an exponential moving average with its raw values
faint behind it; short series (probes every N steps, each already an average over many episodes) stay raw.
"""

from __future__ import annotations

import numpy as np

from searchgym.report.data import TRAINING_PANELS, StudyData
from searchgym.report.style import LINE_STYLES, MARKERS, arm_colours, plt, png

# The EMA's span in logged points: weight alpha = 2 / (span + 1) = 2/11 on the newest point, so a point's
# weight halves about every 3.5 points and a 50-step GRPO run keeps its trend over a few steps. Series with
# fewer than SMOOTH_MIN_POINTS points are not smoothed: there the EMA would mostly lag, not denoise.
EMA_SPAN = 10
SMOOTH_MIN_POINTS = 2 * EMA_SPAN
RAW_ALPHA = 0.3  # the raw values behind a smoothed line: visible, but not read as the curve


def ema(values, span: int = EMA_SPAN) -> np.ndarray:
    """Exponential moving average with weight ``2 / (span + 1)`` on the newest value, normalised by the weights
    used so far (pandas' ``ewm(span=span, adjust=True).mean()``): the first values are not pulled towards 0.

    >>> ema([1.0, 1.0, 1.0]).tolist()
    [1.0, 1.0, 1.0]
    >>> ema([0.0, 1.0], span=3).round(4).tolist()  # alpha 0.5: (1 * 1 + 0.5 * 0) / (1 + 0.5)
    [0.0, 0.6667]
    """
    x = np.asarray(values, dtype=np.float64)
    keep = 1.0 - 2.0 / (span + 1.0)
    out = np.empty_like(x)
    num = den = 0.0
    for i, v in enumerate(x):
        num, den = keep * num + v, keep * den + 1.0
        out[i] = num / den
    return out


def logged_panels(data: StudyData) -> tuple[list[tuple[str, str, tuple]], list[str]]:
    """The `TRAINING_PANELS` some arm has a curve for, and the titles of those no run logged."""
    logged = {title for arm in data.arms for title, points in arm.curves.items() if points}
    return ([p for p in TRAINING_PANELS if p[0] in logged],
            [title for title, _, _ in TRAINING_PANELS if title not in logged])


def _missing_text(missing: list[str]) -> str:
    return (f"Not drawn, as no run logged them: {', '.join(missing)} (the live meter probes log every panel; "
            "a recipe turns them on with [meters] every > 0).")


def training_caption(data: StudyData) -> str:
    """The figure's caption: what the lines, faint points and bands are, and which panels were left out."""
    text = (f"Meters over training steps per arm (mean over seeds, band min–max over seeds). A series of at least "
            f"{SMOOTH_MIN_POINTS} logged points is drawn as an exponential moving average (span {EMA_SPAN} points, "
            f"weight 2/{EMA_SPAN + 1} on the newest) with the raw values faint behind it; shorter series (probes "
            "every N steps) are drawn raw.")
    missing = logged_panels(data)[1]
    return f"{text} {_missing_text(missing)}" if missing else text


def draw_training(data: StudyData):
    """The training figure as a matplotlib Figure (None without any training log); `training_figure` saves it."""
    trained = [a for a in data.arms if a.curves]
    panels, missing = logged_panels(data)
    if not trained or not panels:
        return None
    colours = arm_colours([a.name for a in data.arms])
    cols = 2 if len(panels) <= 3 else 3  # one spare cell holds the legend
    rows = -(-(len(panels) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.6 * rows), squeeze=False)
    cells = list(axes.flat)
    smoothed = False
    for ax, (title, ylabel, _) in zip(cells, panels):
        for i, arm in enumerate(trained):
            points = arm.curves.get(title)
            if not points:
                continue
            x, mean, lo, hi = zip(*points)
            seeds = f"{len(arm.runs)} seed{'' if len(arm.runs) == 1 else 's'}"
            # Line styles and markers differ per arm: two arms on the same values must not hide each other.
            style = dict(color=colours[arm.name], ls=LINE_STYLES[i % len(LINE_STYLES)])
            marker = MARKERS[i % len(MARKERS)]
            label = f"{arm.name}, {seeds}"
            if len(points) >= SMOOTH_MIN_POINTS:
                smoothed = True
                ax.plot(x, mean, color=colours[arm.name], ls="none", marker=marker, markersize=2.5, alpha=RAW_ALPHA)
                ax.plot(x, ema(mean), lw=2.0, label=label, **style)
            else:
                ax.plot(x, mean, lw=1.8, alpha=0.9, marker=marker, markersize=3.5, label=label, **style)
            if len(arm.runs) > 1:
                ax.fill_between(x, lo, hi, color=colours[arm.name], alpha=0.18, lw=0)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("training step (GRPO steps follow SFT steps)", fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.ticklabel_format(axis="y", useOffset=False)  # flat curves: plain numbers, not "1e-5 + 10.79"
        ax.grid(alpha=0.3)
    handles, labels = [], []
    for ax in cells:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    legend_cell = cells[len(panels)]
    legend_cell.axis("off")
    how = (f"line: EMA (span {EMA_SPAN}) of the mean over seeds;\nfaint points: raw per step" if smoothed
           else "line: mean over seeds")
    if any(len(a.runs) > 1 for a in trained):
        how += ";\nband: min–max over seeds"
    legend_cell.legend(handles, labels, loc="center", frameon=False, title=f"arm ({how})", fontsize=10)
    if missing:  # said beside the figure, so the PNG alone (a README screenshot) explains the absent panels
        legend_cell.text(0.5, 0.02, _missing_text(missing).replace(" (", "\n("), ha="center", va="bottom",
                         transform=legend_cell.transAxes, fontsize=8, color="#666666", wrap=True)
    for ax in cells[len(panels) + 1:]:
        ax.axis("off")
    fig.suptitle("Meters over training", fontsize=12)
    fig.tight_layout()
    return fig


def training_figure(data: StudyData) -> bytes | None:
    """Meters over training steps per arm: mean over seeds (smoothed when long), min–max band; PNG bytes."""
    fig = draw_training(data)
    return None if fig is None else png(fig)
