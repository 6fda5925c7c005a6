"""The few-shot sweep: scores per K, a K=0 baseline, results tables."""

import json

import numpy as np
import pytest
from helpers.data import write_parquet_dataset
from helpers.models import export_untrained_tiny

from busgen.data.phantom import make_phantom_arrays
from busgen.studies.fewshot import FewShotConfig, run_few_shot


@pytest.mark.slow
def test_sweep_writes_one_row_per_k_plus_baseline(ray_local, tmp_path):
    a_imgs, a_masks, a_labels = make_phantom_arrays(40, 32, seed=0, style="a")
    b_imgs, b_masks, b_labels = make_phantom_arrays(40, 32, seed=1, style="b")
    ref = write_parquet_dataset(tmp_path / "a", a_imgs, a_masks, a_labels, domains="phantom")
    target = write_parquet_dataset(tmp_path / "b", b_imgs, b_masks, b_labels, domains="site_b")
    base = export_untrained_tiny(tmp_path / "base")
    cfg = FewShotConfig(
        base=str(base),
        target_dir=str(target),
        reference_dir=str(ref),
        out=str(tmp_path / "fs"),
        shots=[2],
        max_steps=3,
        batch_size=4,
        n_samples=6,
        sample_steps=2,
        storage_path=str(tmp_path / "runs"),
    )
    rows = run_few_shot(cfg)
    assert [r["shots"] for r in rows] == [0, 2]
    assert all(0.0 <= r["domain_score"] <= 1.0 and np.isfinite(r["fid"]) for r in rows)
    assert json.loads((tmp_path / "fs" / "results.json").read_text()) == rows
    header = (tmp_path / "fs" / "results.csv").read_text().splitlines()[0]
    assert {"shots", "model", "domain_score", "fid", "seconds"} == {h.strip('"') for h in header.split(",")}
