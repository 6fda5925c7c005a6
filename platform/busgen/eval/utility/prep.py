"""The driver's side of the utility recipes: sets made before the grid, and the grid's points.

Run once per suite, before Tune starts (`busgen.eval.utility.grid.run_utility`):

* ``filter_synthetic`` -- recipe (c): a classifier trained on the real train split scores
  every synthetic image; rows whose probability of their *conditioned* class reaches
  ``tau`` are written as a new synthetic set (same schema), and the kept fraction per
  class is recorded. One filter for every seed: the filter is part of the data, not of
  the classifier under test.
* ``guidance_sets`` -- recipe (d): one synthetic set per guidance scale, given or sampled
  from the suite's generator (resumable, under ``<out>/work``).
* ``grid_points`` -- every arm x seed as a point of the one utility Tune grid, so paired
  deltas, ROC plots and resume work for recipes exactly as for mixes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from busgen.data.dataset import read_table
from busgen.eval.data import SuiteData
from busgen.eval.suites import SuiteConfig, filter_arm, guidance_arm, scaling_arm
from busgen.eval.utility.results import RecipeInfo


def filter_scores(model, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """p(conditioned class) of every synthetic image under ``model``."""
    from busgen.model import classifier

    probs = classifier.predict_proba(model, images)
    return probs[np.arange(len(labels)), labels]


def filter_synthetic(
    cfg: SuiteConfig, data: SuiteData, real_dir: str, syn_dir: str, out_dir: Path
) -> tuple[str, RecipeInfo]:
    """Write the rows of ``syn_dir`` whose conditioned-class probability >= tau to ``out_dir``; returns (dir, info).

    The filter classifier is ``utility.classifier`` trained on real train (first seed),
    early-stopped on real val. An existing ``out_dir`` (a resumed suite) is reused.
    """
    import pyarrow.parquet as pq

    from busgen.measure import classify

    f = cfg.utility.recipes.filter
    classes = cfg.classes
    xs, ys = data.labelled(syn_dir, None, classes)
    table = read_table(syn_dir, classes=classes)  # same files, order and filter as the images
    done = out_dir / "filtered.parquet"
    if done.is_file() and (out_dir / "keep.npy").is_file():
        keep = np.load(out_dir / "keep.npy")
    else:
        ccfg = cfg.utility.classifier.model_copy(update={"seed": min(cfg.utility.seeds), "positive": cfg.positive})
        x, y = data.labelled(real_dir, "train", classes)
        xv, yv = data.labelled(real_dir, "val", classes)
        model, _ = classify.train_classifier(x, y, xv, yv, ccfg, classes)
        keep = filter_scores(model, xs, ys) >= f.tau
        out_dir.mkdir(parents=True, exist_ok=True)
        if not keep.any():
            raise ValueError(
                f"error: the confidence filter (tau={f.tau}) kept no synthetic image; lower recipes.filter.tau"
            )
        pq.write_table(table.filter(keep), out_dir / "filtered.tmp.parquet")
        (out_dir / "filtered.tmp.parquet").rename(done)
        np.save(out_dir / "keep.npy", keep)
    counts = {c: [int(keep[ys == i].sum()), int((ys == i).sum())] for i, c in enumerate(classes)}
    kept = {c: (k / n if n else float("nan")) for c, (k, n) in counts.items()}
    print(f"[evaluate] confidence filter tau={f.tau}: kept {int(keep.sum())}/{len(keep)} ({kept})", flush=True)
    return str(out_dir), RecipeInfo(filter_tau=f.tau, filter_kept=kept, filter_counts=counts, filtered_dir=str(out_dir))


def guidance_sets(cfg: SuiteConfig, model_dir: str | None, work: Path) -> dict[float, str]:
    """Guidance -> synthetic set: the given ones, the rest sampled from ``model_dir`` (resumable)."""
    from busgen.core.storage import resolve_location
    from busgen.core.timings import Timings
    from busgen.eval import build
    from busgen.generate.shards import GenerateConfig

    g = cfg.utility.recipes.guidance
    sets = {float(k): resolve_location(v) for k, v in g.synthetic_dirs.items() if float(k) in g.guidances}
    for guidance in g.guidances:
        if guidance in sets:
            continue
        gcfg = GenerateConfig(
            **cfg.generate.model_dump(exclude={"n", "steps", "guidance", "shard_size"}),
            n=g.n,
            steps=g.steps,
            guidance=guidance,
            shard_size=g.n,
            model=model_dir,
            out=str(work / f"guidance_g{guidance:g}"),
            class_ratio={c: 1.0 for c in cfg.classes},
        )
        sets[guidance] = build.synthetic_set(gcfg, Timings(), f"guidance {guidance:g}", tag="evaluate")
    return sets


def _set_size(path: str, classes: list[str]) -> int:
    return read_table(path, ["label"], classes=classes).num_rows


def grid_points(
    cfg: SuiteConfig, syn_dir: str | None, filtered_dir: str | None, guidance: dict[float, str], info: RecipeInfo
) -> list[dict]:
    """One point per (arm, seed): ratios, synthetic only, recipes (b)-(e), then the scaling points.

    Points override the trial base (`busgen.eval.utility.grid.trial_base`): recipe, label,
    series, synthetic_dir, n_synthetic, real_fraction. Scaling sizes larger than the
    synthetic set are skipped and noted in ``info.notes``.
    """
    u, rec, sc = cfg.utility, cfg.utility.recipes, cfg.utility.scaling
    scaling_on = bool(sc.n_synthetic or sc.real_fractions)
    mix_series = f"real+syn x{sc.ratio:g}" if sc.ratio else None
    arms: list[dict] = []
    for r in u.ratios:
        arm = {"ratio": float(r), "synthetic_only": False}
        if scaling_on and (r == 0 or (mix_series and r == sc.ratio)):
            arm["series"] = "real" if r == 0 else mix_series
        arms.append(arm)
    if u.synthetic_only:
        arms.append({"ratio": 0.0, "synthetic_only": True, **({"series": "syn only"} if scaling_on else {})})
    if rec.finetune:
        arms.append({"recipe": "finetune", "finetune_lr_factor": rec.finetune_lr_factor})
    if rec.filter is not None and filtered_dir:
        label = filter_arm(rec.filter.tau, rec.filter.ratio)
        arms.append({"ratio": rec.filter.ratio, "label": label, "synthetic_dir": filtered_dir})
    if rec.guidance is not None:
        g = rec.guidance
        for value, path in sorted(guidance.items()):
            label = guidance_arm(value, g.ratio, g.synthetic_only)
            arms.append({"ratio": g.ratio, "synthetic_only": g.synthetic_only, "label": label, "synthetic_dir": path})
    if rec.balance:
        arms.append({"recipe": "balance"})
    if sc.n_synthetic and syn_dir:
        total = _set_size(syn_dir, cfg.classes)
        full_arms = {(a.get("series"), a["synthetic_only"] if "synthetic_only" in a else False) for a in arms}
        for n in sorted(sc.n_synthetic):
            if n > total:
                info.notes.append(f"scaling N={n} skipped: the synthetic set holds {total} images")
                continue
            series = [("syn only", {"synthetic_only": True, "ratio": 0.0})]
            series += [(mix_series, {"ratio": sc.ratio, "synthetic_only": False})] if mix_series else []
            for name, keys in series:
                if n == total and (name, keys["synthetic_only"]) in full_arms:
                    continue  # the full-set arm is this point already
                arms.append({**keys, "series": name, "n_synthetic": n, "label": scaling_arm(name, n)})
    for frac in sorted(sc.real_fractions):
        if frac < 1:
            arms.append(
                {"ratio": 0.0, "series": "real", "real_fraction": frac, "label": scaling_arm("real", None, frac)}
            )
    subset_seeds = sc.seeds if sc.seeds is not None else u.seeds
    is_subset = lambda arm: "n_synthetic" in arm or "real_fraction" in arm  # noqa: E731
    return [{**arm, "seed": s} for arm in arms for s in (subset_seeds if is_subset(arm) else u.seeds)]
