"""The evaluation report's figures, drawn from typed results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import numpy as np

from busgen.eval.results import ArmRoc, SamplerStepsRow, UtilityResult


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
