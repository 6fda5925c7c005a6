"""The utility part of a suite: a Tune grid of utility trials, their ROC curves and seed-paired AUC differences."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from busgen.core.storage import resolve_location
from busgen.eval import metrics, sweep
from busgen.eval.results import ArmRoc, ClassifierMetrics, PairedDelta, UtilityResult, UtilityTrial
from busgen.eval.suites import SuiteConfig
from busgen.eval.trials import TrialArtifacts

TRIAL_KEYS = ("val_auc", "epochs_run", "seconds", "artifacts")  # scalars of a utility trial besides test-set metrics


def utility_grid(cfg: SuiteConfig) -> list[dict]:
    """One point per (arm, seed): every ratio, then synthetic only."""
    u = cfg.utility
    arms = [{"ratio": float(r), "synthetic_only": False} for r in u.ratios]
    arms += [{"ratio": 0.0, "synthetic_only": True}] if u.synthetic_only else []
    return [{**arm, "seed": s} for arm in arms for s in u.seeds]


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
        **{k: row[k] for k in ("ratio", "synthetic_only", "seed", "status", "error")},
        **{k: row[k] for k in TRIAL_KEYS if k in row},
        test_sets={name: ClassifierMetrics(**m) for name, m in by_set.items()},
    )


def run_utility(cfg: SuiteConfig, real_dir: str, syn_dir: str | None, work: Path) -> UtilityResult:
    """Tune grid of utility trials -> trials, the ROC of each arm's first seed, paired deltas vs real only."""
    rows = sweep.run_trials(
        "utility",
        trial_base(cfg, real_dir, work / "utility", syn_dir),
        utility_grid(cfg),
        str(work / "tune"),
        f"{cfg.name}-utility",
        cfg.resources_per_trial,
        cfg.max_concurrent_trials,
    )
    trials = [trial_from_row(r) for r in rows]
    return UtilityResult(
        trials=trials,
        roc=first_seed_rocs(trials, min(cfg.utility.seeds)),
        deltas=paired_deltas(trials, cfg.utility.n_boot),
    )


def paired_deltas(trials: list[UtilityTrial], n_boot: int) -> dict[str, dict[str, PairedDelta]]:
    """Test set -> arm -> AUC(arm) - AUC(real only), seed-paired, with a paired bootstrap CI over test cases.

    Arms share their test cases, so the difference has a far tighter CI than either AUC;
    the synthetic-vs-real targets are judged on it. Seeds present in both arms are paired.
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
            delta = metrics.paired_auc_delta(
                np.asarray(base[seeds[0]].positive),
                [base[s].score for s in seeds],
                [by_seed[s].score for s in seeds],
                n_boot=n_boot,
            )
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
