"""Downstream diagnosis classifier: the yardstick for "is synthetic data useful?".

A compact ResNet-18-style CNN in plain torch (no torchvision) is trained on real,
synthetic or mixed data and always validated and tested on *real* images, so
that any gain or loss is measured where it matters. Training uses balanced
sampling (BUS sets are imbalanced: normal and malignant are minorities), light
augmentation, and early stopping on real validation AUC. The same loop runs
in-process (tests, notebooks) and inside a Ray ``TorchTrainer``.

``Predictor`` is the one inference entry point for Ray Data ``map_batches`` and
Ray Serve: dict of numpy arrays in, dict of numpy arrays out.
"""

from __future__ import annotations

import copy
import json
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

WEIGHTS_FILE = "model.pt"
META_FILE = "classifier.json"
FORMAT_VERSION = 1


class ClassifierConfig(BaseModel):
    """Model and training settings; saved next to the weights so a checkpoint rebuilds itself."""

    model_config = ConfigDict(extra="forbid")

    width: int = 32  # channels of the first stage: 64 = ResNet-18, 16 = "small" for CPU tests
    blocks: tuple[int, int, int, int] = (2, 2, 2, 2)  # residual blocks per stage (ResNet-18)
    stem_stride: int = 2  # 2 halves resolution before stage 1 (64 px -> 32), 1 keeps it
    dropout: float = 0.2  # before the final linear layer
    image_size: int = 64  # inputs of another size are resized to this
    epochs: int = 30  # upper bound; early stopping usually ends sooner
    batch_size: int = 64
    lr: float = 1e-3  # AdamW, cosine-decayed over `epochs`
    weight_decay: float = 1e-4
    patience: int = 5  # epochs without validation improvement before stopping
    monitor: Literal["auc", "loss"] = "auc"  # early-stopping criterion on real validation data
    positive: str = "malignant"  # class whose one-vs-rest AUC is monitored
    samples_per_epoch: int | None = None  # None: number of training images (or the mix rule)
    augment: bool = True
    max_shift: float = 0.06  # random translation, fraction of the image side
    intensity_jitter: float = 0.1  # random gain/offset amplitude in [-1, 1] units
    label_smoothing: float = 0.0
    seed: int = 0

    @classmethod
    def small(cls, **overrides) -> ClassifierConfig:
        """CPU-test preset: width 16 (about 0.7 M parameters)."""
        return cls(**{"width": 16, **overrides})


# Model


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with a (projected when needed) identity shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetClassifier(nn.Module):
    """ResNet-18 layout for 1-channel small images: 3x3 stem (no max-pool), 4 stages, global pool, linear."""

    def __init__(self, num_classes: int, width: int = 32, blocks: Sequence[int] = (2, 2, 2, 2),
                 stem_stride: int = 2, dropout: float = 0.2, image_size: int = 64):
        super().__init__()
        self.image_size = image_size  # kept on the module so inference helpers can resize inputs
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        stages, c_in = [], width
        for i, n in enumerate(blocks):
            c_out = width * 2**i
            layers = [BasicBlock(c_in if j == 0 else c_out, c_out, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
            stages.append(nn.Sequential(*layers))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.feature_dim = c_in
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c_in, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, feature_dim): the in-domain embedding used by fidelity metrics."""
        return self.stages(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_model(cfg: ClassifierConfig, num_classes: int) -> ResNetClassifier:
    """Instantiate the network described by cfg."""
    return ResNetClassifier(num_classes, cfg.width, cfg.blocks, cfg.stem_stride, cfg.dropout, cfg.image_size)


# Tensors and augmentation


def to_tensor(images: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 (N, H, W) -> float32 (N, 1, S, S) in [-1, 1], bilinearly resized when H != S."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0).unsqueeze(1)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    return x


def label_indices(labels: Sequence, class_names: Sequence[str]) -> np.ndarray:
    """Class names or integer labels -> int64 indices into class_names."""
    arr = np.asarray(labels)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    lookup = {c: i for i, c in enumerate(class_names)}
    return np.array([lookup[str(v)] for v in arr], dtype=np.int64)


def augment_batch(x: torch.Tensor, gen: torch.Generator, max_shift: float = 0.06, intensity: float = 0.1,
                  hflip: bool = True, scale: float = 0.0, noise: float = 0.0) -> torch.Tensor:
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


def unwrap(model: nn.Module) -> ResNetClassifier:
    """The bare network inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


@torch.inference_mode()
def _logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, class_names: Sequence[str], positive: str) -> dict:
    """Validation loss, accuracy and positive-vs-rest AUC (macro one-vs-rest if `positive` is absent)."""
    logits = _logits(unwrap(model), x)
    probs = logits.softmax(1).numpy()
    y_np = y.numpy()
    out = {"val_loss": float(F.cross_entropy(logits, y)), "val_acc": float((probs.argmax(1) == y_np).mean())}
    try:
        if positive in class_names:
            k = list(class_names).index(positive)
            out["val_auc"] = float(roc_auc_score(y_np == k, probs[:, k]))
        else:
            out["val_auc"] = float(roc_auc_score(y_np, probs, multi_class="ovr", labels=range(len(class_names))))
    except ValueError:  # one class only in validation: AUC undefined
        out["val_auc"] = float("nan")
    return out


