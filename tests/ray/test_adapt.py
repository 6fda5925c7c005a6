"""Few-shot adaptation: recorded K-shot support sets, new label sets, small LoRA adapters, clear refusals."""

import json

import numpy as np
import pytest
from helpers.data import write_lesion_task
from helpers.models import export_untrained_tiny

from busgen.model import generator
from busgen.model.lora import ADAPTER_FILE, CONDITIONS_FILE
from busgen.train import adapt
from busgen.train.adapt import AdaptConfig


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return export_untrained_tiny(tmp_path_factory.mktemp("base") / "base", seed=0)


@pytest.fixture(scope="module")
def task_b(tmp_path_factory):
    """A new site (phantom device style b) with a new label set: lesion present / absent."""
    return write_lesion_task(tmp_path_factory.mktemp("task") / "b")


def test_lora_adaptation_runs_on_ray_train_and_loads_from_local_files(ray_local, base_dir, task_b, tmp_path):
    cfg = AdaptConfig(
        base=str(base_dir),
        data_dir=str(task_b),
        out=str(tmp_path / "adapted"),
        shots=4,
        max_steps=4,
        batch_size=4,
        storage_path=str(tmp_path / "runs"),
        seed=0,
    )
    out = adapt.adapt(cfg)
    assert (out / "adapter_config.json").is_file(), "peft's adapter format (see test_adapter_peft.py)"
    adapter_bytes = (out / ADAPTER_FILE).stat().st_size + (out / CONDITIONS_FILE).stat().st_size
    base_bytes = sum(p.stat().st_size for p in (base_dir / "unet").rglob("*.safetensors"))
    assert adapter_bytes <= 0.10 * base_bytes, f"LoRA adapter {adapter_bytes} B vs base {base_bytes} B"
    support = json.loads((out / adapt.SUPPORT_JSON).read_text())
    assert len(support["images"]) == 8 and support["shots"] == 4
    assert adapt.support_hashes(out) == {r["sha256"] for r in support["images"]}
    gen = generator.load(out, device="cpu")
    assert gen.class_names == ["lesion", "no_lesion"] and gen.domain_names == ["site_b"]
    images = gen.sample(["lesion", "no_lesion"], domains="site_b", steps=2, seed=0)
    assert images.shape == (2, 32, 32) and images.dtype == np.uint8
    base_gen = generator.load(base_dir, device="cpu")
    assert not np.array_equal(images[0], base_gen.sample(["malignant"], steps=2, seed=0)[0]), (
        "the adapter changes the model"
    )
