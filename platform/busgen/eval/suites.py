"""Evaluation suite specs: what ``platform/busgen/configs/*.yaml`` holds (loaded with `busgen.core.config.load_config`).

`busgen.eval.runner.run_suite` runs a ``SuiteConfig``. Two of its sections configure library
stages rather than evaluation, and they *are* those stages' configs, not copies of them:
``pretrain`` holds the fields of `busgen.train.pretrain.PretrainConfig` and ``generate`` those of
`busgen.generate.shards.GenerateConfig`, minus the fields the runner owns (input and output
folders, run names). Defaults, types and bounds therefore come from the library, and a new
library field is available in suites the day it exists.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from busgen.core.types import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, SamplerName
from busgen.generate.shards import GenerateConfig
from busgen.model.classifier import ClassifierConfig
from busgen.train.pretrain import PretrainConfig

REAL_TEST = "real_test"  # test-set name of the real test split in rows and reports


def arm_name(ratio: float | None, synthetic_only: bool) -> str:
    """Human-readable name of a training mix: ``real``, ``real+syn x0.5``, ``syn only``."""
    if synthetic_only:
        return "syn only"
    return "real" if not ratio else f"real+syn x{ratio:g}"


SYN_ONLY = arm_name(None, synthetic_only=True)  # the synthetic-only arm's name in rows and deltas
FINETUNE = "syn->real ft"  # recipe (b): pretrain on synthetic, fine-tune on real
BALANCE = "real+minority syn"  # recipe (e): synthetic images of the minority classes only, up to balance


def filter_arm(tau: float, ratio: float) -> str:
    """Recipe (c): real + confidence-filtered synthetic at ``ratio``."""
    return f"real+filtered syn x{ratio:g} (tau={tau:g})"


def guidance_arm(guidance: float, ratio: float, synthetic_only: bool) -> str:
    """Recipe (d): a synthetic set sampled at one guidance scale, alone or mixed at ``ratio``."""
    return f"syn only g{guidance:g}" if synthetic_only else f"real+syn g{guidance:g} x{ratio:g}"


def scaling_arm(series: str, n_synthetic: int | None = None, real_fraction: float = 1.0) -> str:
    """A point of the scaling curve: ``syn only N=1000``, ``real+syn x1 N=1000``, ``real 25%``."""
    if n_synthetic is not None:
        return f"{series} N={n_synthetic}"
    return f"{series} {real_fraction:.0%}"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _library_section(name: str, library: type[BaseModel], runner_owned: set[str], doc: str) -> type[_Section]:
    """A suite section holding ``library``'s fields except ``runner_owned`` (setting one is an unknown key).

    The runner builds the library config as ``library(**section.model_dump(), <runner-owned fields>)``.
    """
    missing = runner_owned - set(library.model_fields)
    if missing:  # the library renamed a field the runner fills in: fail at import, not mid-suite
        raise TypeError(f"{library.__name__} has no fields {sorted(missing)}; update busgen.eval.suites")
    fields: dict[str, Any] = {k: (f.annotation, f) for k, f in library.model_fields.items() if k not in runner_owned}
    return create_model(name, __base__=_Section, __module__=__name__, __doc__=doc, **fields)


PretrainSection = _library_section(
    "PretrainSection",
    PretrainConfig,
    {"data_dir", "out", "storage_path", "run_name"},
    "Generator pretraining when ``model`` does not exist yet: `busgen.train.pretrain.PretrainConfig` fields. "
    "The runner trains on ``real_dir`` into ``model``, resumably under ``<out>/work``; an unset "
    "``image_size`` means the real images' size.",
)
GenerateSection = _library_section(
    "GenerateSection",
    GenerateConfig,
    {"model", "out", "class_ratio"},
    "Synthetic set generated when only a model is given: `busgen.generate.shards.GenerateConfig` fields. "
    "Classes are the suite's classes, uniform; mixes with ratio r draw r x n_real images per epoch, "
    "reusing images when ``n`` is smaller.",
)


class FilterRecipe(_Section):
    """Recipe (c): keep synthetic images a real-trained classifier assigns to their conditioned class.

    The filter classifier is the suite's classifier trained on the real train split
    (seed = the first seed), run once on the driver before the grid; kept fractions per
    class are recorded in the result.
    """

    tau: float = Field(0.8, gt=0, lt=1, description="keep rows with p(conditioned class) >= tau")
    ratio: float = Field(1.0, gt=0, description="synthetic:real draws per epoch of the filtered mix")


class GuidanceRecipe(_Section):
    """Recipe (d): synthetic sets sampled at several guidance scales, each trained with (mix at ``ratio``).

    Sets come from ``synthetic_dirs`` (guidance -> set) or are generated from the suite's
    ``model`` under ``<out>/work/guidance_g<g>`` with the ``generate`` section's sampler and
    ``n`` / ``steps`` here.
    """

    guidances: list[float] = [1.0, 1.5, 1.8, 3.0]
    synthetic_dirs: dict[float, str] = Field({}, description="given sets; missing guidances are generated from `model`")
    n: int = Field(400, ge=2, description="images per guidance when generated (classes uniform)")
    steps: int = Field(20, ge=1)
    ratio: float = Field(1.0, gt=0)
    synthetic_only: bool = Field(False, description="train on each set alone instead of mixed with real")


class RecipeSettings(_Section):
    """Training recipes beyond plain mixing (``ratios``), each an arm of the utility grid."""

    finetune: bool = Field(False, description="(b) pretrain on synthetic only, then fine-tune on real train")
    finetune_lr_factor: float = Field(0.3, gt=0, description="phase-2 learning rate = classifier lr x this")
    filter: FilterRecipe | None = Field(None, description="(c)")
    guidance: GuidanceRecipe | None = Field(None, description="(d)")
    balance: bool = Field(False, description="(e) synthetic images only for the minority class(es), up to balance")


class ScalingSettings(_Section):
    """Downstream AUC vs number of images: synthetic-only and one mix at N synthetic, real at fractions.

    N = unique synthetic images (nested subsets of one fixed permutation, the same for
    every seed); sizes above the set's size are skipped with a note. Every arm draws the
    classifier's ``samples_per_epoch`` per epoch (set it for equal compute across N).
    """

    n_synthetic: list[int] = Field([], description="e.g. [1000, 4000, 16000, 64000]")
    ratio: float | None = Field(
        1.0, description="the mix series (real + syn x ratio) at each N; None = synthetic only alone"
    )
    real_fractions: list[float] = Field([], description="e.g. [0.25, 0.5]; 1.0 is the real-only arm itself")
    seeds: list[int] | None = Field(None, description="seeds of the scaling points; None = utility.seeds")

    @model_validator(mode="after")
    def _check(self):
        if any(not 0 < f <= 1 for f in self.real_fractions):
            raise ValueError(f"real_fractions must lie in (0, 1], got {self.real_fractions}")
        if any(n < 2 for n in self.n_synthetic):
            raise ValueError(f"n_synthetic sizes must be >= 2, got {self.n_synthetic}")
        return self


class UtilitySettings(_Section):
    """Downstream diagnosis arms: real + synthetic at each ratio, synthetic only, recipes, scaling, x seeds."""

    enabled: bool = True
    ratios: list[float] = Field(
        [0, 0.5, 1, 2, 4], description="synthetic:real draws per epoch; 0 = real only (the baseline)"
    )
    synthetic_only: bool = Field(True, description="add the arm trained on synthetic images alone")
    seeds: list[int] = Field([0, 1, 2, 3, 4], description="classifier seeds per arm (spread of training noise)")
    recipes: RecipeSettings = RecipeSettings()
    scaling: ScalingSettings = ScalingSettings()
    # paired-delta CI: "cases" resamples test cases (test-set noise only); "cases+seeds" adds training noise:
    # t over the seed pairs combined with a paired bootstrap over cases (busgen.measure.stats.delta_interval)
    delta_ci: Literal["cases", "cases+seeds"] = "cases+seeds"
    external_test: dict[str, str] = Field({}, description="name -> dataset dir: train on this suite's data, test there")
    external_split: str | None = Field("test", description="split of the external datasets; None = every row")
    n_boot: int = Field(1000, description="bootstrap resamples per 95% CI")
    classifier: ClassifierConfig = ClassifierConfig()
    # BUSGen's claims, checked in the report on the seed-paired AUC difference vs real only:
    target_synthetic_only_delta: float = Field(-0.02, description="synthetic only at most 0.02 AUC below real only")
    target_mixed_delta: float = Field(0.03, description="the best real + synthetic mix at least 0.03 above real only")

    @model_validator(mode="before")
    @classmethod
    def _one_budget_rule(cls, data):
        """``samples_per_epoch`` alone means the equal-draws variant (what every result before it measured).

        Naming ``budget_rule: converge`` beside a ``samples_per_epoch`` is a contradiction and an error.
        """
        clf = data.get("classifier") if isinstance(data, dict) else None
        if isinstance(clf, dict) and clf.get("samples_per_epoch"):
            rule = clf.get("budget_rule")
            if rule == "converge":
                raise ValueError(
                    f"error: utility.classifier.samples_per_epoch={clf['samples_per_epoch']} caps every arm's epoch, "
                    "but budget_rule is converge (each arm's epoch is its own data). Remove samples_per_epoch, "
                    "or set utility.classifier.budget_rule=equal_draws for the old variant"
                )
            if rule is None:
                data = {**data, "classifier": {**clf, "budget_rule": "equal_draws"}}
        return data


class FidelitySettings(_Section):
    """Distribution metrics on the real-only classifier's features."""

    enabled: bool = True
    real_splits: list[str] = Field(
        ["val", "test"], description="reference real images: held out from the encoder's training"
    )
    k: int = Field(5, description="PRDC neighbourhood")


