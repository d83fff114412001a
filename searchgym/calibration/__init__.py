"""`searchgym calibrate`: the meters measured on policies whose true behaviour is known.

An instrument is trusted when it recovers known truth (docs/calibration.md). Three checks, all through the
real env, the real strategy classifier and the real meter and report code:

1. **Recovery.** Mixtures of the synthetic world's scripted demonstrators (one strategy, two, three, the
   study prior's mix, uniform) are run as agents on the study's held-out questions, n samples per question
   and several seeds. A mixture restricted to each question's valid strategies and renormalised (exactly as
   the prior lab samples its demos, `searchgym.train.pretrain.task_distribution`) has a known strategy
   distribution per question, so the true strategy entropy (mean over questions of the per-question
   entropy, what the meter averages) is exact; so are every estimator's expectations at n. We report
   measured vs true for the report's strategy entropy (jackknife per question, two-level bootstrap CI over
   seeds and questions), that CI's coverage of the truth over repeated studies (`entropy_ci_coverage_min`,
   target >= 0.90 for every mixture), the comparison of candidate estimators x intervals that chose it, and
   label fidelity (how often the classifier labels a demonstrator's episode as its script).
2. **Power.** How often does the report's claim rule (the paired difference of two arms over their shared
   questions, whose two-level bootstrap CI over seeds and questions must exclude 0; the old rule, CIs that
   must not overlap, is reported beside it) detect a true difference delta in strategy entropy, and in pass@k? Demonstrators are
   deterministic, so one play of every (question, strategy, query style) gives each question's exact label
   distribution under any mixture, and a simulated study is a multinomial draw: thousands of studies cost
   seconds. The minimum detectable effect (MDE) is the smallest delta detected in >= 80% of studies, for the
   study's sizes and a sweep of sizes; also for a paired bootstrap over questions.
3. **Temperature.** A real model sampled through `searchgym.agent.rollout.rollout` (what `searchgym eval` uses) at
   rising temperatures: token entropy must rise monotonically and strategy entropy must not fall beyond its CI.

Layout: `config` (the study set-up, `CalibrationConfig`, the mixtures and targets), `mixtures` (demonstrator
labels, exact truths, recovery through the env), `power` (simulated studies, power curves and MDEs),
`temperature` (the temperature sweep), `run` (`calibrate`, its summary, tables and ``calibration.json``).
Every public name is importable from here.
"""

from searchgym.calibration.config import (
    BIAS_AT_N,
    COVERAGE_TARGET,
    ENTROPY_ERROR_TARGET,
    FALLBACK_ENV_ID,
    FALLBACK_ENV_KWARGS,
    FALLBACK_MODEL,
    FALLBACK_SIZES,
    MDE_TARGET,
    MIXTURES,
    PRIOR_MIX,
    SHIFT_TOWARDS,
    STUDY_FILE,
    STUDY_PRESET,
    TEMPERATURES,
    CalibrationConfig,
    StudySetup,
    default_model,
    study_setup,
)
from searchgym.calibration.mixtures import (
    REPORT_ESTIMATOR,
    REPORT_INTERVAL,
    best_combinations,
    compare_estimators,
    label_distribution,
    label_table,
    make_env,
    mixture_truth,
    play_mixture,
    recover_mixture,
    sample_counts,
    simulated_coverage,
)
from searchgym.calibration.power import entropy_power, passk_power, shift_curve
from searchgym.calibration.run import (
    calibrate,
    calibrate_command,
    comparison_table,
    print_calibration,
    summary_lines,
    write_calibration,
)
from searchgym.calibration.temperature import temperature_sweep

__all__ = [
    "BIAS_AT_N", "COVERAGE_TARGET", "ENTROPY_ERROR_TARGET", "FALLBACK_ENV_ID", "FALLBACK_ENV_KWARGS", "FALLBACK_MODEL", "FALLBACK_SIZES",
    "MDE_TARGET", "MIXTURES", "PRIOR_MIX", "REPORT_ESTIMATOR", "REPORT_INTERVAL", "SHIFT_TOWARDS", "STUDY_FILE",
    "STUDY_PRESET", "TEMPERATURES", "CalibrationConfig", "StudySetup", "best_combinations", "calibrate",
    "calibrate_command", "compare_estimators", "comparison_table", "default_model", "entropy_power",
    "label_distribution", "label_table", "make_env", "mixture_truth", "passk_power", "play_mixture",
    "print_calibration", "recover_mixture", "sample_counts", "shift_curve", "simulated_coverage", "study_setup",
    "summary_lines", "temperature_sweep", "write_calibration",
]
