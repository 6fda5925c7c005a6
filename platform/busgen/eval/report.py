"""Render an evaluation run's ``report.md`` (tables with CIs, PNG plots) from its `EvalResult`.

Only the result (plus ``samples.npz`` and ``nn_pairs.png`` the runner leaves in the folder)
is read here, so a report can be re-rendered from ``results.json``
(``write_report(out, EvalResult.read(out))``) without re-running anything, and a part
that did not run (e.g. no privacy audit) becomes a one-line note instead of an error.

Every metric with a bootstrap CI is printed as ``value [low, high]``; plots are PNGs
next to ``report.md`` so the folder renders on GitHub or in any Markdown viewer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from busgen.data.report import Report, image_grid
from busgen.eval import plots
from busgen.eval.results import (
    CI,
    EvalResult,
    FidelityResult,
    PairedDelta,
    PrivacyResult,
    ReferenceFidelity,
    ReferenceMetrics,
    SamplerStepsResult,
    SetMetrics,
    UtilityResult,
)
from busgen.eval.suites import REAL_TEST, SYN_ONLY, UtilitySettings


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def _ci(ci: CI | None) -> str:
    return "n/a" if ci is None else ci.text()


def _not_run(rep: Report, part: str) -> None:
    rep.text(f"_Not run in this suite (`{part}.enabled=false`, or its inputs were not given)._")


# ----------------------------------------------------------------------------- utility


def _utility_table(rep: Report, util: UtilityResult, test_set: str) -> None:
    rows = sorted((r for r in util.rows() if r.test_set == test_set), key=lambda r: (r.synthetic_only, r.ratio, r.seed))
    header = ["arm", "seed", "AUC [95% CI]", "sensitivity [95% CI]", "specificity [95% CI]"]
    header += ["accuracy", "balanced acc", "ECE", "threshold", "n", "status"]
    table = []
    for r in rows:
        m = r.metrics
        cis = [_ci(m.ci(k) if m else None) for k in ("auc", "sensitivity", "specificity")]
        points = [_f(getattr(m, k, None)) for k in ("accuracy", "balanced_accuracy", "ece", "threshold")]
        table.append([r.arm, r.seed, *cis, *points, m.n if m else "n/a", r.status])
    rep.table(header, table)
    summary = util.arm_summary(test_set)
    if any(s.n_seeds > 1 for s in summary.values()):
        rep.text("Across seeds:")
        rep.table(
            ["arm", "mean AUC", "std", "seeds"],
            [
                [a, _f(summary[a].auc_mean), _f(summary[a].auc_std), summary[a].n_seeds]
                for a in util.arm_order()
                if a in summary
            ],
        )


def _target_line(what: str, d: PairedDelta | None, target: float) -> str:
    if d is None:
        return f"- {what}: not measured"
    verdict = "met" if d.value >= target else f"missed by {target - d.value:.3f}"
    return f"- {what} (target Δ ≥ {target:+.2f}): Δ = {d.text(signed=True)}, **{verdict}**"


def _deltas_section(rep: Report, util: UtilityResult, test_set: str, targets: UtilitySettings | None) -> None:
    """Seed-paired AUC differences vs real only; with ``targets``, BUSGen's two claims judged on them."""
    deltas = util.deltas.get(test_set, {})
    if not deltas:
        return
    summary = util.arm_summary(test_set)
    how = (
        "95% CI: mean ± t·√(sd²_seeds/n + var_cases), the seed spread by t and the test-case noise by a paired "
        "bootstrap over cases, which cancels the test set's shared sampling noise"
        if util.stats_version >= 2 and (targets is None or targets.delta_ci == "cases+seeds")
        else "95% CI from a paired bootstrap over test cases, which cancels the test set's shared sampling noise"
    )
    rep.text(
        "AUC difference vs real only on the same test cases (each seed paired with the real-only classifier of "
        f"that seed; mean over seeds; {how}):"
    )
    rep.table(
        ["arm", "mean AUC", "Δ AUC vs real [95% CI]", "seeds"],
        [
            [a, _f(summary[a].auc_mean if a in summary else None), d.text(signed=True), d.n_runs]
            for a in util.arm_order()
            if (d := deltas.get(a))
        ],
    )
    if targets is None:
        return
    best = util.best_recipe(test_set)
    what = "best mix on validation" if util.stats_version >= 2 else "best mix"
    lines = [
        _target_line("synthetic only vs real only", deltas.get(SYN_ONLY), targets.target_synthetic_only_delta),
        _target_line(
            f"{what} ({best}) vs real only" if best else f"{what} vs real only",
            deltas.get(best) if best else None,
            targets.target_mixed_delta,
        ),
    ]
    rep.text("Targets (point estimates; the CI shows how sure that is):\n\n" + "\n".join(lines))


