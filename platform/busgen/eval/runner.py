"""Evaluation suites: is the synthetic data useful, faithful, diverse -- and safe to share?

A suite is a YAML spec (``platform/busgen/configs/*.yaml``) loaded into ``SuiteConfig`` with
`busgen.core.config.load_config`. ``run_suite`` then, in order:

1. prepares inputs: ingests the real data when only a raw source is given, pretrains
   a generator on the real train split when the model folder does not exist yet, and
   generates a synthetic set with `busgen.generate.shards` when only a model is given
   (all three resume or skip when their output already exists);
2. **utility** -- a Ray Tune grid, one trial per (training mix, seed): real train split
   plus synthetic at each ratio, and synthetic only; tested on the real test split and
   on external datasets (`busgen.eval.utility.grid`, trials in `busgen.eval.trials`);
3. **fidelity** -- FID/KID/PRDC per class and overall, plus MS-SSIM diversity, on the
   penultimate features of the real-only classifier (an in-domain encoder);
4. **privacy** -- nearest-neighbour memorisation audit, membership inference by
   denoising error (`busgen.measure.privacy.membership`), real-vs-synthetic detector AUC;
5. **sampler_steps** -- a second Tune grid: FID vs sampler and number of steps (parts 3-5:
   `busgen.eval.parts`; both grids run through `busgen.eval.sweep.run_trials`);
6. returns a typed `busgen.eval.results.EvalResult` and writes it (``results.json``,
   ``results.parquet``/``.csv``: one row per utility trial and test set) and the report
   (`busgen.eval.report`).

Any part can be switched off (``privacy.enabled=false``) and the report still renders.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from busgen.core.raylocal import init_ray
from busgen.core.timings import Timings
from busgen.data.dataset import DatasetError, dataset_info, parquet_files, read_table
from busgen.data.imageio import decode_image
from busgen.data.ingest import IngestConfig, ingest
from busgen.eval import build, parts, report, track
from busgen.eval.data import SuiteData
from busgen.eval.results import EvalResult, Inputs
from busgen.eval.suites import SuiteConfig  # the suite spec (platform/busgen/configs/*.yaml)
from busgen.eval.utility.grid import run_utility
from busgen.generate.shards import GenerateConfig
from busgen.train.pretrain import PretrainConfig

# ----------------------------------------------------------------------------- inputs


def prepare_real(cfg: SuiteConfig) -> str:
    """The real dataset dir, ingesting ``cfg.source`` first when it holds no Parquet yet."""
    try:
        parquet_files(cfg.real_dir)
    except DatasetError:
        if not cfg.source:
            raise
        print(f"[evaluate] ingest {cfg.source} -> {cfg.real_dir} at {cfg.image_size} px", flush=True)
        print(
            ingest(cfg.source, cfg.real_dir, IngestConfig(size=cfg.image_size, overwrite=True), progress=False).line()
        )
    return str(Path(cfg.real_dir).resolve())


def prepare_model(cfg: SuiteConfig, real_dir: str, work: Path, timings: Timings) -> str | None:
    """The generator dir; pretrained on the real train split when missing and ``pretrain`` is set.

    The Ray Train run is named after the suite, so re-running an interrupted suite resumes it.
    """
    if not cfg.model:
        return None
    model = Path(cfg.model).resolve()
    if not build.is_model(model) and cfg.pretrain is None:
        raise FileNotFoundError(f"model {model} not found (no busgen.json) and no `pretrain` section to create it")

    def pretrain_config() -> PretrainConfig:
        p = cfg.pretrain
        if p.image_size is None:  # the suite default: train at the real images' size
            first = read_table(real_dir, ["image"]).column("image")[0].as_py()
            p = p.model_copy(
                update={"image_size": dataset_info(real_dir).get("image_size") or decode_image(first).shape[-1]}
            )
        print(f"[evaluate] pretrain {p.preset} at {p.image_size} px for {p.max_steps} steps -> {model}", flush=True)
        return PretrainConfig(
            **p.model_dump(),
            data_dir=real_dir,
            storage_path=str(work / "ray_runs"),
            run_name=f"{cfg.name}-pretrain",
            out=str(model),
        )

    return build.generator(model, pretrain_config, timings)


def prepare_synthetic(cfg: SuiteConfig, model_dir: str | None, work: Path, timings: Timings) -> str | None:
    """The synthetic set dir: the given one, or one generated (resumably) from the model."""
    if cfg.synthetic_dir:
        return str(Path(cfg.synthetic_dir).resolve())
    if model_dir is None:
        return None
    gcfg = GenerateConfig(
        **cfg.generate.model_dump(),
        model=model_dir,
        out=str(work / "synthetic"),
        class_ratio={c: 1.0 for c in cfg.classes},
    )
    return build.synthetic_set(gcfg, timings, tag="evaluate")


# ----------------------------------------------------------------------------- run


def run_suite(cfg: SuiteConfig, run_id: str | None = None) -> EvalResult:
    """Run every enabled part of the suite, write the report folder and return the result."""
    import torch

    cfg = cfg.shrunk() if cfg.dry_run else cfg
    torch.set_num_threads(cfg.torch_threads)
    out = Path(cfg.out).resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    timings = Timings()
    timed = timings.timed
    timed("ray", init_ray)
    run = track.open_suite(cfg, out)
    # 1. inputs (each reused when it is already there)
    real_dir = timed("ingest", prepare_real, cfg)
    model_dir = timed("pretrain", prepare_model, cfg, real_dir, work, timings)
    syn_dir = timed("generate", prepare_synthetic, cfg, model_dir, work, timings)
    result = EvalResult(
        suite=cfg.name,
        run_id=run_id or f"local-{uuid.uuid4().hex[:12]}",
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        params=cfg,
        inputs=Inputs(real_dir=real_dir, model=model_dir, synthetic_dir=syn_dir, reference_encoder=_reference_label()),
        timings=timings.seconds,
    )
    # 2. parts: every driver-side part reads its images from one SuiteData (each set decoded once)
    data = SuiteData()
    if cfg.utility.enabled:
        result.utility = timed("utility", run_utility, cfg, real_dir, syn_dir, work, model_dir, data)
    needs_encoder = bool((syn_dir and cfg.fidelity.enabled) or (model_dir and cfg.sampler_steps.enabled))
    enc = timed("encoder", parts.encoder_dir, cfg, real_dir, result.utility, work) if needs_encoder else None
    if syn_dir and cfg.fidelity.enabled:
        result.fidelity = timed("fidelity", parts.run_fidelity, cfg, data, real_dir, syn_dir, enc, out)
    if syn_dir and cfg.privacy.enabled:
        result.privacy = timed("privacy", parts.run_privacy, cfg, data, real_dir, syn_dir, model_dir, out)
    if model_dir and cfg.sampler_steps.enabled:
        result.sampler_steps = timed(
            "sampler_steps", parts.run_sampler_steps, cfg, data, real_dir, model_dir, enc, work
        )
    # 3. outputs
    result.metrics = result.headline()
    result.seconds = round(time.time() - t0, 1)
    result.tracking = run.link()
    result.write(out)
    report.write_report(out, result)
    track.log_suite(run, result, out)
    return result


def _reference_label() -> str:
    """The shipped reference encoder's version and hash, recorded with every result (fidelity on or off)."""
    from busgen.measure.reference import load_reference

    return load_reference().label


