"""``busgen distill``: guidance distillation, then progressive step distillation, on Ray Train; student folders out.

Phases run in order from one teacher folder (``busgen.model.distill`` has the math):

* ``guided``: a ``GuidanceUNet`` learns the teacher's guided output in one forward;
* ``steps{N}`` for N = ``start_steps`` / 2, ..., 1: a v-predicting student learns two DDIM steps
  of the previous phase's model (the guided student at ``start_steps``) in one.

Every phase is exported as a model folder (``<out>/guided``, ``<out>/steps4``...) that records
its teacher (model id and path), method, step count and guidance range in ``busgen.json``;
``generator.load`` samples it with its own step count by default. Resume (Ray Train V2): the
same ``run_name`` + ``storage_path`` continues from the last checkpoint (phase, iteration,
student, its teacher and the optimizer). The loop (``train_phases``) is Ray-free, so tests
and the benchmark run it in-process on tensors.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from busgen.model import card, diffusion, generator, pipeline_files
from busgen.model import distill as dist
from busgen.model import unet as models
from busgen.train import checkpoint as ckpt_io
from busgen.train import track

STATE_FILE = "distill_state.pt"


class DistillError(ValueError):
    """The distillation cannot run as asked (teacher folder unusable, bad step count)."""


class DistillConfig(BaseModel):
    """Distil a model folder into few-step students (guidance distillation, then progressive halvings) on Ray Train."""

    model_config = ConfigDict(extra="forbid")

    teacher: str = Field(description="model folder to distil (busgen pretrain or adapt --method full)")
    data_dir: str = Field(description="ingested dataset the teacher trained on (train split): the noised inputs")
    out: str = Field(description="folder for the students: <out>/guided, <out>/steps8, ... <out>/steps1")
    guidance_min: float = Field(1.0, description="lowest guidance scale the student learns (1 = conditional)")
    guidance_max: float = Field(3.0, description="highest guidance scale the student learns")
    start_steps: int = Field(16, description="DDIM steps of the guided student that the first halving distils")
    final_steps: int = Field(1, description="stop halving at this step count (4 keeps the 4-step student last)")
    guided_iters: int = Field(400, description="iterations of the guidance phase")
    iters_per_halving: int = Field(400, description="iterations of each 2N -> N phase")
    batch_size: int = Field(16, description="per worker")
    lr: float = Field(5e-4, description="AdamW learning rate, constant (short phases)")
    grad_clip: float = Field(1.0, description="max global grad norm")
    checkpoint_every: int = Field(100, description="iterations; every phase's end is checkpointed too")
    log_every: int = Field(25, description="iterations between progress lines")
    num_workers: int = Field(1, description="Ray Train workers (data-parallel)")
    cpus_per_worker: float = Field(1, description="torch threads per worker follow this")
    use_gpu: bool = Field(False, description="one GPU per Ray Train worker")
    storage_path: str = Field("~/busgen_runs", description="Ray Train storage (local path or cloud URI)")
    run_name: str | None = Field(None, description="same name + storage_path = resume; default distill-<out name>")
    seed: int = Field(0, description="noise, timesteps, guidance scales, data order")
    tracking: bool = Field(True, description="MLflow run: params, metrics, the student folders")
    tracking_uri: str | None = Field(None, description="MLflow server or store; None = local store under the run")

    @model_validator(mode="after")
    def _check(self) -> DistillConfig:
        if not 1.0 <= self.guidance_min <= self.guidance_max:
            raise ValueError(f"need 1 <= guidance_min <= guidance_max, got {self.guidance_min}, {self.guidance_max}")
        n, ratio = self.start_steps, self.start_steps // max(self.final_steps, 1)
        if n < 2 or self.final_steps < 1 or n % self.final_steps or ratio < 2 or ratio & (ratio - 1):
            raise ValueError(
                f"start_steps {n} must be final_steps {self.final_steps} times a power of two >= 2 (halvings)"
            )
        return self


@dataclass(frozen=True)
class Phase:
    name: str  # folder name
    steps: int | None  # None: the guidance phase (sampled at any step count)
    iters: int


def phases(cfg: DistillConfig) -> list[Phase]:
    out = [Phase("guided", None, cfg.guided_iters)]
    n = cfg.start_steps
    while n > cfg.final_steps:
        n //= 2
        out.append(Phase(f"steps{n}", n, cfg.iters_per_halving))
    return out


# ----------------------------------------------------------------------------- the loop (no Ray)


@dataclass
class DistillState:
    """Where a distillation stands: resumable as a whole (weights, optimizer, RNG, position)."""

    phase: int
    it: int
    student: dist.GuidanceUNet
    teacher: torch.nn.Module  # the frozen model of this phase's targets
    opt: torch.optim.Optimizer
    gen: torch.Generator
    done: dict = field(default_factory=dict)  # phase name -> state_dict of its finished student


def start_state(cfg: DistillConfig, teacher: models.ConditionalUNet) -> DistillState:
    torch.manual_seed(cfg.seed)
    student = dist.GuidanceUNet.from_teacher(teacher, (cfg.guidance_min, cfg.guidance_max))
    return DistillState(0, 0, student, teacher.eval().requires_grad_(False), _adamw(student, cfg), _gen(cfg.seed))


def _adamw(model, cfg) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def next_phase(state: DistillState, cfg: DistillConfig) -> None:
    """Freeze the finished student as the next phase's teacher; the next student starts from its weights."""
    finished = state.student
    state.done[phases(cfg)[state.phase].name] = copy.deepcopy(finished.state_dict())
    state.teacher = copy.deepcopy(finished).eval().requires_grad_(False)
    state.phase, state.it = state.phase + 1, 0
    state.opt = _adamw(state.student, cfg)


