"""Serving overhead: HTTP throughput and latency of the Ray Serve API vs offline batched inference.

Deploys busgen.serve.app on loopback with a small random classifier and an untrained
tiny generator (weights do not change the cost), then drives it from a thread pool:
classify only, generate only, then both at once. Every phase is bounded by a request
count and a deadline. Offline throughput runs the same model at the deployment's
batch size and thread count in this process, so

    ratio = served requests/s / offline requests/s   (classify; one image per request)

measures what HTTP, auth, decoding, Serve routing and dynamic batching cost; 1.0
would be free. The last line is the headline. CPU only, < 10 min on 2 cores:

    .venv/bin/python evals/benchmarks/serve_load.py
"""

from __future__ import annotations

import itertools
import secrets
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import headline  # noqa: E402

SIZE = 32  # image side of both models
CLASSES = ("benign", "malignant", "normal")
CLASSIFY_BATCH = 16  # classifier max_batch_size, served and offline
GENERATE_BATCH = 8  # generator max_batch_size (images), served and offline
GEN_STEPS, GEN_N = 4, 2  # per generate request
CLIENTS = 16  # concurrent HTTP clients: >= batch size so batches can fill
PHASE_MAX_S = 60.0  # deadline per phase
CLASSIFY_REQUESTS, GENERATE_REQUESTS = 600, 60  # count bound per phase


# Models


def export_models(root: Path) -> tuple[str, str]:
    """An untrained tiny generator and a random small classifier (cost, not quality, is measured)."""
    import torch

    from busgen.data.imageio import mask_to_box
    from busgen.data.phantom import make_phantom_arrays
    from busgen.model import boxprior, classifier, generator
    from busgen.model import unet as models

    torch.manual_seed(0)
    cfg = models.model_config_for("tiny", SIZE)
    unet = models.build_model(cfg, num_labels=len(CLASSES), num_domains=1)
    _, masks, labels = make_phantom_arrays(30, SIZE, seed=0)
    prior = boxprior.fit([mask_to_box(m) for m in masks], labels)
    gen_dir = generator.export_model(root / "gen", unet, None, cfg, CLASSES, ("phantom",), prior, "untrained", 0)
    ccfg = classifier.ClassifierConfig.small(image_size=SIZE)
    clf_dir = classifier.save_classifier(root / "clf", classifier.build_model(ccfg, len(CLASSES)), ccfg, CLASSES)
    return str(gen_dir), str(clf_dir)


def offline_throughput(gen_dir: str, clf_dir: str, images: np.ndarray) -> tuple[float, float]:
    """(classify images/s, generate requests/s) in-process, one thread, the served batch sizes."""
    import torch

    from busgen.model import generator
    from busgen.model.classifier import Predictor

    torch.set_num_threads(1)  # the replicas get one CPU each, hence one thread
    predictor = Predictor.from_checkpoint(clf_dir)
    batch = images[:CLASSIFY_BATCH]
    predictor({"image": batch})  # warm-up
    t0, done = time.perf_counter(), 0
    while time.perf_counter() - t0 < 10.0:
        done += len(predictor({"image": batch})["pred"])
    classify_rate = done / (time.perf_counter() - t0)
    gen = generator.load(gen_dir, device="cpu")
    labels = [CLASSES[i % 3] for i in range(GENERATE_BATCH)]
    gen.sample(labels, steps=GEN_STEPS, seeds=range(GENERATE_BATCH))  # warm-up
    t0, done = time.perf_counter(), 0
    while time.perf_counter() - t0 < 10.0:
        done += len(gen.sample(labels, steps=GEN_STEPS, seeds=range(GENERATE_BATCH), batch_size=GENERATE_BATCH))
    generate_rate = done / GEN_N / (time.perf_counter() - t0)
    return classify_rate, generate_rate


