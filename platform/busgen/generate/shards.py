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
* **Durable and verified.** Shards are fsynced before and after the rename and carry
  Parquet page checksums; a resumed run counts a shard as done only when its footer,
  data pages, indices and image hashes check and its range is on the run's tiling.
  Anything else is moved to ``_quarantine/`` with a warning and regenerated (``store``).
* **One run per folder.** A lock file naming the holder's pid and host keeps a second
  run on the same ``--out`` from deleting the first one's temporary files (``outlock``).
* ``manifest.json`` records the settings, model id and completed ranges, and a
  re-run with different settings or another model is refused.

Modules: ``config`` (settings, errors, boxes file), ``plan`` (row conditions), ``store``
(shard files and manifest), ``outlock`` (the folder lock); this one runs the work. Their
public names are re-exported here.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from busgen.data import schema as S
from busgen.generate.config import BOX_COLUMNS, GenerateConfig, GenerateError, GenerateWarning, read_boxes_file
from busgen.generate.outlock import LOCK_FILE, OutputLock
from busgen.generate.plan import RowPlan, exact_counts, image_seed, shard_ranges
from busgen.generate.progress import POLL_S, ProgressCounter, batches, steady_rate
from busgen.generate.store import (
    MANIFEST,
    SHARD_FMT,
    completed_shards,
    load_or_create_manifest,
    quarantine_shards,
    write_manifest,
)
from busgen.generate.writer import SYNTHETIC_SCHEMA, ShardWriter

__all__ = [
    "BOX_COLUMNS",
    "LOCK_FILE",
    "MANIFEST",
    "SHARD_FMT",
    "GenerateConfig",
    "GenerateError",
    "GenerateSummary",
    "GenerateWarning",
    "RowPlan",
    "SYNTHETIC_SCHEMA",
    "ShardWriter",
    "completed_shards",
    "exact_counts",
    "export_png",
    "generate",
    "image_seed",
    "read_boxes_file",
    "shard_ranges",
    "validate",
]

# ---------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------


def validate(cfg: GenerateConfig):
    """Check everything that can be checked before any work starts; returns (model_id, plan)."""
    from busgen.model import generator

    try:
        gen_meta = generator.read_meta(cfg.model)
    except generator.ModelNotFoundError:
        raise GenerateError(
            f"model {cfg.model} not found (no busgen.json): pass a folder written by `busgen pretrain` or "
            "`busgen adapt`"
        ) from None
    except generator.ModelLoadError as exc:
        raise GenerateError(f"model {cfg.model}: {exc}") from None
    class_names = gen_meta["class_names"]
    ratio = cfg.class_ratio or {c: 1.0 for c in class_names}
    unknown = sorted(set(ratio) - set(class_names))
    if unknown:
        raise GenerateError(f"unknown class {unknown} in --class-ratio; the model knows {class_names}")
    for option, weights in (("--class-ratio", ratio), ("--domain", cfg.domain_ratio or {})):
        if not all(math.isfinite(v) and v >= 0 for v in weights.values()) or (weights and sum(weights.values()) <= 0):
            raise GenerateError(
                f"{option} needs finite, non-negative weights with a positive sum, got {weights}: "
                "pass e.g. benign=1,malignant=1"
            )
    if cfg.domain_ratio:
        bad = sorted(set(cfg.domain_ratio) - set(gen_meta.get("domain_names", [])))
        if bad:
            raise GenerateError(f"unknown domain {bad} in --domain; the model knows {gen_meta.get('domain_names')}")
    read_boxes_file(cfg.boxes_file)
    if cfg.protect != "none":  # fail closed before any actor starts: no classifier, or one that did not fit
        from busgen.model import protect

        try:
            protect.check_protect_fit(cfg.model, cfg.protect_min_fit)
        except protect.ProtectError as exc:
            raise GenerateError(str(exc)) from None
    model_id = generator.weights_fingerprint(cfg.model)
    return model_id, RowPlan.build(cfg.n, cfg.seed, ratio, cfg.domain_ratio)


