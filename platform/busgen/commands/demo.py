"""`make demo`: the whole BUSGen pipeline on CPU in minutes, ending in one report with pictures.

Stages: data (phantom or the shared BUSI copy) -> ingest -> dataset report ->
pretrain ``tiny`` on Ray Train -> sample grid -> synthetic set with Ray Data ->
downstream evaluation. Each stage reuses the library function a job would call,
so the demo doubles as an end-to-end smoke test of the public API.

Every stage prints a start line and an end line with its elapsed time (and the run's
total); pretrain, generate and evaluate print their own progress in between. Its MLflow
runs go to the store every command shares (``busgen.core.tracking.resolve_uri``), and the
report lists the runs this demo started there, each with the command that shows it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from busgen.commands.command import Command

SHARED_BUSI = Path(__file__).resolve().parents[4] / "shared" / "data" / "busi128"


class DemoConfig(BaseModel):
    """Run the whole pipeline on CPU (data, ingest, pretrain, generate, evaluate) and write a report."""

    model_config = ConfigDict(extra="forbid")

    out: str = Field("demo_out", description="output folder; the report is <out>/report.md")
    data: str = Field("phantom", description="phantom | busi (the shared real BUSI copy) | a folder to ingest")
    n_phantom: int = Field(600, ge=1, description="phantom images when data == phantom")
    size: int = Field(32, ge=16, description="image side in pixels; the tiny preset at 32 px trains in minutes")
    train_steps: int = Field(600, ge=1, description="pretraining steps")
    batch_size: int = Field(16, ge=1, description="batch size per Ray Train worker")
    num_workers: int = Field(1, ge=1, description="Ray Train workers")
    n_synthetic: int = Field(300, ge=1, description="images generated with Ray Data")
    sample_steps: int = Field(20, ge=1, description="denoising steps of the default sampler")
    seed: int = Field(0, description="seed of every stage")
    preset: Literal["pixel", "latent"] = Field(
        "pixel", description="pixel: the tiny UNet on pixels | latent: an autoencoder, then the tiny UNet on latents"
    )
    autoencoder_steps: int = Field(300, ge=1, description="autoencoder training steps (preset latent)")


def run_demo_evaluation(
    cfg: DemoConfig, dataset: Path, model_dir: Path, syn_dir: Path, out: Path, tracking_uri: str | None = None
) -> list[list]:
    """Utility (real / mixed / synthetic-only), fidelity and privacy on the demo's data; returns AUC rows."""
    from busgen.eval.runner import run_suite
    from busgen.eval.suites import REAL_TEST, PrivacySettings, SuiteConfig, UtilitySettings
    from busgen.model.classifier import ClassifierConfig

    suite = SuiteConfig(
        name="demo",
        real_dir=str(dataset),
        model=str(model_dir),
        synthetic_dir=str(syn_dir),
        out=str(out),
        utility=UtilitySettings(
            ratios=[0, 1],
            synthetic_only=True,
            seeds=[cfg.seed],
            n_boot=300,
            classifier=ClassifierConfig(
                width=8, blocks=(1, 1, 1, 1), image_size=cfg.size, epochs=8, patience=3, batch_size=32
            ),
        ),
        privacy=PrivacySettings(n_membership=60, encoder_epochs=5, timesteps=[50, 100]),
        tracking_uri=tracking_uri,
    )
    result = run_suite(suite)
    rows = []
    for row in result.utility.rows() if result.utility else []:
        if row.test_set == REAL_TEST and row.metrics is not None:
            m = row.metrics
            rows.append([row.arm, round(m.auc, 3), f"[{m.auc_ci_low:.3f}, {m.auc_ci_high:.3f}]"])
    return rows


