"""The KubeRay manifests under deploy/k8s/ are valid and would run what they say.

Each manifest is checked against the KubeRay v1 CRD schema vendored (trimmed) in
deploy/k8s/schema/, with unknown fields forbidden as ``kubectl apply --validate=strict``
does; then against the project itself: every RayJob entrypoint runs an existing
``jobs/*.py`` with an existing suite file whose overrides validate through the operation
registry, its resource demand fits the worker pods, and the RayService's Serve config
validates with Ray's own schema and imports the package's app builder with valid args of
the same shape as serving/config.yaml. No cluster is needed.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml
from helpers.paths import REPO_ROOT

from busgen.commands.registry import command as operation
from busgen.core.cli_args import config_from_words, pop_option

K8S = REPO_ROOT / "deploy" / "k8s"
SCHEMAS = {"RayJob": K8S / "schema" / "rayjob-v1.json", "RayService": K8S / "schema" / "rayservice-v1.json"}
JOB_MANIFESTS = {name: K8S / f"rayjob-{name}.yaml" for name in ("pretrain", "generate", "evaluate")}
SERVICE_MANIFEST = K8S / "rayservice.yaml"
CUDA_DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile.cuda"


def load(path: Path) -> dict:
    (doc,) = list(yaml.safe_load_all(path.read_text()))
    return doc


def strict(schema):
    """The schema with unknown fields forbidden wherever it lists properties (a typo must fail, not vanish)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    open_ended = "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and not open_ended:
        out["additionalProperties"] = False
    return out


def cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec" if doc["kind"] == "RayJob" else "rayClusterConfig"]