class PrivacySettings(_Section):
    """Memorisation audit, membership inference and real-vs-synthetic detection."""

    enabled: bool = True
    member_dir: str | None = Field(
        None,
        description="the generator's training images; None = real_dir, plus an adapted model's support set "
        "(set = exactly these: the override, recorded in params)",
    )
    member_split: str | None = Field("train", description="None = every row of member_dir")
    heldout_splits: list[str] = Field(
        ["val", "test"],
        description="non-members: real images of real_dir the generator never saw (they also train the copy encoder)",
    )
    n_membership: int = Field(200, description="members and non-members each (fewer when fewer exist)")
    timesteps: list[int] = [50, 100, 200]
    encoder_epochs: int = Field(30, description="copy encoder (SimCLR) training epochs")
    closest_pairs: int = Field(8, description="nearest-neighbour pairs shown")


class SamplerStepsSettings(_Section):
    """FID vs sampler and number of steps (needs a model)."""

    enabled: bool = False
    samplers: list[SamplerName] = [DEFAULT_SAMPLER, "dpmpp"]
    steps: list[int] = [5, 10, 25, 50]
    n_per_class: int = 100
    guidance: float = Field(DEFAULT_GUIDANCE, ge=0)
    batch_size: int = 64


class SuiteConfig(_Section):
    """Run an evaluation suite (utility, fidelity, privacy, FID vs steps) on Ray Tune and write a report.

    One evaluation run: inputs, task, parts, Ray resources and where the report goes.
    """

    name: str = Field("utility", description="suite name: MLflow run, Ray Train/Tune run names")
    real_dir: str = Field(description="ingested real dataset with train/val/test splits")
    source: str | None = Field(None, description="raw data ingested into real_dir when real_dir holds no dataset yet")
    image_size: int = Field(64, description="ingest size (only with `source`)")
    model: str | None = Field(None, description="generator dir; pretrained here when missing and `pretrain` is set")
    synthetic_dir: str | None = Field(
        None, description="existing synthetic set; None + model = generate one under out/work"
    )
    out: str = Field("eval_report", description="report folder")
    classes: list[str] = Field(["benign", "malignant"], description="task labels (any subset the data hold)")
    positive: str = Field("malignant", description="class whose one-vs-rest AUC is the headline")
    pretrain: PretrainSection | None = Field(
        None, description="pretrain a generator here when `model` does not exist yet"
    )
    generate: GenerateSection = Field(
        GenerateSection(), description="how the synthetic set is generated when only `model` is given"
    )
    utility: UtilitySettings = Field(
        UtilitySettings(), description="the utility part: classifier arms, seeds, recipes, scaling"
    )
    fidelity: FidelitySettings = Field(FidelitySettings(), description="the fidelity part: FID/KID/PRDC, MS-SSIM")
    privacy: PrivacySettings = Field(
        PrivacySettings(), description="the privacy part: memorisation, membership inference, detector"
    )
    sampler_steps: SamplerStepsSettings = Field(SamplerStepsSettings(), description="the FID-vs-steps grid of samplers")
    resources_per_trial: dict[str, float] = Field(
        {"CPU": 1}, description="Ray resources of one Tune trial, e.g. {CPU: 4, GPU: 1}"
    )
    max_concurrent_trials: int = Field(0, description="0 = as many as resources allow")
    torch_threads: int = Field(1, description="per trial and for driver-side work")
    dry_run: bool = Field(False, description="shrink every size to check that the suite starts end to end")
    tracking: bool = Field(
        True, description="MLflow: a suite run, one nested run per Tune trial, the report (busgen.eval.track)"
    )
    tracking_uri: str | None = Field(
        None, description="MLflow server or store; None = $MLFLOW_TRACKING_URI, else runs/mlruns (one store for all)"
    )

    @classmethod
    def wrong_file_hint(cls, data: dict) -> str | None:
        """A multi-site protocol file passed to `busgen evaluate` names its own command (one way into each)."""
        if data.get("protocol") == "multisite":
            return "this is a multi-site protocol file (protocol: multisite): run it with `busgen multisite`"
        return None

    @model_validator(mode="after")
    def _check(self):
        if self.positive not in self.classes:
            raise ValueError(f"positive={self.positive!r} is not one of classes={self.classes}")
        if len(self.classes) < 2:
            raise ValueError("the task needs at least two classes")
        u = self.utility
        needs_syn = u.synthetic_only or any(u.ratios) or u.recipes.finetune or u.recipes.balance
        needs_syn = needs_syn or u.recipes.filter is not None or bool(u.scaling.n_synthetic)
        if not (self.model or self.synthetic_dir) and needs_syn:
            raise ValueError("synthetic arms need `model` or `synthetic_dir`")
        g = u.recipes.guidance
        if g is not None and not self.model and set(g.guidances) - set(g.synthetic_dirs):
            raise ValueError(
                f"recipes.guidance: no set for guidances {sorted(set(g.guidances) - set(g.synthetic_dirs))}; "
                "give recipes.guidance.synthetic_dirs for them or a `model` to sample them from"
            )
        if self.sampler_steps.enabled and not self.model:
            raise ValueError("sampler_steps needs `model`")
        return self

    def shrunk(self) -> SuiteConfig:
        """Dry-run sizes: every stage runs, each on a handful of images and steps."""
        u, s = self.utility, self.sampler_steps
        upd = {
            "generate": self.generate.model_copy(update={"n": 16, "steps": 2, "shard_size": 16, "batch_size": 16}),
            "utility": u.model_copy(
                update={
                    "seeds": u.seeds[:1],
                    "ratios": sorted(set(u.ratios))[:2],
                    "n_boot": 50,
                    "classifier": u.classifier.model_copy(update={"epochs": 1, "width": 8}),
                    "recipes": u.recipes.model_copy(
                        update={
                            "guidance": u.recipes.guidance
                            and u.recipes.guidance.model_copy(update={"n": 8, "steps": 2})
                        }
                    ),
                    "scaling": u.scaling.model_copy(
                        update={"n_synthetic": [min(u.scaling.n_synthetic)] if u.scaling.n_synthetic else []}
                    ),
                }
            ),
            "privacy": self.privacy.model_copy(update={"n_membership": 16, "encoder_epochs": 1, "timesteps": [100]}),
            "sampler_steps": s.model_copy(update={"samplers": s.samplers[:1], "steps": [2], "n_per_class": 8}),
        }
        if self.pretrain is not None:
            upd["pretrain"] = self.pretrain.model_copy(
                update={"max_steps": 2, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2}
            )
        return self.model_copy(update=upd)
