"""`searchgym meter`: meter runs or trajectory files side by side, with bootstrap CIs, into meters.json.

Inputs are metered at one n (`searchgym.meters.common_n`: ``--samples``, else the smallest n of any input,
with a printed warning when that drops samples), because diversity meters and pass@k grow with n. With two or more inputs the later ones are
compared with the first by a paired bootstrap over questions, plus the solvable-set overlap and the
base-vs-arm meters of Yue et al. 2025 (`compare_with_base`: coverage inclusion, new, lost, ΔSE, the pass@k
crossing), the first input playing the base. ``--base-nll`` also scores each run's trajectories under the
base model its run names and under its own model (`searchgym.report.support`); it loads models, so it is off
by default. Rollout files of other trainers (chat messages with tool calls, Search-R1 text) are read through
`searchgym.report.importers` (``--format``, ``--field``); the meters their records cannot feed are left out,
with a note.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from searchgym.meters import table as meter_table
from searchgym.meters.aggregate import average, group_by_task, per_question
from searchgym.meters.common_n import common_n
from searchgym.meters.coverage import compare_with_base
from searchgym.meters.passk import solvable_set_overlap
from searchgym.meters.stats import bootstrap_ci, paired_bootstrap
from searchgym.report.importers import FORMATS, Imported, read_rollouts
from searchgym.trajectory import Trajectory
from searchgym.util.files import atomic_write


@dataclass
class MeteredInput:
    """One input's meters: the averaged dict, per-question values, and bootstrap CIs of the main keys."""

    path: Path
    name: str
    original_n: str  # the n (or range of n) the input was evaluated at, before any --samples cut
    per_question: dict[str, dict[str, float]]
    meters: dict[str, float]
    ci: dict[str, tuple[float, float]]
    trajectories: list[Trajectory] = field(default_factory=list, repr=False)  # the n metered per task
    models: dict[str, str] = field(default_factory=dict)  # {"base", "own"} when the support meters ran
    format: str = "searchgym"  # how the input was read (`importers.FORMATS`)
    notes: list[str] = field(default_factory=list)  # an imported input's meters left out, and why

    def to_json(self, note: str) -> dict:
        out = {"input": str(self.path), "n": int(self.meters["meta/n"]), "original_n": self.original_n,
               "questions": int(self.meters["meta/questions"]), "note": note,
               "meters": {k: _finite_or_none(v) for k, v in self.meters.items()},
               "ci95": {k: [_finite_or_none(lo), _finite_or_none(hi)] for k, (lo, hi) in self.ci.items()}}
        if self.models:
            out["support_models"] = self.models
        if self.format != "searchgym":
            out |= {"format": self.format, "import_notes": self.notes}
        return out


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: an unavailable meter is written as null."""
    return float(value) if value is not None and math.isfinite(value) else None


def _load(path: Path, fmt: str = "auto", fields: dict[str, str] | None = None) -> Imported:
    if path.is_dir() and not (path / "trajectories.jsonl").exists():
        raise ValueError(f"{path} is a folder without trajectories.jsonl; pass a run folder or a .jsonl file")
    if not path.exists():
        raise ValueError(f"{path} does not exist; pass a run folder or a trajectories .jsonl file")
    if path.is_dir():
        if fmt not in ("auto", "searchgym"):
            raise ValueError(f"{path} is a run folder: --format {fmt} reads .jsonl files")
        return read_rollouts(path / "trajectories.jsonl", "searchgym")
    return read_rollouts(path, fmt, fields)


def _names(paths: list[Path]) -> list[str]:
    """Short column names: folder name or file stem, made unique with the parent folder when needed, else
    with the path as given (one arm of two studies), else with the input's position (one path twice).

    >>> _names([Path("s1/grpo/seed0"), Path("s2/grpo/seed0"), Path("s1/base.jsonl")])
    ['s1/grpo/seed0', 's2/grpo/seed0', 'base']
    >>> _names([Path("x/a.jsonl"), Path("x/a.jsonl")])
    ['x/a.jsonl (1)', 'x/a.jsonl (2)']
    """
    names = [p.name if p.is_dir() else p.stem for p in paths]
    names = [f"{p.absolute().parent.name}/{name}" if names.count(name) > 1 else name
             for p, name in zip(paths, names)]
    names = [str(p) if names.count(name) > 1 else name for p, name in zip(paths, names)]
    return [f"{name} ({i + 1})" if names.count(name) > 1 else name for i, name in enumerate(names)]


def check_same_questions(paths: list[Path], loaded: list[list[Trajectory]]) -> None:
    """Refuse inputs where one task id asks different questions: they were sampled in different env settings
    (world size, seed, split…), so pairing them by task id would compare unrelated questions."""
    first: dict[str, tuple[str, Path]] = {}
    for path, trajs in zip(paths, loaded):
        for t in trajs:
            seen = first.setdefault(t.task_id, (t.question, path))
            if seen[0] != t.question:
                raise ValueError(f"task {t.task_id!r} asks different questions in {seen[1]} ({seen[0]!r:.70}) and "
                                 f"{path} ({t.question!r:.70}): the inputs were sampled with different env "
                                 "settings (world size, seed, split); evaluate them in the same env (`searchgym "
                                 "eval RUN` uses the run's own env) before metering them together")


def meter_inputs(paths: list[Path], samples: int | None = None, n_boot: int = 1000, fmt: str = "auto",
                 fields: dict[str, str] | None = None) -> tuple[list[MeteredInput], str]:
    """Meter every input at one common n; returns the metered inputs and a note on how n was chosen.
    ``fmt`` and ``fields`` say how to read rollout files (`searchgym.report.importers.read_rollouts`)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {list(FORMATS)}, got {fmt!r}")
    imported = [_load(Path(p), fmt, fields) for p in paths]  # every file is read (and checked) before metering
    loaded = [i.trajectories for i in imported]
    check_same_questions(paths, loaded)
    names = _names(paths)  # unique: they key the sizes `common_n` compares
    sizes = {}
    for path, name, trajs in zip(paths, names, loaded):
        counts: dict[str, int] = {}
        for t in trajs:
            counts[t.task_id] = counts.get(t.task_id, 0) + 1
        if not counts:
            raise ValueError(f"{path} holds no trajectories")
        sizes[name] = (min(counts.values()), max(counts.values()))
    samples, note, down_sampled = common_n(sizes, samples)
    if down_sampled:
        print(f"warning: {note}", file=sys.stderr)
    metered = []
    for path, name, trajs, source in zip(paths, names, loaded, imported):
        lo, hi = sizes[name]
        size = str(lo) if lo == hi else f"{lo}-{hi}"
        try:
            pq, difficulty, n = per_question(trajs, samples)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        # meters an imported input cannot feed (no world, no token data…) are left out (str.startswith(()): False)
        meters = {k: v for k, v in average(pq, difficulty, n).items() if not k.startswith(source.left_out)}
        pq = {q: {k: v for k, v in m.items() if not k.startswith(source.left_out)} for q, m in pq.items()}
        ci = {}
        for key in meter_table.main_keys():
            if key in meters:
                _, ci_lo, ci_hi = bootstrap_ci([m.get(key, math.nan) for m in pq.values()], n_boot=n_boot)
                ci[key] = (ci_lo, ci_hi)
        kept = [t for group in group_by_task(trajs, samples)[0].values() for t in group]
        metered.append(MeteredInput(Path(path), name, size, pq, meters, ci, kept, format=source.format,
                                    notes=source.notes))
    return metered, note


