"""The model card: ``README.md`` with YAML front matter in every model folder.

People share generators on the Hugging Face Hub and read them there, so a model folder
describes itself the way the Hub expects: machine-readable front matter (licence, tags,
and a ``busgen`` block with the data fingerprint, classes and domains, training steps
and sampler defaults; evaluation numbers when an evaluation recorded them), then prose:
intended use, limits and licence. Everything comes from ``busgen.json``, so the card is
rewritten whenever that file is (``generator.export_model``, ``busgen export-hub``).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from busgen.core.types import DEFAULT_GUIDANCE, DEFAULT_SAMPLER

CARD_FILE = "README.md"
LICENSE = "apache-2.0"
TAGS = ["busgen", "diffusion", "breast-ultrasound", "medical-imaging", "synthetic-data"]
DEFAULT_STEPS = 25  # GenerateConfig.steps

INTENDED_USE = """\
Generating labelled synthetic breast-ultrasound images (class-, domain- and lesion-box-
conditioned) to augment or stand in for real training data of diagnostic classifiers,
for research. Sample with `busgen generate --model <this folder>` or
`busgen.model.generator.load(...)`."""

LIMITS = """\
* Not a medical device. Synthetic images must not be used for diagnosis or shown to
  patients as real.
* The generator reflects its training data: devices, sites, populations and label
  noise it saw, and none it did not. Check the data fingerprint before comparing runs.
* It can memorise training images. Run `busgen evaluate` (privacy part) or
  `busgen share-filter` before sharing generated sets outside the data owner.
* Evaluation numbers, when present, hold for the encoder and test sets named in the
  evaluation report only."""


def front_matter(meta: dict, evaluation: dict | None = None) -> dict:
    """The card's YAML front matter from a model folder's ``busgen.json``."""
    evaluation = evaluation if evaluation is not None else meta.get("evaluation") or {}
    info = {
        "model_id": meta.get("model_id", ""),
        "kind": meta.get("kind", "model"),
        "data_fingerprint": meta.get("data_fingerprint", ""),
        "classes": list(meta.get("class_names", [])),
        "domains": list(meta.get("domain_names", [])),
        "image_size": meta.get("image_size"),
        "train_steps": meta.get("train_steps"),
        "prediction_type": (meta.get("diffusion") or {}).get("prediction_type"),
        "sampler_defaults": {"sampler": DEFAULT_SAMPLER, "steps": DEFAULT_STEPS, "guidance": DEFAULT_GUIDANCE},
    }
    if meta.get("latent"):  # a latent generator: its autoencoder and latent grid
        info["latent"] = {k: meta["latent"].get(k) for k in ("autoencoder_id", "factor", "latent_channels")}
    if meta.get("base_model_id"):
        info["base_model_id"] = meta["base_model_id"]
    if evaluation:
        info["evaluation"] = {k: v for k, v in evaluation.items() if isinstance(v, (int, float, str))}
    return {"license": LICENSE, "library_name": "busgen", "tags": TAGS, "busgen": info}


def render(meta: dict, evaluation: dict | None = None) -> str:
    """The whole card: front matter, then intended use, limits and licence."""
    fm = front_matter(meta, evaluation)
    info = fm["busgen"]
    lines = [
        "---",
        yaml.safe_dump(fm, sort_keys=False).rstrip(),
        "---",
        "",
        f"# BUSGen generator {info['model_id']}".rstrip(),
        "",
        f"A conditional diffusion generator of {info['image_size']} px breast-ultrasound images "
        f"(classes: {', '.join(info['classes'])}; domains: {', '.join(info['domains']) or 'none'}), "
        f"trained for {info['train_steps']} steps on data with fingerprint `{info['data_fingerprint'] or 'n/a'}`.",
        "",
        "## Intended use",
        "",
        INTENDED_USE,
        "",
        "## Limits",
        "",
        LIMITS,
        "",
        "## Evaluation",
        "",
    ]
    if info.get("evaluation"):
        lines += ["| metric | value |", "|---|---|"]
        lines += [
            f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in info["evaluation"].items()
        ]
    else:
        lines.append("Not evaluated yet: run `busgen evaluate` with this model.")
    lines += ["", "## Licence", "", "Apache-2.0 (the weights and this card), like the BUSGen platform code.", ""]
    return "\n".join(lines)


def write_card(model_dir: str | Path, meta: dict, evaluation: dict | None = None) -> Path:
    """Write ``README.md`` into ``model_dir``; returns its path."""
    path = Path(model_dir) / CARD_FILE
    path.write_text(render(meta, evaluation))
    return path


def read_front_matter(path: str | Path) -> dict:
    """The YAML front matter of a card (``{}`` when it has none)."""
    text = Path(path).read_text()
    if not text.startswith("---\n"):
        return {}
    return yaml.safe_load(text[4 : text.index("\n---", 4)]) or {}
