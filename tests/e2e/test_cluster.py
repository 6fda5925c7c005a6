"""Cluster operation, proven on a real multi-node Ray cluster on this machine.

What these tests specify:

* ``cluster.yaml`` is a valid Ray cluster-launcher config (checked against the schema
  shipped inside the ``ray`` package), and every job's per-worker resource demand fits
  some worker node type it declares.
* Jobs go through the Ray Job Submission SDK with ``runtime_env={"working_dir": repo}``,
  exactly as ``ray job submit --working-dir . -- python jobs/X.py`` sends them.
* Generation survives losing a worker node mid-run: exactly N unique images, shards
  that tile ``[0, N)`` once, none partial.
* Pretraining survives losing a Ray Train worker: the worker group restarts from the
  last checkpoint, so the step counter continues instead of restarting at 0.
* A sweep runs one Tune trial per grid point and writes its results table.

The cluster (a head with 0 CPUs, so that only drivers run there, plus two worker nodes)
is ``ray.cluster_utils.Cluster`` running in a child process: this file re-executes itself
with ``--serve-cluster``. The pytest process never calls ``ray.init``, so it cannot collide
with the session fixture ``ray_local``; it talks to the cluster only over HTTP (Job
Submission SDK) and through the child's stdin (``kill <worker>``, ``stop``).
``Cluster`` rather than ``ray start``: on Linux ``ray start --node-ip-address=127.0.0.1``
replaces a loopback address with the machine's external one, while ``Cluster`` keeps
127.0.0.1. The cluster runs with token auth and its own random token, which the
SDK client sends as a Bearer header, so nothing depends on ``~/.ray/auth_token``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.paths import REPO_ROOT

LOOPBACK = "127.0.0.1"
WORKER_CPUS = 2  # logical CPUs per worker node: sampler actors plus Ray Data tasks fit
OBJECT_STORE_BYTES = 96 * 1024 * 1024
# What `ray job submit --working-dir .` would upload, minus what a job never needs.
RUNTIME_ENV = {
    "working_dir": str(REPO_ROOT),
    "excludes": [".venv", ".git", ".pytest_cache", "demo_out", "**/__pycache__"],
}


# ============================================================================ cluster process


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def serve_cluster(num_workers: int, temp_dir: str) -> None:
    """Child-process side: start head + workers, print their addresses as one JSON line, obey stdin."""
    import ray
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    # Cluster() records its address in /tmp/ray/ray_current_cluster (what address="auto"
    # finds); other engineers' Ray on this machine must not be pointed at ours, so that file
    # is put back. Ours goes into our temp dir, as `ray start` does: job drivers find their
    # cluster there, and without it Ray falls back to scanning for *any* running GCS.
    address_file = Path(ray._private.utils.get_ray_address_file(None))
    previous = address_file.read_text() if address_file.exists() else None
    cluster = Cluster(
        initialize_head=True,
        head_node_args=dict(
            node_ip_address=LOOPBACK,
            num_cpus=0,
            include_dashboard=True,
            dashboard_host=LOOPBACK,
            # Explicit free ports: the defaults (8265, agent 52365) may belong to another Ray on this machine.
            dashboard_port=free_port(),
            dashboard_agent_listen_port=free_port(),
            temp_dir=temp_dir,
            object_store_memory=OBJECT_STORE_BYTES,
        ),
    )
    if previous is None:
        address_file.unlink(missing_ok=True)
    else:
        address_file.write_text(previous)
    ray._private.utils.write_ray_address(cluster.address, temp_dir)
    # A temp dir per node, as on separate machines: nodes sharing one would share the unpacked
    # runtime_env working_dir, and a worker node deleting it when its tasks end would pull it
    # from under the job driver on the head.
    workers = [
        cluster.add_node(
            node_ip_address=LOOPBACK,
            num_cpus=WORKER_CPUS,
            object_store_memory=OBJECT_STORE_BYTES,
            temp_dir=f"{temp_dir}/w{i}",
        )
        for i in range(num_workers)
    ]
    cluster.wait_for_nodes()

    def raylet_pid(node) -> int:
        return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid

    print(
        json.dumps(
            {
                "dashboard_url": f"http://{cluster.webui_url}",
                "gcs_address": cluster.address,
                "worker_raylet_pids": [raylet_pid(n) for n in workers],
            }
        ),
        flush=True,
    )
    for line in sys.stdin:  # EOF (the test process died) ends the cluster too
        cmd = line.split()
        if cmd and cmd[0] == "kill":  # abrupt node loss: SIGKILL every process of that node
            cluster.remove_node(workers[int(cmd[1])], allow_graceful=False)
            print(json.dumps({"killed": int(cmd[1])}), flush=True)
        elif cmd and cmd[0] == "stop":
            break
    cluster.shutdown()


# ============================================================================ test-side handle


@dataclass
class LocalCluster:
    """The test's view of the cluster process: job client, node kills, process lookups."""

    proc: subprocess.Popen
    info: dict
    token: str

    @property
    def dashboard_url(self) -> str:
        return self.info["dashboard_url"]

    def client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard_url, headers={"Authorization": f"Bearer {self.token}"})

    def kill_worker(self, index: int) -> None:
        self.proc.stdin.write(f"kill {index}\n")
        self.proc.stdin.flush()
        assert json.loads(self.proc.stdout.readline()) == {"killed": index}

    def worker_processes(self, index: int, name: str) -> list:
        """Live processes on worker node ``index`` whose title contains ``name`` (e.g. an actor class)."""
        import psutil

        raylet = psutil.Process(self.info["worker_raylet_pids"][index])
        found = []
        for p in raylet.children(recursive=True):
            try:
                if name in " ".join(p.cmdline()):
                    found.append(p)
            except psutil.NoSuchProcess:
                pass
        return found

    def stop(self) -> None:
        """Stop the cluster; if it does not go quietly, SIGKILL its whole process tree."""
        import psutil

        tree = []
        try:
            tree = psutil.Process(self.proc.pid).children(recursive=True)
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)
        except (subprocess.TimeoutExpired, BrokenPipeError, psutil.NoSuchProcess):
            self.proc.kill()
        for p in tree:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass


def start_cluster(temp_dir: Path, num_workers: int = 2, timeout: float = 180) -> LocalCluster:
    token = secrets.token_hex(24)
    env = dict(
        os.environ,
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        RAY_USAGE_STATS_ENABLED="0",
        # Ray turns 127.0.0.1 in a GCS address into the machine's external IP (services.
        # resolve_ip_for_localhost) unless "cluster mode" is off; off, every process of the
        # cluster (agents, job drivers) resolves its node IP to loopback, as the nodes have.
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        # job entrypoints say `python ...`: make that the venv's interpreter
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        # this file runs as the cluster's script: it imports the test helpers as pytest does
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT / "tests"), os.environ.get("PYTHONPATH")])),
    )
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-cluster", str(num_workers), str(temp_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    cluster = LocalCluster(proc, {}, token)
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        if line.startswith("{"):
            cluster.info = json.loads(line)
            return cluster
    cluster.stop()
    raise RuntimeError(f"local Ray cluster did not start within {timeout}s (exit {proc.poll()})")


@pytest.fixture
def local_cluster():
    """Head (0 CPUs) + 2 worker nodes on 127.0.0.1; always torn down, even when the test fails."""
    import tempfile

    # A short temp dir: Ray's Unix socket paths must stay under ~107 characters.
    with tempfile.TemporaryDirectory(prefix="bgc-", dir="/tmp") as temp_dir:
        cluster = start_cluster(Path(temp_dir))
        try:
            yield cluster
        finally:
            cluster.stop()


# ============================================================================ jobs


def submit(cluster: LocalCluster, entrypoint: str) -> str:
    return cluster.client().submit_job(entrypoint=entrypoint, runtime_env=RUNTIME_ENV)


def wait_for_job(cluster: LocalCluster, job_id: str, timeout: float) -> tuple[str, str]:
    """(final status, logs); fails the test with the logs when the job does not end in time."""
    client = cluster.client()
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.get_job_status(job_id)
        if status.is_terminal():
            return str(status), client.get_job_logs(job_id)
        time.sleep(1)
    pytest.fail(
        f"job {job_id} still {client.get_job_status(job_id)} after {timeout}s:\n{client.get_job_logs(job_id)[-4000:]}"
    )


def wait_while_running(cluster: LocalCluster, job_id: str, condition, what: str, timeout: float) -> None:
    """Poll ``condition()`` until true; fail with the job's logs if the job ends or time runs out first."""
    client = cluster.client()
    deadline = time.time() + timeout
    while not condition():
        status = client.get_job_status(job_id)
        if status.is_terminal() or time.time() > deadline:
            pytest.fail(f"job {job_id} is {status} after waiting for {what}:\n{client.get_job_logs(job_id)[-6000:]}")
        time.sleep(0.5)


def assert_succeeded(status: str, logs: str) -> None:
    assert status == "SUCCEEDED", f"job ended {status}:\n{logs[-6000:]}"


def generate_entrypoint(model_dir: Path, out_dir: Path, results_fp: Path, *overrides: str) -> str:
    return (
        f"python jobs/generate.py --config platform/busgen/configs/generate_small.yaml model={model_dir} out={out_dir} "
        f"{' '.join(overrides)} --results-fp {results_fp}"
    )