def add_support_meters(metered: list[MeteredInput], *, batch_size: int = 4) -> list[str]:
    """Score every input's trajectories under the base model its run names and under its own model
    (`support_meters`), adding the ``support/…`` keys to its meters. Returns notes for the inputs that
    name no model (a bare .jsonl file). A base shared by several arms is loaded once."""
    import torch

    from searchgym.agent.models import load_model
    from searchgym.report.support import run_models, support_meters

    device = "cuda" if torch.cuda.is_available() else "cpu"
    bases: dict[str, tuple] = {}
    notes = []
    for m in metered:
        try:
            base, own = run_models(m.path)
        except ValueError as e:
            notes.append(f"support meters skipped for {m.name}: {e}")
            continue
        if base not in bases:
            bases[base] = load_model(base, device=device)
        # An untrained input is its own base: one scoring serves both keys. An arm's model is used once.
        own_pair = bases[base] if own == base else load_model(own, device=device)
        m.meters.update(support_meters(m.trajectories, bases[base], own_pair, batch_size=batch_size))
        m.models = {"base": base, "own": own}
    return notes


def compare_inputs(ref: MeteredInput, other: MeteredInput, n_boot: int = 1000) -> dict:
    """Paired bootstrap of the main meters (other - ref) and the solvable-set overlap, on shared questions."""
    if ref.per_question.keys() != other.per_question.keys():
        return {"against": ref.name, "input": other.name,
                "error": "different question sets: paired comparison skipped"}
    deltas = {}
    for key in meter_table.main_keys():
        a = {q: [m.get(key, math.nan)] for q, m in ref.per_question.items()}
        b = {q: [m.get(key, math.nan)] for q, m in other.per_question.items()}
        r = paired_bootstrap(a, b, n_boot=n_boot)
        deltas[key] = {"diff": _finite_or_none(r["diff"]),
                       "ci95": [_finite_or_none(r["lo_diff"]), _finite_or_none(r["hi_diff"])]}
    if "reward/success" not in ref.meters or "reward/success" not in other.meters:  # an import without rewards
        return {"against": ref.name, "input": other.name, "delta": deltas}
    ref_counts, other_counts = success_counts(ref), success_counts(other)
    solved = solvable_set_overlap(ref_counts, other_counts)
    out = {"against": ref.name, "input": other.name, "delta": deltas,
           "solved_only_against": solved["only_a"], "solved_only_input": solved["only_b"],
           "solved_both": solved["both"]}
    # The coverage meters compare both sides at one k_max = n; `meter_inputs` has already equalised n (or
    # refused), so this only guards a caller that builds MeteredInputs by hand.
    n = int(ref.meters["meta/n"])
    if int(other.meters["meta/n"]) == n:
        out["vs_base"] = {k: _finite_or_none(v) for k, v in
                          compare_with_base(ref_counts, other_counts, n, n_boot=n_boot).items()}
    return out


