"""The sampler actor of a generation run: loads the generator once, then writes whole shards.

What keeps the pool busy (measured against a plain in-process loop, ``evals/benchmarks``):

* **Model load overlaps work.** ``__init__`` starts loading in a background thread and
  returns, so Ray Data hands over the first shard at once; its row conditions and boxes
  are computed while the weights load, and sampling waits only for what is left.
* **Encoding overlaps sampling.** PNG encoding, hashing and the Parquet row-group write
  of micro-batch k run on a writer thread (zlib, hashlib and Arrow release the GIL) while
  micro-batch k+1 samples; at most one micro-batch waits, so memory stays one batch.
* **GPU actors** (``num_gpus`` > 0): the generator gets the inference switches (bf16,
  channels_last, compile) and a micro-batch sized to the GPU's free memory
  (``micro_batch``). On CPU both are no-ops, so CPU output is unchanged.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from busgen.data import schema as S
from busgen.data.imageio import encode_png
from busgen.generate.config import GenerateConfig, read_boxes_file
from busgen.generate.plan import RowPlan
from busgen.generate.store import durable_replace, shard_path

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

GPU_MEMORY_FRACTION = 0.7  # of the free GPU memory a sampling micro-batch may take (activations, both CFG halves)
MAX_GPU_BATCH = 1024


def micro_batch(gen, requested: int, shard_rows: int) -> int:
    """Images per forward pass: ``requested`` on CPU; on CUDA as many as fit the free GPU memory.

    A probe forward at 8 images measures the activation memory per image; the batch is
    the larger of ``requested`` and what ``GPU_MEMORY_FRACTION`` of the free memory holds,
    capped at the shard size and ``MAX_GPU_BATCH``. Batch size changes float rounding only.
    """
    import torch

    device = next(gen.model.parameters()).device
    if device.type != "cuda":
        return requested
    probe = 8  # pragma: no cover, GPU-only below
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    gen.sample([gen.class_names[0]] * probe, steps=1, seeds=list(range(probe)), batch_size=probe)
    per_image = max(1, (torch.cuda.max_memory_allocated(device) - base) // probe)
    free, _ = torch.cuda.mem_get_info(device)
    fits = int(free * GPU_MEMORY_FRACTION // per_image)
    return max(1, min(max(requested, fits), shard_rows, MAX_GPU_BATCH))


class ShardWriter:
    """Ray Data actor: loads the generator once (in the background), then writes whole shards on request."""

    def __init__(self, cfg_json: str, plan: RowPlan, progress=None):
        """``progress``: a ``ProgressCounter`` actor handle told of every micro-batch (None: nobody listens)."""
        import torch

        self.cfg = GenerateConfig.model_validate_json(cfg_json)
        threads = self.cfg.torch_threads or max(1, (os.cpu_count() or 1) // self.cfg.concurrency)
        torch.set_num_threads(threads)
        self.plan = plan
        self.boxes = read_boxes_file(self.cfg.boxes_file)
        self._gen = None
        self._batch = self.cfg.batch_size
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None
        threading.Thread(target=self._load, name="busgen-model-load", daemon=True).start()
        self._io = ThreadPoolExecutor(1, thread_name_prefix="busgen-shard-io")
        self._progress, self._name = progress, uuid.uuid4().hex[:12]

    def _load(self) -> None:
        try:
            from busgen.model import generator

            gen = generator.load(self.cfg.model)
            if self.cfg.num_gpus > 0:
                gen.optimize()  # auto: bf16 + channels_last + compile on CUDA, nothing on CPU
            self._batch = micro_batch(gen, self.cfg.batch_size, self.cfg.shard_size)
            self._gen = gen
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the caller's thread by ``gen``
            self._load_error = exc
        finally:
            self._loaded.set()

    @property
    def gen(self):
        """The loaded generator; waits for the background load and re-raises its error."""
        self._loaded.wait()
        if self._load_error is not None:
            raise self._load_error
        return self._gen

    def __call__(self, batch: dict) -> dict:
        results = [self.write_shard(int(s), int(e)) for s, e in zip(batch["start"], batch["end"])]
        return {k: np.array([r[k] for r in results]) for k in results[0]}

    def rows(self, start: int, end: int):
        labels, domains, seeds = zip(*(self.plan.row(i) for i in range(start, end)))
        given = [self.boxes[i % len(self.boxes)] for i in range(start, end)] if self.boxes else None
        boxes = self._resolve_boxes(labels, given, seeds)
        return list(labels), list(domains), list(seeds), boxes

    def _resolve_boxes(self, labels, given, seeds):
        if given is not None and all(b is not None for b in given):
            return [list(b) for b in given]  # no prior needed: does not wait for the model
        return self.gen.resolve_boxes(labels, given, seeds)

    def write_shard(self, start: int, end: int) -> dict:
        t0 = time.time()
        out = Path(self.cfg.out)
        final = shard_path(out, start, end)
        tmp = out / f".{final.name}.{uuid.uuid4().hex}.tmp"
        labels, domains, seeds, boxes = self.rows(start, end)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        gen, step = self.gen, self._batch
        nbytes = 0
        pending: Future | None = None
        # Page checksums (CRC-32) let a resumed run tell damaged data pages from whole ones (``store``).
        with pq.ParquetWriter(tmp, SYNTHETIC_SCHEMA, write_page_checksum=True) as writer:
            for b in range(0, end - start, step):
                sl = slice(b, b + step)
                images = gen.sample(
                    labels[sl],
                    domains[sl],
                    boxes[sl],
                    steps=self.cfg.steps,
                    guidance=self.cfg.guidance,
                    sampler=self.cfg.sampler,
                    seeds=seeds[sl],
                    batch_size=step,
                    protect=self.cfg.protect,
                    protect_strength=self.cfg.protect_strength,
                    protect_threshold=self.cfg.protect_threshold,
                    protect_min_fit=self.cfg.protect_min_fit,
                )
                if self._progress is not None:
                    self._progress.add.remote(self._name, len(images))  # fire and forget: the bar moves per batch
                if pending is not None:
                    nbytes += pending.result()  # at most one micro-batch waits to be written
                args = (writer, images, labels[sl], domains[sl], boxes[sl], seeds[sl], start + b, created)
                pending = self._io.submit(self._write_batch, *args)
            if pending is not None:
                nbytes += pending.result()
        durable_replace(tmp, final)  # fsynced, atomic: the shard exists completely or not at all
        return {"start": start, "end": end, "rows": end - start, "bytes": nbytes, "seconds": time.time() - t0}

    def _write_batch(self, writer, images, labels, domains, boxes, seeds, first_index, created) -> int:
        table = self._table(images, labels, domains, boxes, seeds, first_index, created)
        writer.write_table(table)
        return table.nbytes

    def _table(self, images, labels, domains, boxes, seeds, first_index, created) -> pa.Table:
        pngs = [encode_png(img) for img in images]
        n, size = len(pngs), images.shape[-1]
        model_id = self.gen.model_id
        cols = {
            S.IMAGE: pngs,
            S.MASK: [None] * n,
            S.BOX: [list(b) if b is not None and len(b) == 4 else None for b in boxes],
            S.LABEL: labels,
            S.DOMAIN: [d or S.UNKNOWN_DOMAIN for d in domains],
            S.SPLIT: ["train"] * n,
            S.SOURCE: [f"synthetic:{model_id}:{first_index + k}" for k in range(n)],
            S.SHA256: [hashlib.sha256(p).hexdigest() for p in pngs],
            S.ORIG_WIDTH: [size] * n,
            S.ORIG_HEIGHT: [size] * n,
            S.INDEX: list(range(first_index, first_index + n)),
            S.SEED: seeds,
            S.MODEL_ID: [model_id] * n,
            S.SAMPLER: [self.cfg.sampler] * n,
            S.STEPS: [self.cfg.steps or self.gen.default_steps] * n,
            S.GUIDANCE: [self.cfg.guidance] * n,
            S.CREATED_AT: [created] * n,
        }
        return pa.table(cols, schema=SYNTHETIC_SCHEMA)
