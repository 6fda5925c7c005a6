"""A generator that has memorised its training images, in closed form: the privacy fixture.

The exact minimiser of the diffusion loss on a Gaussian-kernel smoothed copy of ``n`` training
images (bandwidth ``h``) is what a network trained to the end on them converges to. Its samples
are the training images plus a little noise, so unprotected sampling copies almost every time.
Computed in closed form it takes seconds, where training a UNet to memorise takes many minutes
on 2 CPU cores. Used by the CPSample tests and the privacy trade-off on the fixture.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import torch

from busgen.data.phantom import make_phantom_arrays
from busgen.model import boxprior, diffusion, generator, protect
from busgen.train.protect import ProtectConfig, fit_protector

CLASSES = ["benign", "malignant", "normal"]


class KernelMemoriser(torch.nn.Module):
    """Optimal epsilon predictor for p(x0) = mean_i N(x_i, h^2 I): a generator that has memorised x_i.

    With ``data_labels`` it is class-conditional: label c draws only from the training images of
    class c (the null label from all), so a classifier trained on its samples learns the classes.
    """

    def __init__(
        self,
        x0: torch.Tensor,
        alphas_cumprod: torch.Tensor,
        h: float,
        n_classes: int = len(CLASSES),
        data_labels: torch.Tensor | None = None,
    ):
        super().__init__()
        self.register_buffer("data", x0.flatten(1).double())
        self.data_labels = data_labels
        self.abar, self.h2 = alphas_cumprod.double(), h * h
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the sampler a device and dtype
        self.config = types.SimpleNamespace(image_size=x0.shape[-1])
        self.null_label, self.null_domain = n_classes, 1

    def forward(self, x, t, labels, domains, box_mask):
        a = float(self.abar[int(t)])
        var = a * self.h2 + 1 - a
        xf, d = x.flatten(1).double(), self.data
        logits = -(torch.cdist(xf, a**0.5 * d) ** 2) / (2 * var)
        if self.data_labels is not None and labels is not None:
            same = self.data_labels[None].to(labels.device) == labels[:, None]
            same |= (labels >= self.null_label)[:, None]  # the null label (classifier-free guidance): all images
            logits = logits.masked_fill(~same, float("-inf"))
        w = torch.softmax(logits, dim=1)
        mean_i = d[None] + (a**0.5 * self.h2 / var) * (xf[:, None] - a**0.5 * d[None])
        x0 = (w[:, :, None] * mean_i).sum(1)
        return ((xf - a**0.5 * x0) / (1 - a) ** 0.5).float().view_as(x)


def memorising_generator(
    folder: str | Path,
    n_train: int = 32,
    size: int = 32,
    h: float = 0.05,
    seed: int = 0,
    fit: ProtectConfig | None = None,
    conditional: bool = False,
) -> tuple[generator.Generator, np.ndarray, dict]:
    """The memoriser of ``n_train`` phantom images (seed ``seed``) with its protection classifier in ``folder``.

    Returns the generator (loaded with ``model_dir=folder``, so ``protect="cpsample"`` works),
    its training images (uint8 (n, size, size)) and the classifier's fit record. ``conditional``:
    each label draws from its own class's training images (``KernelMemoriser``).
    """
    images, _, labels = make_phantom_arrays(n_train, size, seed=seed)
    x0 = torch.from_numpy(images).float().div(127.5).sub(1).unsqueeze(1)
    dcfg = diffusion.DiffusionConfig()
    by_class = torch.tensor([CLASSES.index(c) for c in labels]) if conditional else None
    model = KernelMemoriser(x0, diffusion.make_noise_scheduler(dcfg).alphas_cumprod, h, data_labels=by_class)
    fit = fit or ProtectConfig(model="fixture", width=16, batch_size=32, max_epochs=60, samples_per_epoch=256)
    net, stats = fit_protector(images, fit, dcfg)
    protect.save_protector(folder, net, {"generator_model_id": "memoriser", **stats})
    prior = boxprior.fit([None] * len(CLASSES), CLASSES)
    gen = generator.Generator(model, dcfg, CLASSES, ["phantom"], prior, "memoriser", model_dir=Path(folder))
    return gen, images, stats
