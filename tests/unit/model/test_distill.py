"""Few-step students (busgen.model.distill, busgen.train.distill): the targets, the student network, the folder.

Spec: a fresh guided student is the teacher's conditional branch and samples with one forward per
step; the progressive target is exact on an exact DDIM trajectory; a student folder records its
teacher, method, step count and guidance range, samples with its own step count by default, refuses
a sampler or guidance it was not trained for, and (like every model) is deterministic per seed and
independent of the batch it shares; the CLI, ``generate`` and Serve's request check use its steps.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from busgen.model import diffusion, distill, generator
from busgen.testing.models import export_untrained
from busgen.testing.training import distill_phantom
from busgen.train import distill as train_distill

SIZE = 16


@pytest.fixture(scope="module")
def folders(tmp_path_factory, torch_one_thread):
    """An untrained 16 px teacher and its students after a few iterations per phase (plumbing, not quality)."""
    root = tmp_path_factory.mktemp("distill")
    teacher = export_untrained(root / "teacher", size=SIZE)
    students = distill_phantom(
        teacher, root / "students", guided_iters=2, iters_per_halving=2, start_steps=4, batch_size=4
    )
    return teacher, {f.name: f for f in students}


def test_a_fresh_guided_student_is_the_teachers_conditional_branch_at_any_guidance(folders):
    teacher = generator.load(folders[0], device="cpu").model
    student = distill.GuidanceUNet.from_teacher(teacher, (1.0, 3.0))
    x, t = torch.randn(2, 1, SIZE, SIZE), torch.tensor([500, 20])
    cond = (torch.tensor([0, 1]), torch.tensor([0, 0]), torch.zeros(2, 1, SIZE, SIZE))
    with torch.no_grad():
        want = teacher(x, t, *cond)
        for w in (1.0, 2.5):
            assert torch.allclose(student(x, t, *cond, guidance=w), want, atol=1e-5)


def test_a_guided_student_samples_with_one_forward_per_step_the_teacher_with_two(folders):
    calls = {"teacher": [], "student": []}
    for name, folder in (("teacher", folders[0]), ("student", folders[1]["guided"])):
        gen = generator.load(folder, device="cpu")
        gen.model.register_forward_hook(lambda m, a, o, k=name: calls[k].append(a[0].shape[0]))
        gen.sample(["benign"] * 3, steps=4, guidance=2.0, seed=0)
    assert calls["teacher"] == [6] * 4 and calls["student"] == [3] * 4, calls


def test_the_progressive_target_of_an_exact_ddim_trajectory_is_its_true_v():
    cfg = diffusion.DiffusionConfig()
    ac = diffusion.make_noise_scheduler(cfg).alphas_cumprod
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(4, 1, 8, 8, generator=g) - 0.5, torch.randn(4, 1, 8, 8, generator=g)
    for t, t_next in ((999, 749), (499, 249), (249, -1)):
        ab = ac[t]
        ab_next = ac[t_next] if t_next >= 0 else torch.tensor(1.0)
        z, z_next = ab.sqrt() * x0 + (1 - ab).sqrt() * eps, ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
        v = distill.v_target(z, z_next, ab, ab_next)
        assert torch.allclose(v, ab.sqrt() * eps - (1 - ab).sqrt() * x0, atol=1e-3), t
        assert torch.allclose(distill.ddim_step(v, z, ab, ab_next, "v_prediction"), z_next, atol=1e-4), t


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_the_ddim_grid_is_the_one_diffusers_samples_with(steps):
    ts, ab_next = distill.ddim_grid(diffusion.DiffusionConfig(), steps)
    assert len(ts) == steps and int(ts[0]) == 999
    assert float(ab_next[-1]) == 1.0, "the last step lands on the data (alpha_bar 1)"
    assert (ab_next[:-1] < 1).all()


def test_the_phase_plan_halves_down_to_the_final_step_count():
    cfg = train_distill.DistillConfig(teacher="t", data_dir="d", out="o", start_steps=16, final_steps=1)
    assert [p.name for p in train_distill.phases(cfg)] == ["guided", "steps8", "steps4", "steps2", "steps1"]
    with pytest.raises(ValueError, match="power of two"):
        train_distill.DistillConfig(teacher="t", data_dir="d", out="o", start_steps=12, final_steps=1)
    with pytest.raises(ValueError, match="guidance_min"):
        train_distill.DistillConfig(teacher="t", data_dir="d", out="o", guidance_min=3, guidance_max=2)


def test_a_student_folder_records_teacher_method_steps_and_guidance_range(folders):
    teacher_dir, students = folders
    assert sorted(students) == ["guided", "steps1", "steps2"]
    meta = json.loads((students["steps2"] / "busgen.json").read_text())
    info = meta["student"]
    assert meta["kind"] == "student" and info["steps"] == 2 and info["guidance_range"] == [1.0, 3.0]
    assert info["teacher_model_id"] == generator.load(teacher_dir, device="cpu").model_id
    assert info["teacher"] == str(teacher_dir.resolve()) and "progressive" in info["method"]
    assert meta["diffusion"]["prediction_type"] == "v_prediction"
    guided = json.loads((students["guided"] / "busgen.json").read_text())
    assert guided["diffusion"]["prediction_type"] == "epsilon" and guided["student"]["steps"] is None


def test_a_step_student_samples_with_its_own_step_count_by_default(folders):
    gen = generator.load(folders[1]["steps2"], device="cpu")
    seen = []
    gen.model.register_forward_hook(lambda m, a, o: seen.append(1))
    gen.sample(["benign"], seed=0)
    assert gen.default_steps == 2 and len(seen) == 2
    assert generator.load(folders[1]["guided"], device="cpu").default_steps == generator.DEFAULT_STEPS


def test_a_student_refuses_another_sampler_and_a_guidance_outside_its_range(folders):
    gen = generator.load(folders[1]["steps2"], device="cpu")
    with pytest.raises(ValueError, match="error: this student was distilled for the ddim sampler.*sampler=ddim"):
        gen.sample(["benign"], sampler="dpmpp")
    with pytest.raises(ValueError, match="error: guidance 5.0 is outside the range"):
        gen.sample(["benign"], guidance=5.0)


@pytest.mark.parametrize("name", ["guided", "steps1"])
def test_students_are_deterministic_and_batch_invariant(folders, name):
    gen = generator.load(folders[1][name], device="cpu")
    labels = ["benign", "malignant", "normal", "benign"]
    steps = 3 if name == "guided" else None  # a step student uses its own count
    whole = gen.sample(labels, seed=7, batch_size=4, steps=steps)
    again = gen.sample(labels, seed=7, batch_size=4, steps=steps)
    alone = np.concatenate([gen.sample([lab], seeds=[7 + i], steps=steps) for i, lab in enumerate(labels)])
    assert np.array_equal(whole, again)
    assert np.abs(whole.astype(int) - alone.astype(int)).max() <= 1, "image i depends on its seed, not its batch"


def test_the_sample_command_and_serves_request_check_use_the_students_steps(folders, tmp_path):
    from busgen.commands.registry import command
    from busgen.serve.config import LimitArgs
    from busgen.serve.registry import read_generator_info
    from busgen.serve.schemas import GenerateRequest, validate_generate

    folder = folders[1]["steps2"]
    cmd = command("sample")
    out = cmd.run(cmd.config_class(model=str(folder), out=str(tmp_path / "grid.png"), per_class=2))
    assert (tmp_path / "grid.png").is_file(), out
    info = read_generator_info("student", str(folder))
    job = validate_generate(GenerateRequest(label="benign"), info, LimitArgs())
    assert info.default_steps == 2 and job["steps"] == 2
    teacher_info = read_generator_info("t", str(folders[0]))
    teacher_job = validate_generate(GenerateRequest(label="benign"), teacher_info, LimitArgs())
    assert teacher_job["steps"] == LimitArgs().default_steps


def test_a_students_card_gives_its_own_steps_so_the_playground_defaults_to_them(folders):
    from busgen.serve.registry import read_card_defaults

    _, students = folders
    step_student = next(f for name, f in students.items() if name.startswith("steps"))
    own = json.loads((step_student / "busgen.json").read_text())["sampling"]
    defaults = read_card_defaults(step_student)
    assert (defaults.steps, defaults.sampler) == (own["steps"], own["sampler"])


def test_a_student_folder_is_not_offered_as_a_diffusers_pipeline(folders):
    _, students = folders
    for folder in students.values():  # the pipeline class would run the guidance-input UNet as a teacher's
        assert not (folder / "model_index.json").exists() and not (folder / "pipeline.py").exists()
