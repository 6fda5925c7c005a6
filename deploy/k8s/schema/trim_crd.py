"""Trim a KubeRay CRD to the part of its v1 OpenAPI schema our manifests use.

The CRDs (ray-operator/config/crd/bases/ray.io_*.yaml) are over 1 MB each, almost all
of it the Kubernetes PodSpec repeated for every pod template. This keeps every
KubeRay field (RayJob/RayService/RayCluster spec, worker groups, autoscaler options)
with its types, enums and required lists, drops descriptions and ``status``, and cuts
each PodSpec and Container down to the fields listed below. Tests then forbid unknown
fields (as ``kubectl apply --validate=strict`` does), so a manifest that needs another
pod field must add it to the lists here and re-run::

    git -C KUBERAY show TAG:ray-operator/config/crd/bases/ray.io_rayjobs.yaml > rayjobs.yaml
    python deploy/k8s/schema/trim_crd.py rayjobs.yaml deploy/k8s/schema/rayjob-v1.json --source "kuberay TAG"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

POD_SPEC_KEEP = {"containers", "volumes", "nodeSelector", "tolerations", "serviceAccountName", "restartPolicy"}
CONTAINER_KEEP = {"name", "image", "imagePullPolicy", "command", "args", "env", "ports", "resources", "volumeMounts"}
VOLUME_KEEP = {"name", "persistentVolumeClaim", "emptyDir", "secret", "configMap"}


def _is_pod_spec(node: dict) -> bool:
    props = node.get("properties", {})
    return "containers" in props and "initContainers" in props


def _is_container(node: dict) -> bool:
    props = node.get("properties", {})
    return {"image", "livenessProbe", "volumeMounts"} <= props.keys()


def _is_volume(node: dict) -> bool:
    props = node.get("properties", {})
    return {"persistentVolumeClaim", "hostPath", "name"} <= props.keys()


def _keep(node: dict, names: set[str]) -> dict:
    node = dict(node)
    node["properties"] = {k: v for k, v in node["properties"].items() if k in names}
    if "required" in node:
        node["required"] = [r for r in node["required"] if r in names]
    return node


def trim(node):
    """Drop descriptions everywhere and cut PodSpec/Container/Volume schemas to the kept fields."""
    if isinstance(node, list):
        return [trim(x) for x in node]
    if not isinstance(node, dict):
        return node
    if _is_pod_spec(node):
        node = _keep(node, POD_SPEC_KEEP)
    elif _is_container(node):
        node = _keep(node, CONTAINER_KEEP)
    elif _is_volume(node):
        node = _keep(node, VOLUME_KEEP)
    return {k: trim(v) for k, v in node.items() if k != "description"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crd", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--source", required=True, help="where the CRD came from, recorded in the output")
    args = parser.parse_args()
    crd = yaml.safe_load(args.crd.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = version["schema"]["openAPIV3Schema"]
    schema["properties"].pop("status", None)
    out = trim(schema)
    out["$comment"] = f"{crd['metadata']['name']} v1 from {args.source}, trimmed by deploy/k8s/schema/trim_crd.py"
    args.out.write_text(json.dumps(out, indent=0, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
