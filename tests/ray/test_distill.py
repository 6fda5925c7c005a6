"""``busgen distill`` on Ray Train: student folders out, a resume that redoes nothing, a foreign resume refused.

One Ray Train fit per run (~25 s fixed overhead each), so the whole module is slow.
"""

from __future__ import annotations

import json

import pytest
from helpers.data import write_phantom_dataset

from busgen.commands.registry import command
from busgen.model import generator
from busgen.testing.models import export_untrained
from busgen.train import checkpoint
from busgen.train.distill import DistillConfig


@pytest.mark.slow  # two Ray Train fits (about 60 s)
def test_distill_writes_students_resumes_and_refuses_a_foreign_run(ray_local, tmp_path):
    data = write_phantom_dataset(tmp_path / "data", 16, size=16)
    teacher = export_untrained(tmp_path / "teacher", size=16, domains=("phantom_a",))
    cmd = command("distill")
    cfg = cmd.config_class(
        teacher=str(teacher), data_dir=str(data), out=str(tmp_path / "students"), start_steps=2,
        guided_iters=3, iters_per_halving=3, batch_size=4, checkpoint_every=2, log_every=1,
        storage_path=str(tmp_path / "runs"), run_name="d1", tracking=False,
    )  # fmt: skip
    result = cmd.run(cfg)
    names = sorted(p.parent.name for p in (tmp_path / "students").glob("*/busgen.json"))
    assert names == ["guided", "steps1"], result
    student = generator.load(tmp_path / "students" / "steps1", device="cpu")
    assert student.default_steps == 1 and student.sample(["benign"], seed=0).shape == (1, 16, 16)
    before = json.loads((tmp_path / "students" / "steps1" / "busgen.json").read_text())["model_id"]

    again = cmd.run(cfg)  # same run name: resumes at the last checkpoint (the end) and re-exports the same weights
    assert json.loads((tmp_path / "students" / "steps1" / "busgen.json").read_text())["model_id"] == before, again

    with pytest.raises(checkpoint.ResumeMismatchError, match="guidance"):
        cmd.run(cfg.model_copy(update={"guidance_max": 2.0}))


def test_distill_refuses_a_student_or_adapter_as_teacher(tmp_path):
    from busgen.train.distill import DistillError, distill

    folder = export_untrained(tmp_path / "t", size=16)
    meta = json.loads((folder / "busgen.json").read_text())
    (folder / "busgen.json").write_text(json.dumps(meta | {"kind": "student"}))
    with pytest.raises(DistillError, match="error: .* is a student folder: distil a full model"):
        distill(DistillConfig(teacher=str(folder), data_dir=str(tmp_path), out=str(tmp_path / "o")))
