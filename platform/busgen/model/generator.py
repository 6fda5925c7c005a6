"""A trained generator as a self-contained directory, and the object that samples from it.

Layout written by ``export_model`` and read by ``load``::

    model_dir/
      busgen.json              class/domain names, architecture, diffusion config, provenance
      unet/                    diffusers save_pretrained of the trained weights (fine-tuning starts here)
      unet_ema/                the same model with EMA weights: what sampling uses
      scheduler/               diffusers scheduler_config.json of the training noise schedule
      box_prior.json           per-class KDE box prior (JSON, no pickle)
      model_index.json         diffusers pipeline index + pipeline.py (busgen.model.pipeline_files)
      autoencoder/             latent generators only: a copy of the autoencoder (busgen.model.autoencoder)

Everything needed to rebuild the model is in the directory, so ``load`` works on a
copy made on another machine and ``model_id`` identifies the exact weights.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from busgen.core.types import (
    DEFAULT_GUIDANCE,
    DEFAULT_PROTECT_FORM,
    DEFAULT_PROTECT_MIN_FIT,
    DEFAULT_PROTECT_STRENGTH,
    DEFAULT_PROTECT_THRESHOLD,
    DEFAULT_PROTECT_WINDOW,
    DEFAULT_SAMPLER,
    ProtectForm,
    ProtectName,
    SamplerName,
)
from busgen.data.imageio import from_model_range
from busgen.model import accel, autoencoder, boxprior, card, diffusion, distill, hubcache, lora, pipeline_files
from busgen.model import protect as protection
from busgen.model import unet as models
from busgen.model.folder import (  # noqa: F401 -- re-exported: callers import them from here
    ADAPTER_META,
    BUSGEN_JSON,
    FOLDER_PATH_FIELDS,
    REQUIRED_META,
    AdapterError,
    ModelLoadError,
    ModelNotFoundError,
    path_inside,
    read_meta,
)

UNET_DIR = "unet"
EMA_DIR = "unet_ema"
SCHEDULER_DIR = "scheduler"
BOX_PRIOR_JSON = "box_prior.json"
FORMAT_VERSION = 1
DEFAULT_STEPS = 25  # sampling steps of a model that records none (a student records its own)


def weights_fingerprint(model_dir: str | Path) -> str:
    """Short sha256 over every weights file (path and bytes), in sorted order."""
    root = Path(model_dir)
    h = hashlib.sha256()
    for fp in sorted(p for p in root.rglob("*") if p.suffix in (".safetensors", ".bin") and p.is_file()):
        h.update(str(fp.relative_to(root)).encode())
        with open(fp, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def export_model(
    out_dir: str | Path,
    unet: models.ConditionalUNet,
    ema_state: dict[str, torch.Tensor] | None,
    model_cfg: models.ModelConfig,
    class_names: Sequence[str],
    domain_names: Sequence[str],
    box_prior: boxprior.BoxPrior,
    data_fingerprint: str,
    steps: int,
    metrics: dict | None = None,
    diffusion_cfg: diffusion.DiffusionConfig | None = None,
    autoencoder_dir: str | Path | None = None,
    latent_scaling: float = 1.0,
    datasets: list[dict] | None = None,
    training: dict | None = None,
) -> Path:
    """Write a self-contained model directory (see module docstring; ``datasets``/``training``: the card's).

    Latent generators: ``autoencoder_dir`` is copied in; ``latent_scaling`` = 1 / std of the training latents.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    diffusion_cfg = diffusion_cfg or diffusion.DiffusionConfig()
    unet = unet.to("cpu")
    unet.save_pretrained(out / UNET_DIR)
    if ema_state is not None:
        ema_model = copy.deepcopy(unet)
        ema_model.load_state_dict({k: v.to("cpu") for k, v in ema_state.items()})
        ema_model.save_pretrained(out / EMA_DIR)
    diffusion.make_noise_scheduler(diffusion_cfg).save_pretrained(out / SCHEDULER_DIR)
    box_prior.save(out / BOX_PRIOR_JSON)
    latent = None if autoencoder_dir is None else autoencoder.attach(out, autoencoder_dir, latent_scaling)
    meta = {
        "format_version": FORMAT_VERSION,
        "class_names": list(class_names),
        "domain_names": list(domain_names),
        "image_size": latent["image_size"] if latent else model_cfg.image_size,
        "model": model_cfg.model_dump(mode="json"),
        **({"latent": latent} if latent else {}),
        "diffusion": diffusion_cfg.model_dump(mode="json"),
        "sampling_weights": EMA_DIR if ema_state is not None else UNET_DIR,
        "data_fingerprint": data_fingerprint,
        "train_steps": int(steps),
        "metrics": metrics or {},
        "datasets": list(datasets or []),
        "training": dict(training or {}),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta["model_id"] = weights_fingerprint(out)
    (out / BUSGEN_JSON).write_text(json.dumps(meta, indent=2, default=float))
    card.write_card(out, meta)  # README.md with front matter (busgen.model.card)
    pipeline_files.write_pipeline_files(out, meta)  # model_index.json + pipeline.py: a diffusers pipeline too
    return out


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Generator:
    """Samples uint8 images from a loaded model; see ``sample``."""

    def __init__(
        self,
        model: models.ConditionalUNet,
        diffusion_cfg: diffusion.DiffusionConfig,
        class_names: Sequence[str],
        domain_names: Sequence[str],
        box_prior: boxprior.BoxPrior,
        model_id: str,
        meta: dict | None = None,
        model_dir: str | Path | None = None,
        codec: autoencoder.LatentCodec | None = None,
    ):
        self.model = model.eval()
        self.diffusion_cfg = diffusion_cfg
        self.class_names = list(class_names)
        self.domain_names = list(domain_names)
        self.codec = codec  # latent generators: decodes the sampled latents to pixels
        # what the UNet denoises: pixels, or the latent grid (a distilled student wraps the UNet)
        self.grid_size = int(getattr(model, "base", model).config.image_size)
        self.image_size = codec.image_size if codec is not None else self.grid_size  # pixels sampled
        self.box_prior = box_prior
        self.model_id = model_id
        self.meta = meta or {}
        self.model_dir = Path(model_dir) if model_dir is not None else None  # where protect/ is looked up
        self._protector: protection.ProtectionClassifier | None = None
        self._protect_meta: dict = {}
        self.accel: accel.Resolved | None = None  # set by ``optimize``
        # a distilled student samples with the step count (and sampler) it was distilled for, unless asked otherwise
        self.default_steps = int(self.meta.get("sampling", {}).get("steps") or DEFAULT_STEPS)

    def optimize(self, cfg: accel.AccelConfig | None = None) -> Generator:
        """Apply the inference speed switches (dtype, channels_last, compile) to the model, once; returns self.

        ``auto`` values mean bf16 + channels_last + compile on CUDA and nothing on CPU.
        Starting noise still comes from per-image CPU generators, so image i depends only
        on its seed; bf16 changes rounding only (under 2 grey levels at 25 DDIM steps).

        Raises:
            accel.AccelError: a switch that cannot run on the model's device (fp16 / CUDA graphs on CPU).
        """
        resolved = accel.resolve(cfg, next(self.model.parameters()).device)
        if self.accel is not None:
            if self.accel != resolved:
                raise accel.AccelError(
                    f"error: this generator is already optimized ({self.accel.describe()}): load it again to change"
                )
            return self
        self.model = accel.for_inference(self.model, resolved)
        self.accel = resolved
        return self

    def label_indices(self, labels: Sequence[str]) -> list[int]:
        return [_index_of(name, self.class_names, "label") for name in labels]

    def domain_indices(self, domains: str | Sequence[str | None] | None, n: int) -> list[int]:
        """Domain names -> indices; None (all or per image) means the null domain (unconditional)."""
        if domains is None or isinstance(domains, str):
            domains = [domains] * n
        if len(domains) != n:
            raise ValueError(f"got {len(domains)} domains for {n} labels")
        null = len(self.domain_names)
        return [null if d is None else _index_of(d, self.domain_names, "domain") for d in domains]

    def resolve_boxes(self, labels: Sequence[str], boxes: Sequence | None, seeds: Sequence[int]) -> list:
        """Per-image boxes: given ones as is, ``None`` entries drawn from the box prior with the image's seed.

        An empty sequence ``()`` asks explicitly for no box.
        """
        boxes = [None] * len(labels) if boxes is None else list(boxes)
        if len(boxes) != len(labels):
            raise ValueError(f"got {len(boxes)} boxes for {len(labels)} labels")
        out = []
        for label, box, seed in zip(labels, boxes, seeds):
            if box is None:
                box = self.box_prior.sample(label, 1, seed=seed)[0]
            elif len(box) not in (0, 4):
                raise ValueError(f"a box is [x0, y0, x1, y1] in [0, 1] (or () for none), got {box!r}")
            out.append(box)
        return out

    def sample(
        self,
        labels: str | Sequence[str],
        domains: str | Sequence[str | None] | None = None,
        boxes: Sequence | None = None,
        steps: int | None = None,
        guidance: float = DEFAULT_GUIDANCE,
        seed: int = 0,
        sampler: SamplerName = DEFAULT_SAMPLER,
        seeds: Sequence[int] | None = None,
        batch_size: int = 64,
        protect: ProtectName = "none",
        protect_strength: float = DEFAULT_PROTECT_STRENGTH,
        protect_threshold: float = DEFAULT_PROTECT_THRESHOLD,
        protect_window: tuple[float, float] = DEFAULT_PROTECT_WINDOW,
        protect_min_fit: float = DEFAULT_PROTECT_MIN_FIT,
        protect_form: ProtectForm = DEFAULT_PROTECT_FORM,
    ) -> np.ndarray:
        """Generate one image per label.

        Args:
            labels: class names, one per image (a single name = one image).
            domains: domain name for all images, one per image, or None for domain-unconditional.
            boxes: per-image [x0, y0, x1, y1] normalised boxes; None (all or per image) draws
                from the class's box prior seeded by that image's seed; ``()`` means no box.
            steps, guidance, sampler: see ``diffusion.sample``; steps None = the model's own default (25, or the
                step count a distilled student was trained for).
            seed: image i uses seed + i when ``seeds`` is not given.
            seeds: one int per image; image i depends only on seeds[i] and its conditions.
            batch_size: images per forward pass (memory only; results do not depend on it).
            protect: ``cpsample`` steers sampling away from the training images with the model
                folder's protection classifier (``busgen protect`` trains it; see ``busgen.model.protect``).
            protect_strength, protect_threshold: CPSample's guidance scale (the paper's s; with the
                relative form a multiple of the noise prediction's size) and confidence gate (1 - the paper's alpha).
            protect_window: (lo, hi) fractions of the noise schedule where CPSample acts.
            protect_min_fit: refuse a protection classifier whose recorded fit accuracy is below this.
            protect_form: ``paper`` (Kazdan et al. 2024, the default) or ``relative`` (``protect.cpsample_term``).

        Returns:
            np.ndarray uint8 (N, image_size, image_size).

        Raises:
            ValueError: unknown label/domain (the message lists the valid ones) or mismatched lengths.
            busgen.model.protect.ProtectError: protect=cpsample without a protection classifier, or
                (``ProtectFitError``) with one that fits its labels worse than ``protect_min_fit``.
        """
        steps = self.default_steps if steps is None else steps
        distill.check_student(self.meta, sampler, guidance)
        term = self.protection_term(
            protection.ProtectSettings(
                protect=protect,
                strength=protect_strength,
                threshold=protect_threshold,
                window=protect_window,
                min_fit=protect_min_fit,
                form=protect_form,
            )
        )
        labels = [labels] if isinstance(labels, str) else list(labels)
        n = len(labels)
        seeds = [seed + i for i in range(n)] if seeds is None else [int(s) for s in seeds]
        if len(seeds) != n:
            raise ValueError(f"got {len(seeds)} seeds for {n} labels")
        label_idx = self.label_indices(labels)
        domain_idx = self.domain_indices(domains, n)
        # the box mask lives on the grid the UNet denoises (latent resolution for a latent generator)
        masks = torch.from_numpy(models.rasterize_boxes(self.resolve_boxes(labels, boxes, seeds), self.grid_size))
        out = np.zeros((n, self.image_size, self.image_size), dtype=np.uint8)
        for s in range(0, n, batch_size):
            sl = slice(s, s + batch_size)
            x = diffusion.sample(
                self.model,
                self.diffusion_cfg,
                label_idx[sl],
                domain_idx[sl],
                masks[sl],
                steps,
                guidance,
                seeds[sl],
                sampler,
                extra_guidance=term,
            )
            if self.codec is not None:
                x = self.codec.decode(x)  # (B, C, h, w) latents -> (B, 1, H, W) pixels
            out[sl] = from_model_range(x[:, 0].numpy())
        return out

    def protection_term(self, settings: protection.ProtectSettings):
        """The ``extra_guidance`` hook for ``settings`` (None when protection is off); loads the classifier once."""
        if settings.protect == "none":
            return None
        if self.codec is not None:
            raise protection.ProtectError(autoencoder.NO_CPSAMPLE)
        if self._protector is None:
            if self.model_dir is None:
                raise protection.ProtectError("protect=cpsample needs a generator loaded from its model folder")
            net, meta = protection.load_protector(self.model_dir, self.model_id)
            self._protector = net.to(next(self.model.parameters()).device)
            self._protect_meta = meta
        protection.check_fit(self._protect_meta, settings.min_fit, self.model_dir)  # fail closed, every call
        alphas = diffusion.make_noise_scheduler(self.diffusion_cfg).alphas_cumprod
        return protection.cpsample_term(
            self._protector,
            alphas,
            settings.strength,
            settings.threshold,
            self.diffusion_cfg.prediction_type,
            protection.trained_window(settings.window, self._protect_meta, len(alphas)),
            settings.form,
        )


def _index_of(name: str, options: list[str], kind: str) -> int:
    try:
        return options.index(name)
    except ValueError:
        raise ValueError(f"unknown {kind} {name!r}; valid {kind}s: {options}") from None


def resolve_base(adapted_dir: Path, meta: dict) -> Path:
    """Find the base model (next to the adapter first, then the recorded absolute path) and check its weights."""
    candidates = [adapted_dir / meta["base_model_rel"], Path(meta["base_model"])]
    for cand in candidates:
        if (cand / BUSGEN_JSON).is_file():
            if weights_fingerprint(cand) != meta["base_model_id"]:
                raise AdapterError(
                    f"base model at {cand} has other weights than the adapter was trained on "
                    f"(model id {meta['base_model_id']})"
                )
            return cand
    raise AdapterError(
        f"base model of adapter {adapted_dir} not found at {[str(c) for c in candidates]}: copy it back or re-adapt"
    )


def build_adapted_model(spec: lora.AdapterSpec) -> models.ConditionalUNet:
    """The trainable module tree of an adaptation: the base folder's sampling weights plus ``spec``'s surgery."""
    base = load(spec.base, device="cpu")
    return lora.build_adapted(base.model, base.class_names, base.domain_names, spec)


def load_adapter(adapted_dir: Path, meta: dict, device) -> models.ConditionalUNet:
    """Rebuild base + adapter for sampling from an adapter folder written by ``busgen adapt``.

    The LoRA comes from peft's own files (``adapter_config.json`` gives rank/alpha/targets, read by peft),
    the vocabulary from ``busgen.json`` and the condition embeddings from ``conditions.safetensors``.
    """
    absent = lora.missing_files(adapted_dir)
    if absent:
        raise AdapterError(
            f"adapter {adapted_dir} lacks {', '.join(absent)} (an adapter from an older version?): "
            "re-run `busgen adapt` to write peft's adapter format"
        )
    spec = lora.AdapterSpec(
        **(meta["adapter"] | lora.read_lora_config(adapted_dir)),
        base=str(resolve_base(adapted_dir, meta)),
        class_names=meta["class_names"],
        domain_names=meta["domain_names"],
    )
    model = build_adapted_model(spec)
    missing = lora.load_adapter_weights(model, adapted_dir)
    if missing:
        raise AdapterError(
            f"adapter {adapted_dir} lacks {len(missing)} tensors (e.g. {missing[0]}): "
            "was it written by another version? re-run `busgen adapt`"
        )
    return model.to(device).eval()


def load(
    model_dir: str | Path, device: str | torch.device | None = None, optimize: accel.AccelConfig | None = None
) -> Generator:
    """Load an exported model directory (or a Hub repo id in the local Hub cache) for sampling (EMA weights).

    ``optimize`` applies inference speed switches (see ``Generator.optimize``); None keeps fp32 as saved.

    Raises:
        ModelNotFoundError: the directory has no busgen.json (also a FileNotFoundError).
        ModelLoadError: busgen.json is not JSON or lacks a required field (see ``read_meta``).
    """
    root = hubcache.resolve(model_dir)  # a folder (Hub layout too), or a Hub repo id already in the local Hub cache
    meta = read_meta(root)
    if meta.get("kind") == "adapter":  # few-shot LoRA adapter: rebuild base + adapter (see busgen.model.lora)
        model = load_adapter(root, meta, device or default_device())
    else:  # a distilled student (busgen distill) is the UNet plus a guidance input
        cls = distill.GuidanceUNet if meta.get("kind") == "student" else models.ConditionalUNet
        model = cls.from_pretrained(path_inside(root, meta.get("sampling_weights", EMA_DIR), "weights"))
        model = model.to(device or default_device())
    models.maybe_enable_xformers(model)
    codec = load_codec(root, meta, device or default_device())
    gen = Generator(
        model=model,
        diffusion_cfg=diffusion.DiffusionConfig(**meta["diffusion"]),
        class_names=meta["class_names"],
        domain_names=meta["domain_names"],
        box_prior=boxprior.BoxPrior.load(root / BOX_PRIOR_JSON),
        model_id=weights_fingerprint(root),
        meta=meta,
        model_dir=root,
        codec=codec,
    )
    return gen if optimize is None else gen.optimize(optimize)


def load_codec(root: Path, meta: dict, device) -> autoencoder.LatentCodec | None:
    """A latent generator's decoder (an adapter's comes from its base folder); None for pixel generators."""
    if meta.get("kind") == "adapter":
        root = resolve_base(root, meta)
        meta = read_meta(root)
    if not meta.get("latent"):
        return None
    folder = path_inside(root, meta["latent"]["autoencoder"], f"{root / BUSGEN_JSON}: latent.autoencoder")
    return autoencoder.load_codec(folder, meta["latent"]["scaling_factor"], device)
