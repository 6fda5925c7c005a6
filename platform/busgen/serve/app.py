"""The BUSGen Serve application: ``build_app`` composes the deployments; ``run_local`` serves it on loopback.

As in Ray's Stable Diffusion example, a thin ``Ingress`` (HTTP, auth, checks, response
formats, the /ui playground; ``busgen.serve.ingress``) sits in front of
``GeneratorDeployment`` and ``ClassifierDeployment`` (``busgen.serve.deployments``),
which batch, scale and take GPUs independently, and the optional ``DataDeployment``
(galleries, nearest training image, reader study). Every deployment has a bounded
queue (``max_queued_requests``): overload answers 503 with ``Retry-After``.

``build_app`` is the one builder behind ``busgen serve`` (``run_local``), ``serve run``
and ``serving/config.yaml``: it refuses to build without a token unless auth is off
on purpose (``insecure_local``) and HTTP is bound to loopback, and the ingress checks
the bind address again when it starts. Everything lives in the installed package, so
Ray workers, ``serve run`` and ``busgen serve`` need nothing from the repository checkout::

    serve run busgen.serve.app:build_app generators=base=/models/base classifier_dir=/models/clf
    serve run serving/config.yaml      # import_path: busgen.serve.app:build_app, args in YAML
    busgen serve --generator base=/models/base ...   # the CLI, via run_local
"""

# No `from __future__ import annotations`: Serve reads build_app's annotation to validate args as ServeArgs.
import os
import time

from ray import serve

from busgen.core.raylocal import init_ray
from busgen.serve.auth import check_exposure
from busgen.serve.config import DeploymentArgs, ServeArgs
from busgen.serve.data_deployment import DataDeployment
from busgen.serve.deployments import ClassifierDeployment, GeneratorDeployment
from busgen.serve.ingress import Ingress, IngressSettings

GENERATORS_ENV = "BUSGEN_GENERATORS"  # id=dir,id2=dir2
CLASSIFIER_DIR_ENV = "BUSGEN_CLASSIFIER_DIR"
INSECURE_LOCAL_ENV = "BUSGEN_INSECURE_LOCAL"  # "1": no auth (loopback demos)


def _queue_options(d) -> dict:
    """Bounded queue and the 503 + Retry-After answered when it is full (Ray's default queues without bound)."""
    return {
        "max_ongoing_requests": d.max_ongoing_requests,
        "max_queued_requests": d.max_queued_requests,
        "backpressure_config": serve.config.BackpressureConfig(status_code=503, retry_after_s=d.retry_after_s),
    }


def _model_options(d: DeploymentArgs) -> dict:
    return {
        "num_replicas": d.num_replicas,
        "ray_actor_options": {"num_cpus": d.num_cpus, "num_gpus": d.num_gpus},
        **_queue_options(d),
    }


def running_http_host() -> str | None:
    """The bind address of a running Serve instance, None when Serve is not started yet."""
    import ray

    if not ray.is_initialized():
        return None
    from busgen.serve.ingress import http_host

    try:
        return http_host()
    except ValueError:  # no Serve controller yet: the ingress checks again when it starts
        return None


