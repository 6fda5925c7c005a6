"""Membership inference against a loaded BUSGen generator: per-image denoising error.

`busgen.measure.privacy.audit.denoising_error_scores` runs the attack for any ``denoise_fn(x0, t)``;
this module supplies that function for a `busgen.model.generator.Generator` -- pretrained
or adapted, the attack only needs ``gen.model`` and ``gen.diffusion_cfg``:

* **Conditioning as in training.** A member was learnt *with* its class, domain and
  lesion box, so it is probed with them; probing unconditionally would blur exactly
  the signal the attack looks for. Unknown domains fall back to the null domain
  (the model's domain-unconditional embedding), missing boxes to an empty box mask,
  which is also what training fed for rows without a box.
* **The training target.** An epsilon model is scored on ``||eps - eps_hat||^2``, a
  v-prediction model on ``||v - v_hat||^2`` with v from the scheduler's
  ``get_velocity`` -- the loss each model actually minimised.
* **Noise per image, not per batch.** Image i at timestep t draws its noise from a
  generator seeded by (seed, i, t), so a score does not depend on batch size or on
  which other images are scored with it.

Usage: ``membership_report(gen, members, non_members)`` where members are the
generator's training images (the support set for an adapted model) and non-members
held-out real images of the same distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from busgen.data.imageio import resize_batch
from busgen.measure.privacy import audit
from busgen.model import diffusion, unet

DEFAULT_TIMESTEPS = (50, 100, 200)  # small-to-mid t: where memorisation shows (Carlini et al. 2023)


@dataclass
class Conditions:
    """Per-image conditions of a labelled image set, as the generator's indices and box masks."""

    labels: torch.Tensor  # int64 (N,)
    domains: torch.Tensor  # int64 (N,)
    box_masks: torch.Tensor  # float32 (N, 1, S, S)


def resolve_conditions(
    gen, labels: Sequence[str], domains: Sequence[str | None] | None = None, boxes: Sequence | None = None
) -> Conditions:
    """Turn class names, domain names and boxes into the tensors ``gen.model`` takes.

    Labels must be classes the generator knows (a membership probe on an unknown class
    is meaningless and raises); domains it does not know map to the null domain.
    """
    n = len(labels)
    null_domain = len(gen.domain_names)
    domains = [None] * n if domains is None else list(domains)
    domain_idx = [gen.domain_names.index(d) if d in gen.domain_names else null_domain for d in domains]
    boxes = [None] * n if boxes is None else [b if b is not None and len(b) == 4 else None for b in boxes]
    return Conditions(
        labels=torch.tensor(gen.label_indices(list(labels)), dtype=torch.long),
        domains=torch.tensor(domain_idx, dtype=torch.long),
        # on the grid the UNet denoises: a latent generator's latent grid
        box_masks=torch.from_numpy(unet.rasterize_boxes(boxes, getattr(gen, "grid_size", gen.image_size))),
    )


def _image_noise(shape: tuple[int, ...], seed: int, indices: range, t: int) -> torch.Tensor:
    """Noise (B, *shape): row k from a generator seeded by (seed, indices[k], t)."""
    return torch.stack(
        [
            torch.randn(shape, generator=torch.Generator().manual_seed((seed * 1_000_003 + i) * 10_007 + t))
            for i in indices
        ]
    )


