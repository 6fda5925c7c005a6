"""Train CPSample's protection classifier: overfit random +-1 labels of the generator's training images on x_t.

The classifier (``busgen.model.protect.ProtectionClassifier``) sees a training image
noised to a random timestep and must name the image's random label. Training stops once
it *fits* the labels: accuracy at least ``fit_accuracy`` on the training images noised to
timesteps up to ``fit_t`` (a fixed, seeded probe), or at ``max_epochs``. Labels carry no
information about the data, so the only way to fit them is to recognise each training
image; that is what makes it confident near training images and nowhere else.

It is saved in the generator's folder (``<model>/protect/``; for an adapter, beside the
adapter), with provenance: the generator's ``model_id``, the data and its fingerprint,
the label seed, epochs and the fit reached. It protects what the generator saw
(``busgen.train.provenance``): ``data_dir`` must be the (base model's) training split
(its fingerprint is checked), and an adapted model's support set (LoRA or full
fine-tune) is added to it. ``check_data=false`` overrides and is recorded: exactly
``data_dir``'s images, or an adapted model's support set alone. Sampling refuses a
classifier whose fit accuracy is below its floor (``busgen.model.protect.check_fit``).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from busgen.core.types import DEFAULT_PROTECT_THRESHOLD
from busgen.data.dataset import read_arrays
from busgen.data.imageio import resize_square, to_model_tensor
from busgen.model import diffusion, generator
from busgen.model import protect as protection
from busgen.train import provenance


class ProtectConfig(BaseModel):
    """Train a generator's CPSample protection classifier (fits random labels of its noisy training images).

    Train the protection classifier of one generator folder.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        description="generator folder (pretrained or adapted); the classifier is written to <model>/protect"
    )
    data_dir: str | None = Field(
        None, description="its (base model's) training data; adapted models add their support set"
    )
    split: str | None = Field(
        "train", description="split of data_dir (None = every row; adapters' support sets have none)"
    )
    width: int = Field(32, ge=8, description="classifier channels (first stage)")
    batch_size: int = Field(64, ge=1, description="images per step")
    lr: float = Field(2e-3, gt=0, description="AdamW learning rate")
    max_epochs: int = Field(400, ge=1, description="upper bound; training stops once it fits")
    samples_per_epoch: int = Field(
        512, ge=1, description="noisy draws per epoch at least (small sets: many steps per epoch)"
    )
    max_minutes: float | None = Field(None, gt=0, description='stop after this long (recorded: stopped="time")')
    fit_accuracy: float = Field(0.98, gt=0.5, le=1.0, description="stop once it fits the labels this well ...")
    fit_t: int = Field(200, ge=0, description="... on training images noised to timesteps <= fit_t ...")
    train_t_max: int | None = Field(
        None, ge=1, description="draw training timesteps below this (None = the whole schedule);"
    )
    # large sets fit faster when the hopeless near-pure-noise steps are left out: sample with window hi <= t_max / T
    fit_confidence: float = Field(
        DEFAULT_PROTECT_THRESHOLD,
        ge=0.5,
        lt=1.0,
        description="... counting only predictions at least this confident (the sampling gate: 1 - the paper's alpha)",
    )
    seed: int = Field(0, description="labels, noise and initialisation")
    check_data: bool = Field(
        True, description="refuse data other than the generator's training data; false = exactly these (recorded)"
    )
    torch_threads: int = Field(0, description="0 = torch's default")


def to_size(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W) images resized to ``size`` the way pretraining resizes its batches (``train.batches``)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return np.stack([resize_square(img, size, mode="stretch") for img in images])


def random_labels(n: int, seed: int) -> np.ndarray:
    """One random label in {0, 1} per training image (the paper's +-1), seeded."""
    return np.random.default_rng([seed, 0xC95]).integers(0, 2, size=n)


