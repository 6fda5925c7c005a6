"""Million-scale synthetic generation with Ray Data: deterministic, resumable, exactly-once.

Design, and why:

* **Work unit = shard.** Rows ``[0, N)`` are cut into shards of ``shard_size``
  rows named by their index range (``shard-000000000-000001000.parquet``). The
  Ray Data input is the list of *missing* shards; a stateful sampler actor
  (model loaded once) expands a range into per-row conditions and images,
  micro-batch by micro-batch, streaming row groups into a hidden temporary file
  that is renamed into place when complete. A shard file therefore exists
  completely or not at all, and a re-run generates exactly the missing ranges.
* **Row i is a pure function of (model, seed K, i, sampler settings).** Its class,
  domain and per-image seed come from ``row_conditions``; its box from the
  model's box prior seeded by the image's seed. Nothing depends on actor count,
  scheduling or ``map_batches`` order; batch size only changes float rounding.
* **Flat memory.** The driver sees one small metadata row per finished shard;
  actors hold one micro-batch of images at a time; Parquet row groups are one
  micro-batch, so Arrow binary columns never approach their 2 GiB limit.
* ``manifest.json`` records the settings, model id and completed ranges, and a
  re-run with different settings or another model is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from busgen.core.types import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, SamplerName
from busgen.data import schema as S
from busgen.data.imageio import encode_png

MANIFEST = "manifest.json"
SHARD_FMT = "shard-{start:09d}-{end:09d}.parquet"

SYNTHETIC_SCHEMA = pa.schema(
    [
        (S.IMAGE, pa.binary()),
        (S.MASK, pa.binary()),
        (S.BOX, pa.list_(pa.float32())),
        (S.LABEL, pa.string()),
        (S.DOMAIN, pa.string()),
        (S.SPLIT, pa.string()),
        (S.SOURCE, pa.string()),
        (S.SHA256, pa.string()),
        (S.ORIG_WIDTH, pa.int32()),
        (S.ORIG_HEIGHT, pa.int32()),
        (S.INDEX, pa.int64()),
        (S.SEED, pa.int64()),
        (S.MODEL_ID, pa.string()),
        (S.SAMPLER, pa.string()),
        (S.STEPS, pa.int32()),
        (S.GUIDANCE, pa.float32()),
        (S.CREATED_AT, pa.string()),
    ]
)


class GenerateError(ValueError):
    """Bad settings, a missing model, or a re-run that does not match the existing output."""


class GenerateConfig(BaseModel):
    """Settings of one generation run. Everything that changes pixels is part of the manifest."""

    model: str  # exported model directory (pretrained or adapted)
    out: str  # output folder of shards + manifest.json
    n: int = Field(1000, gt=0)  # number of images
    class_ratio: dict[str, float] | None = (
        None  # e.g. {"benign": 0.5, "malignant": 0.5}; default: uniform over model classes
    )
    domain_ratio: dict[str, float] | None = None  # e.g. {"siteA": 1.0}; default: domain-unconditional
    boxes_file: str | None = None  # CSV with x0,y0,x1,y1 columns: row i uses line i mod len; default: box prior
    sampler: SamplerName = DEFAULT_SAMPLER
    steps: int = Field(25, ge=1)
    guidance: float = Field(DEFAULT_GUIDANCE, ge=0)  # classifier-free guidance scale (1 = none)
    seed: int = 0
    shard_size: int = Field(1000, ge=1)  # rows per shard file (bounds shard rows and bytes)
    batch_size: int = Field(32, ge=1)  # images per forward pass
    concurrency: int = Field(1, ge=1)  # sampler actors
    num_gpus: float = 0.0  # GPUs per actor (1 on GPU clusters)
    num_cpus: float = 0.5  # CPUs per actor; fractional so read/write tasks still get a CPU on small machines
    torch_threads: int = 0  # intra-op threads per actor; 0 = cores / concurrency

    def pixel_settings(self) -> dict:
        """The settings that determine the images: a re-run must match them exactly."""
        return self.model_dump(
            include={
                "n",
                "class_ratio",
                "domain_ratio",
                "sampler",
                "steps",
                "guidance",
                "seed",
                "shard_size",
                "boxes_file",
            }
        )


# ---------------------------------------------------------------------------
# Row conditions: pure functions of (settings, i)
# ---------------------------------------------------------------------------


def exact_counts(ratio: dict[str, float], n: int) -> dict[str, int]:
    """Largest-remainder rounding: counts that sum to n and follow the ratio as closely as integers can."""
    total = sum(ratio.values())
    raw = {k: n * v / total for k, v in ratio.items()}
    counts = {k: int(math.floor(v)) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: (counts[k] - raw[k], k))[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def _affine_permutation(n: int, seed: int, salt: str) -> tuple[int, int]:
    """Parameters (a, b) of i -> (a*i + b) mod n, a bijection on [0, n): a scrambled order in O(1) memory."""
    h = int.from_bytes(hashlib.sha256(f"{salt}:{seed}:{n}".encode()).digest()[:8], "little")
    a = (h | 1) % n or 1
    while math.gcd(a, n) != 1:
        a = (a + 1) % n or 1
    return a, (h >> 32) % n


def image_seed(seed: int, i: int) -> int:
    """Per-image seed from (run seed K, index i): independent streams for every image."""
    return int.from_bytes(hashlib.sha256(f"busgen:{seed}:{i}".encode()).digest()[:8], "little") & (2**62 - 1)


@dataclass(frozen=True)
class RowPlan:
    """Turns an index into its conditions; holds only O(#classes) state so it ships cheaply to actors."""

    n: int
    seed: int
    class_names: tuple[str, ...]
    class_bounds: tuple[int, ...]  # cumulative counts
    domain_names: tuple[str | None, ...]
    domain_bounds: tuple[int, ...]
    class_perm: tuple[int, int]
    domain_perm: tuple[int, int]

    @classmethod
    def build(
        cls, n: int, seed: int, class_ratio: dict[str, float], domain_ratio: dict[str, float] | None
    ) -> "RowPlan":
        classes = exact_counts(class_ratio, n)
        domains = exact_counts(domain_ratio, n) if domain_ratio else {None: n}
        return cls(
            n,
            seed,
            tuple(classes),
            tuple(np.cumsum(list(classes.values())).tolist()),
            tuple(domains),
            tuple(np.cumsum(list(domains.values())).tolist()),
            _affine_permutation(n, seed, "class"),
            _affine_permutation(n, seed, "domain"),
        )

    def _bucket(self, i: int, perm: tuple[int, int], bounds: tuple[int, ...]) -> int:
        j = (perm[0] * i + perm[1]) % self.n
        return next(k for k, b in enumerate(bounds) if j < b)

    def row(self, i: int) -> tuple[str, str | None, int]:
        """(class, domain or None, image seed) of row i."""
        label = self.class_names[self._bucket(i, self.class_perm, self.class_bounds)]
        domain = self.domain_names[self._bucket(i, self.domain_perm, self.domain_bounds)]
        return label, domain, image_seed(self.seed, i)


# ---------------------------------------------------------------------------
# Shards
# ---------------------------------------------------------------------------


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]


