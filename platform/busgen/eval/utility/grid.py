"""The utility part of a suite: a Tune grid of utility trials, their ROC curves and seed-paired AUC differences.

Recipes (fine-tune, confidence filter, guidance sweep, minority balance) and scaling
points are arms of the same grid (`busgen.eval.utility.prep`); what each arm trains on
is `busgen.eval.utility.recipes`. The yardstick's own noise and the scaling curve are
summarised here from the trials (``yardstick_noise``, ``yardstick_power``, ``scaling_rows``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import numpy as np

from busgen.core.storage import resolve_location
from busgen.eval import sweep
from busgen.eval.data import SuiteData
from busgen.eval.suites import SYN_ONLY, SuiteConfig
from busgen.eval.trials import TrialArtifacts
from busgen.eval.utility import prep as recipe_prep
from busgen.eval.utility import recipes
from busgen.eval.utility.results import (
    ArmRoc,
    ClassifierMetrics,
    PairedDelta,
    RecipeInfo,
    ScalingRow,
    UtilityResult,
    UtilityTrial,
)
from busgen.measure import metrics, stats

# scalars of a utility trial besides test-set metrics
TRIAL_KEYS = (
    "val_auc", "epochs_run", "seconds", "artifacts", "n_real_train", "n_syn_train", "draws", "real_draws", "stopped"
)  # fmt: skip
RECIPES_FILE = "recipes.json"  # <work>/recipes.json: what prepare_recipes made
POINT_KEYS = ("recipe", "label", "series", "n_synthetic", "real_fraction")  # recipe keys a grid point may set


def utility_grid(
    cfg: SuiteConfig,
    syn_dir: str | None = None,
    filtered_dir: str | None = None,
    guidance: dict[float, str] | None = None,
    info: RecipeInfo | None = None,
) -> list[dict]:
    """One point per (arm, seed): every ratio, synthetic only, then recipes and scaling points.

    Without the prepared sets (``filtered_dir``, ``guidance``) those recipes have no arm;
    without ``syn_dir`` the synthetic scaling sizes are unknown and skipped.
    """
    return recipe_prep.grid_points(cfg, syn_dir, filtered_dir, guidance or {}, info or RecipeInfo())


def trial_base(cfg: SuiteConfig, real_dir: str, artifacts_dir: Path, syn_dir: str | None = None) -> dict:
    """The settings every utility trial of the suite shares (``UtilityTrialConfig`` fields)."""
    u = cfg.utility
    return {
        "real_dir": real_dir,
        "synthetic_dir": syn_dir,
        "classes": cfg.classes,
        "positive": cfg.positive,
        "classifier": u.classifier.model_dump(mode="json"),
        "external_test": {k: resolve_location(v) for k, v in u.external_test.items()},
        "external_split": u.external_split,
        "n_boot": u.n_boot,
        "artifacts_dir": str(artifacts_dir),
        "torch_threads": cfg.torch_threads,
    }


def trial_from_row(row: dict) -> UtilityTrial:
    """A Tune row (point keys, status, ``<test set>/<metric>`` scalars) as a typed trial."""
    by_set: dict[str, dict] = {}
    for key, value in row.items():
        if "/" in key:
            name, metric = key.split("/", 1)
            by_set.setdefault(name, {})[metric] = value
    return UtilityTrial(
        **{k: row.get(k, d) for k, d in (("ratio", 0.0), ("synthetic_only", False))},
        **{k: row[k] for k in ("seed", "status", "error")},
        **{k: row[k] for k in TRIAL_KEYS + POINT_KEYS if k in row and row[k] is not None},
        test_sets={name: ClassifierMetrics(**m) for name, m in by_set.items()},
    )


def prepare_recipes(
    cfg: SuiteConfig, real_dir: str, syn_dir: str | None, work: Path, model_dir: str | None, data: SuiteData
) -> tuple[str | None, dict[float, str], RecipeInfo]:
    """The filtered synthetic set and the guidance sets the recipes need: (filtered dir, guidance sets, info)."""
    rec, info, filtered = cfg.utility.recipes, RecipeInfo(), None
    if rec.filter is not None and syn_dir:
        filtered, info = recipe_prep.filter_synthetic(
            cfg, data, real_dir, syn_dir, work / f"filtered_tau{rec.filter.tau:g}"
        )
    guidance = recipe_prep.guidance_sets(cfg, model_dir, work) if rec.guidance is not None else {}
    info.guidance_dirs = {f"{g:g}": p for g, p in guidance.items()}
    info.guidance_sizes = {f"{g:g}": recipe_prep._set_size(p, cfg.classes) for g, p in guidance.items()}
    return filtered, guidance, info


def run_utility(
    cfg: SuiteConfig,
    real_dir: str,
    syn_dir: str | None,
    work: Path,
    model_dir: str | None = None,
    data: SuiteData | None = None,
) -> UtilityResult:
    """Tune grid of utility trials -> trials, the ROC of each arm's first seed, paired deltas vs real only."""
    filtered, guidance, info = prepare_recipes(cfg, real_dir, syn_dir, work, model_dir, data or SuiteData())
    grid = utility_grid(cfg, syn_dir, filtered, guidance, info)  # notes skipped scaling sizes in info
    work.mkdir(parents=True, exist_ok=True)
    (work / RECIPES_FILE).write_text(info.model_dump_json(indent=2))  # for `rebuild_utility`
    rows = sweep.run_trials(
        "utility",
        trial_base(cfg, real_dir, work / "utility", syn_dir),
        grid,
        str(work / "tune"),
        f"{cfg.name}-utility",
        cfg.resources_per_trial,
        cfg.max_concurrent_trials,
    )
    return summarise(cfg, [trial_from_row(r) for r in rows], info)


