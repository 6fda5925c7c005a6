"""The evaluation trials: plain functions ``settings dict -> metrics dict`` that Ray Tune, tests and notebooks call.

`busgen.eval.sweep.run_trials` runs any of them as a Tune grid (one trial per grid point)
and reports what they return; called directly they just return it.

* ``utility_trial`` -- the downstream-diagnosis question. A classifier is trained on
  the real train split mixed with synthetic images at ``ratio`` (n_syn / n_real drawn
  per epoch; 0 = real only) or on synthetic images alone, early-stopped on *real*
  validation data, and tested on the *real* test split and on any external datasets
  (train on A, test on B). Its operating point is Youden's J on real validation, so
  sensitivity and specificity are not tuned on the test set. Classifiers train
  in-process: a nested Ray Train fit would add ~25 s per trial for no gain at one worker.
* ``fid_trial`` -- FID/KID/PRDC against real features for one (sampler, steps) setting.
* ``sample_trial`` -- sampling throughput (img/s) of one setting, with a pixel sanity check.

Trials write their full reports (ROC points, per-class AUC, per-case scores, the
classifier) under ``artifacts_dir``, which must be storage every node reads (a shared
filesystem on a cluster), and return flat scalars.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from busgen.core.types import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, SamplerName
from busgen.eval.results import ClassificationReport, ClassifierMetrics, Record, UtilityTrial
from busgen.eval.suites import REAL_TEST
from busgen.measure import metrics
from busgen.measure.arrays import labelled
from busgen.model import classifier
from busgen.model.classifier import ClassifierConfig

ARTIFACTS_FILE = "reports.json"

# ----------------------------------------------------------------------------- utility


class UtilityTrialConfig(BaseModel):
    """Everything one utility trial needs; validated on the driver before Tune starts."""

    model_config = ConfigDict(extra="forbid")

    real_dir: str = Field(description="ingested real dataset with train/val/test splits")
    synthetic_dir: str | None = Field(
        None, description='synthetic set (split == "train"); required when ratio > 0 or synthetic_only'
    )
    ratio: float = Field(0.0, ge=0, description="synthetic draws per real draw in each epoch; 0 = real only")
    synthetic_only: bool = Field(False, description="train on synthetic images alone (ratio ignored)")
    seed: int = 0
    recipe: Literal["mix", "finetune", "balance"] = Field("mix", description="see busgen.eval.utility.recipes")
    label: str | None = Field(
        None, description="the arm's name in rows and reports; None = derived from recipe / ratio"
    )
    series: str = Field("", description='scaling-curve series this trial is a point of ("" = none)')
    n_synthetic: int | None = Field(
        None, ge=1, description="use this many synthetic images (nested subsets); None = all"
    )
    real_fraction: float = Field(1.0, gt=0, le=1, description="share of the real train split used (stratified, nested)")
    subset_seed: int = Field(
        0, description="permutation behind n_synthetic / real_fraction subsets (fixed across seeds)"
    )
    finetune_lr_factor: float = Field(0.3, gt=0, description="recipe finetune: phase-2 lr = classifier lr x this")
    classes: list[str] = Field(description="task labels, in output-column order")
    positive: str = Field(description="class whose one-vs-rest AUC / sens / spec are reported")
    classifier: ClassifierConfig = Field(ClassifierConfig(), description="seed and positive are the trial's")
    external_test: dict[str, str] = Field({}, description="name -> dataset dir, tested on `external_split`")
    external_split: str | None = Field("test", description="None: every row of the external dataset")
    n_boot: int = Field(1000, description="bootstrap resamples per CI")
    artifacts_dir: str = Field(description="trial outputs: <artifacts_dir>/<arm>-seed<seed>/")
    torch_threads: int = Field(1, description="intra-op threads; keep equal to the trial's CPU resources")

    @model_validator(mode="after")
    def _check(self):
        needs_syn = self.synthetic_only or self.ratio > 0 or self.recipe != "mix"
        if needs_syn and not self.synthetic_dir:
            raise ValueError(f"the arm {self.arm!r} needs synthetic_dir")
        return self

    @property
    def arm(self) -> str:
        return UtilityTrial(
            **self.model_dump(include={"ratio", "synthetic_only", "seed", "recipe", "label"}), status="ok"
        ).arm

    def evaluation_sets(self) -> dict[str, tuple[str, str | None]]:
        """Name -> (dataset, split): the real test split, then the external datasets."""
        return {
            REAL_TEST: (self.real_dir, "test"),
            **{k: (v, self.external_split) for k, v in self.external_test.items()},
        }

    def out_dir(self) -> Path:
        return Path(self.artifacts_dir) / f"{re.sub(r'[^A-Za-z0-9.]+', '_', self.arm).strip('_')}-seed{self.seed}"


class CaseScores(Record):
    """Per-case labels and positive-class scores, so arms can be compared on the same cases."""

    positive: list[int]
    score: list[float]


class TrialArtifacts(Record):
    """``reports.json`` of a utility trial: its settings, a report and the case scores per test set, history."""

    config: UtilityTrialConfig
    reports: dict[str, ClassificationReport]
    scores: dict[str, CaseScores]
    history: list[dict[str, float]]
    sizes: dict[str, int] = Field(
        {}, description="n_real_train / n_syn_train (absent in artifacts written before recipes)"
    )

    @classmethod
    def read(cls, trial_dir: str | Path) -> TrialArtifacts:
        return cls.model_validate_json((Path(trial_dir) / ARTIFACTS_FILE).read_text())


def train_arm(cfg: UtilityTrialConfig):
    """Train this arm's classifier (its recipe's phases, `busgen.eval.utility.recipes`).

    Returns:
        (model, ClassifierConfig, history, {"n_real_train", "n_syn_train"}: unique images used).
    """
    from busgen.eval.utility import recipes

    phases = recipes.plan_phases(cfg)
    x_val, y_val = labelled(cfg.real_dir, "val", cfg.classes)
    model, ccfg, history = recipes.train_phases(cfg, phases, x_val, y_val)
    sizes = {"n_real_train": max(p.n_real for p in phases), "n_syn_train": max(p.n_synthetic for p in phases)}
    return model, ccfg, history, sizes


def operating_point(model, cfg: UtilityTrialConfig) -> float:
    """Youden threshold on real validation data (0.5 when validation holds one class only)."""
    x_val, y_val = labelled(cfg.real_dir, "val", cfg.classes)
    score = classifier.predict_proba(model, x_val)[:, cfg.classes.index(cfg.positive)]
    y_bin = (y_val == cfg.classes.index(cfg.positive)).astype(int)
    return metrics.youden_threshold(y_bin, score) if 0 < y_bin.sum() < len(y_bin) else 0.5


def utility_trial(config: dict) -> dict:
    """Train one arm, test it on every test set, save its artifacts; returns flat metrics.

    Keys: ``val_auc``, ``epochs_run``, ``seconds``, ``artifacts``, ``n_real_train``, ``n_syn_train``,
    ``draws``, ``real_draws``, ``stopped``
    and ``<test set>/<metric>``
    (the columns of `busgen.eval.results.ClassifierMetrics`).
    """
    cfg = UtilityTrialConfig(**config)
    torch.set_num_threads(cfg.torch_threads)
    t0 = time.time()
    model, ccfg, history, sizes = train_arm(cfg)
    threshold = operating_point(model, cfg)
    reports, scores = {}, {}
    pos = cfg.classes.index(cfg.positive)
    for name, (path, split) in cfg.evaluation_sets().items():
        x, y = labelled(path, split, cfg.classes)
        probs = classifier.predict_proba(model, x)
        reports[name] = ClassificationReport(
            **metrics.classification_report(
                y, probs, cfg.classes, cfg.positive, threshold, n_boot=cfg.n_boot, seed=cfg.seed
            )
        )
        scores[name] = CaseScores(positive=(y == pos).astype(int).tolist(), score=probs[:, pos].tolist())
    best_val = max((h["val_auc"] for h in history if np.isfinite(h["val_auc"])), default=float("nan"))
    out_dir = cfg.out_dir()
    classifier.save_classifier(out_dir / "classifier", model, ccfg, cfg.classes, {"best_val_auc": best_val})
    artifacts = TrialArtifacts(config=cfg, reports=reports, scores=scores, history=history, sizes=sizes)
    (out_dir / ARTIFACTS_FILE).write_text(artifacts.model_dump_json())
    result = {"val_auc": best_val, "epochs_run": len(history), "seconds": time.time() - t0, "artifacts": str(out_dir)}
    from busgen.eval.utility.recipes import exposure

    result.update(sizes, **exposure(history))
    for name, rep in reports.items():
        result.update({f"{name}/{k}": v for k, v in ClassifierMetrics.from_report(rep).model_dump().items()})
    return result


# ----------------------------------------------------------------------------- fid


class FidTrialConfig(BaseModel):
    """One (sampler, steps) point of the FID-vs-steps grid."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="exported generator directory")
    sampler: SamplerName = DEFAULT_SAMPLER
    steps: int = Field(25, ge=1)
    guidance: float = Field(DEFAULT_GUIDANCE, ge=0)
    classes: list[str] = Field(description="classes sampled, n_per_class each")
    n_per_class: int = Field(100, ge=1)
    encoder_dir: str | None = Field(
        None, description="saved classifier whose penultimate layer is the feature space; None = the reference encoder"
    )
    real_features: str = Field(description=".npz with `features` (N, D) of the real reference images, same encoder")
    seed: int = 0
    batch_size: int = Field(64, ge=1)
    torch_threads: int = Field(1, ge=1)