def completed_shards(out: Path) -> set[tuple[int, int]]:
    """Ranges whose final shard file exists (files only appear by atomic rename, so they are complete)."""
    done = set()
    for p in out.glob("shard-*-*.parquet"):
        _, start, end = p.stem.split("-")
        done.add((int(start), int(end)))
    return done


def read_boxes_file(path: str | None) -> list[list[float]] | None:
    if not path:
        return None
    import csv

    with open(path, newline="") as fh:
        rows = [[float(r[k]) for k in ("x0", "y0", "x1", "y1")] for r in csv.DictReader(fh)]
    if not rows:
        raise GenerateError(f"boxes file {path} has no rows (need columns x0,y0,x1,y1)")
    return rows


class ShardWriter:
    """Ray Data actor: loads the generator once, then writes whole shards on request."""

    def __init__(self, cfg_json: str, plan: RowPlan):
        import torch

        from busgen.model import generator

        self.cfg = GenerateConfig.model_validate_json(cfg_json)
        threads = self.cfg.torch_threads or max(1, (os.cpu_count() or 1) // self.cfg.concurrency)
        torch.set_num_threads(threads)
        self.gen = generator.load(self.cfg.model)
        self.plan = plan
        self.boxes = read_boxes_file(self.cfg.boxes_file)

    def __call__(self, batch: dict) -> dict:
        results = [self.write_shard(int(s), int(e)) for s, e in zip(batch["start"], batch["end"])]
        return {k: np.array([r[k] for r in results]) for k in results[0]}

    def rows(self, start: int, end: int):
        labels, domains, seeds = zip(*(self.plan.row(i) for i in range(start, end)))
        given = [self.boxes[i % len(self.boxes)] for i in range(start, end)] if self.boxes else None
        boxes = self.gen.resolve_boxes(labels, given, seeds)
        return list(labels), list(domains), list(seeds), boxes

    def write_shard(self, start: int, end: int) -> dict:
        t0 = time.time()
        out = Path(self.cfg.out)
        final = out / SHARD_FMT.format(start=start, end=end)
        tmp = out / f".{final.name}.{uuid.uuid4().hex}.tmp"
        labels, domains, seeds, boxes = self.rows(start, end)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        nbytes = 0
        with pq.ParquetWriter(tmp, SYNTHETIC_SCHEMA) as writer:
            for b in range(0, end - start, self.cfg.batch_size):
                sl = slice(b, b + self.cfg.batch_size)
                images = self.gen.sample(
                    labels[sl],
                    domains[sl],
                    boxes[sl],
                    steps=self.cfg.steps,
                    guidance=self.cfg.guidance,
                    sampler=self.cfg.sampler,
                    seeds=seeds[sl],
                    batch_size=self.cfg.batch_size,
                )
                table = self._table(images, labels[sl], domains[sl], boxes[sl], seeds[sl], start + b, created)
                nbytes += table.nbytes
                writer.write_table(table)
        os.replace(tmp, final)  # atomic: the shard exists completely or not at all
        return {"start": start, "end": end, "rows": end - start, "bytes": nbytes, "seconds": time.time() - t0}

    def _table(self, images, labels, domains, boxes, seeds, first_index, created) -> pa.Table:
        pngs = [encode_png(img) for img in images]
        n, size = len(pngs), images.shape[-1]
        cols = {
            S.IMAGE: pngs,
            S.MASK: [None] * n,
            S.BOX: [list(b) if b is not None and len(b) == 4 else None for b in boxes],
            S.LABEL: labels,
            S.DOMAIN: [d or S.UNKNOWN_DOMAIN for d in domains],
            S.SPLIT: ["train"] * n,
            S.SOURCE: [f"synthetic:{self.gen.model_id}:{first_index + k}" for k in range(n)],
            S.SHA256: [hashlib.sha256(p).hexdigest() for p in pngs],
            S.ORIG_WIDTH: [size] * n,
            S.ORIG_HEIGHT: [size] * n,
            S.INDEX: list(range(first_index, first_index + n)),
            S.SEED: seeds,
            S.MODEL_ID: [self.gen.model_id] * n,
            S.SAMPLER: [self.cfg.sampler] * n,
            S.STEPS: [self.cfg.steps] * n,
            S.GUIDANCE: [self.cfg.guidance] * n,
            S.CREATED_AT: [created] * n,
        }
        return pa.table(cols, schema=SYNTHETIC_SCHEMA)


# ---------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------


def validate(cfg: GenerateConfig):
    """Check everything that can be checked before any work starts; returns (model_id, class_ratio, plan)."""
    from busgen.model import generator

    if not Path(cfg.model, "busgen.json").is_file():
        raise GenerateError(
            f"model {cfg.model} not found (no busgen.json): pass a folder written by `busgen pretrain` or `busgen adapt`"
        )
    gen_meta = json.loads(Path(cfg.model, "busgen.json").read_text())
    class_names = gen_meta["class_names"]
    ratio = cfg.class_ratio or {c: 1.0 for c in class_names}
    unknown = sorted(set(ratio) - set(class_names))
    if unknown:
        raise GenerateError(f"unknown class {unknown} in --class-ratio; the model knows {class_names}")
    if any(v < 0 for v in ratio.values()) or sum(ratio.values()) <= 0:
        raise GenerateError(f"--class-ratio needs non-negative weights with a positive sum, got {ratio}")
    if cfg.domain_ratio:
        bad = sorted(set(cfg.domain_ratio) - set(gen_meta.get("domain_names", [])))
        if bad:
            raise GenerateError(f"unknown domain {bad} in --domain; the model knows {gen_meta.get('domain_names')}")
    read_boxes_file(cfg.boxes_file)
    model_id = generator.weights_fingerprint(cfg.model)
    return model_id, RowPlan.build(cfg.n, cfg.seed, ratio, cfg.domain_ratio)


def _load_or_create_manifest(cfg: GenerateConfig, model_id: str) -> dict:
    out = Path(cfg.out)
    fp = out / MANIFEST
    settings = cfg.pixel_settings()
    if fp.is_file():
        manifest = json.loads(fp.read_text())
        if manifest["settings"] != settings or manifest["model_id"] != model_id:
            changed = sorted(k for k in settings if manifest["settings"].get(k) != settings[k])
            if manifest["model_id"] != model_id:
                changed.append("model")
            raise GenerateError(
                f"{out} holds a generation with different settings ({', '.join(changed)} changed): "
                "re-run with the original settings to resume, or choose a new --out"
            )
        return manifest
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("shard-*.parquet")):
        raise GenerateError(f"{out} holds shards but no {MANIFEST}: choose a new --out")
    manifest = {
        "schema_version": S.SCHEMA_VERSION,
        "kind": "synthetic",
        "model": str(Path(cfg.model).resolve()),
        "model_id": model_id,
        "settings": settings,
        "completed": [],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_manifest(out, manifest)
    return manifest


def _write_manifest(out: Path, manifest: dict) -> None:
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, out / MANIFEST)