def _train_epoch(model: nn.Module, loader: DataLoader, opt: torch.optim.Optimizer, cfg: ClassifierConfig,
                 gen: torch.Generator) -> float:
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
        total, n = total + loss.item() * len(yb), n + len(yb)
    return total / max(n, 1)


def fit(model: nn.Module, x_tr: torch.Tensor, y_tr: torch.Tensor, weights: np.ndarray, x_val: torch.Tensor,
        y_val: torch.Tensor, cfg: ClassifierConfig, class_names: Sequence[str], rank: int = 0, world_size: int = 1,
        report_fn: Callable[[dict], None] | None = None) -> list[dict]:
    """Train with balanced sampling and early stopping; leaves the best validation weights in `model`.

    Each rank draws its own 1/world_size share of the epoch (different sampler seed)
    and all ranks evaluate the full validation set, so every rank takes the same
    early-stopping decision without extra communication.

    Returns:
        history: one dict per epoch (epoch, train_loss, val_loss, val_acc, val_auc, lr).
    """
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    n_epoch = max(1, (cfg.samples_per_epoch or len(y_tr)) // world_size)
    sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), n_epoch, replacement=True, generator=gen)
    loader = DataLoader(TensorDataset(x_tr, y_tr), batch_size=cfg.batch_size, sampler=sampler, drop_last=n_epoch > cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    history, best, best_state, stale = [], -np.inf, None, 0
    for epoch in range(cfg.epochs):
        record = {"epoch": epoch, "lr": sched.get_last_lr()[0], "train_loss": _train_epoch(model, loader, opt, cfg, gen)}
        sched.step()
        record.update(evaluate(model, x_val, y_val, class_names, cfg.positive))
        history.append(record)
        if report_fn is not None:
            report_fn(record)
        # A NaN AUC (single-class validation) falls back to loss so stopping still works.
        use_auc = cfg.monitor == "auc" and np.isfinite(record["val_auc"])
        score = record["val_auc"] if use_auc else -record["val_loss"]
        if score > best + 1e-4:
            best, best_state, stale = score, copy.deepcopy(unwrap(model).state_dict()), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    if best_state is not None:
        unwrap(model).load_state_dict(best_state)
    return history


def train_classifier(train_images: np.ndarray, train_labels: Sequence, val_images: np.ndarray, val_labels: Sequence,
                     cfg: ClassifierConfig, class_names: Sequence[str],
                     sample_weights: np.ndarray | None = None) -> tuple[ResNetClassifier, list[dict]]:
    """Train in-process; see `fit`.

    Args:
        train_images, val_images: uint8 (N, H, W).
        train_labels, val_labels: class names or indices into class_names.
        cfg: classifier config (seeded: the same inputs give the same model).
        class_names: output column order.
        sample_weights: per-training-sample draw weights (default: class-balanced); see `mix_weights`.

    Returns:
        (model with the best-validation weights, in eval mode; per-epoch history).
    """
    torch.manual_seed(cfg.seed)
    y_tr = label_indices(train_labels, class_names)
    weights = balanced_weights(y_tr) if sample_weights is None else sample_weights
    model = build_model(cfg, len(class_names))
    history = fit(model, to_tensor(train_images, cfg.image_size), torch.from_numpy(y_tr), weights,
                  to_tensor(val_images, cfg.image_size), torch.from_numpy(label_indices(val_labels, class_names)),
                  cfg, class_names)
    return model.eval(), history


# Inference


@torch.inference_mode()
def embed(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Penultimate-layer features, float32 (N, feature_dim)."""
    net = unwrap(model).eval()
    x = to_tensor(images, net.image_size)
    return torch.cat([net.features(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()


def predict_proba(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities, float32 (N, C), columns in class_names order."""
    net = unwrap(model)
    return _logits(net, to_tensor(images, net.image_size), batch_size).softmax(1).numpy()


# Persistence


def save_classifier(model_dir: str | Path, model: nn.Module, cfg: ClassifierConfig, class_names: Sequence[str],
                    metrics: dict | None = None) -> Path:
    """Write ``model.pt`` (state_dict) and ``classifier.json`` (config, class names, metrics)."""
    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(unwrap(model).state_dict(), out / WEIGHTS_FILE)
    meta = {"format_version": FORMAT_VERSION, "config": cfg.model_dump(mode="json"),
            "class_names": list(class_names), "metrics": metrics or {}}
    (out / META_FILE).write_text(json.dumps(meta, indent=2, default=float))
    return out


def load_classifier(model_dir: str | Path) -> tuple[ResNetClassifier, ClassifierConfig, list[str]]:
    """Rebuild a saved classifier (eval mode, CPU) with its config and class names."""
    meta = json.loads((Path(model_dir) / META_FILE).read_text())
    cfg = ClassifierConfig(**meta["config"])
    model = build_model(cfg, len(meta["class_names"]))
    model.load_state_dict(torch.load(Path(model_dir) / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return model.eval(), cfg, list(meta["class_names"])


class Predictor:
    """Batch predictor for Ray Data ``map_batches`` and Ray Serve.

    ``batch["image"]`` uint8 (B, H, W) or PNG bytes -> ``probs`` float32 (B, C),
    ``pred`` int64 (B,), ``pred_label`` str (B,). Construct from a saved model dir so
    Ray ships a path, not weights: ``ds.map_batches(Predictor, fn_constructor_args=(model_dir,), ...)``.
    """

    def __init__(self, model: ResNetClassifier | str | Path, class_names: Sequence[str] | None = None):
        if isinstance(model, (str, Path)):
            model, _, class_names = load_classifier(model)
        if class_names is None:
            raise ValueError("class_names are required with an in-memory model")
        self.model = model.eval()
        self.class_names = np.asarray(class_names)

    @classmethod
    def from_checkpoint(cls, model_dir: str | Path) -> Predictor:
        """Load a `save_classifier` directory (as written by `train_classifier_ray`)."""
        return cls(model_dir)

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        probs = predict_proba(self.model, _batch_images(batch["image"]))
        pred = probs.argmax(1)
        return {"probs": probs, "pred": pred.astype(np.int64), "pred_label": self.class_names[pred]}


def _batch_images(column: np.ndarray) -> np.ndarray:
    """A batch's image column as uint8 (B, H, W): arrays pass through, PNG bytes (Parquet rows) are decoded."""
    if isinstance(column, np.ndarray) and column.dtype == np.uint8 and column.ndim == 3:
        return column
    from busgen.imageio import decode_image

    return np.stack([decode_image(v) if isinstance(v, bytes) else np.asarray(v, dtype=np.uint8) for v in column])


# Ray Train


def _read_labelled(path: str, split: str | None, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    from busgen import data

    images, labels, _, _ = data.read_arrays(path, split=split, classes=list(class_names))
    return images, label_indices(labels, class_names)


def train_loop_per_worker(config: dict) -> None:
    """Ray Train worker: load the mix and real validation data, run `fit`, report and checkpoint.

    config keys: ``classifier`` (ClassifierConfig dict), ``train_sets`` [(dir, ratio)],
    ``train_split``, ``val_dir``, ``val_split``, ``class_names``.
    """
    import ray.train
    import ray.train.torch

    cfg, class_names = ClassifierConfig(**config["classifier"]), config["class_names"]
    torch.manual_seed(cfg.seed)
    # 1. data: concatenate the sets, weights give each set its share of the epoch
    parts = [(_read_labelled(d, config.get("train_split"), class_names), r) for d, r in config["train_sets"]]
    weights, per_epoch = mix_weights([y for (_, y), _ in parts], [r for _, r in parts])
    cfg = cfg.model_copy(update={"samples_per_epoch": cfg.samples_per_epoch or per_epoch})
    x_tr = to_tensor(np.concatenate([x for (x, _), _ in parts]), cfg.image_size)
    y_tr = torch.from_numpy(np.concatenate([y for (_, y), _ in parts]))
    x_val, y_val = _read_labelled(config["val_dir"], config.get("val_split"), class_names)
    # 2. model: prepare_model moves to the worker's device and wraps in DDP when world_size > 1
    model = ray.train.torch.prepare_model(build_model(cfg, len(class_names)))
    ctx = ray.train.get_context()
    history = fit(model, x_tr, y_tr, weights, to_tensor(x_val, cfg.image_size), torch.from_numpy(y_val), cfg,
                  class_names, ctx.get_world_rank(), ctx.get_world_size(), report_fn=ray.train.report)
    # 3. final report with the best weights; only rank 0 writes the checkpoint
    best = {"best_val_auc": max((h["val_auc"] for h in history), default=float("nan")), "epochs_run": len(history)}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = None
        if ctx.get_world_rank() == 0:
            save_classifier(tmp, model, cfg, class_names, {**best, "history": history})
            ckpt = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(best, checkpoint=ckpt)


def train_classifier_ray(cfg: ClassifierConfig, train_sets: Sequence[tuple[str, float]], val_dir: str,
                         out_dir: str | Path, class_names: Sequence[str] = ("benign", "malignant", "normal"),
                         num_workers: int = 1, train_split: str | None = "train", val_split: str | None = "val",
                         storage_path: str | None = None, name: str | None = None) -> Path:
    """Train on Ray Train and copy the resulting classifier to out_dir.

    Args:
        cfg: classifier config.
        train_sets: [(dataset dir, ratio)]; ``[(real, 1)]`` real only, ``[(syn, 1)]``
            synthetic only, ``[(real, 1), (syn, r)]`` real + synthetic with r = n_syn / n_real per epoch.
        val_dir: real dataset holding the validation split.
        out_dir: where the final `save_classifier` directory is copied.
        num_workers: Ray Train workers (DDP over gloo on CPU).
        train_split, val_split: split filters (synthetic sets carry split="train").
        storage_path, name: Ray Train run storage; give a unique name per fresh run.

    Returns:
        out_dir, loadable with `load_classifier` / `Predictor.from_checkpoint`.
    """
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    loop_config = {"classifier": cfg.model_dump(mode="json"), "train_sets": [(str(d), float(r)) for d, r in train_sets],
                   "val_dir": str(val_dir), "train_split": train_split, "val_split": val_split,
                   "class_names": list(class_names)}
    storage = storage_path or tempfile.mkdtemp(prefix="busgen-classify-")
    trainer = TorchTrainer(train_loop_per_worker, train_loop_config=loop_config,
                           scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=torch.cuda.is_available()),
                           run_config=RunConfig(name=name or f"classify-{uuid.uuid4().hex[:8]}",
                                                storage_path=storage))
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"classifier training produced no checkpoint: {result.error}")
    return Path(result.checkpoint.to_directory(str(out_dir)))