def fid_trial(config: dict) -> dict:
    """Sample, embed, FID/KID/PRDC against the real reference features; returns metrics and timings."""
    from busgen.measure import fidelity
    from busgen.model import generator

    cfg = FidTrialConfig(**config)
    torch.set_num_threads(cfg.torch_threads)
    gen = generator.load(cfg.model)
    labels = [c for c in cfg.classes for _ in range(cfg.n_per_class)]
    t0 = time.perf_counter()
    images = gen.sample(
        labels,
        steps=cfg.steps,
        guidance=cfg.guidance,
        sampler=cfg.sampler,
        seeds=[cfg.seed + i for i in range(len(labels))],
        batch_size=cfg.batch_size,
    )
    seconds = time.perf_counter() - t0
    if cfg.encoder_dir:  # a named classifier's features (secondary, not comparable across runs)
        encoder, _, _ = classifier.load_classifier(cfg.encoder_dir)
        syn = classifier.embed(encoder, images)
    else:
        from busgen.measure.reference import load_reference

        syn = load_reference().features(images)
    real = np.load(cfg.real_features)["features"]
    kid = fidelity.kid_interval(real, syn, n_subsets=50)
    fid, fid_n = fidelity.fid_equal_n(real, syn)
    result = {
        "fid": fid,
        "fid_n": fid_n,
        "kid": kid["kid"],
        "kid_std": (kid["kid_ci_high"] - kid["kid"]) / 1.96,
        "n": len(images),
        "sample_seconds": seconds,
        "images_per_s": len(images) / seconds,
    }
    if min(len(real), len(syn)) > 5:
        result.update(fidelity.prdc(real, syn, k=5))
    return result


