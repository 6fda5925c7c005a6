"""Names shared by every stage's configs, defined once and importable without torch.

The HTTP ingress, the CLI and the suite loader validate these choices before any
model is loaded, so they live here rather than next to the code that uses them.
"""

from typing import Literal, get_args

SamplerName = Literal["ddpm", "ddim", "dpmpp"]  # ancestral DDPM | deterministic DDIM | DPM-Solver++ (2M)
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
DEFAULT_SAMPLER: SamplerName = "ddim"  # best FID per step on BUSI (docs/evaluation.md)
DEFAULT_GUIDANCE = 1.8  # BUSGen's classifier-free guidance scale (1 = no guidance)

ResizeMode = Literal["pad", "crop", "stretch"]  # keep aspect + zero-pad | keep aspect + centre-crop | stretch
