"""The HTTP ingress: FastAPI routes that authenticate, check, forward and format; models live behind handles.

Like Ray's Stable Diffusion example, the ingress never loads torch and never decodes
pixels: it checks a request against the registry's metadata and the limits, then
hands a small job to ``GeneratorDeployment``, raw upload bytes to
``ClassifierDeployment`` (which decodes them under the same guards) or a query to
``DataDeployment``. Overload anywhere answers 503 with ``Retry-After``.
"""

# No `from __future__ import annotations`: FastAPI must see real types after Serve rewrites the routes.
import asyncio
import logging
import math
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, Field, ValidationError
from ray import serve
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

import busgen
from busgen.core.types import PROTECT_NAMES
from busgen.serve import responses
from busgen.serve.access_log import configure_access_log
from busgen.serve.auth import (
    STUDY_OWNER_HEADER,
    BearerAuth,
    check_exposure,
    check_loopback_host,
    is_study_owner,
    study_owner_digest,
    token_digest,
)
from busgen.serve.config import LimitArgs, ServeArgs
from busgen.serve.errors import RequestError, server_failure
from busgen.serve.examples import phantom_examples
from busgen.serve.guards import check_upload_type, extract_uploads, read_body_limited
from busgen.serve.middleware import AccessLogMiddleware
from busgen.serve.registry import ModelRegistry, read_classifier_info
from busgen.serve.schemas import (
    PROTECT_PLANNED,
    ClassifyResponse,
    GenerateRequest,
    GenerateResponse,
    ModelsResponse,
    NewReaders,
    StudyAnswer,
    validate_generate,
)
from busgen.serve.study import token_sha256

STUDY_READER_HEADER = "x-study-reader-token"
READY_TIMEOUT_S = 60.0  # first readyz loads the default generator
MAX_SMALL_BODY = 64 * 1024  # a generate request or a study answer is a few hundred bytes of JSON
STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
logger = logging.getLogger("busgen.serve")

api = FastAPI(
    title="BUSGen API",
    version=busgen.__version__,
    description="Synthetic breast-ultrasound generation and diagnostic classification; playground at /ui.",
)
api.add_middleware(AccessLogMiddleware)


class IngressSettings(BaseModel):
    """What the HTTP ingress replica needs: the token's digest (never the token), registry, limits."""

    generators: dict[str, str]
    default_id: str
    classifier_dirs: dict[str, str]
    token_sha256: str | None = Field(description="None: insecure_local")
    study_owner_sha256: str | None = Field(None, description="None: study scores only once the study is closed")
    limits: LimitArgs
    access_log_fp: str | None = None

    @classmethod
    def from_args(cls, args: ServeArgs) -> "IngressSettings":
        return cls(
            generators=args.generators,
            default_id=args.default_id,
            classifier_dirs=args.classifier_dirs,
            token_sha256=token_digest(args),
            study_owner_sha256=study_owner_digest(args),
            limits=args.limits,
            access_log_fp=args.access_log_fp,
        )