# Load generation


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deploy(gen_dir: str, clf_dir: str, token: str) -> str:
    """Start Serve on 127.0.0.1 with the benchmark's batch sizes; return the base URL once ready."""
    import requests
    from ray import serve

    from busgen.core.raylocal import init_ray
    from busgen.serve.app import build_app
    from busgen.serve.config import ServeArgs

    init_ray(num_cpus=4, object_store_mb=512)
    args = ServeArgs(
        generators={"tiny": gen_dir},
        classifier_dir=clf_dir,
        token=token,
        ingress_num_cpus=0.5,
        limits={"max_n": GEN_N, "max_steps": GEN_STEPS, "default_steps": GEN_STEPS},
        generator={"num_cpus": 1, "torch_threads": 1, "max_batch_size": GENERATE_BATCH, "max_ongoing_requests": 32},
        classifier={"num_cpus": 1, "torch_threads": 1, "max_batch_size": CLASSIFY_BATCH, "max_ongoing_requests": 32},
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(args), name="busgen", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while requests.get(f"{url}/readyz", timeout=60).status_code != 200:
        if time.monotonic() > deadline:
            raise TimeoutError("the service did not become ready in 120 s")
        time.sleep(1)
    return url


def drive(calls: list[tuple[str, callable]], n_requests: int, max_s: float) -> dict[str, dict]:
    """Run named ``calls`` round-robin from CLIENTS threads until n_requests are done or max_s passes.

    Returns, per call name, throughput and latency percentiles of the successful requests and the error count.
    """
    latencies: dict[str, list[float]] = {name: [] for name, _ in calls}
    errors = dict.fromkeys(latencies, 0)
    lock, issued = threading.Lock(), iter(range(n_requests))
    deadline = time.perf_counter() + max_s

    def worker() -> None:
        for i in issued:  # a shared iterator: each request index is taken once
            if time.perf_counter() > deadline:
                return
            name, call = calls[i % len(calls)]
            t0 = time.perf_counter()
            ok = call()
            with lock:
                if ok:
                    latencies[name].append(time.perf_counter() - t0)
                else:
                    errors[name] += 1

    t0 = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        for f in [pool.submit(worker) for _ in range(CLIENTS)]:
            f.result()
    wall = time.perf_counter() - t0
    return {name: summarize(lat, errors[name], wall) for name, lat in latencies.items()}


def summarize(latencies: list[float], errors: int, wall: float) -> dict:
    ms = np.percentile(np.array(latencies) * 1000.0, [50, 95, 99]) if latencies else [float("nan")] * 3
    return {
        "ok": len(latencies),
        "errors": errors,
        "rps": len(latencies) / wall,
        "p50": ms[0],
        "p95": ms[1],
        "p99": ms[2],
    }


def make_calls(url: str, token: str, pngs: list[bytes]) -> tuple[tuple[str, callable], tuple[str, callable]]:
    """(classify, generate) request functions returning True on HTTP 200; inputs rotate per call."""
    import requests

    auth = {"Authorization": f"Bearer {token}"}
    counter = itertools.count()  # thread-safe in CPython

    def classify() -> bool:
        png = pngs[next(counter) % len(pngs)]
        r = requests.post(f"{url}/v1/classify", data=png, timeout=60, headers={**auth, "Content-Type": "image/png"})
        return r.status_code == 200

    def generate() -> bool:
        i = next(counter)
        body = {"label": CLASSES[i % 3], "n": GEN_N, "steps": GEN_STEPS, "seed": i}
        return requests.post(f"{url}/v1/generate", json=body, timeout=120, headers=auth).status_code == 200

    return ("classify", classify), ("generate", generate)


def report(phase: str, results: dict[str, dict]) -> None:
    for name, r in results.items():
        print(
            f"{phase:<9} {name:<9} {r['ok']:>4} ok {r['errors']:>3} err  {r['rps']:7.2f} req/s  "
            f"p50 {r['p50']:7.1f} ms  p95 {r['p95']:7.1f} ms  p99 {r['p99']:7.1f} ms",
            flush=True,
        )


def main() -> None:
    from ray import serve

    from busgen.data.imageio import encode_png
    from busgen.data.phantom import make_phantom_arrays

    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory() as tmp:
        gen_dir, clf_dir = export_models(Path(tmp))
        images = make_phantom_arrays(64, SIZE, seed=0)[0]
        before = offline_throughput(gen_dir, clf_dir, images)
        url = deploy(gen_dir, clf_dir, token)
        try:
            classify, generate = make_calls(url, token, [encode_png(im) for im in images])
            drive([classify], 2 * CLIENTS, 30)  # warm-up: replicas, HTTP connections
            drive([generate], CLIENTS, 60)
            c = drive([classify], CLASSIFY_REQUESTS, PHASE_MAX_S)["classify"]
            report("alone", {"classify": c})
            g = drive([generate], GENERATE_REQUESTS, PHASE_MAX_S)["generate"]
            report("alone", {"generate": g})
            report("mixed", drive([classify, classify, classify, generate], CLASSIFY_REQUESTS // 2, PHASE_MAX_S))
        finally:
            serve.shutdown()
        # Offline again after Serve is gone; the better of the two runs is the reference, so
        # a neighbour's burst of CPU use cannot flatter the ratio.
        after = offline_throughput(gen_dir, clf_dir, images)
    offline_classify, offline_generate = max(before[0], after[0]), max(before[1], after[1])
    print(
        f"offline   classify {offline_classify:.1f} img/s (batch {CLASSIFY_BATCH}), generate {offline_generate:.2f} "
        f"req/s (batch {GENERATE_BATCH} images, {GEN_N} per request, {GEN_STEPS} steps)",
        flush=True,
    )
    print(
        f"generate ratio={g['rps'] / offline_generate:.2f} (served {g['rps']:.2f} req/s, "
        f"offline {offline_generate:.2f} req/s)",
        flush=True,
    )
    headline(
        "serve_load",
        c["rps"] / offline_classify,
        f"served {c['rps']:.1f} req/s, offline {offline_classify:.1f} req/s, "
        f"p50 {c['p50']:.0f}ms p95 {c['p95']:.0f}ms p99 {c['p99']:.0f}ms",
    )


if __name__ == "__main__":
    main()