def summarise(cfg: SuiteConfig, trials: list[UtilityTrial], info: RecipeInfo | None) -> UtilityResult:
    """Trials -> the utility result: first-seed ROCs, paired deltas, scaling rows."""
    deltas = paired_deltas(trials, cfg.utility.n_boot, cfg.utility.delta_ci == "cases+seeds")
    seed = min((t.seed for t in trials), default=0)
    result = UtilityResult(
        trials=trials, roc=first_seed_rocs(trials, seed), deltas=deltas, recipes=info, stats_version=2
    )
    result.scaling = {name: scaling_rows(result, name) for name in result.test_sets()}
    result.scaling = {k: v for k, v in result.scaling.items() if v}
    return result


def trials_from_artifacts(artifacts_dir: str | Path) -> list[UtilityTrial]:
    """The finished trials of a utility grid, read back from their ``reports.json`` (status ok)."""
    trials = []
    for fp in sorted(Path(artifacts_dir).glob("*/reports.json")):
        art = TrialArtifacts.read(fp.parent)
        c = art.config
        keys = c.model_dump(include={"ratio", "synthetic_only", "seed", "recipe", "label", "series"})
        keys.update(
            c.model_dump(include={"n_synthetic", "real_fraction"}), **art.sizes, **recipes.exposure(art.history)
        )
        vals = [h["val_auc"] for h in art.history if np.isfinite(h["val_auc"])]
        trials.append(
            UtilityTrial(
                **keys, status="ok", artifacts=str(fp.parent), epochs_run=len(art.history),
                val_auc=max(vals, default=float("nan")),
                test_sets={k: ClassifierMetrics.from_report(r) for k, r in art.reports.items()},
            )
        )  # fmt: skip
    return trials


def rebuild_utility(cfg: SuiteConfig, work: Path, *more: Path) -> UtilityResult:
    """The utility result of an interrupted suite from what finished: trial artifacts under ``<work>/utility``.

    ``more`` work folders (suites run in parts, e.g. arms whose inputs arrived later) add
    their trials and recipe info. Trials still missing are simply absent (the report's
    seed counts show it).
    """
    trials, info = [], None
    for w in (work, *more):
        trials += trials_from_artifacts(w / "utility")
        if (w / RECIPES_FILE).is_file():
            got = RecipeInfo.model_validate_json((w / RECIPES_FILE).read_text())
            info = got if info is None else _merge_info(info, got)
    return summarise(cfg, trials, info)


