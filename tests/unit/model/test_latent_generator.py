"""Latent generators: the same conditional UNet on an autoencoder's latent grid, decoded to pixels when sampled.

Plumbing on untrained weights (what the weights learned does not matter here): the folder is
self-contained, sampling is deterministic per seed and independent of the batch, boxes are
rasterised at latent resolution, LoRA adapters work on top, and CPSample refuses clearly.
"""

import json
import shutil

import numpy as np
import pytest
import torch

from busgen.model import diffusion, generator, lora
from busgen.model import protect as protection
from busgen.testing.models import export_untrained_latent


@pytest.fixture(scope="module")
def latent_dir(tmp_path_factory):
    return export_untrained_latent(tmp_path_factory.mktemp("latent") / "model", size=32, factor=4)


@pytest.fixture(scope="module")
def gen(latent_dir):
    return generator.load(latent_dir, device="cpu")


def test_folder_is_self_contained_and_records_the_latent_part(latent_dir):
    meta = json.loads((latent_dir / "busgen.json").read_text())
    assert meta["image_size"] == 32 and meta["model"]["image_size"] == 8 and meta["model"]["channels"] == 4
    assert meta["latent"]["autoencoder"] == "autoencoder" and meta["latent"]["factor"] == 4
    assert meta["diffusion"]["clip_sample"] is False
    assert (latent_dir / "autoencoder" / "autoencoder.json").is_file()
    # the copied folder samples without the autoencoder it was exported from
    moved = latent_dir.parent / "moved"
    shutil.copytree(latent_dir, moved)
    shutil.rmtree(latent_dir.parent / "model_ae", ignore_errors=True)
    assert generator.load(moved, device="cpu").sample("benign", steps=2).shape == (1, 32, 32)


def test_image_size_is_the_pixel_size_and_the_unet_works_on_the_latent_grid(gen):
    assert gen.image_size == 32 and gen.grid_size == 8 and gen.codec is not None


def test_samples_are_uint8_pixels_deterministic_per_seed_across_reloads(gen, latent_dir):
    labels = ["benign", "malignant", "normal"]
    a = gen.sample(labels, steps=3, seeds=[4, 5, 6])
    b = generator.load(latent_dir, device="cpu").sample(labels, steps=3, seeds=[4, 5, 6])
    assert a.shape == (3, 32, 32) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], gen.sample("benign", steps=3, seed=7)[0])


def test_an_image_does_not_depend_on_its_batch(gen):
    labels = ["benign", "malignant", "normal", "benign"]
    together = gen.sample(labels, steps=3, seeds=[1, 2, 3, 4], batch_size=4)
    alone = gen.sample(labels, steps=3, seeds=[1, 2, 3, 4], batch_size=1)
    assert np.abs(together.astype(int) - alone.astype(int)).max() <= 1  # float rounding of batched convs only


def test_the_box_reaches_the_unet_at_latent_resolution(gen, monkeypatch):
    seen = {}
    real = diffusion.sample

    def spy(model, cfg, labels, domains, masks, *args, **kwargs):
        seen["masks"] = masks
        return real(model, cfg, labels, domains, masks, *args, **kwargs)

    monkeypatch.setattr(diffusion, "sample", spy)
    gen.sample("malignant", boxes=[[0.0, 0.0, 0.5, 0.25]], steps=1)
    mask = seen["masks"][0, 0]
    assert mask.shape == (8, 8) and mask[:2, :4].all() and mask.sum() == 8


def test_model_id_covers_the_autoencoder_weights(latent_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(latent_dir, copy)
    weights = copy / "autoencoder" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert generator.weights_fingerprint(copy) != generator.weights_fingerprint(latent_dir)


def test_cpsample_refuses_a_latent_generator_with_the_remedy(gen):
    with pytest.raises(protection.ProtectError, match=r"^error: CPSample is not available for latent generators"):
        gen.sample("benign", steps=1, protect="cpsample")


def test_lora_adapter_on_a_latent_model_trains_saves_and_samples_through_the_decoder(latent_dir, tmp_path):
    """LoRA surgery on the latent UNet, one training step on latents, adapter folder, load, decode."""
    spec = lora.AdapterSpec(
        base=str(latent_dir.resolve()), lora_rank=2, class_names=["clear", "lesion"], domain_names=["phantom"]
    )
    model = generator.build_adapted_model(spec)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert any("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    z = torch.randn(2, 4, 8, 8)  # a batch of latents (C = latent channels, 32 px / factor 4)
    scheduler = diffusion.make_noise_scheduler(diffusion.DiffusionConfig(clip_sample=False))
    loss = diffusion.diffusion_loss(
        model, scheduler, z, torch.tensor([0, 1]), torch.tensor([0, 0]), torch.zeros(2, 1, 8, 8)
    )
    loss.backward()
    opt.step()
    out = tmp_path / "adapter"
    out.mkdir()
    lora.save_adapter(model, out, spec.base)
    base_meta = generator.read_meta(latent_dir)
    meta = {
        **{k: base_meta[k] for k in ("format_version", "image_size", "model", "diffusion")},
        "kind": "adapter",
        "class_names": spec.class_names,
        "domain_names": spec.domain_names,
        "adapter": spec.model_dump(include={"method", "lora_rank", "lora_alpha", "lora_targets"}),
        "base_model": spec.base,
        "base_model_rel": str(latent_dir.resolve()),
        "base_model_id": generator.weights_fingerprint(latent_dir),
    }
    (out / "box_prior.json").write_text((latent_dir / "box_prior.json").read_text())
    (out / "busgen.json").write_text(json.dumps(meta))
    adapted = generator.load(out, device="cpu")
    assert adapted.codec is not None and adapted.image_size == 32
    images = adapted.sample(["lesion", "clear"], steps=2, seed=0)
    assert images.shape == (2, 32, 32) and images.dtype == np.uint8
    before = generator.Generator(
        model.eval(), adapted.diffusion_cfg, adapted.class_names, adapted.domain_names, adapted.box_prior, "m",
        codec=adapted.codec,
    )  # fmt: skip
    np.testing.assert_array_equal(before.sample(["lesion", "clear"], steps=2, seed=0), images)


def test_hub_export_carries_the_autoencoder_and_the_card_names_it(latent_dir, tmp_path, gen):
    from busgen.model.hub import export_hub

    out = export_hub(latent_dir, tmp_path / "hub")
    assert (out / "autoencoder" / "diffusion_pytorch_model.safetensors").is_file()
    assert "autoencoder_id" in (out / "README.md").read_text()
    np.testing.assert_array_equal(
        generator.load(out, device="cpu").sample("normal", steps=2, seed=1), gen.sample("normal", steps=2, seed=1)
    )


def test_a_latent_folder_is_not_offered_as_a_diffusers_pipeline(latent_dir):
    from busgen.model.pipeline import BUSGenPipeline

    assert not (latent_dir / "model_index.json").exists()  # diffusers would load a UNet without its decoder
    with pytest.raises(ValueError, match="error: a latent generator is not yet a diffusers pipeline"):
        BUSGenPipeline.from_busgen(latent_dir, device="cpu")
