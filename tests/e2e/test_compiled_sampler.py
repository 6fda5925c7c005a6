"""torch.compile's sampler matches eager on CPU (slow: inductor compiles in Python workers, minutes on 2 cores)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from busgen.model import accel, generator
from busgen.testing.training import train_phantom_model

CLASSES = ("benign", "malignant", "normal")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    """A tiny 16 px model trained for 120 steps with the project's own step (EMA weights exported)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_phantom_model(tmp_path_factory.mktemp("trained") / "m", size=16, steps=120)
    finally:
        torch.set_num_threads(n)


def test_compiled_sampler_matches_eager_on_cpu(trained_dir):
    labels = list(CLASSES)
    eager = generator.load(trained_dir, device="cpu").sample(labels, steps=4, seed=3)
    compiled = generator.load(trained_dir, device="cpu", optimize=accel.AccelConfig(compile="on"))
    assert np.abs(compiled.sample(labels, steps=4, seed=3).astype(np.float64) - eager).mean() < 0.5
