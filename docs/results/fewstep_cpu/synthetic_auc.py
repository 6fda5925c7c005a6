"""Synthetic-only AUC (corrected yardstick) of the phantom teacher (DDIM 25 steps, guidance 1.8) and its 4-step student.

Usage: python docs/results/fewstep_cpu/synthetic_auc.py [N] [EXP_DIR] [OUT_JSON]
EXP_DIR holds teacher16/ and students16/ from the fewstep benchmark run (see README.md).
"""

import json
import sys
import time

import numpy as np
import torch

from busgen.data.phantom import CLASSES, make_phantom_arrays
from busgen.measure import stats
from busgen.measure.classify import evaluate, train_classifier
from busgen.measure.metrics import label_indices
from busgen.model import generator
from busgen.model.classifier import ClassifierConfig, to_tensor

SIZE, SEEDS = 16, 5


def main(n: int, root: str, out_path: str) -> dict:
    torch.set_num_threads(1)
    names = list(CLASSES)
    val_x, _, val_y = make_phantom_arrays(96, SIZE, seed=21)
    test_x, _, test_y = make_phantom_arrays(192, SIZE, seed=31)
    test_t, test_l = to_tensor(test_x, 32), torch.from_numpy(label_indices(test_y, names))
    labels = [names[i % 3] for i in range(n)]
    arms = {"teacher ddim 25": (f"{root}/teacher16", 25), "student 4 steps": (f"{root}/students16/steps4", None)}
    cfg = ClassifierConfig.yardstick(image_size=32, width=16, max_seconds=90)
    out = {}
    for name, (folder, steps) in arms.items():
        started = time.time()
        images = generator.load(folder, device="cpu").sample(labels, seed=5000, steps=steps, guidance=1.8)
        seconds, aucs = time.time() - started, []
        for seed in range(SEEDS):
            model, hist = train_classifier(images, labels, val_x, val_y, cfg.model_copy(update={"seed": seed}), names)
            aucs.append(evaluate(model, test_t, test_l, names, "malignant")["val_auc"])
            print(name, seed, round(aucs[-1], 4), len(hist), "epochs", flush=True)
        out[name] = {"aucs": aucs, "mean": float(np.mean(aucs)), "sd": float(np.std(aucs, ddof=1))}
        out[name] |= {"sample_seconds": seconds, "n": n}
    a, b = out["teacher ddim 25"], out["student 4 steps"]
    deltas = [y - x for x, y in zip(a["aucs"], b["aucs"])]
    ci = stats.t_interval(deltas)
    mde = stats.min_detectable_effect(a["sd"], SEEDS, b["sd"], SEEDS)
    out["delta"] = {"mean": float(np.mean(deltas)), "t_interval": [ci.low, ci.high], "mde80": mde}
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1, default=float)
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(main(int(args[0]) if args else 240, *(args[1:] or ["runs/exp", "synthetic_auc.json"])), indent=1))
