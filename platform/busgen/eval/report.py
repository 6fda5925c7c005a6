"""Write an evaluation run's results: tables (Parquet + CSV), ``results.json`` and ``report.md`` with plots.

Only the record returned by `busgen.eval.runner.run_suite` (plus ``samples.npz`` and
``nn_pairs.png`` it leaves in the folder) is read here, so a report can be re-rendered
from ``results.json`` without re-running anything, and a part that did not run
(e.g. no privacy audit) becomes a one-line note instead of an error.

Every metric with a bootstrap CI is printed as ``value [low, high]``; plots are PNGs
next to ``report.md`` so the folder renders on GitHub or in any Markdown viewer.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from busgen.data.report import Report, image_grid
from busgen.eval.suites import REAL_TEST, UtilitySettings, arm_name

SYN_ONLY = arm_name(None, synthetic_only=True)  # the synthetic-only arm's name in rows and deltas


def _ci(row: dict, m: str) -> str:
    v, lo, hi = row.get(m), row.get(f"{m}_ci_low"), row.get(f"{m}_ci_high")
    return "n/a" if v is None else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def _arm_order(rows: list[dict]) -> list[str]:
    """Arms by ratio, synthetic-only last: the x axis of the utility plot."""
    keyed = {r["arm"]: (r["synthetic_only"], r["ratio"]) for r in rows}
    return sorted(keyed, key=keyed.get)


def arm_summary(rows: list[dict], test_set: str) -> dict[str, dict]:
    """Arm -> mean and std of AUC over seeds on one test set (successful trials only)."""
    by_arm = defaultdict(list)
    for r in rows:
        if r["test_set"] == test_set and r["status"] == "ok" and r.get("auc") is not None:
            by_arm[r["arm"]].append(r["auc"])
    return {
        a: {"auc_mean": float(np.mean(v)), "auc_std": float(np.std(v)), "n_seeds": len(v)} for a, v in by_arm.items()
    }


def headline_metrics(record: dict) -> dict:
    """Flat scalars for the job summary line and ``results.json["metrics"]``."""
    out: dict = {}
    if "utility" in record:
        summary = arm_summary(record["utility"]["rows"], REAL_TEST)
        if "real" in summary:
            out["auc_real_only"] = summary["real"]["auc_mean"]
        mixed = {a: s for a, s in summary.items() if a != "real"}
        if mixed:
            best = max(mixed, key=lambda a: mixed[a]["auc_mean"])
            out.update(best_arm=best, auc_best_arm=mixed[best]["auc_mean"])
            if "auc_real_only" in out:
                out["delta_auc_best_vs_real"] = mixed[best]["auc_mean"] - out["auc_real_only"]
        out["utility_trials_failed"] = sum(t["status"] != "ok" for t in record["utility"]["trials"])
        deltas = record["utility"].get("deltas", {}).get(REAL_TEST, {})
        if SYN_ONLY in deltas:
            out["delta_auc_synthetic_only"] = deltas[SYN_ONLY]["value"]
        if best := best_mix(deltas):
            out["delta_auc_best_mixed"] = deltas[best]["value"]
    if "fidelity" in record:
        f = record["fidelity"]
        out.update(
            {
                f"fid_{k}" if k != "fid" else "fid": f["overall"][k]
                for k in ("fid", "precision", "recall")
                if k in f["overall"]
            }
        )
        out["detector_auc"] = f["detector"]["auc"]
    if "privacy" in record:
        mem = record["privacy"]["memorization"]
        out.update(
            n_copies=mem["n_copies"],
            n_mem=mem["n_mem"],
            memorization_rate=mem.get("memorization_rate"),
            n_train_copied=mem.get("n_train_copied"),
        )
        if "pixel" in mem:
            out.update(
                p95_pixel_sim=mem["pixel"]["p95_top1_sim"], share_pixel_sim_gt=mem["pixel"]["share_sim_above_threshold"]
            )
        if "membership" in record["privacy"]:
            out["membership_auc"] = record["privacy"]["membership"]["auc"]
            out["membership_tpr_at_1pct_fpr"] = record["privacy"]["membership"]["tpr_at_1pct_fpr"]
    if "sampler_steps" in record:
        ok = [r for r in record["sampler_steps"]["rows"] if r["status"] == "ok"]
        if ok:
            best = min(ok, key=lambda r: r["fid"])
            out.update(best_sampler=f"{best['sampler']}/{best['steps']}", best_sampler_fid=best["fid"])
    return out


# ----------------------------------------------------------------------------- files


def write_table(path_stem: Path, rows: list[dict]) -> None:
    """``<stem>.parquet`` and ``<stem>.csv`` from a list of flat dicts."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    columns = list(dict.fromkeys(k for row in rows for k in row))  # union: a failed trial's row lacks its metrics
    table = pa.Table.from_pylist([{k: row.get(k) for k in columns} for row in rows])
    pq.write_table(table, path_stem.with_suffix(".parquet"))
    pacsv.write_csv(table, path_stem.with_suffix(".csv"))


