"""Training state loads only tensors and plain values, and a run never resumes another run's weights.

Checkpoints live in shared run storage: a crafted ``state.pt`` must be refused before any
of its code runs. The Ray Train refusal of a foreign resume is in ``test_train.py`` (it
reuses that file's fit); here the same check runs on its own, without a fit.
"""

from __future__ import annotations

import os
import re

import pytest
import torch
from helpers.paths import REPO_ROOT

from busgen.model import unet
from busgen.train import checkpoint
from busgen.train import pretrain as train
from busgen.train.checkpoint import CheckpointError, ResumeMismatchError

PLATFORM = REPO_ROOT / "platform"


class Exploit:
    """Pickles to ``os.system(command)``: what a crafted checkpoint carries."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def components(seed: int = 0):
    cfg = train.PretrainConfig(data_dir="unused", warmup_steps=1, max_steps=10)
    model, ema, opt, lr_sched = train.build_components(cfg, 3, 1, torch.device("cpu"))
    gen, np_rng = checkpoint.make_rngs(seed, 0)
    return model, ema, opt, lr_sched, gen, np_rng


def test_no_unrestricted_torch_load_anywhere_in_the_library():
    offenders = [
        f"{p.relative_to(PLATFORM)}:{i}"
        for p in PLATFORM.rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"weights_only\s*=\s*False", line)
    ]
    assert offenders == []


def test_saved_training_state_round_trips_with_weights_only(tmp_path):
    """Everything a checkpoint holds (optimizer, LR schedule, RNG streams incl. numpy's) loads under weights_only."""
    model, ema, opt, lr_sched, gen, np_rng = components()
    torch.randn(3, generator=gen)
    np_rng.random(5)
    checkpoint.save_checkpoint(tmp_path, 0, model, ema, opt, lr_sched, 7, gen, np_rng, {"identity": {}})
    model2, ema2, opt2, sched2, gen2, np_rng2 = components(seed=1)
    assert checkpoint.restore_checkpoint(tmp_path, 0, model2, ema2, opt2, sched2, gen2, np_rng2) == 7
    assert torch.equal(torch.randn(3, generator=gen), torch.randn(3, generator=gen2))
    assert np_rng.random() == np_rng2.random()
    assert checkpoint.weights_digest(model.state_dict()) == checkpoint.weights_digest(model2.state_dict())


@pytest.mark.parametrize("target", [checkpoint.STATE_FILE, checkpoint.RNG_FILE.format(rank=0)])
def test_crafted_pickle_in_a_checkpoint_is_refused_and_never_runs(tmp_path, target):
    model, ema, opt, lr_sched, gen, np_rng = components()
    checkpoint.save_checkpoint(tmp_path, 0, model, ema, opt, lr_sched, 1, gen, np_rng, {})
    marker = tmp_path / "pwned"
    torch.save({"model": Exploit(f"touch {marker}"), "step": 1}, tmp_path / target)
    with pytest.raises(CheckpointError, match=rf"{re.escape(target)}: refused to load.*GLOBAL posix.system.*run_name"):
        checkpoint.restore_checkpoint(tmp_path, 0, model, ema, opt, lr_sched, gen, np_rng)
    assert not marker.exists(), "the crafted pickle's command ran"


def test_export_refuses_a_crafted_final_state(tmp_path):
    from ray.train import Checkpoint

    marker = tmp_path / "pwned"
    (tmp_path / "ckpt").mkdir()
    torch.save({"ema": Exploit(f"touch {marker}")}, tmp_path / "ckpt" / checkpoint.STATE_FILE)

    class Result:  # the two fields of ray.train.Result that export reads
        checkpoint = Checkpoint.from_directory(str(tmp_path / "ckpt"))
        metrics: dict = {}

    cfg = train.PretrainConfig(data_dir="unused", out=str(tmp_path / "model"))
    with pytest.raises(CheckpointError, match="refused to load"):
        train.export_from_checkpoint(Result(), cfg, {"class_names": ["a"], "domain_names": ["d"]})
    with pytest.raises(CheckpointError, match="refused to load"):
        train.final_state(Result(), "r")
    assert not marker.exists() and not (tmp_path / "model").exists()


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    torch.save({"step": 1}, tmp_path / checkpoint.STATE_FILE)
    whole = (tmp_path / checkpoint.STATE_FILE).read_bytes()
    (tmp_path / checkpoint.STATE_FILE).write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match=r"state.pt: cannot be read as a checkpoint"):
        checkpoint.load_torch_file(tmp_path / checkpoint.STATE_FILE)


def identity(**changes) -> dict:
    cfg = train.PretrainConfig(data_dir="unused")
    return {**train.run_identity(cfg, ["benign", "malignant"], ["site_a"], "fp1"), **changes}


def test_identity_records_data_architecture_vocabularies_and_adapter():
    ident = identity()
    assert ident["data_fingerprint"] == "fp1" and ident["preset"] == "tiny"
    assert ident["image_size"] == unet.model_config_for("tiny").image_size
    assert ident["class_names"] == ["benign", "malignant"] and ident["adapter"] is None


def test_resume_check_names_the_run_every_difference_and_the_remedy(tmp_path):
    stored = {"identity": identity(adapter={"method": "lora", "lora_rank": 4})}
    checkpoint.check_identity(stored, identity(adapter={"method": "lora", "lora_rank": 4}), "pretrain", tmp_path)
    with pytest.raises(ResumeMismatchError) as err:
        checkpoint.check_identity(
            stored, identity(class_names=["a"], adapter={"method": "lora", "lora_rank": 8}), "pretrain", tmp_path
        )
    msg = str(err.value)
    assert msg.startswith(f"run 'pretrain' already has a checkpoint at {tmp_path}")
    assert "adapter: checkpoint {'method': 'lora', 'lora_rank': 4} != now {'method': 'lora', 'lora_rank': 8}" in msg
    assert "class_names: checkpoint ['benign', 'malignant'] != now ['a']" in msg
    assert "data_fingerprint" not in msg, "only what differs is listed"
    assert "pick another run_name (or storage_path)" in msg


def test_checkpoint_without_identity_is_not_resumed(tmp_path):
    with pytest.raises(ResumeMismatchError, match="records no run identity"):
        checkpoint.check_identity({"class_names": ["benign"]}, identity(), "pretrain", tmp_path)


def test_local_run_folder_is_checked_before_any_worker_starts(tmp_path):
    run_dir = tmp_path / "runs" / "pretrain"
    (run_dir / "checkpoint_2026").mkdir(parents=True)
    (run_dir / "checkpoint_2026" / checkpoint.META_FILE).write_text('{"identity": {"data_fingerprint": "old"}}')
    cfg = train.PretrainConfig(data_dir="unused", storage_path=str(tmp_path / "runs"))
    with pytest.raises(ResumeMismatchError, match="data_fingerprint: checkpoint 'old' != now 'fp1'"):
        train.check_resume(cfg, identity())
    train.check_resume(cfg.model_copy(update={"run_name": "fresh"}), identity())  # another name: no checkpoint


def test_worker_refusal_is_found_inside_ray_errors():
    inner = ResumeMismatchError("run 'x' already has a checkpoint")

    class WorkerGroupError(Exception):  # shape of ray.train.WorkerGroupError
        worker_failures = {0: RuntimeError("wrapped")}

    outer = WorkerGroupError()
    outer.worker_failures[0].cause = inner
    assert checkpoint.worker_mismatch(outer) == str(inner)
    assert checkpoint.worker_mismatch(RuntimeError("other")) is None
