"""The multi-site suite spec: sites, targets, shots, adaptation methods and the per-variant evaluation settings.

Sections that configure library stages are those stages' configs minus the fields the
runner owns (as in `busgen.eval.suites`): ``pretrain`` = `PretrainConfig`, ``adapt`` =
`AdaptConfig`, ``generate`` = `GenerateConfig`. ``utility``/``fidelity``/``privacy`` are the
sections of an ordinary suite and are handed to `run_suite` for every variant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Union

from pydantic import Field, model_validator

from busgen.eval.suites import (
    FidelitySettings,
    PretrainSection,
    PrivacySettings,
    UtilitySettings,
    _library_section,
    _Section,
)
from busgen.generate.shards import GenerateConfig
from busgen.model.lora import AdaptMethod
from busgen.train.adapt import AdaptConfig

ALL = "all"  # K = every labelled train image of the target
Shots = Union[int, Literal["all"]]
VariantKind = Literal["target_only", "foundation", "joint"]
JOINT = "joint"  # key of the joint generator in ``models``
CROSS_SITE_SPLIT = "test"  # the source site's split behind the cross-site AUC, whatever utility.external_split says

AdaptSection = _library_section(
    "AdaptSection",
    AdaptConfig,
    {"base", "data_dir", "out", "shots", "method", "classes", "storage_path", "run_name", "seed"},
    "Few-shot adaptation: `busgen.train.adapt.AdaptConfig` fields. The runner sets the base (the source "
    "site's generator), the target data, K, the method, the suite's classes and the support seed.",
)
SampleSection = _library_section(
    "SampleSection",
    GenerateConfig,
    {"model", "out", "class_ratio", "domain_ratio"},
    "Synthetic sets, one per generator and domain condition: `busgen.generate.shards.GenerateConfig` "
    "fields. Classes are the suite's, uniform; the domain condition is set per variant.",
)


class MultisiteConfig(_Section):
    """Multi-site protocol: target-only, foundation + few-shot (LoRA/full) and joint generators, cross-site AUC.

    One multi-site protocol run: for every target site T and source site S (the other one).
    """

    protocol: Literal["multisite"] = Field(
        "multisite", description="marks a protocol file: `busgen evaluate` points it to `busgen multisite`"
    )
    name: str = Field("multisite", description="protocol run name (prefix of every stage's run name)")
    notes: str = Field("", description="shown under the report's title: what this run cut or changed, and why")
    sites: dict[str, str] = Field(
        description="site name -> ingested dataset dir (train/val/test splits, one domain each)"
    )
    targets: list[str] | None = Field(None, description="sites used as the target T (default: every site)")
    joint_dir: str | None = Field(
        None, description="combined dataset of all sites (`busgen combine`); default: combined here"
    )
    models: dict[str, str] = Field(
        {}, description='site name or "joint" -> generator dir; pretrained here when it lacks busgen.json'
    )
    shots: list[Shots] = Field([5, 10, 25, ALL], description="K labelled target images per class")
    methods: list[AdaptMethod] = Field(["lora", "full"], description="adaptation methods of the foundation variants")
    variants: list[VariantKind] = Field(
        ["target_only", "foundation", "joint"], description="which generator variants to run"
    )
    augmentation: bool = Field(
        True, description="device-type augmentation arms (joint generator, other domains' conditions)"
    )
    real_target_source: bool = Field(
        True,
        description="control arm 'real T+S': a classifier on T's and S's real labelled train images, no synthetic "
        "(what S's labels alone buy cross-site, against the augmentation arms)",
    )
    support_seed: int = Field(0, description="seeds the K-shot support set: the same rows for every arm of a (T, K)")
    classes: list[str] = Field(["benign", "malignant"], description="task labels")
    positive: str = Field("malignant", description="class whose one-vs-rest AUC is the headline")
    out: str = Field("multisite_report", description="report folder (report.md, results.json/.csv, figures)")
    work_dir: str | None = Field(
        None, description="generators, adapters, synthetic sets, per-variant suites; default <out>/work"
    )
    pretrain: PretrainSection | None = Field(
        PretrainSection(), description="None: never pretrain; variants without a generator wait"
    )
    adapt: AdaptSection = Field(AdaptSection(), description="adaptation settings shared by every adapter")
    generate: SampleSection = Field(SampleSection(), description="sampling settings of every synthetic set")
    utility: UtilitySettings = Field(
        UtilitySettings(), description="external_test: extra datasets besides the source site"
    )
    fidelity: FidelitySettings = Field(FidelitySettings(), description="fidelity part of each variant's suite")
    privacy: PrivacySettings = Field(
        PrivacySettings(), description="member_dir is set per variant (the generator's T images)"
    )
    fidelity_privacy_on_augmentation: bool = Field(False, description="augmentation arms: utility only, unless set")
    headline_ratio: float | None = Field(
        None, description="the mix judged and plotted per variant; None = the largest ratio"
    )
    target_delta: float = Field(
        0.05, description="the K-shot claim: K real + adapted synthetic beats K real by this AUC"
    )
    target_shots: int = Field(10, description="... at this K")
    resources_per_trial: dict[str, float] = Field({"CPU": 1}, description="Ray resources of one Tune trial")
    max_concurrent_trials: int = Field(0, description="0 = as many as resources allow")
    torch_threads: int = Field(1, description="per trial and for driver-side work")
    dry_run: bool = Field(False, description="shrink every size (and each suite's) to check the protocol end to end")
    report_only: bool = Field(False, description="re-render the report from the finished variants; start nothing")
    tracking: bool = Field(False, description="MLflow runs of the per-variant suites")

    @model_validator(mode="after")
    def _check(self):
        if len(self.sites) != 2:
            raise ValueError(f"sites: give exactly two sites (target and source), got {sorted(self.sites)}")
        if JOINT in self.sites:
            raise ValueError(f"sites: {JOINT!r} names the joint generator; call the site something else")
        unknown = sorted(set(self.targets or []) - set(self.sites))
        if unknown:
            raise ValueError(f"targets {unknown} are not sites; known sites: {sorted(self.sites)}")
        bad_models = sorted(set(self.models) - set(self.sites) - {JOINT})
        if bad_models:
            raise ValueError(f"models {bad_models}: keys are site names or {JOINT!r}")
        if any(isinstance(k, int) and k < 1 for k in self.shots) or not self.shots:
            raise ValueError(f"shots must be positive integers or {ALL!r}, got {self.shots}")
        if self.positive not in self.classes:
            raise ValueError(f"positive={self.positive!r} is not one of classes={self.classes}")
        if self.privacy.member_dir:
            raise ValueError("privacy.member_dir is set per variant by the runner; leave it unset")
        if self.utility.external_split not in (None, CROSS_SITE_SPLIT):
            raise ValueError(
                f"utility.external_split={self.utility.external_split!r}: the cross-site test is the source site's "
                f"{CROSS_SITE_SPLIT!r} split alone (the runner tests a copy holding only those rows, in which "
                f"{self.utility.external_split!r} selects nothing); set utility.external_split to "
                f"{CROSS_SITE_SPLIT!r} or null (null: every row of the extra external_test sets)"
            )
        return self

    @property
    def headline_arm(self) -> str:
        """The real + synthetic arm the table highlights and the plot draws (fixed up front, not picked on test)."""
        from busgen.eval.suites import arm_name

        return arm_name(self.headline_ratio or max(self.utility.ratios), synthetic_only=False)

    @property
    def target_sites(self) -> list[str]:
        return self.targets or sorted(self.sites)

    def source_of(self, target: str) -> str:
        return next(s for s in sorted(self.sites) if s != target)

    @property
    def work(self) -> Path:
        return Path(self.work_dir or Path(self.out) / "work").resolve()

    def shrunk(self) -> MultisiteConfig:
        """Dry-run sizes: the smallest K, two-step training, a handful of images; suites shrink themselves."""
        ints = sorted(k for k in self.shots if isinstance(k, int))
        return self.model_copy(
            update={
                "shots": ints[:1] or [ALL],
                "pretrain": self.pretrain
                and self.pretrain.model_copy(
                    update={"max_steps": 2, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2}
                ),
                "adapt": self.adapt.model_copy(update={"max_steps": 2, "batch_size": 4}),
                "generate": self.generate.model_copy(update={"n": 16, "steps": 2, "shard_size": 16, "batch_size": 16}),
            }
        )