def train_demo_autoencoder(cfg: DemoConfig, dataset: Path, out: Path, clock, tracking_uri: str | None) -> Path:
    """The latent preset's first stage: a factor-4 autoencoder on the demo's train split (Ray Train)."""
    from busgen.train.autoencoder import AutoencoderTrainConfig, train_autoencoder

    with clock.stage("autoencoder", "autoencoder (Ray Train)"):
        acfg = AutoencoderTrainConfig(
            data_dir=str(dataset),
            image_size=cfg.size,
            factor=4,
            batch_size=cfg.batch_size,
            max_steps=cfg.autoencoder_steps,
            warmup_steps=min(50, cfg.autoencoder_steps // 10),
            checkpoint_every=cfg.autoencoder_steps,
            num_workers=cfg.num_workers,
            cpus_per_worker=max(1, (os.cpu_count() or 2) // cfg.num_workers),
            storage_path=str(out / "ray_runs"),
            run_name=f"demo-ae-{int(time.time())}",
            out=str(out / "autoencoder"),
            seed=cfg.seed,
            log_every=50,
            tracking_uri=tracking_uri,
        )
        result = train_autoencoder(acfg)
        if result.error is not None:
            raise RuntimeError(f"autoencoder training failed: {result.error}")
    return Path(acfg.out)


def first_images_per_class(table, classes, per_class: int, prefix: str) -> dict:
    """Grid rows ``"<prefix> <class>"`` of the first ``per_class`` decoded images of each class in a table."""
    from busgen.data.dataset import decode_images

    images, labels = table.column("image").to_pylist(), table.column("label").to_pylist()
    return {
        f"{prefix} {c}": decode_images([p for p, lbl in zip(images, labels) if lbl == c][:per_class]) for c in classes
    }


def run_links(uri: str, since_ms: int = 0) -> list[list[str]]:
    """[operation, run name, status, link] of the store's top-level runs started since ``since_ms``, oldest first."""
    from busgen.core import tracking_view

    rows = tracking_view.list_runs(uri, since_ms=since_ms)
    return [[r.experiment, r.name, r.status, r.link] for r in reversed(rows)]


def run_demo(cfg: DemoConfig) -> dict:
    """Run every stage and write ``<out>/report.md``; returns the report's path as the result."""
    path = write_demo(cfg)
    return {"report": str(path), "summary": f"report: {path}"}


def write_demo(cfg: DemoConfig) -> Path:
    """Run every stage and write ``<out>/report.md``; returns its path."""
    from busgen.core import tracking
    from busgen.core.raylocal import init_ray
    from busgen.core.timings import Timings
    from busgen.core.types import DEFAULT_GUIDANCE, DEFAULT_SAMPLER
    from busgen.data.dataset import read_table
    from busgen.data.ingest import IngestConfig, ingest
    from busgen.data.phantom import write_phantom
    from busgen.data.report import Report, image_grid
    from busgen.data.report import dataset_report as write_dataset_report
    from busgen.generate import shards as gen_mod
    from busgen.generate.store import track_generation
    from busgen.model import generator
    from busgen.train.pretrain import PretrainConfig, pretrain

    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    clock = Timings(tag="demo")
    # Logical CPUs above the core count: the training worker takes both cores for torch while
    # Ray Data read tasks still find a slot (2 real CPUs would deadlock them).
    init_ray(num_cpus=4)
    tracking_uri = tracking.resolve_uri()  # the store every command shares; the report lists this demo's runs
    started_ms = int(time.time() * 1000)

    # 1. data
    with clock.stage("data"):
        if cfg.data == "phantom":
            src = write_phantom(out / "phantom_src", cfg.n_phantom, cfg.size, seed=cfg.seed)
        elif cfg.data == "busi":
            if not (SHARED_BUSI / "labels.csv").exists():
                raise FileNotFoundError(f"--data busi needs the shared BUSI copy at {SHARED_BUSI}")
            src = SHARED_BUSI
        else:
            src = Path(cfg.data)

    # 2. ingest + dataset report
    with clock.stage("ingest"):
        dataset = out / "dataset"
        summary = ingest(src, dataset, IngestConfig(size=cfg.size, overwrite=True), progress=False)
        print(summary.line())
        write_dataset_report(dataset, out / "dataset_report")

    # 3. pretrain (a latent generator trains its autoencoder first)
    autoencoder_dir = train_demo_autoencoder(cfg, dataset, out, clock, tracking_uri) if cfg.preset == "latent" else None
    with clock.stage("pretrain", "pretrain (Ray Train)"):
        model_dir = out / "model"
        pcfg = PretrainConfig(
            data_dir=str(dataset),
            preset="tiny",
            batch_size=cfg.batch_size,
            max_steps=cfg.train_steps,
            warmup_steps=min(50, cfg.train_steps // 10),
            checkpoint_every=max(100, cfg.train_steps // 3),
            num_workers=cfg.num_workers,
            storage_path=str(out / "ray_runs"),
            run_name=f"demo-{int(time.time())}",
            out=str(model_dir),
            seed=cfg.seed,
            ema_decay=0.995,
            lr=1e-3,
            cpus_per_worker=max(1, (os.cpu_count() or 2) // cfg.num_workers),
            log_every=50,
            tracking_uri=tracking_uri,
            autoencoder=str(autoencoder_dir) if autoencoder_dir else None,
            image_size=None if autoencoder_dir else cfg.size,
        )
        pretrain(pcfg)
        gen = generator.load(model_dir)

    # 4. samples per class
    with clock.stage("sample"):
        per_class = 8
        grids = {c: gen.sample([c] * per_class, steps=cfg.sample_steps, seed=cfg.seed) for c in gen.class_names}

    # 5. synthetic set with Ray Data
    with clock.stage("generate", "generate (Ray Data)"):
        syn_dir = out / "synthetic"
        gcfg = gen_mod.GenerateConfig(
            model=str(model_dir),
            out=str(syn_dir),
            n=cfg.n_synthetic,
            steps=cfg.sample_steps,
            shard_size=100,
            seed=cfg.seed,
            tracking_uri=tracking_uri,
        )
        if (syn_dir / gen_mod.MANIFEST).exists():
            import shutil

            shutil.rmtree(syn_dir)
        gsum = gen_mod.generate(gcfg, progress=True)
        print(gsum.line())
        track_generation(gcfg, {"images": gsum.generated, "images_per_s": gsum.images_per_s})
        syn = read_table(syn_dir, ["image", "label"])

    # 6. downstream evaluation: real vs synthetic vs mixed, fidelity, privacy (Ray Tune trials)
    with clock.stage("evaluate", "evaluate (Ray Tune)"):
        evaluation = run_demo_evaluation(cfg, dataset, model_dir, syn_dir, out / "evaluation", tracking_uri)

    # report
    rep = Report(out, "BUSGen demo report")
    rep.text(
        f"Data: **{cfg.data}** ({summary.n_ingested} images ingested at {cfg.size} px, "
        f"{summary.n_quarantined} quarantined). "
        "Full dataset report: [dataset_report/report.md](dataset_report/report.md)."
    )
    rep.section("Generator").table(
        ["field", "value"],
        [
            ["preset", "tiny" if cfg.preset == "pixel" else f"tiny on latents ({gen.meta['latent']['factor']}x)"],
            ["steps", cfg.train_steps],
            ["workers", cfg.num_workers],
            ["model id", gen.model_id],
            ["final loss", gen.meta.get("metrics", {}).get("loss", "n/a")],
        ],
    )
    real = read_table(dataset, ["image", "label"], split="train")
    real_grid = first_images_per_class(real, gen.class_names, per_class, "real")
    rep.section("Real training images").figure("real_grid.png", image_grid(real_grid), "real images per class")
    rep.section(
        "Generated samples per class",
        f"{DEFAULT_SAMPLER}, {cfg.sample_steps} steps, guidance {DEFAULT_GUIDANCE}, boxes from the box prior.",
    )
    rep.figure("samples_grid.png", image_grid({f"gen {c}": v for c, v in grids.items()}), "samples per class")
    syn_labels = syn.column("label").to_pylist()
    rep.section("Synthetic set (Ray Data)", gsum.line())
    rep.table(["class", "images"], [[c, syn_labels.count(c)] for c in gen.class_names])
    syn_grid = first_images_per_class(syn, gen.class_names, per_class, "syn")
    rep.figure("synthetic_grid.png", image_grid(syn_grid), "synthetic set, first images per class")
    rep.section(
        "Downstream evaluation",
        "Benign vs malignant classifiers trained on real, synthetic and mixed data, "
        "tested on the real test split (95% bootstrap CIs). Full report with ROC curves, fidelity and privacy: "
        "[evaluation/report.md](evaluation/report.md).",
    )
    rep.table(["arm", "test AUC", "95% CI"], evaluation)
    for name in ("auc_vs_ratio.png", "nn_pairs.png"):
        if (out / "evaluation" / name).exists():
            rep.text(f"![{name}](evaluation/{name})")
    rep.section("Timings").table(["stage", "seconds"], [[k, round(v, 1)] for k, v in clock.seconds.items()])
    rep.section(
        "MLflow runs",
        f"Store `{tracking_uri}`: list it with `busgen runs --tracking-uri {tracking_uri}`, or write a page with "
        "`--html runs.html`; each link shows one run (trial runs are nested under the evaluate run).",
    )
    rep.table(["operation", "run", "status", "link"], run_links(tracking_uri, started_ms))
    path = rep.write()
    return path


COMMANDS = (Command("demo", f"{__name__}:DemoConfig", f"{__name__}:run_demo"),)