def _merge_info(a: RecipeInfo, b: RecipeInfo) -> RecipeInfo:
    """Recipe info of two partial runs: filter fields from whichever ran the filter, guidance and notes joined."""
    filt = a if a.filter_tau is not None else b
    return filt.model_copy(
        update={
            "guidance_dirs": {**a.guidance_dirs, **b.guidance_dirs},
            "guidance_sizes": {**a.guidance_sizes, **b.guidance_sizes},
            "notes": list(dict.fromkeys(a.notes + b.notes)),
        }
    )


def scaling_rows(util: UtilityResult, test_set: str) -> list[ScalingRow]:
    """The scaling curve on one test set: per series and N, seed mean and sd, 95% t-interval, paired delta.

    N counts unique synthetic training images for the synthetic series and unique real
    ones for the ``real`` series (the real-only arm is its 100% point).
    """
    from scipy.stats import t as student_t

    groups: dict[tuple[str, str, int], list[float]] = {}
    for tr in util.trials:
        m = tr.test_sets.get(test_set)
        if not tr.series or tr.status != "ok" or m is None:
            continue
        kind = "real" if tr.series == "real" else "synthetic"
        n = tr.n_real_train if kind == "real" else tr.n_syn_train
        groups.setdefault((tr.series, tr.arm, kind, int(n or 0)), []).append(m.auc)
    rows = []
    for (series, arm, kind, n), aucs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][3])):
        mean, sd = float(np.mean(aucs)), float(np.std(aucs, ddof=1)) if len(aucs) > 1 else 0.0
        half = float(student_t.ppf(0.975, len(aucs) - 1) * sd / np.sqrt(len(aucs))) if len(aucs) > 1 else float("nan")
        rows.append(
            ScalingRow(
                series=series, arm=arm, kind=kind, n=n, n_seeds=len(aucs), auc_mean=mean, auc_std=sd,
                ci_low=mean - half, ci_high=mean + half, delta=util.deltas.get(test_set, {}).get(arm),
            )
        )  # fmt: skip
    return rows


def yardstick_noise(util: UtilityResult, test_set: str) -> dict[str, float] | None:
    """The yardstick's own noise: real-only AUC sd over seeds and the smallest delta it can resolve.

    ``resolvable_delta`` is rendered for results before issue 26 only (``yardstick_power``
    replaced it: it used z for t, one arm's sd for both and 50% power, so it promised about
    a third of the effect a 5-seed study can find). It is 1.96 x sd x sqrt(2 / n_seeds): the 95% half-width of a
    difference of two arms' seed means when each carries the real-only seed-to-seed sd
    (training noise only; the paired test-case bootstrap covers the test set's noise).
    ``median_paired_half_width`` is the median half-width of the reported paired-delta CIs,
    the resolution actually achieved (training and, with ``delta_ci=cases+seeds``, test noise).
    """
    s = util.arm_summary(test_set).get("real")
    if s is None or s.n_seeds < 2:
        return None
    widths = [(d.ci_high - d.ci_low) / 2 for d in util.deltas.get(test_set, {}).values() if np.isfinite(d.ci_high)]
    return {
        "real_auc_mean": s.auc_mean,
        "real_auc_sd": s.auc_std,
        "n_seeds": s.n_seeds,
        "resolvable_delta": float(1.96 * s.auc_std * np.sqrt(2 / s.n_seeds)),
        "median_paired_half_width": float(np.median(widths)) if widths else float("nan"),
    }


RESOLVE_TARGET = 0.02  # AUC difference the noise paragraph asks "how many seeds would resolve it?" about


class ArmPower(NamedTuple):
    """One arm vs real only on one test set: how small a Δ its seeds can find, and what finding 0.02 takes."""

    arm: str
    n_seeds: int
    auc_sd: float
    mde: float  # 80%-power minimum detectable effect (NaN below two seeds in either arm)
    seeds_needed: float  # per arm, to resolve RESOLVE_TARGET at 80% power (inf: beyond stats.SEEDS_CAP)


