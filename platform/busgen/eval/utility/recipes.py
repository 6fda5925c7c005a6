"""What each utility arm trains on: the training phases of a recipe, as arrays, before any training.

A utility trial (`busgen.eval.trials.utility_trial`) asks ``plan_phases`` for its phases and
trains them in order, each phase continuing from the previous one's weights. Keeping the
data plan a pure function of the trial's settings makes every recipe's claim testable
without training: the fine-tune arm's first phase holds no real image, the balance arm
adds synthetic images of the minority classes only, a scaling point uses exactly N
synthetic images.

Recipes:

* ``mix`` -- real train + synthetic at ``ratio`` (0 = real only), or synthetic only; one
  phase, class-balanced draws within each set (`busgen.measure.classify.mix_weights`).
  Filtered sets and guidance sets are mixes with another ``synthetic_dir``.
* ``finetune`` -- phase 1 on synthetic only (validated on real val: model selection
  only), phase 2 on real train from the phase-1 weights at ``lr x finetune_lr_factor``.
* ``balance`` -- real train plus, per minority class, as many synthetic images of that
  class as it lacks against the largest class; drawn uniformly (the data are balanced
  now, so no re-weighting).

Subsets (``n_synthetic``, ``real_fraction``) are prefixes of one fixed permutation
(``subset_seed``), so a smaller N is nested in a larger one and every classifier seed sees
the same images: the scaling curve varies data, not luck of the draw.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from busgen.data.imageio import resize_batch
from busgen.measure import classify
from busgen.measure.arrays import labelled


@dataclass
class Phase:
    """One training phase: images, labels, draw weights, draws per epoch, LR factor, where the images came from."""

    name: str
    x: np.ndarray  # uint8 (N, H, W)
    y: np.ndarray  # class indices
    weights: np.ndarray
    samples_per_epoch: int
    lr_factor: float = 1.0
    sources: list[str] = field(default_factory=list)  # "real:<split>" / "synthetic", one per image
    n_real: int = 0
    n_synthetic: int = 0


def subset_indices(y: np.ndarray, n: int | None = None, fraction: float = 1.0, seed: int = 0) -> np.ndarray:
    """Indices of a nested subset: a prefix of a fixed permutation, stratified by class for fractions.

    ``n`` keeps the first n of one permutation of all rows (a synthetic set's classes are
    uniform by construction); ``fraction`` keeps that share of every class, so a real
    subset keeps the class mix. Indices come back sorted.
    """
    rng = np.random.default_rng(seed)
    if n is not None:
        if n > len(y):
            raise ValueError(f"error: asked for {n} synthetic images but the set holds {len(y)}; lower n_synthetic")
        return np.sort(rng.permutation(len(y))[:n])
    if fraction >= 1:
        return np.arange(len(y))
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        keep.append(idx[rng.permutation(len(idx))[: max(1, round(fraction * len(idx)))]])
    return np.sort(np.concatenate(keep))


def _real(cfg) -> tuple[np.ndarray, np.ndarray]:
    x, y = labelled(cfg.real_dir, "train", cfg.classes)
    keep = subset_indices(y, fraction=cfg.real_fraction, seed=cfg.subset_seed)
    return resize_batch(x[keep], cfg.classifier.image_size), y[keep]


def _synthetic(cfg) -> tuple[np.ndarray, np.ndarray]:
    x, y = labelled(cfg.synthetic_dir, None, cfg.classes)
    if cfg.n_synthetic is not None:
        keep = subset_indices(y, n=cfg.n_synthetic, seed=cfg.subset_seed)
        x, y = x[keep], y[keep]
    return resize_batch(x, cfg.classifier.image_size), y


def _mix_phase(name: str, parts: list[tuple[str, np.ndarray, np.ndarray, float]], lr_factor: float = 1.0) -> Phase:
    """Concatenate (source, x, y, ratio) sets with class-balanced draws in each, shares by ratio."""
    weights, per_epoch = classify.mix_weights([y for _, _, y, _ in parts], [r for *_, r in parts])
    return Phase(
        name,
        np.concatenate([x for _, x, _, _ in parts]),
        np.concatenate([y for _, _, y, _ in parts]),
        weights,
        per_epoch,
        lr_factor,
        [src for src, x, _, _ in parts for _ in range(len(x))],
        sum(len(x) for src, x, _, _ in parts if src != "synthetic"),
        sum(len(x) for src, x, _, _ in parts if src == "synthetic"),
    )


def _balance_phase(xr: np.ndarray, yr: np.ndarray, xs: np.ndarray, ys: np.ndarray, n_classes: int) -> Phase:
    """Real train + synthetic images of each minority class, as many as it lacks against the largest class."""
    counts = np.bincount(yr, minlength=n_classes)
    rng = np.random.default_rng(0)
    add = []
    for c in range(n_classes):
        need = int(counts.max() - counts[c])
        pool = np.flatnonzero(ys == c)
        if need and not len(pool):
            raise ValueError(f"error: the synthetic set holds no images of class {c} to balance with")
        add.append(pool[rng.permutation(len(pool))[: min(need, len(pool))]] if need else pool[:0])
    add_idx = np.sort(np.concatenate(add))
    x, y = np.concatenate([xr, xs[add_idx]]), np.concatenate([yr, ys[add_idx]])
    sources = ["real:train"] * len(xr) + ["synthetic"] * len(add_idx)
    return Phase("real+minority syn", x, y, np.full(len(y), 1.0 / len(y)), len(y), 1.0, sources, len(xr), len(add_idx))


def plan_phases(cfg) -> list[Phase]:
    """The training phases of a `busgen.eval.trials.UtilityTrialConfig`, in order."""
    if cfg.recipe == "finetune":
        xs, ys = _synthetic(cfg)
        xr, yr = _real(cfg)
        return [
            _mix_phase("synthetic pretrain", [("synthetic", xs, ys, 1.0)]),
            _mix_phase("real fine-tune", [("real:train", xr, yr, 1.0)], lr_factor=cfg.finetune_lr_factor),
        ]
    if cfg.recipe == "balance":
        xr, yr = _real(cfg)
        xs, ys = _synthetic(cfg)
        return [_balance_phase(xr, yr, xs, ys, len(cfg.classes))]
    if cfg.synthetic_only:
        xs, ys = _synthetic(cfg)
        return [_mix_phase("synthetic only", [("synthetic", xs, ys, 1.0)])]
    xr, yr = _real(cfg)
    parts = [("real:train", xr, yr, 1.0)]
    if cfg.ratio > 0:
        xs, ys = _synthetic(cfg)
        parts.append(("synthetic", xs, ys, float(cfg.ratio)))
    return [_mix_phase("mix", parts)]


def real_share(phase: Phase) -> float:
    """Expected fraction of a phase's draws that are real images (its weights over real rows)."""
    real = np.array([src != "synthetic" for src in phase.sources], dtype=bool)
    total = float(phase.weights.sum())
    return float(phase.weights[real].sum() / total) if total > 0 else 0.0