def utility_section(rep: Report, util: UtilityResult | None, settings: UtilitySettings) -> None:
    rep.section("Downstream diagnosis (utility)")
    if not util:
        return _not_run(rep, "utility")
    rep.text(
        "Classifier trained on the real train split (+ synthetic at each synthetic:real ratio, or synthetic only), "
        "early-stopped on real validation, tested on the real test split. Sensitivity and specificity at the "
        "Youden threshold chosen on real validation. CIs: percentile bootstrap over test cases."
    )
    _utility_table(rep, util, REAL_TEST)
    _deltas_section(rep, util, REAL_TEST, settings)
    rep.plot("auc_vs_ratio.png", plots.auc_vs_ratio(util, REAL_TEST), "AUC vs synthetic ratio")
    if util.recipes is not None or util.scaling:  # results written before recipes existed have neither
        from busgen.eval.utility.report import recipes_section

        recipes_section(rep, util, settings)
        rep.section("Per-arm details")
    rep.plot("roc.png", plots.rocs(util.roc, REAL_TEST), "ROC curves, first seed")
    if failed := util.failed():
        rep.text(
            f"**{len(failed)} trial(s) failed:** "
            + "; ".join(f"{t.arm}/seed {t.seed}: {t.error[:200]}" for t in failed)
        )
    for name in util.test_sets():
        if name == REAL_TEST:
            continue
        rep.section(
            f"Cross-dataset: tested on `{name}`",
            "Same classifiers, trained on this suite's data, tested on another dataset.",
        )
        _utility_table(rep, util, name)
        _deltas_section(rep, util, name, None)
        rep.plot(f"roc_{name}.png", plots.rocs(util.roc, name), f"ROC on {name}")


# ----------------------------------------------------------------------------- fidelity and privacy


def _fid_row(name: str, m: SetMetrics) -> list:
    values = [_f(getattr(m, k), 4) for k in ("fid", "kid", "precision", "recall", "density", "coverage")]
    return [name, m.n_real, m.n_synthetic, *values]


def _ref_row(name: str, m: ReferenceMetrics) -> list:
    kid = "n/a" if m.kid is None else f"{m.kid:.4f} [{m.kid_ci_low:.4f}, {m.kid_ci_high:.4f}]"
    fid = "n/a" if m.fid is None else f"{m.fid:.3f} (n={m.fid_n})"
    prdc = [_f(getattr(m, k), 3) for k in ("precision", "recall", "density", "coverage")]
    return [name, m.n_real, m.n_synthetic, kid, fid, *prdc]


def reference_table(rep: Report, ref: ReferenceFidelity, what: str = "synthetic vs held-out real") -> None:
    """The headline fidelity table, always under the encoder's version and hash."""
    rep.text(
        f"Reference encoder: **{ref.encoder.label}** (frozen, shipped with busgen; images resized to "
        f"{ref.encoder.image_size} px). KID is unbiased, with a conservative 95% interval; FID is computed on "
        "equal-sized sets and its n is stated. The floor row is real val vs real test: what no difference reads."
    )
    if ref.detector_auc is not None:
        rep.text(
            f"Real-vs-synthetic detector on the reference features (5-fold logistic regression): AUC "
            f"**{ref.detector_auc:.3f}** (0.5 = indistinguishable)."
        )
    rows = [_ref_row(what, ref.synthetic)]
    if ref.floor is not None:
        rows.append(_ref_row("floor: real val vs real test", ref.floor))
    rep.table(
        ["set", "n real", "n synthetic", "KID [95% CI]", "FID (n)", "precision", "recall", "density", "coverage"], rows
    )


