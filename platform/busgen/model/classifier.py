"""The diagnosis classifier as a model: a compact ResNet, its persistence and its batch predictor.

A ResNet-18-style CNN in plain torch (no torchvision). Training it is evaluation's job
(``busgen.measure.classify``); this module holds what serving and evaluation share:
building the network, saving and loading a classifier folder, and ``Predictor``, the
one inference entry point for Ray Data ``map_batches`` and Ray Serve (dict of numpy
arrays in, dict of numpy arrays out).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from busgen.data.imageio import to_model_tensor

WEIGHTS_FILE = "model.safetensors"  # tensors only: loading runs no pickled code
LEGACY_WEIGHTS_FILE = "model.pt"  # folders saved before safetensors (torch state_dict); still read


META_FILE = "classifier.json"


FORMAT_VERSION = 1


class ClassifierConfig(BaseModel):
    """Model and training settings; saved next to the weights so a checkpoint rebuilds itself."""

    model_config = ConfigDict(extra="forbid")

    width: int = Field(32, description='channels of the first stage: 64 = ResNet-18, 16 = "small" for CPU tests')
    blocks: tuple[int, int, int, int] = Field((2, 2, 2, 2), description="residual blocks per stage (ResNet-18)")
    stem_stride: int = Field(2, description="2 halves resolution before stage 1 (64 px -> 32), 1 keeps it")
    dropout: float = Field(0.2, description="before the final linear layer")
    image_size: int = Field(64, description="inputs of another size are resized to this")
    epochs: int = Field(30, description="upper bound; early stopping usually ends sooner")
    batch_size: int = 64
    lr: float = Field(1e-3, description="AdamW peak learning rate (see `schedule`)")
    schedule: Literal["cosine", "plateau"] = Field(
        "cosine",
        description="cosine: decay to 0 at `epochs`; plateau: constant LR halved after `plateau_patience` epochs "
        "without validation improvement (no cap decides when the LR is spent: train to convergence)",
    )
    plateau_patience: int = Field(2, ge=1, description="plateau schedule: epochs without improvement before LR/2")
    max_seconds: float | None = Field(
        None, gt=0, description="wall budget of one training run (None = none); stops after the epoch that passes it"
    )
    min_epoch_draws: int | None = Field(
        None,
        ge=1,
        description="converge: an epoch (one validation, one patience step) holds at least this many draws, "
        "so a small arm (113 images = 1 batch) gets more than `patience` optimizer steps before it may stop",
    )
    budget_rule: Literal["converge", "equal_draws"] = Field(
        "converge",
        description="utility arms: converge = every arm's epoch is its own data, early stopping decides; "
        "equal_draws = every arm draws `samples_per_epoch` images per epoch (the old, labelled variant)",
    )
    weight_decay: float = 1e-4
    patience: int = Field(5, description="epochs without validation improvement before stopping")
    monitor: Literal["auc", "loss"] = Field("auc", description="early-stopping criterion on real validation data")
    positive: str = Field("malignant", description="class whose one-vs-rest AUC is monitored")
    samples_per_epoch: int | None = Field(None, description="None: number of training images (or the mix rule)")
    augment: bool = True
    max_shift: float = Field(0.06, description="random translation, fraction of the image side")
    intensity_jitter: float = Field(0.1, description="random gain/offset amplitude in [-1, 1] units")
    label_smoothing: float = 0.0
    ema_decay: float = Field(0.0, ge=0, lt=1, description="> 0: keep (and select, and save) an EMA of the weights")
    tta_flip: bool = Field(
        False, description="predict as the mean of the image's and its left-right mirror's probabilities"
    )
    seed: int = 0
    init_backbone: str | None = Field(
        None,
        description="start stem and stages from this label-free pretrained backbone (busgen pretrain-backbone); "
        "only the head starts random (the lower-variance yardstick variant)",
    )

    @classmethod
    def small(cls, **overrides) -> ClassifierConfig:
        """CPU-test preset: width 16 (about 0.7 M parameters)."""
        return cls(**{"width": 16, **overrides})

    @classmethod
    def yardstick(cls, **overrides) -> ClassifierConfig:
        """The steadier recipe the utility suites measure with (seed-to-seed AUC spread is their noise floor).

        Early stopping on real validation AUC is always on, under a plateau LR rule (no epoch
        cap anneals an arm that is still improving: it trains to convergence); this adds label
        smoothing (less over-confident fits of ~450 images), an EMA of the weights (the
        selected checkpoint is an average, not one noisy SGD iterate) and flip
        test-time averaging (ultrasound is left-right symmetric in meaning).
        """
        return cls(**{"label_smoothing": 0.1, "ema_decay": 0.98, "tta_flip": True, "schedule": "plateau", **overrides})

    @model_validator(mode="after")
    def _equal_draws_needs_a_size(self) -> ClassifierConfig:
        if self.budget_rule == "equal_draws" and not self.samples_per_epoch:
            raise ValueError(
                "error: budget_rule equal_draws needs samples_per_epoch (the draws every arm gets per epoch); "
                "set it, or use budget_rule converge"
            )
        return self


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

    def __init__(
        self,
        num_classes: int,
        width: int = 32,
        blocks: Sequence[int] = (2, 2, 2, 2),
        stem_stride: int = 2,
        dropout: float = 0.2,
        image_size: int = 64,
        tta_flip: bool = False,
    ):
        super().__init__()
        self.image_size = image_size  # kept on the module so inference helpers can resize inputs
        self.tta_flip = tta_flip  # kept on the module so every prediction path averages the mirror image
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


BACKBONE_PREFIXES = ("stem.", "stages.")  # what a pretrained backbone holds: everything but the head


def build_model(cfg: ClassifierConfig, num_classes: int) -> ResNetClassifier:
    """Instantiate the network described by cfg (stem and stages from ``cfg.init_backbone`` when set)."""
    net = ResNetClassifier(
        num_classes, cfg.width, cfg.blocks, cfg.stem_stride, cfg.dropout, cfg.image_size, cfg.tta_flip
    )
    if cfg.init_backbone:
        from safetensors.torch import load_file

        state = load_file(str(Path(cfg.init_backbone) / "backbone.safetensors"))
        own = net.state_dict()
        wanted = {k: v.shape for k, v in own.items() if k.startswith(BACKBONE_PREFIXES)}
        if wanted != {k: v.shape for k, v in state.items()}:
            raise ValueError(
                f"error: {cfg.init_backbone} is not a backbone of this classifier (width {cfg.width}, "
                f"blocks {cfg.blocks}); pretrain one with the same width: busgen pretrain-backbone"
            )
        net.load_state_dict(state, strict=False)
    return net


def to_tensor(images: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 (N, H, W) -> float32 (N, 1, S, S) in [-1, 1], bilinearly resized when H != S."""
    x = to_model_tensor(images)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    return x


