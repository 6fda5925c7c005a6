"""Hugging Face Hub layout: export a model folder as a Hub repository, and find one in the local Hub cache.

A BUSGen model folder is already close to a Hub model repository (diffusers configs and
safetensors weights); ``export_hub`` makes it one: only safetensors weights (no pickles),
configs, the model card (``README.md`` with front matter) and a ``.gitattributes`` that
stores weights with LFS. Upload it with ``huggingface-cli upload <repo id> OUT`` or
``huggingface_hub.upload_folder``; nothing here talks to the network.

``resolve`` (`busgen.model.hubcache`) lets ``generator.load`` take a repo id (``owner/name``) when the local Hub
cache (``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``) already holds a snapshot
of it, e.g. after ``huggingface-cli download``. It never downloads; a local folder of
the same name wins.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from busgen.model import card, generator, pipeline_files
from busgen.model.hubcache import looks_like_repo_id, resolve  # noqa: F401 -- re-exported

WEIGHT_DIRS = ("unet", "unet_ema", "scheduler", "autoencoder")  # autoencoder: latent generators
FILES = ("busgen.json", "box_prior.json", "loss_curve.png")
GITATTRIBUTES = "*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.png filter=lfs diff=lfs merge=lfs -text\n"
CONFIG_SUFFIXES = (".json", ".safetensors")


class HubError(ValueError):
    """A folder that cannot be exported to the Hub layout, or a repo id the local cache does not hold."""


def export_hub(model_dir: str | Path, out: str | Path) -> Path:
    """Write the Hub-layout repository of the model at ``model_dir`` into ``out`` and return ``out``.

    Raises:
        HubError: an adapter folder (export its base model, or adapt with method=full), an
            ``out`` that holds something else, or weights that did not copy identically.
    """
    src, out = Path(model_dir), Path(out)
    meta = generator.read_meta(src)
    if meta.get("kind") == "adapter":
        raise HubError(
            f"{src} is a LoRA adapter (it needs its base model): export the base with `busgen export-hub`, "
            "or adapt with method=full for a self-contained model"
        )
    if out.exists() and any(out.iterdir()) and not (out / card.CARD_FILE).is_file():
        raise HubError(f"{out} exists and is not a Hub export: choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    for name in WEIGHT_DIRS:
        if (src / name).is_dir():
            if (out / name).exists():
                shutil.rmtree(out / name)
            (out / name).mkdir()
            for fp in sorted((src / name).iterdir()):
                if fp.is_file() and fp.suffix in CONFIG_SUFFIXES:  # no pickled weights (.bin, .pt) on the Hub
                    shutil.copyfile(fp, out / name / fp.name)
    for name in FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    (out / ".gitattributes").write_text(GITATTRIBUTES)
    card.write_card(out, meta)
    pipeline_files.write_pipeline_files(out, meta)  # also for folders exported before the pipeline existed
    if generator.weights_fingerprint(out) != generator.weights_fingerprint(src):
        raise HubError(
            f"{src} holds weights that are not safetensors (pickled .bin): re-export it with `busgen pretrain`"
        )
    return out
