"""Serving under load: the real HTTP API against offline inference and against Ray Serve's own ceiling.

Deploys, side by side on one local Serve instance bound to 127.0.0.1, the BUSGen app
(``busgen.serve.app.build_app``: a small random classifier and an untrained tiny
generator; weights do not change the cost) and the no-op app of the same deployment
shape (``busgen.testing.noop``). A bounded asyncio client (aiohttp, which Ray Serve
already depends on) drives them at several concurrency levels; every cell is bounded
by a request count and a deadline. Both ratios are measured in this one run:

- ``serve_load ratio`` (headline, last line): images/s served with 16-image classify
  requests (multipart, PNG files, decoded in the replica) / offline batched inference
  on the same PNGs with the replica's own batch function (decode, resize, predict) at
  the same batch size (16) and thread count (1), without Serve or HTTP. The headline
  uses the classifier ``busgen evaluate`` trains and ships (``ClassifierConfig()``: the
  ResNet-18 layout at width 32, 64 px inputs). The same ratio is also printed for a
  toy classifier (width 16 at 32 px, ~0.1 ms per image), where HTTP, multipart parsing
  and Serve's routing are most of the cost: that ratio shows the per-image transport
  overhead, the headline what a deployment of our classifier gets.
- ``single ratio``: requests/s of 1-image classify requests / requests/s of the no-op
  endpoint, peak over the concurrency levels: the BUSGen work per request (auth, checks,
  decoding, the model, the access log) next to Ray Serve's own per-request cost.
- p99 latency at 32 concurrent single-image clients (goal: <= 150 ms).

A short generate phase (16 images per request) is reported against offline sampling too.

Where the served path spends CPU (the last table before the headline): one more cell of the
headline workload with every process's CPU time read before and after (``psutil``, which Ray
ships), as CPU milliseconds per image, next to the offline CPU per image. CPU time does not
depend on how busy the machine is, so it shows whether the model replica does more work than
offline (its row above the offline figure) or simply gets less of a core (the other rows: HTTP
proxy, ingress, Serve controller, Ray's own processes, all sharing the cores with it).
CPU only, no arguments, a few minutes on 2 cores::

    .venv/bin/python evals/benchmarks/serve_load.py
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import headline  # noqa: E402

SIZE = 32  # image side of the generator and the toy classifier
SHIPPED_SIZE = 64  # the evaluate suites' classifier input size
CLASSES = ("benign", "malignant", "normal")
BATCH = 16  # classifier max_batch_size (images), served and offline
MULTI = 16  # images per multi-image request
SINGLE_LEVELS = (1, 8, 32, 64)  # concurrent clients, single-image requests
MULTI_LEVELS = (1, 2, 4, 8)  # concurrent clients, 16-image requests
CELL_REQUESTS, CELL_S = 1500, 8.0  # bounds of every measured cell
GEN_STEPS, GEN_REQUESTS = 4, 6  # generate phase: 16 images x 4 steps per request
P99_CLIENTS, P99_GOAL_MS = 32, 150.0


def export_models(root: Path) -> tuple[str, str, str]:
    """An untrained tiny generator, a random toy classifier and a random shipped-size one (cost, not quality)."""
    import torch

    from busgen.model import classifier
    from busgen.testing.models import export_untrained

    torch.manual_seed(0)
    gen_dir = export_untrained(root / "gen", seed=0, size=SIZE)
    ccfg = classifier.ClassifierConfig.small(image_size=SIZE)
    clf_dir = classifier.save_classifier(root / "clf", classifier.build_model(ccfg, len(CLASSES)), ccfg, CLASSES)
    scfg = classifier.ClassifierConfig(image_size=SHIPPED_SIZE)
    shipped = classifier.save_classifier(root / "shipped", classifier.build_model(scfg, len(CLASSES)), scfg, CLASSES)
    return str(gen_dir), str(clf_dir), str(shipped)


def offline_classify(clf_dir: str, pngs: list[bytes], seconds: float = 8.0) -> float:
    """Images/s of offline batched inference: the replica's own batch function (decode, resize, predict), no Serve.

    ``batching.classify_requests`` on one request of BATCH PNGs, in this process, one thread.
    """
    import torch

    from busgen.model.classifier import Predictor
    from busgen.serve.batching import classify_requests
    from busgen.serve.config import LimitArgs
    from busgen.serve.registry import read_classifier_info

    torch.set_num_threads(1)  # the served replica gets one CPU, hence one thread
    predictors, limits = {"default": Predictor.from_checkpoint(clf_dir)}, LimitArgs()
    sizes = {"default": read_classifier_info(clf_dir).image_size}
    batches = [
        [{"classifier": "default", "uploads": [(p, "") for p in pngs[i : i + BATCH]]}]
        for i in range(0, len(pngs) - BATCH + 1, BATCH)
    ]
    classify_requests(predictors, sizes, batches[0], limits)  # warm-up
    t0, done = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        (out,) = classify_requests(predictors, sizes, batches[done // BATCH % len(batches)], limits)
        done += len(out["results"])
    return done / (time.perf_counter() - t0)


def offline_cpu_ms(clf_dir: str, pngs: list[bytes], batches: int = 40) -> float:
    """CPU milliseconds per image of offline batched inference (this process, one thread): the replica's yardstick."""
    import torch

    from busgen.model.classifier import Predictor
    from busgen.serve.batching import classify_requests
    from busgen.serve.config import LimitArgs
    from busgen.serve.registry import read_classifier_info

    torch.set_num_threads(1)
    predictors, limits = {"default": Predictor.from_checkpoint(clf_dir)}, LimitArgs()
    sizes = {"default": read_classifier_info(clf_dir).image_size}
    batch = [{"classifier": "default", "uploads": [(p, "") for p in pngs[:BATCH]]}]
    classify_requests(predictors, sizes, batch, limits)  # warm-up
    t0 = time.process_time()
    for _ in range(batches):
        classify_requests(predictors, sizes, batch, limits)
    return 1000.0 * (time.process_time() - t0) / (batches * BATCH)


