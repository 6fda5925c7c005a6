"""Names shared by every stage's configs, defined once and importable without torch.

The HTTP ingress, the CLI and the suite loader validate these choices before any
model is loaded, so they live here rather than next to the code that uses them.
"""

from typing import Literal, get_args

# ancestral DDPM | deterministic DDIM | DPM-Solver++ (2M) | UniPC (2M predictor-corrector)
SamplerName = Literal["ddpm", "ddim", "dpmpp", "unipc"]
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
DEFAULT_SAMPLER: SamplerName = "ddim"  # best FID per step on BUSI (docs/evaluation.md)
DEFAULT_GUIDANCE = 1.8  # BUSGen's classifier-free guidance scale (1 = no guidance)

ResizeMode = Literal["pad", "crop", "stretch"]  # keep aspect + zero-pad | keep aspect + centre-crop | stretch

ProtectName = Literal["none", "cpsample"]  # privacy protection while sampling (CPSample: Kazdan et al. 2024)
PROTECT_NAMES: tuple[str, ...] = get_args(ProtectName)
# CPSample's form: "paper" = Kazdan et al. (2024): eps - s*sqrt(1-abar_t)*grad log p(other label | x_t) where the
# classifier's confidence exceeds 1 - alpha; "relative" = the push normalised per image to a fraction of |eps| (docs)
ProtectForm = Literal["paper", "relative"]
PROTECT_FORMS: tuple[str, ...] = get_args(ProtectForm)
DEFAULT_PROTECT_FORM: ProtectForm = "paper"
DEFAULT_PROTECT_STRENGTH = 1000.0  # the paper's guidance scale s (its figure 1: s = 1000, alpha = 0.001)
DEFAULT_PROTECT_THRESHOLD = 0.999  # 1 - alpha: guide only where the protection classifier is this confident
RELATIVE_PROTECT_MAX_STRENGTH = 5.0  # the relative form's strength is a multiple of |eps|: larger is a unit mix-up
# Protected sampling refuses a protection classifier whose recorded fit accuracy is below this: the training
# images it does not recognise would get no protection (busgen.model.protect.check_fit)
DEFAULT_PROTECT_MIN_FIT = 0.95
DEFAULT_PROTECT_WINDOW = (0.0, 1.0)  # (lo, hi): CPSample acts at timesteps lo*T <= t <= hi*T
