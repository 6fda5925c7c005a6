"""Downstream diagnosis classifier: the yardstick for "is synthetic data useful?".

A compact ResNet-18-style CNN in plain torch (no torchvision) is trained on real,
synthetic or mixed data and always validated and tested on *real* images, so
that any gain or loss is measured where it matters. Training uses balanced
sampling (BUS sets are imbalanced: normal and malignant are minorities), light
augmentation, and early stopping on real validation AUC. Utility trials run it
in-process inside Ray Tune trials (``busgen.eval.trials``).

The network, its persistence and ``Predictor`` live in ``busgen.model.classifier``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from busgen.measure.metrics import label_indices
from busgen.model.classifier import ClassifierConfig, ResNetClassifier, build_model, probs_of, to_tensor, unwrap

# Augmentation


def augment_batch(
    x: torch.Tensor,
    gen: torch.Generator,
    max_shift: float = 0.06,
    intensity: float = 0.1,
    hflip: bool = True,
    scale: float = 0.0,
    noise: float = 0.0,
) -> torch.Tensor:
    """Random horizontal flip, translation (+ optional zoom), gain/offset jitter and noise, per sample.

    Ultrasound images are left-right symmetric in meaning (probe orientation varies)
    but not up-down (depth), so only horizontal flips are used. One affine grid
    sample does flip, shift and zoom at once.
    """
    b = x.shape[0]
    u = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731, uniform [0, 1)
    sx = 1.0 + scale * (2 * u(b) - 1)
    flip = torch.where(u(b) < 0.5, -1.0, 1.0) if hflip else torch.ones(b)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = sx * flip, sx
    theta[:, :, 2] = 2 * max_shift * (2 * u(b, 2) - 1)  # grid units span [-1, 1] = 2 per side
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Out-of-field pixels become -1 (black), like the ultrasound background.
    out = F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1
    gain = 1 + intensity * (2 * u(b, 1, 1, 1) - 1)
    offset = intensity * (2 * u(b, 1, 1, 1) - 1)
    out = out * gain + offset
    if noise > 0:
        out = out + noise * torch.randn(out.shape, generator=gen)
    return out.clamp_(-1, 1)


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """Per-sample weights 1/count(class) so every class is drawn equally often."""
    counts = np.bincount(y)
    return (1.0 / counts[y]).astype(np.float64)


def mix_weights(labels_per_set: Sequence[np.ndarray], ratios: Sequence[float]) -> tuple[np.ndarray, int]:
    """Sampling weights for a concatenation of training sets, balanced by class within each set.

    Set i receives a share ratios[i] / sum(ratios) of each epoch's draws, and the
    epoch holds len(set 0) * sum(ratios) / ratios[0] samples. With sets
    [(real, 1.0), (synthetic, r)] this draws n_real real and r * n_real synthetic
    images per epoch, i.e. r = n_synthetic / n_real.

    Returns:
        (weights for the concatenated samples, samples per epoch).
    """
    total = float(sum(ratios))
    parts = [balanced_weights(y) / len(np.unique(y)) * (r / total) for y, r in zip(labels_per_set, ratios)]
    per_epoch = round(len(labels_per_set[0]) * total / ratios[0])
    return np.concatenate(parts), per_epoch


# Training loop


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, class_names: Sequence[str], positive: str) -> dict:
    """Validation loss, accuracy and positive-vs-rest AUC (macro one-vs-rest if `positive` is absent).

    Predictions are the model's own (flip-averaged when it has ``tta_flip``), so early
    stopping selects on what the test will measure.
    """
    p = probs_of(unwrap(model), x)
    probs = p.numpy()
    y_np = y.numpy()
    nll = F.nll_loss(p.clamp_min(1e-12).log(), y)
    out = {"val_loss": float(nll), "val_acc": float((probs.argmax(1) == y_np).mean())}
    try:
        if positive in class_names:
            k = list(class_names).index(positive)
            out["val_auc"] = float(roc_auc_score(y_np == k, probs[:, k]))
        else:
            out["val_auc"] = float(roc_auc_score(y_np, probs, multi_class="ovr", labels=range(len(class_names))))
    except ValueError:  # one class only in validation: AUC undefined
        out["val_auc"] = float("nan")
    return out


class WeightEma:
    """Exponential moving average of a network's weights and BatchNorm statistics.

    The averaged network is what gets validated, selected and kept: on a few hundred
    images the SGD iterate wanders from epoch to epoch, and its average is a steadier
    classifier (a smaller seed-to-seed AUC spread is a finer yardstick). The decay
    warms up as ``min(decay, (1 + t) / (10 + t))`` so the random initialisation fades fast.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.steps = decay, 0
        self.model = copy.deepcopy(unwrap(model)).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        self.steps += 1
        live = unwrap(model).state_dict()
        for name, value in self.model.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(live[name].detach(), alpha=1 - d)
            else:
                value.copy_(live[name])


