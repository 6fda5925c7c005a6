"""Conditional UNet: shapes, conditioning inputs, null indices, box rasterisation, presets, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from busgen.data.imageio import mask_to_box
from busgen.model import unet as models


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return models.build_model(models.model_config_for("tiny"), num_labels=3, num_domains=2).eval()


def _inputs(n=4, size=32, box=True):
    x = torch.randn(n, 1, size, size)
    t = torch.randint(0, 1000, (n,))
    boxes = [[0.2, 0.3, 0.6, 0.7] if box else None] * n
    return (
        x,
        t,
        torch.tensor([0, 1, 2, 3][:n]),
        torch.tensor([0, 1, 2, 0][:n]),
        torch.from_numpy(models.rasterize_boxes(boxes, size)),
    )


def test_forward_shape_and_null_indices(tiny):
    x, t, labels, domains, mask = _inputs()
    # index 3 (labels) and 2 (domains) are the reserved nulls and must be valid inputs
    assert tiny.null_label == 3 and tiny.null_domain == 2
    with torch.no_grad():
        out = tiny(x, t, labels, domains, mask)
    assert out.shape == (4, 1, 32, 32)
    assert tiny.unet.config.in_channels == 2 and tiny.unet.config.out_channels == 1


def test_each_condition_changes_the_output(tiny):
    x, t, labels, domains, mask = _inputs()
    with torch.no_grad():
        base = tiny(x, t, labels, domains, mask)
        other_label = tiny(x, t, (labels + 1) % 4, domains, mask)
        other_domain = tiny(x, t, labels, (domains + 1) % 3, mask)
        no_box = tiny(x, t, labels, domains, torch.zeros_like(mask))
    for changed in (other_label, other_domain, no_box):
        assert (changed - base).abs().max() > 1e-4


def test_rasterize_inverts_mask_to_box():
    rng = np.random.default_rng(0)
    for _ in range(20):
        size = 32
        mask = np.zeros((size, size), np.uint8)
        r0, c0 = rng.integers(0, 28, 2)
        r1, c1 = r0 + rng.integers(1, size - r0), c0 + rng.integers(1, size - c0)
        mask[r0:r1, c0:c1] = 255
        raster = models.rasterize_boxes([mask_to_box(mask)], size)[0, 0]
        assert np.array_equal(raster > 0, mask > 0)


def test_rasterize_none_and_tiny_boxes():
    out = models.rasterize_boxes([None, (), [0.5, 0.5, 0.5001, 0.5001]], 16)
    assert out[0].sum() == 0 and out[1].sum() == 0
    assert out[2].sum() == 1  # a degenerate box still marks one pixel


def test_drop_conditions_rate_and_null_values():
    n = 4000
    labels, domains = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    mask = torch.ones(n, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    l2, d2, m2 = models.drop_conditions(labels, domains, mask, 0.1, null_label=3, null_domain=2, generator=g)
    assert set(l2.unique().tolist()) == {0, 3} and set(d2.unique().tolist()) == {0, 2}
    for dropped in ((l2 == 3).float().mean(), (d2 == 2).float().mean(), (m2.sum((1, 2, 3)) == 0).float().mean()):
        assert 0.08 < dropped < 0.12
    # independence: all three dropped together about p^3 of the time, far below p
    all3 = ((l2 == 3) & (d2 == 2) & (m2.sum((1, 2, 3)) == 0)).float().mean()
    assert all3 < 0.01


def test_presets_are_consistent():
    for name in ("tiny", "base", "large"):
        cfg = models.model_config_for(name)
        assert len(cfg.block_out_channels) == len(cfg.down_block_types) == len(cfg.up_block_types)
        assert all(c % cfg.norm_num_groups == 0 for c in cfg.block_out_channels)
    assert models.model_config_for("tiny", 64).image_size == 64
    with pytest.raises(ValueError, match="divisible"):
        models.model_config_for("tiny", 30)
    with pytest.raises(ValueError, match="unknown model preset"):
        models.model_config_for("huge")


def test_base_preset_builds_and_runs_at_128px():
    model = models.build_model(models.model_config_for("base"), 3, 1).eval()
    x, t, _, _, _ = _inputs(n=1, size=128)
    with torch.no_grad():
        out = model(x, t, torch.tensor([0]), torch.tensor([0]), torch.zeros(1, 1, 128, 128))
    assert out.shape == (1, 1, 128, 128)


def test_save_pretrained_round_trip(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    loaded = models.ConditionalUNet.from_pretrained(tmp_path).eval()
    x, t, labels, domains, mask = _inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x, t, labels, domains, mask), tiny(x, t, labels, domains, mask))


def test_xformers_not_enabled_without_cuda(tiny):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert models.maybe_enable_xformers(tiny) is False
