"""`calibrate`: the three checks run together into one JSON-ready dict; its summary lines, rich tables and
``calibration.json``; `calibrate_command` behind ``searchgym calibrate``."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from searchgym.calibration.config import (
    COVERAGE_TARGET,
    ENTROPY_ERROR_TARGET,
    MDE_TARGET,
    CalibrationConfig,
    default_model,
    study_setup,
)
from searchgym.calibration.mixtures import (
    REPORT_ESTIMATOR,
    REPORT_INTERVAL,
    best_combinations,
    compare_estimators,
    label_table,
    make_env,
    recover_mixture,
)
from searchgym.calibration.power import _questions, entropy_power, passk_power
from searchgym.calibration.temperature import temperature_sweep
from searchgym.runs import jsonable


def _smallest(sweep: list[dict], key: str, target: float) -> dict | None:
    """The cheapest size (fewest episodes per arm, then fewest seeds) whose ``key`` reaches ``target``."""
    ok = [r for r in sweep if math.isfinite(r[key]) and r[key] <= target]
    if not ok:
        return None
    best = min(ok, key=lambda r: (r["episodes_per_arm"], r["seeds"], r["questions"]))
    return {k: best[k] for k in ("questions", "samples", "seeds", "episodes_per_arm", key)}


CONTROL_KEYS = ("training_control_drop", "training_control_drop_lo", "training_control_drop_hi",
                "training_control_mde", "training_control_detected")  # top-level keys (None with the control off)


def calibrate(config: CalibrationConfig | None = None) -> dict:
    """Run the three checks; returns one JSON-ready dict (see docs/calibration.md for every key)."""
    from tqdm.auto import tqdm

    config = config or CalibrationConfig()
    if config.training_control not in ("off", "tiny", "full"):
        raise ValueError(f"training_control: choose one of off, tiny, full; got {config.training_control!r}")
    started = time.perf_counter()
    setup = study_setup(config.study_file, config.preset)
    if config.env_id:
        setup.env_id, setup.source = config.env_id, "config"
    if config.env_kwargs is not None:
        setup.env_kwargs, setup.source = dict(config.env_kwargs), "config"
    for name in ("questions", "samples", "seeds"):
        if getattr(config, name) is not None:
            setattr(setup, name, getattr(config, name))
    if min(setup.questions, setup.samples, setup.seeds) < 1:
        raise ValueError("questions, samples and seeds must all be >= 1")
    env = make_env(setup)
    pool = list(env.unwrapped.tasks)
    need = max([setup.questions, *config.sweep_questions])
    tasks = pool[:min(need, len(pool))]
    study_tasks = _questions(pool, setup.questions, config.seed)
    table = label_table(env, tasks, progress=config.progress)
    styles = env.unwrapped.taskset.query_styles

    # 1. Recovery of known mixtures.
    timings = {"labels": time.perf_counter() - started}
    mixtures = [recover_mixture(env, study_tasks, name, weights, table, setup.samples, setup.seeds,
                                config.coverage_reps, config.seed)
                for name, weights in tqdm(config.mixtures.items(), desc="mixtures", disable=not config.progress)]
    timings["recovery"] = time.perf_counter() - started - timings["labels"]
    # Every candidate estimator x interval on the same simulated studies: what chose the report's rule.
    mark = time.perf_counter()
    comparison = compare_estimators(study_tasks, config.mixtures, table, styles, setup.samples,
                                    sorted({setup.seeds, 1}, reverse=True), config.coverage_reps,
                                    config.seed) if config.coverage_reps else []
    timings["estimator_comparison"] = time.perf_counter() - mark

    # 2. Power: the study's sizes, then the sweep.
    mark = time.perf_counter()
    sizes = [(setup.questions, setup.samples, setup.seeds)] + [
        (q, n, s) for q in config.sweep_questions for n in config.sweep_samples for s in config.sweep_seeds
        if (q, n, s) != (setup.questions, setup.samples, setup.seeds)]
    results = [entropy_power(pool, config.base_mixture, table, styles, q, n, s, config.reps, config.seed)
               for q, n, s in tqdm(sizes, desc="power (strategy entropy)", disable=not config.progress)]
    study, sweep = results[0], results
    passk = passk_power(setup.questions, setup.samples, setup.seeds, config.reps, setup.samples,
                        config.pass_rate, config.pass_concentration, config.seed)
    success1 = passk_power(setup.questions, setup.samples, setup.seeds, config.reps, 1,
                           config.pass_rate, config.pass_concentration, config.seed)
    timings["power"] = time.perf_counter() - mark

    # 3. Temperature sweep of a real model.
    temperature = None
    if not config.skip_temperature:
        mark = time.perf_counter()
        temperature = temperature_sweep(config.model or default_model(), setup, [t.id for t in pool[:config.temp_questions]],
                                        config.temperatures, config.temp_samples, config.temp_max_turns,
                                        config.temp_max_new_tokens, config.seed, config.progress)
        timings["temperature"] = time.perf_counter() - mark
    env.close()

    # 4. The training-level positive control: a broken training path must not pass as "no effect".
    control = None
    if config.training_control != "off":
        from searchgym.calibration.control import training_control

        mark = time.perf_counter()
        control = training_control(config.training_control, progress=config.progress)
        timings["training_control"] = time.perf_counter() - mark

    errors = [abs(m["error"]) for m in mixtures]
    coverages = [m["coverage"] for m in mixtures]
    fidelity = float(np.average([m["label_fidelity"] for m in mixtures], weights=[m["episodes"] for m in mixtures]))
    timings["total"] = time.perf_counter() - started
    return {
        "setup": {**dataclasses.asdict(setup), "pool_questions": len(pool),
                  "config": {k: v for k, v in dataclasses.asdict(config).items() if k not in ("mixtures",)}},
        "max_entropy_error": max(errors),
        "entropy_error_target": ENTROPY_ERROR_TARGET,
        "meets_entropy_target": max(errors) <= ENTROPY_ERROR_TARGET,
        "max_entropy_error_mm": max(abs(m["error_mm"]) for m in mixtures),
        "max_entropy_bias": max(abs(m["bias"]) for m in mixtures),
        "max_entropy_bias_mm": max(abs(m["bias_mm"]) for m in mixtures),
        "max_entropy_bias_plugin": max(abs(m["bias_plugin"]) for m in mixtures),
        "strategy_entropy_rule": {"estimator": REPORT_ESTIMATOR, "interval": REPORT_INTERVAL},
        "mean_coverage": float(np.nanmean(coverages)) if config.coverage_reps else math.nan,
        "entropy_ci_coverage_min": float(np.nanmin(coverages)) if config.coverage_reps else math.nan,
        "entropy_ci_coverage_target": COVERAGE_TARGET,
        "meets_coverage_target": bool(config.coverage_reps and np.nanmin(coverages) >= COVERAGE_TARGET),
        "mean_coverage_mm": float(np.nanmean([m["coverage_mm"] for m in mixtures])) if config.coverage_reps
        else math.nan,
        "estimator_comparison": comparison,
        "best_estimator_interval": {str(k): v for k, v in best_combinations(comparison).items()},
        "label_fidelity": fidelity,
        "mixtures": mixtures,
        "mde_strategy_entropy": study["mde"],
        "mde_strategy_entropy_paired": study["mde_paired"],
        "mde_strategy_entropy_from_seed_sd": study["mde_from_seed_sd"],
        "mde_strategy_entropy_from_cis": study["mde_from_cis"],
        "false_positive_seed_rule": study["false_positive_seed_rule"],  # the report's (paired) rule
        "false_positive_paired": study["false_positive_paired"],
        "strategy_entropy_claim_rule": study["rule"],
        "mde_strategy_entropy_nonoverlap": study["mde_nonoverlap"],
        "mde_strategy_entropy_nonoverlap_from_cis": study["mde_nonoverlap_from_cis"],
        "false_positive_nonoverlap": study["false_positive_nonoverlap"],
        "mde_pass_at_k": passk["mde"],
        "mde_pass_at_k_paired": passk["mde_paired"],
        "mde_success_at_1": success1["mde"],
        "mde_success_at_1_paired": success1["mde_paired"],
        "mde_pass_at_k_nonoverlap": passk["mde_nonoverlap"],
        "mde_success_at_1_nonoverlap": success1["mde_nonoverlap"],
        "power_strategy_entropy": study,
        "power_pass_at_k": passk,
        "power_success_at_1": success1,
        "size_sweep": [{k: r[k] for k in ("questions", "samples", "seeds", "episodes_per_arm", "mde", "mde_paired",
                                          "false_positive_seed_rule", "false_positive_paired", "seed_sd",
                                          "mde_from_cis", "mde_nonoverlap", "false_positive_nonoverlap")}
                       for r in sweep],
        "mde_target": MDE_TARGET,
        "smallest_size_for_target": _smallest(sweep, "mde", MDE_TARGET),
        "smallest_size_for_target_paired": _smallest(sweep, "mde_paired", MDE_TARGET),
        "temperature": temperature,
        "temperature_monotone": temperature["monotone"] if temperature else None,
        "training_control": control,
        **{k: (control or {}).get(k) for k in CONTROL_KEYS},
        "seconds": timings,
    }


# ---- printing and writing -------------------------------------------------------------------------------

def _f(x, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _rule(result: dict) -> str:
    rule = result.get("strategy_entropy_rule") or {}
    return f"{rule.get('estimator', '?')}, {rule.get('interval', '?')}"


def summary_lines(result: dict) -> list[str]:
    """The headline numbers as plain lines (the benchmark prints these before its JSON)."""
    s = result["setup"]
    lines = [f"setup: {s['env_id']} ({s['source']}), {s['questions']} questions x {s['samples']} samples x "
             f"{s['seeds']} seeds",
             f"strategy entropy as the report shows it ({_rule(result)}): max |measured - true| = "
             f"{_f(result['max_entropy_error'])} nats (target <= {result['entropy_error_target']}; Miller–Madow "
             f"{_f(result['max_entropy_error_mm'])}); exact bias <= {_f(result['max_entropy_bias'])} (MM "
             f"{_f(result['max_entropy_bias_mm'])}, plug-in {_f(result['max_entropy_bias_plugin'])}); label "
             f"fidelity {_f(result['label_fidelity'])}",
             f"CI coverage of the truth: min over mixtures {_f(result['entropy_ci_coverage_min'], 2)} (target >= "
             f"{result['entropy_ci_coverage_target']}), mean {_f(result['mean_coverage'], 2)}; the previous rule "
             f"(MM, seed bootstrap) {_f(result['mean_coverage_mm'], 2)}"]
    for m in result["mixtures"]:
        lines.append(f"  {m['name']:<40} true {_f(m['true_entropy'])}  E[jk] {_f(m['expected_jk'])}  measured "
                     f"{_f(m['measured'])} [{_f(m['ci'][0])}, {_f(m['ci'][1])}]  error {m['error']:+.3f}  coverage "
                     f"{_f(m['coverage'], 2)}  (MM {_f(m['measured_mm'])}, coverage {_f(m['coverage_mm'], 2)})")
    for seeds, best in result["best_estimator_interval"].items():
        lines.append(f"narrowest estimator x interval with coverage >= {result['entropy_ci_coverage_target']} for "
                     f"every mixture, {seeds} seed(s): " + (
                         f"{best['estimator']} + {best['interval']} (min coverage {_f(best['min_coverage'], 2)}, "
                         f"mean width {_f(best['mean_width'])})" if best["ok"] else
                         f"none (best: {best['estimator']} + {best['interval']}, min coverage "
                         f"{_f(best['min_coverage'], 2)})"))
    fp = result["false_positive_seed_rule"]  # the report's rule (paired two-level) since 2026-12-07
    high = " ABOVE the nominal 0.05" if fp is not None and math.isfinite(fp) and fp > 0.06 else ""
    lines.append(f"MDE strategy entropy: {_f(result['mde_strategy_entropy'], 2)} nats under the report's rule "
                 f"(paired difference over questions, two-level bootstrap CI must exclude 0; false positives "
                 f"{_f(fp, 3)}{high}; the report would state {_f(result['mde_strategy_entropy_from_cis'], 2)}); "
                 f"non-overlapping CIs (fallback) {_f(result['mde_strategy_entropy_nonoverlap'], 2)} (false "
                 f"positives {_f(result['false_positive_nonoverlap'], 3)}); paired over questions alone "
                 f"{_f(result['mde_strategy_entropy_paired'], 2)} (false positives "
                 f"{_f(result['false_positive_paired'], 3)})")
    pk = result["power_pass_at_k"]
    lines.append(f"MDE pass@{pk['k']}: {_f(result['mde_pass_at_k'], 2)} (non-overlap "
                 f"{_f(result['mde_pass_at_k_nonoverlap'], 2)}, questions alone {_f(result['mde_pass_at_k_paired'], 2)}); "
                 f"success@1: {_f(result['mde_success_at_1'], 2)} (non-overlap "
                 f"{_f(result['mde_success_at_1_nonoverlap'], 2)}, questions alone "
                 f"{_f(result['mde_success_at_1_paired'], 2)}); base success rate {pk['base_rate']}")
    lines.append("size sweep (MDE nats: report's paired rule / paired over questions alone):")
    for r in result["size_sweep"]:
        lines.append(f"  {r['questions']:>4} questions x {r['samples']:>3} samples x {r['seeds']} seeds: "
                     f"{_f(r['mde'], 2)} / {_f(r['mde_paired'], 2)}")
    for key, rule in (("smallest_size_for_target", "report's paired rule"),
                      ("smallest_size_for_target_paired", "paired over questions alone")):
        best = result[key]
        lines.append(f"smallest size with MDE <= {result['mde_target']} ({rule}): " + (
            f"{best['questions']} x {best['samples']} x {best['seeds']}" if best else "none in the sweep"))
    t = result["temperature"]
    if t:
        cells = ", ".join(f"T={r['temperature']}: token {_f(r['token_entropy'])}, strategy "
                          f"{_f(r['strategy_entropy'])}" for r in t["rows"])
        lines.append(f"temperature sweep ({t['model']}): {cells}; monotone = {t['monotone']}")
    if c := result.get("training_control"):
        lines.append(f"training control (narrow SFT on {c['key'].split('/')[-1]}, {c['steps']} steps on the prior, "
                     f"{c['questions']} x {c['n']}): strategy entropy {_f(c['base_entropy'])} -> "
                     f"{_f(c['trained_entropy'])}, drop {_f(c['training_control_drop'])} "
                     f"[{_f(c['training_control_drop_lo'])}, {_f(c['training_control_drop_hi'])}] nats vs MDE "
                     f"{_f(c['training_control_mde'])}: {'detected' if c['training_control_detected'] else 'NOT DETECTED'}")
    return lines


def print_calibration(result: dict) -> None:
    """Rich tables: recovery per mixture, the MDEs and the size sweep, the temperature sweep."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    s = result["setup"]
    table = Table("mixture", "true H", "E[jk] at n", "measured [95% CI]", "error", "coverage", "MM [95% CI]",
                  "MM coverage", "label fidelity",
                  title=f"Recovery ({_rule(result)}; MM: the previous rule): {s['questions']} questions x "
                        f"{s['samples']} samples x {s['seeds']} seeds ({s['env_id']})")
    for m in result["mixtures"]:
        table.add_row(m["name"], _f(m["true_entropy"]), _f(m["expected_jk"]),
                      f"{_f(m['measured'])} [{_f(m['ci'][0])}, {_f(m['ci'][1])}]", f"{m['error']:+.3f}",
                      _f(m["coverage"], 2), f"{_f(m['measured_mm'])} [{_f(m['ci_mm'][0])}, {_f(m['ci_mm'][1])}]",
                      _f(m["coverage_mm"], 2), _f(m["label_fidelity"], 3))
    console.print(table)
    if result.get("estimator_comparison"):
        console.print(comparison_table(result["estimator_comparison"]))
    table = Table("questions", "samples", "seeds", "episodes/arm", "MDE (report: paired)", "MDE (questions alone)",
                  "false pos. (report)", title="Minimum detectable drop in strategy entropy (nats, 80% power)")
    for r in result["size_sweep"]:
        table.add_row(str(r["questions"]), str(r["samples"]), str(r["seeds"]), str(r["episodes_per_arm"]),
                      _f(r["mde"], 2), _f(r["mde_paired"], 2), _f(r["false_positive_seed_rule"], 2))
    console.print(table)
    t = result["temperature"]
    if t:
        table = Table("temperature", "token entropy", "strategy entropy [95% CI]", "tokens",
                      title=f"Temperature sweep: {t['model']} ({t['questions']} questions x {t['samples']} samples); "
                            f"monotone = {t['monotone']}")
        for r in t["rows"]:
            table.add_row(str(r["temperature"]), _f(r["token_entropy"]),
                          f"{_f(r['strategy_entropy'])} [{_f(r['strategy_ci'][0])}, {_f(r['strategy_ci'][1])}]",
                          str(r["tokens"]))
        console.print(table)
    for line in summary_lines(result):  # the headline numbers under the tables
        if line.startswith(("strategy entropy as", "CI coverage", "narrowest", "MDE", "smallest")):
            console.print(line, markup=False, highlight=False)


