"""Typed utility results: per-trial classifier metrics, paired AUC differences, recipe and scaling summaries.

Part of ``results.json`` (`busgen.eval.results.EvalResult.utility`); split out of
`busgen.eval.results`, which re-exports every name, so imports from there keep working.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from busgen.eval.suites import BALANCE, FINETUNE, REAL_TEST, SYN_ONLY, arm_name

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
        """``value [low, high]``; ``value [n/a]`` when there is no interval (e.g. a Δ over one seed pair)."""
        f = "{:+.3f}" if signed else "{:.3f}"
        if not (np.isfinite(self.ci_low) and np.isfinite(self.ci_high)):
            return f"{f.format(self.value)} [n/a]"
        return f"{f.format(self.value)} [{f.format(self.ci_low)}, {f.format(self.ci_high)}]"


class PairedDelta(CI):
    """AUC(arm) - AUC(real only) on the same test cases, mean over ``n_runs`` seed pairs.

    Results from issue 26 on (``UtilityResult.stats_version`` 2, `busgen.measure.stats`):
    ``ci_low``/``ci_high`` = mean ± t_{n-1}·√(sd_seed²/n + case_sd²), with its seed-only part
    (t over the seed pairs) and ``case_sd`` (paired bootstrap over test cases) kept beside it.
    Older results have none of the three (None), and one seed gives NaN widths.
    """

    n_runs: int
    ci_seed_low: float | None = None
    ci_seed_high: float | None = None
    case_sd: float | None = Field(None, description="sd of the seed-mean Δ over test-case resamples")


class Roc(Record):
    fpr: list[float]
    tpr: list[float]
    thresholds: list[float] = []


class ArmRoc(Roc):
    auc: float


class ClassificationReport(Record):
    """`busgen.measure.metrics.classification_report` of one classifier on one test set."""

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
    recipe: str = "mix"
    series: str = ""
    n_real_train: int | None = None
    n_syn_train: int | None = None
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
    artifacts: str | None = Field(None, description="<artifacts_dir>/<arm>-seed<seed>/ (classifier/, reports.json)")
    test_sets: dict[str, ClassifierMetrics] = {}
    # recipes and scaling (busgen.eval.utility.recipes); defaults = a plain mix, so older results read unchanged
    recipe: str = "mix"
    label: str | None = Field(
        None, description="the arm's name when it is not derived from ratio (recipes, scaling points)"
    )
    series: str = Field("", description='scaling series ("" = not a scaling point)')
    n_synthetic: int | None = Field(None, description="requested synthetic subset size (None = whole set)")
    real_fraction: float = 1.0
    n_real_train: int | None = Field(None, description="unique images the classifier trained on")
    n_syn_train: int | None = None
    # compute, reported (not equalised): None in results written before the converging yardstick
    draws: float | None = Field(None, description="images drawn over all epochs and phases")
    real_draws: float | None = Field(None, description="expected real images among them (real exposure)")
    stopped: str | None = Field(
        None, description="why training ended (last phase): converged / epoch cap / wall budget"
    )

    @property
    def arm(self) -> str:
        if self.label:
            return self.label
        return {"finetune": FINETUNE, "balance": BALANCE}.get(self.recipe) or arm_name(self.ratio, self.synthetic_only)

    @property
    def is_subset(self) -> bool:
        """A scaling point on part of the data (not a full-data recipe arm)."""
        return self.n_synthetic is not None or self.real_fraction < 1

    def rows(self) -> list[UtilityRow]:
        keys = dict(arm=self.arm, ratio=self.ratio, synthetic_only=self.synthetic_only, seed=self.seed)
        keys.update(status=self.status, val_auc=self.val_auc, epochs_run=self.epochs_run)
        keys.update(recipe=self.recipe, series=self.series, n_real_train=self.n_real_train)
        keys.update(n_syn_train=self.n_syn_train)
        if not self.test_sets:
            return [UtilityRow(**keys, test_set=REAL_TEST)]
        return [UtilityRow(**keys, test_set=name, metrics=m) for name, m in sorted(self.test_sets.items())]


class ArmSummary(Record):
    """AUC over seeds: mean and sample standard deviation (ddof=1; 0 for one seed)."""

    auc_mean: float
    auc_std: float
    n_seeds: int


class ScalingRow(Record):
    """One point of a scaling curve: AUC of a series at N unique training images of its varied kind.

    ``ci_*``: 95% interval of the seed mean (t distribution over seeds: training noise);
    ``delta``: the seed-paired AUC difference vs real only, with its CI.
    """

    series: str = Field(description='"syn only", "real+syn x1", "real"')
    arm: str
    kind: Literal["synthetic", "real"] = Field(description="which count N is")
    n: int
    n_seeds: int
    auc_mean: float
    auc_std: float
    ci_low: float
    ci_high: float
    delta: PairedDelta | None = None


class RecipeInfo(Record):
    """What the recipes prepared on the driver: filter statistics and the guidance sets."""

    filter_tau: float | None = None
    filter_kept: dict[str, float] = Field({}, description="class -> kept fraction of the synthetic set")
    filter_counts: dict[str, list[int]] = Field({}, description="class -> [kept, total]")
    filtered_dir: str | None = None
    guidance_dirs: dict[str, str] = Field({}, description="guidance (as text) -> synthetic set")
    guidance_sizes: dict[str, int] = {}
    notes: list[str] = Field([], description="e.g. scaling sizes skipped because the set is smaller")


class UtilityResult(Record):
    """The utility grid: trials, each arm's first-seed ROC per test set, and paired AUC differences."""

    trials: list[UtilityTrial]
    roc: dict[str, dict[str, ArmRoc]] = Field({}, description="arm -> test set -> ROC (first seed)")
    deltas: dict[str, dict[str, PairedDelta]] = Field({}, description="test set -> arm -> vs real only")
    recipes: RecipeInfo | None = None
    scaling: dict[str, list[ScalingRow]] = Field({}, description="test set -> scaling points")
    # 1 = results written before issue 26 (percentile bootstrap Δ CIs, the 1.96·sd·√(2/n) noise floor, best
    # recipe picked on the test Δ); 2 = t + case-bootstrap Δ CIs, 80%-power MDE, best recipe picked on
    # validation. Old files lack the key and so read, and render, as they were written.
    stats_version: int = 1

    def rows(self) -> list[UtilityRow]:
        return [row for t in self.trials for row in t.rows()]

    def failed(self) -> list[UtilityTrial]:
        return [t for t in self.trials if t.status != "ok"]

    def test_sets(self) -> list[str]:
        """The real test split first, then the external test sets."""
        names = {r.test_set for r in self.rows()}
        return [REAL_TEST] * (REAL_TEST in names) + sorted(names - {REAL_TEST})

    def arm_order(self) -> list[str]:
        """Mix arms by ratio, synthetic-only, then recipe arms and scaling points in grid order."""
        plain = {t.arm: (t.synthetic_only, t.ratio) for t in self.trials if t.label is None and t.recipe == "mix"}
        rest = [t.arm for t in self.trials if not t.is_subset and t.arm not in plain]
        rest += [t.arm for t in self.trials if t.is_subset]
        return sorted(plain, key=plain.get) + list(dict.fromkeys(rest))

    def recipe_arms(self) -> list[str]:
        """Arms trained on the full real train split plus synthetic data (candidates for "best recipe")."""
        return list(
            dict.fromkeys(t.arm for t in self.trials if not t.is_subset and not t.synthetic_only and t.arm != "real")
        )

    def arm_summary(self, test_set: str) -> dict[str, ArmSummary]:
        """Arm -> mean and std of AUC over seeds on one test set (successful trials only)."""
        by_arm = defaultdict(list)
        for r in self.rows():
            if r.test_set == test_set and r.status == "ok" and r.metrics is not None:
                by_arm[r.arm].append(r.metrics.auc)
        return {
            a: ArmSummary(
                auc_mean=float(np.mean(v)), auc_std=float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, n_seeds=len(v)
            )
            for a, v in by_arm.items()
        }

    def val_auc_means(self) -> dict[str, float]:
        """Arm -> mean over seeds of the best real-validation AUC (successful trials with a finite one)."""
        by_arm = defaultdict(list)
        for t in self.trials:
            if t.status == "ok" and t.val_auc is not None and np.isfinite(t.val_auc):
                by_arm[t.arm].append(t.val_auc)
        return {a: float(np.mean(v)) for a, v in by_arm.items()}

    def best_on_validation(self) -> str | None:
        """The real + synthetic arm (any recipe, full data) with the highest mean validation AUC.

        Chosen on validation so that the test Δ it is then judged by is an honest estimate:
        the arm with the largest test Δ among many carries the winner's curse, and its
        unadjusted CI would overstate how sure the gain is.
        """
        val = self.val_auc_means()
        mixed = [a for a in self.recipe_arms() if a in val]
        return max(mixed, key=val.get) if mixed else None

    def best_mix(self, test_set: str = REAL_TEST) -> str | None:
        """Results before issue 26 only: the arm with the largest paired AUC gain *on the test set* itself."""
        deltas = self.deltas.get(test_set, {})
        candidates = set(self.recipe_arms()) if self.trials else set(deltas)
        mixed = [a for a in deltas if a != SYN_ONLY and a in candidates]
        return max(mixed, key=lambda a: deltas[a].value) if mixed else None

    def best_recipe(self, test_set: str = REAL_TEST) -> str | None:
        """The "best recipe" a report judges: on validation (``stats_version`` 2), as written for older results."""
        return self.best_on_validation() if self.stats_version >= 2 else self.best_mix(test_set)
