"""`searchgym updates RUN …`: where each run wrote — the share of its base's parameters it moved, by kind, and
how much the moved sets of every two runs overlap (`searchgym.meters.updates`; docs/where-rl-writes.md).

A run is a training run folder: full-parameter (``model/``) or LoRA (``adapter/``, merged into its base
first: its update is dense in every adapted matrix by construction), or one of its dose rungs
(``RUN/dose/grpo-40``: the policy at that step). A folder holding such folders (a study arm: ``grpo/seed0``,
``grpo/seed1``…; a run's ``dose/``) stands for all of them. Runs are compared with the base their run names
(`searchgym.report.support.run_models`); overlaps are computed between runs of the same base only.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

from searchgym.meters.updates import PRECISIONS, moved_masks, moved_share, moved_share_by_kind, overlap


def expand_runs(paths: list[Path]) -> list[Path]:
    """Run folders (or dose rungs) named, or found one level below a folder that is not one (a study arm, ``dose/``).

    >>> expand_runs([Path("/no/such/run")])
    Traceback (most recent call last):
    ...
    ValueError: /no/such/run is not a trained run folder (adapter/ or model/), nor a folder of them
    """
    from searchgym.agent.models import run_adapter, run_full_model

    def trained(p: Path) -> bool:
        return p.is_dir() and (run_adapter(p) is not None or run_full_model(p) is not None)

    runs = []
    for path in paths:
        if trained(path):
            runs.append(path)
            continue
        # A "<rung>.tmp" folder is a snapshot a crash interrupted (train.dose renames it into place when done).
        inside = sorted(p for p in path.iterdir() if trained(p) and not p.name.endswith(".tmp")) \
            if path.is_dir() else []
        if not inside:
            raise ValueError(f"{path} is not a trained run folder (adapter/ or model/), nor a folder of them")
        runs.extend(inside)
    return runs


def _parameters(name: str, *, merge: bool = False) -> dict:
    """``{name: float32 tensor}`` of a model's parameters (tied weights once), a LoRA run merged first."""
    from searchgym.agent.models import load_model

    model, _ = load_model(name)
    if merge:
        model = model.merge_and_unload()
    return {k: v.detach().float() for k, v in model.named_parameters()}


def _rung_of(path: Path) -> Path | None:
    """The run folder a dose rung (``<run>/dose/<stage>-<step>``) belongs to, or None."""
    return path.parent.parent if path.parent.name == "dose" and (path / "snapshot.json").is_file() else None


def _label(run: Path) -> str:
    owner = _rung_of(run)
    return f"{owner.parent.name}/{owner.name}@{run.name}" if owner else f"{run.parent.name}/{run.name}"


def _base(run: Path) -> str:
    from searchgym.report.support import run_models

    return run_models(_rung_of(run) or run)[0]


def _run_masks(runs: list[Path], settings) -> dict[Path, dict]:
    """``{run: {(precision, tolerance): moved masks}}`` for each run against its base, for every setting: each
    run's weights loaded once (a LoRA run merged first), one base in memory at a time."""
    from searchgym.agent.models import run_adapter

    out, loaded = {}, {}
    for run in runs:
        base = _base(run)
        if base not in loaded:
            loaded = {base: _parameters(base)}
        trained = _parameters(str(run), merge=run_adapter(run) is not None)
        out[run] = {(precision, tolerance): moved_masks(loaded[base], trained, tolerance=tolerance,
                                                        precision=precision) for precision, tolerance in settings}
    return out