def phase_loss(state: DistillState, cfg: DistillConfig, dcfg: diffusion.DiffusionConfig, batch: tuple):
    phase = phases(cfg)[state.phase]
    n = batch[0].shape[0]
    w = cfg.guidance_min + (cfg.guidance_max - cfg.guidance_min) * torch.rand(n, generator=state.gen)
    if phase.steps is None:
        noise = diffusion.make_noise_scheduler(dcfg)
        return dist.guidance_loss(state.student, state.teacher, noise, batch, w, state.gen)
    # the guided student (phase 1's teacher) predicts eps like the original teacher; every step student predicts v
    teacher_type = dcfg.prediction_type if state.phase == 1 else "v_prediction"
    return dist.progressive_loss(state.student, state.teacher, teacher_type, dcfg, phase.steps, batch, w, state.gen)


def train_phases(
    state: DistillState,
    cfg: DistillConfig,
    dcfg: diffusion.DiffusionConfig,
    batches: Iterator[tuple],
    on_iter: Callable[[DistillState, float, bool], None] = lambda s, loss, end: None,
) -> DistillState:
    """Run every remaining phase: ``on_iter(state, loss, phase_ended)`` after each iteration (log, checkpoint)."""
    plan = phases(cfg)
    while state.phase < len(plan):
        state.student.train()
        while state.it < plan[state.phase].iters:
            loss = phase_loss(state, cfg, dcfg, next(batches))
            state.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(state.student.parameters(), cfg.grad_clip)
            state.opt.step()
            state.it += 1
            ended = state.it == plan[state.phase].iters
            on_iter(state, float(loss.detach()), ended)
        next_phase(state, cfg)
    return state


def save_state(path: Path, state: DistillState) -> None:
    torch.save(
        {
            "phase": state.phase,
            "it": state.it,
            "student": state.student.state_dict(),
            "teacher": state.teacher.state_dict() if state.phase > 0 else None,
            "opt": state.opt.state_dict(),
            "gen": state.gen.get_state(),
            "done": state.done,
        },
        path,
    )


def restore_state(path: Path, state: DistillState, cfg: DistillConfig) -> DistillState:
    """Load a saved state into ``state`` (built by ``start_state`` from the same teacher)."""
    saved = ckpt_io.load_torch_file(path)
    state.phase, state.it, state.done = int(saved["phase"]), int(saved["it"]), saved["done"]
    state.student.load_state_dict(saved["student"])
    if saved["teacher"] is not None:
        state.teacher = copy.deepcopy(state.student).eval().requires_grad_(False)
        state.teacher.load_state_dict(saved["teacher"])
    state.opt = _adamw(state.student, cfg)
    state.opt.load_state_dict(saved["opt"])
    state.gen.set_state(saved["gen"])
    return state