def fidelity_section(rep: Report, fid: FidelityResult | None, out: Path) -> None:
    rep.section("Fidelity and diversity")
    if not fid:
        return _not_run(rep, "fidelity")
    if fid.reference is not None:
        reference_table(rep, fid.reference)
        rep.text(
            "Secondary (not comparable across runs): the same metrics on this run's own real-only classifier "
            "features. The `real train vs held-out` row is their floor."
        )
    elif fid.legacy:
        rep.text(
            "Reference encoder: **none** (old instrument). These numbers were computed on this run's own "
            "real-only classifier features, before busgen shipped a frozen reference encoder: they are not "
            "comparable across runs, models or reports."
        )
        rep.text(
            "Features: penultimate layer of the real-only classifier (in-domain encoder). Reference: held-out real "
            "images. The `real train vs held-out` row is the floor these numbers reach between two real sets."
        )
    else:
        raise ValueError(
            "error: a fidelity result without the reference encoder's identity cannot be reported; "
            "measure it with busgen.measure.fidelity.reference_fidelity"
        )
    rows = [_fid_row("overall", fid.overall)] + [_fid_row(c, m) for c, m in fid.per_class.items()]
    rows.append(_fid_row("real train vs held-out", fid.real_vs_real))
    rep.table(["set", "n real", "n synthetic", "FID", "KID", "precision", "recall", "density", "coverage"], rows)
    if ms := fid.ms_ssim:
        rep.text(
            "MS-SSIM between random same-class pairs (lower = more diverse; synthetic >> real suggests mode collapse):"
        )
        classes = sorted(set(ms.real) | set(ms.synthetic))
        rep.table(["class", "real", "synthetic"], [[c, _f(ms.real.get(c)), _f(ms.synthetic.get(c))] for c in classes])
    if (out / "samples.npz").is_file():
        with np.load(out / "samples.npz") as z:
            rep.figure(
                "samples.png",
                image_grid({k: z[k] for k in z.files}, label_width=110),
                "real (R) vs synthetic (S) images per class",
            )


def privacy_section(rep: Report, priv: PrivacyResult | None, fid: FidelityResult | None, out: Path) -> None:
    rep.section("Privacy")
    if fid:
        d = fid.detector
        rep.text(
            f"Real-vs-synthetic detector (5-fold logistic regression on classifier features): AUC "
            f"**{d.auc:.3f}** on {d.n_real} real / {d.n_synthetic} synthetic (0.5 = indistinguishable)."
        )
    if not priv:
        return _not_run(rep, "privacy")
    mem = priv.memorization
    rows = [
        ["synthetic images audited", mem.n_synthetic],
        ["N_copies: synthetic images that copy a training image (either space)", mem.n_flagged],
        ["... pixel near-duplicates", mem.n_copies],
        ["... copy-encoder near-duplicates", mem.n_mem],
        ["memorisation rate (flagged / audited)", _f(mem.memorization_rate, 4)],
        ["N_mem: distinct training images copied", mem.n_train_copied],
    ]
    threshold = mem.config.get("similar_threshold")
    for space in ("pixel", "feature"):
        if stats := getattr(mem, space):
            rows += [
                [f"{space}: p95 top-1 cosine similarity", _f(stats.p95_top1_sim)],
                [f"{space}: share with top-1 similarity > {threshold}", _f(stats.share_sim_above_threshold)],
                [f"{space}: min NN distance ratio", _f(stats.min_ratio)],
            ]
    how = "Nearest-neighbour memorisation audit against the generator's training images"
    if mem.knn_k is not None:  # results before issue 26 carry neither field
        how += (
            f" (k-NN ratio around each synthetic image, k = {mem.knn_k}; copy encoder trained on "
            f"{mem.encoder_data or 'nothing: pixel space only'})"
        )
    rep.text(how + ":")
    rep.table(["measure", "value"], rows)
    if (out / "nn_pairs.png").is_file():
        rep.text("![closest synthetic / training pairs](nn_pairs.png)")
    if m := priv.membership:
        rep.text(
            f"Membership inference by denoising error ({m.prediction_type} target, timesteps {m.timesteps}): "
            f"{m.n_members} training images vs {m.n_non_members} held-out real images."
        )
        rep.table(
            ["AUC", "TPR @ 1% FPR", "mean error members", "mean error non-members"],
            [[_f(m.auc), _f(m.tpr_at_1pct_fpr), _f(m.mean_error_members, 5), _f(m.mean_error_non_members, 5)]],
        )
    else:
        rep.text("_Membership inference needs the generator (`model`); only a synthetic set was given._")


