"""Latent batches: cached latents become training tensors the way pixel batches do (flip with its box, scale)."""

import numpy as np
import pytest
import torch

from busgen.model import autoencoder as ae
from busgen.testing.models import export_untrained_autoencoder
from busgen.train import latents
from busgen.train.pretrain import PretrainConfig

SHAPE = (2, 4, 4)


def _raw(n: int = 2) -> dict:
    z = np.arange(n * 32, dtype=np.float16).reshape(n, *SHAPE)
    return {
        latents.LATENT: np.array([r.tobytes() for r in z], dtype=object),
        latents.LATENT_FLIP: np.array([(-r).tobytes() for r in z], dtype=object),
        "label": np.array(["a", "b"][:n], dtype=object),
        "domain": np.array(["d"] * n, dtype=object),
        "box": np.array([[0.0, 0.0, 0.25, 0.5], None][:n], dtype=object),
    }


class _Cfg:
    def __init__(self, hflip_prob: float):
        self.hflip_prob = hflip_prob


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_latent_rows_are_scaled_and_mirrored_with_their_box(flip):
    latent = {"shape": list(SHAPE), "scaling_factor": 0.5}
    vocab = ({"a": 0, "b": 1}, {"d": 0})
    z, labels, domains, mask = latents.prepare_latent_batch(
        _raw(), _Cfg(flip), vocab, 4, np.random.default_rng(0), latent
    )
    expected = np.arange(64, dtype=np.float32).reshape(2, *SHAPE) * 0.5 * (-1 if flip else 1)
    np.testing.assert_array_equal(z.numpy(), expected)
    assert labels.tolist() == [0, 1] and domains.tolist() == [0, 0] and mask.shape == (2, 1, 4, 4)
    cols = torch.nonzero(mask[0, 0].sum(0)).flatten().tolist()
    assert cols == ([3] if flip else [0]) and mask[1].sum() == 0  # the box mirrors with the latent; no box stays none


def test_a_pixel_size_other_than_the_autoencoders_is_refused(tmp_path):
    folder = export_untrained_autoencoder(tmp_path / "ae", size=32, factor=4)
    cfg = PretrainConfig(data_dir="d", autoencoder=str(folder))
    assert latents.model_config_of(cfg).image_size == 8 and latents.model_config_of(cfg).channels == 4
    with pytest.raises(ae.AutoencoderError, match=r"^error: image_size 64 differs from the autoencoder's 32 px"):
        latents.model_config_of(cfg.model_copy(update={"image_size": 64}))


def test_cache_folder_is_keyed_by_autoencoder_and_data_and_hidden_from_the_dataset(tmp_path):
    a = latents.cache_dir_for(tmp_path, "ae1", "fp1", None)
    assert a == tmp_path / "_latents" / "ae1-fp1"  # "_" folders are not read as part of the dataset
    assert a != latents.cache_dir_for(tmp_path, "ae2", "fp1", None)
    assert a != latents.cache_dir_for(tmp_path, "ae1", "fp2", None)
    assert latents.cache_dir_for(tmp_path, "ae1", "fp1", tmp_path / "elsewhere").parent == tmp_path / "elsewhere"