def write_results(out: Path, record: dict) -> None:
    """results.parquet/.csv (utility rows), sampler_steps.parquet/.csv and results.json."""
    out.mkdir(parents=True, exist_ok=True)
    if record.get("utility", {}).get("rows"):
        write_table(out / "results", record["utility"]["rows"])
    if record.get("sampler_steps", {}).get("rows"):
        write_table(out / "sampler_steps", record["sampler_steps"]["rows"])
    (out / "results.json").write_text(json.dumps(record, indent=2, default=_json_default))


def _json_default(v):
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    return str(v)


# ----------------------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_auc_vs_ratio(rows: list[dict], test_set: str):
    """AUC per arm with bootstrap 95% CI bars, one marker per seed (offset), line through the seed means."""
    plt = _plt()
    arms = _arm_order([r for r in rows if r["test_set"] == test_set])
    seeds = sorted({r["seed"] for r in rows})
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k, seed in enumerate(seeds):
        pts = [
            (arms.index(r["arm"]), r)
            for r in rows
            if r["test_set"] == test_set and r["seed"] == seed and r["status"] == "ok" and r["arm"] in arms
        ]
        if not pts:
            continue
        x = np.array([p for p, _ in pts]) + 0.08 * (k - (len(seeds) - 1) / 2)
        y = np.array([r["auc"] for _, r in pts])
        err = np.array([[r["auc"] - r["auc_ci_low"], r["auc_ci_high"] - r["auc"]] for _, r in pts]).T
        ax.errorbar(x, y, yerr=np.clip(err, 0, None), fmt="o", capsize=3, ms=4, label=f"seed {seed}")
    summary = arm_summary(rows, test_set)
    ax.plot(
        [i for i, a in enumerate(arms) if a in summary],
        [summary[a]["auc_mean"] for a in arms if a in summary],
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


def plot_rocs(rocs: dict[str, dict], test_set: str):
    """ROC curve of every arm (first seed) on one test set."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 4))
    for arm, per_set in rocs.items():
        if test_set in per_set:
            roc = per_set[test_set]
            ax.plot(roc["fpr"], roc["tpr"], lw=1.2, label=f"{arm} (AUC {roc['auc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(f"ROC on {test_set}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def plot_fid_vs_steps(rows: list[dict]):
    """FID against sampling steps, one line per sampler."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for sampler in sorted({r["sampler"] for r in rows}):
        pts = sorted((r["steps"], r["fid"]) for r in rows if r["sampler"] == sampler and r["status"] == "ok")
        if pts:
            ax.plot(*zip(*pts), "o-", label=sampler)
    ax.set_xscale("log")
    steps = sorted({r["steps"] for r in rows})
    ax.set_xticks(steps, [str(k) for k in steps])
    ax.minorticks_off()
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("FID (classifier features)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


# ----------------------------------------------------------------------------- report sections


def _not_run(rep: Report, part: str) -> None:
    rep.text(f"_Not run in this suite (`{part}.enabled=false`, or its inputs were not given)._")


def _utility_table(rep: Report, rows: list[dict], test_set: str) -> None:
    sel = sorted(
        (r for r in rows if r["test_set"] == test_set), key=lambda r: (r["synthetic_only"], r["ratio"], r["seed"])
    )
    rep.table(
        [
            "arm",
            "seed",
            "AUC [95% CI]",
            "sensitivity [95% CI]",
            "specificity [95% CI]",
            "accuracy",
            "balanced acc",
            "ECE",
            "threshold",
            "n",
            "status",
        ],
        [
            [
                r["arm"],
                r["seed"],
                _ci(r, "auc"),
                _ci(r, "sensitivity"),
                _ci(r, "specificity"),
                _f(r.get("accuracy")),
                _f(r.get("balanced_accuracy")),
                _f(r.get("ece")),
                _f(r.get("threshold")),
                r.get("n", "n/a"),
                r["status"],
            ]
            for r in sel
        ],
    )
    summary = arm_summary(rows, test_set)
    if any(s["n_seeds"] > 1 for s in summary.values()):
        rep.text("Across seeds:")
        rep.table(
            ["arm", "mean AUC", "std", "seeds"],
            [
                [a, _f(summary[a]["auc_mean"]), _f(summary[a]["auc_std"]), summary[a]["n_seeds"]]
                for a in _arm_order(rows)
                if a in summary
            ],
        )


def best_mix(deltas: dict[str, dict]) -> str | None:
    """The real + synthetic arm with the largest AUC gain over real only (None without mixed arms)."""
    mixed = [a for a in deltas if a != SYN_ONLY]
    return max(mixed, key=lambda a: deltas[a]["value"]) if mixed else None


def _delta_ci(d: dict) -> str:
    return f"{d['value']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"


def _target_line(what: str, d: dict | None, target: float) -> str:
    if d is None:
        return f"- {what}: not measured"
    verdict = "met" if d["value"] >= target else f"missed by {target - d['value']:.3f}"
    return f"- {what} (target Δ ≥ {target:+.2f}): Δ = {_delta_ci(d)}, **{verdict}**"


def _deltas_section(
    rep: Report, rows: list[dict], test_set: str, deltas: dict[str, dict], utility_params: dict | None
) -> None:
    """Seed-paired AUC differences vs real only; with ``utility_params``, BUSGen's two claims judged on them."""
    if not deltas:
        return
    summary = arm_summary(rows, test_set)
    rep.text(
        "AUC difference vs real only on the same test cases (each seed paired with the real-only classifier of "
        "that seed; mean over seeds; 95% CI from a paired bootstrap over test cases, which cancels the test set's "
        "shared sampling noise):"
    )
    rep.table(
        ["arm", "mean AUC", "Δ AUC vs real [95% CI]", "seeds"],
        [
            [a, _f(summary.get(a, {}).get("auc_mean")), _delta_ci(d), d["n_runs"]]
            for a in _arm_order(rows)
            if (d := deltas.get(a))
        ],
    )
    if utility_params is None:
        return
    best = best_mix(deltas)
    defaults = UtilitySettings()  # for records written before the targets were settings
    rep.text(
        "Targets (point estimates; the CI shows how sure that is):\n\n"
        + "\n".join(
            [
                _target_line(
                    "synthetic only vs real only",
                    deltas.get(SYN_ONLY),
                    utility_params.get("target_synthetic_only_delta", defaults.target_synthetic_only_delta),
                ),
                _target_line(
                    f"best mix ({best}) vs real only" if best else "best mix vs real only",
                    deltas.get(best) if best else None,
                    utility_params.get("target_mixed_delta", defaults.target_mixed_delta),
                ),
            ]
        )
    )


def utility_section(rep: Report, util: dict | None, utility_params: dict | None = None) -> None:
    rep.section("Downstream diagnosis (utility)")
    if not util:
        return _not_run(rep, "utility")
    rows = util["rows"]
    rep.text(
        "Classifier trained on the real train split (+ synthetic at each synthetic:real ratio, or synthetic only), "
        "early-stopped on real validation, tested on the real test split. Sensitivity and specificity at the "
        "Youden threshold chosen on real validation. CIs: percentile bootstrap over test cases."
    )
    _utility_table(rep, rows, REAL_TEST)
    deltas = util.get("deltas", {})
    _deltas_section(rep, rows, REAL_TEST, deltas.get(REAL_TEST, {}), utility_params or {})
    rep.plot("auc_vs_ratio.png", plot_auc_vs_ratio(rows, REAL_TEST), "AUC vs synthetic ratio")
    rep.plot("roc.png", plot_rocs(util["roc"], REAL_TEST), "ROC curves, first seed")
    failed = [t for t in util["trials"] if t["status"] != "ok"]
    if failed:
        rep.text(
            f"**{len(failed)} trial(s) failed:** "
            + "; ".join(f"{t['ratio']}/{t['seed']}: {t['error'][:200]}" for t in failed)
        )
    for name in sorted({r["test_set"] for r in rows} - {REAL_TEST}):
        rep.section(
            f"Cross-dataset: tested on `{name}`",
            "Same classifiers, trained on this suite's data, tested on another dataset.",
        )
        _utility_table(rep, rows, name)
        _deltas_section(rep, rows, name, deltas.get(name, {}), None)
        rep.plot(f"roc_{name}.png", plot_rocs(util["roc"], name), f"ROC on {name}")


def _fid_row(name: str, m: dict) -> list:
    return [name, m.get("n_real"), m.get("n_synthetic")] + [
        _f(m.get(k), 4) for k in ("fid", "kid", "precision", "recall", "density", "coverage")
    ]


def fidelity_section(rep: Report, fid: dict | None, out: Path) -> None:
    rep.section("Fidelity and diversity")
    if not fid:
        return _not_run(rep, "fidelity")
    rep.text(
        "Features: penultimate layer of the real-only classifier (in-domain encoder). Reference: held-out real "
        "images. The `real train vs held-out` row is the floor these numbers reach between two real sets."
    )
    rows = [_fid_row("overall", fid["overall"])] + [_fid_row(c, m) for c, m in fid["per_class"].items()]
    rows.append(_fid_row("real train vs held-out", fid["real_vs_real"]))
    rep.table(["set", "n real", "n synthetic", "FID", "KID", "precision", "recall", "density", "coverage"], rows)
    if "ms_ssim" in fid:
        classes = sorted(set(fid["ms_ssim"]["real"]) | set(fid["ms_ssim"]["synthetic"]))
        rep.text(
            "MS-SSIM between random same-class pairs (lower = more diverse; synthetic >> real suggests mode collapse):"
        )
        rep.table(
            ["class", "real", "synthetic"],
            [[c, _f(fid["ms_ssim"]["real"].get(c)), _f(fid["ms_ssim"]["synthetic"].get(c))] for c in classes],
        )
    if (out / "samples.npz").is_file():
        with np.load(out / "samples.npz") as z:
            rep.figure(
                "samples.png",
                image_grid({k: z[k] for k in z.files}, label_width=110),
                "real (R) vs synthetic (S) images per class",
            )


def privacy_section(rep: Report, priv: dict | None, fid: dict | None, out: Path) -> None:
    rep.section("Privacy")
    if fid and "detector" in fid:
        d = fid["detector"]
        rep.text(
            f"Real-vs-synthetic detector (5-fold logistic regression on classifier features): AUC "
            f"**{d['auc']:.3f}** on {d['n_real']} real / {d['n_synthetic']} synthetic (0.5 = indistinguishable)."
        )
    if not priv:
        return _not_run(rep, "privacy")
    mem = priv["memorization"]
    rows = [
        ["synthetic images audited", mem["n_synthetic"]],
        ["N_copies: synthetic images that copy a training image (either space)", mem["n_flagged"]],
        ["... pixel near-duplicates", mem["n_copies"]],
        ["... copy-encoder near-duplicates", mem["n_mem"]],
        ["memorisation rate (flagged / audited)", _f(mem.get("memorization_rate"), 4)],
        ["N_mem: distinct training images copied", mem.get("n_train_copied", "n/a")],
    ]
    for space in ("pixel", "feature"):
        if space in mem:
            thr = mem["config"]["similar_threshold"]
            rows += [
                [f"{space}: p95 top-1 cosine similarity", _f(mem[space]["p95_top1_sim"])],
                [f"{space}: share with top-1 similarity > {thr}", _f(mem[space]["share_sim_above_threshold"])],
                [f"{space}: min NN distance ratio", _f(mem[space]["min_ratio"])],
            ]
    rep.text("Nearest-neighbour memorisation audit against the generator's training images:")
    rep.table(["measure", "value"], rows)
    if (out / "nn_pairs.png").is_file():
        rep.text("![closest synthetic / training pairs](nn_pairs.png)")
    if "membership" in priv:
        m = priv["membership"]
        rep.text(
            f"Membership inference by denoising error ({m['prediction_type']} target, timesteps {m['timesteps']}): "
            f"{m['n_members']} training images vs {m['n_non_members']} held-out real images."
        )
        rep.table(
            ["AUC", "TPR @ 1% FPR", "mean error members", "mean error non-members"],
            [
                [
                    _f(m["auc"]),
                    _f(m["tpr_at_1pct_fpr"]),
                    _f(m["mean_error_members"], 5),
                    _f(m["mean_error_non_members"], 5),
                ]
            ],
        )
    else:
        rep.text("_Membership inference needs the generator (`model`); only a synthetic set was given._")


def sampler_section(rep: Report, steps: dict | None) -> None:
    if not steps:
        return
    rows = sorted(steps["rows"], key=lambda r: (r["sampler"], r["steps"]))
    rep.section("FID vs sampler and steps")
    rep.table(
        ["sampler", "steps", "FID", "KID", "precision", "recall", "img/s", "status"],
        [
            [
                r["sampler"],
                r["steps"],
                _f(r.get("fid"), 4),
                _f(r.get("kid"), 4),
                _f(r.get("precision")),
                _f(r.get("recall")),
                _f(r.get("images_per_s"), 2),
                r["status"],
            ]
            for r in rows
        ],
    )
    rep.plot("fid_vs_steps.png", plot_fid_vs_steps(rows), "FID vs steps")


def write_report(out: str | Path, record: dict) -> Path:
    """Render ``report.md`` (and its PNGs) into ``out`` from a results record."""
    out = Path(out)
    rep = Report(out, f"Evaluation report: {record['suite']}")
    p, inputs = record["params"], record["inputs"]
    rep.table(
        ["field", "value"],
        [
            ["run id", record["run_id"]],
            ["timestamp", record["timestamp"]],
            ["real data", inputs["real_dir"]],
            ["generator", inputs.get("model") or "n/a"],
            ["synthetic set", inputs.get("synthetic_dir") or "n/a"],
            ["task", f"{' vs '.join(p['classes'])} (positive: {p['positive']})"],
            ["seconds", record.get("seconds", "n/a")],
        ],
    )
    rep.text(
        "Tables: [results.csv](results.csv) / results.parquet (one row per trial and test set); "
        "everything: [results.json](results.json)."
    )
    utility_section(rep, record.get("utility"), record.get("params", {}).get("utility"))
    fidelity_section(rep, record.get("fidelity"), out)
    privacy_section(rep, record.get("privacy"), record.get("fidelity"), out)
    sampler_section(rep, record.get("sampler_steps"))
    if record.get("timings"):
        rep.section("Timings").table(["stage", "seconds"], [[k, v] for k, v in record["timings"].items()])
    return rep.write()