@dataclass
class GenerateSummary:
    """What a run did. ``images_per_s`` is end to end (actor start and model load included);
    ``steady_images_per_s`` is the running pool's rate, per actor after its first micro-batch
    (``busgen.generate.progress.steady_rate``; 0 when no actor sampled two batches)."""

    out: str
    n: int
    generated: int
    skipped: int
    seconds: float
    images_per_s: float
    steady_images_per_s: float = 0.0
    shards: int = 0  # shards written by this run
    batches: int = 0  # micro-batches sampled by this run (the progress bar moves once per batch)

    def line(self) -> str:
        steady = f", steady {self.steady_images_per_s:.1f} img/s" if self.steady_images_per_s else ""
        return (
            f"generated {self.generated} images ({self.skipped} already present) -> {self.out}: "
            f"{self.n} total in {self.seconds:.1f}s, {self.images_per_s:.1f} img/s{steady}"
        )


MANIFEST_EVERY_S = 2.0  # the manifest is a progress record (resume trusts shard footers): rewrite it at most this often


def pool_strategy(cfg: GenerateConfig):
    """Sampler actors: ``concurrency`` of them, or on GPUs one per ``num_gpus`` share of the cluster's GPUs."""
    import ray

    if cfg.num_gpus <= 0:
        return ray.data.ActorPoolStrategy(size=cfg.concurrency)
    gpus = float(ray.cluster_resources().get("GPU", 0))
    most = max(cfg.concurrency, int(gpus // cfg.num_gpus))
    return ray.data.ActorPoolStrategy(min_size=min(cfg.concurrency, most), max_size=most)


def generate(cfg: GenerateConfig, progress: bool = True) -> GenerateSummary:
    """Generate ``cfg.n`` synthetic images into Parquet shards; resumes an interrupted run.

    Raises:
        GenerateError: invalid settings, missing model, a re-run with changed settings, or ``cfg.out``
            in use by another live run.

    Warns:
        GenerateWarning: a damaged or stray shard is quarantined and regenerated, or a dead run's lock is taken over.
    """
    model_id, plan = validate(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with OutputLock(out):  # before touching anything: the temp files below may be a live run's
        return _generate_locked(cfg, model_id, plan, progress)


def _generate_locked(cfg: GenerateConfig, model_id: str, plan: RowPlan, progress: bool) -> GenerateSummary:
    import ray
    from tqdm import tqdm

    from busgen.core.raylocal import init_ray, quiet_ray_data_progress

    out = Path(cfg.out)
    manifest = load_or_create_manifest(cfg, model_id)
    for stale in out.glob(".shard-*.tmp"):
        stale.unlink()  # partial shards of a killed run (the lock says no other run is writing)
    expected = set(shard_ranges(cfg.n, cfg.shard_size))
    done = quarantine_shards(out, expected)  # damaged, stray and off-tiling files move aside, with a warning each
    todo = [r for r in shard_ranges(cfg.n, cfg.shard_size) if r not in done]
    skipped = sum(e - s for s, e in done)
    t0 = time.time()
    generated, t_written, counted = 0, 0.0, {"images": 0, "actors": {}}
    if todo:
        init_ray()
        quiet_ray_data_progress(False)
        counter = ray.remote(num_cpus=0)(ProgressCounter).remote()
        ds = ray.data.from_items([{"start": s, "end": e} for s, e in todo], override_num_blocks=len(todo))
        ds = ds.map_batches(
            ShardWriter,
            batch_size=1,
            fn_constructor_args=(cfg.model_dump_json(), plan, counter),
            compute=pool_strategy(cfg),
            num_cpus=cfg.num_cpus,
            num_gpus=cfg.num_gpus,
        )
        bar = tqdm(total=cfg.n, initial=skipped, unit="img", desc="generate", disable=not progress, smoothing=0.1)
        with follow(counter, bar, skipped, enabled=progress):
            for row in ds.iter_rows():
                generated += int(row["rows"])
                done.add((int(row["start"]), int(row["end"])))
                if time.time() - t_written >= MANIFEST_EVERY_S:
                    manifest["completed"] = sorted(map(list, done))
                    write_manifest(out, manifest)
                    t_written = time.time()
        counted = final_count(counter, generated)
        bar.n = skipped + generated
        bar.close()
        ray.kill(counter)
    # Footers re-read (data was verified at the start or just written): what is really there.
    manifest["completed"] = sorted(map(list, completed_shards(out, expected, verify_data=False)))
    manifest["n_rows"] = sum(e - s for s, e in manifest["completed"])
    write_manifest(out, manifest)
    if manifest["n_rows"] != cfg.n:
        raise GenerateError(
            f"only {manifest['n_rows']} of {cfg.n} rows exist after the run; re-run the same command to finish"
        )
    seconds = time.time() - t0
    rate = generated / seconds if seconds > 0 else 0.0
    steady = steady_rate(counted)
    return GenerateSummary(str(out), cfg.n, generated, skipped, seconds, rate, steady, len(todo), batches(counted))


def final_count(counter, generated: int, wait_s: float = 2.0) -> dict:
    """The counter's snapshot once it has every image (a writer's last ``add`` may land after its shard returned)."""
    import ray

    deadline = time.time() + wait_s
    while True:
        snap = ray.get(counter.snapshot.remote())
        if snap["images"] >= generated or time.time() > deadline:
            return snap
        time.sleep(0.05)


@contextmanager
def follow(counter, bar, skipped: int, enabled: bool):
    """While the block runs, move ``bar`` to the counter's image count every ``POLL_S`` (a driver thread)."""
    import ray

    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(POLL_S):
            try:
                bar.n = skipped + ray.get(counter.snapshot.remote(), timeout=5)["images"]
                bar.refresh()
            except Exception:  # noqa: BLE001 -- a late or lost reading only delays the bar
                continue

    thread = threading.Thread(target=poll, name="busgen-generate-progress", daemon=True)
    if enabled:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if enabled:
            thread.join()


def export_png(dataset_dir: str | Path, out_dir: str | Path) -> int:
    """Write every image of a (synthetic or ingested) set as ``OUT/<label>/<index or stem>.png``; returns the count.

    Labels become folder names, so a set from elsewhere could carry ``../../x``: every
    label must pass ``schema.is_safe_label`` or nothing is written.

    Raises:
        DatasetError: a label that is not a safe folder name.
    """
    import pyarrow.dataset as pads

    from busgen.data.dataset import DatasetError, parquet_files

    out = Path(out_dir)
    count = 0
    dataset = pads.dataset(parquet_files(dataset_dir), format="parquet")
    name_col = S.INDEX if S.INDEX in dataset.schema.names else S.SHA256
    labels = set(dataset.to_table(columns=[S.LABEL]).column(S.LABEL).to_pylist())
    unsafe = sorted((lbl for lbl in labels if not (isinstance(lbl, str) and S.is_safe_label(lbl))), key=str)
    if unsafe:
        raise DatasetError(
            f"{dataset_dir}: labels {unsafe[:5]} are not safe folder names (letters, digits, '_', '.', '-'): "
            "re-ingest the set (ingest quarantines such labels) before exporting"
        )
    for rb in dataset.to_batches(columns=[S.IMAGE, S.LABEL, name_col], batch_size=256):
        for png, label, name in zip(*(rb.column(c).to_pylist() for c in (S.IMAGE, S.LABEL, name_col))):
            (out / label).mkdir(parents=True, exist_ok=True)
            stem = f"{name:09d}" if isinstance(name, int) else str(name)[:16]
            (out / label / f"{stem}.png").write_bytes(png)
            count += 1
    return count
