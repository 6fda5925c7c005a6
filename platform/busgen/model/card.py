"""The model card: ``README.md`` with YAML front matter in every model folder.

People share generators on the Hugging Face Hub and read them there, so a model folder
describes itself the way the Hub expects: machine-readable front matter (licence, tags,
``datasets``, and a ``busgen`` block with the data fingerprint, classes and domains,
training steps and settings, sampler defaults; evaluation numbers when an evaluation
recorded them), then prose: training data with licences and citations, training
settings, how to use, intended use, limits and licence. Everything comes from
``busgen.json``, so the card is rewritten whenever that file is
(``generator.export_model``, ``busgen export-hub``).

The weights' licence follows the training data (``licence_of``): trained on any
non-commercial source (BUS-UCLM is CC BY-NC 4.0) the card says ``cc-by-nc-4.0`` and
"non-commercial"; on attribution-only sources (BUSI is CC BY 4.0) ``cc-by-4.0``; on
busgen's own phantoms only, ``apache-2.0`` like the code; when a training set's terms were
not recorded, ``other``, and the card says so.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from busgen.core.types import DEFAULT_GUIDANCE, DEFAULT_SAMPLER
from busgen.data.licences import UNKNOWN, display, non_commercial

CARD_FILE = "README.md"
LICENSE = "apache-2.0"  # the platform code's licence, and the weights' when trained on its phantoms only
UNKNOWN_LICENSE = "other"  # the Hub's id when the terms must be read in the card
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


def licence_of(datasets: list[dict]) -> tuple[str, str]:
    """The weights' licence id and the sentence that explains it, from the training sets' licences."""
    ids = [d.get("license") or UNKNOWN for d in datasets]
    names = ", ".join(f"{d.get('name')} ({d.get('license') or UNKNOWN})" for d in datasets)
    if not datasets or UNKNOWN in ids:
        return UNKNOWN_LICENSE, (
            "The licence of the training data was not recorded"
            + (f" for some of it ({names})" if datasets else "")
            + ": check the terms of the data it was trained on before using or sharing these weights."
        )
    if nc := [i for i in ids if non_commercial(i)]:
        return nc[0], (
            f"**Non-commercial use only.** These weights were trained on {names}; a non-commercial source makes "
            f"them {display(nc[0])} too. Attribute the datasets listed under Training data."
        )
    for restrictive in ("cc-by-sa-4.0", "cc-by-4.0"):
        if restrictive in ids:
            return restrictive, (
                f"Trained on {names}: use them under {restrictive}, attributing the datasets under Training data."
            )
    return LICENSE, f"Apache-2.0 (the weights and this card), like the BUSGen platform code; trained on {names}."


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
        "sampler_defaults": sampler_defaults(meta),
    }
    if meta.get("latent"):  # a latent generator: its autoencoder and latent grid
        info["latent"] = {k: meta["latent"].get(k) for k in ("autoencoder_id", "factor", "latent_channels")}
    if meta.get("training"):
        info["training"] = dict(meta["training"])
    if meta.get("base_model_id"):
        info["base_model_id"] = meta["base_model_id"]
    if evaluation:
        info["evaluation"] = {k: v for k, v in evaluation.items() if isinstance(v, (int, float, str))}
    datasets = list(meta.get("datasets") or [])
    licence, _ = licence_of(datasets)
    fm: dict = {"license": licence}
    if licence == UNKNOWN_LICENSE:
        fm["license_name"] = "training-data-terms-not-recorded"
    fm |= {"library_name": "busgen", "tags": TAGS}
    if datasets:
        fm["datasets"] = [d.get("name") for d in datasets]
    return fm | {"busgen": info}


def _data_section(datasets: list[dict]) -> list[str]:
    if not datasets:
        return ["Not recorded (a model exported before busgen recorded its training data, or a test model)."]
    lines = ["| dataset | licence | cite |", "|---|---|---|"]
    for d in datasets:
        cite = (d.get("citation") or "not recorded").replace("|", "\\|")
        lines.append(f"| {d.get('name')} | {d.get('license') or UNKNOWN} | {cite} |")
    return lines


def _how_to_use(info: dict) -> list[str]:
    sd = info["sampler_defaults"]
    label = (info["classes"] or ["benign"])[0]
    return [
        "```bash",
        "busgen sample --model <this folder> --out grid.png            # one row per class",
        "busgen generate --model <this folder> --out synthetic/ --n 1000  # a Parquet set with Ray Data",
        "```",
        "",
        "```python",
        "from busgen.model import generator",
        "",
        'gen = generator.load("<this folder>")',
        f'images = gen.sample(["{label}"] * 4, None, steps={sd["steps"]}, guidance={sd["guidance"]}, '
        f'sampler="{sd["sampler"]}", seed=0)  # uint8 (4, {info["image_size"]}, {info["image_size"]})',
        "```",
    ]


def render(meta: dict, evaluation: dict | None = None) -> str:
    """The whole card: front matter, then intended use, limits and licence."""
    fm = front_matter(meta, evaluation)
    info = fm["busgen"]
    datasets = list(meta.get("datasets") or [])
    training = info.get("training") or {}
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
        "## Training data",
        "",
        *_data_section(datasets),
        "",
        "## Training",
        "",
        *([f"* {k}: {v}" for k, v in training.items()] or ["Settings not recorded."]),
        "",
        "## How to use",
        "",
        *_how_to_use(info),
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
    lines += ["", "## Licence", "", licence_of(datasets)[1], ""]
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


def sampler_defaults(meta: dict) -> dict:
    """What the card tells users to sample with: a distilled student's own sampler and steps, else the library's."""
    own = meta.get("sampling") or {}
    return {
        "sampler": own.get("sampler") or DEFAULT_SAMPLER,
        "steps": int(own.get("steps") or DEFAULT_STEPS),
        "guidance": DEFAULT_GUIDANCE,
    }
