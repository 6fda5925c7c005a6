"""The files that make a model folder a diffusers pipeline repository: ``model_index.json`` and ``pipeline.py``.

``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` reads ``model_index.json``:
its ``_class_name`` ``["pipeline", "BUSGenPipeline"]`` names the folder's ``pipeline.py``
(diffusers' custom-pipeline convention), each component entry names the class that loads a
subfolder (``unet_ema/`` or ``unet/`` with ``busgen.model.unet.ConditionalUNet``, ``scheduler/``
with diffusers' ``DDPMScheduler``), and the remaining keys are the pipeline's own settings
(classes, domains, box prior, model id). ``pipeline.py`` only re-exports
`busgen.model.pipeline.BUSGenPipeline`: the sampling code stays in one place, in the
installed package, so the pipeline draws the same pixels as ``busgen`` (and importing it
imports the UNet class that the component entry names).

Written by `busgen.model.generator.export_model` (and so by ``busgen pretrain``, ``adapt
--method full`` and ``export-hub``). This module imports neither torch nor the pipeline, so
the generator can write the files without an import circle.
"""

from __future__ import annotations

import json
from pathlib import Path

MODEL_INDEX = "model_index.json"
PIPELINE_FILE = "pipeline.py"  # diffusers' CUSTOM_PIPELINE_FILE_NAME
PIPELINE_CLASS = "BUSGenPipeline"
UNET_CLASS = ["busgen.model.unet", "ConditionalUNet"]
WEIGHT_FOLDERS = ("unet", "unet_ema")  # the pipeline's optional components: only the sampling one is listed

PIPELINE_SOURCE = '''\
"""diffusers custom pipeline of a BUSGen model folder (needs the busgen package: pip install busgen).

    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained("<this folder>", trust_remote_code=True)
    images = pipe(["benign", "malignant"], steps=25, seed=0, output_type="np").images  # uint8 (N, H, W)
"""

from busgen.model.pipeline import BUSGenPipeline  # noqa: F401 -- the class diffusers loads
'''


class PipelineFilesError(ValueError):
    """A folder that cannot be a diffusers pipeline (a LoRA adapter needs its base model)."""


def model_index(meta: dict, box_prior: dict, diffusers_version: str) -> dict:
    """``model_index.json`` of a model folder from its ``busgen.json`` and box prior."""
    if meta.get("kind") == "adapter":
        raise PipelineFilesError(
            "error: a LoRA adapter folder is not a diffusers pipeline (it needs its base model): load it with "
            "BUSGenPipeline.from_busgen(folder), or adapt with --method full for a self-contained model"
        )
    if meta.get("kind") == "student":
        raise PipelineFilesError(
            "error: a distilled student is not a diffusers pipeline (its UNet takes a guidance input): load it with "
            "busgen.model.generator.load(folder)"
        )
    if meta.get("latent"):
        raise PipelineFilesError(
            "error: a latent generator is not yet a diffusers pipeline (its decoder is a busgen part): load it with "
            "busgen.model.generator.load(folder)"
        )
    sampling = meta.get("sampling_weights", "unet_ema")
    index: dict = {"_class_name": ["pipeline", PIPELINE_CLASS], "_diffusers_version": diffusers_version}
    index |= {name: UNET_CLASS if name == sampling else [None, None] for name in WEIGHT_FOLDERS}
    index["scheduler"] = ["diffusers", "DDPMScheduler"]
    index |= {
        "class_names": list(meta["class_names"]),
        "domain_names": list(meta["domain_names"]),
        "box_prior": box_prior,
        "model_id": meta.get("model_id", ""),
    }
    return index


def write_pipeline_files(model_dir: str | Path, meta: dict) -> Path | None:
    """Write ``model_index.json`` and ``pipeline.py`` into a (full, pixel) model folder; returns the index path.

    Latent generators get no pipeline files (None): the pipeline class samples pixel models only.
    """
    import diffusers

    if meta.get("latent"):
        return None
    root = Path(model_dir)
    box_prior = json.loads((root / "box_prior.json").read_text())
    index = model_index(meta, box_prior, diffusers.__version__)
    (root / PIPELINE_FILE).write_text(PIPELINE_SOURCE)
    (root / MODEL_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return root / MODEL_INDEX
