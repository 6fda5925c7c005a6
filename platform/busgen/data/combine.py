"""Combine ingested datasets of several sites into one multi-domain dataset, keeping each one's split.

Multi-site pretraining needs one dataset whose rows say where they come from. Each
input was ingested on its own (its own split, e.g. BUS-UCLM's patient-level one); this
concatenates them after checking they fit together, and tags every row with a
``domain``: the name given for that input, else the domain its ingest wrote.

What must agree: the image size (a generator trains at one size; re-ingest with
``--size``) and the Parquet schema. Differing class sets are an error unless
``union_classes`` is set, because a site without a class silently changes what
"balanced" and per-class metrics mean.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from busgen.data import licences
from busgen.data import schema as S
from busgen.data.dataset import DatasetError, dataset_info, read_table


class CombineConfig(BaseModel):
    """Combine ingested datasets of several sites into one multi-domain dataset, keeping each split.

    Inputs, output and the rules for joining them.
    """

    model_config = ConfigDict(extra="forbid")

    inputs: list[str] = Field(min_length=2, description="ingested dataset folders, one per site/scanner")
    out: str = Field(description="output dataset folder")
    domains: list[str] | None = Field(
        None, description="one domain name per input (default: the domains their ingest wrote)"
    )
    union_classes: bool = Field(False, description="allow inputs with different class sets (the union is kept)")
    overwrite: bool = Field(False, description="replace an existing output dataset")


class CombineError(ValueError):
    """The inputs cannot be combined as asked; the message says which input and how to fix it."""


def _check_inputs(cfg: CombineConfig) -> list[dict]:
    """dataset.json of every input, after checking sizes, schemas and class sets agree."""
    if cfg.domains is not None and len(cfg.domains) != len(cfg.inputs):
        raise CombineError(f"{len(cfg.domains)} domain names for {len(cfg.inputs)} inputs: give one per input")
    for name in cfg.domains or []:
        if not S.is_safe_label(name):
            raise CombineError(f"domain name {name!r} is not a safe name (letters, digits, '_', '.', '-')")
    infos = []
    for path in cfg.inputs:
        info = dataset_info(path)
        if info.get("kind") != "ingested":
            raise DatasetError(f"{path} is not an ingested dataset (no dataset.json): run `busgen ingest` first")
        infos.append(info)
    sizes = {p: i.get("image_size") for p, i in zip(cfg.inputs, infos)}
    if len(set(sizes.values())) > 1:
        raise CombineError(f"image sizes differ: {sizes}; re-ingest every source with the same --size")
    classes = {p: tuple(sorted(i.get("classes", []))) for p, i in zip(cfg.inputs, infos)}
    if len(set(classes.values())) > 1 and not cfg.union_classes:
        raise CombineError(f"class sets differ: {classes}; ingest with the same --classes, or pass --union-classes")
    return infos


def _read_input(path: str, domain: str | None) -> pa.Table:
    table = read_table(path)
    if domain is not None:
        table = table.set_column(table.schema.get_field_index(S.DOMAIN), S.DOMAIN, pa.array([domain] * table.num_rows))
    return table


def domain_counts(table: pa.Table) -> dict[str, dict[str, dict[str, int]]]:
    """Images per domain x split x class: what a multi-site report shows first."""
    counts: dict[str, dict[str, dict[str, int]]] = {}
    keys = zip(*(table.column(c).to_pylist() for c in (S.DOMAIN, S.SPLIT, S.LABEL)))
    for (domain, split, label), n in sorted(Counter(keys).items()):
        counts.setdefault(domain, {}).setdefault(split, {})[label] = n
    return counts


def split_counts(table: pa.Table) -> dict[str, dict[str, int]]:
    """Images per split x class, as ingest's ``dataset.json`` records them."""
    pairs = Counter(zip(table.column(S.SPLIT).to_pylist(), table.column(S.LABEL).to_pylist()))
    return {split: {label: n for (s, label), n in sorted(pairs.items()) if s == split} for split in S.SPLITS}


def combine(cfg: CombineConfig) -> dict:
    """Write the combined dataset (one Parquet file per input plus ``dataset.json``); returns its summary.

    Raises:
        CombineError: sizes, schemas or class sets differ, or the output exists (without ``overwrite``).
        DatasetError: an input is not an ingested dataset.
    """
    infos = _check_inputs(cfg)
    tables = [_read_input(p, (cfg.domains or [None] * len(cfg.inputs))[i]) for i, p in enumerate(cfg.inputs)]
    schemas = {p: t.schema.remove_metadata() for p, t in zip(cfg.inputs, tables)}
    if len({str(s) for s in schemas.values()}) > 1:
        raise CombineError(f"Parquet schemas differ between {list(schemas)}: re-ingest them with this version")
    out = Path(cfg.out)
    if (out / S.DATASET_JSON).exists() and not cfg.overwrite:
        raise CombineError(f"{out} already holds a dataset: pass --overwrite to replace it")
    (out / "data").mkdir(parents=True, exist_ok=True)
    for old in (out / "data").glob("*.parquet"):
        old.unlink()
    for i, table in enumerate(tables):
        pq.write_table(table, out / "data" / f"part-{i:03d}.parquet")
    combined = pa.concat_tables(tables)
    counts = domain_counts(combined)
    info = {
        "schema_version": S.SCHEMA_VERSION,
        "kind": "ingested",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": "combined",
        "layout": "combined",
        "inputs": [
            {"path": str(Path(p).resolve()), "source_name": i.get("source_name"), "n_images": i.get("n_images")}
            for p, i in zip(cfg.inputs, infos)
        ],
        "image_size": infos[0].get("image_size"),
        "resize_mode": infos[0].get("resize_mode"),
        "classes": sorted(set(combined.column(S.LABEL).to_pylist())),
        "domains": sorted(counts),
        "counts": split_counts(combined),
        "counts_by_domain": counts,
        "n_images": combined.num_rows,
        "n_duplicates": sum(int(i.get("n_duplicates", 0)) for i in infos),
        "n_quarantined": sum(int(i.get("n_quarantined", 0)) for i in infos),
        "datasets": licences.merge(*(i.get("datasets") or [] for i in infos)),  # every input's licence and citation
    }
    (out / S.DATASET_JSON).write_text(json.dumps(info, indent=2))
    return info
