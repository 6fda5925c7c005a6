"""Latents for latent pretraining: encoded once with Ray Data, cached beside the dataset, read by training.

A latent generator trains on the autoencoder's latents, not on pixels. Encoding every
batch again at every epoch would cost as much as a forward of the encoder per step, so
the train split is encoded once (``encode_dataset``: a Ray Data actor pool, the encoder
loaded once per actor) into Parquet under ``<data_dir>/_latents/<autoencoder id>-<data
fingerprint>/`` (``_``-folders are not part of the dataset; ``latent_cache`` puts it
elsewhere, e.g. beside a read-only dataset). The cache key is the autoencoder's weights
id and the data fingerprint, so other weights or other data never reuse it.

Each row holds the posterior mean of the image and of its mirror image (horizontal flip
is the one augmentation: flipping a latent grid is not the latent of the flipped image),
plus label, domain and box. ``latents.json`` records the scaling factor: 1 / std of all
cached latents, so the generator sees unit-variance inputs as the noise schedule assumes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from busgen.data import dataset as data
from busgen.data import schema
from busgen.data.imageio import decode_image, resize_square, to_model_range
from busgen.model import autoencoder as ae
from busgen.model import unet

CACHE_DIR = "_latents"
CACHE_JSON = "latents.json"
LATENT, LATENT_FLIP = "latent", "latent_flip"
KEEP = [schema.LABEL, schema.DOMAIN, schema.BOX]


def model_config_of(cfg) -> unet.ModelConfig:
    """The UNet a pretraining run builds: the preset at its image size, or at the latent grid of its autoencoder."""
    if getattr(cfg, "autoencoder", None):
        arch, _ = ae.read_info(cfg.autoencoder)
        if cfg.image_size not in (None, arch.image_size):
            raise ae.AutoencoderError(
                f"error: image_size {cfg.image_size} differs from the autoencoder's {arch.image_size} px: "
                "leave image_size unset or train an autoencoder at that size"
            )
        return ae.latent_model_config(cfg.preset, arch)
    return unet.model_config_for(cfg.preset, cfg.image_size)


class EncodeBatch:
    """Ray Data callable class: PNG rows -> latent rows (the encoder loads once per actor)."""

    def __init__(self, folder: str):
        torch.set_num_threads(1)
        self.codec = ae.load_codec(folder)

    def __call__(self, batch: dict):
        size = self.codec.image_size
        imgs = [decode_image(bytes(png)) for png in batch[schema.IMAGE]]
        imgs = np.stack([im if im.shape == (size, size) else resize_square(im, size, mode="stretch") for im in imgs])
        x = torch.from_numpy(to_model_range(imgs)[:, None])
        z = self.codec.encode(x).numpy().astype(np.float16)  # (B, C, h, w)
        z_flip = self.codec.encode(x.flip(-1)).numpy().astype(np.float16)
        # a pyarrow table: numpy object columns (boxes: lists or None) would be stored pickled, which reading refuses
        boxes = [None if b is None or len(b) != 4 else [float(v) for v in b] for b in batch[schema.BOX]]
        return pa.table(
            {
                schema.LABEL: pa.array([str(x) for x in batch[schema.LABEL]]),
                schema.DOMAIN: pa.array([str(x) for x in batch[schema.DOMAIN]]),
                schema.BOX: pa.array(boxes, type=pa.list_(pa.float64())),
                LATENT: pa.array([r.tobytes() for r in z], type=pa.binary()),
                LATENT_FLIP: pa.array([r.tobytes() for r in z_flip], type=pa.binary()),
            }
        )


def cache_dir_for(data_dir: str | Path, autoencoder_id: str, fingerprint: str, root: str | Path | None) -> Path:
    """Where the latents of ``data_dir`` under one autoencoder live (see module docstring)."""
    base = Path(root) if root else Path(data_dir) / CACHE_DIR
    return base / f"{autoencoder_id}-{fingerprint}"


def encode_dataset(data_dir: str | Path, folder: str | Path, fingerprint: str, root: str | Path | None = None) -> dict:
    """Encode the train split once (reused when the cache exists); returns ``latents.json``'s record.

    Raises:
        busgen.model.autoencoder.AutoencoderError: ``folder`` is not an autoencoder part.
    """
    import ray

    arch, meta = ae.read_info(folder)
    out = cache_dir_for(data_dir, meta["autoencoder_id"], fingerprint, root)
    record_fp = out / CACHE_JSON
    if record_fp.is_file():
        return json.loads(record_fp.read_text())
    ds = data.load(data_dir, split="train").select_columns([schema.IMAGE, *KEEP])
    ds = ds.map_batches(
        EncodeBatch,
        fn_constructor_args=(str(Path(folder).resolve()),),
        batch_size=64,
        num_cpus=0.5,  # two 1-CPU actors would starve the read and write tasks on a 2-core machine
        compute=ray.data.ActorPoolStrategy(size=1),
    )
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted run
    ds.write_parquet(str(tmp))
    table = data.read_table(tmp, [LATENT])
    z = np.concatenate([np.frombuffer(b, dtype=np.float16) for b in table.column(LATENT).to_pylist()])
    record = {
        "autoencoder_id": meta["autoencoder_id"],
        "data_fingerprint": fingerprint,
        "shape": [arch.latent_channels, arch.latent_size, arch.latent_size],
        "scaling_factor": float(1.0 / max(float(z.astype(np.float32).std()), 1e-6)),
        "num_rows": table.num_rows,
    }
    (tmp / CACHE_JSON).write_text(json.dumps(record, indent=2))
    tmp.rename(out)  # a half-written cache is never taken for a whole one
    return record


def make_latent_dataset(data_dir: str | Path, folder: str | Path, fingerprint: str, root: str | Path | None = None):
    """The materialised Ray Dataset of cached latents (a small table: latents are factor^2 x C smaller than PNGs)."""
    import ray

    _, meta = ae.read_info(folder)
    out = cache_dir_for(data_dir, meta["autoencoder_id"], fingerprint, root)
    return ray.data.read_parquet(data.parquet_files(out)).materialize()


def prepare_latent_batch(raw: dict, cfg, vocab: tuple[dict, dict], size: int, np_rng, latent: dict) -> tuple:
    """One cached-latent batch -> (z, labels, domains, box_mask) CPU tensors, like ``batches.prepare_batch``.

    A row is mirrored with probability ``cfg.hflip_prob`` (its mirror latent and mirrored box);
    latents are multiplied by the cache's scaling factor; the box is rasterised at the latent size.
    """
    shape = tuple(latent["shape"])
    flip = np_rng.random(len(raw[LATENT])) < cfg.hflip_prob
    zs, boxes = [], []
    for i, box in enumerate(raw[schema.BOX]):
        buf = raw[LATENT_FLIP][i] if flip[i] else raw[LATENT][i]
        zs.append(np.frombuffer(bytes(buf), dtype=np.float16).reshape(shape))
        box = None if box is None or len(box) != 4 else [float(v) for v in box]
        boxes.append([1.0 - box[2], box[1], 1.0 - box[0], box[3]] if (box and flip[i]) else box)
    z = torch.from_numpy(np.stack(zs).astype(np.float32) * latent["scaling_factor"])
    labels = torch.tensor([vocab[0][str(x)] for x in raw[schema.LABEL]], dtype=torch.long)
    domains = torch.tensor([vocab[1][str(x)] for x in raw[schema.DOMAIN]], dtype=torch.long)
    return z, labels, domains, torch.from_numpy(unet.rasterize_boxes(boxes, size))
