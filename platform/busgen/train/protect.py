"""Train CPSample's protection classifier: overfit random +-1 labels of the generator's training images on x_t.

The classifier (``busgen.model.protect.ProtectionClassifier``) sees a training image
noised to a random timestep and must name the image's random label. Training stops once
it *fits* the labels: accuracy at least ``fit_accuracy`` on the training images noised to
timesteps up to ``fit_t`` (a fixed, seeded probe), or at ``max_epochs``. Labels carry no
information about the data, so the only way to fit them is to recognise each training
image; that is what makes it confident near training images and nowhere else.

It is saved in the generator's folder (``<model>/protect/``; for an adapter, beside the
adapter), with provenance: the generator's ``model_id``, the data and its fingerprint,
the label seed, epochs and the fit reached. For a pretrained model the data must be the
generator's own training split (its data fingerprint is checked; ``check_data=false``
overrides and is recorded); an adapter is protected on its recorded support set.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from busgen.data.dataset import read_arrays
from busgen.data.imageio import resize_square, to_model_tensor
from busgen.model import diffusion, generator
from busgen.model import protect as protection


class ProtectConfig(BaseModel):
    """Train a generator's CPSample protection classifier (fits random labels of its noisy training images).

    Train the protection classifier of one generator folder.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        description="generator folder (pretrained or adapted); the classifier is written to <model>/protect"
    )
    data_dir: str | None = Field(
        None, description="its training data; None = the adapter's support/ folder (adapters only)"
    )
    split: str | None = Field(
        "train", description="split of data_dir (None = every row; adapters' support sets have none)"
    )
    width: int = Field(32, ge=8, description="classifier channels (first stage)")
    batch_size: int = Field(64, ge=1, description="images per step")
    lr: float = Field(2e-3, gt=0, description="AdamW learning rate")
    max_epochs: int = Field(100, ge=1, description="upper bound; training stops once it fits")
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
        0.9, ge=0.5, lt=1.0, description="... counting only predictions at least this confident"
    )
    seed: int = Field(0, description="labels, noise and initialisation")
    check_data: bool = Field(
        True, description="refuse data whose fingerprint differs from the generator's training data"
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


def training_images(cfg: ProtectConfig, meta: dict) -> tuple[np.ndarray, str, str | None, str]:
    """(images, data folder, split, data check) for the model: its training split, or an adapter's support set."""
    model = Path(cfg.model)
    if meta.get("kind") == "adapter" and cfg.data_dir is None:
        data_dir, split, check = model / "support", None, "adapter support set"
    elif cfg.data_dir is None:
        raise ValueError(
            f"error: {model} is a pretrained generator: pass --data-dir with the dataset it was pretrained on"
        )
    else:
        data_dir, split, check = Path(cfg.data_dir), cfg.split, "overridden (check_data=false)"
        if cfg.check_data and meta.get("kind") != "adapter":
            from busgen.train.pretrain import read_train_metadata

            got = read_train_metadata(data_dir)["fingerprint"] if split == "train" else "n/a"
            if got != meta.get("data_fingerprint"):
                raise ValueError(
                    f"error: {data_dir} (split {split!r}, data fingerprint {got}) is not the training data of "
                    f"{model} (fingerprint {meta.get('data_fingerprint')}): pass the dataset it was pretrained on "
                    "with --split train, or --no-check-data to train on other images (recorded)"
                )
            check = "data fingerprint matches"
    images = read_arrays(data_dir, split=split)[0]
    if len(images) < 2:
        raise ValueError(f"error: {data_dir} (split {split!r}) holds {len(images)} images; need at least 2")
    return images, str(data_dir), split, check


def train_protect(cfg: ProtectConfig, log=print) -> dict:
    """Train the protection classifier of ``cfg.model`` and save it in ``<model>/protect``; returns protect.json."""
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    meta = generator.read_meta(cfg.model)
    images, data_dir, split, check = training_images(cfg, meta)
    size, data_size = int(meta["image_size"]), int(images.shape[-1])
    if data_size != size:  # the generator trained on them resized to its size (train.batches): so does the classifier
        images = to_size(images, size)
    net, stats = fit_protector(images, cfg, diffusion.DiffusionConfig(**meta["diffusion"]), log)
    provenance = {
        "generator_model_id": generator.weights_fingerprint(cfg.model),
        "data_dir": data_dir,
        "split": split,
        "data_fingerprint": meta.get("data_fingerprint"),
        "data_check": check,
        "label_seed": cfg.seed,
        "data_image_size": data_size,
        "train": cfg.model_dump(mode="json"),
        **stats,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = protection.save_protector(cfg.model, net, provenance)
    return {**protection.read_protect_meta(cfg.model), "out": str(out)}
