"""A distilled student is a model like any other: ``generate`` (Ray Data) and Serve load and sample it.

Issue 29: "the student folder loads through every path (CLI, generate, Serve)" (the CLI ``sample``
command is covered in tests/unit/model/test_distill.py). Plumbing on a briefly distilled untrained
teacher: what matters is that the student's own step count is used and the images equal its own.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest
import requests
from helpers.serve import serving

from busgen.data.dataset import decode_images, read_table
from busgen.data.imageio import decode_image
from busgen.generate.shards import GenerateConfig, generate
from busgen.model import generator
from busgen.serve.config import ServeArgs
from busgen.testing.models import export_untrained
from busgen.testing.training import distill_phantom

TOKEN = "student-paths-token-0123456789"


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("students")
    teacher = export_untrained(root / "teacher", size=16)
    folders = distill_phantom(
        teacher, root / "students", guided_iters=2, iters_per_halving=2, start_steps=4, final_steps=2, batch_size=4
    )
    return next(f for f in folders if f.name == "steps2")


def test_generate_samples_a_student_with_its_own_step_count(ray_local, student_dir, tmp_path):
    cfg = GenerateConfig(model=str(student_dir), out=str(tmp_path / "syn"), n=4, batch_size=4, shard_size=4)
    assert generate(cfg, progress=False).generated == 4
    table = read_table(tmp_path / "syn")
    assert set(table.column("steps").to_pylist()) == {2}  # the student's own, recorded per image
    gen = generator.load(student_dir, device="cpu")
    images = decode_images(table.column("image").to_pylist())
    expected = gen.sample(table.column("label").to_pylist(), seeds=table.column("seed").to_pylist())
    assert np.abs(images.astype(int) - expected).max() <= 1


@pytest.mark.slow  # a Serve app start and shutdown (about 15 s idle)
def test_serve_answers_from_a_student_with_its_own_step_count(ray_local, student_dir):
    args = ServeArgs(
        generators={"student": str(student_dir)},
        token=TOKEN,
        limits=dict(max_n=4, max_steps=4, default_steps=4),
        ingress={"num_cpus": 0.25},
        generator={"num_cpus": 1, "max_batch_size": 4, "torch_threads": 1},
    )
    with serving(args) as url:
        resp = requests.post(
            f"{url}/v1/generate",
            json={"label": "benign", "n": 2, "seed": 3},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=120,
        )
    assert resp.status_code == 200, resp.text
    images = [decode_image(base64.b64decode(s)) for s in resp.json()["images"]]
    expected = generator.load(student_dir, device="cpu").sample(["benign"] * 2, seeds=[3, 4])
    assert np.abs(np.stack(images).astype(int) - expected).max() <= 1
