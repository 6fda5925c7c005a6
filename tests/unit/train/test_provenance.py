"""Adapted generators record what they saw (base data + support set), and every privacy check uses the union.

No Ray: the exports are fed the state a Ray Train adaptation would hand them (as in test_adapter_peft.py).
The base model is an untrained export whose busgen.json is given the fingerprint of a real phantom train
split, so the real-data checks have something to match.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.data import write_parquet_dataset
from helpers.models import export_untrained_tiny

from busgen.data.dataset import DatasetError, read_table
from busgen.data.imageio import encode_png
from busgen.data.phantom import make_phantom_arrays
from busgen.measure.arrays import read_splits
from busgen.model import generator, lora
from busgen.train import adapt, provenance
from busgen.train.pretrain import read_train_metadata

SIZE = 32


@pytest.fixture(scope="module")
def world(tmp_path_factory, torch_one_thread):
    """A base model trained (by its record) on base_data, a LoRA adapter and a full fine-tune on 2 shots of task."""
    root = tmp_path_factory.mktemp("provenance")
    images, masks, labels = make_phantom_arrays(24, SIZE, seed=3)
    base_data = write_parquet_dataset(
        root / "base_data", images, masks, labels, "phantom", ["train"] * 16 + ["val"] * 8
    )
    base = export_untrained_tiny(root / "base", seed=0, size=SIZE)
    meta = json.loads((base / "busgen.json").read_text())
    meta["data_fingerprint"] = read_train_metadata(base_data)["fingerprint"]
    (base / "busgen.json").write_text(json.dumps(meta))
    t_images, t_masks, t_labels = make_phantom_arrays(16, SIZE, seed=5, style="b")
    task = write_parquet_dataset(
        root / "task", t_images, t_masks, ["lesion" if x != "normal" else "clear" for x in t_labels]
    )
    models = {method: adapted(root, base, task, method) for method in ("lora", "full")}
    return {"root": root, "base": base, "base_data": base_data, "task": task, **models}


def adapted(root, base, task, method: str):
    cfg = adapt.AdaptConfig(base=str(base), data_dir=str(task), out=str(root / method), shots=2, method=method)
    support = adapt.select_support(task, cfg.shots, None, seed=0)
    spec = lora.AdapterSpec(
        base=str(base.resolve()),
        method=method,
        class_names=["clear", "lesion"],
        domain_names=sorted(set(support.column("domain").to_pylist())),
    )
    state = {"ema": {"shadow": generator.build_adapted_model(spec).state_dict()}, "step": 1}
    (root / method).mkdir()
    return adapt.export_adapted(state, cfg, generator.read_meta(base), spec, support)


def synthetic_set(root, model, rows: np.ndarray, name: str):
    """A set 'written by' ``model``: the manifest names it; rows are the images given."""
    out = root / name
    out.mkdir()
    table = pa.table(
        {"image": [encode_png(i) for i in rows], "label": ["lesion"] * len(rows), "index": np.arange(len(rows))}
    )
    pq.write_table(table, out / "part-0.parquet")
    (out / "manifest.json").write_text(json.dumps({"model": str(model)}))
    return out


@pytest.mark.parametrize("method", ["lora", "full"])
def test_an_adapted_export_records_base_and_support_fingerprints_and_row_ids(world, method):
    meta = generator.read_meta(world[method])
    support_sha = sorted(read_table(world[method] / "support", ["sha256"]).column("sha256").to_pylist())
    assert meta["kind"] == ("adapter" if method == "lora" else "full")
    assert meta["base_data_fingerprint"] == read_train_metadata(world["base_data"])["fingerprint"]
    assert meta["support_fingerprint"] == read_train_metadata(world[method] / "support")["fingerprint"]
    assert meta["support_sha256"] == support_sha and len(support_sha) == 4
    assert meta["support_fingerprint"] != meta["base_data_fingerprint"]
    td = provenance.training_data(world[method])
    assert td.adapted and td.base_fingerprint == meta["base_data_fingerprint"] and td.support_sha256 == support_sha
    assert generator.weights_fingerprint(world[method]) == meta["model_id"], "the record does not touch the weights"


def test_an_old_adapter_without_the_record_is_read_through_its_base_and_support_json(world, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(world["lora"], old)
    meta = json.loads((old / "busgen.json").read_text())
    for key in ("base_data_fingerprint", "support_fingerprint", "support_sha256"):
        meta.pop(key)
    meta["base_model_rel"] = str(world["base"].resolve())  # absolute: the copy moved
    (old / "busgen.json").write_text(json.dumps(meta))
    td = provenance.training_data(old)
    new = provenance.training_data(world["lora"])
    assert (td.base_fingerprint, td.support_fingerprint, td.support_sha256) == (
        new.base_fingerprint,
        new.support_fingerprint,
        new.support_sha256,
    )
    (old / "support" / "support.parquet").unlink()
    pq.write_table(read_table(world["task"]).slice(0, 1), old / "support" / "support.parquet")
    with pytest.raises(provenance.ProvenanceError, match="no longer holds the support images"):
        provenance.training_data(old)


def test_an_adapters_share_filter_accepts_base_data_and_audits_the_support_images(world):
    from busgen.eval.share import share_filter_dir

    root, model = world["root"], world["lora"]
    support = read_splits(model / "support", None, None)[0]
    fresh = make_phantom_arrays(4, SIZE, seed=99, style="b")[0]
    syn = synthetic_set(root, model, np.concatenate([support[:2], fresh]), "syn-lora")  # rows 0-1: support copies
    record = share_filter_dir(syn, world["base_data"], root / "shared", encoder_epochs=1)
    assert record["real_check"] == "matched (base data + support set)"
    assert record["members"] == {"images": 16 + 4, "support_added": 4, "rule": "--real + the support set"}
    assert record["generator"]["support_images"] == 4 and record["generator"]["base_data_fingerprint"]
    assert {0, 1} <= set(record["removed_ids"]), "a copy of a support image is not shared"
    with pytest.raises(DatasetError, match="its support set is added from the model folder"):
        share_filter_dir(syn, world["task"], root / "refused", encoder_epochs=1)  # the task data is not the base's
    assert not (root / "refused").exists()
    override = share_filter_dir(syn, world["base_data"], root / "override", encoder_epochs=1, check_real=False)
    assert override["real_check"] == "overridden (--no-check-real)" and override["members"]["support_added"] == 0


def test_a_full_fine_tunes_share_filter_check_demands_the_base_data_and_adds_its_support(world):
    from busgen.eval.share import check_real_is_training_set, members_of

    syn = synthetic_set(world["root"], world["full"], make_phantom_arrays(2, SIZE, seed=98)[0], "syn-full")
    assert check_real_is_training_set(syn, world["base_data"], "train") == "matched (base data + support set)"
    images, record = members_of(syn, world["base_data"], "train", check_real=True)
    assert len(images) == 20 and record["support_added"] == 4


def test_the_suite_audit_members_include_the_support_images_once(world):
    from busgen.eval.parts import members_seen

    base = read_splits(world["base_data"], ["train"], None)
    union = members_seen(str(world["lora"]), base)
    support = read_splits(world["lora"] / "support", None, None)
    assert len(union[0]) == 20 and np.array_equal(union[0][16:], support[0]) and union[1][16:] == support[1]
    again = members_seen(str(world["lora"]), union)  # a K-shot real arm already holding the support rows
    assert len(again[0]) == 20, "no duplicates: they would distort the k-NN ratios"
    assert members_seen(str(world["base"]), base)[0] is base[0], "a pretrained model adds nothing"


def test_busgen_protect_covers_base_data_and_support_set(world):
    from busgen.train.protect import ProtectConfig, train_protect

    fast = {"width": 8, "max_epochs": 1, "samples_per_epoch": 8, "batch_size": 8, "torch_threads": 1}
    model = str(world["lora"])
    meta = train_protect(ProtectConfig(model=model, data_dir=str(world["base_data"]), **fast), log=lambda *_: None)
    assert meta["n_images"] == 20 and meta["data_check"] == "matched (base data + support set)"
    assert (
        meta["support"]["support_added"] == 4 and meta["data_fingerprint"] == meta["support"]["base_data_fingerprint"]
    )
    with pytest.raises(ValueError, match="pass --data-dir with the dataset its base model was pretrained on"):
        train_protect(ProtectConfig(model=model, **fast), log=lambda *_: None)
    with pytest.raises(ValueError, match="not the training data"):
        train_protect(ProtectConfig(model=model, data_dir=str(world["task"]), **fast), log=lambda *_: None)
    alone = train_protect(ProtectConfig(model=model, check_data=False, **fast), log=lambda *_: None)
    assert alone["n_images"] == 4 and alone["data_check"] == "overridden: support only"
    exact = train_protect(
        ProtectConfig(model=model, data_dir=str(world["task"]), check_data=False, **fast), log=lambda *_: None
    )
    assert exact["n_images"] == 16 and exact["data_check"] == "overridden (check_data=false): exactly data_dir"