def containers(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def quantity(value) -> float:
    """A Kubernetes CPU/GPU quantity as a number ("500m" -> 0.5)."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def worker_capacity(spec: dict) -> list[dict]:
    """Per worker group: pods (max), CPUs and GPUs per pod, from the container limits."""
    out = []
    for group in spec["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        out.append(
            {
                "pods": group["maxReplicas"],
                "cpu": quantity(limits["cpu"]),
                "gpu": quantity(limits.get("nvidia.com/gpu", 0)),
            }
        )
    return out


def dockerfile_arg(path: Path, name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", path.read_text(), re.MULTILINE)
    assert match, f"{path.name} has no ARG {name}"
    return match.group(1)


ALL_MANIFESTS = [*JOB_MANIFESTS.values(), SERVICE_MANIFEST]


@pytest.mark.parametrize("path", ALL_MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_the_kuberay_crd_schema(path):
    doc = load(path)
    assert doc["apiVersion"] == "ray.io/v1"
    schema = json.loads(SCHEMAS[doc["kind"]].read_text())
    validator = jsonschema.Draft202012Validator(strict(schema))
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_strict_schema_catches_a_misspelt_field():
    doc = load(JOB_MANIFESTS["pretrain"])
    doc["spec"]["shutdownAfterJobFinish"] = doc["spec"].pop("shutdownAfterJobFinishes")
    validator = jsonschema.Draft202012Validator(strict(json.loads(SCHEMAS["RayJob"].read_text())))
    assert any("shutdownAfterJobFinish" in e.message for e in validator.iter_errors(doc))


@pytest.mark.parametrize("path", ALL_MANIFESTS, ids=lambda p: p.name)
def test_cluster_has_head_and_gpu_workers_on_the_cuda_image(path):
    spec = cluster_spec(load(path))
    image = dockerfile_arg(CUDA_DOCKERFILE, "RAY_IMAGE")  # rayproject/ray:2.60.0-py311-cu128
    assert spec["rayVersion"] == image.split(":")[1].split("-")[0], "rayVersion must be the image's Ray version"
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict) and head["template"]["spec"]["containers"]
    assert spec["workerGroupSpecs"], "a head alone has no GPU"
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        (container,) = group["template"]["spec"]["containers"]
        assert quantity(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    images = {c["image"] for c in containers(spec)}
    assert len(images) == 1, f"head and workers must run one image (Ray versions must match): {images}"
    for c in containers(spec):
        assert {"requests", "limits"} <= c["resources"].keys(), f"{c['name']} needs requests and limits"
        assert {"cpu", "memory"} <= c["resources"]["limits"].keys()
        assert c["resources"]["requests"].get("nvidia.com/gpu") == c["resources"]["limits"].get("nvidia.com/gpu")


def job_words(doc: dict) -> tuple[str, list[str], str | None]:
    """The operation a RayJob runs, its config words (``--results-fp`` removed) and its results path."""
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[0] == "python" and argv[1].startswith("jobs/"), f"entrypoint {argv[:2]} is not python jobs/<name>.py"
    script = REPO_ROOT / argv[1]
    assert script.is_file(), f"{argv[1]} does not exist"
    words, results_fp = pop_option(argv[2:], "--results-fp")
    return script.stem, words, results_fp


@pytest.mark.parametrize("name", JOB_MANIFESTS)
def test_rayjob_entrypoint_runs_a_registered_job_whose_config_validates(name, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # the job runs from working_dir, the image's copy of the repository
    doc = load(JOB_MANIFESTS[name])
    assert doc["kind"] == "RayJob" and doc["spec"]["shutdownAfterJobFinishes"] is True
    op_name, words, results_fp = job_words(doc)
    assert op_name == name
    config_path = words[words.index("--config") + 1]
    assert (REPO_ROOT / config_path).is_file(), f"suite file {config_path} does not exist"
    op = operation(op_name)
    cfg, _ = config_from_words(op.config_class, words, op.positional)  # unknown keys or bad values raise here
    assert results_fp and results_fp.startswith("/mnt/shared/"), "results must land on the shared volume"
    for field in op.location_fields:
        value = getattr(cfg, field, None)
        assert not value or str(value).startswith("/mnt/shared/"), f"{field}={value} is not on the shared volume"

    runtime_env = yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
    workdir = re.search(r"^WORKDIR (\S+)$", CUDA_DOCKERFILE.read_text(), re.MULTILINE).group(1)
    assert runtime_env["working_dir"] == workdir, "working_dir must be where the image holds jobs/ and evals/"
    assert not {e.strip("/") for e in runtime_env.get("excludes", [])} & {"jobs", "evals"}, "the job needs both"


def test_rayjob_resource_demands_fit_their_worker_pods(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    demands = {}
    for name, path in JOB_MANIFESTS.items():
        doc = load(path)
        _, words, _ = job_words(doc)
        op = operation(name)
        cfg, _ = config_from_words(op.config_class, words, op.positional)
        (pods,) = worker_capacity(cluster_spec(doc))
        if name == "pretrain":  # one Ray Train worker per GPU
            assert cfg.use_gpu and cfg.num_workers <= pods["pods"] * pods["gpu"]
            assert cfg.cpus_per_worker <= pods["cpu"] / pods["gpu"]
        elif name == "generate":  # one sampler actor per GPU
            assert cfg.num_gpus >= 1 and cfg.concurrency * cfg.num_gpus <= pods["pods"] * pods["gpu"]
            assert cfg.num_cpus < pods["cpu"], "Ray Data's read/write tasks need CPUs beside the actor"
        else:  # one Tune trial per resources_per_trial
            trial = cfg.resources_per_trial
            assert 1 <= trial["GPU"] <= pods["gpu"] and trial["CPU"] <= pods["cpu"]
        demands[name] = pods
    assert set(demands) == {"pretrain", "generate", "evaluate"}


def key_shape(value):
    """The nested key structure of a mapping (values ignored), to compare two configs' shapes."""
    if isinstance(value, dict):
        return {k: key_shape(v) for k, v in value.items()}
    return None


def test_rayservice_serve_config_imports_the_package_builder_with_the_serving_config_shape():
    from ray.serve.schema import ServeDeploySchema

    from busgen.serve.config import ServeArgs

    doc = load(SERVICE_MANIFEST)
    assert doc["kind"] == "RayService"
    serve_config = yaml.safe_load(doc["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_config)  # what the Serve controller accepts
    local = yaml.safe_load((REPO_ROOT / "serving" / "config.yaml").read_text())
    (app,), (local_app,) = serve_config["applications"], local["applications"]
    assert app["import_path"] == local_app["import_path"]
    module, _, attr = app["import_path"].partition(":")
    assert module.startswith("busgen."), "the image has the package installed, not the serving/ folder"
    builder = getattr(importlib.import_module(module), attr)
    (param,) = inspect.signature(builder).parameters.values()
    assert param.annotation is ServeArgs
    args = ServeArgs.model_validate(app["args"])
    assert key_shape(app["args"]) == key_shape(local_app["args"]), "keep serveConfigV2 args in step with serving/"
    assert {d["name"] for d in app["deployments"]} == {d["name"] for d in local_app["deployments"]}
    assert not args.insecure_local and args.token is None and args.token_file is None

    spec = cluster_spec(doc)
    for c in containers(spec):  # the token reaches whichever pod hosts the Ingress replica, from a Secret
        (env,) = [e for e in c.get("env", []) if e["name"] == "BUSGEN_API_TOKEN"]
        assert "secretKeyRef" in env["valueFrom"]
    gpus = sum(p["pods"] * p["gpu"] for p in worker_capacity(spec))
    (gen,) = [d for d in app["deployments"] if d["name"] == "GeneratorDeployment"]
    assert gen["autoscaling_config"]["max_replicas"] * args.generator.num_gpus <= gpus
    assert spec.get("enableInTreeAutoscaling") is True, "worker pods must follow the Serve replicas"
