"""The BUSGen Serve application: ``build_app`` composes the deployments; ``run_local`` serves it on loopback.

Three deployments, as in Ray's Stable Diffusion example: ``Ingress`` (HTTP, auth,
decoding, PNG encoding; ``busgen.serve.ingress``) in front of ``GeneratorDeployment``
and ``ClassifierDeployment`` (``busgen.serve.deployments``), which scale and take
GPUs independently. Everything lives in the installed package, so Ray workers,
``serve run`` and ``busgen serve`` need nothing from the repository checkout::

    serve run busgen.serve.app:build_app generators=base=/models/base classifier_dir=/models/clf
    serve run serving/config.yaml      # import_path: busgen.serve.app:build_app, args in YAML
    busgen serve --generator base=/models/base ...   # the CLI, via run_local
"""

# No `from __future__ import annotations`: Serve reads build_app's annotation to validate args as ServeArgs.
import os
import time

from ray import serve

from busgen.core.raylocal import init_ray
from busgen.serve.auth import LOOPBACK_HOSTS
from busgen.serve.config import ServeArgs
from busgen.serve.deployments import ClassifierDeployment, GeneratorDeployment
from busgen.serve.ingress import Ingress, IngressSettings

GENERATORS_ENV = "BUSGEN_GENERATORS"  # id=dir,id2=dir2
CLASSIFIER_DIR_ENV = "BUSGEN_CLASSIFIER_DIR"
INSECURE_LOCAL_ENV = "BUSGEN_INSECURE_LOCAL"  # "1": no auth (loopback demos)


def build_app(args: ServeArgs) -> serve.Application:
    """Application builder for ``serve run busgen.serve.app:build_app key=value`` and config ``import_path``.

    Serve validates ``key=value`` or YAML ``args`` into ``ServeArgs`` through the
    annotation before calling this. Resources and batching come from ``args``; a
    config file's ``deployments`` section still overrides replicas, autoscaling and
    max_ongoing_requests per deployment.
    """
    g, c = args.generator, args.classifier
    generator = GeneratorDeployment.options(
        num_replicas=g.num_replicas,
        max_ongoing_requests=g.max_ongoing_requests,
        ray_actor_options={"num_cpus": g.num_cpus, "num_gpus": g.num_gpus},
    ).bind(args.generators, args.default_id, g.model_dump())
    classifier = None
    if args.classifier_dir:
        classifier = ClassifierDeployment.options(
            num_replicas=c.num_replicas,
            max_ongoing_requests=c.max_ongoing_requests,
            ray_actor_options={"num_cpus": c.num_cpus, "num_gpus": c.num_gpus},
        ).bind(args.classifier_dir, c.model_dump())
    ingress = Ingress.options(ray_actor_options={"num_cpus": args.ingress_num_cpus})
    return ingress.bind(generator, classifier, IngressSettings.from_args(args).model_dump())


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


def run_local(
    generator_dirs: dict[str, str],
    classifier_dir: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    insecure_local: bool = False,
    blocking: bool = True,
    **overrides,
) -> str:
    """Start Ray (loopback) and Serve, deploy the BUSGen API, and return its base URL.

    Args:
        generator_dirs: model id -> exported generator (or adapter) directory.
        classifier_dir: saved classifier directory, or None (classify answers 503).
        host, port: HTTP bind address; ``insecure_local`` is refused off loopback.
        token: API token; default $BUSGEN_API_TOKEN or $BUSGEN_API_TOKEN_FILE.
        insecure_local: disable auth (demos).
        blocking: serve until Ctrl-C, then shut Serve down.
        overrides: further ``ServeArgs`` fields (limits, generator, classifier, ...).

    Raises:
        ValueError: insecure_local off loopback, invalid arguments, or no usable token.
    """
    if insecure_local and host not in LOOPBACK_HOSTS:
        raise ValueError(f"insecure_local serves without auth and is only allowed on loopback, not {host!r}")
    args = ServeArgs(
        generators=generator_dirs,
        classifier_dir=classifier_dir,
        token=token,
        insecure_local=insecure_local,
        **overrides,
    )
    init_ray()
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(args), name="busgen", route_prefix="/")
    url = f"http://{host}:{port}"
    if blocking:  # pragma: no cover, interactive
        print(f"BUSGen API on {url} (docs: {url}/docs); Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()
    return url
