"""Few-step students of a guided teacher: the network and the distillation targets (pure torch, no Ray).

Two distillations, run one after the other (``busgen.train.distill`` wires them on Ray Train):

1. **Guidance distillation** (Meng et al., CVPR 2023): a ``GuidanceUNet`` (the teacher's
   ``ConditionalUNet`` plus a guidance-scale embedding, initialised from the teacher) learns
   ``eps_u + w (eps_c - eps_u)`` of the teacher in one forward, ``w`` drawn from a range:
   half the UNet evaluations per step.
2. **Progressive distillation** (Salimans & Ho, ICLR 2022): a student learns to take, in one
   DDIM step, the two DDIM steps of its teacher (the previous student); 2N -> N halvings
   down to 4, 2 and 1 steps. Chosen over consistency distillation because its target is
   exact for a deterministic sampler (two teacher steps, no ODE-solver or distance choice)
   and a halving at a few hundred iterations is what a CPU can afford; consistency
   distillation needs many more iterations to converge (Song et al. train 600k+).

Parametrisation: the step students predict **v** (not epsilon). With epsilon, x0 = (z - sigma eps) /
alpha, and at the first step of a few-step sampler alpha ~ 5e-5 on the cosine schedule, so any eps
error becomes an x0 error 2e4 times larger (the DPM-Solver++ failure, docs/evaluation.md); with v,
x0 = alpha z - sigma v is bounded at every step. The folder records ``prediction_type:
v_prediction`` and diffusers' DDIM steps it natively. The guidance-distilled student keeps the
teacher's epsilon: it samples at 10-25 steps, where the teacher does too.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from busgen.model import diffusion
from busgen.model.unet import ConditionalUNet


class GuidanceUNet(ModelMixin, ConfigMixin):
    """A ``ConditionalUNet`` whose condition embedding also carries the guidance scale ``w``.

    The ``w`` embedding's last layer starts at zero, so a fresh student from ``from_teacher`` is
    exactly the teacher's conditional branch; distillation then teaches it the guided output.
    """

    takes_guidance = True  # ``diffusion.guided_prediction`` calls it once, with ``guidance=w``

    @register_to_config
    def __init__(self, base_config: dict, guidance_range: tuple[float, float] = (1.0, 3.0)):
        super().__init__()
        self.base = ConditionalUNet(**base_config)
        emb_dim = self.base.label_embedding.embedding_dim
        self.guidance_embedding = nn.Sequential(nn.Linear(1, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        nn.init.zeros_(self.guidance_embedding[-1].weight)
        nn.init.zeros_(self.guidance_embedding[-1].bias)

    @classmethod
    def from_teacher(cls, teacher: ConditionalUNet, guidance_range: tuple[float, float]) -> GuidanceUNet:
        base_config = {k: v for k, v in teacher.config.items() if not k.startswith("_")}
        student = cls(base_config=base_config, guidance_range=tuple(guidance_range))
        student.base.load_state_dict(teacher.state_dict())
        return student

    @property
    def null_label(self) -> int:
        return self.base.null_label

    @property
    def null_domain(self) -> int:
        return self.base.null_domain

    def forward(self, sample, timestep, labels, domains, box_mask, guidance: float | torch.Tensor = 1.0):
        """The teacher's guided prediction at scale ``guidance`` (a float or (B,)), in one forward."""
        w_dtype = self.guidance_embedding[0].weight.dtype  # bf16 weights (Generator.optimize) take a bf16 scale
        w = torch.as_tensor(guidance, dtype=w_dtype, device=sample.device).reshape(-1, 1)
        w = w.expand(sample.shape[0], 1)
        x = torch.cat([sample, box_mask.to(sample.dtype)], dim=1)  # (B, 2, H, W), as ConditionalUNet
        cond = self.base.label_embedding(labels) + self.base.domain_embedding(domains)
        cond = cond + self.guidance_embedding(w - 1.0).to(cond.dtype)  # (B, emb_dim)
        return self.base.unet(x, timestep, class_labels=cond).sample


def check_student(meta: dict, sampler: str, guidance: float) -> None:
    """Refuse what a distilled student was not trained for: another sampler than its own, a guidance outside its range.

    Raises:
        ValueError: naming the student's sampler or range, the remedy in the message.
    """
    info = meta.get("student")
    if not info:
        return
    own = meta.get("sampling", {}).get("sampler")
    if own and sampler != own:
        raise ValueError(
            f"error: this student was distilled for the {own} sampler at {info.get('steps')} steps; "
            f"sample it with sampler={own} (or use its teacher {info.get('teacher')} for {sampler})"
        )
    lo, hi = info.get("guidance_range", (1.0, float("inf")))
    if not lo - 1e-6 <= guidance <= hi + 1e-6:
        raise ValueError(
            f"error: guidance {guidance} is outside the range this student learned ({lo}-{hi}): pick one inside"
        )


# ----------------------------------------------------------------------------- DDIM algebra


