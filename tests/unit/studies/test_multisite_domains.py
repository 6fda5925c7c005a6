"""Multi-domain conditioning, in-process: a domain classifier trained on *real* images of two simulated devices
tells a briefly trained 16 px generator's samples under each domain condition apart (the train step, no Ray)."""

from __future__ import annotations

import pytest
from helpers.domains import CLASSES, DOMAINS, share_called_b

from busgen.data.imageio import mask_to_box
from busgen.data.phantom import make_phantom_arrays
from busgen.model import generator


def _phantoms(n: int, size: int, seed: int, style: str):
    images, masks, labels = make_phantom_arrays(n, size, seed=seed, style=style, classes=tuple(CLASSES))
    return images, [mask_to_box(m) if m.any() else None for m in masks], list(labels)


def test_a_briefly_trained_two_domain_generator_samples_each_domain(tmp_path, torch_one_thread):
    from busgen.testing.training import train_phantom_model

    size, n = 16, 96
    out = train_phantom_model(
        tmp_path / "g", size=size, steps=80, n_images=n, domain_styles={d: d[-1] for d in DOMAINS},
        classes=CLASSES, batch_size=32, warmup_steps=10, ema_decay=0.9,
    )  # fmt: skip
    real = {d: _phantoms(n, size, seed=i, style=d[-1])[0] for i, d in enumerate(DOMAINS)}  # the training images
    share_a, share_b = share_called_b(generator.load(out, device="cpu"), real["dev_a"], real["dev_b"])
    # weaker than the slow test (a few seconds of training): the b condition must move samples towards b
    assert share_b - share_a >= 0.5, (share_a, share_b)


def test_an_unknown_domain_lists_the_known_ones(tmp_path):
    from busgen.testing.models import export_untrained

    gen = generator.load(export_untrained(tmp_path / "g", size=16, domains=DOMAINS), device="cpu")
    with pytest.raises(ValueError, match=r"unknown domain 'dev_c'.*dev_a.*dev_b"):
        gen.sample(["benign"], domains="dev_c", steps=1)


def test_generating_under_an_unknown_domain_lists_the_known_ones(tmp_path):
    from busgen.generate.shards import GenerateConfig, GenerateError, validate
    from busgen.testing.models import export_untrained

    model = export_untrained(tmp_path / "g", size=16, domains=DOMAINS)
    cfg = GenerateConfig(model=str(model), out=str(tmp_path / "syn"), n=4, domain_ratio={"dev_a": 1.0, "dev_c": 1.0})
    with pytest.raises(GenerateError, match=r"unknown domain \['dev_c'\].*dev_a.*dev_b"):
        validate(cfg)