def comparison_table(rows: list[dict]):
    """The estimator x interval comparison as a rich table: coverage / mean width per mixture, the minimum
    coverage and the mean width, best first (per seed count)."""
    from rich.table import Table

    mixtures = list(dict.fromkeys(r["mixture"] for r in rows))
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        groups.setdefault((r["seeds"], r["estimator"], r["interval"]), {})[r["mixture"]] = r
    table = Table("seeds", "estimator", "interval", *[m.split(":")[0] for m in mixtures], "min coverage",
                  "mean width", title="Coverage of the true strategy entropy / mean CI width, every candidate")

    def order(item):
        (seeds, _, _), cells = item
        low = min(c["coverage"] for c in cells.values())
        return -seeds, low < COVERAGE_TARGET, -low if low < COVERAGE_TARGET else 0, np.mean(
            [c["width"] for c in cells.values()])

    for (seeds, estimator, interval), cells in sorted(groups.items(), key=order):
        table.add_row(str(seeds), estimator, interval,
                      *[f"{_f(cells[m]['coverage'], 2)} / {_f(cells[m]['width'])}" for m in mixtures],
                      _f(min(c["coverage"] for c in cells.values()), 2),
                      _f(float(np.mean([c["width"] for c in cells.values()]))))
    return table


def write_calibration(result: dict, out: str | Path) -> Path:
    """Write ``calibration.json`` (``out`` a folder, or a path ending in .json)."""
    from searchgym.util.files import atomic_write

    out = Path(out)
    path = out if out.suffix == ".json" else out / "calibration.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(jsonable(result), indent=2).encode("utf-8"))
    return path


def calibrate_command(config: CalibrationConfig, out: str | Path | None = None) -> Path:
    """`searchgym calibrate`: run, print the tables, write calibration.json; returns its path."""
    from searchgym.runs import new_run_dir

    result = calibrate(config)
    print_calibration(result)
    return write_calibration(result, out if out and Path(out).suffix == ".json" else new_run_dir("calibration", out))
