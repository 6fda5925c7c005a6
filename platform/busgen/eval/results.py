"""The typed result of an evaluation suite: what `busgen.eval.runner.run_suite` returns and ``results.json`` holds.

``EvalResult`` is built by the runner, written with ``write`` (``results.json`` plus the
``results``, ``scaling`` and ``sampler_steps`` tables as Parquet and CSV) and read back with
``EvalResult.read``, so a report can be re-rendered, or two runs compared, without
re-running anything. Every part is optional: a part that did not run is ``None``.

NaN (an undefined AUC, a FID of a one-image class) is written as JSON ``NaN``, as
Python's ``json`` does, so a result reads back unchanged.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from busgen.core.storage import write_tables
from busgen.eval.suites import REAL_TEST, SYN_ONLY, SuiteConfig
from busgen.eval.utility.results import (  # noqa: F401  (re-exported: the utility records live there)
    CI,
    CI_METRICS,
    POINT_METRICS,
    ArmRoc,
    ArmSummary,
    ClassificationReport,
    ClassifierMetrics,
    PairedDelta,
    RecipeInfo,
    Record,
    Roc,
    ScalingRow,
    Status,
    UtilityResult,
    UtilityRow,
    UtilityTrial,
)

RESULTS_FILE = "results.json"


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


class EncoderIdentity(Record):
    """Which frozen reference encoder measured a result (`busgen.measure.reference.ReferenceEncoder.identity`)."""

    name: str
    sha256: str
    image_size: int
    label: str


class ReferenceMetrics(Record):
    """`busgen.measure.fidelity.reference_metrics`: KID with interval, FID at equal n, PRDC."""

    n_real: int
    n_synthetic: int
    kid: float | None = None
    kid_ci_low: float | None = None
    kid_ci_high: float | None = None
    kid_subset: int | None = None
    fid: float | None = None
    fid_n: int | None = None
    precision: float | None = None
    recall: float | None = None
    density: float | None = None
    coverage: float | None = None


class ReferenceFidelity(Record):
    """Fidelity in the reference encoder's space: synthetic vs held-out real, and the real-vs-real floor."""

    encoder: EncoderIdentity
    synthetic: ReferenceMetrics
    floor: ReferenceMetrics | None = Field(None, description="real val vs real test: what no difference reads")
    detector_auc: float | None = Field(None, description="real-vs-synthetic detector on the reference features")


class FidelityResult(Record):
    """Fidelity of a suite: the reference-encoder numbers (headline) and per-run classifier-feature ones (secondary).

    ``legacy`` marks results written before the reference encoder existed: their numbers
    are per-run classifier features only, and reports say so. A new result without
    ``reference`` is refused by the report writer.
    """

    overall: SetMetrics
    per_class: dict[str, SetMetrics]
    ms_ssim: MsSsim | None = None
    real_vs_real: SetMetrics = Field(description="real train vs held-out real: the floor with this encoder")
    detector: Detector = Field(description="real-vs-synthetic classifier on the same features")
    reference: ReferenceFidelity | None = None
    legacy: bool = Field(False, description="written by the old instrument (no reference encoder)")

    @model_validator(mode="before")
    @classmethod
    def _old_files_are_legacy(cls, data):
        # results.json files from before the reference encoder carry neither key
        if isinstance(data, dict) and "reference" not in data and "legacy" not in data:
            data = {**data, "legacy": True}
        return data


# ----------------------------------------------------------------------------- privacy


class SpaceStats(Record):
    mean_top1_sim: float
    p95_top1_sim: float
    share_sim_above_threshold: float
    min_ratio: float
    median_ratio: float


class Memorization(Record):
    """`busgen.measure.privacy.audit.MemorizationAudit.summary`."""

    n_synthetic: int
    n_copies: int
    n_mem: int
    n_flagged: int
    memorization_rate: float
    n_train_copied: int
    knn_k: int | None = Field(None, description="neighbours in the k-NN ratio's denominator")
    encoder_data: str | None = Field(None, description="what trained the copy encoder (None: pixel-only audit)")
    config: dict[str, float | int | bool | None] = Field(description="the AuditConfig it ran with")
    pixel: SpaceStats | None = None
    feature: SpaceStats | None = None