def serve_pids() -> dict[int, str]:
    """pid -> role of the Serve processes (asked of each actor, so other Ray sessions on the machine never count)."""
    import os

    import ray

    roles = {"ClassifierDeployment": "classifier replica", "Ingress": "ingress", "SERVE_PROXY": "HTTP proxy"}
    roles |= {"SERVE_CONTROLLER": "Serve controller"}
    out = {}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        role = next((r for k, r in roles.items() if k in actor["name"] and "noop" not in actor["name"]), None)
        if role:
            handle = ray.get_actor(actor["name"], namespace=actor["namespace"])
            out[ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=30)] = role
    return out


def cpu_by_process(url: str, bodies: list, roles: dict[int, str]) -> tuple[dict[str, float], int]:
    """CPU seconds per role over one headline cell (this driver's process tree: Ray's and Serve's processes)."""
    import psutil

    def snapshot() -> dict[int, float]:
        out = {}
        for proc in [me, *me.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                out[proc.pid] = t.user + t.system
            except psutil.Error:
                continue
        return out

    me = psutil.Process()
    before = snapshot()
    r = asyncio.run(cell(url, bodies, 8, MULTI))
    after = snapshot()
    used: dict[str, float] = {}
    for pid, cpu in after.items():
        role = roles.get(pid, "client (this driver)" if pid == me.pid else "Ray and other replicas")
        used[role] = used.get(role, 0.0) + cpu - before.get(pid, cpu)
    return used, r["ok"] * MULTI


def offline_generate(gen_dir: str, seconds: float = 8.0) -> float:
    """Images/s of offline sampling at batch MULTI and GEN_STEPS steps, one thread."""
    import torch

    from busgen.model import generator

    torch.set_num_threads(1)
    gen = generator.load(gen_dir, device="cpu")
    labels = [CLASSES[i % 3] for i in range(MULTI)]
    gen.sample(labels, steps=GEN_STEPS, seeds=range(MULTI), batch_size=MULTI)  # warm-up
    t0, done = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        done += len(gen.sample(labels, steps=GEN_STEPS, seeds=range(MULTI), batch_size=MULTI))
    return done / (time.perf_counter() - t0)


def in_ray_worker(fn, *args):
    """Run ``fn(*args)`` as a Ray task with one CPU: offline inference then runs at the same priority
    as the Serve replicas. Ray starts every worker at nice 15 (``RAY_worker_niceness``) so that it yields
    to the driver; measured in this (nice 0) driver instead, the offline side would win every fight for a
    core against the replicas whenever anything else runs on the machine."""
    import ray

    return ray.get(ray.remote(num_cpus=1)(fn).remote(*args))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_args(gen_dir: str, clf_dir: str, shipped_dir: str, token: str):
    from busgen.serve.config import ServeArgs

    return ServeArgs(
        generators={"tiny": gen_dir},
        classifier_dir=clf_dir,
        classifiers={"shipped": shipped_dir},
        token=token,
        limits={"max_n": MULTI, "max_steps": GEN_STEPS, "default_steps": GEN_STEPS},
        ingress={"num_cpus": 0.5, "max_ongoing_requests": 256, "max_queued_requests": 512},
        generator={"num_cpus": 1, "torch_threads": 1, "max_batch_size": MULTI, "max_ongoing_requests": 32},
        classifier={
            "num_cpus": 1,
            "torch_threads": 1,
            "max_batch_size": BATCH,
            "batch_wait_timeout_s": 0.005,
            "max_ongoing_requests": 64,
            "max_queued_requests": 512,
        },
    )


def deploy(args) -> str:
    """Both apps on one Serve instance on 127.0.0.1: BUSGen at /, the no-op ceiling at /noop."""
    import requests
    from ray import serve

    from busgen.serve.app import build_app
    from busgen.testing.noop import build_noop_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(args), name="busgen", route_prefix="/")
    serve.run(build_noop_app(args), name="noop", route_prefix="/noop")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while requests.get(f"{url}/readyz", timeout=60).status_code != 200:
        if time.monotonic() > deadline:
            raise TimeoutError("the service did not become ready in 120 s")
        time.sleep(1)
    return url


