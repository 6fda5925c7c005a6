"""Synthetic generation: exact counts and ratios, determinism, resume, exactly-once, clear refusals."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.dataset as pads
import pytest
from helpers.data import images_by_index

from busgen.data import schema as S
from busgen.data.dataset import decode_images, parquet_files, read_table
from busgen.generate.shards import (
    GenerateConfig,
    GenerateError,
    GenerateWarning,
    export_png,
    generate,
)

FAST = dict(sampler="ddim", steps=2, batch_size=16)


def test_n200_exact_rows_ratio_and_byte_identical_rerun(ray_local, model_dir, tmp_path):
    cfg = GenerateConfig(
        model=str(model_dir),
        out=str(tmp_path / "a"),
        n=200,
        class_ratio={"benign": 0.5, "malignant": 0.5},
        shard_size=64,
        seed=7,
        **FAST,
    )
    summary = generate(cfg, progress=False)
    assert summary.generated == 200 and summary.shards == 4
    # steady rate counts from each actor's first finished micro-batch, so actor start-up does not pull it down
    assert summary.steady_images_per_s > 0 and "steady" in summary.line()
    table = read_table(tmp_path / "a")
    idx = table.column(S.INDEX).to_pylist()
    assert sorted(idx) == list(range(200))
    labels = table.column(S.LABEL).to_pylist()
    assert labels.count("benign") == 100 and labels.count("malignant") == 100
    assert set(table.column(S.SPLIT).to_pylist()) == {"train"}
    assert set(table.column(S.MODEL_ID).to_pylist()) == {
        json.loads((model_dir / "busgen.json").read_text())["model_id"]
    }
    boxes = table.column(S.BOX).to_pylist()
    assert all(b is not None and len(b) == 4 for b in boxes), "benign/malignant rows get a box from the prior"
    assert len(parquet_files(tmp_path / "a")) == 4, "200 rows in shards of 64"
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["completed"] == [[0, 64], [64, 128], [128, 192], [192, 200]] and manifest["n_rows"] == 200
    # the same command again, elsewhere: identical image bytes
    generate(cfg.model_copy(update={"out": str(tmp_path / "b")}), progress=False)
    assert images_by_index(tmp_path / "a") == images_by_index(tmp_path / "b")


@pytest.mark.slow  # several generation runs (a minute or more)
def test_concurrency_changes_nothing_and_batch_size_only_float_noise(ray_local, model_dir, tmp_path):
    base = GenerateConfig(model=str(model_dir), out=str(tmp_path / "c1"), n=48, shard_size=12, seed=1, **FAST)
    generate(base, progress=False)
    generate(base.model_copy(update={"out": str(tmp_path / "c2"), "concurrency": 2}), progress=False)
    generate(base.model_copy(update={"out": str(tmp_path / "b5"), "batch_size": 5}), progress=False)
    one, two, b5 = (images_by_index(tmp_path / d) for d in ("c1", "c2", "b5"))
    assert one == two
    keys = sorted(one)
    a = decode_images([one[k] for k in keys]).astype(int)
    b = decode_images([b5[k] for k in keys]).astype(int)
    assert np.abs(a - b).max() <= 2


@pytest.mark.slow  # several generation runs (a minute or more)
def test_rerun_resumes_after_kill_and_finishes_exactly_once(ray_local, model_dir, tmp_path):
    out = tmp_path / "killed"
    args = [
        "--model",
        str(model_dir),
        "--n",
        "120",
        "--out",
        str(out),
        "--shard-size",
        "10",
        "--steps",
        "12",
        "--batch-size",
        "10",
        "--seed",
        "5",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "busgen.cli", "generate", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("shard-*.parquet"))) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    partial = len(list(out.glob("shard-*.parquet")))
    assert 2 <= partial < 12, f"the kill should land mid-run (found {partial} shards)"
    cfg = GenerateConfig(
        model=str(model_dir), out=str(out), n=120, shard_size=10, steps=12, batch_size=10, seed=5, sampler="ddim"
    )
    with pytest.warns(GenerateWarning, match="taking over the lock"):  # the killed run never released it
        summary = generate(cfg, progress=False)
    assert summary.skipped >= 20 and summary.generated == 120 - summary.skipped
    idx = pads.dataset(parquet_files(out)).to_table(columns=[S.INDEX]).column(S.INDEX).to_pylist()
    assert sorted(idx) == list(range(120)), "exactly N rows, no duplicates"
    assert not list(out.glob(".*.tmp")), "no partial shards left behind"


def test_changed_settings_or_bad_input_are_refused_before_work(ray_local, model_dir, tmp_path):
    cfg = GenerateConfig(model=str(model_dir), out=str(tmp_path / "r"), n=8, shard_size=8, **FAST)
    generate(cfg, progress=False)
    with pytest.raises(GenerateError, match="guidance"):
        generate(cfg.model_copy(update={"guidance": 3.0}), progress=False)
    with pytest.raises(GenerateError, match="unknown class"):
        generate(cfg.model_copy(update={"out": str(tmp_path / "x"), "class_ratio": {"cyst": 1.0}}), progress=False)
    with pytest.raises(GenerateError, match="not found"):
        generate(cfg.model_copy(update={"out": str(tmp_path / "y"), "model": str(tmp_path / "nope")}), progress=False)
    for bad in ({"n": 0}, {"steps": 0}, {"guidance": -1.0}):
        with pytest.raises(ValueError):
            GenerateConfig(model=str(model_dir), out=str(tmp_path / "z"), **{**FAST, **bad})
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_export_png_writes_class_folders(ray_local, model_dir, tmp_path):
    generate(GenerateConfig(model=str(model_dir), out=str(tmp_path / "s"), n=9, shard_size=9, **FAST), progress=False)
    assert export_png(tmp_path / "s", tmp_path / "png") == 9
    assert sum(len(list(d.glob("*.png"))) for d in (tmp_path / "png").iterdir()) == 9


def test_gpu_actor_pool_fills_the_cluster_gpus_and_cpu_pool_keeps_its_size(ray_local, model_dir, tmp_path):
    from busgen.generate.shards import pool_strategy

    cpu = pool_strategy(GenerateConfig(model=str(model_dir), out=str(tmp_path), concurrency=2))
    assert (cpu.min_size, cpu.max_size) == (2, 2)
    # this runtime has no GPUs: a GPU pool still asks for at least `concurrency` actors (Ray then waits for GPUs)
    gpu = pool_strategy(GenerateConfig(model=str(model_dir), out=str(tmp_path), num_gpus=0.5))
    assert (gpu.min_size, gpu.max_size) == (1, 1)