# ----------------------------------------------------------------------------- sample (throughput)


class SampleTrialConfig(BaseModel):
    """One ``sample`` trial: time ``n`` images from an exported generator."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="exported generator directory, on storage every node reads")
    n: int = Field(8, ge=1, description="images per trial")
    batch_size: int = Field(8, ge=1, description="images per forward pass")
    sampler: SamplerName = DEFAULT_SAMPLER
    steps: int = Field(10, ge=1, description="denoising steps")
    guidance: float = Field(DEFAULT_GUIDANCE, ge=0, description="classifier-free guidance scale")
    seed: int = 0
    torch_threads: int = Field(1, ge=1, description="keep equal to resources_per_trial CPU for honest timings")


def sample_trial(config: dict) -> dict:
    """Sampling throughput (img/s) and a pixel-statistics sanity check for one setting."""
    from busgen.model import generator

    cfg = SampleTrialConfig(**config)
    torch.set_num_threads(cfg.torch_threads)
    gen = generator.load(cfg.model)
    labels = [gen.class_names[i % len(gen.class_names)] for i in range(cfg.n)]
    kwargs = dict(steps=cfg.steps, guidance=cfg.guidance, sampler=cfg.sampler, batch_size=cfg.batch_size)
    gen.sample(labels[:1], seeds=[cfg.seed], **kwargs)  # warm-up: first call allocates and loads kernels
    t0 = time.perf_counter()
    images = gen.sample(labels, seeds=[cfg.seed + i for i in range(cfg.n)], **kwargs)
    seconds = time.perf_counter() - t0
    return {
        "images_per_s": cfg.n / seconds,
        "seconds": seconds,
        "n": cfg.n,
        "pixel_mean": float(images.mean()),
        "pixel_std": float(images.std()),
    }