def report_from_work(
    cfg: SuiteConfig, more_work: list[str] = (), run_id: str | None = None, seconds: float | None = None
) -> EvalResult:
    """Re-assemble the utility part of ``cfg.out`` from the trial artifacts under ``<out>/work`` and report it.

    For a grid that was interrupted, or run in parts into the same ``out`` folder (arms
    whose inputs arrived later, e.g. the guidance sets of a generator still training):
    every finished trial counts, whichever run made it (`busgen.eval.utility.grid.rebuild_utility`);
    ``more_work`` adds the ``work`` folders of runs made into other ``out`` folders. Other
    parts are not re-run.
    """
    from busgen.eval.utility.grid import rebuild_utility

    out = Path(cfg.out).resolve()
    result = EvalResult(
        suite=cfg.name,
        run_id=run_id or f"local-{uuid.uuid4().hex[:12]}",
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        params=cfg,
        inputs=Inputs(
            real_dir=str(Path(cfg.real_dir).resolve()),
            model=str(Path(cfg.model).resolve()) if cfg.model else None,
            synthetic_dir=str(Path(cfg.synthetic_dir).resolve()) if cfg.synthetic_dir else None,
            reference_encoder=_reference_label(),
        ),
        utility=rebuild_utility(cfg, out / "work", *(Path(w) for w in more_work)),
        seconds=seconds,
    )
    result.metrics = result.headline()
    result.write(out)
    report.write_report(out, result)
    return result