def build_app(args: ServeArgs) -> serve.Application:
    """Application builder for ``serve run busgen.serve.app:build_app key=value``, config ``import_path`` and the CLI.

    Serve validates ``key=value`` or YAML ``args`` into ``ServeArgs`` through the
    annotation before calling this. Resources, queues and batching come from ``args``;
    a config file's ``deployments`` section still overrides replicas, autoscaling and
    queue sizes per deployment.

    Raises:
        ValueError: no usable token and not insecure_local, or insecure_local while Serve listens off loopback.
    """
    settings = IngressSettings.from_args(args)  # resolves the token: refuses to build without one
    check_exposure(settings.token_sha256, running_http_host() if settings.token_sha256 is None else None)
    g, c = args.generator, args.classifier
    generator = GeneratorDeployment.options(**_model_options(g)).bind(args.generators, args.default_id, g.model_dump())
    classifier = None
    if args.classifier_dirs:
        classifier = ClassifierDeployment.options(**_model_options(c)).bind(
            args.classifier_dirs, c.model_dump(), args.limits.model_dump()
        )
    data = None
    if args.reference_parquet or args.galleries or args.study_dir:
        data = DataDeployment.options(
            ray_actor_options={"num_cpus": args.data.num_cpus},
            max_ongoing_requests=args.data.max_ongoing_requests,
            max_queued_requests=args.data.max_queued_requests,
        ).bind(args.reference_parquet, args.galleries, args.study_dir, args.study_items)
    features = {
        "galleries": list(args.galleries),
        "nearest": bool(args.reference_parquet),
        "study": bool(args.reference_parquet and args.galleries and args.study_dir),
    }
    ingress = Ingress.options(
        num_replicas=args.ingress.num_replicas,
        ray_actor_options={"num_cpus": args.ingress.num_cpus},
        **_queue_options(args.ingress),
    )
    return ingress.bind(generator, classifier, data, settings.model_dump(), features)


def args_from_env() -> ServeArgs | None:
    """ServeArgs from $BUSGEN_GENERATORS / $BUSGEN_CLASSIFIER_DIR / $BUSGEN_INSECURE_LOCAL; None when unset.

    None (rather than an error) keeps importing a deploy entry such as ``serving.app``
    cheap and harmless where the variables are not set.
    """
    if not os.environ.get(GENERATORS_ENV):
        return None
    return ServeArgs(
        generators=os.environ[GENERATORS_ENV],
        classifier_dir=os.environ.get(CLASSIFIER_DIR_ENV),
        insecure_local=os.environ.get(INSECURE_LOCAL_ENV) == "1",
    )


def cluster_cpus() -> float:
    """CPUs of the Ray cluster this driver is attached to (a local runtime: the machine's cores)."""
    import ray

    return float(ray.cluster_resources().get("CPU", 0.0))


def run_local(
    generator_dirs: dict[str, str],
    classifier_dir: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    insecure_local: bool = False,
    blocking: bool = True,
    ray_cpus: int | None = None,
    **overrides,
) -> str:
    """Check the folders, start Ray (loopback) and Serve, deploy the BUSGen API with CPUs that fit; return its URL.

    Every deployment whose ``num_cpus`` is not given gets a share that fits the Ray
    cluster with headroom (``preflight.plan_cpus``); given ones are kept, and refused when
    they exceed the cluster. Folders are checked on the driver first, so a wrong path is
    one error rather than replica tracebacks.

    Args:
        generator_dirs: model id -> exported generator (or adapter) directory.
        classifier_dir: saved classifier directory, or None (classify answers 503).
        host, port: HTTP bind address; ``insecure_local`` is refused off loopback.
            The playground is at ``{url}/ui``.
        token: API token; default $BUSGEN_API_TOKEN or $BUSGEN_API_TOKEN_FILE.
        insecure_local: disable auth (demos).
        blocking: serve until Ctrl-C, then shut Serve down.
        ray_cpus: logical CPUs of a local Ray runtime (default: the machine's cores); unused on a cluster.
        overrides: further ``ServeArgs`` fields (limits, generator, classifier, ...).

    Raises:
        ValueError: insecure_local off loopback, invalid arguments, no usable token, a folder that
            holds no model or image set, or CPUs asked for that exceed the cluster.
    """
    from busgen.serve import preflight

    args = ServeArgs(
        generators=generator_dirs,
        classifier_dir=classifier_dir,
        token=token,
        insecure_local=insecure_local,
        **overrides,
    )
    check_exposure(IngressSettings.from_args(args).token_sha256, host)  # before starting anything
    preflight.check_folders(args)
    init_ray(num_cpus=ray_cpus)
    args = preflight.fit_cpus(args, cluster_cpus())
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(args), name="busgen", route_prefix="/")
    url = f"http://{host}:{port}"
    if blocking:  # pragma: no cover, interactive
        print(f"BUSGen API on {url} (docs: {url}/docs, playground: {url}/ui); Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()
    return url
