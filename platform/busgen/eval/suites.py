"""Evaluation suite specs and their Ray Tune trials: one trial per grid point, one row per trial and test set.

``SuiteConfig`` is what ``evals/suites/*.yaml`` holds (loaded with `busgen.core.config.load_config`);
`busgen.eval.runner.run_suite` runs it.

Two trial kinds, both plain functions so Tune, tests and notebooks call the same code:

* ``utility_trial`` -- the downstream-diagnosis question. A classifier is trained on
  the real train split mixed with synthetic images at ``ratio`` (n_syn / n_real drawn
  per epoch; 0 = real only) or on synthetic images alone, early-stopped on *real*
  validation data, and tested on the *real* test split and on any external datasets
  (train on A, test on B). Its operating point is Youden's J on real validation, so
  sensitivity and specificity are not tuned on the test set.
* ``sampler_trial`` -- FID against real images for one (sampler, steps) setting.

Trials write their full reports (ROC points, per-class AUC, the classifier itself)
under ``artifacts_dir``, which must be storage every node reads (a shared filesystem
on a cluster), and report flat scalars to Tune; ``run_grid`` turns the Tune results
into table rows. Classifiers train in-process inside the trial: a nested Ray Train
fit would add ~25 s of overhead per trial for no gain at one worker.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from busgen.model.classifier import ClassifierConfig

REAL_TEST = "real_test"  # test-set name of the real test split in rows and reports
CI_METRICS = ("auc", "sensitivity", "specificity")  # metrics reported with bootstrap CIs
POINT_METRICS = ("accuracy", "balanced_accuracy", "ece", "threshold", "n")


def arm_name(ratio: float | None, synthetic_only: bool) -> str:
    """Human-readable name of a training mix: ``real``, ``real+syn x0.5``, ``syn only``."""
    if synthetic_only:
        return "syn only"
    return "real" if not ratio else f"real+syn x{ratio:g}"


# ----------------------------------------------------------------------------- suite spec


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PretrainSettings(_Section):
    """Generator pretraining when ``model`` does not exist yet (see `busgen.train.pretrain.PretrainConfig`)."""

    preset: str = "tiny"
    image_size: int | None = None  # None: the real images' size
    max_steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.999
    num_workers: int = 1
    use_gpu: bool = False
    checkpoint_every: int = 500


class GenerateSettings(_Section):
    """Synthetic set generated when only a model is given (classes = the suite's classes, uniform)."""

    n: int = Field(1000, ge=1)  # images; mixes with ratio r draw r x n_real per epoch, reusing images when n is smaller
    sampler: Literal["ddim", "dpmpp", "ddpm"] = "ddim"
    steps: int = 25
    guidance: float = 1.8
    seed: int = 0
    batch_size: int = 32
    shard_size: int = 500
    concurrency: int = 1  # sampler actors
    num_gpus: float = 0.0  # per actor


class UtilitySettings(_Section):
    """Downstream diagnosis arms: real + synthetic at each ratio, synthetic only, x seeds."""

    enabled: bool = True
    ratios: list[float] = [0, 0.5, 1, 2, 4]  # synthetic:real draws per epoch; 0 = real only (the baseline)
    synthetic_only: bool = True  # add the arm trained on synthetic images alone
    seeds: list[int] = [0, 1, 2]  # classifier seeds per arm (spread of training noise)
    external_test: dict[str, str] = {}  # name -> dataset dir: train on this suite's data, test there
    external_split: str | None = "test"  # split of the external datasets; None = every row
    n_boot: int = 1000  # bootstrap resamples per 95% CI
    classifier: ClassifierConfig = ClassifierConfig()
    # BUSGen's claims, checked in the report on the seed-paired AUC difference vs real only:
    target_synthetic_only_delta: float = -0.02  # synthetic only at most 0.02 AUC below real only
    target_mixed_delta: float = 0.03  # the best real + synthetic mix at least 0.03 above real only


class FidelitySettings(_Section):
    """Distribution metrics on the real-only classifier's features."""

    enabled: bool = True
    real_splits: list[str] = ["val", "test"]  # reference real images: held out from the encoder's training
    k: int = 5  # PRDC neighbourhood


class PrivacySettings(_Section):
    """Memorisation audit, membership inference and real-vs-synthetic detection."""

    enabled: bool = True
    member_dir: str | None = None  # the generator's training images; None = real_dir (adapted: its support/ folder)
    member_split: str | None = "train"  # None = every row of member_dir
    heldout_splits: list[str] = ["val", "test"]  # non-members: real images of real_dir the generator never saw
    n_membership: int = 200  # members and non-members each (fewer when fewer exist)
    timesteps: list[int] = [50, 100, 200]
    encoder_epochs: int = 30  # copy encoder (SimCLR) training epochs
    closest_pairs: int = 8  # nearest-neighbour pairs shown


class SamplerStepsSettings(_Section):
    """FID vs sampler and number of steps (needs a model)."""

    enabled: bool = False
    samplers: list[Literal["ddim", "dpmpp", "ddpm"]] = ["ddim", "dpmpp"]
    steps: list[int] = [5, 10, 25, 50]
    n_per_class: int = 100
    guidance: float = 1.8
    batch_size: int = 64


class SuiteConfig(_Section):
    """One evaluation run: inputs, task, parts, Ray resources and where the report goes."""

    name: str = "utility"
    real_dir: str  # ingested real dataset with train/val/test splits
    source: str | None = None  # raw data ingested into real_dir when real_dir holds no dataset yet
    image_size: int = 64  # ingest size (only with `source`)
    model: str | None = None  # generator dir; pretrained here when missing and `pretrain` is set
    synthetic_dir: str | None = None  # existing synthetic set; None + model = generate one under out/work
    out: str = "eval_report"  # report folder
    classes: list[str] = ["benign", "malignant"]  # task labels (any subset the data hold)
    positive: str = "malignant"
    pretrain: PretrainSettings | None = None
    generate: GenerateSettings = GenerateSettings()
    utility: UtilitySettings = UtilitySettings()
    fidelity: FidelitySettings = FidelitySettings()
    privacy: PrivacySettings = PrivacySettings()
    sampler_steps: SamplerStepsSettings = SamplerStepsSettings()
    resources_per_trial: dict[str, float] = {"CPU": 1}  # Ray resources of one Tune trial, e.g. {CPU: 4, GPU: 1}
    max_concurrent_trials: int = 0  # 0 = as many as resources allow
    torch_threads: int = 1  # per trial and for driver-side work
    dry_run: bool = False  # shrink every size to check that the suite starts end to end

    @model_validator(mode="after")
    def _check(self):
        if self.positive not in self.classes:
            raise ValueError(f"positive={self.positive!r} is not one of classes={self.classes}")
        if len(self.classes) < 2:
            raise ValueError("the task needs at least two classes")
        if not (self.model or self.synthetic_dir) and (self.utility.synthetic_only or any(self.utility.ratios)):
            raise ValueError("synthetic arms need `model` or `synthetic_dir`")
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


# ----------------------------------------------------------------------------- utility


class UtilityTrialConfig(BaseModel):
    """Everything one utility trial needs; validated on the driver before Tune starts."""

    model_config = ConfigDict(extra="forbid")

    real_dir: str  # ingested real dataset with train/val/test splits
    synthetic_dir: str | None = None  # synthetic set (split == "train"); required when ratio > 0 or synthetic_only
    ratio: float = 0.0  # synthetic draws per real draw in each epoch; 0 = real only
    synthetic_only: bool = False  # train on synthetic images alone (ratio ignored)
    seed: int = 0
    classes: list[str]  # task labels, in output-column order
    positive: str  # class whose one-vs-rest AUC / sens / spec are reported
    classifier: dict = {}  # busgen.eval.classify.ClassifierConfig fields
    external_test: dict[str, str] = {}  # name -> dataset dir, tested on `external_split`
    external_split: str | None = "test"  # None: every row of the external dataset
    n_boot: int = 1000  # bootstrap resamples per CI
    artifacts_dir: str  # trial outputs: <artifacts_dir>/<arm>-seed<seed>/
    torch_threads: int = 1  # intra-op threads; keep equal to the trial's CPU resources


def trial_dir_name(cfg: UtilityTrialConfig) -> str:
    return f"{arm_name(cfg.ratio, cfg.synthetic_only).replace(' ', '_').replace('+', '_')}-seed{cfg.seed}"


def _labelled(path: str, split: str | None, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from busgen.data import dataset as data
    from busgen.eval import classify

    images, labels, _, _ = data.read_arrays(path, split=split, classes=classes)
    if len(images) == 0:
        raise ValueError(f"no images of classes {classes} in {path} (split {split})")
    return images, classify.label_indices(labels, classes)


def training_mix(cfg: UtilityTrialConfig) -> list[tuple[str, str | None, float]]:
    """The (dataset, split, ratio) sets of this arm; the first set defines the epoch length."""
    if (cfg.synthetic_only or cfg.ratio > 0) and not cfg.synthetic_dir:
        raise ValueError("a synthetic arm needs synthetic_dir")
    if cfg.synthetic_only:
        return [(cfg.synthetic_dir, None, 1.0)]
    real = (cfg.real_dir, "train", 1.0)
    return [real] if cfg.ratio == 0 else [real, (cfg.synthetic_dir, None, float(cfg.ratio))]


def train_arm(cfg: UtilityTrialConfig):
    """Train this arm's classifier; returns (model, ClassifierConfig, history)."""
    from busgen.eval import classify
    from busgen.model import classifier

    parts = [(_labelled(d, split, cfg.classes), r) for d, split, r in training_mix(cfg)]
    weights, per_epoch = classify.mix_weights([y for (_, y), _ in parts], [r for _, r in parts])
    ccfg = classifier.ClassifierConfig(**{**cfg.classifier, "seed": cfg.seed, "positive": cfg.positive})
    ccfg = ccfg.model_copy(update={"samples_per_epoch": ccfg.samples_per_epoch or per_epoch})
    x_val, y_val = _labelled(cfg.real_dir, "val", cfg.classes)
    model, history = classify.train_classifier(
        np.concatenate([x for (x, _), _ in parts]),
        np.concatenate([y for (_, y), _ in parts]),
        x_val,
        y_val,
        ccfg,
        cfg.classes,
        sample_weights=weights,
    )
    return model, ccfg, history


def operating_point(model, cfg: UtilityTrialConfig) -> float:
    """Youden threshold on real validation data (0.5 when validation holds one class only)."""
    from busgen.eval import metrics
    from busgen.model import classifier

    x_val, y_val = _labelled(cfg.real_dir, "val", cfg.classes)
    score = classifier.predict_proba(model, x_val)[:, cfg.classes.index(cfg.positive)]
    y_bin = (y_val == cfg.classes.index(cfg.positive)).astype(int)
    return metrics.youden_threshold(y_bin, score) if 0 < y_bin.sum() < len(y_bin) else 0.5


def evaluation_sets(cfg: UtilityTrialConfig) -> dict[str, tuple[str, str | None]]:
    """Name -> (dataset, split): the real test split, then the external datasets."""
    return {REAL_TEST: (cfg.real_dir, "test"), **{k: (v, cfg.external_split) for k, v in cfg.external_test.items()}}


def flat_metrics(report: dict) -> dict[str, float]:
    """A classification report's table columns: value and CI bounds for CI metrics, points for the rest."""
    out = {}
    for m in CI_METRICS:
        out[m], out[f"{m}_ci_low"], out[f"{m}_ci_high"] = (report[m][k] for k in ("value", "ci_low", "ci_high"))
    out.update({m: report[m] for m in POINT_METRICS})
    return out


def utility_trial(config: dict) -> dict:
    """Tune trainable: train one arm, test it on every test set, save artifacts, report flat metrics.

    Returns the reported dict as well, so the function is usable without Tune.
    """
    import torch

    from busgen.eval import metrics
    from busgen.model import classifier

    cfg = UtilityTrialConfig(**config)
    torch.set_num_threads(cfg.torch_threads)
    t0 = time.time()
    model, ccfg, history = train_arm(cfg)
    threshold = operating_point(model, cfg)
    reports, scores = {}, {}
    pos = cfg.classes.index(cfg.positive)
    for name, (path, split) in evaluation_sets(cfg).items():
        x, y = _labelled(path, split, cfg.classes)
        probs = classifier.predict_proba(model, x)
        reports[name] = metrics.classification_report(
            y, probs, cfg.classes, cfg.positive, threshold, n_boot=cfg.n_boot, seed=cfg.seed
        )
        # per-case scores, so arms can be compared on the same cases (paired bootstrap)
        scores[name] = {"positive": (y == pos).astype(int).tolist(), "score": probs[:, pos].tolist()}
    best_val = max((h["val_auc"] for h in history if np.isfinite(h["val_auc"])), default=float("nan"))
    out_dir = Path(cfg.artifacts_dir) / trial_dir_name(cfg)
    classifier.save_classifier(out_dir / "classifier", model, ccfg, cfg.classes, {"best_val_auc": best_val})
    (out_dir / "reports.json").write_text(
        json.dumps(
            {"config": cfg.model_dump(), "reports": reports, "scores": scores, "history": history}, default=float
        )
    )
    result = {"val_auc": best_val, "epochs_run": len(history), "seconds": time.time() - t0, "artifacts": str(out_dir)}
    result.update({f"{name}/{k}": v for name, rep in reports.items() for k, v in flat_metrics(rep).items()})
    _report(result)
    return result


# ----------------------------------------------------------------------------- sampler / steps


class SamplerTrialConfig(BaseModel):
    """One (sampler, steps) point of the FID-vs-steps sweep."""

    model_config = ConfigDict(extra="forbid")

    model: str  # exported generator directory
    sampler: str = "ddim"
    steps: int = 25
    guidance: float = 1.8
    classes: list[str]  # classes sampled, n_per_class each
    n_per_class: int = 100
    encoder_dir: str  # saved classifier whose penultimate layer is the feature space
    real_features: str  # .npz with `features` (N, D) of the real reference images
    seed: int = 0
    batch_size: int = 64
    torch_threads: int = 1


def sampler_trial(config: dict) -> dict:
    """Tune trainable: sample, embed, FID/KID/PRDC against the real reference features."""
    import torch

    from busgen.eval import fidelity
    from busgen.model import classifier, generator

    cfg = SamplerTrialConfig(**config)
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
    encoder, _, _ = classifier.load_classifier(cfg.encoder_dir)
    syn = classifier.embed(encoder, images)
    real = np.load(cfg.real_features)["features"]
    kid, kid_std = fidelity.kernel_inception_distance(
        real, syn, n_subsets=50, subset_size=min(1000, len(real), len(syn))
    )
    result = {
        "fid": fidelity.frechet_distance(real, syn),
        "kid": kid,
        "kid_std": kid_std,
        "n": len(images),
        "sample_seconds": seconds,
        "images_per_s": len(images) / seconds,
    }
    if min(len(real), len(syn)) > 5:
        result.update(fidelity.prdc(real, syn, k=5))
    _report(result)
    return result


# ----------------------------------------------------------------------------- Tune


def _report(result: dict) -> None:
    """``tune.report`` inside a Tune trial; a no-op when the trainable is called directly."""
    import warnings

    from ray import tune

    with warnings.catch_warnings():  # outside a session Ray warns and returns; that is the intended no-op
        warnings.simplefilter("ignore", UserWarning)
        tune.report({k: v for k, v in result.items() if isinstance(v, (int, float, str))})


def run_grid(
    trainable: Callable[[dict], dict],
    base: dict,
    grid: list[dict],
    storage_path: str,
    name: str,
    resources: dict[str, float],
    max_concurrent: int = 0,
) -> list[dict]:
    """Run one Tune trial per grid point (``base`` updated with the point) and return one row per trial.

    The points are passed as a single ``grid_search`` over whole dicts, so arbitrary,
    non-rectangular grids (e.g. ratios plus a synthetic-only arm) are one sweep.

    Returns:
        rows: the grid point's keys, ``status`` (ok / error), ``error`` and every scalar metric.
    """
    from ray import tune

    from busgen.core.raylocal import init_ray

    init_ray()
    tuner = tune.Tuner(
        tune.with_resources(_unpack(trainable), {k: v for k, v in resources.items() if v}),
        param_space={"base": base, "point": tune.grid_search(grid)},
        tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=max_concurrent or None),
        run_config=tune.RunConfig(name=f"{name}-{uuid.uuid4().hex[:6]}", storage_path=storage_path, verbose=0),
    )
    rows = []
    for result in tuner.fit():
        point = result.config["point"]
        row = {
            **point,
            "status": "error" if result.error else "ok",
            "error": str(result.error)[:500] if result.error else "",
        }
        row.update({k: v for k, v in (result.metrics or {}).items() if "/" in k or k in _TRIAL_KEYS})
        rows.append(row)
    return rows


# Scalars a trial reports that belong in its row (Tune adds its own bookkeeping keys).
_TRIAL_KEYS = {
    "val_auc",
    "epochs_run",
    "seconds",
    "artifacts",
    "fid",
    "kid",
    "kid_std",
    "n",
    "sample_seconds",
    "images_per_s",
    "precision",
    "recall",
    "density",
    "coverage",
}


def _unpack(trainable: Callable[[dict], dict]) -> Callable[[dict], None]:
    """Tune passes {"base", "point"}; the trial functions take the merged settings."""

    def run(config: dict) -> None:
        trainable({**config["base"], **config["point"]})

    run.__name__ = trainable.__name__
    return run
