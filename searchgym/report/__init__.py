"""`searchgym report`: a study's runs become one page with figures, a table with CIs and a verdict.

The modules are the report's steps, in order:

1. `discover` — find the runs (study folder or run folders) and read each run folder;
2. `data` — meter every run at one fixed n on the shared questions and summarise each arm;
3. `rules` — the verdict: plain-language findings from the summaries by fixed rules (a paired difference whose
   two-level bootstrap CI excludes 0);
4. `figures` — the PNGs (matplotlib, Agg; the shared colours in `style`, the training curves, smoothed, in
   `training`);
5. `dose` — the dose curves and matched-KL comparisons of a study with dose rungs (docs/dose.md);
6. `page` — ``report.html``/``.md``/``.json`` and `report_command`, which runs 1–5.

Beside them, `meter_command` (``searchgym meter``: runs or trajectory files metered side by side at one n,
compared with the first by paired bootstraps) and `support` (trajectories scored under the base model and
their own, ``searchgym meter --base-nll``; loads models), and `importers` (other trainers' rollout files, chat
messages or Search-R1 text, read as trajectories; one episode parsed by `rollout_text`).

This package only re-exports (``from searchgym.report import report_command, verdict``); names load on
first use, so importing ``searchgym.report.data`` does not import matplotlib.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "report_command": "page", "render_html": "page", "render_markdown": "page", "to_json": "page",
    "verdict": "rules", "headlines": "rules", "compare_cis": "rules", "coverage_sentence": "rules",
    "detectable_difference": "rules", "total_variation": "rules",
    "summarise": "data", "equalise": "data", "training_curves": "data", "Estimate": "data",
    "ArmSummary": "data", "StudyData": "data", "TABLE_METRICS": "data", "EXTRA_METRICS": "data",
    "TRAINING_PANELS": "data",
    "discover_runs": "discover", "RunData": "discover", "BASE": "discover",
    "demo_strategy_share": "discover", "prior_strategy_share": "discover",
    "support_meters": "support", "assistant_nll": "support",
    "run_models": "support",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
