"""The report figures' shared look: one colour per arm (the base model grey) in every figure, line styles and
markers that keep two arms on the same values apart, and PNG output (matplotlib, headless Agg)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

from searchgym.report.discover import BASE  # noqa: E402

# Fixed colours for the study's arms so reports of different studies match; other arms take the rest.
ARM_COLOURS = {BASE: "#7f7f7f", "sft-narrow": "#ff7f0e", "sft-diverse": "#2ca02c", "grpo": "#d62728",
               "sft-diverse-grpo": "#9467bd", "grpo-kl": "#1f77b4"}
SPARE = ("#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939", "#843c39")
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "x")
STRATEGY_COLOURS = ("#66c2a5", "#fc8d62", "#8da0cb", "#e78ac3", "#a6d854", "#ffd92f", "#e5c494", "#b3b3b3")


def arm_colours(names: list[str]) -> dict[str, str]:
    """Each arm's colour: the fixed one if it has one, else the next spare.

    >>> arm_colours(["base", "mine", "grpo"])
    {'base': '#7f7f7f', 'mine': '#8c564b', 'grpo': '#d62728'}
    """
    spare = iter(SPARE * (1 + len(names) // len(SPARE)))
    return {n: ARM_COLOURS.get(n) or next(spare) for n in names}


def png(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed (reports draw many, pyplot would keep them all)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