def yardstick_power(util: UtilityResult, test_set: str, target: float = RESOLVE_TARGET) -> list[ArmPower]:
    """Per full-data arm vs real only: the 80%-power MDE from both arms' seed sds (Welch) and the seeds needed.

    Both arms' spreads enter, not twice the real-only one: synthetic-trained arms often move
    more from seed to seed, and the comparison is only as sharp as its noisier side.
    """
    summary = util.arm_summary(test_set)
    real = summary.get("real")
    if real is None or real.n_seeds < 2:
        return []
    arms = [a for a in util.arm_order() if a in summary and (a in util.recipe_arms() or a == SYN_ONLY)]
    rows = []
    for arm in arms:
        s = summary[arm]
        mde = stats.min_detectable_effect(s.auc_std, s.n_seeds, real.auc_std, real.n_seeds)
        need = stats.seeds_needed(s.auc_std, real.auc_std, target) if s.n_seeds > 1 else float("nan")
        rows.append(ArmPower(arm, s.n_seeds, s.auc_std, mde, need))
    return rows


def paired_deltas(
    trials: list[UtilityTrial], n_boot: int, resample_seeds: bool = False
) -> dict[str, dict[str, PairedDelta]]:
    """Test set -> arm -> AUC(arm) - AUC(real only), seed-paired, with its 95% CI.

    Arms share their test cases, so the difference has a far tighter CI than either AUC;
    the synthetic-vs-real targets are judged on it. Seeds present in both arms are paired.
    ``resample_seeds`` (``delta_ci: cases+seeds``) gives the interval that holds training noise
    too: t over the seed pairs combined with a paired bootstrap over test cases
    (`busgen.measure.stats.delta_interval`; a percentile bootstrap over 3-5 seed pairs
    covers ~80%, not 95%). Without it, the percentile bootstrap over test cases alone
    (test-set noise around these particular classifiers).
    """
    scores: dict[str, dict[str, dict[int, object]]] = {}  # test set -> arm -> seed -> CaseScores
    for t in trials:
        if t.status != "ok" or not t.artifacts:
            continue
        for name, s in TrialArtifacts.read(t.artifacts).scores.items():
            scores.setdefault(name, {}).setdefault(t.arm, {})[t.seed] = s
    out: dict[str, dict[str, PairedDelta]] = {}
    for name, arms in scores.items():
        base = arms.get("real", {})
        for arm, by_seed in arms.items():
            seeds = sorted(set(base) & set(by_seed))
            if arm == "real" or not seeds:
                continue
            if any(by_seed[s].positive != base[s].positive for s in seeds):  # never after hours of trials
                print(
                    f"[evaluate] warning: arms 'real' and {arm!r} were tested on different cases of {name}; "
                    "no paired difference for this arm",
                    flush=True,
                )
                continue
            y = np.asarray(base[seeds[0]].positive)
            base_scores, arm_scores = [base[s].score for s in seeds], [by_seed[s].score for s in seeds]
            if resample_seeds:
                delta = asdict(stats.delta_interval(y, np.stack(base_scores), np.stack(arm_scores), n_boot))
            else:
                delta = metrics.paired_auc_delta(y, base_scores, arm_scores, n_boot=n_boot)
            out.setdefault(name, {})[arm] = PairedDelta(**delta)
    return out


def first_seed_rocs(trials: list[UtilityTrial], seed: int) -> dict[str, dict[str, ArmRoc]]:
    """Arm -> test set -> ROC points, read from the trials' artifacts (first seed only, to keep plots readable)."""
    out: dict[str, dict[str, ArmRoc]] = {}
    for t in trials:
        if t.seed != seed or not t.artifacts:
            continue
        reports = TrialArtifacts.read(t.artifacts).reports
        out[t.arm] = {name: ArmRoc(**rep.roc.model_dump(), auc=rep.auc.value) for name, rep in reports.items()}
    return out