def _noisy(scheduler, x0: torch.Tensor, t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return scheduler.add_noise(x0, torch.randn(x0.shape, generator=gen), t)


@torch.no_grad()
def fit_accuracy(
    net, scheduler, x0: torch.Tensor, y: torch.Tensor, fit_t: int, seed: int, confidence: float = 0.5
) -> float:
    """Share of training images, at 4 fixed timesteps in [0, fit_t] with fixed noise, labelled right and confidently.

    Guidance only acts where the classifier is confident, so a right but unsure answer does not count.
    """
    net.eval()
    gen = torch.Generator().manual_seed(seed + 1)
    hits, total = 0, 0
    for t in np.linspace(0, fit_t, 4).round().astype(int):
        for s in range(0, len(x0), 256):
            xb = x0[s : s + 256]
            tt = torch.full((len(xb),), int(t), dtype=torch.long)
            logit = net(_noisy(scheduler, xb, tt, gen), tt)
            right = (logit > 0) == y[s : s + 256].bool()
            hits += int((right & (torch.sigmoid(logit.abs()) >= confidence)).sum())
            total += len(xb)
    net.train()
    return hits / max(total, 1)


def fit_protector(
    images: np.ndarray, cfg: ProtectConfig, diffusion_cfg: diffusion.DiffusionConfig, log=print
) -> tuple[protection.ProtectionClassifier, dict]:
    """Train on uint8 (N, H, W) training images until the random labels fit; returns (classifier, stats)."""
    torch.manual_seed(cfg.seed)
    x0 = to_model_tensor(images)
    y = torch.from_numpy(random_labels(len(x0), cfg.seed)).float()
    net = protection.ProtectionClassifier(
        protection.ProtectNetConfig(
            image_size=images.shape[-1], width=cfg.width, num_train_timesteps=diffusion_cfg.num_train_timesteps
        )
    )
    scheduler = diffusion.make_noise_scheduler(diffusion_cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    t0, acc, epoch, loss, stopped = time.time(), 0.0, 0, float("nan"), "max_epochs"
    passes = -(-max(cfg.samples_per_epoch, len(x0)) // len(x0))
    t_hi = min(cfg.train_t_max or diffusion_cfg.num_train_timesteps, diffusion_cfg.num_train_timesteps)
    for epoch in range(1, cfg.max_epochs + 1):
        # whole shuffled passes, so every image is seen equally often
        order = torch.cat([torch.randperm(len(x0), generator=gen) for _ in range(passes)])
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            t = torch.randint(0, t_hi, (len(idx),), generator=gen)
            logit = net(_noisy(scheduler, x0[idx], t, gen), t)
            step_loss = F.binary_cross_entropy_with_logits(logit, y[idx])
            opt.zero_grad(set_to_none=True)
            step_loss.backward()
            opt.step()
            loss = float(step_loss.detach())
        if epoch % 5 == 0 or epoch == cfg.max_epochs:
            acc = fit_accuracy(net, scheduler, x0, y, cfg.fit_t, cfg.seed, cfg.fit_confidence)
            log(f"[protect] epoch {epoch} loss {loss:.4f} fit accuracy {acc:.3f} ({time.time() - t0:.0f} s)")
            if acc >= cfg.fit_accuracy:
                stopped = "fit"
                break
        if cfg.max_minutes is not None and time.time() - t0 > 60 * cfg.max_minutes:
            acc = fit_accuracy(net, scheduler, x0, y, cfg.fit_t, cfg.seed, cfg.fit_confidence)
            stopped = "time" if acc < cfg.fit_accuracy else "fit"
            log(f"[protect] time limit at epoch {epoch}: fit accuracy {acc:.3f}")
            break
    stats = {
        "epochs": epoch,
        "fit_accuracy": acc,
        "fitted": acc >= cfg.fit_accuracy,
        "stopped": stopped,
        "final_loss": loss,
        "n_images": len(x0),
        "seconds": round(time.time() - t0, 1),
    }
    return net.eval(), stats


def training_images(cfg: ProtectConfig, size: int) -> tuple[np.ndarray, dict]:
    """The images the generator saw, at its ``size``, and the record of where they came from.

    Default: ``data_dir``'s split, checked to be the (base model's) training data, united
    with an adapted model's support set (``busgen.train.provenance``). ``check_data=false``
    is the explicit override: exactly ``data_dir``'s images, or without ``data_dir`` an
    adapted model's support set alone; the record says which.
    """
    td = provenance.training_data(cfg.model)
    record = {"data_dir": cfg.data_dir, "split": cfg.split, "data_fingerprint": td.base_fingerprint or None}
    if cfg.data_dir is None:
        if not (td.adapted and not cfg.check_data):
            whose = "it was pretrained on"
            if td.adapted:
                whose = "its base model was pretrained on (its support set is added)"
            raise ValueError(
                f"error: pass --data-dir with the dataset {whose}: {cfg.model} saw those images"
                + (", or --no-check-data to protect its support set alone (recorded)" if td.adapted else "")
            )
        images = to_size(provenance.read_support(td)[0], size)
        return images, record | {"data_dir": td.support_dir, "split": None, "data_check": "overridden: support only"}
    data = read_arrays(cfg.data_dir, split=cfg.split)
    record["data_image_size"] = int(data[0].shape[-1]) if len(data[0]) else size
    data = (to_size(data[0], size), *data[1:]) if len(data[0]) else data
    if not cfg.check_data:
        record["data_check"] = "overridden (check_data=false): exactly data_dir"
        return data[0], record
    record["data_check"] = provenance.check_base_data(td, cfg.data_dir, cfg.split, "--no-check-data")
    support = provenance.read_support(td)
    support = (to_size(support[0], size), *support[1:]) if len(support[0]) else support
    (images, *_), added = provenance.unite(data, support)
    record["support"] = td.describe() | {"support_dir": td.support_dir, "support_added": added} if td.adapted else None
    return images, record


def train_protect(cfg: ProtectConfig, log=print) -> dict:
    """Train the protection classifier of ``cfg.model`` and save it in ``<model>/protect``; returns protect.json."""
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    meta = generator.read_meta(cfg.model)
    # the generator trained on them resized to its size (train.batches): so does the classifier
    images, record = training_images(cfg, int(meta["image_size"]))
    if len(images) < 2:
        raise ValueError(f"error: {record['data_dir']} (split {record['split']!r}) holds {len(images)} images; need 2")
    net, stats = fit_protector(images, cfg, diffusion.DiffusionConfig(**meta["diffusion"]), log)
    provenance = {
        "generator_model_id": generator.weights_fingerprint(cfg.model),
        **record,
        "label_seed": cfg.seed,
        "train": cfg.model_dump(mode="json"),
        **stats,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = protection.save_protector(cfg.model, net, provenance)
    return {**protection.read_protect_meta(cfg.model), "out": str(out)}
