"""Acceptance of few-shot adaptation: a generator pretrained on device A, adapted with K=10 images
per class from device B, generates images a domain classifier calls B; the base model's stay A."""

import numpy as np
import pytest
from helpers.data import write_parquet_dataset

from busgen.data.phantom import make_phantom_arrays
from busgen.model import generator, lora
from busgen.train import adapt
from busgen.train.adapt import AdaptConfig
from busgen.train.pretrain import PretrainConfig, pretrain


def texture_features(images: np.ndarray) -> np.ndarray:
    """Gain, contrast and speckle grain: what tells the two simulated devices apart."""
    x = images.astype(np.float32) / 255.0
    gx, gy = np.abs(np.diff(x, axis=2)).mean((1, 2)), np.abs(np.diff(x, axis=1)).mean((1, 2))
    return np.stack([x.mean((1, 2)), x.std((1, 2)), gx, gy, x[:, x.shape[1] // 2 :].mean((1, 2))], axis=1)


@pytest.mark.slow
def test_adapted_samples_look_like_the_new_device(ray_local, tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    size = 32
    a_imgs, a_masks, a_labels = make_phantom_arrays(300, size, seed=0, style="a")
    b_imgs, b_masks, b_labels = make_phantom_arrays(300, size, seed=1, style="b")
    data_a = write_parquet_dataset(tmp_path / "a", a_imgs, a_masks, a_labels, domains="device_a")
    data_b = write_parquet_dataset(tmp_path / "b", b_imgs, b_masks, b_labels, domains="device_b")

    # domain classifier on real images of both devices
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(texture_features(np.concatenate([a_imgs, b_imgs])), [0] * 300 + [1] * 300)

    base = tmp_path / "base"
    pretrain(
        PretrainConfig(
            data_dir=str(data_a),
            preset="tiny",
            image_size=size,
            batch_size=32,
            max_steps=300,
            lr=1e-3,
            warmup_steps=20,
            ema_decay=0.99,
            checkpoint_every=300,
            storage_path=str(tmp_path / "runs"),
            run_name="base-a",
            out=str(base),
        )
    )
    adapted = adapt.adapt(
        AdaptConfig(
            base=str(base),
            data_dir=str(data_b),
            out=str(tmp_path / "adapted"),
            shots=10,
            max_steps=150,
            batch_size=16,
            storage_path=str(tmp_path / "runs"),
            lora_targets=["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"],
        )
    )

    labels = ["benign", "malignant", "normal"] * 10
    base_samples = generator.load(base, device="cpu").sample(labels, steps=20, seed=0)
    adapted_samples = generator.load(adapted, device="cpu").sample(labels, domains="device_b", steps=20, seed=0)
    share_b_adapted = clf.predict(texture_features(adapted_samples)).mean()
    share_b_base = clf.predict(texture_features(base_samples)).mean()
    print(f"device-B share: adapted {share_b_adapted:.2f}, base {share_b_base:.2f}", flush=True)
    assert share_b_adapted >= 0.8, f"only {share_b_adapted:.0%} of adapted samples look like device B"
    assert share_b_base <= 0.3, f"{share_b_base:.0%} of base samples already look like device B"
    size_ratio = (adapted / lora.ADAPTER_FILE).stat().st_size / sum(
        p.stat().st_size for p in (base / "unet").rglob("*.safetensors")
    )
    assert size_ratio <= 0.10