# ----------------------------------------------------------------------------- Ray Train


def batch_stream(shard, size: int, vocab: tuple[dict, dict], batch_size: int, seed: int) -> Iterator[tuple]:
    """Endless (x, labels, domains, box_mask) batches from a Ray Data shard, epoch after epoch (no augmentation)."""
    from busgen.train.batches import decode_batch

    while True:
        got = 0
        for raw in shard.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=True):
            got += 1
            images, labels, domains, boxes = decode_batch(raw, vocab[0], vocab[1], size)
            yield (
                torch.from_numpy(images[:, None]),
                torch.from_numpy(labels),
                torch.from_numpy(domains),
                torch.from_numpy(models.rasterize_boxes(boxes, size)),
            )
        if got == 0:
            raise RuntimeError(f"the train split is smaller than batch_size={batch_size}: lower it")


def train_loop_per_worker(config: dict) -> None:
    """Ray Train worker: restore (if resuming), run the phases, report a checkpoint every ``checkpoint_every``."""
    import ray.train

    cfg = DistillConfig(**config["cfg"])
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    rank = ray.train.get_context().get_world_rank()
    teacher = generator.load(cfg.teacher, device="cpu")
    state = start_state(cfg, teacher.model)
    state.gen.manual_seed(cfg.seed + 1000 * rank)
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            restore_state(Path(d) / STATE_FILE, state, cfg)
    plan = phases(cfg)
    tracked = track.tracking.attach(config.get("tracking") if rank == 0 else None)
    t0, start = time.perf_counter(), (state.phase, state.it)
    total = sum(p.iters for p in plan)
    print(f"[distill] start at phase {plan[min(state.phase, len(plan) - 1)].name} iteration {state.it}", flush=True)

    def on_iter(s: DistillState, loss: float, ended: bool) -> None:
        done = sum(p.iters for p in plan[: s.phase]) + s.it
        metrics = {"phase": s.phase, "iteration": s.it, "loss": loss, "progress": done / total}
        if s.it % cfg.log_every == 0 or ended:
            tracked.log_metrics({k: v for k, v in metrics.items()}, done)
            first = sum(p.iters for p in plan[: start[0]]) + start[1]
            eta = track.eta_text(done, total, first, time.perf_counter() - t0)
            print(f"[distill] {plan[s.phase].name} {s.it}/{plan[s.phase].iters} loss {loss:.4f} {eta}", flush=True)
        if s.it % cfg.checkpoint_every and not ended:
            return
        # a phase's end is saved as (phase, its last iteration): a resume skips straight to next_phase
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                save_state(Path(tmp) / STATE_FILE, s)
                (Path(tmp) / "meta.json").write_text(json.dumps({"identity": config["identity"]}))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None)

    train_phases(state, cfg, teacher.diffusion_cfg, batch_stream(
        ray.train.get_dataset_shard("train"), teacher.image_size, _vocab(teacher), cfg.batch_size, cfg.seed
    ), on_iter)  # fmt: skip


def _vocab(gen: generator.Generator) -> tuple[dict, dict]:
    return {n: i for i, n in enumerate(gen.class_names)}, {n: i for i, n in enumerate(gen.domain_names)}


# ----------------------------------------------------------------------------- driver


def run_identity(cfg: DistillConfig, teacher_meta: dict) -> dict:
    """What a checkpoint belongs to: the teacher's weights and the phase plan (resume only when both match)."""
    return {
        "teacher_id": teacher_meta.get("model_id"),
        "phases": [[p.name, p.iters] for p in phases(cfg)],  # lists: what meta.json reads back
        "guidance": [cfg.guidance_min, cfg.guidance_max],
        "batch_size": cfg.batch_size,
    }


