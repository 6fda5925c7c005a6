"""The trade-off on the memorising fixture: a generator that copies its 32 phantom training images.

Where a real generator trained on CPU memorises only partly, the closed-form memoriser
(``busgen.testing.memoriser``) copies almost every time, so the sweep shows what protection
buys at the extreme. Real arrays are phantoms: members = its training images; held-out,
validation and test = fresh phantoms of other seeds (the same simulator, never trained on).
"""

from __future__ import annotations

import time
from pathlib import Path

from busgen.data.phantom import make_phantom_arrays
from busgen.studies.tradeoff.run import TradeoffConfig, finish, prepare_real, sample_plan, sweep


def phantom_split(n: int, size: int, seed: int) -> tuple:
    """(images, labels, boxes, domains) of ``n`` fresh phantoms, the shape ``read_splits`` returns."""
    images, _, labels = make_phantom_arrays(n, size, seed=seed)
    return images, list(labels), [None] * n, ["phantom"] * n


def run_fixture(cfg: TradeoffConfig, n_train: int = 32, size: int = 32, n_held: int = 256, log=print) -> dict:
    """The sweep of ``cfg`` on the class-conditional memoriser of ``n_train`` phantoms; ``cfg.model`` is a label."""
    import torch

    from busgen.testing.memoriser import memorising_generator
    from busgen.train.protect import ProtectConfig

    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    t_start = time.time()
    out = Path(cfg.out)
    fit = ProtectConfig(model="fixture", width=16, batch_size=32, max_epochs=600, samples_per_epoch=256)
    gen, train, stats = memorising_generator(out / "memoriser", n_train, size, fit=fit, conditional=True)
    log(f"[fixture] protection classifier: fit {stats.get('fit_accuracy')} after {stats.get('epochs')} epochs")
    train_labels = phantom_split(n_train, size, 0)[1]
    real = {
        "members": (train, train_labels, [None] * n_train, ["phantom"] * n_train),
        "held": phantom_split(n_held, size, 1),
        "val": phantom_split(96, size, 2),
        "test": phantom_split(96, size, 3),
    }
    real, encoder = prepare_real(real, size, cfg, log)
    labels = sample_plan(train_labels, list(gen.class_names), cfg.n, cfg.seed)
    rows, pairs = sweep(gen, real, encoder, labels, None, cfg, out, log)
    extra = {
        "generator_model_id": "memoriser (closed form, class-conditional)",
        "reference_encoder": real["reference"].identity(),
        "n_members": n_train,
        "protect": {k: stats.get(k) for k in ("fit_accuracy", "fitted", "epochs", "n_images", "stopped")},
    }
    return finish(rows, pairs, cfg, extra, t_start)
