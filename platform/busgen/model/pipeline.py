"""``BUSGenPipeline``: a BUSGen generator as a diffusers ``DiffusionPipeline`` (inference glue only).

For people who load models the diffusers way. A model folder carries ``model_index.json`` and
a ``pipeline.py`` shim (`busgen.model.pipeline_files`), so::

    from diffusers import DiffusionPipeline
    # a local model folder only: local_files_only keeps a mistyped path from becoming a Hub lookup
    pipe = DiffusionPipeline.from_pretrained("./models/busgen-tiny", local_files_only=True, trust_remote_code=True)
    out = pipe(["benign", "malignant"], steps=25, guidance=1.8, seed=0, output_type="np")
    out.images  # uint8 (2, H, W): the same pixels as busgen.model.generator.load(...).sample(...)

``custom_pipeline="<folder>/pipeline.py"`` is the equivalent spelling. As in diffusers'
``DDPMPipeline`` the pipeline owns no math: ``__call__`` hands its components to
``busgen.model.generator.Generator.sample`` (seeds, box prior, guidance, samplers), which is
why the images match ``busgen sample`` / ``busgen generate`` pixel for pixel. Components:
``unet_ema`` (or ``unet`` when the model kept no EMA), a ``busgen.model.unet.ConditionalUNet``,
and ``scheduler``, the training ``DDPMScheduler`` whose config defines the noise schedule;
the sampler (ddim, ddpm, dpmpp) is chosen per call, as in ``busgen``.

The UNet folders hold a ``ConditionalUNet``, not a ``UNet2DModel``: load one alone with
``ConditionalUNet.from_pretrained(folder / "unet_ema")``; ``UNet2DModel.from_pretrained``
refuses it (see ``busgen.model.unet.UNET2D_GUARD``). LoRA adapter folders are not
pipelines (they need their base folder); ``BUSGenPipeline.from_busgen(folder)`` loads any
BUSGen folder, adapters included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from diffusers import DDPMScheduler, DiffusionPipeline, ImagePipelineOutput
from PIL import Image

from busgen.core.types import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, SamplerName
from busgen.model import boxprior, diffusion, generator
from busgen.model.unet import ConditionalUNet


class BUSGenPipeline(DiffusionPipeline):
    """Class-, domain- and box-conditioned breast-ultrasound sampling from a BUSGen model folder."""

    _optional_components = ["unet", "unet_ema"]  # a folder lists the one that samples (busgen.json sampling_weights)

    def __init__(
        self,
        scheduler: DDPMScheduler,
        unet: ConditionalUNet | None = None,
        unet_ema: ConditionalUNet | None = None,
        class_names: list[str] | None = None,  # list, not Sequence: diffusers checks the annotations
        domain_names: list[str] | None = None,
        box_prior: dict | None = None,
        model_id: str = "",
    ):
        super().__init__()
        self.register_modules(scheduler=scheduler, unet=unet, unet_ema=unet_ema)
        self.register_to_config(
            class_names=list(class_names or []),
            domain_names=list(domain_names or []),
            box_prior=box_prior,
            model_id=model_id,
        )

    @classmethod
    def from_busgen(cls, model_dir: str | Path, device: str | torch.device | None = None) -> BUSGenPipeline:
        """The pipeline of any BUSGen folder through busgen's own loader (LoRA adapter folders too)."""
        gen = generator.load(model_dir, device=device)
        if gen.codec is not None:
            raise ValueError(
                "error: a latent generator is not yet a diffusers pipeline (its decoder is a busgen part): "
                "sample it with busgen.model.generator.load(folder).sample(...)"
            )
        cfg = gen.diffusion_cfg
        scheduler = diffusion.make_noise_scheduler(cfg)
        return cls(scheduler, unet_ema=gen.model, class_names=gen.class_names, domain_names=gen.domain_names,
                   box_prior=gen.box_prior.to_dict(), model_id=gen.model_id)  # fmt: skip

    def busgen_generator(self) -> generator.Generator:
        """The ``Generator`` over this pipeline's components (what ``__call__`` samples with)."""
        model = self.unet_ema if self.unet_ema is not None else self.unet
        if model is None:
            raise ValueError("error: the pipeline has no UNet: load a model folder written by busgen pretrain/adapt")
        s = self.scheduler.config
        cfg = diffusion.DiffusionConfig(
            num_train_timesteps=s.num_train_timesteps, beta_schedule=s.beta_schedule, prediction_type=s.prediction_type
        )
        prior = boxprior.BoxPrior.from_dict(dict(self.config.box_prior or {}))
        c = self.config
        return generator.Generator(model, cfg, c.class_names, c.domain_names, prior, c.model_id)

    @torch.no_grad()
    def __call__(
        self,
        labels: str | Sequence[str],
        domains: str | Sequence[str | None] | None = None,
        boxes: Sequence | None = None,
        steps: int = 25,
        guidance: float = DEFAULT_GUIDANCE,
        seed: int = 0,
        seeds: Sequence[int] | None = None,
        sampler: SamplerName = DEFAULT_SAMPLER,
        batch_size: int = 64,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Generate one image per label; arguments as ``busgen.model.generator.Generator.sample``.

        Args:
            labels: class names, one per image (``self.config.class_names`` lists them).
            domains, boxes, steps, guidance, seed, seeds, sampler, batch_size: see ``Generator.sample``.
            output_type: ``"pil"`` (grayscale PIL images) or ``"np"`` (uint8 array (N, H, W), busgen's own output).
            return_dict: ``False`` returns ``(images,)``, as every diffusers pipeline does.
        """
        if output_type not in ("pil", "np"):
            raise ValueError(f"error: output_type must be 'pil' or 'np' (uint8), got {output_type!r}")
        images = self.busgen_generator().sample(
            labels, domains, boxes, steps, guidance, seed, sampler, seeds=seeds, batch_size=batch_size
        )
        out = [Image.fromarray(a, mode="L") for a in images] if output_type == "pil" else np.asarray(images)
        return ImagePipelineOutput(images=out) if return_dict else (out,)
