"""Multi-domain pretraining on Ray Train conditions on the domain (slow): a domain classifier trained on *real*
images of two simulated devices tells the generator's samples under each domain condition apart."""

from __future__ import annotations

import pytest
from helpers.domains import CLASSES, DOMAINS, share_called_b

from busgen.data.phantom import make_phantom_arrays
from busgen.model import generator
from busgen.train.pretrain import PretrainConfig


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
    share_a, share_b = share_called_b(gen, real["dev_a"], real["dev_b"])
    assert share_a <= 0.2 and share_b >= 0.8, (share_a, share_b)
