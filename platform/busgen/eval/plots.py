"""The evaluation report's figures, drawn from typed results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import numpy as np

from busgen.eval.results import ArmRoc, PairedDelta, SamplerStepsRow, ScalingRow, UtilityResult


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def auc_vs_ratio(util: UtilityResult, test_set: str):
    """AUC per arm with bootstrap 95% CI bars, one marker per seed (offset), line through the seed means."""
    plt = _plt()
    rows = [r for r in util.rows() if r.test_set == test_set]
    arms = [a for a in util.arm_order() if any(r.arm == a for r in rows)]
    seeds = sorted({r.seed for r in rows})
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k, seed in enumerate(seeds):
        pts = [(arms.index(r.arm), r.metrics) for r in rows if r.seed == seed and r.status == "ok" and r.metrics]
        if not pts:
            continue
        x = np.array([p for p, _ in pts]) + 0.08 * (k - (len(seeds) - 1) / 2)
        y = np.array([m.auc for _, m in pts])
        err = np.array([[m.auc - m.auc_ci_low, m.auc_ci_high - m.auc] for _, m in pts]).T
        ax.errorbar(x, y, yerr=np.clip(err, 0, None), fmt="o", capsize=3, ms=4, label=f"seed {seed}")
    summary = util.arm_summary(test_set)
    ax.plot(
        [i for i, a in enumerate(arms) if a in summary],
        [summary[a].auc_mean for a in arms if a in summary],
        "k--",
        lw=1,
        label="mean over seeds",
    )
    ax.set_xticks(range(len(arms)), arms, rotation=20, fontsize=8)
    ax.set_ylabel(f"AUC ({test_set})")
    ax.set_title("Downstream AUC vs synthetic:real ratio (95% bootstrap CI)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def rocs(roc: dict[str, dict[str, ArmRoc]], test_set: str):
    """ROC curve of every arm (first seed) on one test set."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 4))
    for arm, per_set in roc.items():
        if c := per_set.get(test_set):
            ax.plot(c.fpr, c.tpr, lw=1.2, label=f"{arm} (AUC {c.auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(f"ROC on {test_set}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def fid_vs_steps(rows: list[SamplerStepsRow]):
    """FID against sampling steps, one line per sampler."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for sampler in sorted({r.sampler for r in rows}):
        pts = sorted((r.steps, r.fid) for r in rows if r.sampler == sampler and r.status == "ok" and r.fid is not None)
        if pts:
            ax.plot(*zip(*pts), "o-", label=sampler)
    ax.set_xscale("log")
    steps = sorted({r.steps for r in rows})
    ax.set_xticks(steps, [str(k) for k in steps])
    ax.minorticks_off()
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("FID (classifier features)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def scaling_curve(rows: list[ScalingRow], test_set: str):
    """AUC vs N unique training images per series (95% t-interval over seeds), real-only line and band.

    The real series is drawn against its number of *real* images on the same axis, so
    "N synthetic ~ M real" reads off where the curves cross the same AUC.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    real_full = max((r for r in rows if r.series == "real"), key=lambda r: r.n, default=None)
    if real_full is not None:
        ax.axhline(real_full.auc_mean, color="k", lw=1, label=f"real only ({real_full.n} real)")
        if np.isfinite(real_full.ci_low):
            ax.axhspan(real_full.ci_low, real_full.ci_high, color="k", alpha=0.08)
    for series in sorted({r.series for r in rows}):
        pts = sorted((r for r in rows if r.series == series), key=lambda r: r.n)
        x = np.array([r.n for r in pts])
        y = np.array([r.auc_mean for r in pts])
        err = np.nan_to_num(np.array([[r.auc_mean - r.ci_low, r.ci_high - r.auc_mean] for r in pts]).T)
        style = "s--" if series == "real" else "o-"
        label = f"{series} (N real)" if series == "real" else f"{series} (N synthetic)"
        ax.errorbar(x, y, yerr=np.clip(err, 0, None), fmt=style, capsize=3, ms=4, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("unique training images N")
    ax.set_ylabel(f"AUC ({test_set})")
    ax.set_title("Downstream AUC vs training-set size (mean over seeds, 95% t-interval)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def recipe_deltas(deltas: dict[str, PairedDelta], order: list[str], test_set: str, targets: tuple[float, float]):
    """Paired AUC difference vs real only per arm with its CI, and the two target lines."""
    plt = _plt()
    arms = [a for a in order if a in deltas]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(arms) + 1.2))
    y = np.arange(len(arms))[::-1]
    d = [deltas[a] for a in arms]
    err = np.nan_to_num(np.array([[x.value - x.ci_low, x.ci_high - x.value] for x in d]).T)
    ax.errorbar([x.value for x in d], y, xerr=np.clip(err, 0, None), fmt="o", capsize=3, ms=4)
    ax.axvline(0, color="k", lw=0.8)
    for t, c, what in zip(targets, ("tab:orange", "tab:green"), ("synthetic-only target", "best-recipe target")):
        ax.axvline(t, color=c, lw=0.8, ls="--", label=f"{what} ({t:+.2f})")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_yticks(y, arms, fontsize=7)
    ax.set_xlabel(f"Δ AUC vs real only ({test_set}), 95% CI")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig
