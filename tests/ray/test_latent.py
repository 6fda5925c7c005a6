"""Latent generators end to end on Ray: autoencoder and latent pretraining on Ray Train (latents cached with Ray
Data), generation to Parquet (decoding inside the Ray Data actor), Serve, and box conditioning."""

from __future__ import annotations

import base64
import json
import time

import numpy as np
import pytest
import requests
from helpers.data import write_phantom_dataset
from helpers.serve import serving

from busgen.data.dataset import decode_images, read_table
from busgen.data.imageio import decode_image
from busgen.generate.shards import GenerateConfig, generate
from busgen.model import autoencoder as ae
from busgen.model import generator
from busgen.serve.config import ServeArgs
from busgen.testing.models import export_untrained_latent
from busgen.train import checkpoint, latents
from busgen.train import pretrain as train
from busgen.train.autoencoder import AutoencoderTrainConfig, train_autoencoder

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def latent_dir(tmp_path_factory):
    return export_untrained_latent(tmp_path_factory.mktemp("latent") / "model", size=32, factor=4)


def test_generate_to_parquet_decodes_latents_to_pixels_in_the_actor(ray_local, latent_dir, tmp_path):
    cfg = GenerateConfig(model=str(latent_dir), out=str(tmp_path / "syn"), n=6, steps=2, batch_size=4, shard_size=4)
    assert generate(cfg, progress=False).generated == 6
    table = read_table(tmp_path / "syn")
    images = decode_images(table.column("image").to_pylist())
    assert images.shape == (6, 32, 32) and images.dtype == np.uint8
    gen = generator.load(latent_dir, device="cpu")
    assert set(table.column("model_id").to_pylist()) == {gen.model_id}


@pytest.mark.slow  # a Serve app start and shutdown (about 15 s idle)
def test_serve_answers_pixel_images_from_a_latent_model(ray_local, latent_dir):
    args = ServeArgs(
        generators={"latent": str(latent_dir)},
        token=TOKEN,
        limits=dict(max_n=4, max_steps=4, default_steps=2),
        ingress={"num_cpus": 0.25},
        generator={"num_cpus": 1, "max_batch_size": 4, "torch_threads": 1},
    )
    with serving(args) as url:
        resp = requests.post(
            f"{url}/v1/generate",
            json={"label": "benign", "n": 2, "seed": 3, "steps": 2},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=120,
        )
    assert resp.status_code == 200, resp.text
    images = [decode_image(base64.b64decode(s)) for s in resp.json()["images"]]
    expected = generator.load(latent_dir, device="cpu").sample(["benign"] * 2, steps=2, seeds=[3, 4])
    assert [im.shape for im in images] == [(32, 32)] * 2
    assert np.abs(np.stack(images).astype(int) - expected).max() <= 1


@pytest.mark.slow  # two short Ray Train fits and one Ray Data encoding pass (about 2 min idle)
def test_autoencoder_then_latent_pretraining_caches_latents_and_exports_a_self_contained_model(ray_local, tmp_path):
    data_dir = write_phantom_dataset(tmp_path / "data", 32, size=32, seed=0)
    acfg = AutoencoderTrainConfig(
        data_dir=str(data_dir),
        image_size=32,
        factor=4,
        width=8,
        batch_size=8,
        max_steps=4,
        warmup_steps=1,
        checkpoint_every=2,
        log_every=2,
        cpus_per_worker=2,
        storage_path=str(tmp_path / "runs"),
        run_name=f"ae{time.time_ns()}",
        out=str(tmp_path / "ae"),
    )
    assert train_autoencoder(acfg).error is None
    arch, meta = ae.read_info(acfg.out)
    assert arch.factor == 4 and meta["train_steps"] == 4 and set(meta["metrics"]) >= {"l1", "msssim", "kl"}
    # the same run name with another architecture is refused before any worker starts
    with pytest.raises(checkpoint.ResumeMismatchError, match="architecture"):
        train_autoencoder(acfg.model_copy(update={"factor": 8, "max_steps": 6}))

    pcfg = train.PretrainConfig(
        data_dir=str(data_dir),
        autoencoder=acfg.out,
        batch_size=8,
        max_steps=3,
        warmup_steps=1,
        checkpoint_every=3,
        log_every=1,
        cpus_per_worker=2,
        storage_path=str(tmp_path / "runs"),
        run_name=f"lat{time.time_ns()}",
        out=str(tmp_path / "model"),
    )
    assert train.pretrain(pcfg).error is None
    fingerprint = train.read_train_metadata(data_dir)["fingerprint"]
    cache = latents.cache_dir_for(data_dir, meta["autoencoder_id"], fingerprint, None)
    record = json.loads((cache / latents.CACHE_JSON).read_text())
    assert record["shape"] == [4, 8, 8] and record["num_rows"] > 0 and record["scaling_factor"] > 0
    gen = generator.load(pcfg.out, device="cpu")
    assert gen.meta["latent"]["scaling_factor"] == pytest.approx(record["scaling_factor"])
    assert gen.meta["latent"]["autoencoder_id"] == meta["autoencoder_id"] and gen.image_size == 32
    assert gen.sample(["benign", "malignant"], steps=2).shape == (2, 32, 32)
    # the cache is reused: a second run does not encode again (its folder is untouched)
    stamp = (cache / latents.CACHE_JSON).stat().st_mtime_ns
    latents.encode_dataset(data_dir, acfg.out, fingerprint)
    assert (cache / latents.CACHE_JSON).stat().st_mtime_ns == stamp


BOX_A = [0.19, 0.25, 0.47, 0.53]  # the same boxes as the pixel test (tests/ray/test_train.py)
BOX_B = [0.53, 0.47, 0.81, 0.75]


def _region_means(images: np.ndarray, box) -> tuple[float, float]:
    from busgen.model import unet

    inside = unet.rasterize_boxes([box], images.shape[-1])[0, 0] > 0
    return float(images[:, inside].mean()), float(images[:, ~inside].mean())


@pytest.mark.slow  # an autoencoder and a latent generator trained for a few hundred steps (minutes)
def test_box_conditioning_places_dark_lesion_in_box_on_a_latent_model(ray_local, tmp_path):
    """The pixel model's box test (tests/ray/test_train.py), on a latent generator at 64 px (16 x 16 latents)."""
    data_dir = write_phantom_dataset(tmp_path / "data", 384, size=64, seed=0)
    acfg = AutoencoderTrainConfig(
        data_dir=str(data_dir),
        image_size=64,
        factor=4,
        width=16,
        batch_size=16,
        lr=2e-3,
        max_steps=300,
        warmup_steps=20,
        checkpoint_every=300,
        cpus_per_worker=2,
        storage_path=str(tmp_path / "runs"),
        run_name=f"ae{time.time_ns()}",
        out=str(tmp_path / "ae"),
        log_every=50,
    )
    assert train_autoencoder(acfg).error is None
    pcfg = train.PretrainConfig(
        data_dir=str(data_dir),
        autoencoder=acfg.out,
        batch_size=16,
        lr=1e-3,
        warmup_steps=50,
        max_steps=300,
        ema_decay=0.995,
        checkpoint_every=300,
        cpus_per_worker=2,
        storage_path=str(tmp_path / "runs"),
        run_name=f"cond{time.time_ns()}",
        out=str(tmp_path / "model"),
        log_every=50,
    )
    assert train.pretrain(pcfg).error is None
    gen = generator.load(pcfg.out)
    labels = ["benign", "malignant"] * 4
    at_a = gen.sample(labels, boxes=[BOX_A] * 8, steps=20, seeds=range(8)).astype(float)
    at_b = gen.sample(labels, boxes=[BOX_B] * 8, steps=20, seeds=range(8)).astype(float)
    in_a, out_a = _region_means(at_a, BOX_A)
    in_b, out_b = _region_means(at_b, BOX_B)
    assert in_a < out_a - 25 and in_b < out_b - 25, (in_a, out_a, in_b, out_b)
    assert in_a < _region_means(at_b, BOX_A)[0] - 25 and in_b < _region_means(at_a, BOX_B)[0] - 25
