"""The ``busgen`` command line: the same operations as ``jobs/`` and the Python API, for people.

Heavy imports (ray, torch) happen inside commands so that ``busgen --help`` is instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="BUSGen Platform: breast-ultrasound generative modelling on Ray."
)


def fail(message: str, code: int = 2) -> None:
    """Print a clear error (what went wrong and what to do) and exit non-zero."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def parse_csv_list(value: Optional[str]) -> Optional[list[str]]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@app.command()
def phantom(
    out: Path = typer.Option(..., "--out", help="output folder (class folders with *_mask.png siblings)"),
    n: int = typer.Option(300, "--n", help="number of images"),
    size: int = typer.Option(64, "--size", help="image side in pixels"),
    seed: int = typer.Option(0, "--seed", help="base seed; same seed gives identical bytes"),
    style: str = typer.Option("a", "--style", help="simulated device: a | b"),
    classes: Optional[str] = typer.Option(None, "--classes", help="comma list from benign,malignant,normal"),
):
    """Write a deterministic breast-ultrasound phantom dataset (the embedded default data)."""
    from busgen.data.phantom import CLASSES, write_phantom

    try:
        write_phantom(out, n, size, seed, style, tuple(parse_csv_list(classes) or CLASSES))
    except ValueError as exc:
        fail(str(exc))
    typer.echo(f"wrote {n} phantom images ({size}px, style {style}, seed {seed}) to {out}")