def assert_exactly_n_unique_images(out_dir: Path, n: int, shard_size: int) -> None:
    """Shards tile [0, n) once with full row counts, and the images are n distinct rows."""
    import pyarrow.dataset as pads

    from busgen.data import dataset as data
    from busgen.generate.resume import check_output

    assert check_output(out_dir, n, shard_size) == n
    table = pads.dataset(data.parquet_files(out_dir), format="parquet").to_table(columns=["index", "sha256"])
    assert sorted(table.column("index").to_pylist()) == list(range(n))
    assert len(set(table.column("sha256").to_pylist())) == n
    assert not [p.name for p in out_dir.glob("shard-*") if not p.name.endswith(".parquet")]


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    from helpers.models import export_untrained_tiny

    return export_untrained_tiny(tmp_path / "model", seed=0)


# ============================================================================ tests: config


def load_cluster_yaml() -> dict:
    import yaml

    return yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_is_valid_against_rays_own_schema():
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = load_cluster_yaml()
    jsonschema.validate(config, schema)
    assert config["head_node_type"] in config["available_node_types"]
    workers = {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}
    assert {"ray.worker.gpu_train", "ray.worker.gpu_gen"} <= set(workers)
    for name, node_type in workers.items():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"] <= config["max_workers"], name


def fits_some_worker(demand: dict[str, float], config: dict) -> bool:
    workers = [v for k, v in config["available_node_types"].items() if k != config["head_node_type"]]
    return any(all(node["resources"].get(r, 0) >= amount for r, amount in demand.items()) for node in workers)


@pytest.mark.parametrize(
    "job,suite,overrides",
    [
        ("generate", "generate_small.yaml", ["model=m", "out=o"]),
        (
            "generate",
            "generate_small.yaml",
            ["model=m", "out=o", "num_gpus=1", "num_cpus=4"],
        ),  # docs/cluster.md GPU run
        ("sweep", "sweep_small.yaml", ["base.model=m", "out=o"]),
        ("sweep", "sweep_small.yaml", ["base.model=m", "out=o", "resources_per_trial={CPU: 4, GPU: 1}"]),
    ],
)
def test_job_resource_demands_fit_a_cluster_node_type(job, suite, overrides):
    from busgen.commands.registry import COMMANDS
    from busgen.core.config import load_config

    op = COMMANDS[job]
    cfg = load_config(op.config_class, REPO_ROOT / "platform" / "busgen" / "configs" / suite, overrides)
    demand = cfg.resource_demand()
    assert fits_some_worker(demand, load_cluster_yaml()), f"no node type in cluster.yaml offers {demand}"


