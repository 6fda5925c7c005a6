"""Two phantom sites (devices a and b) with untrained generators, and the multi-site config over them."""

from __future__ import annotations

from pathlib import Path

from busgen.core.cli_args import resolve_config_path
from busgen.core.config import load_config
from busgen.data.phantom import make_phantom_arrays
from busgen.studies.multisite.config import MultisiteConfig
from busgen.testing.models import export_untrained
from helpers.data import write_parquet_dataset

SIZE = 32
CLASSES = ("benign", "malignant", "normal")


def site(out: Path, seed: int, style: str, n: int = 96) -> Path:
    images, masks, labels = make_phantom_arrays(n, SIZE, seed=seed, style=style)
    cycle = ["train", "train", "val", "test"]
    return write_parquet_dataset(out, images, masks, labels, f"dev_{style}", [cycle[i % 4] for i in range(n)])


def make_sites(root: Path) -> tuple[Path, dict[str, str], dict[str, str]]:
    """(root, site -> dataset, generator key -> untrained model folder) for sites a and b and their joint."""
    a, b = site(root / "a", 0, "a"), site(root / "b", 1, "b")
    models = {
        "a": export_untrained(root / "gen_a", size=SIZE, class_names=CLASSES, domains=("dev_a",)),
        "b": export_untrained(root / "gen_b", size=SIZE, class_names=CLASSES, domains=("dev_b",)),
        "joint": export_untrained(root / "gen_j", size=SIZE, class_names=CLASSES, domains=("dev_a", "dev_b")),
    }
    return root, {"a": str(a), "b": str(b)}, {k: str(v) for k, v in models.items()}


def multisite_config(root, sites, models, out: str = "report", **kw) -> MultisiteConfig:
    """The shipped multisite_cpu config pointed at the phantom sites, at dry-run sizes."""
    values = {"sites": sites, "targets": None, "models": models, "out": str(root / out), "work_dir": None}
    values |= {"dry_run": True, "joint_dir": None}
    return load_config(MultisiteConfig, resolve_config_path("multisite_cpu"), values=values | kw)
