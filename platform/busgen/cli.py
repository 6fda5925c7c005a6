"""The ``busgen`` command line: the same operations as ``jobs/`` and the Python API, for people.

Heavy imports (ray, torch) happen inside commands so that ``busgen --help`` is instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="BUSGen Platform: breast-ultrasound generative modelling on Ray.")


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
    from busgen.phantom import CLASSES, write_phantom

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
    resize_mode: str = typer.Option("pad", "--resize-mode", help="pad (keep aspect, zero-pad) | crop (keep aspect, centre crop) | stretch"),
    domain: Optional[str] = typer.Option(None, "--domain", help="device/site id for all rows (default: manifest column, else source name)"),
    classes: Optional[str] = typer.Option(None, "--classes", help="comma list of allowed labels; others are quarantined"),
    seed: int = typer.Option(0, "--seed", help="seed of the stratified split when the source has none"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing output dataset"),
):
    """Ingest a BUS dataset (folders, BUSI, CSV manifest, DICOM) into Parquet with Ray Data."""
    from busgen.ingest import IngestConfig, IngestError
    from busgen.ingest import ingest as run_ingest

    if resize_mode not in ("pad", "crop", "stretch"):
        fail(f"unknown --resize-mode {resize_mode!r}: use pad, crop or stretch")
    cfg = IngestConfig(size=size, resize_mode=resize_mode, domain=domain, classes=parse_csv_list(classes), seed=seed, overwrite=overwrite)
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
    from busgen.data import DatasetError
    from busgen.report import dataset_report as make_report

    try:
        path = make_report(dataset, out)
    except DatasetError as exc:
        fail(str(exc))
    typer.echo(f"report: {path}")


def main(argv: Optional[List[str]] = None) -> None:
    app(argv)


if __name__ == "__main__":
    main()