def multipart(pngs: list[bytes], boundary: str = "busgenbench") -> tuple[bytes, str]:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{i}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + png
        + b"\r\n"
        for i, png in enumerate(pngs)
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def cell(url: str, bodies: list[tuple[bytes, dict]], clients: int, images: int) -> dict:
    """POST ``bodies`` round-robin from ``clients`` concurrent clients until CELL_REQUESTS or CELL_S."""
    import aiohttp

    latencies, statuses = [], {}
    issued = iter(range(CELL_REQUESTS))
    deadline = time.perf_counter() + CELL_S
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client() -> None:
            for i in issued:
                if time.perf_counter() > deadline:
                    return
                data, headers = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                async with session.post(url, data=data, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                    if resp.status == 200:
                        latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*[client() for _ in range(clients)])
        wall = time.perf_counter() - t0
    ms = np.percentile(np.array(latencies) * 1000.0, [50, 95, 99]) if latencies else [float("nan")] * 3
    return {
        "clients": clients,
        "ok": len(latencies),
        "errors": sum(v for k, v in statuses.items() if k != 200),
        "rps": len(latencies) / wall,
        "ips": len(latencies) * images / wall,
        "p50": ms[0],
        "p95": ms[1],
        "p99": ms[2],
    }


def row(name: str, r: dict) -> None:
    print(
        f"| {name:<22} | {r['clients']:>3} | {r['ok']:>5} | {r['errors']:>3} | {r['rps']:8.1f} | {r['ips']:8.1f} | "
        f"{r['p50']:7.1f} | {r['p95']:7.1f} | {r['p99']:7.1f} |",
        flush=True,
    )


def multi_bodies(pngs: list[bytes], auth: dict) -> list[tuple[bytes, dict]]:
    out = []
    for k in range(4):
        body, ctype = multipart([pngs[(k * MULTI + j) % len(pngs)] for j in range(MULTI)])
        out.append((body, {**auth, "Content-Type": ctype}))
    return out