def distill(cfg: DistillConfig) -> list[Path]:
    """Run (or resume) the phases on Ray Train, then write one student folder per phase; returns them."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from busgen.core.raylocal import init_ray
    from busgen.train import pretrain

    try:
        meta = generator.read_meta(cfg.teacher)
    except generator.ModelLoadError as exc:
        raise DistillError(f"error: teacher {cfg.teacher}: {exc}") from None
    if meta.get("kind") in ("adapter", "student"):
        raise DistillError(
            f"error: {cfg.teacher} is a {meta['kind']} folder: distil a full model "
            "(busgen pretrain, or adapt --method full)"
        )
    run_name = cfg.run_name or f"distill-{Path(cfg.out).name}"
    cfg = cfg.model_copy(update={"run_name": run_name})
    identity = run_identity(cfg, meta)
    location = pretrain.storage_location(cfg.storage_path)
    if "://" not in location:
        ckpt_io.check_local_run(Path(location) / run_name, identity, run_name)
    init_ray()
    dataset = pretrain.make_train_dataset(cfg.data_dir)
    with track.open_run(cfg, "distill") as run:
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"cfg": cfg.model_dump(mode="json"), "identity": identity, "tracking": run.ref()},
            scaling_config=ScalingConfig(
                num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker={"CPU": cfg.cpus_per_worker}
            ),
            run_config=RunConfig(
                name=run_name, storage_path=location, checkpoint_config=CheckpointConfig(num_to_keep=2)
            ),
            datasets={"train": dataset},
        )
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"distill run {run_name!r} finished without a checkpoint: {result.error}")
        teacher = generator.load(cfg.teacher, device="cpu")
        state = start_state(cfg, teacher.model)
        with result.checkpoint.as_directory() as d:
            restore_state(Path(d) / STATE_FILE, state, cfg)
        next_phase(state, cfg)  # the last phase ended with the run
        folders = export_students(state.done, cfg, teacher)
        track.finish(run, cfg.out, result.metrics)
    return folders


def export_students(done: dict, cfg: DistillConfig, teacher: generator.Generator) -> list[Path]:
    """One model folder per finished phase under ``cfg.out``, each recording teacher, method, steps and guidance."""
    tmeta = teacher.meta
    model_cfg = models.ModelConfig(**{k: v for k, v in tmeta["model"].items() if k in models.ModelConfig.model_fields})
    out = []
    for p in phases(cfg):
        if p.name not in done:
            continue
        student = dist.GuidanceUNet.from_teacher(teacher.model, (cfg.guidance_min, cfg.guidance_max))
        student.load_state_dict(done[p.name])
        prediction = tmeta["diffusion"].get("prediction_type", "epsilon") if p.steps is None else "v_prediction"
        folder = export_student(Path(cfg.out) / p.name, student, p, cfg, teacher, model_cfg, prediction)
        out.append(folder)
    return out


def export_student(folder, student, p: Phase, cfg: DistillConfig, teacher, model_cfg, prediction: str) -> Path:
    """Write ``student`` as a model folder (``busgen.json`` kind ``student``) that ``generator.load`` samples."""
    tmeta = teacher.meta
    generator.export_model(
        folder, student, None, model_cfg, teacher.class_names, teacher.domain_names, teacher.box_prior,
        tmeta.get("data_fingerprint", ""), p.iters, {},
        diffusion.DiffusionConfig(**(tmeta["diffusion"] | {"prediction_type": prediction})),
    )  # fmt: skip
    fp = Path(folder) / generator.BUSGEN_JSON
    meta = json.loads(fp.read_text())
    meta.update(
        kind="student",
        student={
            "teacher_model_id": teacher.model_id,
            "teacher": str(Path(cfg.teacher).resolve()),
            "method": "guidance distillation" if p.steps is None else "guidance + progressive distillation",
            "steps": p.steps,
            "guidance_range": [cfg.guidance_min, cfg.guidance_max],
            "iterations": p.iters,
        },
        sampling={"sampler": "ddim" if p.steps else None, "steps": p.steps or generator.DEFAULT_STEPS},
    )
    fp.write_text(json.dumps(meta, indent=2))
    card.write_card(folder, meta)  # again: the card's sampler defaults are the student's own steps
    for name in (pipeline_files.MODEL_INDEX, pipeline_files.PIPELINE_FILE):  # the pipeline class samples teachers
        (Path(folder) / name).unlink(missing_ok=True)
    return Path(folder)
