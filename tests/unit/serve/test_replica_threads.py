"""A model replica's threads: torch's intra-op count as configured, and a GIL switch interval short enough that
Serve's own Python threads in the replica cannot convoy the model thread (see ``deployments.MODEL_SWITCH_INTERVAL_S``).

The convoy itself, shown without Ray: a model thread running the classifier's batch function
while a second thread runs short bursts of pure Python loses far less throughput at the
replica's switch interval than at Python's default (5 ms). Timing on a shared machine is
noisy, so the check is a ratio of interleaved runs with a wide margin, and it is marked slow.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest
import torch

from busgen.serve.deployments import MODEL_SWITCH_INTERVAL_S, tune_replica_threads


@pytest.fixture
def restore_threads():
    interval, threads = sys.getswitchinterval(), torch.get_num_threads()
    yield
    sys.setswitchinterval(interval)
    torch.set_num_threads(threads)


def test_a_model_replica_sets_torch_threads_and_a_short_switch_interval(restore_threads):
    tune_replica_threads(1)
    assert torch.get_num_threads() == 1
    assert sys.getswitchinterval() == pytest.approx(MODEL_SWITCH_INTERVAL_S) and MODEL_SWITCH_INTERVAL_S < 0.005
    before = torch.get_num_threads()
    tune_replica_threads(None)
    assert torch.get_num_threads() == before, "None keeps Ray's per-actor default"


@pytest.mark.slow
def test_the_short_interval_shrinks_the_convoy_of_python_threads_on_the_model_thread(tmp_path, restore_threads):
    from helpers.models import CLASSES

    from busgen.data.imageio import encode_png
    from busgen.data.phantom import make_phantom_arrays
    from busgen.model import classifier
    from busgen.model.classifier import Predictor
    from busgen.serve.batching import classify_requests
    from busgen.serve.config import LimitArgs

    torch.set_num_threads(1)
    cfg = classifier.ClassifierConfig(image_size=64)  # the shipped classifier's layout (serve_load's headline)
    folder = classifier.save_classifier(tmp_path / "clf", classifier.build_model(cfg, len(CLASSES)), cfg, CLASSES)
    predictors = {"default": Predictor.from_checkpoint(folder)}
    pngs = [encode_png(im) for im in make_phantom_arrays(16, 64, seed=0)[0]]
    batch = [{"classifier": "default", "uploads": [(p, "") for p in pngs]}]

    def rate(busy: bool, n: int = 8) -> float:
        stop = threading.Event()

        def python_bursts():  # 2 ms of Python every ~20 ms, like request handling on Serve's event loops
            while not stop.is_set():
                t = time.perf_counter()
                while time.perf_counter() - t < 0.002:
                    sum(range(100))
                time.sleep(0.018)

        side = threading.Thread(target=python_bursts) if busy else None
        side and side.start()
        t = time.perf_counter()
        for _ in range(n):
            classify_requests(predictors, {"default": 64}, batch, LimitArgs())
        out = n / (time.perf_counter() - t)
        stop.set()
        side and side.join()
        return out

    rate(False, 2)
    kept = {}
    for interval in (0.005, MODEL_SWITCH_INTERVAL_S) * 3:  # interleaved: load changes hit both alike
        sys.setswitchinterval(interval)
        kept.setdefault(interval, []).append(rate(True) / rate(False))
    default, short = (float(np.median(kept[k])) for k in (0.005, MODEL_SWITCH_INTERVAL_S))
    assert short > default + 0.05, f"throughput kept beside Python bursts: {short:.2f} vs {default:.2f} at 5 ms"
