"""BUSGen online inference on Ray Serve: one authenticated HTTP API over the generator and classifier.

Three deployments, as in Ray's Stable Diffusion example: ``Ingress`` (FastAPI) does
HTTP, auth, decoding and PNG encoding only; ``GeneratorDeployment`` and
``ClassifierDeployment`` own the models, import torch inside ``__init__`` (so the
ingress never needs it), batch requests with ``@serve.batch`` and scale/take GPUs
independently. Request validation, auth and upload guards live in ``busgen.serve.api``.

Run it::

    BUSGEN_API_TOKEN=... serve run serving.app:build_app generators=base=/models/base,ft=/models/adapted \\
        classifier_dir=/models/clf          # ad hoc, key=value args
    serve run serving/config.yaml           # or serve deploy: replicas, batching and GPUs in YAML
    busgen serve ...                        # the CLI, via busgen.serve.api.run_local

``app`` below is the same graph built from environment variables (BUSGEN_GENERATORS
as ``id=dir,...``, BUSGEN_CLASSIFIER_DIR), for ``serve run serving.app:app``.
"""

# No `from __future__ import annotations`: FastAPI must see real types after Serve rewrites the routes.
import asyncio
import os
import time

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

import busgen
from busgen.serve import api as bs

api = FastAPI(
    title="BUSGen API",
    version=busgen.__version__,
    description="Synthetic breast-ultrasound generation and diagnostic classification.",
)
bearer = HTTPBearer(auto_error=False)  # auto_error=False: we answer 401 (not 403) with our own message
READY_TIMEOUT_S = 60.0  # first readyz loads the default generator