def unwrap(model: nn.Module) -> ResNetClassifier:
    """The bare network inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


@torch.inference_mode()
def logits_of(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


@torch.inference_mode()
def embed(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Penultimate-layer features, float32 (N, feature_dim)."""
    net = unwrap(model).eval()
    x = to_tensor(images, net.image_size)
    return torch.cat([net.features(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()


def probs_of(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Class probabilities of preprocessed inputs; with ``tta_flip`` the mean over the image and its mirror."""
    net = unwrap(model)
    probs = logits_of(net, x, batch_size).softmax(1)
    if getattr(net, "tta_flip", False):
        probs = (probs + logits_of(net, x.flip(-1), batch_size).softmax(1)) / 2
    return probs


def predict_proba(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities, float32 (N, C), columns in class_names order (flip-averaged when configured)."""
    net = unwrap(model)
    return probs_of(net, to_tensor(images, net.image_size), batch_size).numpy()


def save_classifier(
    model_dir: str | Path,
    model: nn.Module,
    cfg: ClassifierConfig,
    class_names: Sequence[str],
    metrics: dict | None = None,
) -> Path:
    """Write ``model.safetensors`` (state_dict) and ``classifier.json`` (config, class names, metrics)."""
    from safetensors.torch import save_file

    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in unwrap(model).state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    (out / LEGACY_WEIGHTS_FILE).unlink(missing_ok=True)  # a re-save must not leave stale weights beside the new
    meta = {
        "format_version": FORMAT_VERSION,
        "config": cfg.model_dump(mode="json"),
        "class_names": list(class_names),
        "metrics": metrics or {},
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2, default=float))
    return out


def weights_file(model_dir: str | Path) -> Path:
    """The weights of a classifier folder: ``model.safetensors``, else a legacy ``model.pt``.

    Raises:
        FileNotFoundError: the folder holds neither (names both, and how to make one).
    """
    root = Path(model_dir)
    for name in (WEIGHTS_FILE, LEGACY_WEIGHTS_FILE):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"error: {root} holds no classifier weights ({WEIGHTS_FILE} or {LEGACY_WEIGHTS_FILE}); "
        "train one with `busgen train-classifier`"
    )


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from safetensors, or from a legacy torch file (``weights_only``: no arbitrary unpickling)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_classifier(model_dir: str | Path) -> tuple[ResNetClassifier, ClassifierConfig, list[str]]:
    """Rebuild a saved classifier (eval mode, CPU) with its config and class names."""
    meta = json.loads((Path(model_dir) / META_FILE).read_text())
    cfg = ClassifierConfig(**meta["config"])
    model = build_model(cfg, len(meta["class_names"]))
    model.load_state_dict(load_state(weights_file(model_dir)))
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
    from busgen.data.imageio import decode_image

    return np.stack([decode_image(v) if isinstance(v, bytes) else np.asarray(v, dtype=np.uint8) for v in column])
