"""CPSample: the protection classifier and the guidance term that steers sampling away from training images.

Kazdan et al. (2024), "CPSample: Classifier Protected Sampling for Guarding Training Data
During Diffusion". A small classifier is trained (``busgen.train.protect``) to *overfit*
random +-1 labels attached to the generator's training images, on their noisy versions
x_t. A random labelling carries no information about the data distribution, so the
classifier can only be confident near the training images themselves. While sampling,
wherever it is confident, classifier guidance pushes x_t toward the label it does *not*
predict, i.e. out of the neighbourhood of a training image; elsewhere it stays silent and
the sampler is unchanged.

The default form is the paper's: classifier guidance in epsilon space (Dhariwal & Nichol
2021), ``eps <- eps - s * sqrt(1 - abar_t) * grad_x log p(other label | x_t)``, applied per
image only where the classifier is nearly certain, ``sigmoid(|logit|) > 1 - alpha`` (the
paper's figure 1: alpha = 0.001, s = 1000), at every sampling step. ``form="relative"`` keeps
this project's earlier variant (the push normalised per image to a fraction of |eps|; see
``cpsample_term`` and docs/privacy.md for what differs and what the trade-off measured).
Every image's term depends only on that image and t, so the per-image determinism and
batch-invariance contracts of ``busgen.model.diffusion.sample`` hold with protection on.

Files (``<model folder or adapter folder>/protect/``): ``classifier.pt`` (a state_dict,
loaded with ``weights_only=True``; not ``.safetensors`` on purpose, so adding protection
does not change the generator's ``model_id``) and ``protect.json`` (architecture and
provenance: the generator it was trained for, the data, the label seed, how well it fits).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from busgen.core.types import (
    DEFAULT_PROTECT_FORM,
    DEFAULT_PROTECT_MIN_FIT,
    DEFAULT_PROTECT_STRENGTH,
    DEFAULT_PROTECT_THRESHOLD,
    DEFAULT_PROTECT_WINDOW,
    RELATIVE_PROTECT_MAX_STRENGTH,
    ProtectForm,
    ProtectName,
)

PROTECT_DIR = "protect"
PROTECT_JSON = "protect.json"
PROTECT_WEIGHTS = "classifier.pt"

GuidanceTerm = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class ProtectError(ValueError):
    """Protection was asked for but cannot be applied (no classifier, or one trained for other weights)."""


class ProtectFitError(ProtectError):
    """The protection classifier did not fit its training images' labels well enough: protection would fail open."""