@api.exception_handler(bs.RequestError)
async def _request_error(request: Request, exc: bs.RequestError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


@api.exception_handler(Exception)
async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug or a failed replica: answer JSON 500 without internals (Serve logs the traceback)."""
    return JSONResponse({"detail": f"internal error ({type(exc).__name__})"}, status_code=500)


@api.middleware("http")
async def _access_log(request: Request, call_next):
    """One JSON line per request; handlers put the number of images into request.state.n."""
    started = time.perf_counter()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:
        bs.log_access(
            bs.access_record(request.method, request.url.path, status, started, getattr(request.state, "n", None))
        )


def _remote_error(exc: Exception) -> Exception:
    """The user exception behind a Ray task error (handles raise a RayTaskError wrapping it)."""
    return getattr(exc, "cause", None) or exc


@serve.deployment(name="GeneratorDeployment", max_ongoing_requests=64)
class GeneratorDeployment:
    """Samples images; many generator/adapter dirs per replica, picked by multiplexed model id."""

    def __init__(self, generators: dict[str, str], default_id: str, opts: dict):
        import torch

        from busgen.model import diffusion, generator

        self.registry = bs.ModelRegistry(generators, default_id)
        self.opts = bs.GeneratorArgs(**opts)
        self.default_guidance = diffusion.DEFAULT_GUIDANCE
        if self.opts.torch_threads:
            torch.set_num_threads(self.opts.torch_threads)
        self._generate_batch.set_max_batch_size(self.opts.max_batch_size)
        self._generate_batch.set_batch_wait_timeout_s(self.opts.batch_wait_timeout_s)

        # The cache size comes from config, so the loader is wrapped here rather than
        # decorated at class level (Serve detects instance-level multiplexing too).
        async def load(model_id: str):
            return await asyncio.to_thread(generator.load, self.registry.dir_of(model_id))

        self.get_generator = serve.multiplexed(max_num_models_per_replica=self.opts.max_models_per_replica)(load)

    async def ready(self) -> str:
        """Load the default model: readiness means a request will not wait for weights."""
        return (await self.get_generator(self.registry.default_id)).model_id

    async def generate(self, job: dict) -> dict:
        """One validated job (see ``bs.validate_generate``) -> images uint8 (n, H, W) and what was used."""
        result = await self._generate_batch(job)
        if "error" in result:
            raise ValueError(result["error"])
        return result

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.02, batch_size_fn=bs.images_in)
    async def _generate_batch(self, jobs: list[dict]) -> list[dict]:
        # Serve splits batches by multiplexed model id, so the whole batch uses one model.
        gen = await self.get_generator(serve.get_multiplexed_model_id())
        results = await asyncio.to_thread(bs.sample_jobs, gen, jobs, self.default_guidance, self.opts.max_batch_size)
        return [{**r, "model_id": gen.model_id} for r in results]


@serve.deployment(name="ClassifierDeployment", max_ongoing_requests=32)
class ClassifierDeployment:
    """Predicts class probabilities for decoded uint8 images, batched across requests."""

    def __init__(self, model_dir: str, opts: dict):
        import torch

        from busgen.model.classifier import Predictor

        self.opts = bs.DeploymentArgs(**opts)
        if self.opts.torch_threads:
            torch.set_num_threads(self.opts.torch_threads)
        self.info = bs.read_classifier_info(model_dir)
        self.predictor = Predictor.from_checkpoint(model_dir)
        self._classify_batch.set_max_batch_size(self.opts.max_batch_size)
        self._classify_batch.set_batch_wait_timeout_s(self.opts.batch_wait_timeout_s)

    async def ready(self) -> str:
        return self.info.model_id

    async def classify(self, image: np.ndarray) -> dict:
        """uint8 (H, W) of any size -> {"probs": [C floats], "pred": class index}."""
        return await self._classify_batch(image)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _classify_batch(self, images: list[np.ndarray]) -> list[dict]:
        return await asyncio.to_thread(bs.classify_images, self.predictor, images, self.info.image_size)


@serve.deployment(name="Ingress", max_ongoing_requests=128)
@serve.ingress(api)
class Ingress:
    """HTTP only: auth, limits, decoding, PNG/base64 encoding; models live behind the handles."""

    def __init__(self, generator: DeploymentHandle, classifier: DeploymentHandle | None, settings: dict):
        self.settings = bs.IngressSettings(**settings)
        self.generator, self.classifier = generator, classifier
        self.auth = bs.BearerAuth(self.settings.token_sha256)
        self.registry = bs.ModelRegistry(self.settings.generators, self.settings.default_id)
        self.classifier_info = bs.read_classifier_info(self.settings.classifier_dir) if classifier else None
        bs.configure_access_log(self.settings.access_log_fp)

    @api.get("/healthz")
    async def healthz(self) -> dict:
        """Liveness: the ingress answers (no auth, no model calls)."""
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Readiness: the default generator is loaded and the classifier replica answers."""
        checks = {"generator": self.generator.ready.remote()}
        if self.classifier is not None:
            checks["classifier"] = self.classifier.ready.remote()
        try:
            ids = {k: await asyncio.wait_for(v, READY_TIMEOUT_S) for k, v in checks.items()}
        except Exception as exc:  # timeout or a replica that failed to load its model
            cause = _remote_error(exc)
            detail = f"{type(cause).__name__}: {cause}"[:500]
            return JSONResponse({"status": "not ready", "detail": detail}, status_code=503)
        return JSONResponse({"status": "ready", "models": ids})

    @api.get("/v1/models", response_model=bs.ModelsResponse)
    async def models(self, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> bs.ModelsResponse:
        self.auth.check(creds and creds.credentials)
        return bs.ModelsResponse(
            generators=list(self.registry.infos.values()),
            default_generator=self.registry.default_id,
            classifier=self.classifier_info,
            limits=self.settings.limits,
        )

    @api.post(
        "/v1/generate",
        response_model=bs.GenerateResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": bs.GenerateRequest.model_json_schema()}},
            }
        },
    )
    async def generate(
        self, request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> bs.GenerateResponse:
        """Generate ``n`` images of ``label``; the body is read with a size cap before parsing."""
        self.auth.check(creds and creds.credentials)
        try:
            req = bs.GenerateRequest.model_validate_json(await bs.read_body_limited(request, 64 * 1024))
        except ValidationError as exc:
            return JSONResponse(
                {"detail": exc.errors(include_url=False, include_context=False, include_input=False)}, status_code=422
            )
        info = self.registry.resolve(req.model)
        job = bs.validate_generate(req, info, self.settings.limits)
        try:
            out = await self.generator.options(multiplexed_model_id=info.id).generate.remote(job)
        except Exception as exc:
            if isinstance(_remote_error(exc), ValueError):
                raise bs.RequestError(422, str(_remote_error(exc))) from None
            raise
        request.state.n = len(out["images"])
        return bs.GenerateResponse(
            model=info.id,
            model_id=out["model_id"],
            label=req.label,
            domain=req.domain,
            seeds=out["seeds"],
            steps=out["steps"],
            guidance=out["guidance"],
            sampler=out["sampler"],
            image_size=info.image_size,
            images=bs.png_base64(out["images"]),
        )

    @api.post(
        "/v1/classify",
        response_model=bs.ClassifyResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
                    },
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
    )
    async def classify(
        self, request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> bs.ClassifyResponse:
        """Classify one PNG/JPEG/DICOM, sent as multipart field ``file`` or as the raw body."""
        self.auth.check(creds and creds.credentials)
        if self.classifier is None:
            raise bs.RequestError(503, "no classifier is deployed on this server")
        limits = self.settings.limits
        body = await bs.read_body_limited(request, limits.max_upload_bytes)
        data, filename = bs.extract_upload(body, request.headers.get("content-type"))
        image = await asyncio.to_thread(bs.decode_upload, data, filename, limits)  # PIL/pydicom work off the loop
        out = await self.classifier.classify.remote(image)
        request.state.n = 1
        info = self.classifier_info
        return bs.ClassifyResponse(
            label=info.class_names[out["pred"]],
            probs=dict(zip(info.class_names, out["probs"])),
            model_id=info.model_id,
            model_version=info.model_version,
        )


def build_app(args: bs.ServeArgs) -> serve.Application:
    """Application builder for ``serve run serving.app:build_app key=value`` and config ``import_path``.

    Resources and batching come from ``args``; a config file's ``deployments`` section
    still overrides replicas, autoscaling and max_ongoing_requests per deployment.
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
    return ingress.bind(generator, classifier, bs.IngressSettings.from_args(args).model_dump())


def _env_args() -> bs.ServeArgs | None:
    """ServeArgs from BUSGEN_GENERATORS / BUSGEN_CLASSIFIER_DIR, or None when unset (import stays cheap)."""
    if not os.environ.get("BUSGEN_GENERATORS"):
        return None
    return bs.ServeArgs(
        generators=os.environ["BUSGEN_GENERATORS"],
        classifier_dir=os.environ.get("BUSGEN_CLASSIFIER_DIR"),
        insecure_local=os.environ.get("BUSGEN_INSECURE_LOCAL") == "1",
    )


_env = _env_args()
app = (
    Ingress.bind(
        GeneratorDeployment.bind(_env.generators, _env.default_id, _env.generator.model_dump()),
        ClassifierDeployment.bind(_env.classifier_dir, _env.classifier.model_dump()) if _env.classifier_dir else None,
        bs.IngressSettings.from_args(_env).model_dump(),
    )
    if _env is not None
    else None
)
