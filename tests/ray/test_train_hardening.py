"""Training state loads only tensors and plain values, and a run never resumes another run's weights.

Checkpoints live in shared run storage: a crafted ``state.pt`` must be refused before any
of its code runs. The Ray Train refusal of a foreign resume is in ``test_train.py`` (it
reuses that file's fit); here the same check runs on its own, without a fit.
"""

from __future__ import annotations

import pytest

from busgen.train import pretrain as train
from busgen.train.checkpoint import ResumeMismatchError


@pytest.mark.slow
def test_worker_refuses_a_foreign_checkpoint_when_the_driver_cannot_look(ray_local, tmp_path, monkeypatch):
    """Remote storage: only the worker sees the checkpoint; its refusal reaches the caller as ResumeMismatchError."""
    from helpers.data import write_phantom_dataset

    data = write_phantom_dataset(tmp_path / "a", 16, size=32)
    cfg = train.PretrainConfig(
        data_dir=str(data),
        batch_size=8,
        max_steps=1,
        warmup_steps=1,
        storage_path=str(tmp_path / "runs"),
        run_name="shared",
        out=str(tmp_path / "model"),
    )
    assert train.pretrain(cfg).error is None
    monkeypatch.setattr(train, "check_local_run", lambda *a: None)  # as if storage were s3://
    other = write_phantom_dataset(tmp_path / "b", 16, size=32, styles=("b",))
    with pytest.raises(ResumeMismatchError, match=r"run 'shared' already has a checkpoint .*domain_names"):
        train.pretrain(cfg.model_copy(update={"data_dir": str(other), "max_steps": 2}))