class ProtectSettings(BaseModel):
    """How to sample: ``protect`` (none | cpsample), the form, strength, confidence threshold, window, fit floor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protect: ProtectName = "none"
    form: ProtectForm = Field(DEFAULT_PROTECT_FORM, description="paper (Kazdan et al.) | relative (normalised push)")
    strength: float = Field(DEFAULT_PROTECT_STRENGTH, ge=0, description="paper: the scale s; relative: x |eps|")
    threshold: float = Field(DEFAULT_PROTECT_THRESHOLD, ge=0.5, lt=1.0, description="1 - the paper's alpha")
    window: tuple[float, float] = Field(
        DEFAULT_PROTECT_WINDOW, description="(lo, hi) fractions of the schedule where it acts"
    )
    min_fit: float = Field(
        DEFAULT_PROTECT_MIN_FIT, ge=0, le=1, description="refuse a classifier whose recorded fit accuracy is lower"
    )

    @field_validator("window")
    @classmethod
    def _window_in_order(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= v[0] <= v[1] <= 1.0:
            raise ValueError(f"protect window must be 0 <= lo <= hi <= 1 (fractions of the noise schedule), got {v}")
        return v

    @model_validator(mode="after")
    def _relative_strength_in_units(self) -> ProtectSettings:
        if self.protect != "none" and self.form == "relative" and self.strength > RELATIVE_PROTECT_MAX_STRENGTH:
            raise ValueError(
                f"protect_form=relative takes a strength in units of the noise prediction's size (0.5-1), got "
                f"{self.strength:g} (the paper form's scale?): pass protect_strength=<0.5-1> with the relative form"
            )
        return self


class ProtectNetConfig(BaseModel):
    """Architecture of the protection classifier (saved in protect.json)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: int = 64
    width: int = Field(32, description="channels of the first stage; doubled twice")
    num_train_timesteps: int = 1000


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of integer timesteps (B,)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class _Stage(nn.Module):
    """conv (stride 2), GroupNorm, + time bias, SiLU, conv, GroupNorm, SiLU. No BatchNorm: batch-invariant."""

    def __init__(self, c_in: int, c_out: int, t_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        self.norm1 = nn.GroupNorm(8, c_out)
        self.time = nn.Linear(t_dim, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(8, c_out)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(self.conv1(x)) + self.time(temb)[:, :, None, None])
        return F.silu(self.norm2(self.conv2(h)))


class ProtectionClassifier(nn.Module):
    """Time-conditioned CNN on noisy images x_t (B, 1, H, W) in the model range -> one logit per image."""

    def __init__(self, cfg: ProtectNetConfig):
        super().__init__()
        self.cfg = cfg
        w, t_dim = cfg.width, 4 * cfg.width
        self.t_mlp = nn.Sequential(nn.Linear(w, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.stem = nn.Conv2d(1, w, 3, padding=1)
        chans = [w, w, 2 * w, 4 * w, 4 * w]
        self.stages = nn.ModuleList(_Stage(a, b, t_dim) for a, b in zip(chans[:-1], chans[1:]))
        self.head = nn.Linear(chans[-1], 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.t_mlp(timestep_embedding(t, self.cfg.width))
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h, temb)
        return self.head(h.mean((2, 3)))[:, 0]


def in_window(t: int, window: tuple[float, float], num_train_timesteps: int) -> bool:
    """Whether timestep ``t`` lies in the protection window ``(lo, hi)``, given as fractions of the noise schedule."""
    lo, hi = window
    return lo * num_train_timesteps <= t <= hi * num_train_timesteps


def trained_window(window: tuple[float, float], meta: dict, num_train_timesteps: int) -> tuple[float, float]:
    """``window`` cut to the timesteps the classifier was trained on (``train.train_t_max`` in protect.json).

    Outside them it never saw an image, and a confident answer there would be noise, not recognition.
    """
    t_max = (meta.get("train") or {}).get("train_t_max")
    if not t_max:
        return window
    hi = min(window[1], t_max / num_train_timesteps)
    return (min(window[0], hi), hi)


def cpsample_term(
    classifier: ProtectionClassifier,
    alphas_cumprod: torch.Tensor,
    strength: float,
    threshold: float,
    prediction_type: str = "epsilon",
    window: tuple[float, float] = DEFAULT_PROTECT_WINDOW,
    form: ProtectForm = DEFAULT_PROTECT_FORM,
) -> GuidanceTerm:
    """The extra-guidance hook for ``diffusion.sample``: ``(x_t, t, prediction) -> protected prediction``.

    Per image, at timesteps inside ``window`` (fractions of the schedule; outside it the
    classifier is not even run): confidence ``c = sigmoid(|logit|)``; where ``c > threshold``
    the epsilon prediction moves along ``g = grad log sigmoid(-|logit|)``, toward the label the
    classifier does *not* predict; images it is unsure about are left exactly as they were.

    * ``form="paper"`` (Kazdan et al. 2024): ``d_eps = -strength * sqrt(1 - abar_t) * g``, the
      classifier-guidance step with the paper's scale s = ``strength`` and gate
      ``threshold = 1 - alpha``. The push follows the classifier's own gradient, so it grows
      with the noise level and fades at low t, and it is larger where the classifier's logit
      is steep (near a training image it recognises).
    * ``form="relative"`` (this project's earlier variant): ``g`` normalised per image and
      scaled to ``strength`` times the RMS of that image's epsilon prediction, whatever the
      noise level or the classifier's logit scale.

    For v-prediction models the same epsilon shift is ``dv = d_eps / sqrt(abar_t)`` (from
    eps = sqrt(abar) v + sqrt(1 - abar) x at fixed x).
    """
    abar = alphas_cumprod.double()
    n_train = len(abar)

    def term(x: torch.Tensor, t: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        ti = min(max(int(t), 0), n_train - 1)
        if strength == 0 or not in_window(ti, window, n_train):
            return pred
        with torch.inference_mode(False), torch.enable_grad():
            xg = x.detach().float().clone().requires_grad_(True)  # a normal tensor: inference tensors have no grad
            tt = torch.full((len(xg),), ti, dtype=torch.long, device=xg.device)
            logit = classifier(xg, tt)
            gate = torch.sigmoid(logit.detach().abs()) > threshold
            if not bool(gate.any()):  # nobody near a training image: skip the backward pass
                return pred
            grad = torch.autograd.grad(F.logsigmoid(-logit.abs()).sum(), xg)[0]
        a = float(abar[ti])
        if form == "paper":
            scale = torch.where(gate, strength * math.sqrt(1 - a), 0.0).to(grad.dtype)
        else:
            eps = pred.float()
            if prediction_type == "v_prediction":  # the epsilon this v means: eps = sqrt(abar) v + sqrt(1 - abar) x
                eps = math.sqrt(a) * eps + math.sqrt(1 - a) * x.float()
            size = math.sqrt(grad[0].numel())
            g_rms = grad.flatten(1).norm(dim=1) / size
            e_rms = eps.flatten(1).norm(dim=1) / size
            scale = torch.where(gate, strength * e_rms / g_rms.clamp_min(1e-20), torch.zeros_like(g_rms))
        d_eps = -scale[:, None, None, None] * grad
        if prediction_type == "v_prediction":
            d_eps = d_eps / math.sqrt(max(a, 1e-8))
        return pred + d_eps.to(pred.dtype)

    return term


# ----------------------------------------------------------------------------- files


def protect_dir(model_dir: str | Path) -> Path:
    return Path(model_dir) / PROTECT_DIR


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def save_protector(model_dir: str | Path, classifier: ProtectionClassifier, provenance: dict) -> Path:
    """Write ``<model_dir>/protect/{classifier.pt, protect.json}``; returns the folder."""
    out = protect_dir(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in classifier.state_dict().items()}, out / PROTECT_WEIGHTS)
    meta = {"config": classifier.cfg.model_dump(), **provenance, "protect_id": file_digest(out / PROTECT_WEIGHTS)}
    (out / PROTECT_JSON).write_text(json.dumps(meta, indent=2, default=float))
    return out


def read_protect_meta(model_dir: str | Path) -> dict:
    """``protect.json`` of a model folder; ProtectError with the remedy when there is none."""
    fp = protect_dir(model_dir) / PROTECT_JSON
    if not fp.is_file():
        raise ProtectError(
            f"protect=cpsample needs a protection classifier, and {Path(model_dir)} has none ({fp} missing): "
            f"train one with `busgen protect --model {Path(model_dir)} --data-dir <its training data>`"
        )
    return json.loads(fp.read_text())


def check_fit(meta: dict, min_fit: float, model_dir: str | Path) -> float:
    """The classifier's recorded fit accuracy (protect.json ``fit_accuracy``), refused below ``min_fit``.

    CPSample only steers away from the training images the classifier recognises
    confidently; an unfitted one leaves the rest unprotected while the output says
    "protected". So protection fails closed: below the floor nothing is sampled.

    Raises:
        ProtectFitError: the accuracy is below ``min_fit``, or protect.json does not record it.
    """
    acc = meta.get("fit_accuracy")
    if isinstance(acc, (int, float)) and acc >= min_fit:
        return float(acc)
    got = f"{acc:.3f}" if isinstance(acc, (int, float)) else "unrecorded"
    limit = (meta.get("train") or {}).get("max_minutes")
    raise ProtectFitError(
        f"the protection classifier of {Path(model_dir)} fits its training images' random labels with accuracy "
        f"{got} (stopped: {meta.get('stopped', 'n/a')}), below the floor {min_fit:.2f}: it would leave the images it "
        "does not recognise unprotected. Train it longer (`busgen protect --model "
        f"{Path(model_dir)} ... max_minutes={2 * limit if limit else '<more>'}` or a larger max_epochs), or lower "
        "the floor explicitly with protect_min_fit=<value> (recorded with the output)"
    )


def check_protect_fit(model_dir: str | Path, min_fit: float = DEFAULT_PROTECT_MIN_FIT) -> dict:
    """Before any sampling: protect.json of ``model_dir`` once its fit passes ``check_fit``; ProtectError otherwise."""
    meta = read_protect_meta(model_dir)
    check_fit(meta, min_fit, model_dir)
    return meta


def load_protector(model_dir: str | Path, model_id: str | None = None) -> tuple[ProtectionClassifier, dict]:
    """The protection classifier of a model folder (eval mode, CPU) and its protect.json.

    Raises:
        ProtectError: no classifier, its file changed since it was written, or it was trained for other weights.
    """
    meta = read_protect_meta(model_dir)
    weights = protect_dir(model_dir) / PROTECT_WEIGHTS
    if not weights.is_file() or file_digest(weights) != meta.get("protect_id"):
        raise ProtectError(f"{weights} is missing or was changed after training: retrain with `busgen protect`")
    if model_id is not None and meta.get("generator_model_id") not in (None, model_id):
        raise ProtectError(
            f"the protection classifier in {protect_dir(model_dir)} was trained for generator "
            f"{meta.get('generator_model_id')}, not {model_id}: retrain it with `busgen protect`"
        )
    net = ProtectionClassifier(ProtectNetConfig(**meta["config"]))
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net.eval(), meta
