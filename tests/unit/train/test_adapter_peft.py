"""Adapter folders are peft adapters: peft's own loaders read them, and generator.load rebuilds the same model.

No Ray here: the export is fed the state a Ray Train adaptation would hand it (EMA shadow + step), with
non-zero LoRA weights so a loading mistake would change the samples.
"""

import json

import numpy as np
import pytest
import torch
from helpers.data import write_parquet_dataset
from helpers.models import export_untrained_tiny
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
from safetensors.torch import load_file

from busgen.data.phantom import make_phantom_arrays
from busgen.model import generator, lora
from busgen.train import adapt


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("peft")
    base = export_untrained_tiny(root / "base", seed=0)
    images, masks, labels = make_phantom_arrays(16, 32, seed=5, style="b")
    data = write_parquet_dataset(root / "task", images, masks, ["lesion" if x != "normal" else "clear" for x in labels])
    cfg = adapt.AdaptConfig(base=str(base), data_dir=str(data), out=str(root / "adapted"), shots=2, lora_rank=2)
    support = adapt.select_support(data, cfg.shots, None, seed=0)
    spec = lora.AdapterSpec(
        base=str(base.resolve()),
        lora_rank=2,
        lora_alpha=4.0,
        class_names=["clear", "lesion"],
        domain_names=sorted(set(support.column("domain").to_pylist())),
    )
    trained = generator.build_adapted_model(spec)
    torch.manual_seed(1)
    for p in trained.parameters():
        if p.requires_grad:  # what adaptation trains: LoRA (B starts at zero, so perturb) and the embeddings
            p.data.add_(0.05 * torch.randn_like(p))
    state = {"ema": {"shadow": trained.state_dict()}, "step": 4}
    (root / "adapted").mkdir()
    out = adapt.export_adapted(state, cfg, generator.read_meta(base), spec, support)
    return out, trained, spec


def test_adapter_folder_holds_peft_files_and_our_metadata_beside_them(exported):
    out, _, spec = exported
    for name in ("adapter_config.json", "adapter_model.safetensors", "conditions.safetensors", "busgen.json"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "busgen.json").read_text())
    assert meta["kind"] == "adapter" and meta["base_model"] == spec.base and meta["support_record"] == "support.json"
    assert meta["adapter"]["lora_rank"] == 2


def test_peft_loaders_read_the_config_and_weights_and_they_equal_ours(exported):
    out, trained, spec = exported
    config = LoraConfig.from_pretrained(str(out))
    assert (config.r, config.lora_alpha, set(config.target_modules)) == (2, 4.0, set(spec.lora_targets))
    assert config.base_model_name_or_path == spec.base
    fresh = generator.load(spec.base, device="cpu").model.unet
    inject_adapter_in_model(config, fresh)
    result = set_peft_model_state_dict(fresh, load_file(str(out / "adapter_model.safetensors")))
    assert not [k for k in result.missing_keys if "lora_" in k] and not result.unexpected_keys
    ours = {n: p for n, p in trained.unet.named_parameters() if "lora_" in n}
    theirs = dict(fresh.named_parameters())
    assert len(ours) == 32
    for name, value in ours.items():
        assert torch.equal(theirs[name], value), name


def test_generator_load_samples_as_the_model_before_saving(exported):
    out, trained, _ = exported
    loaded = generator.load(out, device="cpu")
    before = generator.Generator(
        trained, loaded.diffusion_cfg, loaded.class_names, loaded.domain_names, loaded.box_prior, "mem"
    )
    kwargs = {"domains": loaded.domain_names[0], "steps": 2, "seed": 3}
    np.testing.assert_array_equal(
        loaded.sample(["lesion", "clear"], **kwargs), before.sample(["lesion", "clear"], **kwargs)
    )


def test_adapter_from_an_older_version_is_a_clear_error(exported, tmp_path):
    out, _, _ = exported
    old = tmp_path / "old"
    old.mkdir()
    for name in ("busgen.json", "box_prior.json"):
        (old / name).write_bytes((out / name).read_bytes())
    (old / "adapter.safetensors").write_bytes(b"")
    with pytest.raises(generator.AdapterError, match="lacks adapter_config.json.*re-run `busgen adapt`"):
        generator.load(old, device="cpu")
