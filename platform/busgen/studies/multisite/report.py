"""The multi-site report: one table (variant x K), the AUC-vs-K plot, sample grids per domain, results files.

Rows come from each variant's `EvalResult`: in-site AUC (T's test split), cross-site AUC
(S's test split), each with the seed-paired AUC difference to the real-only arm (the K real
images alone) and its 95% CI, FID on T, memorisation rate and membership-inference AUC.
The ``real T+S`` control (T's and S's real train images) is one row per target; each device
augmentation arm also carries its seed-paired difference to it (``*_ts_cross``, ``*_ts_in``).
Rows written before these fields existed (no ``val_per_class``, no ``real T+S`` row) render as
they did.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from busgen.core.storage import write_tables
from busgen.eval.results import EvalResult
from busgen.eval.suites import REAL_TEST, SYN_ONLY
from busgen.studies.multisite.config import ALL, MultisiteConfig
from busgen.studies.multisite.plan import REAL_TS, Variant

RESULTS_JSON = "results.json"
PLOT = "auc_vs_k.png"
REAL_ONLY = "real only"
AUG_REAL = "aug: real T only"  # the augmentation suites' real arm: all of T's train split
COLORS = {REAL_ONLY: "k", "target-only": "tab:green", "lora": "tab:blue", "full": "tab:orange", "joint": "tab:purple"}
COLORS |= {REAL_TS: "tab:red", AUG_REAL: "tab:gray"}


def headline_arm(cfg: MultisiteConfig, result: EvalResult) -> str | None:
    """The configured mix, or (dry runs shrink the ratios) the largest mix the suite ran."""
    arms = [a for a in result.utility.arm_order() if a not in ("real", SYN_ONLY)] if result.utility else []
    return cfg.headline_arm if cfg.headline_arm in arms else (arms[-1] if arms else None)


def _auc(result: EvalResult, test_set: str, arm: str) -> float | None:
    s = result.utility.arm_summary(test_set).get(arm) if result.utility else None
    return None if s is None else s.auc_mean


def _delta(result: EvalResult, test_set: str, arm: str) -> dict:
    d = result.utility.deltas.get(test_set, {}).get(arm) if result.utility else None
    return {} if d is None else {"delta": d.value, "ci_low": d.ci_low, "ci_high": d.ci_high, "n_runs": d.n_runs}


def versus_real_pair(cfg: MultisiteConfig, results: list[tuple[Variant, EvalResult, str | None]]) -> dict:
    """(target, augmentation label) -> test set -> arm -> seed-paired AUC(arm) - AUC(real T+S), from trial artifacts.

    Both suites test on the same cases (T's test split, the copy of S's test split) with the same seeds,
    so the augmentation arm and the real T+S classifier pair as the arms of one suite do.
    """
    from busgen.eval.utility.grid import paired_deltas

    pair = {v.target: res for v, res, _ in results if v.is_real_pair and res.utility}
    out = {}
    for v, res, _ in results:
        if not (v.is_augmentation and v.target in pair and res.utility):
            continue
        base = [t for t in pair[v.target].utility.trials if t.arm == "real"]
        arms = [t for t in res.utility.trials if t.arm != "real"]
        out[(v.target, v.label)] = paired_deltas(base + arms, cfg.utility.n_boot, cfg.utility.delta_ci == "cases+seeds")
    return out


def _pair_delta(deltas: dict, test_set: str, arm: str) -> dict:
    d = deltas.get(test_set, {}).get(arm)
    return {} if d is None else {"delta": d.value, "ci_low": d.ci_low, "ci_high": d.ci_high}


def rows_of(cfg: MultisiteConfig, results: list[tuple[Variant, EvalResult, str | None]]) -> list[dict]:
    """One row per (variant, K, synthetic arm), one real-only row per (target, K), one real T+S row per target.

    ``val_per_class``: T's val images per class the row's classifiers early-stopped and thresholded on
    (K for a K-shot row, ``all`` = T's whole val split).
    """
    rows, seen_real = [], set()
    vs_pair = versus_real_pair(cfg, results)
    for v, res, syn_dir in results:
        common = {"target": v.target, "source": v.source, "shots": str(v.shots)}
        val = {"val_per_class": str(v.shots) if v.caps_val else ALL}
        if v.is_real_pair:
            rows.append(
                {**common, "variant": REAL_TS, "arm": "real", "auc_in": _auc(res, REAL_TEST, "real")}
                | {"auc_cross": _auc(res, v.source, "real"), **val}
            )
            continue
        if (v.target, v.shots) not in seen_real and not v.is_augmentation:
            seen_real.add((v.target, v.shots))
            rows.append(
                {**common, "variant": REAL_ONLY, "arm": "real", "auc_in": _auc(res, REAL_TEST, "real")}
                | {"auc_cross": _auc(res, v.source, "real"), **val}
            )
        if v.is_augmentation and (v.target, "aug-real") not in seen_real:
            seen_real.add((v.target, "aug-real"))
            rows.append(
                {**common, "variant": AUG_REAL, "arm": "real", "auc_in": _auc(res, REAL_TEST, "real")}
                | {"auc_cross": _auc(res, v.source, "real"), **val}
            )
        m = res.metrics
        for arm in [a for a in (res.utility.arm_order() if res.utility else []) if a != "real"]:
            din, dx = _delta(res, REAL_TEST, arm), _delta(res, v.source, arm)
            ts = vs_pair.get((v.target, v.label), {})
            tin, tx = _pair_delta(ts, REAL_TEST, arm), _pair_delta(ts, v.source, arm)
            rows.append(
                {
                    **common,
                    "variant": v.label,
                    "arm": arm,
                    "headline": arm == headline_arm(cfg, res),
                    "auc_in": _auc(res, REAL_TEST, arm),
                    **{f"{k}_in": x for k, x in din.items()},
                    "auc_cross": _auc(res, v.source, arm),
                    **{f"{k}_cross": x for k, x in dx.items()},
                    **{f"{k}_ts_in": x for k, x in tin.items()},
                    **{f"{k}_ts_cross": x for k, x in tx.items()},
                    "fid": m.fid,
                    "reference_encoder": m.reference_encoder,
                    "memorization_rate": m.memorization_rate,
                    "mia_auc": m.membership_auc,
                    **{f"auc_{n}": _auc(res, n, arm) for n in cfg.utility.external_test},
                    **val,
                    "synthetic_dir": syn_dir,
                }
            )
    return rows


def _f(x, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _ci(r: dict, side: str) -> str:
    if r.get(f"delta_{side}") is None:
        return "-"
    return f"{_f(r[f'delta_{side}'], True)} [{_f(r[f'ci_low_{side}'], True)}, {_f(r[f'ci_high_{side}'], True)}]"


def encoder_line(rows: list[dict]) -> str:
    """Which feature space the FID column was measured in (rows of old runs carry none)."""
    label = next((r["reference_encoder"] for r in rows if r.get("reference_encoder")), None)
    if label:
        return f"Reference encoder: **{label}** (FID (T) on equal-sized sets)."
    return "Reference encoder: **none** (old instrument): FID (T) on each run's own classifier features."


def table(rows: list[dict]) -> list[str]:
    head = "| T (S) | variant | K | arm | in-site AUC | Δ in-site [95% CI] | cross-site AUC | Δ cross-site [95% CI] "
    lines = [head + "| FID (T) | memorisation | MIA AUC |", "|" + "---|" * 11]
    for r in rows:
        arm = f"**{r['arm']}**" if r.get("headline") else r["arm"]
        lines.append(
            f"| {r['target']} ({r['source']}) | {r['variant']} | {r['shots']} | {arm} | {_f(r['auc_in'])} | "
            f"{_ci(r, 'in')} | {_f(r['auc_cross'])} | {_ci(r, 'cross')} | {_f(r.get('fid'))} | "
            f"{_f(r.get('memorization_rate'))} | {_f(r.get('mia_auc'))} |"
        )
    return lines


def _cross_site_bars(ax, rows: list[dict], target: str, source: str) -> None:
    """Cross-site AUC at K=all: real T only, real T+S, and each augmentation arm (headline mix)."""
    bars = [
        (r["variant"], r["auc_cross"])
        for r in rows
        if r["target"] == target
        and r["auc_cross"] is not None
        and (r["variant"] in (AUG_REAL, REAL_TS) or (r["variant"].startswith("aug:") and r.get("headline")))
    ]
    names = [b[0] for b in bars]
    colors = [COLORS.get(n, "tab:cyan") for n in names]
    ax.bar(range(len(bars)), [b[1] for b in bars], color=colors)
    ax.set_xticks(range(len(bars)), names, rotation=20, fontsize=7)
    ax.set_ylim(0, 1)
    ax.axhline(0.5, color="k", lw=0.5, ls=":")
    ax.set_ylabel(f"AUC on {source} test (cross-site)")
    ax.set_title(f"target {target}: all of T's train images", fontsize=9)


def auc_vs_k(cfg: MultisiteConfig, rows: list[dict], out: Path) -> Path:
    """In-site AUC vs K per target: real only, target-only, LoRA, full, joint (headline mix), real T+S at K=all.

    With a real T+S row, a second row of panels: cross-site AUC of real T only, real T+S and the
    device-type augmentation arms, side by side.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [str(k) for k in sorted(cfg.shots, key=lambda k: (k == "all", k if k != "all" else 0))]
    targets = cfg.target_sites
    cross = any(r["variant"] == REAL_TS for r in rows)
    fig, axes = plt.subplots(1 + cross, len(targets), figsize=(5 * len(targets), 3.6 * (1 + cross)), squeeze=False)
    for ax, t in zip(axes[0], targets):
        for variant in (REAL_ONLY, "target-only", "lora", "full", "joint", REAL_TS):
            pts = [
                (ks.index(r["shots"]), r["auc_in"])
                for r in rows
                if r["target"] == t
                and r["variant"] == variant
                and (variant in (REAL_ONLY, REAL_TS) or r.get("headline"))
                and r["shots"] in ks
                and r["auc_in"] is not None
            ]
            if pts:
                x, y = zip(*sorted(pts))
                style = {REAL_ONLY: "s--", REAL_TS: "*"}.get(variant, "o-")
                ax.plot(x, y, style, color=COLORS[variant], label=variant, markersize=10 if variant == REAL_TS else 6)
        ax.set_xticks(range(len(ks)), ks)
        ax.set_xlabel("K labelled target images per class")
        ax.set_ylabel(f"AUC on {t} test")
        ax.set_title(f"target {t} (source {cfg.source_of(t)})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if cross:
        for ax, t in zip(axes[1], targets):
            _cross_site_bars(ax, rows, t, cfg.source_of(t))
    fig.tight_layout()
    path = out / PLOT
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sample_grids(cfg: MultisiteConfig, domains: dict[str, str], results, out: Path, per_row: int = 8) -> list[Path]:
    """One PNG per domain: real images of that site, then every synthetic set sampled under its condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from busgen.measure.arrays import read_splits

    paths = []
    for site, domain in domains.items():
        rows = [(f"real {site}", read_splits(cfg.sites[site], ["test"], cfg.classes))]
        seen = set()
        for v, _, syn_dir in results:
            if v.domains == (site,) and syn_dir not in seen:
                seen.add(syn_dir)
                name = v.label if not v.method else f"{v.label} K={v.shots} (T={v.target})"
                rows.append((name, read_splits(syn_dir, None, cfg.classes)))
        fig, axes = plt.subplots(len(rows), per_row, figsize=(per_row * 1.1, len(rows) * 1.25), squeeze=False)
        for i, (name, (images, labels, _, _)) in enumerate(rows):
            labels = np.asarray(labels)
            pick = [j for c in cfg.classes for j in np.flatnonzero(labels == c)[: per_row // len(cfg.classes)]]
            for j, ax in enumerate(axes[i]):
                ax.axis("off")
                if j < len(pick):
                    ax.imshow(images[pick[j]], cmap="gray", vmin=0, vmax=255)
                    ax.set_title(str(labels[pick[j]]), fontsize=6)
            axes[i][0].text(-0.1, 0.5, name, transform=axes[i][0].transAxes, ha="right", va="center", fontsize=7)
        fig.suptitle(f"domain {domain} (site {site}): real test images, then synthetic sets under this condition")
        fig.tight_layout(rect=(0.12, 0, 1, 0.97))
        path = out / f"samples_{site}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def _versus_pair(r: dict, rows: list[dict]) -> str:
    """``; vs real T+S ...`` for an augmentation row, when the run has the real T+S control ("" otherwise)."""
    pair = next((x for x in rows if x["target"] == r["target"] and x["variant"] == REAL_TS), None)
    if pair is None:
        return ""
    beats = (r.get("ci_low_ts_cross") or -1) > 0
    verdict = f": **{'beats' if beats else 'does not beat'}** S's labelled images" if "delta_ts_cross" in r else ""
    return (
        f"; vs real T+S (cross-site AUC {_f(pair['auc_cross'])}): Δ {_ci(r, 'ts_cross')}{verdict} "
        f"(in-site Δ {_ci(r, 'ts_in')})"
    )


def target_check(cfg: MultisiteConfig, rows: list[dict]) -> list[str]:
    """The issue's targets as measured: the K-shot gain at ``target_shots``, the augmentation's cross-site gain."""
    lines = []
    k = str(cfg.target_shots)
    for r in rows:
        if r["shots"] == k and r["variant"] in ("lora", "full") and r.get("headline"):
            ok = (r.get("delta_in") or -1) >= cfg.target_delta and (r.get("ci_low_in") or -1) > 0
            lines.append(
                f"- {r['target']} K={k} {r['variant']} ({r['arm']}): Δ in-site {_ci(r, 'in')} vs target "
                f">= {cfg.target_delta:+.2f} with CI above 0: **{'met' if ok else 'missed'}**"
            )
    aug = [r for r in rows if r["variant"].startswith("aug:") and r.get("headline")]
    for r in aug:
        if r["variant"] == f"aug:{r['target']}":
            continue  # the same-domain control
        same = next((x for x in aug if x["target"] == r["target"] and x["variant"] == f"aug:{r['target']}"), {})
        ok = (r.get("delta_cross") or -1) > 0
        vs_same = "" if same.get("delta_cross") is None else f"; same-domain synthetic: Δ {_ci(same, 'cross')}"
        lines.append(
            f"- {r['target']} device augmentation {r['variant']} ({r['arm']}): Δ cross-site AUC on "
            f"{r['source']} {_ci(r, 'cross')}: **{'raised' if ok else 'not raised'}** over real T only{vs_same}"
            + _versus_pair(r, rows)
        )
    if not any(r["variant"] in ("lora", "full") and r["shots"] == k for r in rows):
        lines.append(f"- K={k} few-shot target: no finished LoRA / full fine-tune variant at K={k}")
    if not aug:
        lines.append("- device-type augmentation: no finished variant (needs the joint generator)")
    return lines


def instrument(cfg: MultisiteConfig, rows: list[dict]) -> list[str]:
    """What the classifiers validated on and which controls ran; nothing for rows from before these were recorded."""
    if not any("val_per_class" in r for r in rows):
        return []  # an earlier protocol's rows: K-shot arms validated on T's whole val split (its report says so)
    pair = any(r["variant"] == REAL_TS for r in rows)
    return [
        f"Validation (early stopping and the Youden threshold): a K-shot row's classifiers use K images per class of "
        f"T's val split (seed {cfg.support_seed}, none of them a support image; the rest of T's val split is a "
        "fidelity/privacy reference only); `all` rows use T's whole val split. Cross-site = S's test split alone. "
        + (
            f"{REAL_TS} = one classifier on T's and S's real train images (no synthetic): the control that tells "
            "device-type augmentation apart from S's labelled images (Δ vs real T+S: seed-paired, same cases)."
            if pair
            else f"No {REAL_TS} control in this run (`real_target_source: false`)."
        )
    ]


def write(cfg: MultisiteConfig, domains, counts, results, timings: dict, seconds: float, pending=()) -> dict:
    """results.json/.csv, auc_vs_k.png, samples_<site>.png and report.md in ``cfg.out``; returns the summary."""
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = rows_of(cfg, results)
    write_tables(str(out / "results"), [{k: v for k, v in r.items() if k != "synthetic_dir"} for r in rows])
    plot = auc_vs_k(cfg, rows, out)
    grids = sample_grids(cfg, domains, results, out)
    record = {"suite": cfg.name, "config": cfg.model_dump(mode="json"), "train_counts": counts}
    record |= {"rows": rows, "timings": timings, "seconds": seconds, "pending": list(pending)}
    (out / RESULTS_JSON).write_text(json.dumps(record, indent=2, default=str))
    md = [
        f"# Multi-site protocol: {cfg.name}",
        "",
        *([cfg.notes.strip(), ""] if cfg.notes.strip() else []),
        f"Sites: {', '.join(f'{s} = {p} (domain {domains[s]})' for s, p in cfg.sites.items())}. "
        f"Task: {' vs '.join(cfg.classes)} (positive: {cfg.positive}). Train counts per target: {counts}.",
        f"Real arm = the K support images per class of T (seed {cfg.support_seed}; `all` = T's whole train split; "
        "the adapter's support set, same sha256). Δ = seed-paired AUC(arm) - AUC(real only) with a paired "
        f"bootstrap 95% CI. Bold arm = the mix fixed up front ({cfg.headline_arm}). "
        f"Seeds {cfg.utility.seeds}, ratios {cfg.utility.ratios}"
        + (" (dry run: every size shrunk)." if cfg.dry_run else "."),
        *instrument(cfg, rows),
        "",
        encoder_line(rows),
        "",
        *table(rows),
        "",
        *(["Not run (a later run of the same suite adds them):", "", *[f"- {p}" for p in pending], ""] * bool(pending)),
        "## Targets",
        "",
        *target_check(cfg, rows),
        "",
        f"![AUC vs K]({plot.name})",
        "",
        "## Sample grids per domain",
        "",
        *[f"![{p.stem}]({p.name})" for p in grids],
        "",
        "## Wall time per stage (seconds)",
        "",
        *[f"- {k}: {v}" for k, v in timings.items()],
        f"- total this invocation: {seconds}",
    ]
    (out / "report.md").write_text("\n".join(md) + "\n")
    return {"report": str(out / "report.md"), "rows": len(rows), "seconds": seconds, "plot": str(plot)}