def _train_epoch(
    model: nn.Module,
    loader: DataLoader,
    opt: torch.optim.Optimizer,
    cfg: ClassifierConfig,
    gen: torch.Generator,
    ema: WeightEma | None = None,
) -> tuple[float, int]:
    """One pass over the loader; returns (mean loss, images drawn)."""
    model.train()
    device = next(model.parameters()).device
    total, n = 0.0, 0
    for xb, yb in loader:
        if cfg.augment:
            xb = augment_batch(xb, gen, cfg.max_shift, cfg.intensity_jitter)
        loss = F.cross_entropy(model(xb.to(device)), yb.to(device), label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update(model)
        total, n = total + loss.item() * len(yb), n + len(yb)
    return total / max(n, 1), n


def fit(
    model: nn.Module,
    x_tr: torch.Tensor,
    y_tr: torch.Tensor,
    weights: np.ndarray,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    cfg: ClassifierConfig,
    class_names: Sequence[str],
    rank: int = 0,
    world_size: int = 1,
    report_fn: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train with balanced sampling and early stopping; leaves the best validation weights in `model`.

    With ``cfg.ema_decay > 0`` the weights validated, selected and left in `model` are
    the EMA's (`WeightEma`).

    Each rank draws its own 1/world_size share of the epoch (different sampler seed)
    and all ranks evaluate the full validation set, so every rank takes the same
    early-stopping decision without extra communication.

    Returns:
        history: one dict per epoch (epoch, lr, train_loss, draws, val_loss, val_acc, val_auc, stop);
        ``stop`` is 0 until the last row, which holds the `STOP_REASONS` code.
    """
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    n_epoch = max(1, (cfg.samples_per_epoch or len(y_tr)) // world_size)
    sampler = WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double), n_epoch, replacement=True, generator=gen
    )
    loader = DataLoader(
        TensorDataset(x_tr, y_tr), batch_size=cfg.batch_size, sampler=sampler, drop_last=n_epoch > cfg.batch_size
    )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule_step = lr_schedule(opt, cfg)
    ema = WeightEma(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    history, best, best_state, stale = [], -np.inf, None, 0
    started = time.monotonic()
    for epoch in range(cfg.epochs):
        lr = opt.param_groups[0]["lr"]
        loss, drawn = _train_epoch(model, loader, opt, cfg, gen, ema)
        record = {"epoch": epoch, "lr": lr, "train_loss": loss, "draws": float(drawn * world_size)}
        judged = ema.model if ema is not None else model
        record.update(evaluate(judged, x_val, y_val, class_names, cfg.positive))
        history.append(record)
        if report_fn is not None:
            report_fn(record)
        # A NaN AUC (single-class validation) falls back to loss so stopping still works.
        use_auc = cfg.monitor == "auc" and np.isfinite(record["val_auc"])
        score = record["val_auc"] if use_auc else -record["val_loss"]
        improved = score > best + 1e-4
        schedule_step(score)
        if improved:
            best, best_state, stale = score, copy.deepcopy(unwrap(judged).state_dict()), 0
        else:
            stale += 1
        record["stop"] = float(_stop_reason(stale, epoch, cfg, time.monotonic() - started))
        if record["stop"]:
            break
    if best_state is not None:
        unwrap(model).load_state_dict(best_state)
    return history


# Why a run stopped, recorded as the last history row's ``stop`` (history rows are numbers).
STOP_REASONS = {0: "running", 1: "converged (early stopping)", 2: "epoch cap", 3: "wall budget"}


def _stop_reason(stale: int, epoch: int, cfg: ClassifierConfig, elapsed: float) -> int:
    if stale >= cfg.patience:
        return 1
    if epoch + 1 >= cfg.epochs:
        return 2
    if cfg.max_seconds is not None and elapsed >= cfg.max_seconds:
        return 3
    return 0


def lr_schedule(opt: torch.optim.Optimizer, cfg: ClassifierConfig):
    """Cosine decay to 0 at ``cfg.epochs``, or a plateau rule: halve the LR after ``plateau_patience`` stale epochs.

    The plateau rule exists for the utility yardstick: a cosine schedule sized to an
    epoch cap anneals to zero at the cap whether or not an arm has converged, so arms
    with more (or slower-to-fit) data were judged half-trained. Under the plateau rule
    only the validation curve lowers the LR, and early stopping ends the run. torch's
    ``ReduceLROnPlateau`` halves after ``patience + 1`` bad epochs and judges improvement
    as ``score > best + 1e-4``, the same rule `fit` uses for early stopping.

    Returns:
        ``step(score)``: call once per epoch with the validation score (higher is better).
    """
    if cfg.schedule == "cosine":
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
        return lambda score: cosine.step()
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=0.5, patience=cfg.plateau_patience - 1, threshold=1e-4, threshold_mode="abs"
    )
    return plateau.step


def train_classifier(
    train_images: np.ndarray,
    train_labels: Sequence,
    val_images: np.ndarray,
    val_labels: Sequence,
    cfg: ClassifierConfig,
    class_names: Sequence[str],
    sample_weights: np.ndarray | None = None,
    init_model: ResNetClassifier | None = None,
) -> tuple[ResNetClassifier, list[dict]]:
    """Train in-process; see `fit`.

    Args:
        train_images, val_images: uint8 (N, H, W).
        train_labels, val_labels: class names or indices into class_names.
        cfg: classifier config (seeded: the same inputs give the same model).
        class_names: output column order.
        sample_weights: per-training-sample draw weights (default: class-balanced); see `mix_weights`.
        init_model: continue training this network (fine-tuning) instead of a fresh one; trained in place.

    Returns:
        (model with the best-validation weights, in eval mode; per-epoch history).
    """
    torch.manual_seed(cfg.seed)
    y_tr = label_indices(train_labels, class_names)
    weights = balanced_weights(y_tr) if sample_weights is None else sample_weights
    model = build_model(cfg, len(class_names)) if init_model is None else init_model
    history = fit(
        model,
        to_tensor(train_images, cfg.image_size),
        torch.from_numpy(y_tr),
        weights,
        to_tensor(val_images, cfg.image_size),
        torch.from_numpy(label_indices(val_labels, class_names)),
        cfg,
        class_names,
    )
    return model.eval(), history
