"""The typed result of an evaluation suite: what `busgen.eval.runner.run_suite` returns and ``results.json`` holds.

``EvalResult`` is built by the runner, written with ``write`` (``results.json`` plus the
``results`` and ``sampler_steps`` tables as Parquet and CSV) and read back with
``EvalResult.read``, so a report can be re-rendered, or two runs compared, without
re-running anything. Every part is optional: a part that did not run is ``None``.

NaN (an undefined AUC, a FID of a one-image class) is written as JSON ``NaN``, as
Python's ``json`` does, so a result reads back unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from busgen.core.storage import write_tables
from busgen.eval.suites import REAL_TEST, SYN_ONLY, SuiteConfig, arm_name

RESULTS_FILE = "results.json"
CI_METRICS = ("auc", "sensitivity", "specificity")  # classifier metrics reported with bootstrap CIs
POINT_METRICS = ("accuracy", "balanced_accuracy", "ece", "threshold", "n")
Status = Literal["ok", "error"]


class Record(BaseModel):
    """Base of every result model: unknown keys are errors, NaN survives a JSON round trip."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")


# ----------------------------------------------------------------------------- utility


class CI(Record):
    """A point estimate with its 95% bootstrap interval."""

    value: float
    ci_low: float
    ci_high: float

    def text(self, signed: bool = False) -> str:
        f = "{:+.3f}" if signed else "{:.3f}"
        return f"{f.format(self.value)} [{f.format(self.ci_low)}, {f.format(self.ci_high)}]"


class PairedDelta(CI):
    """AUC(arm) - AUC(real only) on the same test cases, mean over ``n_runs`` seed pairs."""

    n_runs: int


class Roc(Record):
    fpr: list[float]
    tpr: list[float]
    thresholds: list[float] = []


class ArmRoc(Roc):
    auc: float


class ClassificationReport(Record):
    """`busgen.eval.metrics.classification_report` of one classifier on one test set."""

    n: int
    class_names: list[str]
    positive: str
    threshold: float
    auc: CI
    sensitivity: CI
    specificity: CI
    accuracy: float
    balanced_accuracy: float
    ece: float
    roc: Roc
    per_class_auc: dict[str, float | None]
    class_counts: dict[str, int]


class ClassifierMetrics(Record):
    """One classifier on one test set: the ``results`` table's metric columns."""

    auc: float
    auc_ci_low: float
    auc_ci_high: float
    sensitivity: float
    sensitivity_ci_low: float
    sensitivity_ci_high: float
    specificity: float
    specificity_ci_low: float
    specificity_ci_high: float
    accuracy: float
    balanced_accuracy: float
    ece: float
    threshold: float
    n: int

    @classmethod
    def from_report(cls, rep: ClassificationReport) -> ClassifierMetrics:
        """The table columns of a report: value and CI bounds for CI metrics, points for the rest."""
        cols = rep.model_dump(include=set(POINT_METRICS))
        for m in CI_METRICS:
            ci = getattr(rep, m)
            cols.update({m: ci.value, f"{m}_ci_low": ci.ci_low, f"{m}_ci_high": ci.ci_high})
        return cls(**cols)

    def ci(self, metric: Literal["auc", "sensitivity", "specificity"]) -> CI:
        v = getattr(self, metric)
        return CI(value=v, ci_low=getattr(self, f"{metric}_ci_low"), ci_high=getattr(self, f"{metric}_ci_high"))


class UtilityRow(Record):
    """One row of ``results.parquet``: a utility trial on one test set (no metrics when the trial failed)."""

    arm: str
    ratio: float
    synthetic_only: bool
    seed: int
    status: Status
    test_set: str
    val_auc: float | None = None
    epochs_run: int | None = None
    metrics: ClassifierMetrics | None = None

    def flat(self) -> dict:
        """The table row: keys, then the metric columns."""
        return {**self.model_dump(exclude={"metrics"}), **(self.metrics.model_dump() if self.metrics else {})}


class UtilityTrial(Record):
    """One Tune trial of the utility grid: a classifier of one arm and seed, tested on every test set."""

    ratio: float
    synthetic_only: bool
    seed: int
    status: Status
    error: str = ""
    val_auc: float | None = None
    epochs_run: int | None = None
    seconds: float | None = None
    artifacts: str | None = None  # <artifacts_dir>/<arm>-seed<seed>/ (classifier/, reports.json)
    test_sets: dict[str, ClassifierMetrics] = {}

    @property
    def arm(self) -> str:
        return arm_name(self.ratio, self.synthetic_only)

    def rows(self) -> list[UtilityRow]:
        keys = dict(arm=self.arm, ratio=self.ratio, synthetic_only=self.synthetic_only, seed=self.seed)
        keys.update(status=self.status, val_auc=self.val_auc, epochs_run=self.epochs_run)
        if not self.test_sets:
            return [UtilityRow(**keys, test_set=REAL_TEST)]
        return [UtilityRow(**keys, test_set=name, metrics=m) for name, m in sorted(self.test_sets.items())]