@app.command()
def ingest(
    src: Path = typer.Argument(..., help="class-folder tree, folder with labels.csv, or CSV manifest"),
    out: Path = typer.Option(..., "--out", help="output dataset folder"),
    size: int = typer.Option(128, "--size", help="stored image side in pixels"),
    resize_mode: str = typer.Option(
        "pad", "--resize-mode", help="pad (keep aspect, zero-pad) | crop (keep aspect, centre crop) | stretch"
    ),
    domain: Optional[str] = typer.Option(
        None, "--domain", help="device/site id for all rows (default: manifest column, else source name)"
    ),
    classes: Optional[str] = typer.Option(
        None, "--classes", help="comma list of allowed labels; others are quarantined"
    ),
    seed: int = typer.Option(0, "--seed", help="seed of the stratified split when the source has none"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing output dataset"),
):
    """Ingest a BUS dataset (folders, BUSI, CSV manifest, DICOM) into Parquet with Ray Data."""
    from busgen.data.ingest import IngestConfig, IngestError
    from busgen.data.ingest import ingest as run_ingest

    if resize_mode not in ("pad", "crop", "stretch"):
        fail(f"unknown --resize-mode {resize_mode!r}: use pad, crop or stretch")
    cfg = IngestConfig(
        size=size,
        resize_mode=resize_mode,
        domain=domain,
        classes=parse_csv_list(classes),
        seed=seed,
        overwrite=overwrite,
    )
    try:
        summary = run_ingest(src, out, cfg, progress=sys.stderr.isatty())
    except IngestError as exc:
        fail(str(exc))
    typer.echo(summary.line())
    for split, counts in summary.counts.items():
        typer.echo(f"  {split}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))


@app.command("dataset-report")
def dataset_report(
    dataset: Path = typer.Argument(..., help="ingested or synthetic dataset folder"),
    out: Path = typer.Option(..., "--out", help="report folder (report.md + PNGs)"),
):
    """Write a Markdown report of a dataset: counts, quarantine, sample grid per class."""
    from busgen.data.dataset import DatasetError
    from busgen.data.report import dataset_report as make_report

    try:
        path = make_report(dataset, out)
    except DatasetError as exc:
        fail(str(exc))
    typer.echo(f"report: {path}")


def parse_ratio(value: Optional[str], flag: str) -> Optional[dict[str, float]]:
    """'benign=0.5,malignant=0.5' -> {'benign': 0.5, 'malignant': 0.5}; a bare name means weight 1."""
    if not value:
        return None
    out = {}
    for part in parse_csv_list(value) or []:
        name, _, weight = part.partition("=")
        try:
            out[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            fail(f"{flag}: cannot read weight {weight!r} of {name!r}; use name=0.5,other=0.5")
    return out


def load_typed_config(cls, config: Optional[Path], overrides: Optional[List[str]]):
    """YAML file + key=value overrides -> typed config, or a clear error and exit 2."""
    from busgen.core.config import ConfigError, load_config

    try:
        return load_config(cls, config, overrides or [])
    except ConfigError as exc:
        fail(str(exc))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def pretrain(
    config: Optional[Path] = typer.Option(
        None, "--config", help="YAML file of PretrainConfig fields (see evals/suites/pretrain_tiny.yaml)"
    ),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. max_steps=500 num_workers=2"),
):
    """Pretrain the diffusion generator on Ray Train (resumes a run of the same run_name) and export it."""
    from busgen.core.raylocal import init_ray
    from busgen.train.pretrain import PretrainConfig
    from busgen.train.pretrain import pretrain as run_pretrain

    cfg = load_typed_config(PretrainConfig, config, overrides)
    init_ray()
    result = run_pretrain(cfg)
    metrics = result.metrics or {}
    typer.echo(
        f"pretrained {cfg.preset} to step {metrics.get('step')} (loss {metrics.get('loss_avg', float('nan')):.4f}) -> {cfg.out}"
    )


@app.command()
def adapt(
    base: Path = typer.Option(..., "--base", help="pretrained model folder"),
    data: Path = typer.Option(
        ..., "--data", help="ingested dataset of the new task (support images from its train split)"
    ),
    shots: int = typer.Option(10, "--shots", help="K labelled images per class"),
    out: Path = typer.Option(..., "--out", help="adapted model folder"),
    classes: Optional[str] = typer.Option(
        None, "--classes", help="label set of the new task, comma list (default: all labels in the data)"
    ),
    method: str = typer.Option("lora", "--method", help="lora | full"),
    steps: int = typer.Option(
        200, "--steps", help="fine-tuning steps (a fixed small budget guards against overfitting)"
    ),
    seed: int = typer.Option(0, "--seed", help="seed of the support-set choice and of training"),
    overrides: Optional[List[str]] = typer.Argument(
        None, help="more AdaptConfig key=value overrides, e.g. lora_rank=8"
    ),
):
    """Adapt a pretrained generator few-shot to a new task (LoRA or full fine-tune) on Ray Train."""
    from busgen.train.adapt import AdaptConfig, AdaptError
    from busgen.train.adapt import adapt as run_adapt

    base_fields = [
        f"base={base}",
        f"data_dir={data}",
        f"out={out}",
        f"shots={shots}",
        f"method={method}",
        f"max_steps={steps}",
        f"seed={seed}",
    ]
    if classes:
        base_fields.append(f"classes=[{classes}]")
    cfg = load_typed_config(AdaptConfig, None, base_fields + list(overrides or []))
    try:
        path = run_adapt(cfg)
    except AdaptError as exc:
        fail(str(exc))
    typer.echo(f"adapted {base} with {shots} shots per class ({method}) -> {path}")


@app.command()
def generate(
    model: Path = typer.Option(..., "--model", help="exported model folder (pretrained or adapted)"),
    n: int = typer.Option(..., "--n", help="number of images"),
    out: Path = typer.Option(..., "--out", help="output folder (Parquet shards + manifest.json)"),
    class_ratio: Optional[str] = typer.Option(
        None, "--class-ratio", help="e.g. benign=0.5,malignant=0.5 (default: uniform)"
    ),
    domain: Optional[str] = typer.Option(
        None, "--domain", help="domain name, or ratio siteA=0.7,siteB=0.3 (default: unconditional)"
    ),
    boxes: Optional[Path] = typer.Option(
        None, "--boxes", help="CSV of x0,y0,x1,y1 boxes (row i uses line i mod len); default: box prior"
    ),
    sampler: str = typer.Option("ddim", "--sampler", help="ddim | dpmpp | ddpm"),
    steps: int = typer.Option(25, "--steps", help="sampling steps"),
    guidance: float = typer.Option(1.8, "--guidance", help="classifier-free guidance scale (1 = none)"),
    seed: int = typer.Option(0, "--seed", help="run seed K: image i depends only on (model, K, i, settings)"),
    shard_size: int = typer.Option(1000, "--shard-size", help="rows per Parquet shard"),
    batch_size: int = typer.Option(32, "--batch-size", help="images per forward pass"),
    concurrency: int = typer.Option(1, "--concurrency", help="sampler actors"),
    num_gpus: float = typer.Option(0.0, "--num-gpus", help="GPUs per sampler actor"),
):
    """Generate a synthetic image set with Ray Data: deterministic, resumable Parquet shards."""
    from pydantic import ValidationError

    from busgen.generate.shards import GenerateConfig, GenerateError
    from busgen.generate.shards import generate as run_generate

    try:
        cfg = GenerateConfig(
            model=str(model),
            out=str(out),
            n=n,
            class_ratio=parse_ratio(class_ratio, "--class-ratio"),
            domain_ratio=parse_ratio(domain, "--domain"),
            boxes_file=str(boxes) if boxes else None,
            sampler=sampler,
            steps=steps,
            guidance=guidance,
            seed=seed,
            shard_size=shard_size,
            batch_size=batch_size,
            concurrency=concurrency,
            num_gpus=num_gpus,
        )
        summary = run_generate(cfg, progress=True)
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    except GenerateError as exc:
        fail(str(exc))
    typer.echo(summary.line())


@app.command("export-png")
def export_png(
    dataset: Path = typer.Argument(..., help="synthetic (or ingested) dataset folder"),
    out: Path = typer.Argument(..., help="output folder: <label>/<index>.png"),
):
    """Write the images of a dataset as PNG files, one folder per class."""
    from busgen.data.dataset import DatasetError
    from busgen.generate.shards import export_png as run_export

    try:
        count = run_export(dataset, out)
    except DatasetError as exc:
        fail(str(exc))
    typer.echo(f"wrote {count} PNG files to {out}")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="output folder; the report is <out>/report.md"),
    data: str = typer.Option("phantom", "--data", help="phantom | busi (shared real BUSI copy) | a folder to ingest"),
    size: int = typer.Option(32, "--size", help="image side in pixels"),
    train_steps: int = typer.Option(600, "--train-steps", help="pretraining steps"),
    n_synthetic: int = typer.Option(300, "--n-synthetic", help="synthetic images to generate"),
):
    """Run the whole pipeline on CPU (data, ingest, pretrain, generate, evaluate) and write a report."""
    from busgen.demo import DemoConfig, run_demo

    run_demo(DemoConfig(out=str(out), data=data, size=size, train_steps=train_steps, n_synthetic=n_synthetic))


def _suite_path(suite: str) -> Path:
    """A suite file path, or a suite name looked up in ./evals/suites/<name>.yaml."""
    path = Path(suite)
    if path.is_file():
        return path
    named = Path("evals") / "suites" / f"{suite}.yaml"
    if named.is_file():
        return named
    fail(f"suite {suite!r} not found: pass a YAML file or a name under evals/suites/")


@app.command()
def evaluate(
    suite: str = typer.Option(
        ...,
        "--suite",
        help="suite YAML file, or a name under evals/suites/ (utility, utility_ci, sampler_steps, busi_full)",
    ),
    out: Path = typer.Option(..., "--out", help="report folder: report.md, PNGs, results.parquet/.csv, results.json"),
    overrides: Optional[List[str]] = typer.Argument(
        None, help="key=value overrides, e.g. real_dir=DATA model=MODEL utility.seeds=[0]"
    ),
):
    """Run an evaluation suite (utility, fidelity, privacy, FID vs steps) on Ray Tune and write a report."""
    from busgen.core.config import ConfigError, load_config
    from busgen.eval.runner import SuiteConfig, run_suite

    try:
        cfg = load_config(SuiteConfig, _suite_path(suite), [*(overrides or []), f"out={out}"])
    except ConfigError as exc:
        fail(str(exc))
    record = run_suite(cfg)
    typer.echo(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record["metrics"].items()))
    typer.echo(f"report: {Path(cfg.out).resolve() / 'report.md'}")
    if record["metrics"].get("utility_trials_failed"):
        fail(f"{record['metrics']['utility_trials_failed']} utility trial(s) failed; see the report", code=1)


