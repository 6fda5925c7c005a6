"""The speed switches of training and sampling: what they do on CPU, and their guards where they need CUDA.

Spec: ``auto`` means bf16 + channels_last + compile on CUDA and plain fp32 on CPU; bad
combinations stop with an ``error:`` naming the remedy; bf16 sampling stays within 2 grey
levels of fp32 on fixed seeds at 25 steps (on a trained model: a random-weight model is
chaotic); a training step reads nothing back from the device and accumulates micro-batches.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from busgen.model import accel, diffusion, generator, unet
from busgen.train import checkpoint, step
from busgen.train.pretrain import PretrainConfig

CUDA = torch.cuda.is_available()
CLASSES = ("benign", "malignant", "normal")
SIZE = 16  # tiny preset at 16 px: a few seconds per hundred steps on one thread


def cfg(**kw) -> PretrainConfig:
    return PretrainConfig(data_dir="unused", image_size=SIZE, warmup_steps=1, max_steps=1000, **kw)


def phantom_batch(n: int = 8, seed: int = 0) -> tuple:
    from busgen.testing.training import phantom_training_batch

    return phantom_training_batch(n, SIZE, seed)


# ----------------------------------------------------------------------------- switches and guards


def test_auto_is_fp32_plain_on_cpu_and_bf16_channels_last_compiled_on_cuda():
    cpu = accel.resolve(None, "cpu")
    assert (cpu.dtype, cpu.channels_last, cpu.compile, cpu.cuda_graphs) == (torch.float32, False, False, False)
    gpu = accel.resolve(accel.AccelConfig(), torch.device("cuda"))  # resolving needs no GPU
    assert (gpu.dtype, gpu.channels_last, gpu.compile) == (torch.bfloat16, True, True)
    assert "compile=on" in gpu.describe() and "bf16" in gpu.describe()
    forced = accel.resolve(accel.AccelConfig(precision="bf16", channels_last="on", compile="off"), "cpu")
    assert (forced.dtype, forced.channels_last, forced.compile) == (torch.bfloat16, True, False)


@pytest.mark.parametrize(
    "fields, device, match",
    [
        ({"precision": "fp16"}, "cpu", "fp16 needs a CUDA device"),
        ({"cuda_graphs": True}, "cpu", "cuda_graphs needs a CUDA device"),
        ({"cuda_graphs": True, "compile": "off"}, "cuda", "set compile=on"),
    ],
)
def test_switches_that_cannot_run_are_refused_with_the_remedy(fields, device, match):
    with pytest.raises(accel.AccelError, match=match) as exc:
        accel.resolve(accel.AccelConfig(**fields), torch.device(device))
    assert str(exc.value).startswith("error:")


def test_training_refuses_fp16_and_cuda_graphs():
    with pytest.raises(accel.AccelError, match="use precision=bf16"):
        step.resolve_training(cfg(accel=accel.AccelConfig(precision="fp16")), torch.device("cuda"))
    with pytest.raises(accel.AccelError, match="sampling switch"):
        step.resolve_training(cfg(accel=accel.AccelConfig(cuda_graphs=True)), torch.device("cuda"))
    assert step.use_fused_adamw(cfg(), torch.device("cuda")) and not step.use_fused_adamw(cfg(), torch.device("cpu"))


def test_pretrain_config_takes_switches_from_yaml_style_dicts():
    c = PretrainConfig(data_dir="d", accel={"precision": "bf16", "compile": "off"}, grad_accum_steps=4)
    assert c.accel.precision == "bf16" and c.grad_accum_steps == 4
    with pytest.raises(ValueError):
        PretrainConfig(data_dir="d", accel={"precision": "fp8"})


# ----------------------------------------------------------------------------- training step


def test_ema_foreach_update_equals_the_per_tensor_formula():
    model = unet.build_model(unet.model_config_for("tiny", SIZE), 3, 1)
    ema = checkpoint.EMA(model, decay=0.9)
    before = {k: v.clone() for k, v in ema.shadow.items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    d = min(0.9, 2 / 11)
    for k, v in model.state_dict().items():
        expected = before[k] + (1 - d) * (v - before[k]) if v.dtype.is_floating_point else v
        torch.testing.assert_close(ema.shadow[k], expected)


def test_step_returns_a_device_tensor_and_reads_nothing_back(torch_one_thread):
    c = cfg()
    model, ema, opt, sched = step.build_components(c, 3, 1, torch.device("cpu"))
    gen, _ = checkpoint.make_rngs(0, 0, "cpu")
    ns = diffusion.make_noise_scheduler(diffusion.DiffusionConfig())
    batch, _, _ = phantom_batch()
    loss = step.train_step(model, model, ns, opt, sched, ema, batch, c, gen, torch.device("cpu"))
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0 and not loss.requires_grad
    assert torch.isfinite(loss)


@pytest.mark.skipif(not CUDA, reason="CUDA only: host-sync detection needs a CUDA stream")
def test_cuda_step_has_no_host_sync():  # pragma: no cover, GPU-only
    dev = torch.device("cuda")
    c = cfg(accel=accel.AccelConfig(compile="off"))
    model, ema, opt, sched = step.build_components(c, 3, 1, dev)
    gen, _ = checkpoint.make_rngs(0, 0, dev)
    ns = diffusion.make_noise_scheduler(diffusion.DiffusionConfig())
    batch = tuple(t.to(dev) for t in phantom_batch()[0])
    step.train_step(model, model, ns, opt, sched, ema, batch, c, gen, dev)  # warm-up: lazy inits may sync
    torch.cuda.set_sync_debug_mode("error")
    try:
        step.train_step(model, model, ns, opt, sched, ema, batch, c, gen, dev)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_gradient_accumulation_averages_the_micro_batch_gradients(torch_one_thread):
    c = cfg(grad_clip=1e9, cond_drop_prob=0.0)
    dev = torch.device("cpu")
    model, ema, _, sched = step.build_components(c, 3, 1, dev)
    reference = copy.deepcopy(model)
    ns = diffusion.make_noise_scheduler(diffusion.DiffusionConfig())
    (b1, _, _), (b2, _, _) = phantom_batch(4, seed=1), phantom_batch(4, seed=2)
    gen, _ = checkpoint.make_rngs(0, 0)
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)
    step.train_step(model, model, ns, sgd, torch.optim.lr_scheduler.LambdaLR(sgd, lambda _: 1.0), ema, [b1, b2], c,
                    gen, dev)  # fmt: skip
    gen, _ = checkpoint.make_rngs(0, 0)  # the same draws, in the same order, by hand
    grads = []
    for x, y, d, box in (b1, b2):
        y, d, box = unet.drop_conditions(y, d, box, 0.0, reference.null_label, reference.null_domain, gen)
        reference.zero_grad()
        diffusion.diffusion_loss(reference, ns, x, y, d, box, generator=gen).backward()
        grads.append([p.grad.clone() for p in reference.parameters()])
    for p_new, p_old, g1, g2 in zip(model.parameters(), reference.parameters(), *grads):
        torch.testing.assert_close(p_new, p_old - (g1 + g2) / 2, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("fields", [{"precision": "bf16"}, {"channels_last": "on"}])
def test_bf16_autocast_and_channels_last_train_on_cpu(torch_one_thread, fields):
    c = cfg(accel=accel.AccelConfig(**fields))
    dev = torch.device("cpu")
    model, ema, opt, sched = step.build_components(c, 3, 1, dev)
    if fields.get("channels_last") == "on":
        conv = model.unet.conv_in.weight
        assert conv.is_contiguous(memory_format=torch.channels_last)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    gen, _ = checkpoint.make_rngs(0, 0)
    ns = diffusion.make_noise_scheduler(diffusion.DiffusionConfig())
    losses = [float(step.train_step(model, model, ns, opt, sched, ema, phantom_batch()[0], c, gen, dev)) for _ in "ab"]
    assert all(np.isfinite(losses))


# ----------------------------------------------------------------------------- sampling


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    """A tiny 16 px model trained for 120 steps with the project's own step (EMA weights exported)."""
    from busgen.testing.training import train_phantom_model

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_phantom_model(tmp_path_factory.mktemp("trained") / "m", size=SIZE, steps=120)
    finally:
        torch.set_num_threads(n)