class ArmSummary(Record):
    auc_mean: float
    auc_std: float
    n_seeds: int


class UtilityResult(Record):
    """The utility grid: trials, each arm's first-seed ROC per test set, and paired AUC differences."""

    trials: list[UtilityTrial]
    roc: dict[str, dict[str, ArmRoc]] = {}  # arm -> test set -> ROC (first seed)
    deltas: dict[str, dict[str, PairedDelta]] = {}  # test set -> arm -> vs real only

    def rows(self) -> list[UtilityRow]:
        return [row for t in self.trials for row in t.rows()]

    def failed(self) -> list[UtilityTrial]:
        return [t for t in self.trials if t.status != "ok"]

    def test_sets(self) -> list[str]:
        """The real test split first, then the external test sets."""
        names = {r.test_set for r in self.rows()}
        return [REAL_TEST] * (REAL_TEST in names) + sorted(names - {REAL_TEST})

    def arm_order(self) -> list[str]:
        """Arms by ratio, synthetic-only last: the x axis of the utility plot."""
        keyed = {t.arm: (t.synthetic_only, t.ratio) for t in self.trials}
        return sorted(keyed, key=keyed.get)

    def arm_summary(self, test_set: str) -> dict[str, ArmSummary]:
        """Arm -> mean and std of AUC over seeds on one test set (successful trials only)."""
        by_arm = defaultdict(list)
        for r in self.rows():
            if r.test_set == test_set and r.status == "ok" and r.metrics is not None:
                by_arm[r.arm].append(r.metrics.auc)
        return {
            a: ArmSummary(auc_mean=float(np.mean(v)), auc_std=float(np.std(v)), n_seeds=len(v))
            for a, v in by_arm.items()
        }

    def best_mix(self, test_set: str = REAL_TEST) -> str | None:
        """The real + synthetic arm with the largest paired AUC gain over real only (None without mixed arms)."""
        deltas = self.deltas.get(test_set, {})
        mixed = [a for a in deltas if a != SYN_ONLY]
        return max(mixed, key=lambda a: deltas[a].value) if mixed else None


# ----------------------------------------------------------------------------- fidelity


class SetMetrics(Record):
    """FID/KID/PRDC of one (real, synthetic) pair of feature sets; None where too few samples."""

    n_real: int
    n_synthetic: int
    fid: float | None = None
    kid: float | None = None
    kid_std: float | None = None
    precision: float | None = None
    recall: float | None = None
    density: float | None = None
    coverage: float | None = None


class MsSsim(Record):
    real: dict[str, float | None]
    synthetic: dict[str, float | None]


class Detector(Record):
    auc: float
    n_real: int
    n_synthetic: int


class FidelityResult(Record):
    overall: SetMetrics
    per_class: dict[str, SetMetrics]
    ms_ssim: MsSsim | None = None
    real_vs_real: SetMetrics  # real train vs held-out real: the floor with this encoder
    detector: Detector  # real-vs-synthetic classifier on the same features


# ----------------------------------------------------------------------------- privacy


class SpaceStats(Record):
    mean_top1_sim: float
    p95_top1_sim: float
    share_sim_above_threshold: float
    min_ratio: float
    median_ratio: float


class Memorization(Record):
    """`busgen.eval.privacy.audit.MemorizationAudit.summary`."""

    n_synthetic: int
    n_copies: int
    n_mem: int
    n_flagged: int
    memorization_rate: float
    n_train_copied: int
    config: dict[str, float | int | bool]  # the AuditConfig it ran with
    pixel: SpaceStats | None = None
    feature: SpaceStats | None = None


class Membership(Record):
    """`busgen.eval.privacy.membership.membership_report`."""

    auc: float
    tpr_at_1pct_fpr: float
    n_members: int
    n_non_members: int
    mean_error_members: float
    mean_error_non_members: float
    timesteps: list[int]
    prediction_type: str


class PrivacyResult(Record):
    memorization: Memorization
    closest_pairs: list[tuple[int, int, float]]  # (synthetic position, training index, cosine)
    flagged_ids: list[int]
    membership: Membership | None = None  # needs the generator


# ----------------------------------------------------------------------------- sampler steps


class SamplerStepsRow(Record):
    """One (sampler, steps) trial: FID against held-out real features and sampling speed."""

    sampler: str
    steps: int
    status: Status
    error: str = ""
    fid: float | None = None
    kid: float | None = None
    kid_std: float | None = None
    precision: float | None = None
    recall: float | None = None
    density: float | None = None
    coverage: float | None = None
    n: int | None = None
    sample_seconds: float | None = None
    images_per_s: float | None = None


class SamplerStepsResult(Record):
    rows: list[SamplerStepsRow]

    def failed(self) -> list[SamplerStepsRow]:
        return [r for r in self.rows if r.status != "ok"]

    def best(self) -> SamplerStepsRow | None:
        ok = [r for r in self.rows if r.status == "ok" and r.fid is not None]
        return min(ok, key=lambda r: r.fid) if ok else None


# ----------------------------------------------------------------------------- the whole run