class Membership(Record):
    """`busgen.measure.privacy.membership.membership_report`."""

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
    closest_pairs: list[tuple[int, int, float]] = Field(description="(synthetic position, training index, cosine)")
    flagged_ids: list[int]
    membership: Membership | None = Field(None, description="needs the generator")


# ----------------------------------------------------------------------------- sampler steps


class SamplerStepsRow(Record):
    """One (sampler, steps) trial: FID against held-out real features and sampling speed."""

    sampler: str
    steps: int
    status: Status
    error: str = ""
    fid: float | None = None
    fid_n: int | None = None  # FID on equal-sized sets of this n
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
    encoder: EncoderIdentity | None = Field(None, description="None: an old result (per-run classifier features)")

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
    reference_encoder: str | None = Field(
        None, description="label of the reference encoder this busgen shipped (None: a result from before it)"
    )


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
    kid: float | None = None  # reference encoder (below); the FID above is too when it is set
    reference_encoder: str | None = None  # label of the encoder behind fid/kid; None = per-run features (old)
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


def _delta_cols(d: PairedDelta | None) -> dict:
    return {"delta": d.value, "delta_ci_low": d.ci_low, "delta_ci_high": d.ci_high} if d else {}


class EvalResult(Record):
    """Everything one suite run produced; ``results.json`` is its JSON form."""

    suite: str
    run_id: str
    timestamp: str = Field(description="UTC, ISO 8601")
    params: SuiteConfig = Field(description="the suite as run (dry runs: shrunk)")
    inputs: Inputs
    timings: dict[str, float] = Field({}, description="stage -> seconds")
    utility: UtilityResult | None = None
    fidelity: FidelityResult | None = None
    privacy: PrivacyResult | None = None
    sampler_steps: SamplerStepsResult | None = None
    metrics: HeadlineMetrics = HeadlineMetrics()
    seconds: float | None = None
    tracking: str = Field("", description='link to the suite\'s MLflow run ("" = tracking off)')

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
            candidates = set(u.recipe_arms()) | {SYN_ONLY}  # full-data arms, not scaling points
            mixed = {a: s for a, s in summary.items() if a in candidates}
            # ranked on validation AUC from stats_version 2 (a winner picked on test AUC reports a test AUC biased
            # up); older results keep the test-AUC ranking they were written with
            rank = u.val_auc_means() if u.stats_version >= 2 else {a: s.auc_mean for a, s in mixed.items()}
            mixed = {a: s for a, s in mixed.items() if a in rank}
            if mixed:
                best = max(mixed, key=rank.get)
                h.update(best_arm=best, auc_best_arm=mixed[best].auc_mean)
                if "auc_real_only" in h:
                    h["delta_auc_best_vs_real"] = mixed[best].auc_mean - h["auc_real_only"]
            h["utility_trials_failed"] = len(u.failed())
            deltas = u.deltas.get(REAL_TEST, {})
            if SYN_ONLY in deltas:
                h["delta_auc_synthetic_only"] = deltas[SYN_ONLY].value
            if (best_mix := u.best_recipe(REAL_TEST)) in deltas:
                h["delta_auc_best_mixed"] = deltas[best_mix].value
        if f := self.fidelity:
            ref = f.reference
            m = ref.synthetic if ref else f.overall
            h.update(fid=m.fid, fid_precision=m.precision, fid_recall=m.recall)
            if ref:
                h.update(kid=ref.synthetic.kid, reference_encoder=ref.encoder.label)
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
        if self.utility and self.utility.scaling:
            rows = [
                {"test_set": name, **r.model_dump(exclude={"delta"}), **_delta_cols(r.delta)}
                for name, pts in self.utility.scaling.items()
                for r in pts
            ]
            write_tables(str(out / "scaling"), rows)
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
