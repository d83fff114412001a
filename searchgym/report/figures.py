"""The study report's figures, drawn with matplotlib (Agg) into PNG bytes.

One colour per arm everywhere (the base model grey, `searchgym.report.style`), so a reader can follow an arm
across figures: meters over training steps (`searchgym.report.training`), pass@k curves with the solvable-set overlap, and strategy shares next to
the demonstration mix. Each function returns None when there is nothing to draw. The shared look
(`searchgym.report.style`) and the training figure (`searchgym.report.training`) live in modules of their own;
their names stay importable from here (``arm_colours``, ``_png``, ``training_figure``).
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import numpy as np  # noqa: E402

from searchgym.meters.table import label as meter_label  # noqa: E402
from searchgym.meters.table import unit as meter_unit  # noqa: E402
from searchgym.report.data import BASE, Estimate, StudyData  # noqa: E402
from searchgym.report.dose import ESTIMATOR, HEADLINE, TOKEN_KEYS, DoseData  # noqa: E402
from searchgym.report.style import (  # noqa: E402, F401  (re-exported)
    ARM_COLOURS,
    LINE_STYLES,
    MARKERS,
    SPARE,
    STRATEGY_COLOURS,
    arm_colours,
)
from searchgym.report.style import png as _png  # noqa: E402
from searchgym.report.training import training_caption, training_figure  # noqa: E402

_NAN = Estimate(math.nan, math.nan, math.nan)


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
    for arm in data.arms:  # where the base catches up with an arm that led at k = 1 (Yue et al. 2025)
        k = (arm.vs_base or {}).get("passk/crossing_k", math.nan)
        if math.isfinite(k):
            share = arm.vs_base.get("passk/crossing_boot_share", math.nan)
            ax.axvline(k, color=colours[arm.name], ls=":", lw=1.4)
            ax.annotate(f"base ≥ {arm.name}\nfrom k = {k:.0f}" + (f"\n({share:.0%} of resamples)"
                                                                 if math.isfinite(share) else ""),
                        (k, 0.02), xytext=(4, 0), textcoords="offset points", fontsize=7.5,
                        color=colours[arm.name], va="bottom")
    ax.set_xscale("log", base=2)
    ks = sorted(data.arms[0].passk)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k (samples per question, log scale)")
    ax.set_ylabel("pass@k (unbiased estimator)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"pass@k on {data.questions} held-out questions (n = {data.n}; band: 95% CI;\n"
                 "dotted: k where the base catches up)", fontsize=11)
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


def _ci_bar(ax, y: float, est: tuple[float, float, float], colour: str, height: float = 0.6, label=None,
            **bar_kw) -> None:
    """One horizontal bar with its 95% CI as an error bar (nothing for a NaN)."""
    value, lo, hi = est
    if not math.isfinite(value):
        return
    ax.barh(y, value, color=colour, height=height, alpha=0.85, label=label, **bar_kw)
    if math.isfinite(lo) and math.isfinite(hi):
        ax.errorbar(value, y, xerr=[[value - lo], [hi - value]], color="#222222", capsize=3, lw=1)


def coverage_figure(data: StudyData) -> bytes | None:
    """Each arm against the base at k = n: coverage inclusion (share of the arm's solved questions the base
    also solves), new and lost questions (shares of all questions) and ΔSE, with 95% CIs over questions."""
    arms = [a for a in data.arms if a.vs_base]
    if not any(sum(a.vs_base.get(f"coverage/{k}", 0.0) for k in ("only_arm", "only_base", "both")) > 0 for a in arms):
        return None  # no arm and no base solves any question: nothing to compare (the verdict says so)
    colours = arm_colours([a.name for a in data.arms])
    fig, axes = plt.subplots(1, 3, figsize=(13, max(3.2, 2.0 + 0.6 * len(arms))), squeeze=False)
    names = [a.name for a in arms]
    y = np.arange(len(arms), dtype=float)

    def get(arm, key):
        v = arm.vs_base
        return v.get(key, math.nan), v.get(f"{key}_lo", math.nan), v.get(f"{key}_hi", math.nan)

    ax = axes[0][0]
    for yi, arm in zip(y, arms):
        est = get(arm, "coverage/inclusion")
        if math.isfinite(est[0]):
            _ci_bar(ax, yi, est, colours[arm.name])
            ax.text(min(est[0], 0.97), yi, f" {est[0]:.2f}", va="center", ha="right" if est[0] > 0.8 else "left",
                    fontsize=8)
        else:
            ax.text(0.02, yi, "solves no question in n samples", va="center", fontsize=8, color="#888888")
    ax.axvline(1.0, color="#555555", ls="--", lw=1)
    ax.set_xlim(0, 1.05)
    ax.set_title("Inclusion: share of the arm's solved\nquestions the base also solves (1 = subset)", fontsize=10)
    ax = axes[0][1]
    for yi, arm in zip(y, arms):
        _ci_bar(ax, yi - 0.18, get(arm, "coverage/new"), colours[arm.name], 0.34,
                "new (only the arm)" if yi == 0 else None)
        _ci_bar(ax, yi + 0.18, get(arm, "coverage/lost"), "#ffffff", 0.34, "lost (only the base)" if yi == 0 else None,
                edgecolor="#555555", hatch="//")
    tops = [v for a in arms for key in ("coverage/new", "coverage/lost") for v in get(a, key) if math.isfinite(v)]
    ax.set_xlim(0, max(0.05, 1.15 * max(tops)) if tops else 1.0)
    for yi, arm in zip(y, arms):
        if get(arm, "coverage/new")[0] == 0 and get(arm, "coverage/lost")[0] == 0:
            ax.text(0.02, yi, "none: both solve the same questions", va="center", fontsize=8, color="#888888",
                    transform=ax.get_yaxis_transform())
    ax.set_title("Questions solved by one side only\n(share of all questions)", fontsize=10)
    ax.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    ax = axes[0][2]
    for yi, arm in zip(y, arms):
        est = get(arm, "coverage/delta_se")
        _ci_bar(ax, yi, est, colours[arm.name])
        if math.isfinite(est[0]):
            ax.text(est[0], yi - 0.32, f"{est[0]:+.2f}", ha="center", va="bottom", fontsize=8)
    ax.axvline(0.0, color="#555555", lw=1)
    ax.set_xlim(-1.05, 1.05)
    ax.set_title(f"ΔSE = arm pass@1 − base pass@{data.n}\n(< 0: the base sampled n times solves more)", fontsize=10)
    for ax in axes[0]:
        ax.set_yticks(list(y), names)
        ax.set_ylim(len(arms) - 0.5, -0.5)  # top to bottom in arm order, whatever was drawn
        ax.grid(alpha=0.3, axis="x")
    for ax in axes[0][1:]:
        ax.tick_params(labelleft=False)
    fig.suptitle(f"Coverage against the base model at k = n = {data.n} ({data.questions} questions; bars: 95% CI "
                 "over questions; seeds pooled)", fontsize=11)
    fig.tight_layout()
    return _png(fig)


def entropy_reward_figure(data: StudyData) -> bytes | None:
    """Reward against policy entropy over each run's logged probes (or the trainer's own rows), with each
    arm's fitted R = −a·exp(H) + b (Cui et al. 2025) and its predicted ceiling b − a."""
    arms = [a for a in data.arms if any(h for h, _, _ in a.entropy_reward)]
    if not arms:
        return None
    colours = arm_colours([a.name for a in data.arms])
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    keys = set()
    for arm in arms:
        hs = [x for h, _, _ in arm.entropy_reward for x in h]
        rs = [x for _, r, _ in arm.entropy_reward for x in r]
        keys |= {k for _, _, k in arm.entropy_reward if k}
        fit = arm.fit or {}
        a, b, r2 = (fit.get(f"fit/entropy_reward_{k}", math.nan) for k in ("a", "b", "r2"))
        if math.isfinite(a):
            label = (f"{arm.name}: a = {a:.3g}, b = {b:.3g}, ceiling b − a = {b - a:.3g}"
                     + (f", R² = {r2:.2f}" if math.isfinite(r2) else "") + f" ({len(hs)} points)")
        else:
            label = f"{arm.name} (too few distinct entropies to fit)"
        ax.scatter(hs, rs, s=16, alpha=0.55, color=colours[arm.name], label=label)
        if math.isfinite(a):
            grid = np.linspace(min(0.0, min(hs)), max(hs), 100)
            ax.plot(grid, b - a * np.exp(grid), color=colours[arm.name], lw=1.6)
    entropy_keys = sorted({k[0] for k in keys})
    reward_keys = sorted({k[1] for k in keys})
    ax.set_xlabel(f"policy entropy H (nats per token; {', '.join(entropy_keys)})")
    ax.set_ylabel(", ".join(reward_keys))
    ax.set_title("Entropy–reward law: points = logged probes, line = fit R = −a·exp(H) + b", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return _png(fig)


def template_collapse_figure(data: StudyData) -> bytes | None:
    """Template collapse (RAGEN-2): how often a trajectory identifies its own question among the batch's
    (against chance 1/B), beside the within-question diversity entropy sees."""
    accuracy, lift_label = meter_label("diversity/cross_input"), meter_label("diversity/cross_input_lift")
    arms = [a for a in data.arms if math.isfinite(a.extra.get(accuracy, _NAN).value)]
    if not arms:
        return None
    colours = arm_colours([a.name for a in data.arms])
    fig, axes = plt.subplots(1, 2, figsize=(12, max(3.4, 2.0 + 0.5 * len(arms))), squeeze=False)
    y = list(range(len(arms)))
    ax = axes[0][0]
    for yi, arm in zip(y, arms):
        e = arm.extra[accuracy]
        _ci_bar(ax, yi, (e.value, e.lo, e.hi), colours[arm.name])
    chance = float(np.nanmean([m.get("diversity/cross_input_chance", math.nan) for a in arms for m in a.meters]))
    if math.isfinite(chance):
        ax.axvline(chance, color="#555555", ls="--", lw=1, label=f"chance 1/B = {chance:.2f}")
        ax.legend(frameon=False, fontsize=8, loc="lower right")
    ax.set_xlim(0, 1.02)
    ax.set_yticks(y, [a.name for a in arms])
    ax.invert_yaxis()
    ax.set_xlabel("accuracy of retrieving a trajectory's own question (TF-IDF)")
    ax.set_title("Across inputs: is the question identifiable?", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    ax = axes[0][1]
    within = meter_label("diversity/signature_entropy_mm")
    if all(not math.isfinite(a.extra.get(within, _NAN).value) for a in arms):
        ax.text(0.5, 0.5, "no within-question entropy measured", ha="center", va="center", transform=ax.transAxes,
                color="#888888")
    for arm in arms:
        w, lift = arm.extra.get(within, _NAN), arm.extra[lift_label]
        if math.isfinite(w.value) and math.isfinite(lift.value):
            ax.errorbar(w.value, lift.value, xerr=[[w.value - w.lo], [w.hi - w.value]] if math.isfinite(w.lo) else None,
                        yerr=[[lift.value - lift.lo], [lift.hi - lift.value]] if math.isfinite(lift.lo) else None,
                        fmt="o", color=colours[arm.name], capsize=3, label=arm.name)
    ax.axhline(0.0, color="#555555", ls="--", lw=1)
    ax.set_xlabel("within-question action-signature entropy (Miller–Madow, nats)")
    ax.set_ylabel("cross-input lift over chance")
    ax.set_title("Diverse within, collapsed across? (low right = template collapse)", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return _png(fig)


def figures(data: StudyData) -> dict[str, tuple[str, bytes]]:
    """Every figure that has data: {file stem: (caption, PNG bytes)}."""
    out = {}
    for stem, caption, make in (
        ("training", training_caption(data), training_figure),
        ("passk", "pass@k with 95% bootstrap CIs over questions, and the solvable-set overlap with the base "
                  "model.", passk_figure),
        ("strategy", "Strategy share per arm against the demonstration mix.", strategy_figure),
        ("coverage", "Coverage against the base model at k = n: inclusion, new and lost questions, ΔSE (Yue et al. "
                     "2025), 95% bootstrap CIs over questions.", coverage_figure),
        ("entropy_reward", "Reward against policy entropy over each run's logged probes, with each arm's fitted "
                           "R = −a·exp(H) + b (Cui et al. 2025).", entropy_reward_figure),
        ("template", "Template collapse: cross-input identifiability of the question against chance, beside "
                     "within-question entropy (RAGEN-2).", template_collapse_figure),
    ):
        png = make(data)
        if png is not None:
            out[stem] = (caption, png)
    return out


# ---- the dose ladder (a figure of its own: report_dose.png) --------------------------------------------

DOSE_CAPTION = ("Headline meters against dose (optimizer steps since the base model, symlog axis) and against "
           f"distance (per-token KL {ESTIMATOR} to the base on each rung's own samples, mean over questions). "
           "Lines: mean over seeds at each rung (markers); bands: min–max over seeds. Every trained arm starts "
           "at the base model (rung 0).")
ROLE_STYLES = {"entropy/token": "-"} | dict(zip(TOKEN_KEYS[1:], ("--", ":", "-.", (0, (1, 3)))))


def dose_figure(data: DoseData) -> bytes:
    """Headline meters and token entropy by role against dose and against KL (`searchgym.report.dose`)."""
    colours = arm_colours(data.arms)
    rows = [(meter_label(k)[:1].upper() + meter_label(k)[1:], meter_unit(k), [k]) for k in data.keys[:len(HEADLINE)]]
    roles = [k for k in TOKEN_KEYS if data.measured(k)]
    if roles:
        rows.append(("Token entropy by role", "nats per token (sampled)", roles))
    fig, axes = plt.subplots(len(rows), 2, figsize=(12, 3.1 * len(rows)), squeeze=False)
    for (title, ylabel, keys), pair in zip(rows, axes):
        for col, ax in enumerate(pair):
            for i, arm in enumerate(data.arms):
                for key in keys:
                    pts = [p for p in data.curves[arm][key] if math.isfinite(p.value)]
                    if not pts:
                        continue
                    x = [p.step if col == 0 else p.kl for p in pts]
                    style = dict(color=colours[arm], ls=ROLE_STYLES[key] if len(keys) > 1 else "-")
                    if arm == BASE:  # one model: a level to read the arms against, not a curve
                        ax.axhline(pts[0].value, lw=1, alpha=0.7, **(style | {"ls": ":"}))
                    ax.plot(x, [p.value for p in pts], marker=MARKERS[i % len(MARKERS)], ms=4, lw=1.6, **style,
                            label=arm if key == keys[0] else None)
                    if max(p.seeds for p in pts) > 1:
                        ax.fill_between(x, [p.lo for p in pts], [p.hi for p in pts], color=colours[arm],
                                        alpha=0.15, lw=0)
            if col == 0:
                ax.set_xscale("symlog", linthresh=1)  # SFT and GRPO budgets differ by orders of magnitude
            ax.set_xlabel("optimizer steps since the base model" if col == 0 else
                          f"KL {ESTIMATOR} to the base (nats/token)", fontsize=9)
            ax.set_title(f"{title} against {'dose' if col == 0 else 'distance'}", fontsize=10)
            ax.set_ylabel(ylabel, fontsize=9)
            ax.grid(alpha=0.3)
        if len(keys) > 1:  # which line style is which role
            pair[1].legend([plt.Line2D([], [], color="#444444", ls=ROLE_STYLES[k]) for k in keys],
                           [meter_label(k) for k in keys], frameon=False, fontsize=7, loc="best")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", ncol=min(6, len(names)), frameon=False,
               title="arm (line: mean over seeds; band: min–max over seeds; dotted: the base model)")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / (3.1 * len(rows))))  # room for the legend, ~0.6 in
    return _png(fig)
