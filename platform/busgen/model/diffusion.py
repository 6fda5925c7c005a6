"""Noise schedules, the training objective and the classifier-free-guided sampling loop.

The stepping math is diffusers' schedulers; this module only chooses and wires them:
``DDPMScheduler`` adds training noise, and sampling uses ``ddpm`` (stochastic),
``ddim`` (deterministic, eta=0), ``dpmpp`` (DPM-Solver++ multistep, good at 10-25 steps) or ``unipc``
(UniPC multistep: a predictor-corrector on the same x0 prediction, Zhao et al. 2023).

Reproducibility contract: ``sample`` takes one seed per image and draws the initial
noise and any per-step noise of image i from ``torch.Generator().manual_seed(seeds[i])``
only, so image i does not depend on which other images share its batch.
"""

from __future__ import annotations

import inspect
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from pydantic import BaseModel, ConfigDict, Field

from busgen.core.types import DEFAULT_GUIDANCE, SAMPLERS


class DiffusionConfig(BaseModel):
    """Forward-process settings shared by training and every sampler (saved with the model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_train_timesteps: int = 1000
    beta_schedule: str = Field(
        "squaredcos_cap_v2", description="cosine schedule: better than linear at small image sizes"
    )
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    # pixels live in [-1, 1]; a latent generator's scaled latents do not, so clipping x0 there would distort them
    clip_sample: bool = Field(True, description="clip x0 predictions to [-1, 1] (false for latent generators)")


# DPM-Solver++ steps on the x0 prediction (x - sigma * eps) / alpha and carries x itself from step to
# step (DDIM carries the model's eps instead). At the cosine schedule's last timestep alpha_bar ~ 2e-9
# (lambda = log(alpha / sigma) ~ -9.9), so the first x0 prediction is the noise-prediction error times
# 2e4: static clipping to [-1, 1] turned it into a random +-1 pattern that the solver kept in its
# latent for the whole trajectory (images too contrasty, FID 6-8x DDIM's at 20 steps). The start is now
# the last timestep with lambda >= -2 (x0 error <= e^2 = 7.4x the eps error; t = 912 of 1000, where the
# signal is 13% of the latent), and x0 is thresholded dynamically (it is rescaled, not clipped, when it
# overshoots). docs/evaluation.md "Samplers" has the numbers.
DPMPP_LAMBDA_MIN = -2.0
DPMPP_THRESHOLD_MAX = 1.5


class ClippedStartDPMSolverPP(DPMSolverMultistepScheduler):
    """DPM-Solver++ whose ``n`` trailing timesteps span [0, t_max]; t_max: the last with lambda >= lambda_min_clipped.

    diffusers' own trailing spacing keeps the 1000 / n stride from t_max down and so drops steps
    (20 asked, 19 run at lambda_min_clipped=-2); here ``n`` steps are ``n`` model evaluations.
    """

    def set_timesteps(self, num_inference_steps: int | None = None, device=None, **kwargs) -> None:
        if num_inference_steps is None or kwargs:
            return super().set_timesteps(num_inference_steps, device, **kwargs)
        timesteps = clipped_trailing_timesteps(self.lambda_t, self.config.lambda_min_clipped, num_inference_steps)
        return super().set_timesteps(timesteps=timesteps.tolist(), device=device)


def clipped_trailing_timesteps(lambda_t: torch.Tensor, lambda_min: float, n: int) -> np.ndarray:
    """``n`` trailing timesteps over [0, t_max], t_max the last timestep with log-SNR >= ``lambda_min`` (descending)."""
    t_max = int((lambda_t >= lambda_min).nonzero().max())
    return np.unique(np.round(np.arange(n, 0, -1) * (t_max + 1) / n).astype(np.int64) - 1)[::-1].copy()


class ClippedStartUniPC(UniPCMultistepScheduler):
    """UniPC (2M, bh2, predicting x0) over the same clipped trailing grid as ``ClippedStartDPMSolverPP``.

    UniPC too steps on the x0 prediction and carries x, so the t = 999 start has the same failure;
    its ``set_timesteps`` takes no custom timesteps, so the grid is replaced after the parent's reset.
    """

    def set_timesteps(self, num_inference_steps: int | None = None, device=None, **kwargs) -> None:
        super().set_timesteps(num_inference_steps, device, **kwargs)
        alphas = self.alphas_cumprod
        lambda_t = 0.5 * (torch.log(alphas) - torch.log(1 - alphas))
        timesteps = clipped_trailing_timesteps(lambda_t, DPMPP_LAMBDA_MIN, self.num_inference_steps)
        sigmas = np.interp(timesteps, np.arange(len(alphas)), ((1 - alphas) / alphas).sqrt().numpy())
        self.sigmas = torch.from_numpy(np.concatenate([sigmas, [0.0]]).astype(np.float32))
        self.timesteps = torch.from_numpy(timesteps).to(device=device, dtype=torch.int64)
        self.num_inference_steps = len(timesteps)


def make_noise_scheduler(cfg: DiffusionConfig) -> DDPMScheduler:
    """The training-time scheduler (``add_noise``, ``get_velocity``)."""
    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
        clip_sample=cfg.clip_sample,  # images live in [-1, 1]; latents do not
    )


def make_sampler(cfg: DiffusionConfig, name: str) -> SchedulerMixin:
    """Sampling scheduler ``name`` over the same beta schedule as training.

    ``trailing`` spacing starts at the last training timestep, which matters at few steps
    (``leading`` would start sampling from a not-quite-pure-noise level); DPM-Solver++ starts at lambda = -2
    instead (see ``ClippedStartDPMSolverPP``).
    """
    base = make_noise_scheduler(cfg).config
    if name == "ddpm":
        return DDPMScheduler.from_config(base, timestep_spacing="trailing")
    if name == "ddim":
        return DDIMScheduler.from_config(base, timestep_spacing="trailing", set_alpha_to_one=True)
    if name == "dpmpp":
        return ClippedStartDPMSolverPP.from_config(
            base,
            algorithm_type="dpmsolver++",
            solver_order=2,
            timestep_spacing="trailing",
            lambda_min_clipped=DPMPP_LAMBDA_MIN,
            thresholding=cfg.clip_sample,  # dynamic (Imagen): rescale an overshooting x0 by its 99.5th |pixel|, <= 1.5
            dynamic_thresholding_ratio=0.995,
            sample_max_value=DPMPP_THRESHOLD_MAX,
        )
    if name == "unipc":
        return ClippedStartUniPC.from_config(
            base,
            solver_order=2,
            timestep_spacing="trailing",
            thresholding=True,  # the same dynamic thresholding as DPM-Solver++
            dynamic_thresholding_ratio=0.995,
            sample_max_value=DPMPP_THRESHOLD_MAX,
        )
    raise ValueError(f"unknown sampler {name!r}; choose one of {list(SAMPLERS)}")


def diffusion_loss(
    model: torch.nn.Module,
    noise_scheduler: DDPMScheduler,
    x0: torch.Tensor,
    labels: torch.Tensor,
    domains: torch.Tensor,
    box_mask: torch.Tensor,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    timesteps: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean-squared error of the model's epsilon (or v) prediction at random timesteps.

    ``noise``/``timesteps`` may be fixed by the caller (overfit tests); otherwise they are
    drawn from ``generator`` on the generator's own device (a CUDA generator draws on the GPU:
    no host work, no copy per step) and moved to ``x0``'s device.
    """
    b = x0.shape[0]
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=gen_device).to(x0.device)
    if timesteps is None:
        timesteps = torch.randint(
            0, noise_scheduler.config.num_train_timesteps, (b,), generator=generator, device=gen_device
        )
    timesteps = timesteps.to(x0.device)
    noisy = noise_scheduler.add_noise(x0, noise, timesteps)
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(x0, noise, timesteps)
    else:
        target = noise
    pred = model(noisy, timesteps, labels, domains, box_mask)
    return torch.nn.functional.mse_loss(pred.float(), target.float())