def _null_nan(row: dict) -> dict:
    """NaN (an overlap with an empty moved set) is null in JSON."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def updates_command(paths: list[Path], *, tolerance: float = 1e-5, precision: str = "float32",
                    out: Path | None = None) -> dict:
    """Meter every run against its base; print the tables; write ``out`` (JSON) when given; return the data."""
    from rich.console import Console
    from rich.table import Table

    from searchgym.agent.models import run_adapter

    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"--tolerance must be a finite number >= 0, got {tolerance}")
    runs = expand_runs(paths)
    bases = {run: _base(run) for run in runs}
    setting = (precision, tolerance)
    masks = {run: m[setting] for run, m in _run_masks(runs, [setting]).items()}
    rows = []
    for run in runs:
        share = moved_share(masks[run])
        rows.append({"run": str(run), "label": _label(run), "base": bases[run],
                     "finetune": "lora" if run_adapter(run) is not None else "full",
                     "parameters": sum(m.numel() for m in masks[run].values()),
                     "updates/moved_share": share, "updates/sparsity": 1 - share,
                     **{f"updates/moved_share_{k}": v for k, v in moved_share_by_kind(masks[run]).items()}})
    pairs = [{"a": _label(a), "b": _label(b), **overlap(masks[a], masks[b])}
             for a, b in itertools.permutations(runs, 2) if bases[a] == bases[b]]

    console = Console(width=max(Console().width, 132))  # a log or pipe gets 80 columns: too few for the kinds
    kinds = sorted({k.rsplit("_", 1)[-1] for r in rows for k in r if k.startswith("updates/moved_share_")})
    table = Table(title=f"where each run wrote (moved: |Δ| > {tolerance:g} in {precision})")
    for column in ["run", "finetune", "parameters", "moved share", *kinds]:
        table.add_column(column, justify="left" if column in ("run", "finetune") else "right", no_wrap=True)
    for r in rows:
        table.add_row(r["label"], r["finetune"], f"{r['parameters']:,}", f"{r['updates/moved_share']:.4f}",
                      *(f"{r.get(f'updates/moved_share_{k}', math.nan):.4f}" for k in kinds))
    console.print(table)
    if pairs:
        table = Table(title="overlap of moved sets: |A ∩ B| / |A| (chance: |B| / N)")
        for column in ["A", "B", "overlap", "chance", "jaccard"]:
            table.add_column(column, justify="left" if column in ("A", "B") else "right", no_wrap=True)
        for p in pairs:
            table.add_row(p["a"], p["b"], f"{p['updates/overlap']:.4f}", f"{p['updates/overlap_chance']:.4f}",
                          f"{p['updates/jaccard']:.4f}")
        console.print(table)
    if any(r["finetune"] == "lora" for r in rows):
        console.print("note: a LoRA run's merged update B·A is dense in every matrix it adapts by construction; "
                      "train with model.finetune = \"full\" to see where training itself writes")
    data = {"tolerance": tolerance, "precision": precision, "runs": [_null_nan(r) for r in rows],
            "overlaps": [_null_nan(p) for p in pairs]}
    if out is not None:
        from searchgym.util.files import atomic_write

        atomic_write(Path(out), json.dumps(data, indent=2, allow_nan=False).encode("utf-8"))
        print(f"wrote {out}")
    return data


# The report's section: the paper's setting, and a tolerance above what Adam moves every weight by in a few
# steps (docs/where-rl-writes.md: the share beyond it separates where the large moves went).
REPORT_SETTINGS = (("bfloat16", 1e-5), ("float32", 1e-3))


def _span(values: list[float]) -> str:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "–"
    low, high = min(values), max(values)
    return f"{sum(values) / len(values):.3f}" + (f" [{low:.3f}–{high:.3f}]" if len(values) > 1 else "")


def arm_update_table(arms: dict[str, list[Path]]) -> tuple[list[str], list[list[str]]] | None:
    """The report's "Where each arm wrote" table: per arm with full-parameter runs (``model/``), the moved share
    in each `REPORT_SETTINGS` and the overlap of its seeds' > 1e-3 sets against chance (mean [min–max] over its
    runs or ordered seed pairs); None when no arm trained every weight (a LoRA update is dense by construction)."""
    from searchgym.agent.models import run_full_model

    full = {arm: [r for r in runs if run_full_model(r) is not None] for arm, runs in arms.items()}
    full = {arm: runs for arm, runs in full.items() if runs}
    if not full:
        return None
    header = ["arm", "runs", "moved (bf16, > 1e-5)", "moved (> 1e-3)", "seed overlap (> 1e-3)", "chance"]
    rows = []
    for arm, runs in full.items():
        per_run = _run_masks(runs, REPORT_SETTINGS)
        masks = {setting: [per_run[run][setting] for run in runs] for setting in REPORT_SETTINGS}
        wide, large = (masks[setting] for setting in REPORT_SETTINGS)
        pairs = [overlap(a, b) for a, b in itertools.permutations(large, 2)]
        rows.append([arm, str(len(runs)), _span([moved_share(m) for m in wide]), _span([moved_share(m) for m in large]),
                     _span([p["updates/overlap"] for p in pairs]), _span([p["updates/overlap_chance"] for p in pairs])])
    return header, rows
