"""What ``run_local`` checks on the driver before Serve starts: the data folders, and CPUs that fit the machine.

Serve itself reports neither problem well. A replica whose folder is wrong fails in its
constructor, and Serve retries it three times with a full traceback each time. A
deployment that asks for more CPUs than the cluster has never starts, and the only sign
is "taken more than 30s to be scheduled" every 30 s. So both are checked here, where the
answer is one sentence. Neither needs Ray: ``plan_cpus`` is arithmetic, and
``check_folders`` reads metadata only (a generator's ``busgen.json`` through the model
package's reader, which imports torch, so only when it runs).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from busgen.data import schema as S
from busgen.serve.config import ServeArgs
from busgen.serve.gallery import parquet_files
from busgen.serve.registry import CLASSIFIER_WEIGHTS, read_generator_info

# Default CPUs per replica: they are kept where the machine has room for them, else scaled down together.
DEFAULT_CPUS = {"generator": 1.0, "classifier": 1.0, "ingress": 0.5, "data": 0.1}
HEADROOM = 0.25  # share of the machine left free for the driver, Serve's controller and proxy, and Ray itself
MIN_CPUS = 0.01  # smallest planned request: Ray counts CPUs in units of 0.0001


class ResourceError(ValueError):
    """The CPUs asked for do not fit the machine (a ValueError: the CLI prints it as one `error:` line)."""


def plan_cpus(
    total_cpus: float, replicas: dict[str, int], requested: dict[str, float] | None = None
) -> dict[str, float]:
    """CPUs per replica of each deployment, so that all of them fit ``total_cpus`` with headroom.

    Requested figures are kept as given. The other deployments get their default
    (``DEFAULT_CPUS``) when the defaults fit the machine less ``HEADROOM``; otherwise they
    are scaled down together into what is left, rounded down to 0.01 CPU.

    Args:
        total_cpus: CPUs of the Ray cluster (a local runtime: the machine's cores).
        replicas: deployment name -> replicas, for the deployments that will run
            (``generator``, ``classifier``, ``ingress``, ``data``).
        requested: deployment name -> CPUs per replica the operator asked for.

    Returns:
        Deployment name -> CPUs per replica, for every deployment in ``replicas``.

    Raises:
        ResourceError: the requested CPUs exceed the machine, leave no room for the others,
            or name a deployment that will not run.
    """
    requested = dict(requested or {})
    unknown = sorted(set(requested) - set(replicas))
    if unknown:
        raise ResourceError(
            f"num_cpus names {', '.join(unknown)}, which will not run here; deployments: {', '.join(replicas)}"
        )
    fixed = sum(requested[k] * replicas[k] for k in requested)
    if fixed > total_cpus:
        asked = " + ".join(f"{k} {requested[k]:g} x {replicas[k]}" for k in requested)
        raise ResourceError(
            f"the requested CPUs ({asked} = {fixed:g}) exceed the {total_cpus:g} CPUs of this machine: lower --num-cpus"
        )
    planned = [k for k in replicas if k not in requested]
    want = sum(DEFAULT_CPUS[k] * replicas[k] for k in planned)
    room = total_cpus * (1 - HEADROOM) - fixed
    if room < MIN_CPUS * sum(replicas[k] for k in planned):
        room = total_cpus - fixed  # the requests leave no headroom: fit the others into what is there
    if planned and room < MIN_CPUS * sum(replicas[k] for k in planned):
        raise ResourceError(
            f"the requested CPUs ({fixed:g}) leave no room on this {total_cpus:g}-CPU machine for "
            f"{', '.join(planned)}: lower --num-cpus or give those a figure too"
        )
    scale = min(1.0, room / want) if want > 0 else 1.0
    plan = {k: max(MIN_CPUS, int(DEFAULT_CPUS[k] * scale * 100) / 100) for k in planned}
    return {k: requested.get(k, plan.get(k)) for k in replicas}


def deployments_of(args: ServeArgs) -> dict[str, int]:
    """Deployment name -> replicas, for the deployments ``build_app`` will start for ``args``."""
    out = {"ingress": args.ingress.num_replicas, "generator": args.generator.num_replicas}
    if args.classifier_dirs:
        out["classifier"] = args.classifier.num_replicas
    if args.reference_parquet or args.galleries or args.study_dir:
        out["data"] = 1
    return out


def requested_cpus(args: ServeArgs) -> dict[str, float]:
    """The num_cpus figures set on purpose in ``args`` (pydantic knows which fields were given)."""
    parts = {"generator": args.generator, "classifier": args.classifier, "ingress": args.ingress, "data": args.data}
    out = {k: part.num_cpus for k, part in parts.items() if "num_cpus" in part.model_fields_set}
    if args.ingress_num_cpus is not None:
        out["ingress"] = args.ingress_num_cpus
    return out


def fit_cpus(args: ServeArgs, total_cpus: float) -> ServeArgs:
    """``args`` with every unset num_cpus planned for ``total_cpus`` (see ``plan_cpus``); set ones are checked."""
    deployments = deployments_of(args)
    requested = {k: v for k, v in requested_cpus(args).items() if k in deployments}
    plan = plan_cpus(total_cpus, deployments, requested)
    updates = {}
    for name in ("generator", "classifier", "ingress", "data"):
        part = getattr(args, name)
        if name in plan and plan[name] != part.num_cpus:
            updates[name] = part.model_copy(update={"num_cpus": plan[name]})
    return args.model_copy(update=updates)


def _generator_problem(model_id: str, model_dir: str) -> str | None:
    if not Path(model_dir).is_dir():
        return f"generator {model_id!r}: no folder {model_dir}"
    # The model package's own reader (fields, adapter fields, paths inside the folder); it imports torch,
    # so lazily: only a run that serves something pays for it.
    from busgen.model.generator import read_meta

    try:
        read_meta(model_dir)
        read_generator_info(model_id, model_dir)  # what the ingress reads
    except ValueError as exc:  # ModelLoadError, and a pydantic ValidationError
        return f"generator {model_id!r}: {exc}"
    except (KeyError, TypeError) as exc:
        return f"generator {model_id!r}: {model_dir}/busgen.json lacks {exc}: re-export the model"
    return None


def _classifier_problem(model_id: str, model_dir: str) -> str | None:
    root = Path(model_dir)
    if not root.is_dir():
        return f"classifier {model_id!r}: no folder {model_dir}"
    weights = [n for n in CLASSIFIER_WEIGHTS if (root / n).is_file()]
    if not (root / "classifier.json").is_file() or not weights:
        return (
            f"classifier {model_id!r}: {model_dir} is not a saved classifier "
            "(no classifier.json and model.safetensors): train one with `busgen train-classifier`"
        )
    try:
        meta = json.loads((root / "classifier.json").read_text())
        if not meta["class_names"] or not meta["config"]["image_size"]:
            return f"classifier {model_id!r}: {model_dir}/classifier.json has no class names or image size"
    except (ValueError, KeyError, TypeError) as exc:
        return f"classifier {model_id!r}: {model_dir}/classifier.json is unreadable or lacks {exc}: save it again"
    return None


def _image_set_problem(what: str, path: str) -> str | None:
    if not Path(path).exists():
        return f"{what}: no file or folder {path}"
    try:
        for fp in parquet_files(path):
            if S.IMAGE not in pq.read_schema(fp).names:
                return f"{what}: {fp} has no {S.IMAGE!r} column, so it is not a BUSGen image set"
    except ValueError as exc:
        return f"{what}: {exc}"
    except OSError as exc:  # pyarrow's ArrowInvalid is a ValueError; unreadable files land here
        return f"{what}: cannot read {path} ({exc})"
    return None


def folder_problems(args: ServeArgs) -> list[str]:
    """One sentence per configured folder that is missing or holds no model or image set (metadata only)."""
    problems = [_generator_problem(k, d) for k, d in args.generators.items()]
    problems += [_classifier_problem(k, d) for k, d in args.classifier_dirs.items()]
    if args.reference_parquet:
        problems.append(_image_set_problem("reference", args.reference_parquet))
    problems += [_image_set_problem(f"gallery {k!r}", p) for k, p in args.galleries.items()]
    if args.study_dir and Path(args.study_dir).exists() and not Path(args.study_dir).is_dir():
        problems.append(f"study_dir: {args.study_dir} is a file, not a folder")
    return [p for p in problems if p]


def check_folders(args: ServeArgs) -> None:
    """Raise one ``ValueError`` naming every folder problem (see ``folder_problems``), before anything starts."""
    problems = folder_problems(args)
    if problems:
        raise ValueError(" ".join("; ".join(problems).split()))  # one line, whatever the messages held
