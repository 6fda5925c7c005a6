"""The trade-off sweep's report: a Markdown table and a utility-versus-privacy plot with the default marked."""

from __future__ import annotations

from pathlib import Path


def _mia(row: dict) -> float:
    return max(v["auc"] for v in row["dcr"].values())


def _tpr(row: dict) -> float:
    return max(v["tpr_at_1pct_fpr"] for v in row["dcr"].values())


def encoder_line(results: dict) -> str:
    """Which feature space the FID/KID column was measured in (old results: the per-run copy encoder)."""
    ref = results.get("reference_encoder")
    if ref:
        n = next((r.get("fid_n") for r in results["rows"] if r.get("fid_n")), None)
        return f"Reference encoder: **{ref['label']}**; FID on equal-sized sets (n={n}), unbiased KID."
    return (
        "Reference encoder: **none** (old instrument): FID on this run's copy encoder (L2-normalised "
        "features, retrained per run), not comparable across runs."
    )


def table(results: dict) -> str:
    """Markdown: one line per strength; the default is marked with *."""
    pick = results["default"]["strength"]
    new = bool(results.get("reference_encoder"))
    fid_head = "KID / FID (reference enc.)" if new else "FID (copy enc.)"
    lines = [
        f"| alpha | {fid_head} | synthetic-only AUC | memorisation | copies | DCR-MIA AUC pixel / feature "
        "| TPR@1%FPR (max) | img/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        dcr = r["dcr"]
        mark = " *" if r["strength"] == pick else ""
        feat = f"{dcr['feature']['auc']:.3f}" if "feature" in dcr else "-"
        fid = f"{r['kid']:.4f} / {r['fid']:.3f}" if new else f"{r['fid']:.3f}"
        lines.append(
            f"| {r['strength']:g}{mark} | {fid} | {r['auc']:.3f} | {r['memorization_rate']:.3%} "
            f"| {r['copy_rate']:.3%} | {dcr['pixel']['auc']:.3f} / {feat} | {_tpr(r):.3f} | {r['img_per_s']:.2f} |"
        )
    return "\n".join(lines)


def plot(results: dict, fp: Path) -> None:
    """Left: synthetic-only AUC vs DCR-MIA AUC; right: FID vs memorisation rate; points labelled by alpha."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, pick = results["rows"], results["default"]["strength"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = (
        (
            axes[0],
            [_mia(r) for r in rows],
            [r["auc"] for r in rows],
            "DCR-MIA AUC (max of spaces; 0.5 = none)",
            "synthetic-only AUC (real test)",
        ),
        (
            axes[1],
            [r["memorization_rate"] for r in rows],
            [r["fid"] for r in rows],
            "memorisation rate",
            "FID vs held-out (reference encoder)"
            if results.get("reference_encoder")
            else "FID vs held-out (copy encoder)",
        ),
    )
    for ax, x, y, xl, yl in panels:
        ax.plot(x, y, "o-", color="tab:blue")
        for r, xi, yi in zip(rows, x, y):
            ax.annotate(f"α={r['strength']:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
            if r["strength"] == pick:
                ax.plot([xi], [yi], "*", color="tab:red", markersize=16, label=f"default α={pick:g}")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle("CPSample privacy-utility trade-off")
    fig.tight_layout()
    fig.savefig(fp, dpi=120)
    plt.close(fig)


def write_report(results: dict, out: Path) -> None:
    """``out/tradeoff.md`` (settings, table, the default and its rule) and ``out/tradeoff.png``."""
    out.mkdir(parents=True, exist_ok=True)
    cfg, d = results["config"], results["default"]
    plot(results, out / "tradeoff.png")
    text = [
        "# CPSample privacy-utility trade-off",
        "",
        f"Generator `{cfg['model']}` ({results['generator_model_id']}), data `{cfg['data_dir']}` "
        f"(members: {cfg['member_split']}; non-members: {', '.join(cfg['heldout_splits'])}); "
        f"{cfg['n']} images per alpha, {cfg['sampler']} {cfg['steps']} steps, CFG {cfg['guidance']}, "
        f"threshold {cfg['threshold']}, window {tuple(cfg['window'])}; protection classifier: {results['protect']}.",
        "",
        encoder_line(results),
        "",
        table(results),
        "",
        f"Default (*): alpha = {d['strength']:g} — {d['rule']}; meets the targets "
        f"(DCR-MIA AUC <= {cfg['target_mia_auc']}, memorisation < {cfg['target_memorization']:.1%}, "
        f"AUC within {cfg['auc_tolerance']} and FID within {cfg['fid_tolerance']:.0%} of alpha 0): "
        f"{d['meets_targets']}.",
        "",
        "![trade-off](tradeoff.png)",
        "",
        f"Run time {results['seconds']:.0f} s.",
    ]
    (out / "tradeoff.md").write_text("\n".join(text) + "\n")
