"""Step 1 of a report: find the runs and read what each run folder holds.

A study folder (``<arm>/seed<k>/``, arms in ``study.toml`` order) or single run folders (a run's
``baseline/`` becomes the ``base`` arm) become `RunData`: its trajectories, its ``metrics.jsonl`` rows,
and where the folder records them the strategy mix of its demonstrations and of its prior. The numbers
are computed from these in `searchgym.report.data`.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from searchgym.report.importers import read_rollouts
from searchgym.runs import read_metrics
from searchgym.trajectory import Trajectory, read_trajectories

BASE = "base"  # the arm of the untrained model: the reference of every comparison


@dataclass
class RunData:
    arm: str
    seed: int
    path: Path
    trajectories: list[Trajectory]
    metrics: list[dict]
    demo_share: dict[str, float] | None = None
    prior_share: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)  # an imported rollout file's meters left out, and why


def _seed_of(folder: Path) -> int | None:
    m = re.fullmatch(r"seed(\d+)", folder.name)
    return int(m.group(1)) if m else None


def _recipe_seed(folder: Path) -> int:
    try:
        return int(tomllib.loads((folder / "recipe.toml").read_text(encoding="utf-8")).get("seed", 0))
    except (OSError, tomllib.TOMLDecodeError, TypeError, ValueError):
        return 0


def _load_run(arm: str, seed: int, folder: Path) -> RunData:
    return RunData(arm, seed, folder, list(read_trajectories(folder)), read_metrics(folder),
                   demo_strategy_share(folder), prior_strategy_share(folder))


def discover_runs(paths: list[Path], fmt: str = "auto", fields: dict[str, str] | None = None) -> list[RunData]:
    """Runs from study folders (``<arm>/seed<k>/``), single run folders and rollout files, in a stable arm order.

    A single run folder's arm is its parent's name when the folder is ``seed<k>`` (a study's arm), else its
    method (`method_name`: the recipe's name and stages), else the folder's own name; its
    ``baseline/`` evaluation (written by ``searchgym train``) becomes a ``base`` run when no base arm is given.
    A rollout file (searchgym's, chat or Search-R1: `searchgym.report.importers`, read with ``fmt`` and
    ``fields``) is a run of the arm named by its stem.
    """
    runs: list[RunData] = []
    baselines: list[RunData] = []
    labelled: list[Path] = []  # single run folders named by their method, not by a study arm or a seed folder
    for path in map(Path, paths):
        if path.is_file():
            imported = read_rollouts(path, fmt, fields)
            if "reward/" in imported.left_out:
                raise ValueError(f"{path}: no record carries a reward, a correct flag or gold answers, which the "
                                 "report's success, pass@k and verdict need; map one (--field reward=KEY) or "
                                 "meter the file with `searchgym meter`")
            runs.append(RunData(path.stem, 0, path, imported.trajectories, [], notes=imported.notes))
            continue
        if (path / "trajectories.jsonl").is_file():
            seed = _seed_of(path)
            arm = path.parent.name if seed is not None else method_name(path) or path.name
            if seed is None:
                labelled.append(path)
            seed = seed if seed is not None else _recipe_seed(path)
            runs.append(_load_run(arm, seed, path))
            if (path / "baseline" / "trajectories.jsonl").is_file():
                baselines.append(_load_run(BASE, seed, path / "baseline"))
            continue
        order = _study_arm_order(path)
        found = sorted(path.glob("*/seed*/trajectories.jsonl"),
                       key=lambda p: (order.get(p.parent.parent.name, len(order)), p.parent.parent.name,
                                      _seed_of(p.parent) or 0))
        if not found:
            raise ValueError(f"{path}: neither a run folder (no trajectories.jsonl) nor a study folder (no "
                             "<arm>/seed<k>/trajectories.jsonl); pass the folder `searchgym experiment` or "
                             "`searchgym train` wrote")
        for p in found:
            if _seed_of(p.parent) is not None:
                runs.append(_load_run(p.parent.parent.name, _seed_of(p.parent), p.parent))
    _split_equal_methods(runs, labelled)
    if not any(r.arm == BASE for r in runs):
        runs = baselines + runs
    runs.sort(key=lambda r: r.arm != BASE)  # stable: the base arm first, everything else in given order
    return runs


def method_name(folder: Path) -> str | None:
    """A run folder's arm name from the recipe it wrote: its name and its stages, e.g. "quick (grpo)" or
    "agent (sft → grpo)". A reader of the report wants to know what was trained, which the run folder's
    own name (``quick-20261207-120000``, a timestamp) does not say. None without a readable recipe.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> _ = (d / "recipe.toml").write_text('name = "quick"\\nstages = ["sft", "grpo"]\\n')
    >>> method_name(d), method_name(d / "missing")
    ('quick (sft → grpo)', None)
    """
    try:
        recipe = tomllib.loads((Path(folder) / "recipe.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    name, stages = recipe.get("name"), recipe.get("stages")
    if not isinstance(name, str) or not name.strip():
        return None
    if isinstance(stages, list) and stages and all(isinstance(s, str) for s in stages):
        return f"{name.strip()} ({' → '.join(stages)})"
    return name.strip()


def _split_equal_methods(runs: list[RunData], labelled: list[Path]) -> None:
    """Two single run folders of the same method (``make run`` twice, or one recipe edited between runs)
    are different runs, not seeds of one arm: where method names collide, the folder's name is added.
    Study arms and ``seed<k>`` folders keep their names: there the grouping into seeds is intended."""
    by_label: dict[str, list[RunData]] = {}
    for r in runs:
        if r.path in labelled:
            by_label.setdefault(r.arm, []).append(r)
    taken = {r.arm for r in runs if r.path not in labelled}
    for label, same in by_label.items():
        if len(same) > 1 or label in taken:
            for r in same:
                r.arm = f"{label} · {r.path.name}"


def _study_arm_order(folder: Path) -> dict[str, int]:
    try:
        arms = tomllib.loads((folder / "study.toml").read_text(encoding="utf-8")).get("arms", {})
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    return {name: i for i, name in enumerate(arms)}


def demo_strategy_share(folder: Path) -> dict[str, float] | None:
    """The strategy mix of the demonstrations a run was trained on, where the run folder records it:
    ``demos/stats.json`` (written by the SFT stage, one entry per demo set; the set named by the recipe's
    ``sft.demos`` is used), else ``demos/<set>.jsonl``, else ``demo_strategy_share`` in summary.json.
    None when the run has no demonstrations.

    >>> import tempfile; d = Path(tempfile.mkdtemp()); (d / "demos").mkdir()
    >>> _ = (d / "recipe.toml").write_text('[sft]\\ndemos = "narrow"\\n')
    >>> _ = (d / "demos" / "diverse.jsonl").write_text('{"strategy": "a"}\\n{"strategy": "b"}\\n')
    >>> _ = (d / "demos" / "narrow.jsonl").write_text('{"strategy": "a"}\\n{"strategy": "a"}\\n')
    >>> demo_strategy_share(d)
    {'a': 1.0}
    """
    folder = Path(folder)
    try:
        kind = tomllib.loads((folder / "recipe.toml").read_text(encoding="utf-8")).get("sft", {}).get("demos")
    except (OSError, tomllib.TOMLDecodeError):
        kind = None
    kind = kind or "diverse"
    stats = folder / "demos" / "stats.json"
    if stats.is_file():
        try:
            share = json.loads(stats.read_text(encoding="utf-8")).get(kind, {}).get("strategy_share")
        except (json.JSONDecodeError, AttributeError):
            share = None
        if share:
            return normalise({str(k): float(v) for k, v in share.items()})
    demos = folder / "demos" / f"{kind}.jsonl"
    if demos.is_file():
        counts: Counter = Counter()
        for line in demos.read_text(encoding="utf-8").splitlines():
            try:
                strategy = json.loads(line).get("strategy")
            except (json.JSONDecodeError, AttributeError):
                continue
            if strategy is not None:
                counts[strategy] += 1
        if counts:
            return normalise(dict(counts))
    summary = folder / "summary.json"
    if summary.is_file():
        try:
            share = json.loads(summary.read_text(encoding="utf-8")).get("demo_strategy_share")
        except (json.JSONDecodeError, AttributeError):
            share = None
        if share:
            return normalise({str(k): float(v) for k, v in share.items()})
    return None


def prior_strategy_share(folder: Path) -> dict[str, float] | None:
    """The realised strategy mix of a prior-lab base model: ``stages/pretrain/prior_mix.json`` of a run that
    pretrained its own prior, else the ``prior_mix.json`` next to the model folder its recipe's
    ``model.base`` names (a study's shared prior). None for any other base model.

    >>> import tempfile; d = Path(tempfile.mkdtemp()); (d / "stages" / "pretrain").mkdir(parents=True)
    >>> _ = (d / "stages" / "pretrain" / "prior_mix.json").write_text('{"realised": {"b": 1, "a": 3}}')
    >>> prior_strategy_share(d)
    {'a': 0.75, 'b': 0.25}
    """
    folder = Path(folder)
    candidates = [folder / "stages" / "pretrain" / "prior_mix.json"]
    try:
        base = tomllib.loads((folder / "recipe.toml").read_text(encoding="utf-8")).get("model", {}).get("base")
    except (OSError, tomllib.TOMLDecodeError):
        base = None
    if isinstance(base, str) and base and Path(base).is_dir():  # a model folder, not an alias or a hub id
        candidates.append(Path(base).parent / "prior_mix.json")
    for path in candidates:
        try:
            share = json.loads(path.read_text(encoding="utf-8")).get("realised")
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if share:
            return normalise({str(k): float(v) for k, v in share.items()})
    return None


def normalise(counts: dict[str, float]) -> dict[str, float]:
    """Counts as shares, keys sorted.

    >>> normalise({"b": 1, "a": 3})
    {'a': 0.75, 'b': 0.25}
    """
    total = sum(counts.values())
    return {k: v / total for k, v in sorted(counts.items())} if total else {}