def success_counts(m: MeteredInput) -> dict[str, int]:
    """Correct samples per question, ``{task_id: c}`` out of n: the input `compare_with_base` takes."""
    n = m.meters["meta/n"]
    return {q: round(v["reward/success"] * n) for q, v in m.per_question.items()}


def vs_base_line(c: dict, width: int = 80) -> str:
    """One line of the base-vs-arm meters of a comparison, at most ``width`` columns (names are shortened).

    >>> c = {"input": "grpo", "against": "base", "vs_base": {"coverage/inclusion": 0.95, "coverage/new": 0.02,
    ...      "coverage/lost": 0.1, "coverage/delta_se": -0.125, "passk/crossing_k": 8.0, "passk/crossing_state": 1.0}}
    >>> vs_base_line(c)
    'grpo vs base: inclusion 0.95, new 0.02, lost 0.1, ΔSE -0.125, crossing k 8'
    >>> c["vs_base"].update({"passk/crossing_k": None, "passk/crossing_state": -1.0})
    >>> vs_base_line(c | {"input": "a-very-long-arm-name-from-a-study-folder/seed0"})
    'a-ve… vs base: inclusion 0.95, new 0.02, lost 0.1, ΔSE -0.125, arm behind at k=1'
    """
    v = c["vs_base"]
    # crossing_state: 1 the curves cross at crossing_k; 0 the arm stays ahead to k = n; -1 never ahead.
    crossing = {1.0: f"crossing k {_fmt(v.get('passk/crossing_k'))}", 0.0: "no crossing",
                -1.0: "arm behind at k=1"}.get(v.get("passk/crossing_state"), "crossing —")
    values = ", ".join([f"{label} {_fmt(v.get(key), digits=3)}" for label, key in (
        ("inclusion", "coverage/inclusion"), ("new", "coverage/new"), ("lost", "coverage/lost"),
        ("ΔSE", "coverage/delta_se"))] + [crossing])
    a, b = c["input"], c["against"]
    room = max(width - len(values) - len(" vs : "), 8)
    if len(a) + len(b) > room:  # a short name keeps its length, a long one gives way
        half = room // 2
        if len(b) <= half:
            a = _shorten(a, room - len(b))
        elif len(a) <= half:
            b = _shorten(b, room - len(a))
        else:
            a, b = _shorten(a, half), _shorten(b, room - half)
    return f"{a} vs {b}: {values}"