def sampler_section(rep: Report, steps: SamplerStepsResult | None) -> None:
    if not steps:
        return
    rows = sorted(steps.rows, key=lambda r: (r.sampler, r.steps))
    rep.section("FID vs sampler and steps")
    if steps.encoder is not None:
        n = next((r.fid_n for r in rows if r.fid_n), None)
        rep.text(f"Reference encoder: **{steps.encoder.label}**; FID on equal-sized sets (n={n}), unbiased KID.")
    else:
        rep.text(
            "Reference encoder: **none** (old instrument): FID/KID on this run's own real-only classifier "
            "features, not comparable across runs."
        )
    rep.table(
        ["sampler", "steps", "FID", "KID", "precision", "recall", "img/s", "status"],
        [
            [
                r.sampler,
                r.steps,
                _f(r.fid, 4),
                _f(r.kid, 4),
                _f(r.precision),
                _f(r.recall),
                _f(r.images_per_s, 2),
                r.status,
            ]
            for r in rows
        ],
    )
    rep.plot("fid_vs_steps.png", plots.fid_vs_steps(rows), "FID vs steps")


# ----------------------------------------------------------------------------- report


def _loss_curve(rep: Report, model: str | None, out: Path) -> None:
    """The generator's training loss curve (``loss_curve.png`` of its export), copied beside the report."""
    import shutil

    src = Path(model) / "loss_curve.png" if model else None
    if src is not None and src.is_file():
        shutil.copyfile(src, out / "loss_curve.png")
        rep.text("![generator training loss](loss_curve.png)")


def write_report(out: str | Path, result: EvalResult) -> Path:
    """Render ``report.md`` (and its PNGs) into ``out`` from a result alone (its MLflow link included)."""
    out = Path(out)
    rep = Report(out, f"Evaluation report: {result.suite}")
    p, inputs = result.params, result.inputs
    rep.table(
        ["field", "value"],
        [
            ["run id", result.run_id],
            ["timestamp", result.timestamp],
            ["real data", inputs.real_dir],
            ["generator", inputs.model or "n/a"],
            ["synthetic set", inputs.synthetic_dir or "n/a"],
            ["task", f"{' vs '.join(p.classes)} (positive: {p.positive})"],
            ["seconds", result.seconds if result.seconds is not None else "n/a"],
            ["MLflow run", result.tracking or "tracking off"],
        ],
    )
    if label := result.inputs.reference_encoder:  # results from before it carry none (their sections say so)
        used = "" if result.fidelity else " (not used here: fidelity part off, so no FID/KID in this report)"
        rep.text(f"Reference encoder: {label}{used}.")
    _loss_curve(rep, inputs.model, out)
    rep.text(
        "Tables: [results.csv](results.csv) / results.parquet (one row per trial and test set); "
        "everything: [results.json](results.json)."
    )
    utility_section(rep, result.utility, p.utility)
    fidelity_section(rep, result.fidelity, out)
    privacy_section(rep, result.privacy, result.fidelity, out)
    sampler_section(rep, result.sampler_steps)
    if result.timings:
        rep.section("Timings").table(["stage", "seconds"], [[k, v] for k, v in result.timings.items()])
    return rep.write()