def initial_noise(seeds: Sequence[int], shape: tuple[int, ...]) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Per-image CPU generators and the starting noise (N, *shape) drawn from them in order."""
    generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    noise = torch.stack([torch.randn(shape, generator=g) for g in generators])
    return noise, generators


def guided_prediction(
    model: torch.nn.Module,
    x: torch.Tensor,
    t: torch.Tensor,
    labels: torch.Tensor,
    domains: torch.Tensor,
    box_mask: torch.Tensor,
    guidance: float,
) -> torch.Tensor:
    """eps_uncond + g * (eps_cond - eps_uncond), both branches in one batched forward.

    The unconditional branch drops all conditions: null label, null domain, zero box.
    """
    if getattr(model, "takes_guidance", False):  # a guidance-distilled student: one forward (busgen.model.distill)
        return model(x, t, labels, domains, box_mask, guidance=guidance)
    if guidance == 1.0:
        return model(x, t, labels, domains, box_mask)
    n = x.shape[0]
    null_l = torch.full_like(labels, model.null_label)
    null_d = torch.full_like(domains, model.null_domain)
    out = model(
        torch.cat([x, x]),
        t,
        torch.cat([labels, null_l]),
        torch.cat([domains, null_d]),
        torch.cat([box_mask, torch.zeros_like(box_mask)]),
    )
    cond, uncond = out[:n], out[n:]
    return uncond + guidance * (cond - uncond)


@torch.inference_mode()
def sample(
    model: torch.nn.Module,
    scheduler_cfg: DiffusionConfig,
    labels_idx: torch.Tensor | Sequence[int],
    domains_idx: torch.Tensor | Sequence[int],
    box_masks: torch.Tensor,
    steps: int = 25,
    guidance: float = DEFAULT_GUIDANCE,
    seeds: Sequence[int] = (),
    sampler: str = "ddim",
    extra_guidance: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Generate images with classifier-free guidance.

    Args:
        model: a ``ConditionalUNet`` (eval mode; on any device).
        scheduler_cfg: the forward-process config the model was trained with.
        labels_idx, domains_idx: int indices (N,); use the model's null indices to leave one out.
        box_masks: (N, 1, H, W) binary masks, zeros for "no box".
        steps: number of denoising steps.
        guidance: CFG scale g (1.0 = conditional only, no extra forward).
        seeds: one int per image; image i depends only on seeds[i].
        sampler: ``ddpm``, ``ddim``, ``dpmpp`` or ``unipc``.
        extra_guidance: ``(x_t, t, prediction) -> prediction`` applied after classifier-free guidance
            at every step, e.g. CPSample (``busgen.model.protect.cpsample_term``). It must treat each
            image on its own, or the per-image seed contract breaks.

    Returns:
        float32 CPU tensor (N, C, H, W), in [-1, 1] unless ``scheduler_cfg.clip_sample`` is off (latents).
    """
    n = len(seeds)
    if n != len(labels_idx) or n != len(domains_idx) or n != box_masks.shape[0]:
        raise ValueError(
            f"need one seed, label, domain and box mask per image; got {n} seeds, "
            f"{len(labels_idx)} labels, {len(domains_idx)} domains, {box_masks.shape[0]} masks"
        )
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    scheduler = make_sampler(scheduler_cfg, sampler)
    scheduler.set_timesteps(steps)
    labels = torch.as_tensor(labels_idx, dtype=torch.long, device=device)
    domains = torch.as_tensor(domains_idx, dtype=torch.long, device=device)
    box_masks = box_masks.to(device=device, dtype=dtype)
    unet = getattr(model, "base", model)  # a distilled student wraps the UNet
    channels = getattr(getattr(unet, "config", None), "channels", 1)  # latent generators denoise C channels
    x, generators = initial_noise(seeds, (channels, *box_masks.shape[2:]))
    # the running latent stays fp32 on the device; only the network input takes the weights' dtype (bf16/fp16)
    x = x.to(device=device) * scheduler.init_noise_sigma
    step_kwargs = {"generator": generators} if "generator" in inspect.signature(scheduler.step).parameters else {}
    t_device = scheduler.timesteps.to(device)  # one copy: a per-step host-to-device copy would sync every step
    for i, t in enumerate(scheduler.timesteps):
        model_in = scheduler.scale_model_input(x, t).to(dtype)
        pred = guided_prediction(model, model_in, t_device[i], labels, domains, box_masks, guidance).float()
        if extra_guidance is not None:
            pred = extra_guidance(model_in, t, pred)
        # the generator list gives every image its own step noise (DDPM / SDE samplers; UniPC takes none)
        x = scheduler.step(pred, t, x, **step_kwargs).prev_sample
    return (x.float().clamp(-1, 1) if scheduler_cfg.clip_sample else x.float()).cpu()
