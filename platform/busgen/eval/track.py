"""An evaluation suite in MLflow: one run per suite, one nested run per Tune trial.

The suite run holds the suite config as params, every number of the result (headline,
paired deltas with their CIs, FID/KID/PRDC per class, MS-SSIM, detector and privacy
figures) as metrics, and the report folder as artifacts. Each utility trial (arm x
seed) and each sampler-steps trial is a child run (``mlflow.parentRunId``) with its own
params and its per-test-set AUC, sensitivity, specificity, ECE.
"""

from __future__ import annotations

from pathlib import Path

from busgen.core import tracking
from busgen.eval.results import EvalResult
from busgen.eval.suites import SuiteConfig

EXPERIMENT = "busgen-evaluate"
REPORT_FILES = (".md", ".png", ".json", ".csv", ".parquet")  # what of the report folder becomes an artifact


def open_suite(cfg: SuiteConfig, out: str | Path) -> tracking.Run:
    """Open the suite's run in the store ``tracking.resolve_uri(cfg.tracking_uri)`` and log the config.

    ``out`` names the report folder in a tag, so the run leads back to the report.
    """
    tags = {"busgen.operation": "evaluate", "busgen.out": str(out)}
    run = tracking.start_run(cfg.tracking, cfg.tracking_uri, EXPERIMENT, cfg.name, tags=tags)
    run.log_params(cfg.model_dump(mode="json"))
    if run.enabled:
        print(f"[evaluate] tracking: {run.link()}", flush=True)
    return run


def suite_metrics(result: EvalResult) -> dict[str, float]:
    """Every number of the result as flat metric names (``fidelity.overall.fid``, ``delta.<test>.<arm>.value``)."""
    values: dict = dict(result.metrics.flat()) if result.metrics else {}
    if u := result.utility:
        for test_set, arms in u.deltas.items():
            for arm, d in arms.items():
                values.update({f"delta.{test_set}.{arm}.{k}": v for k, v in d.model_dump().items()})
        for arm, s in u.arm_summary(u.test_sets()[0] if u.test_sets() else "").items():
            values.update({f"arm.{arm}.{k}": v for k, v in s.model_dump().items()})
    for part in ("fidelity", "privacy"):
        record = getattr(result, part)
        if record is not None:
            dumped = record.model_dump(exclude={"closest_pairs", "flagged_ids"})
            values.update(tracking.flatten(dumped, f"{part}."))
    values.update({f"seconds.{k}": v for k, v in result.timings.items()})
    return tracking.numeric(values)


def log_trials(run: tracking.Run, result: EvalResult) -> int:
    """One child run per Tune trial (utility and sampler steps); returns how many were logged."""
    n = 0
    if u := result.utility:
        for t in u.trials:
            with run.child(f"utility {t.arm}-seed{t.seed}", tags={"busgen.trial": "utility"}) as child:
                child.log_params({"arm": t.arm, "ratio": t.ratio, "synthetic_only": t.synthetic_only, "seed": t.seed})
                child.set_tags({"status": t.status, "error": t.error[:500]})
                metrics = {"val_auc": t.val_auc, "epochs_run": t.epochs_run, "seconds": t.seconds}
                for test_set, m in t.test_sets.items():
                    metrics.update({f"{test_set}.{k}": v for k, v in m.model_dump().items()})
                child.log_metrics(metrics)
            n += 1
    if s := result.sampler_steps:
        for row in s.rows:
            dumped = row.model_dump()
            name = f"sampler {dumped.get('sampler')}-{dumped.get('steps')} steps"
            with run.child(name, tags={"busgen.trial": "sampler_steps"}) as child:
                child.log_params({k: v for k, v in dumped.items() if isinstance(v, (str, bool)) or k == "steps"})
                child.log_metrics(dumped)
            n += 1
    return n


def log_suite(run: tracking.Run, result: EvalResult, out: str | Path) -> None:
    """After the report is written: metrics, nested trial runs, the report files as artifacts; ends the run."""
    if not run.enabled:
        return
    run.log_metrics(suite_metrics(result))
    log_trials(run, result)
    for fp in sorted(Path(out).iterdir()):
        if fp.is_file() and fp.suffix in REPORT_FILES:
            run.log_artifacts(fp, "report")
    run.end("FAILED" if result.trials_failed() else "FINISHED")
