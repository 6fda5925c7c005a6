"""Pretraining: configs, augmentation, a plain-torch overfit check, and real Ray Train runs.

The fast set runs exactly two Ray Train fits (~25 s fixed overhead each): a 2-worker
DDP run that exports a model, and its resumption under the same run name. Between the
two, runs of the same name on other data or another architecture are refused before
any worker starts (no extra fit).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from busgen.core import config
from busgen.model import diffusion, unet
from busgen.train import checkpoint
from busgen.train import pretrain as train


def test_load_config_yaml_then_overrides(tmp_path):
    fp = tmp_path / "cfg.yaml"
    fp.write_text("data_dir: /data\nmax_steps: 10\nlr: 1.0e-3\n")
    cfg = config.load_config(train.PretrainConfig, str(fp), ["max_steps=20", "use_gpu=true", "run_name=x"])
    assert (cfg.data_dir, cfg.max_steps, cfg.lr, cfg.use_gpu, cfg.run_name) == ("/data", 20, 1e-3, True, "x")


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["max_step=5"], "unknown config key 'max_step'"),
        (["max_steps=many"], "max_steps"),
        (["preset=huge"], "preset"),
        (["max_steps"], "key=value"),
    ],
)
def test_load_config_rejects_bad_input(overrides, match):
    with pytest.raises(config.ConfigError, match=match):
        config.load_config(train.PretrainConfig, None, ["data_dir=/d", *overrides])


def test_load_config_missing_file():
    with pytest.raises(config.ConfigError, match="not found"):
        config.load_config(train.PretrainConfig, "/nonexistent.yaml", [])


def test_augment_flips_image_and_box_together():
    img = np.full((1, 8, 8), -1.0, np.float32)
    img[0, 2:4, 0:2] = 1.0  # bright patch at the left edge, box [0, .25, .25, .5]
    flipped, boxes = train.augment(img, [[0.0, 0.25, 0.25, 0.5]], np.random.default_rng(0), hflip_prob=1.0, jitter=0.0)
    assert boxes[0] == [0.75, 0.25, 1.0, 0.5]
    mask = unet.rasterize_boxes(boxes, 8)[0, 0] > 0
    assert (flipped[0][mask] == 1.0).all() and (flipped[0][~mask] == -1.0).all()


def test_augment_jitter_is_small_and_in_range():
    img = np.random.default_rng(1).uniform(-1, 1, (16, 8, 8)).astype(np.float32)
    out, _ = train.augment(img, [None] * 16, np.random.default_rng(0), hflip_prob=0.0, jitter=0.05)
    assert out.min() >= -1 and out.max() <= 1 and np.abs(out - img).max() < 0.11


def test_overfit_fixed_batch_loss_halves():
    """With data, noise and timesteps fixed, the model must memorise: loss falls by >= 50%."""
    torch.manual_seed(0)
    from busgen.data.imageio import mask_to_box, to_model_range
    from busgen.data.phantom import make_phantom_arrays

    images, masks, labels = make_phantom_arrays(8, 32, seed=0)
    x0 = torch.from_numpy(to_model_range(images)[:, None])
    box = torch.from_numpy(unet.rasterize_boxes([mask_to_box(m) for m in masks], 32))
    y = torch.tensor([["benign", "malignant", "normal"].index(lab) for lab in labels])
    d = torch.zeros(8, dtype=torch.long)
    model = unet.build_model(unet.model_config_for("tiny"), 3, 1)
    sched = diffusion.make_noise_scheduler(diffusion.DiffusionConfig())
    noise, t = torch.randn_like(x0), torch.randint(0, 1000, (8,))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss = diffusion.diffusion_loss(model, sched, x0, y, d, box, noise=noise, timesteps=t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-5:]) <= 0.5 * losses[0], losses


def test_ema_is_diffusers_emamodel_with_the_warmup_formula_we_had():
    """The k-th update uses decay min(cap, (1 + k) / (10 + k)), as the hand-written EMA did."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    ema = checkpoint.EMA(model, decay=0.5)
    expected = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for k in range(1, 8):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update(model)
        d = min(0.5, (1 + k) / (10 + k))
        for name, value in model.state_dict().items():
            expected[name] = d * expected[name] + (1 - d) * value
    assert type(ema.ema).__name__ == "EMAModel" and ema.num_updates == 7
    for name, value in ema.shadow.items():
        torch.testing.assert_close(value, expected[name])
    restored = checkpoint.EMA(model, decay=0.5)
    restored.load_state_dict(ema.state_dict())
    assert restored.num_updates == 7
    assert checkpoint.weights_digest(restored.shadow) == checkpoint.weights_digest(ema.shadow)