@app.command("share-filter")
def share_filter(
    synthetic: Path = typer.Argument(..., help="synthetic dataset folder (busgen generate output)"),
    real: Path = typer.Option(..., "--real", help="the generator's real training data (ingested dataset)"),
    out: Path = typer.Option(..., "--out", help="filtered copy: Parquet + manifest + audit.json"),
    split: Optional[str] = typer.Option(
        "train", "--split", help="split of --real the generator trained on ('' = all rows)"
    ),
    encoder_epochs: int = typer.Option(30, "--encoder-epochs", help="copy-encoder (SimCLR) training epochs"),
):
    """Write a shareable copy of a synthetic set without memorised or copied images, with an audit record."""
    from busgen.data.dataset import DatasetError
    from busgen.eval.runner import share_filter_dir

    try:
        record = share_filter_dir(synthetic, real, out, split or None, encoder_epochs)
    except DatasetError as exc:
        fail(str(exc))
    typer.echo(
        f"kept {record['rows_out']} of {record['rows_in']} images ({record['n_copies']} copies, "
        f"{record['n_mem']} memorised removed) -> {out} (audit: {out / 'audit.json'})"
    )


@app.command()
def serve(
    generator: List[str] = typer.Option(
        ..., "--generator", help="ID=MODEL_DIR (repeatable); the first is the default model"
    ),
    classifier: Optional[Path] = typer.Option(
        None, "--classifier", help="saved classifier folder (busgen.eval.classify)"
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="HTTP bind address"),
    port: int = typer.Option(8000, "--port", help="HTTP port"),
    insecure_local: bool = typer.Option(
        False, "--insecure-local", help="disable bearer-token auth (loopback demos only)"
    ),
):
    """Serve generators and a classifier over HTTP with Ray Serve (token from $BUSGEN_API_TOKEN)."""
    from busgen.serve.api import run_local

    dirs = {}
    for item in generator:
        name, sep, path = item.partition("=")
        if not sep:
            fail(f"--generator {item!r}: use ID=MODEL_DIR, e.g. --generator tiny=models/pretrain-tiny")
        dirs[name] = path
    try:
        run_local(dirs, str(classifier) if classifier else None, host=host, port=port, insecure_local=insecure_local)
    except ValueError as exc:
        fail(str(exc))


def main(argv: Optional[List[str]] = None) -> None:
    app(argv)


if __name__ == "__main__":
    main()
