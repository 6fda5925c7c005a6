"""Membership inference on a loaded generator: an overfit model gives its training images away.

The overfit generator is trained in-process (no Ray Train: the ~25 s fit overhead
would dominate) with the same loss and conditioning as `busgen.train.pretrain`, exported
with `generator.export_model` and read back with `generator.load`, so the attack
runs on exactly what a user would load.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from busgen.data.imageio import mask_to_box, to_model_range
from busgen.data.phantom import make_phantom_arrays
from busgen.measure.privacy import membership
from busgen.model import boxprior, diffusion, generator, unet

SIZE = 16
CLASSES = ("benign", "malignant", "normal")


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _phantoms(n: int, seed: int) -> dict:
    images, masks, labels = make_phantom_arrays(n, SIZE, seed=seed)
    return {"images": images, "labels": labels, "domains": ["phantom"] * n, "boxes": [mask_to_box(m) for m in masks]}


def _overfit(members: dict, steps: int, prediction_type: str) -> unet.ConditionalUNet:
    """Train a small conditional UNet on the members only, full batch, until it memorises them."""
    torch.manual_seed(0)
    cfg = unet.ModelConfig(
        image_size=SIZE,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    net = unet.build_model(cfg, len(CLASSES), 1)
    sched = diffusion.make_noise_scheduler(diffusion.DiffusionConfig(prediction_type=prediction_type))
    x0 = torch.from_numpy(to_model_range(members["images"])[:, None])
    labels = torch.tensor([CLASSES.index(c) for c in members["labels"]])
    domains = torch.zeros(len(x0), dtype=torch.long)
    masks = torch.from_numpy(unet.rasterize_boxes(members["boxes"], SIZE))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss = diffusion.diffusion_loss(
            net,
            sched,
            x0,
            labels,
            domains,
            masks,
            generator=gen,
            timesteps=torch.randint(0, 300, (len(x0),), generator=gen),
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net, cfg


@pytest.fixture(scope="module")
def overfit_generator(tmp_path_factory):
    members = _phantoms(12, seed=0)
    net, cfg = _overfit(members, steps=300, prediction_type="epsilon")
    prior = boxprior.fit(members["boxes"], members["labels"])
    out = generator.export_model(
        tmp_path_factory.mktemp("overfit") / "model", net, None, cfg, CLASSES, ["phantom"], prior, "members", 300
    )
    return generator.load(out, device="cpu"), members


def test_members_score_lower_than_held_out(overfit_generator):
    gen, members = overfit_generator
    held_out = _phantoms(12, seed=1)
    report = membership.membership_report(gen, members, held_out, timesteps=(20, 50, 100))
    assert report["n_members"] == report["n_non_members"] == 12
    assert report["auc"] > 0.8, report
    assert report["mean_error_members"] < report["mean_error_non_members"]


def test_one_score_per_image_independent_of_batching(overfit_generator):
    gen, members = overfit_generator
    args = (gen, members["images"][:7], members["labels"][:7], members["domains"][:7], members["boxes"][:7])
    whole = membership.denoising_errors(*args, timesteps=(50,), batch_size=64)
    split = membership.denoising_errors(*args, timesteps=(50,), batch_size=3)
    assert whole.shape == (7,) and np.isfinite(whole).all()
    np.testing.assert_allclose(whole, split, rtol=1e-4)


def test_unknown_domain_maps_to_null_and_larger_images_are_resized(overfit_generator):
    gen, members = overfit_generator
    cond = membership.resolve_conditions(
        gen, ["benign", "normal"], ["phantom", "other_site"], [None, [0.1, 0.1, 0.5, 0.5]]
    )
    assert cond.domains.tolist() == [0, len(gen.domain_names)]
    assert cond.box_masks[0].sum() == 0 and cond.box_masks[1].sum() > 0
    big = np.repeat(np.repeat(members["images"][:2], 2, axis=1), 2, axis=2)  # 32 px copies
    assert membership.denoising_errors(gen, big, members["labels"][:2]).shape == (2,)


class _Oracle(torch.nn.Module):
    """Knows x0 = 0 (black images), so x_t = sqrt(1 - a_t) eps and it returns eps exactly."""

    def __init__(self, alphas_cumprod):
        super().__init__()
        self.register_buffer("ac", alphas_cumprod)

    def forward(self, sample, t, labels, domains, box_mask):
        return sample / (1 - self.ac[t]).sqrt().view(-1, 1, 1, 1)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_target_follows_prediction_type(prediction_type):
    cfg = diffusion.DiffusionConfig(prediction_type=prediction_type)
    oracle = _Oracle(diffusion.make_noise_scheduler(cfg).alphas_cumprod)
    gen = SimpleNamespace(
        model=oracle,
        diffusion_cfg=cfg,
        class_names=["a"],
        domain_names=[],
        image_size=8,
        label_indices=lambda labels: [0] * len(labels),
    )
    images = np.full((3, 8, 8), 128, dtype=np.uint8)  # 0.004 in model range: x0 ~ 0
    err = membership.denoising_errors(gen, images, ["a"] * 3, timesteps=(500,))
    # An exact epsilon predictor is perfect for an epsilon model and wrong by (1 - sqrt(a)) eps for a v model.
    assert (err < 1e-3).all() if prediction_type == "epsilon" else (err > 1e-3).all()