def test_bf16_channels_last_sampler_matches_fp32_within_two_grey_levels(trained_dir, torch_one_thread):
    labels = list(CLASSES) * 3
    fp32 = generator.load(trained_dir, device="cpu").sample(labels, steps=25, seed=7)
    fast_cfg = accel.AccelConfig(precision="bf16", channels_last="on", compile="off")
    fast = generator.load(trained_dir, device="cpu", optimize=fast_cfg)
    assert next(fast.model.parameters()).dtype == torch.bfloat16
    out = fast.sample(labels, steps=25, seed=7)
    assert out.dtype == np.uint8 and out.shape == fp32.shape
    assert np.abs(out.astype(np.float64) - fp32).mean() < 2.0
    # per-image determinism survives bf16: image i depends on its seed, not on its batch mates
    alone = fast.sample(labels[:1], steps=25, seeds=[7])
    assert np.abs(alone[0].astype(np.float64) - out[0]).mean() < 2.0


def test_bf16_sampler_moves_fid_by_at_most_two_percent(trained_dir, torch_one_thread):
    """The distribution-level guard: same seeds, FID against held-out real images within +-2 %."""
    from busgen.data.phantom import make_phantom_arrays
    from busgen.studies.precision import FID_DRIFT_LIMIT, precision_drift

    real, _, _ = make_phantom_arrays(96, SIZE, seed=11)  # images the model never saw (training used seed 0)
    fast = generator.load(trained_dir, device="cpu", optimize=accel.AccelConfig(precision="bf16", channels_last="on"))
    drift = precision_drift(
        generator.load(trained_dir, device="cpu"), fast, real, list(CLASSES) * 16, steps=25, encoder_epochs=5
    )
    assert drift.n == 48 and drift.fid_reference > 0
    assert drift.mean_abs_grey < 2.0
    assert abs(drift.relative_change) <= FID_DRIFT_LIMIT, drift.line()
    assert drift.within_limit


def test_optimize_is_idempotent_and_refuses_a_second_different_setting(trained_dir):
    gen = generator.load(trained_dir, device="cpu")
    assert gen.optimize() is gen and gen.accel == accel.resolve(None, "cpu")
    assert gen.optimize() is gen
    with pytest.raises(accel.AccelError, match="load it again"):
        gen.optimize(accel.AccelConfig(precision="bf16"))
    assert next(gen.model.parameters()).dtype == torch.float32  # auto on CPU: unchanged


def test_fp32_batch_size_changes_rounding_only(trained_dir):
    """The fp32 latent loop: image i is the same alone or in a batch, up to one grey level of rounding."""
    gen = generator.load(trained_dir, device="cpu")
    a = gen.sample(["benign", "normal"], steps=5, seed=1)
    b = gen.sample(["benign", "normal"], steps=5, seed=1, batch_size=1)
    assert np.abs(a.astype(int) - b).max() <= 1


def test_gpu_generation_helpers_are_no_ops_on_cpu(trained_dir):
    from busgen.generate.writer import micro_batch

    gen = generator.load(trained_dir, device="cpu")
    assert micro_batch(gen, requested=32, shard_rows=1000) == 32