def train_phases(cfg, phases: list[Phase], x_val: np.ndarray, y_val: np.ndarray):
    """Train the phases in order (each from the previous weights); returns (model, ClassifierConfig, history).

    Budget rules (``classifier.budget_rule``):

    * ``converge`` (default) -- each phase's epoch is its own data (the mix rule; at least
      ``min_epoch_draws``, so patience counts enough steps on a small set) and early
      stopping on real validation ends it; the LR follows the classifier's ``schedule``.
      ``max_seconds`` is the arm's whole wall budget: a two-phase recipe shares it (the
      first phase gets half, the second what the first left), so fine-tuning is not
      given twice the budget of a one-phase arm.
    * ``equal_draws`` -- the labelled old variant: every phase draws ``samples_per_epoch``
      images per epoch, whatever its data size (it starves arms with more data).

    History rows carry their phase's index and ``real_draws``, the expected real images
    drawn that epoch (real exposure per arm).
    """
    ccfg = cfg.classifier.model_copy(update={"seed": cfg.seed, "positive": cfg.positive})
    model, history = None, []
    started = time.monotonic()
    for i, phase in enumerate(phases):
        update = {"lr": ccfg.lr * phase.lr_factor}
        if ccfg.budget_rule == "equal_draws":
            update["samples_per_epoch"] = ccfg.samples_per_epoch
        else:
            update["samples_per_epoch"] = max(phase.samples_per_epoch, ccfg.min_epoch_draws or 0)
            if ccfg.max_seconds is not None:  # an even share of what is left: phase 1 of 2 gets half
                left = ccfg.max_seconds - (time.monotonic() - started)
                update["max_seconds"] = max(left / (len(phases) - i), 1.0)
        pcfg = ccfg.model_copy(update=update)
        model, hist = classify.train_classifier(
            phase.x, phase.y, x_val, y_val, pcfg, cfg.classes, sample_weights=phase.weights, init_model=model
        )
        share = real_share(phase)
        history += [{**h, "phase": float(i), "real_draws": h.get("draws", 0.0) * share} for h in hist]
    return model, ccfg, history


def exposure(history: list[dict]) -> dict:
    """Compute an arm used, from its training history: draws, real draws, why it stopped (None for old histories)."""
    if not history or "draws" not in history[-1]:
        return {"draws": None, "real_draws": None, "stopped": None}
    return {
        "draws": float(sum(h["draws"] for h in history)),
        "real_draws": float(sum(h.get("real_draws", 0.0) for h in history)),
        "stopped": classify.STOP_REASONS.get(int(history[-1].get("stop", 0)), "running"),
    }