def make_denoise_fn(gen, cond: Conditions, offset: int, seed: int = 0) -> audit.DenoiseFn:
    """``denoise_fn`` for the images ``[offset, offset + B)`` of a set whose conditions are ``cond``.

    Returns the per-image MSE between the training target (epsilon or v) and the
    model's prediction at timestep t, with noise fixed per (seed, image, t).
    """
    scheduler = diffusion.make_noise_scheduler(gen.diffusion_cfg)
    v_pred = gen.diffusion_cfg.prediction_type == "v_prediction"
    device = next(iter(gen.model.parameters()), torch.empty(0)).device  # parameter-free models run on CPU

    def denoise_fn(x0: torch.Tensor, t: int) -> torch.Tensor:
        if getattr(gen, "codec", None) is not None:  # a latent generator denoises the images' latents
            x0 = gen.codec.encode(x0)
        rows = range(offset, offset + len(x0))
        eps = _image_noise(tuple(x0.shape[1:]), seed, rows, t)
        tt = torch.full((len(x0),), t, dtype=torch.long)
        xt = scheduler.add_noise(x0, eps, tt)
        target = scheduler.get_velocity(x0, eps, tt) if v_pred else eps
        sl = slice(offset, offset + len(x0))
        pred = gen.model(
            xt.to(device),
            tt.to(device),
            cond.labels[sl].to(device),
            cond.domains[sl].to(device),
            cond.box_masks[sl].to(device),
        )
        return ((pred.float().cpu() - target) ** 2).flatten(1).mean(1)

    return denoise_fn


@torch.no_grad()
def denoising_errors(
    gen,
    images: np.ndarray,
    labels: Sequence[str],
    domains: Sequence[str | None] | None = None,
    boxes: Sequence | None = None,
    timesteps: Sequence[int] = DEFAULT_TIMESTEPS,
    seed: int = 0,
    batch_size: int = 64,
) -> np.ndarray:
    """Per-image denoising error of ``gen`` on labelled images (low = likely a training member).

    Args:
        gen: a loaded `busgen.model.generator.Generator` (pretrained or adapted).
        images: uint8 (N, H, W); resized to ``gen.image_size`` when needed.
        labels, domains, boxes: per-image conditions (see `resolve_conditions`).
        timesteps: diffusion timesteps averaged over.
        seed: noise seed; the same seed gives the same scores whatever ``batch_size``.

    Returns:
        float64 (N,): one score per image.
    """
    if len(images) != len(labels):
        raise ValueError(f"got {len(images)} images for {len(labels)} labels")
    gen.model.eval()
    images = resize_batch(np.asarray(images, dtype=np.uint8), gen.image_size)
    cond = resolve_conditions(gen, labels, domains, boxes)
    scores = np.zeros(len(images), dtype=np.float64)
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        fn = make_denoise_fn(gen, cond, start, seed)
        scores[start : start + len(chunk)] = audit.denoising_error_scores(fn, chunk, timesteps, seed, len(chunk))
    return scores


def membership_report(
    gen,
    members: dict,
    non_members: dict,
    timesteps: Sequence[int] = DEFAULT_TIMESTEPS,
    seed: int = 0,
    batch_size: int = 64,
) -> dict:
    """Run the attack on members vs non-members and summarise it.

    Args:
        gen: loaded generator.
        members, non_members: dicts with ``images`` (uint8 (N, H, W)), ``labels`` and
            optional ``domains`` / ``boxes`` (as returned by `busgen.data.dataset.read_arrays`).

    Returns:
        {"auc", "tpr_at_1pct_fpr", "n_members", "n_non_members", "mean_error_members",
        "mean_error_non_members", "timesteps", "prediction_type"}; AUC 0.5 = no leakage.
    """
    kw = dict(timesteps=timesteps, seed=seed, batch_size=batch_size)
    m = denoising_errors(gen, members["images"], members["labels"], members.get("domains"), members.get("boxes"), **kw)
    nm = denoising_errors(
        gen, non_members["images"], non_members["labels"], non_members.get("domains"), non_members.get("boxes"), **kw
    )
    return {
        **audit.membership_auc(m, nm),
        "n_members": int(len(m)),
        "n_non_members": int(len(nm)),
        "mean_error_members": float(m.mean()),
        "mean_error_non_members": float(nm.mean()),
        "timesteps": [int(t) for t in timesteps],
        "prediction_type": gen.diffusion_cfg.prediction_type,
    }