def _shorten(name: str, size: int) -> str:
    return name if len(name) <= size else name[:max(size - 1, 1)] + "…"


def _fmt(value: float | None, ci: tuple[float, float] | list | None = None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    text = f"{value:.{digits}g}"
    if ci is not None and ci[0] is not None and math.isfinite(ci[0]):
        text += f" [{ci[0]:.3g}, {ci[1]:.3g}]"
    return text


def meter_command(paths: list[Path], samples: int | None = None, out: Path | None = None,
                  n_boot: int = 1000, base_nll: bool = False, fmt: str = "auto",
                  fields: dict[str, str] | None = None) -> list[Path]:
    """Print a table of every meter (one column per input, 95% bootstrap CIs on the main rows) and write one
    meters.json with every input and comparison: at ``out`` (a file, or a folder to write it into), else in
    the current folder. ``base_nll`` adds the support meters (`add_support_meters`: loads each run's base and
    own model). ``fmt``/``fields``: how rollout files are read (`searchgym.report.importers`). The input
    folders are only read. Returns the files written."""
    from rich.console import Console
    from rich.table import Table

    if not paths:
        raise ValueError("pass at least one run folder or trajectories .jsonl file")
    paths = [Path(p) for p in paths]
    metered, note = meter_inputs(paths, samples, n_boot, fmt, fields)
    support_notes = add_support_meters(metered) if base_nll else []
    comparisons = [compare_inputs(metered[0], m, n_boot) for m in metered[1:]]

    # 1. The table, in the order of the table of meters: meta rows, the headline meters with CIs, the rest.
    ordered = meter_table.ordered(k for m in metered for k in m.meters)
    # The meter names never truncate (at 80 columns "diversity/strategy_entropy…" rows looked identical):
    # the name column takes its full width and the value columns fold their CIs onto a second line.
    table = Table(title=f"searchgym meters ({note})")
    table.add_column("meter", no_wrap=True, min_width=max(map(len, ordered), default=5))
    for m in metered:
        table.add_column(m.name, overflow="fold")
    deltas = [c for c in comparisons if "delta" in c]
    for c in deltas:
        table.add_column(f"Δ {c['input']} − {c['against']}", overflow="fold")
    for key in ordered:
        row = [_fmt(m.meters.get(key), m.ci.get(key)) for m in metered]
        for c in deltas:
            d = c["delta"].get(key)
            row.append(_fmt(d["diff"], d["ci95"]) if d else "")
        table.add_row(key, *row)
    console = Console()
    console.print(table)
    for line in support_notes + [f"{m.name} ({m.format}): {line}" for m in metered for line in m.notes]:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    for c in comparisons:
        if "error" in c:
            console.print(f"{c['input']} vs {c['against']}: {c['error']}")
        elif "solved_both" in c:  # absent when an input has no correctness (an import without rewards)
            console.print(f"solvable sets: {c['solved_only_input']} questions solved only by {c['input']}, "
                          f"{c['solved_only_against']} only by {c['against']}, {c['solved_both']} by both")
            if "vs_base" in c:  # plain text: rich would re-wrap it, and a name may hold [brackets]
                console.print(vs_base_line(c), markup=False, highlight=False)

    # 2. meters.json, written once (atomically): to --out, else into the current folder; never into the inputs.
    target = Path(out) if out is not None else Path("meters.json")
    if target.is_dir():
        target = target / "meters.json"
    doc = {"note": note, "inputs": [m.to_json(note) for m in metered], "comparisons": comparisons}
    atomic_write(target, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
    written = [target]
    for path in written:
        console.print(f"wrote {path}")
    return written
