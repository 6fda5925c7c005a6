"""Few-step sampling: the teacher against each distilled student, img/s and KID, in one run.

Every row samples the same labels and seeds at the same batch size in this process, one
after the other; KID (with its interval), FID at equal n and the real-vs-synthetic detector
AUC are taken in the reference encoder's space against held-out real images. Rows:

* teacher: DDIM, ``--teacher-steps`` (25) guided steps = 2 UNet evaluations per step;
* guided student (one forward per step) at 25 and 10 steps;
* step students (``busgen distill``'s ``steps4``, ``steps2``, ``steps1`` ...) at their own step count.

With no arguments it builds everything itself in a few minutes on a CPU: a phantom teacher
(``busgen.testing.training``, 16 px), its students (the same phases as ``busgen distill``,
in-process), held-out phantoms as the real set. ``--curve`` adds the sampler curve: KID of the
teacher under DDIM, DPM-Solver++ and UniPC at ``--curve-steps``.

    python evals/benchmarks/fewstep.py                                    # phantom teacher, CPU, < 10 min
    python evals/benchmarks/fewstep.py --teacher models/busi --students models/busi_distilled \\
        --real-dir data/busi64 --n 300 --curve --json out/fewstep.json

Last line: ``fewstep ratio=X (...)``, X = the 4-step student's img/s / the teacher's img/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import headline  # noqa: E402


def real_images(args, size: int) -> np.ndarray:
    """Held-out real images: the val split of ``--real-dir``, or phantoms of another seed than training."""
    if args.real_dir:
        from busgen.data import dataset as data
        from busgen.data import schema

        table = data.read_table(args.real_dir, [schema.IMAGE], split="val")
        return data.decode_images(table.column(schema.IMAGE).to_pylist())
    from busgen.data.phantom import make_phantom_arrays

    return make_phantom_arrays(args.n, size, seed=11)[0]


def measure(gen, labels, args, real, enc, **kw) -> dict:
    """img/s (best of ``--rounds`` over the whole set) and reference-encoder fidelity of one sampling setting."""
    from busgen.measure.fidelity import reference_fidelity

    best = float("inf")
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        images = gen.sample(labels, seed=args.seed, batch_size=args.batch, **kw)
        best = min(best, time.perf_counter() - t0)
    fid = reference_fidelity(real, images, encoder=enc, seed=0)
    s = fid["synthetic"]
    print(f"  measured {kw}: {len(labels) / best:.1f} img/s, KID {s['kid']:.4f}", file=sys.stderr, flush=True)
    return {
        "img_s": len(labels) / best,
        "kid": s["kid"],
        "kid_ci": [s["kid_ci_low"], s["kid_ci_high"]],
        "fid": s["fid"],
        "fid_n": s["fid_n"],
        "detector_auc": fid.get("detector_auc"),
        "encoder": fid["encoder"],
    }


def build_phantom(work: Path, args) -> tuple[Path, list[Path]]:
    """A phantom teacher and its students, trained here (the benchmark's no-argument path)."""
    from busgen.testing.training import distill_phantom, train_phantom_model

    teacher = train_phantom_model(work / "teacher", size=args.size, steps=args.teacher_train_steps)
    students = distill_phantom(
        teacher, work / "students", guided_iters=args.iters, iters_per_halving=args.iters, start_steps=args.start_steps
    )
    return teacher, students


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", help="teacher model folder (default: train a phantom teacher here)")
    p.add_argument("--students", help="folder of busgen distill's student folders (guided, steps8, ... steps1)")
    p.add_argument("--real-dir", help="ingested dataset: its val split is the real set (default: phantoms)")
    p.add_argument("--n", type=int, default=120, help="images per row (labels cycle over the classes)")
    p.add_argument("--batch", type=int, default=60, help="images per forward pass, the same for every row")
    p.add_argument("--teacher-steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=1.8)
    p.add_argument("--size", type=int, default=16, help="phantom teacher's image size")
    p.add_argument("--teacher-train-steps", type=int, default=150)
    p.add_argument("--iters", type=int, default=60, help="iterations per distillation phase (phantom path)")
    p.add_argument("--start-steps", type=int, default=8, help="first halving distils the guided student at this")
    p.add_argument("--curve", action="store_true", help="add the teacher's KID per sampler and step count")
    p.add_argument("--curve-steps", type=int, nargs="+", default=[5, 10, 15, 20, 25, 50])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest on a shared 2-core machine)")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from busgen.measure.reference import load_reference
    from busgen.model import generator

    work = Path(tempfile.mkdtemp(prefix="fewstep-"))
    t_build = time.perf_counter()
    if args.teacher:
        teacher_dir = Path(args.teacher)
        students = sorted(p.parent for p in Path(args.students or "-").glob("*/busgen.json"))
    else:
        teacher_dir, students = build_phantom(work, args)
    t_build = time.perf_counter() - t_build
    teacher = generator.load(teacher_dir, device="cpu")
    labels = [teacher.class_names[i % len(teacher.class_names)] for i in range(args.n)]
    real, enc = real_images(args, teacher.image_size), load_reference()
    g = args.guidance

    rows = {f"teacher ddim {args.teacher_steps} (2 forwards/step)": measure(
        teacher, labels, args, real, enc, steps=args.teacher_steps, guidance=g, sampler="ddim"
    )}  # fmt: skip
    for folder in students:
        st = generator.load(folder, device="cpu")
        own = st.meta["student"]["steps"]
        for steps in [own] if own else [args.teacher_steps, 10]:
            row = measure(st, labels, args, real, enc, steps=steps, guidance=g)
            rows[f"{folder.name} {steps} steps (1 forward/step)"] = row
    if args.curve:
        for sampler in ("ddim", "dpmpp", "unipc"):
            for steps in args.curve_steps:
                rows[f"curve {sampler} {steps}"] = measure(
                    teacher, labels, args, real, enc, steps=steps, guidance=g, sampler=sampler
                )
    base = rows[next(iter(rows))]
    print(f"{'row':44s} {'img/s':>8s} {'KID':>8s} {'KID 95% CI':>20s} {'FID':>7s} {'AUC':>6s}")
    for name, r in rows.items():
        ci = f"[{r['kid_ci'][0]:.4f}, {r['kid_ci'][1]:.4f}]"
        print(f"{name:44s} {r['img_s']:8.1f} {r['kid']:8.4f} {ci:>20s} {r['fid']:7.2f} {r['detector_auc'] or 0:6.3f}")
    print(f"n={args.n} per row, FID at n={base['fid_n']}, batch {args.batch}, {torch.get_num_threads()} thread(s); "
          f"reference encoder: {base['encoder']['label']}; build {t_build:.0f} s")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "build_s": t_build}, indent=2))
    four = next((r for k, r in rows.items() if k.startswith("steps4 ")), None)
    if four is None:
        headline("fewstep", 0.0, "no 4-step student")
        return
    headline(
        "fewstep",
        four["img_s"] / base["img_s"],
        f"4-step student {four['img_s']:.1f} img/s KID {four['kid']:.4f} vs teacher {args.teacher_steps} steps "
        f"{base['img_s']:.1f} img/s KID {base['kid']:.4f}, n={args.n}, batch {args.batch}",
    )


if __name__ == "__main__":
    main()
