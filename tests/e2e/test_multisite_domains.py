"""Multi-domain pretraining conditions on the domain: a domain classifier trained on *real* images of two
simulated devices tells the generator's samples under each domain condition apart.

Phantom devices a and b differ strongly (gain, speckle grain, attenuation). The fast test trains a
16 px tiny generator in-process for a short while (the Ray Train loop's own step function, no Ray);
the slow test runs the real `busgen.train.pretrain` on a combined two-domain dataset at 32 px.
"""

from __future__ import annotations

import pytest

from busgen.data.phantom import make_phantom_arrays
from busgen.model import generator
from busgen.studies.fewshot import fit_domain_classifier, texture_features
from busgen.train.pretrain import PretrainConfig

CLASSES = ["benign", "malignant"]


DOMAINS = ["dev_a", "dev_b"]


def _share_called_b(gen, real_a, real_b, n: int = 24) -> tuple[float, float]:
    """Share of samples the real-trained domain classifier calls device b, under condition a and under b."""
    clf = fit_domain_classifier(real_b, real_a)
    labels = [CLASSES[i % 2] for i in range(n)]
    shares = []
    for d in DOMAINS:
        samples = gen.sample(labels, domains=d, steps=10, seed=1)
        shares.append(float(clf.predict(texture_features(samples)).mean()))
    return shares[0], shares[1]


@pytest.mark.slow
def test_pretrained_joint_generator_samples_each_domain(tmp_path, ray_local, torch_one_thread):
    from helpers.data import write_parquet_dataset

    from busgen.train.pretrain import pretrain

    size = 32
    real = {}
    for i, d in enumerate(DOMAINS):
        images, masks, labels = make_phantom_arrays(200, size, seed=i, style=d[-1], classes=tuple(CLASSES))
        real[d] = images
        write_parquet_dataset(tmp_path / "joint" / d, images, masks, labels, d)
    out = tmp_path / "gen"
    pretrain(
        PretrainConfig(
            data_dir=str(tmp_path / "joint"),
            image_size=size,
            batch_size=32,
            max_steps=400,
            lr=1e-3,
            warmup_steps=20,
            ema_decay=0.99,
            checkpoint_every=400,
            storage_path=str(tmp_path / "runs"),
            run_name="joint-domains",
            out=str(out),
        )
    )
    gen = generator.load(out, device="cpu")
    assert gen.domain_names == DOMAINS
    share_a, share_b = _share_called_b(gen, real["dev_a"], real["dev_b"])
    assert share_a <= 0.2 and share_b >= 0.8, (share_a, share_b)
