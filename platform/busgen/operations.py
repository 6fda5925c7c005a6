"""The one registry of operations that every face runs: the ``busgen`` CLI, ``jobs/*.py`` and the demo.

An operation is a typed config class and a function ``run(cfg) -> dict`` of JSON-able
results (defined in ``busgen.runs``). Faces only parse arguments into the config and
print or store the result, so a command behaves the same from a terminal, from
``ray job submit`` and from Python::

    from busgen.operations import OPERATIONS
    op = OPERATIONS["generate"]
    result = op.run(op.config_class(model="models/busgen-tiny", out="synthetic/run1", n=64))

Config classes and functions are named by import path and resolved on first use, so
``busgen --help`` does not import torch or Ray. Paths in ``location_fields`` are made
absolute before ``run``: Ray workers run in another working directory than the driver.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel

from busgen.core.storage import resolve_location


@dataclass(frozen=True)
class Operation:
    """One operation: where its config class and its function live, and how faces present it."""

    name: str
    config: str  # "module:Class" of the typed config (pydantic)
    function: str  # "module:function" taking the config, returning a dict of results
    summary: str  # one line for --help
    positional: tuple[str, ...] = ()  # CLI positional arguments, in order, as config fields
    location_fields: tuple[str, ...] = ()  # path fields made absolute before running (Ray workers' cwd differs)
    protocols: tuple[str, ...] = ()  # operations a config file may hand this one to (its `protocol:` key)

    @property
    def config_class(self) -> type[BaseModel]:
        return _resolve(self.config)

    def run(self, cfg: BaseModel) -> dict:
        """Run the operation on ``cfg`` (paths made absolute); returns its results."""
        updates = {}
        for name in self.location_fields:
            value = getattr(cfg, name, None)
            if isinstance(value, str) and value:
                updates[name] = resolve_location(value)
        return _resolve(self.function)(cfg.model_copy(update=updates) if updates else cfg)


def _resolve(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


# ----------------------------------------------------------------------------- the registry

_OPS = "busgen.runs"

OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation(
            "phantom",
            f"{_OPS}:PhantomRun",
            f"{_OPS}:run_phantom",
            "Write a deterministic breast-ultrasound phantom dataset (the embedded default data).",
        ),
        Operation(
            "ingest",
            f"{_OPS}:IngestRun",
            f"{_OPS}:run_ingest",
            "Ingest a BUS dataset (folders, BUSI, CSV manifest, DICOM) into Parquet with Ray Data.",
            positional=("src",),
            location_fields=("src", "out"),
        ),
        Operation(
            "combine",
            "busgen.data.combine:CombineConfig",
            f"{_OPS}:run_combine",
            "Combine ingested datasets of several sites into one multi-domain dataset, keeping each split.",
            positional=("inputs",),
        ),
        Operation(
            "dataset-report",
            f"{_OPS}:DatasetReportRun",
            f"{_OPS}:run_dataset_report",
            "Write a Markdown report of a dataset: counts, quarantine, sample grid per class.",
            positional=("dataset",),
        ),
        Operation(
            "pretrain",
            "busgen.train.pretrain:PretrainConfig",
            f"{_OPS}:run_pretrain",
            "Pretrain the diffusion generator on Ray Train (resumes a run of the same run_name) and export it.",
            location_fields=("data_dir", "storage_path", "out"),
        ),
        Operation(
            "adapt",
            "busgen.train.adapt:AdaptConfig",
            f"{_OPS}:run_adapt",
            "Adapt a pretrained generator few-shot to a new task (LoRA or full fine-tune) on Ray Train.",
            location_fields=("base", "data_dir", "out", "storage_path"),
        ),
        Operation(
            "generate",
            "busgen.generate.resume:GenerateJobConfig",
            f"{_OPS}:run_generate",
            "Generate a synthetic image set with Ray Data: deterministic, resumable Parquet shards.",
            location_fields=("model", "out", "boxes_file"),
        ),
        Operation(
            "export-hub",
            f"{_OPS}:ExportHubRun",
            f"{_OPS}:run_export_hub",
            "Write a model folder as a Hugging Face Hub repository: model card, safetensors weights, configs.",
            positional=("model", "out"),
        ),
        Operation(
            "export-png",
            f"{_OPS}:ExportPngRun",
            f"{_OPS}:run_export_png",
            "Write the images of a dataset as PNG files, one folder per class.",
            positional=("dataset", "out"),
        ),
        Operation(
            "evaluate",
            "busgen.eval.runner:SuiteConfig",
            f"{_OPS}:run_evaluate",
            "Run an evaluation suite (utility, fidelity, privacy, FID vs steps) on Ray Tune and write a report.",
            location_fields=("real_dir", "model", "synthetic_dir", "source", "out"),
            protocols=("multisite",),  # `protocol: multisite` suite files (evals/suites/multisite*.yaml)
        ),
        Operation(
            "share-filter",
            f"{_OPS}:ShareFilterRun",
            f"{_OPS}:run_share_filter",
            "Write a shareable copy of a synthetic set without memorised or copied images, with an audit record.",
            positional=("synthetic",),
        ),
        Operation(
            "sweep",
            "busgen.eval.sweep:SweepConfig",
            f"{_OPS}:run_sweep",
            "Run a grid sweep (one Ray Tune trial per grid point) and write its results table.",
            location_fields=("out", "storage_path"),
        ),
        Operation(
            "few-shot",
            "busgen.eval.fewshot:FewShotConfig",
            f"{_OPS}:run_few_shot",
            "Adapt with several K and score each K (domain score, FID).",
            location_fields=("base", "target_dir", "reference_dir", "out", "storage_path"),
        ),
        Operation(
            "multisite",
            "busgen.eval.multisite.config:MultisiteConfig",
            f"{_OPS}:run_multisite",
            "Multi-site protocol: target-only, foundation + few-shot (LoRA/full) and joint generators, cross-site AUC.",
            location_fields=("out", "work_dir", "joint_dir"),
        ),
        Operation(
            "demo",
            f"{_OPS}:DemoRun",
            f"{_OPS}:run_demo",
            "Run the whole pipeline on CPU (data, ingest, pretrain, generate, evaluate) and write a report.",
        ),
        Operation(
            "protect",
            "busgen.train.protect:ProtectConfig",
            f"{_OPS}:run_protect",
            "Train a generator's CPSample protection classifier (fits random labels of its noisy training images).",
            location_fields=("model", "data_dir"),
        ),
        Operation(
            "tradeoff",
            "busgen.eval.tradeoff:TradeoffConfig",
            "busgen.eval.tradeoff:run_tradeoff",
            "Sweep CPSample's strength: FID, synthetic-only AUC, memorisation, DCR attack and img/s per alpha; plot.",
            location_fields=("model", "data_dir", "out"),
        ),
        Operation(
            "serve",
            f"{_OPS}:ServeRun",
            f"{_OPS}:run_serve",
            "Serve generators and a classifier over HTTP with Ray Serve (token from $BUSGEN_API_TOKEN).",
        ),
    )
}


def config_file_of(words: Sequence[str]) -> str | None:
    """The ``--config FILE`` (or ``--config=FILE``) among command-line ``words``, resolved like the parser does."""
    from busgen.core.cli_args import pop_option, resolve_config_path

    _, path = pop_option(words, "--config")
    return None if path is None else resolve_config_path(path)


def dispatch(op: Operation, words: Sequence[str]) -> Operation:
    """The operation that runs ``words``: ``op``, or the one its config file names with a top-level ``protocol:``.

    One command runs every suite file (``busgen evaluate --config evals/suites/multisite_cpu.yaml``)
    although a protocol such as the multi-site one has its own config class: the file says
    which, so the user does not have to. Only the protocols ``op`` lists are accepted.

    Raises:
        ConfigError: the file names a protocol ``op`` does not run.
    """
    from busgen.core.config import ConfigError

    path = config_file_of(words) if op.protocols else None
    if path is None or not Path(path).is_file():
        return op  # no file, or a missing one: the config loader reports it
    import yaml

    try:
        spec = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError:
        return op  # the config loader reports the syntax error with its position
    protocol = spec.get("protocol") if isinstance(spec, dict) else None
    if protocol is None or protocol == op.name:
        return op
    if protocol not in op.protocols:
        known = ", ".join((op.name, *op.protocols))
        raise ConfigError(f"{path}: protocol {protocol!r} is not run by `busgen {op.name}`; known: {known}")
    return operation(protocol)


def operation(name: str) -> Operation:
    """The registered operation ``name``; a clear error lists the others."""
    from busgen.core.config import ConfigError

    if name not in OPERATIONS:
        raise ConfigError(f"unknown operation {name!r}; known: {', '.join(OPERATIONS)}")
    return OPERATIONS[name]