def test_job_exit_status_and_summary_line_on_bad_config(tmp_path):
    """A typo exits 2, a missing model exits 1; both print the summary line and write results."""
    results_fp = tmp_path / "results.json"
    base = [
        sys.executable,
        "jobs/generate.py",
        "--config",
        "platform/busgen/configs/generate_small.yaml",
        "--results-fp",
        str(results_fp),
    ]
    typo = subprocess.run(
        [*base, "model=m", "out=o", "stepz=3"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert typo.returncode == 2 and "BUSGEN_JOB generate status=bad_config" in typo.stdout, typo.stderr
    assert "stepz" in json.loads(results_fp.read_text())["error"]
    missing = subprocess.run(
        [*base, f"model={tmp_path / 'nope'}", f"out={tmp_path / 'out'}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 1 and "status=failed" in missing.stdout, missing.stderr
    assert json.loads(results_fp.read_text())["status"] == "failed"


# ============================================================================ tests: cluster


@pytest.mark.cluster
@pytest.mark.slow
def test_generate_job_on_multinode_cluster(local_cluster, tiny_model, tmp_path):
    out_dir, results_fp = tmp_path / "synthetic", tmp_path / "generate.json"
    job_id = submit(local_cluster, generate_entrypoint(tiny_model, out_dir, results_fp))
    assert_succeeded(*wait_for_job(local_cluster, job_id, timeout=300))

    results = json.loads(results_fp.read_text())
    assert results["status"] == "ok" and results["run_id"] == job_id
    assert results["metrics"]["images"] == 48 and results["metrics"]["attempts"] == 1
    assert_exactly_n_unique_images(out_dir, n=48, shard_size=8)


@pytest.mark.cluster
def test_generate_job_survives_losing_a_worker_node(local_cluster, tiny_model, tmp_path):
    """Kill the node running a sampler actor mid-run: the job still ends with exactly N unique images."""
    n, shard_size = 64, 4
    out_dir, results_fp = tmp_path / "synthetic", tmp_path / "generate.json"
    job_id = submit(
        local_cluster,
        generate_entrypoint(
            tiny_model, out_dir, results_fp, f"n={n}", f"shard_size={shard_size}", "steps=8", "batch_size=4"
        ),
    )

    # 1. wait until shards are being written, then kill a node that hosts a sampler actor
    wait_while_running(local_cluster, job_id, lambda: list(out_dir.glob("shard-*.parquet")), "a finished shard", 150)
    hosts = [i for i in (0, 1) if local_cluster.worker_processes(i, "ShardWriter")]
    assert hosts, "no sampler actor process found on either worker node"
    local_cluster.kill_worker(hosts[0])
    missing_at_kill = n // shard_size - len(list(out_dir.glob("shard-*.parquet")))
    assert missing_at_kill > 0, "generation finished before the node died: make the run longer"

    # 2. the job finishes on the surviving node, with every image exactly once
    assert_succeeded(*wait_for_job(local_cluster, job_id, timeout=150))
    assert json.loads(results_fp.read_text())["metrics"]["images"] == n
    assert_exactly_n_unique_images(out_dir, n, shard_size)


PRETRAIN_DRIVER = """
import json, sys
from busgen.core.config import load_config
from busgen.train.pretrain import PretrainConfig, pretrain
cfg = load_config(PretrainConfig, None, sys.argv[2:])
result = pretrain(cfg)
history = [m for _, m in result.best_checkpoints]
json.dump({"metrics": result.metrics, "checkpoint_steps": [m["step"] for m in history],
           "checkpoint_start_steps": [m["start_step"] for m in history]}, open(sys.argv[1], "w"))
"""


def registered_checkpoint(run_dir: Path) -> bool:
    """True once Ray Train's controller has recorded a checkpoint (not merely a folder being uploaded).

    A worker killed between uploading a checkpoint and the controller registering it
    restarts from the previous one, so the test must wait for the controller's snapshot.
    """
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    try:
        return bool(json.loads(snapshot.read_text()).get("latest_checkpoint_result"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False


@pytest.mark.cluster
@pytest.mark.slow
def test_pretraining_resumes_from_checkpoint_after_a_train_worker_dies(local_cluster, tmp_path):
    from helpers.data import write_phantom_dataset

    max_steps, every = 12, 4
    data_dir = write_phantom_dataset(tmp_path / "data", n=32, size=32)
    storage, run_name, results_fp = tmp_path / "runs", "fault", tmp_path / "pretrain.json"
    overrides = [
        f"data_dir={data_dir}",
        "preset=tiny",
        "image_size=32",
        "batch_size=4",
        f"max_steps={max_steps}",
        f"checkpoint_every={every}",
        "num_workers=2",
        "max_failures=1",
        "warmup_steps=2",
        "log_every=1",
        f"storage_path={storage}",
        f"run_name={run_name}",
        f"out={tmp_path / 'model'}",
    ]
    job_id = submit(local_cluster, f"python -c '{PRETRAIN_DRIVER}' {results_fp} {' '.join(overrides)}")

    # 1. once the first checkpoint is persisted, SIGKILL one Ray Train worker process
    wait_while_running(local_cluster, job_id, lambda: registered_checkpoint(storage / run_name), "a checkpoint", 300)
    victims = local_cluster.worker_processes(0, "RayTrainWorker") + local_cluster.worker_processes(1, "RayTrainWorker")
    assert victims, "no Ray Train worker process found on the worker nodes"
    victims[0].send_signal(signal.SIGKILL)

    # 2. the worker group restarts from the checkpoint and finishes the run
    status, logs = wait_for_job(local_cluster, job_id, timeout=400)
    assert_succeeded(status, logs)
    results = json.loads(results_fp.read_text())
    assert results["metrics"]["step"] == max_steps
    restored = results["metrics"]["start_step"]
    assert restored > 0 and restored % every == 0, f"the restarted run began at step {restored}, not at a checkpoint"
    assert (tmp_path / "model" / "busgen.json").is_file()


@pytest.mark.cluster
@pytest.mark.slow
def test_sweep_job_writes_results_table(local_cluster, tiny_model, tmp_path):
    import csv

    out_dir, results_fp = tmp_path / "sweep", tmp_path / "sweep.json"
    job_id = submit(
        local_cluster,
        f"python jobs/sweep.py --config platform/busgen/configs/sweep_small.yaml "
        f"base.model={tiny_model} out={out_dir} --results-fp {results_fp}",
    )
    assert_succeeded(*wait_for_job(local_cluster, job_id, timeout=400))

    rows = list(csv.DictReader((out_dir / "results.csv").open()))
    assert sorted((r["sampler"], int(r["steps"])) for r in rows) == [
        ("ddim", 2),
        ("ddim", 4),
        ("dpmpp", 2),
        ("dpmpp", 4),
    ]
    assert all(r["status"] == "ok" and float(r["images_per_s"]) > 0 for r in rows)
    assert (out_dir / "results.parquet").is_file()
    assert json.loads(results_fp.read_text())["metrics"]["trials"] == 4


if __name__ == "__main__" and sys.argv[1:2] == ["--serve-cluster"]:
    serve_cluster(int(sys.argv[2]), sys.argv[3])