class Inputs(Record):
    real_dir: str
    model: str | None = None
    synthetic_dir: str | None = None


class HeadlineMetrics(Record):
    """Flat scalars for the job summary line and dashboards; None where the part did not run."""

    auc_real_only: float | None = None
    best_arm: str | None = None
    auc_best_arm: float | None = None
    delta_auc_best_vs_real: float | None = None
    utility_trials_failed: int = 0
    delta_auc_synthetic_only: float | None = None
    delta_auc_best_mixed: float | None = None
    fid: float | None = None
    fid_precision: float | None = None
    fid_recall: float | None = None
    detector_auc: float | None = None
    n_copies: int | None = None
    n_mem: int | None = None
    memorization_rate: float | None = None
    n_train_copied: int | None = None
    p95_pixel_sim: float | None = None
    share_pixel_sim_gt: float | None = None
    membership_auc: float | None = None
    membership_tpr_at_1pct_fpr: float | None = None
    best_sampler: str | None = None
    best_sampler_fid: float | None = None
    sampler_trials_failed: int = 0

    def flat(self) -> dict[str, float | int | str]:
        """The measured values only (no None), in field order."""
        return self.model_dump(exclude_none=True)


class EvalResult(Record):
    """Everything one suite run produced; ``results.json`` is its JSON form."""

    suite: str
    run_id: str
    timestamp: str  # UTC, ISO 8601
    params: SuiteConfig  # the suite as run (dry runs: shrunk)
    inputs: Inputs
    timings: dict[str, float] = {}  # stage -> seconds
    utility: UtilityResult | None = None
    fidelity: FidelityResult | None = None
    privacy: PrivacyResult | None = None
    sampler_steps: SamplerStepsResult | None = None
    metrics: HeadlineMetrics = HeadlineMetrics()
    seconds: float | None = None
    tracking: str = ""  # link to the suite's MLflow run ("" = tracking off)

    def trials_failed(self) -> int:
        """Failed Tune trials of every grid (utility and sampler steps)."""
        return self.metrics.utility_trials_failed + self.metrics.sampler_trials_failed

    def headline(self) -> HeadlineMetrics:
        """The headline metrics of the parts that ran."""
        h: dict = {}
        if u := self.utility:
            summary = u.arm_summary(REAL_TEST)
            if "real" in summary:
                h["auc_real_only"] = summary["real"].auc_mean
            mixed = {a: s for a, s in summary.items() if a != "real"}
            if mixed:
                best = max(mixed, key=lambda a: mixed[a].auc_mean)
                h.update(best_arm=best, auc_best_arm=mixed[best].auc_mean)
                if "auc_real_only" in h:
                    h["delta_auc_best_vs_real"] = mixed[best].auc_mean - h["auc_real_only"]
            h["utility_trials_failed"] = len(u.failed())
            deltas = u.deltas.get(REAL_TEST, {})
            if SYN_ONLY in deltas:
                h["delta_auc_synthetic_only"] = deltas[SYN_ONLY].value
            if best_mix := u.best_mix(REAL_TEST):
                h["delta_auc_best_mixed"] = deltas[best_mix].value
        if f := self.fidelity:
            h.update(fid=f.overall.fid, fid_precision=f.overall.precision, fid_recall=f.overall.recall)
            h["detector_auc"] = f.detector.auc
        if p := self.privacy:
            m = p.memorization
            h.update(n_copies=m.n_copies, n_mem=m.n_mem, memorization_rate=m.memorization_rate)
            h["n_train_copied"] = m.n_train_copied
            if m.pixel:
                h.update(p95_pixel_sim=m.pixel.p95_top1_sim, share_pixel_sim_gt=m.pixel.share_sim_above_threshold)
            if p.membership:
                h.update(membership_auc=p.membership.auc, membership_tpr_at_1pct_fpr=p.membership.tpr_at_1pct_fpr)
        if s := self.sampler_steps:
            if best := s.best():
                h.update(best_sampler=f"{best.sampler}/{best.steps}", best_sampler_fid=best.fid)
            h["sampler_trials_failed"] = len(s.failed())
        return HeadlineMetrics(**h)

    def write(self, out: str | Path) -> Path:
        """``results.json``, ``results.parquet``/``.csv`` (utility rows) and ``sampler_steps.parquet``/``.csv``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if self.utility and self.utility.trials:
            write_tables(str(out / "results"), [r.flat() for r in self.utility.rows()])
        if self.sampler_steps and self.sampler_steps.rows:
            write_tables(str(out / "sampler_steps"), [r.model_dump() for r in self.sampler_steps.rows])
        path = out / RESULTS_FILE
        path.write_text(self.model_dump_json(indent=2))
        return path

    @classmethod
    def read(cls, path: str | Path) -> EvalResult:
        """A result written by ``write``: ``path`` is its ``results.json`` or the report folder holding it."""
        path = Path(path)
        path = path / RESULTS_FILE if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(
                f"error: no evaluation result at {path}; pass a report folder or its {RESULTS_FILE}"
            )
        return cls.model_validate_json(path.read_text())