def http_host() -> str:
    """The HTTP proxy's bind address, asked of the Serve controller (the one place that knows it)."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    return ray.get(controller.get_http_config.remote(), timeout=30).host


def _remote_error(exc: Exception) -> Exception:
    """The user exception behind a Ray task error (handles raise a RayTaskError wrapping it)."""
    return getattr(exc, "cause", None) or exc


def _busy(retry_after_s: float | None) -> JSONResponse:
    return JSONResponse(
        {"detail": "server busy: too many requests queued; retry after the Retry-After delay"},
        status_code=503,
        headers={"Retry-After": str(max(1, math.ceil(retry_after_s or 1)))},
    )


@api.exception_handler(RequestError)
async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


@api.exception_handler(Exception)
async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """Overload -> 503 + Retry-After; a client error raised in a replica -> its status; else JSON 500."""
    cause = _remote_error(exc)
    if isinstance(cause, BackPressureError):
        return _busy(cause.retry_after_s)
    if isinstance(cause, DeploymentUnavailableError):
        return _busy(None)
    if isinstance(cause, RequestError):
        return await _request_error(request, cause)
    return await _request_error(request, _failure(request, 500, "this request", cause))


def _failure(request: Request, status_code: int, what: str, exc: BaseException) -> RequestError:
    """The client's one sentence for a server-side failure; the detail goes to the logs under the request id.

    The access-log line of the request carries the detail too (``error``), so operators need one file.
    """
    request.state.error = f"{type(exc).__name__}: {exc}"
    return server_failure(status_code, what, getattr(request.state, "request_id", None), exc)


@serve.deployment(name="Ingress", max_ongoing_requests=256)
@serve.ingress(api)
class Ingress:
    """HTTP only: auth, limits, cheap upload checks, response formats; models and data live behind the handles."""

    def __init__(
        self,
        generator: DeploymentHandle,
        classifier: DeploymentHandle | None,
        data: DeploymentHandle | None,
        settings: dict,
        features: dict,
    ):
        self.settings = IngressSettings(**settings)
        check_exposure(self.settings.token_sha256, http_host() if self.settings.token_sha256 is None else None)
        self.generator, self.classifier, self.data = generator, classifier, data
        self.features = features  # galleries, nearest, study: what the data deployment was given
        self.auth = BearerAuth(self.settings.token_sha256)
        self.registry = ModelRegistry(self.settings.generators, self.settings.default_id)
        self.classifier_infos = {k: read_classifier_info(d) for k, d in self.settings.classifier_dirs.items()}
        self._examples: list[dict] | None = None  # made on first use
        configure_access_log(self.settings.access_log_fp)

    def _auth(self, request: Request) -> None:
        """401 unless the bearer token matches; records the client identity (token id) for the access log."""
        header = request.headers.get("authorization") or ""
        scheme, _, token = header.partition(" ")
        presented = token.strip() if scheme.lower() == "bearer" else None
        request.state.client = self.auth.check(presented, request.headers.get("host"))

    def _data(self) -> DeploymentHandle:
        if self.data is None:
            raise RequestError(503, "no galleries, reference set or study are configured on this server")
        return self.data

    @api.get("/healthz")
    async def healthz(self) -> dict:
        """Liveness: the ingress answers (no auth, no model calls)."""
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Readiness: every model replica answers. Says which part is not ready, never why (that is logged)."""
        checks = {"generator": self.generator.ready.remote()}
        if self.classifier is not None:
            checks["classifier"] = self.classifier.ready.remote()
        if self.data is not None:
            checks["data"] = self.data.ready.remote()
        waiting = []
        for name, call in checks.items():
            try:
                await asyncio.wait_for(call, READY_TIMEOUT_S)
            except Exception as exc:  # timeout, overload or a replica that failed to load its model
                logger.warning("readyz: %s not ready: %s", name, type(_remote_error(exc)).__name__)
                waiting.append(name)
        if waiting:
            return JSONResponse({"status": "not ready", "waiting_for": waiting}, status_code=503)
        return JSONResponse({"status": "ready"})

    @api.get("/ui", include_in_schema=False)
    async def ui_root(self) -> RedirectResponse:
        return RedirectResponse("/ui/index.html")

    @api.get("/ui/{name}", include_in_schema=False)
    async def ui_file(self, request: Request, name: str) -> FileResponse:
        """The playground's static files (no data in them); every call they make needs the token."""
        if self.auth.digest is None:  # DNS rebinding: the page itself must not load under a foreign name
            check_loopback_host(request.headers.get("host"))
        if name not in STATIC_FILES:
            raise RequestError(404, f"no such playground file {name!r}")
        return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})

    @api.get("/v1/models", response_model=ModelsResponse)
    async def models(self, request: Request) -> ModelsResponse:
        self._auth(request)
        return ModelsResponse(
            generators=list(self.registry.infos.values()),
            default_generator=self.registry.default_id,
            classifier=next(iter(self.classifier_infos.values()), None),
            classifiers=self.classifier_infos,
            galleries=self.features.get("galleries", []),
            nearest=self.features.get("nearest", False),
            study=self.features.get("study", False),
            protect=list(PROTECT_NAMES),
            protect_planned=list(PROTECT_PLANNED),
            limits=self.settings.limits,
        )

    @api.post(
        "/v1/generate",
        response_model=GenerateResponse,
        responses={200: {"content": {responses.PNG: {}, responses.ZIP: {}}}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": GenerateRequest.model_json_schema()}},
            }
        },
    )
    async def generate(self, request: Request) -> Response:
        """Generate ``n`` images of ``label``: JSON (base64), or ``Accept: image/png`` / ``application/zip``."""
        self._auth(request)
        try:
            req = GenerateRequest.model_validate_json(await read_body_limited(request, MAX_SMALL_BODY))
        except ValidationError as exc:
            return JSONResponse(
                {"detail": exc.errors(include_url=False, include_context=False, include_input=False)}, status_code=422
            )
        info = self.registry.resolve(req.model)
        job = validate_generate(req, info, self.settings.limits)
        media = responses.negotiate(request.headers.get("accept"), req.n)
        if req.nearest and media != responses.JSON:
            raise RequestError(406, "nearest=true needs a JSON answer (drop the Accept header)")
        try:
            out = await self.generator.options(multiplexed_model_id=info.id).generate.remote(job)
        except Exception as exc:
            cause = _remote_error(exc)
            if isinstance(cause, (RequestError, BackPressureError, DeploymentUnavailableError)):
                raise cause from None
            # A model folder that does not load: its text names server paths, so it stays in the log.
            raise _failure(request, 503, f"model {info.id!r}", cause) from None
        request.state.n = len(out["pngs"])
        if media == responses.PNG:
            return Response(out["pngs"][0], media_type=media, headers=responses.provenance_headers(out, info.id))
        if media == responses.ZIP:
            body = responses.zip_pngs(out["pngs"], out["seeds"])
            return Response(body, media_type=media, headers=responses.provenance_headers(out, info.id))
        nearest = None
        if req.nearest:
            nearest = await self._data().nearest.remote(out["pngs"])
            if nearest is None:
                raise RequestError(503, "nearest=true needs a reference set: start the server with reference_parquet")
        nearest = nearest or {}
        return GenerateResponse(
            model=info.id,
            model_id=out["model_id"],
            label=req.label,
            domain=req.domain,
            seeds=out["seeds"],
            steps=out["steps"],
            guidance=out["guidance"],
            sampler=out["sampler"],
            protect=out.get("protect", "none"),
            image_size=info.image_size,
            images=responses.b64(out["pngs"]),
            boxes=out["boxes"],
            nearest=nearest.get("matches"),
            nearest_metric=nearest.get("metric"),
        )

    @api.post(
        "/v1/classify",
        response_model=ClassifyResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                        }
                    },
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
    )
    async def classify(self, request: Request, model: str | None = None) -> JSONResponse:
        """Classify PNG/JPEG/DICOM files: the raw body (one file) or multipart fields ``file`` (up to max_n)."""
        self._auth(request)
        if not self.classifier_infos:
            raise RequestError(503, "no classifier is deployed on this server")
        key = model or next(iter(self.classifier_infos))
        if key not in self.classifier_infos:
            raise RequestError(
                404, f"unknown classifier {key!r}; available classifiers: {sorted(self.classifier_infos)}"
            )
        limits = self.settings.limits
        body = await read_body_limited(request, limits.max_upload_bytes)
        uploads = extract_uploads(body, request.headers.get("content-type"), limits.max_n)
        for data, filename in uploads:
            check_upload_type(data, filename)
        out = await self.classifier.classify.remote({"classifier": key, "uploads": uploads})
        if "error" in out:
            raise RequestError(*out["error"])
        request.state.n = len(uploads)
        info = self.classifier_infos[key]
        results = [
            {"label": info.class_names[r["pred"]], "probs": dict(zip(info.class_names, r["probs"]))}
            for r in out["results"]
        ]
        body = {**results[0], "results": results, "classifier": key}
        # Built by hand (shape: ClassifyResponse): response_model validation would cost more than the route does.
        return JSONResponse({**body, "model_id": info.model_id, "model_version": info.model_version})

    @api.get("/v1/gallery/{name}")
    async def gallery(
        self,
        request: Request,
        name: str,
        label: str | None = None,
        domain: str | None = None,
        page: int = 0,
        page_size: int = 12,
    ) -> dict:
        """A page of a generated set, filtered by class and domain, with each image's provenance."""
        self._auth(request)
        if page < 0 or not 1 <= page_size <= 48:
            raise RequestError(422, "page must be >= 0 and page_size between 1 and 48")
        return await self._data().gallery.remote(name, label, domain, page, page_size)

    @api.get("/v1/examples")
    async def examples(self, request: Request) -> dict:
        """Example inputs to try: phantom scans (synthetic test patterns, no patient data), one per class."""
        self._auth(request)
        if self._examples is None:
            self._examples = await asyncio.to_thread(phantom_examples)
        return {"examples": self._examples}

    def _reader_token(self, request: Request) -> str:
        """The sha256 of the reader's token: the study routes' only credential (the API token is not needed).

        A reader link carries its token; readers never get the API token, which would open the
        galleries (the study's synthetic pool). With auth off, the Host must still be loopback.
        """
        if self.auth.digest is None:
            check_loopback_host(request.headers.get("host"))
        token = (request.headers.get(STUDY_READER_HEADER) or "").strip()
        if not token:
            raise RequestError(401, "error: missing reader token: open the study link the study owner sent you")
        digest = token_sha256(token)
        request.state.client = f"reader:{digest[:12]}"
        return digest

    @api.post("/v1/study/readers")
    async def study_readers(self, request: Request) -> dict:
        """Create reader links (study owner only): each reader's token is shown once; the server keeps its sha256."""
        self._auth(request)
        if not self._study_owner(request):
            raise RequestError(403, "error: only the study owner creates readers: send X-Study-Owner-Token")
        try:
            req = NewReaders.model_validate_json(await read_body_limited(request, MAX_SMALL_BODY) or b"{}")
        except ValidationError as exc:
            return JSONResponse(
                {"detail": exc.errors(include_url=False, include_context=False, include_input=False)}, status_code=422
            )
        readers = await self._data().study_add_readers.remote(req.count)
        return {"readers": [{**r, "link": f"/ui/index.html#reader={r['token']}"} for r in readers]}

    @api.get("/v1/study/me")
    async def study_me(self, request: Request) -> dict:
        """The reader behind ``X-Study-Reader-Token``: id, number of items, answered, and the next item to answer."""
        return await self._data().study_me.remote(self._reader_token(request))

    @api.get("/v1/study/item/{item}")
    async def study_item(self, request: Request, item: int) -> dict:
        """Item ``item`` of the reader's shuffled real/synthetic mix (the image only, not the truth)."""
        return await self._data().study_item.remote(self._reader_token(request), item)

    @api.post("/v1/study/answer")
    async def study_answer(self, request: Request) -> dict:
        """Store one answer (``StudyAnswer``: call, confidence 1-5, optional class) to Parquet."""
        digest = self._reader_token(request)
        try:
            ans = StudyAnswer.model_validate_json(await read_body_limited(request, MAX_SMALL_BODY))
        except ValidationError as exc:
            return JSONResponse(
                {"detail": exc.errors(include_url=False, include_context=False, include_input=False)}, status_code=422
            )
        return await self._data().study_answer.remote(digest, ans.model_dump())

    def _study_owner(self, request: Request) -> bool:
        return is_study_owner(self.settings.study_owner_sha256, request.headers.get(STUDY_OWNER_HEADER))

    @api.get("/v1/study/results")
    async def study_results(self, request: Request) -> dict:
        """Per-reader accuracy and the AUC of telling synthetic from real (0.5: indistinguishable).

        The scores reveal the truth, so: to the owner (``X-Study-Owner-Token``), or to all once closed (else 403).
        """
        self._auth(request)
        return await self._data().study_results.remote(self._study_owner(request))

    @api.post("/v1/study/close")
    async def study_close(self, request: Request) -> dict:
        """Close the study (owner only): no more answers, scores visible to every client."""
        self._auth(request)
        if not self._study_owner(request):
            raise RequestError(403, "error: only the study owner can close the study: send X-Study-Owner-Token")
        return await self._data().study_close.remote()