def ddim_grid(cfg: diffusion.DiffusionConfig, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps, alpha_bar after each step) of diffusers' DDIM at ``steps`` steps, as ``diffusion.sample`` runs it.

    diffusers steps from t to t - T // steps (alpha_bar 1 below 0), which can sit one timestep off
    the next grid point: the targets below use exactly what the sampler will use.
    """
    sched = diffusion.make_sampler(cfg, "ddim")
    sched.set_timesteps(steps)
    ts = sched.timesteps.clone()
    prev = ts - cfg.num_train_timesteps // steps
    ac = sched.alphas_cumprod
    return ts, torch.where(prev >= 0, ac[prev.clamp(min=0)], torch.ones(()))


def split_prediction(out: torch.Tensor, z: torch.Tensor, ab: torch.Tensor, prediction_type: str) -> tuple:
    """(x0 clipped to [-1, 1], eps) from a model output, as diffusers' DDIM reads them. ``ab``: (B,1,1,1)."""
    a, s = ab.sqrt(), (1 - ab).sqrt()
    if prediction_type == "v_prediction":
        x0, eps = a * z - s * out, a * out + s * z
    else:
        x0, eps = (z - s * out) / a, out
    return x0.clamp(-1, 1), eps


def ddim_step(out, z, ab, ab_next, prediction_type: str) -> torch.Tensor:
    """One deterministic DDIM step (eta = 0, clipped x0): z at alpha_bar ``ab`` -> alpha_bar ``ab_next``."""
    x0, eps = split_prediction(out, z, ab, prediction_type)
    return ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps


def v_target(z, z_next, ab, ab_next) -> torch.Tensor:
    """The v whose (unclipped) DDIM step from ``z`` lands exactly on ``z_next``.

    z_next = a' (a z - s v) + s' (a v + s z), solved for v; the divisor s' a - a' s is
    -sin(phi - phi') < 0 whenever the step moves, so the target is bounded at every step.
    """
    a, s, a2, s2 = ab.sqrt(), (1 - ab).sqrt(), ab_next.sqrt(), (1 - ab_next).sqrt()
    return (z_next - (a2 * a + s2 * s) * z) / (s2 * a - a2 * s)


def _col(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, 1, 1, 1)


# ----------------------------------------------------------------------------- losses


def guidance_loss(student, teacher, noise_scheduler, batch: tuple, w: torch.Tensor, gen: torch.Generator):
    """MSE between the student's one-forward output and the teacher's guided output at random timesteps."""
    x0, labels, domains, box_mask = batch
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (x0.shape[0],), generator=gen)
    z = noise_scheduler.add_noise(x0, noise, t)
    with torch.no_grad():
        target = guided(teacher, z, t, labels, domains, box_mask, w)
    return nn.functional.mse_loss(student(z, t, labels, domains, box_mask, guidance=w), target)


def guided(model, z, t, labels, domains, box_mask, w: torch.Tensor) -> torch.Tensor:
    """A guided prediction with per-image ``w``: the teacher's two branches, or a student's one forward."""
    if getattr(model, "takes_guidance", False):
        return model(z, t, labels, domains, box_mask, guidance=w)
    n = z.shape[0]
    out = model(
        torch.cat([z, z]),
        torch.cat([t, t]),
        torch.cat([labels, torch.full_like(labels, model.null_label)]),
        torch.cat([domains, torch.full_like(domains, model.null_domain)]),
        torch.cat([box_mask, torch.zeros_like(box_mask)]),
    )
    cond, uncond = out[:n], out[n:]
    return uncond + _col(w) * (cond - uncond)


def progressive_loss(
    student,
    teacher,
    teacher_type: str,
    cfg: diffusion.DiffusionConfig,
    steps: int,
    batch: tuple,
    w: torch.Tensor,
    gen: torch.Generator,
) -> torch.Tensor:
    """Salimans & Ho: the student's one DDIM step (of ``steps``) must match the teacher's two (of 2 * steps).

    The student predicts v; the loss is the MSE in v (the truncated-SNR weighting of their paper
    in x space is v's MSE up to a constant at the step sizes used here).
    """
    x0, labels, domains, box_mask = batch
    s_ts, s_next = ddim_grid(cfg, steps)
    t_ts, t_next = ddim_grid(cfg, 2 * steps)
    ac = diffusion.make_noise_scheduler(cfg).alphas_cumprod
    i = torch.randint(0, steps, (x0.shape[0],), generator=gen)  # one student step per image
    t = s_ts[i]
    ab = _col(ac[t])
    z = ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn(x0.shape, generator=gen)
    with torch.no_grad():
        # teacher step 2i: t -> (alpha_bar t_next[2i]); teacher step 2i + 1 from its grid point t_ts[2i + 1]
        z1 = ddim_step(guided(teacher, z, t, labels, domains, box_mask, w), z, ab, _col(t_next[2 * i]), teacher_type)
        t1 = t_ts[2 * i + 1]  # diffusers reads alpha_bar at the grid point, not where the last step landed
        out1 = guided(teacher, z1, t1, labels, domains, box_mask, w)
        z2 = ddim_step(out1, z1, _col(ac[t1]), _col(t_next[2 * i + 1]), teacher_type)
        target = v_target(z, z2, ab, _col(s_next[i]))
    return nn.functional.mse_loss(student(z, t, labels, domains, box_mask, guidance=w), target)