async def measure(url: str, token: str, pngs: list[bytes], pngs_shipped: list[bytes]) -> dict:
    auth = {"Authorization": f"Bearer {token}"}
    single = [(png, {**auth, "Content-Type": "image/png"}) for png in pngs]
    multi, shipped = multi_bodies(pngs, auth), multi_bodies(pngs_shipped, auth)
    shipped_url = f"{url}/v1/classify?model=shipped"
    noop = [(png, {"Content-Type": "application/octet-stream"}) for png in pngs]
    gen_body = [(f'{{"label": "benign", "n": {MULTI}, "seed": {k}}}'.encode(), auth) for k in range(4)]
    for _ in range(2):  # warm-up: connections, replicas, batch paths
        await cell(f"{url}/noop/v1/noop", noop, 8, 1)
        await cell(f"{url}/v1/classify", single, 8, 1)
    await cell(f"{url}/v1/classify", multi, 2, MULTI)
    await cell(shipped_url, shipped, 2, MULTI)
    out = {"noop": [], "single": [], "multi": [], "shipped": []}
    print("| endpoint               | clients | ok | err | req/s | img/s | p50 ms | p95 ms | p99 ms |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for clients in SINGLE_LEVELS:  # interleaved, so a neighbour's CPU burst hits both sides alike
        out["noop"].append(await cell(f"{url}/noop/v1/noop", noop, clients, 1))
        row("no-op (Serve ceiling)", out["noop"][-1])
        out["single"].append(await cell(f"{url}/v1/classify", single, clients, 1))
        row("classify 1 image", out["single"][-1])
    for clients in MULTI_LEVELS:
        out["multi"].append(await cell(f"{url}/v1/classify", multi, clients, MULTI))
        row(f"classify {MULTI} images", out["multi"][-1])
        out["shipped"].append(await cell(shipped_url, shipped, clients, MULTI))
        row(f"shipped clf {MULTI} images", out["shipped"][-1])
    global CELL_REQUESTS
    saved, CELL_REQUESTS = CELL_REQUESTS, GEN_REQUESTS
    try:
        out["generate"] = await cell(f"{url}/v1/generate", gen_body, 2, MULTI)
    finally:
        CELL_REQUESTS = saved
    row(f"generate {MULTI} images", out["generate"])
    return out


def main() -> None:
    from ray import serve

    from busgen.core.raylocal import init_ray
    from busgen.data.imageio import encode_png
    from busgen.data.phantom import make_phantom_arrays

    token = secrets.token_urlsafe(24)
    init_ray(num_cpus=4, object_store_mb=512, quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        gen_dir, clf_dir, shipped_dir = export_models(Path(tmp))
        pngs = [encode_png(im) for im in make_phantom_arrays(64, SIZE, seed=0)[0]]
        pngs_shipped = [encode_png(im) for im in make_phantom_arrays(64, SHIPPED_SIZE, seed=0)[0]]
        offline_before = in_ray_worker(offline_classify, clf_dir, pngs)
        shipped_before = in_ray_worker(offline_classify, shipped_dir, pngs_shipped)
        url = deploy(serve_args(gen_dir, clf_dir, shipped_dir, token))
        try:
            out = asyncio.run(measure(url, token, pngs, pngs_shipped))
            shipped_bodies = multi_bodies(pngs_shipped, {"Authorization": f"Bearer {token}"})
            used, images = cpu_by_process(f"{url}/v1/classify?model=shipped", shipped_bodies, serve_pids())
        finally:
            serve.shutdown()
        # Offline again after Serve is gone; the better run is the reference, so a neighbour's burst
        # of CPU use cannot flatter the ratio.
        offline = max(offline_before, in_ray_worker(offline_classify, clf_dir, pngs))
        offline_shipped = max(shipped_before, in_ray_worker(offline_classify, shipped_dir, pngs_shipped))
        offline_gen = in_ray_worker(offline_generate, gen_dir)
        offline_cpu = in_ray_worker(offline_cpu_ms, shipped_dir, pngs_shipped)
    best_multi = max(out["multi"], key=lambda r: r["ips"])
    best_shipped = max(out["shipped"], key=lambda r: r["ips"])
    toy_ratio = best_multi["ips"] / offline
    best_single = max(out["single"], key=lambda r: r["rps"])
    best_noop = max(out["noop"], key=lambda r: r["rps"])
    at32 = next(r for r in out["single"] if r["clients"] == P99_CLIENTS)
    single_ratio = best_single["rps"] / best_noop["rps"]
    gen_ratio = out["generate"]["ips"] / offline_gen
    print(
        f"offline classify {offline:.1f} img/s (batch {BATCH}, PNG decode + resize + predict, 1 thread, "
        f"in a Ray worker; first run {offline_before:.1f})",
        flush=True,
    )
    print(
        f"offline classify, shipped classifier: {offline_shipped:.1f} img/s (64 px, width 32; "
        f"first run {shipped_before:.1f})",
        flush=True,
    )
    print(
        f"toy classifier ratio={toy_ratio:.2f} (served {best_multi['ips']:.1f} img/s in {MULTI}-image requests at "
        f"{best_multi['clients']} clients vs offline {offline:.1f}: per-image transport overhead)",
        flush=True,
    )
    print(f"offline generate {offline_gen:.2f} img/s (batch {MULTI}, {GEN_STEPS} steps, 1 thread)", flush=True)
    print(
        f"generate ratio={gen_ratio:.2f} (served {out['generate']['ips']:.2f} img/s vs offline {offline_gen:.2f})",
        flush=True,
    )
    print(
        f"single ratio={single_ratio:.2f} (classify 1 image {best_single['rps']:.1f} req/s at "
        f"{best_single['clients']} clients vs no-op {best_noop['rps']:.1f} req/s at {best_noop['clients']} clients)",
        flush=True,
    )
    print(
        f"p99 at {P99_CLIENTS} clients: {at32['p99']:.1f} ms (goal <= {P99_GOAL_MS:.0f} ms, "
        f"{'met' if at32['p99'] <= P99_GOAL_MS else 'missed'})",
        flush=True,
    )
    print(f"CPU per image, shipped classifier, {MULTI}-image requests at 8 clients ({images} images):", flush=True)
    print(f"| process | CPU ms/image |\n|---|---|\n| offline (same batch function, 1 thread) | {offline_cpu:.2f} |")
    for role, cpu in sorted(used.items(), key=lambda kv: -kv[1]):
        print(f"| {role} | {1000.0 * cpu / max(images, 1):.2f} |", flush=True)
    headline(
        "serve_load",
        best_shipped["ips"] / offline_shipped,
        f"shipped classifier: served {best_shipped['ips']:.1f} img/s in {MULTI}-image requests at "
        f"{best_shipped['clients']} clients, offline {offline_shipped:.1f} img/s; toy classifier {toy_ratio:.2f}; "
        f"single ratio={single_ratio:.2f} vs no-op; "
        f"p99@{P99_CLIENTS} {at32['p99']:.0f}ms",
    )


if __name__ == "__main__":
    main()
