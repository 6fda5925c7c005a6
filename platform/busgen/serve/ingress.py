"""The HTTP ingress: FastAPI routes for auth, limits, decoding and PNG encoding; models live behind handles.

Like Ray's Stable Diffusion example, the ingress never loads torch: it validates a
request against the registry's metadata and the limits, then hands a small job to
``GeneratorDeployment`` or a decoded image to ``ClassifierDeployment``.
"""

# No `from __future__ import annotations`: FastAPI must see real types after Serve rewrites the routes.
import asyncio
import base64
import time

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

import busgen
from busgen.data.imageio import encode_png
from busgen.serve.access_log import access_record, configure_access_log, log_access
from busgen.serve.auth import BearerAuth, token_digest
from busgen.serve.config import LimitArgs, ServeArgs
from busgen.serve.errors import RequestError
from busgen.serve.guards import decode_upload, extract_upload, read_body_limited
from busgen.serve.registry import ModelRegistry, read_classifier_info
from busgen.serve.schemas import (
    ClassifyResponse,
    GenerateRequest,
    GenerateResponse,
    ModelsResponse,
    validate_generate,
)

READY_TIMEOUT_S = 60.0  # first readyz loads the default generator
MAX_GENERATE_BODY = 64 * 1024  # a generate request is a few hundred bytes of JSON

api = FastAPI(
    title="BUSGen API",
    version=busgen.__version__,
    description="Synthetic breast-ultrasound generation and diagnostic classification.",
)
bearer = HTTPBearer(auto_error=False)  # auto_error=False: we answer 401 (not 403) with our own message


class IngressSettings(BaseModel):
    """What the HTTP ingress replica needs: the token's digest (never the token), registry, limits."""

    generators: dict[str, str]
    default_id: str
    classifier_dir: str | None
    token_sha256: str | None  # None: insecure_local
    limits: LimitArgs
    access_log_fp: str | None = None

    @classmethod
    def from_args(cls, args: ServeArgs) -> "IngressSettings":
        return cls(
            generators=args.generators,
            default_id=args.default_id,
            classifier_dir=args.classifier_dir,
            token_sha256=token_digest(args),
            limits=args.limits,
            access_log_fp=args.access_log_fp,
        )


def png_base64(images: np.ndarray) -> list[str]:
    """uint8 (N, H, W) -> base64 PNG strings (JSON-safe)."""
    return [base64.b64encode(encode_png(img)).decode("ascii") for img in images]


def _remote_error(exc: Exception) -> Exception:
    """The user exception behind a Ray task error (handles raise a RayTaskError wrapping it)."""
    return getattr(exc, "cause", None) or exc


@api.exception_handler(RequestError)
async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
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
        log_access(access_record(request.method, request.url.path, status, started, getattr(request.state, "n", None)))


@serve.deployment(name="Ingress", max_ongoing_requests=128)
@serve.ingress(api)
class Ingress:
    """HTTP only: auth, limits, decoding, PNG/base64 encoding; models live behind the handles."""

    def __init__(self, generator: DeploymentHandle, classifier: DeploymentHandle | None, settings: dict):
        self.settings = IngressSettings(**settings)
        self.generator, self.classifier = generator, classifier
        self.auth = BearerAuth(self.settings.token_sha256)
        self.registry = ModelRegistry(self.settings.generators, self.settings.default_id)
        self.classifier_info = read_classifier_info(self.settings.classifier_dir) if classifier else None
        configure_access_log(self.settings.access_log_fp)

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

    @api.get("/v1/models", response_model=ModelsResponse)
    async def models(self, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> ModelsResponse:
        self.auth.check(creds and creds.credentials)
        return ModelsResponse(
            generators=list(self.registry.infos.values()),
            default_generator=self.registry.default_id,
            classifier=self.classifier_info,
            limits=self.settings.limits,
        )

    @api.post(
        "/v1/generate",
        response_model=GenerateResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": GenerateRequest.model_json_schema()}},
            }
        },
    )
    async def generate(
        self, request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> GenerateResponse:
        """Generate ``n`` images of ``label``; the body is read with a size cap before parsing."""
        self.auth.check(creds and creds.credentials)
        try:
            req = GenerateRequest.model_validate_json(await read_body_limited(request, MAX_GENERATE_BODY))
        except ValidationError as exc:
            return JSONResponse(
                {"detail": exc.errors(include_url=False, include_context=False, include_input=False)}, status_code=422
            )
        info = self.registry.resolve(req.model)
        job = validate_generate(req, info, self.settings.limits)
        try:
            out = await self.generator.options(multiplexed_model_id=info.id).generate.remote(job)
        except Exception as exc:
            if isinstance(_remote_error(exc), ValueError):
                raise RequestError(422, str(_remote_error(exc))) from None
            raise
        request.state.n = len(out["images"])
        return GenerateResponse(
            model=info.id,
            model_id=out["model_id"],
            label=req.label,
            domain=req.domain,
            seeds=out["seeds"],
            steps=out["steps"],
            guidance=out["guidance"],
            sampler=out["sampler"],
            image_size=info.image_size,
            images=png_base64(out["images"]),
        )

    @api.post(
        "/v1/classify",
        response_model=ClassifyResponse,
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
    ) -> ClassifyResponse:
        """Classify one PNG/JPEG/DICOM, sent as multipart field ``file`` or as the raw body."""
        self.auth.check(creds and creds.credentials)
        if self.classifier is None:
            raise RequestError(503, "no classifier is deployed on this server")
        limits = self.settings.limits
        body = await read_body_limited(request, limits.max_upload_bytes)
        data, filename = extract_upload(body, request.headers.get("content-type"))
        image = await asyncio.to_thread(decode_upload, data, filename, limits)  # PIL/pydicom work off the loop
        out = await self.classifier.classify.remote(image)
        request.state.n = 1
        info = self.classifier_info
        return ClassifyResponse(
            label=info.class_names[out["pred"]],
            probs=dict(zip(info.class_names, out["probs"])),
            model_id=info.model_id,
            model_version=info.model_version,
        )
