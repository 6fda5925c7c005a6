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


def _auc_cell(r: dict) -> str:
    ci = r.get("auc_ci")
    if ci:
        return f"{r['auc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] (n={len(r['aucs'])})"
    return f"{r['auc']:.3f}"


def table(results: dict) -> str:
    """Markdown: one line per strength; the default is marked with *."""
    pick = results["default"]["strength"]
    new = bool(results.get("reference_encoder"))
    fid_head = "KID / FID (reference enc.)" if new else "FID (copy enc.)"
    seeds = any(r.get("auc_ci") for r in results["rows"])
    auc_head = "synthetic-only AUC, mean [95% t-interval]" if seeds else "synthetic-only AUC"
    lines = [
        f"| {'strength' if seeds else 'alpha'} | {fid_head} | {auc_head} | memorisation | copies "
        "| DCR-MIA AUC pixel / feature | TPR@1%FPR (max) | img/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        dcr = r["dcr"]
        mark = " *" if r["strength"] == pick else ""
        feat = f"{dcr['feature']['auc']:.3f}" if "feature" in dcr else "-"
        fid = f"{r['kid']:.4f} / {r['fid']:.3f}" if new else f"{r['fid']:.3f}"
        lines.append(
            f"| {r['strength']:g}{mark} | {fid} | {_auc_cell(r)} | {r['memorization_rate']:.3%} "
            f"| {r['copy_rate']:.3%} | {dcr['pixel']['auc']:.3f} / {feat} | {_tpr(r):.3f} | {r['img_per_s']:.2f} |"
        )
    return "\n".join(lines)


def nn_grid(pairs: dict, fp: Path, pick: float) -> None:
    """One row per strength: its synthetic images closest to a member, each beside that member (pixel cosine).

    A shifted, flipped or blurred copy still shows as a copy here, whatever the audit's thresholds say.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(s, p) for s, p in pairs.items() if p]
    if not rows:
        return
    cols = max(len(p) for _, p in rows)
    fig, axes = plt.subplots(len(rows), 2 * cols, figsize=(1.3 * 2 * cols, 1.5 * len(rows)), squeeze=False)
    for i, (strength, row) in enumerate(rows):
        for j in range(cols):
            for k, ax in enumerate(axes[i, 2 * j : 2 * j + 2]):
                ax.axis("off")
                if j < len(row):
                    ax.imshow(row[j][k], cmap="gray", vmin=0, vmax=255)
                    ax.set_title(("syn" if k == 0 else "member") + (f" {row[j][2]:.3f}" if k == 0 else ""), fontsize=7)
        mark = " (default)" if strength == pick else ""
        axes[i, 0].text(
            -0.15,
            0.5,
            f"s={strength:g}{mark}",
            transform=axes[i, 0].transAxes,
            rotation=90,
            va="center",
            ha="right",
            fontsize=8,
        )
    fig.suptitle("closest synthetic/member pairs per strength (pixel cosine, shift/flip tolerant)", fontsize=9)
    fig.tight_layout()
    fig.savefig(fp, dpi=110)
    plt.close(fig)


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
            ax.annotate(f"s={r['strength']:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
            if r["strength"] == pick:
                ax.plot([xi], [yi], "*", color="tab:red", markersize=16, label=f"default s={pick:g}")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle("CPSample privacy-utility trade-off")
    fig.tight_layout()
    fig.savefig(fp, dpi=120)
    plt.close(fig)


def _legacy_text(results: dict) -> list[str]:
    """The report of a sweep from before the paper form and classifier seeds (its committed text, unchanged)."""
    cfg, d = results["config"], results["default"]
    return [
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


def write_report(results: dict, out: Path) -> None:
    """``out/tradeoff.md`` (settings, the rule, table, the default) and ``out/tradeoff.png``."""
    out.mkdir(parents=True, exist_ok=True)
    cfg, d = results["config"], results["default"]
    plot(results, out / "tradeoff.png")
    if "rule" not in results:
        (out / "tradeoff.md").write_text("\n".join(_legacy_text(results)) + "\n")
        return
    form = cfg.get("form", "relative")
    gate = f"gate confidence > {cfg['threshold']}" + (
        f" (alpha = {1 - cfg['threshold']:.3g})" if form == "paper" else ""
    )
    text = [
        "# CPSample privacy-utility trade-off",
        "",
        f"Generator `{cfg['model']}` ({results.get('generator_model_id')}), data `{cfg['data_dir']}` "
        f"(members: {cfg.get('members', 'split') if cfg.get('members') == 'support' else cfg['member_split']}, "
        f"{results.get('n_members', '?')} images; non-members: {', '.join(cfg['heldout_splits'])}); "
        f"{cfg['n']} images per strength, {cfg['sampler']} {cfg['steps']} steps, CFG {cfg['guidance']}; "
        f"form {form}, {gate}, window {tuple(cfg['window'])}; protection classifier: {results['protect']}.",
        "",
        encoder_line(results),
        "",
        f"Rule for the default (fixed before the run): {results['rule']}" if results.get("rule") else "",
        "",
        table(results),
        "",
        f"Default (*): s = {d['strength']:g} — {d['rule']}; meets the targets: {d['meets_targets']}.",
        "",
        "![trade-off](tradeoff.png)",
        "",
        "![nearest pairs](nn.png)" if (out / "nn.png").exists() else "",
        "",
        f"Run time {results['seconds']:.0f} s.",
    ]
    (out / "tradeoff.md").write_text("\n".join(t for t in text if t is not None) + "\n")