@dataclass
class GenerateSummary:
    out: str
    n: int
    generated: int
    skipped: int
    seconds: float
    images_per_s: float

    def line(self) -> str:
        return (
            f"generated {self.generated} images ({self.skipped} already present) -> {self.out}: "
            f"{self.n} total in {self.seconds:.1f}s, {self.images_per_s:.1f} img/s"
        )


def generate(cfg: GenerateConfig, progress: bool = True) -> GenerateSummary:
    """Generate ``cfg.n`` synthetic images into Parquet shards; resumes an interrupted run.

    Raises:
        GenerateError: invalid settings, missing model, or a re-run with changed settings.
    """
    import ray
    from tqdm import tqdm

    from busgen.core.raylocal import init_ray, quiet_ray_data_progress

    model_id, plan = validate(cfg)
    manifest = _load_or_create_manifest(cfg, model_id)
    out = Path(cfg.out)
    for stale in out.glob(".shard-*.tmp"):
        stale.unlink()  # partial shards of a killed run
    done = completed_shards(out)
    todo = [r for r in shard_ranges(cfg.n, cfg.shard_size) if r not in done]
    skipped = sum(e - s for s, e in done)
    t0 = time.time()
    generated = 0
    if todo:
        init_ray()
        quiet_ray_data_progress(False)
        ds = ray.data.from_items([{"start": s, "end": e} for s, e in todo], override_num_blocks=len(todo))
        ds = ds.map_batches(
            ShardWriter,
            batch_size=1,
            fn_constructor_args=(cfg.model_dump_json(), plan),
            compute=ray.data.ActorPoolStrategy(size=cfg.concurrency),
            num_cpus=cfg.num_cpus,
            num_gpus=cfg.num_gpus,
        )
        bar = tqdm(total=cfg.n, initial=skipped, unit="img", desc="generate", disable=not progress, smoothing=0.1)
        for row in ds.iter_rows():
            generated += int(row["rows"])
            manifest["completed"] = sorted(map(list, completed_shards(out)))
            _write_manifest(out, manifest)
            bar.update(int(row["rows"]))
        bar.close()
    manifest["completed"] = sorted(map(list, completed_shards(out)))
    manifest["n_rows"] = sum(e - s for s, e in manifest["completed"])
    _write_manifest(out, manifest)
    if manifest["n_rows"] != cfg.n:
        raise GenerateError(
            f"only {manifest['n_rows']} of {cfg.n} rows exist after the run; re-run the same command to finish"
        )
    seconds = time.time() - t0
    return GenerateSummary(str(out), cfg.n, generated, skipped, seconds, generated / seconds if seconds > 0 else 0.0)


def export_png(dataset_dir: str | Path, out_dir: str | Path) -> int:
    """Write every image of a (synthetic or ingested) set as ``OUT/<label>/<index or stem>.png``; returns the count."""
    import pyarrow.dataset as pads

    from busgen.data.dataset import parquet_files

    out = Path(out_dir)
    count = 0
    dataset = pads.dataset(parquet_files(dataset_dir), format="parquet")
    name_col = S.INDEX if S.INDEX in dataset.schema.names else S.SHA256
    for rb in dataset.to_batches(columns=[S.IMAGE, S.LABEL, name_col], batch_size=256):
        for png, label, name in zip(*(rb.column(c).to_pylist() for c in (S.IMAGE, S.LABEL, name_col))):
            (out / label).mkdir(parents=True, exist_ok=True)
            stem = f"{name:09d}" if isinstance(name, int) else str(name)[:16]
            (out / label / f"{stem}.png").write_bytes(png)
            count += 1
    return count
