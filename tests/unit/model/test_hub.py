"""Models people can share: the model card in every model folder, the Hub-layout export, loading from the Hub cache.

No network: the "Hub cache" is a folder laid out as huggingface_hub lays out its cache
(``models--owner--name/refs/main`` + ``snapshots/<commit>/``), found through ``HF_HUB_CACHE``.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers.models import export_untrained_tiny

from busgen.commands.registry import COMMANDS
from busgen.model import card, generator, hub


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return export_untrained_tiny(tmp_path_factory.mktemp("m") / "model", domains=("siteA", "siteB"))


def test_every_exported_model_has_a_card_with_front_matter(model_dir):
    meta = generator.read_meta(model_dir)
    fm = card.read_front_matter(model_dir / card.CARD_FILE)
    assert fm["license"] == "other" and "breast-ultrasound" in fm["tags"]  # trained on nothing recorded
    info = fm["busgen"]
    assert info["classes"] == meta["class_names"] and info["domains"] == ["siteA", "siteB"]
    assert info["data_fingerprint"] == meta["data_fingerprint"] and info["train_steps"] == meta["train_steps"]
    assert info["model_id"] == meta["model_id"] and set(info["sampler_defaults"]) == {"sampler", "steps", "guidance"}
    text = (model_dir / card.CARD_FILE).read_text()
    assert "## Intended use" in text and "## Limits" in text and "Not a medical device" in text
    assert "Not evaluated yet" in text and "## Licence" in text


def test_evaluation_numbers_go_into_the_card_when_known(model_dir, tmp_path):
    meta = generator.read_meta(model_dir) | {"evaluation": {"fid": 12.25, "auc_real_only": 0.8, "suite": "ci"}}
    fm = card.read_front_matter(card.write_card(tmp_path, meta))
    assert fm["busgen"]["evaluation"] == {"fid": 12.25, "auc_real_only": 0.8, "suite": "ci"}
    assert "| fid | 12.25 |" in (tmp_path / card.CARD_FILE).read_text()


def _export(model_dir, out):
    op = COMMANDS["export-hub"]
    return op.run(op.config_class(model=str(model_dir), out=str(out)))


def test_export_hub_writes_a_loadable_repository_with_only_safetensors(model_dir, tmp_path):
    result = _export(model_dir, tmp_path / "repo")
    repo = tmp_path / "repo"
    assert result["out"] == str(repo)
    files = {p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()}
    assert {"README.md", ".gitattributes", "busgen.json", "box_prior.json", "scheduler/scheduler_config.json"} <= files
    weights = generator.read_meta(model_dir)["sampling_weights"]
    assert {f"{weights}/diffusion_pytorch_model.safetensors", f"{weights}/config.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]
    assert "safetensors filter=lfs" in (repo / ".gitattributes").read_text()
    a, b = generator.load(model_dir, device="cpu"), generator.load(repo, device="cpu")
    assert a.model_id == b.model_id
    np.testing.assert_array_equal(a.sample(["benign"], steps=2, seed=3), b.sample(["benign"], steps=2, seed=3))
    _export(model_dir, tmp_path / "repo")  # re-exporting into its own output is fine


def test_export_hub_refuses_adapters_and_foreign_folders(model_dir, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(hub.HubError, match="not a Hub export"):
        hub.export_hub(model_dir, other)
    adapter = tmp_path / "adapter"
    shutil.copytree(model_dir, adapter)
    meta = json.loads((adapter / "busgen.json").read_text())
    meta |= {"kind": "adapter", "adapter": {}, "base_model": "x", "base_model_rel": "x", "base_model_id": "y"}
    (adapter / "busgen.json").write_text(json.dumps(meta))
    with pytest.raises(hub.HubError, match="adapter"):
        hub.export_hub(adapter, tmp_path / "out")


def test_load_takes_a_repo_id_held_by_the_local_hub_cache(model_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hub-cache"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--busgen--tiny-phantom"
    _export(model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    gen = generator.load("busgen/tiny-phantom", device="cpu")
    assert gen.model_id == generator.read_meta(model_dir)["model_id"] and gen.domain_names == ["siteA", "siteB"]
    with pytest.raises(generator.ModelNotFoundError, match="not a BUSGen model directory"):
        generator.load("busgen/not-cached", device="cpu")
    monkeypatch.chdir(tmp_path)  # a local folder of the same name wins over the cache
    shutil.copytree(model_dir, tmp_path / "busgen" / "tiny-phantom")
    assert (
        generator.load("busgen/tiny-phantom", device="cpu").model_dir.resolve() == tmp_path / "busgen" / "tiny-phantom"
    )
