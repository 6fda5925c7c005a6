"""Multi-site datasets: several ingested sites combine into one dataset that keeps each site's split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.data import write_parquet_dataset
from typer.testing import CliRunner

from busgen.cli import app
from busgen.data import schema as S
from busgen.data.combine import CombineConfig, CombineError, combine
from busgen.data.dataset import read_table
from busgen.data.phantom import make_phantom_arrays


def ingested(tmp_path: Path, name: str, n: int, size: int, style: str, classes=None) -> Path:
    """A small ingested-looking dataset: Parquet rows plus the dataset.json that ingest writes."""
    images, masks, labels = make_phantom_arrays(n, size, seed=hash(name) % 100, style=style)
    if classes:
        keep = [i for i, label in enumerate(labels) if label in classes]
        images, masks, labels = images[keep], masks[keep], [labels[i] for i in keep]
    splits = [("train", "val", "test")[i % 3] for i in range(len(labels))]
    out = write_parquet_dataset(tmp_path / name, images, masks, labels, f"{name}_scanner", splits)
    info = {"kind": "ingested", "image_size": size, "classes": sorted(set(labels)), "n_images": len(labels)}
    (out / S.DATASET_JSON).write_text(json.dumps(info))
    return out


def test_combine_tags_domains_and_keeps_every_split(tmp_path):
    a, b = ingested(tmp_path, "cairo", 12, 16, "a"), ingested(tmp_path, "spain", 9, 16, "b")
    info = combine(CombineConfig(inputs=[str(a), str(b)], out=str(tmp_path / "ab"), domains=["busi", "uclm"]))
    table = read_table(tmp_path / "ab")
    assert table.num_rows == 21 and info["domains"] == ["busi", "uclm"]
    for path, domain in ((a, "busi"), (b, "uclm")):
        source = read_table(path)
        rows = table.filter(np.array(table.column(S.DOMAIN).to_pylist()) == domain)
        assert rows.column(S.SPLIT).to_pylist() == source.column(S.SPLIT).to_pylist()
        assert rows.column(S.SHA256).to_pylist() == source.column(S.SHA256).to_pylist()
    assert sum(sum(c.values()) for c in info["counts_by_domain"]["uclm"].values()) == 9


def test_combine_refuses_other_sizes_and_class_sets_with_the_remedy(tmp_path):
    a = ingested(tmp_path, "a", 9, 16, "a")
    with pytest.raises(CombineError, match="image sizes differ.*--size"):
        combine(CombineConfig(inputs=[str(a), str(ingested(tmp_path, "b", 9, 24, "b"))], out=str(tmp_path / "o")))
    two_classes = ingested(tmp_path, "c", 12, 16, "b", classes={"benign", "malignant"})
    with pytest.raises(CombineError, match="class sets differ.*--union-classes"):
        combine(CombineConfig(inputs=[str(a), str(two_classes)], out=str(tmp_path / "o")))
    info = combine(CombineConfig(inputs=[str(a), str(two_classes)], out=str(tmp_path / "o"), union_classes=True))
    assert info["classes"] == ["benign", "malignant", "normal"]
    with pytest.raises(CombineError, match="one per input"):
        combine(CombineConfig(inputs=[str(a), str(two_classes)], out=str(tmp_path / "p"), domains=["x"]))


def test_combine_cli_takes_inputs_as_positional_words(tmp_path):
    a, b = ingested(tmp_path, "a", 6, 16, "a"), ingested(tmp_path, "b", 6, 16, "b")
    res = CliRunner().invoke(app, ["combine", str(a), str(b), "--out", str(tmp_path / "ab"), "--domains", "x,y"])
    assert res.exit_code == 0, res.output
    assert "x: " in res.output and "y: " in res.output
    again = CliRunner().invoke(app, ["combine", str(a), str(b), "--out", str(tmp_path / "ab")])
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_dataset_report_counts_per_domain_class_and_split(tmp_path):
    from busgen.data.report import dataset_report

    a, b = ingested(tmp_path, "a", 9, 16, "a"), ingested(tmp_path, "b", 9, 16, "b")
    combine(CombineConfig(inputs=[str(a), str(b)], out=str(tmp_path / "ab"), domains=["site_a", "site_b"]))
    text = dataset_report(tmp_path / "ab", tmp_path / "report").read_text()
    assert "Images per domain, class and split" in text and "| site_b | benign |" in text
