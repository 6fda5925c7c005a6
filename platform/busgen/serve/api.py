"""Online inference, library side: request schemas, auth, upload guards, model registry.

``serving/app.py`` composes Ray Serve deployments from these pieces and stays thin;
everything here is plain Python (pydantic, numpy, PIL) so it is unit-testable
without Ray and cheap to import in the HTTP ingress, which never loads torch.

Security model: every ``/v1`` route needs ``Authorization: Bearer <token>``. The
token comes from an argument, ``BUSGEN_API_TOKEN`` or a token file; only its
sha256 travels into the Serve deployment config, so the plaintext never sits in
Serve's controller checkpoint. ``insecure_local=True`` turns auth off for demos
and is refused unless the server binds to loopback. Client bytes are bounded
(body size, pixel count, image sides) before anything expensive happens, and model
ids map to directories only through the server-side registry: a client can never
name a path.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import hmac
import io
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TOKEN_ENV = "BUSGEN_API_TOKEN"
TOKEN_FILE_ENV = "BUSGEN_API_TOKEN_FILE"
MIN_TOKEN_CHARS = 16  # a guessable short token is worse than none: refuse it
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SAMPLERS = ("ddpm", "ddim", "dpmpp")  # mirrors busgen.model.diffusion.SAMPLERS without importing torch here
PNG_MAGIC, JPEG_MAGIC, DICOM_MAGIC = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"DICM"


class RequestError(Exception):
    """A client error with its HTTP status; the ingress turns it into ``{"detail": ...}``."""

    def __init__(self, status_code: int, detail: str):
        super().__init__(detail)
        self.status_code, self.detail = status_code, detail


# App builder arguments (``serve run serving.app:build_app key=value`` or config.yaml ``args``)


class DeploymentArgs(BaseModel):
    """Resources and dynamic batching of one model deployment."""

    model_config = ConfigDict(extra="forbid")

    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)  # 1 on a GPU node; the model then loads on cuda
    max_batch_size: int = Field(16, ge=1)  # requests (classifier) or images (generator) per forward pass
    batch_wait_timeout_s: float = Field(0.02, ge=0)  # how long a batch waits to fill up
    max_ongoing_requests: int = Field(32, ge=1)  # must be >= max_batch_size or batches never fill
    torch_threads: int | None = Field(None, ge=1)  # None: Ray's per-actor default (OMP_NUM_THREADS)

    @model_validator(mode="after")
    def _batches_can_fill(self) -> DeploymentArgs:
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) must be >= max_batch_size "
                f"({self.max_batch_size}), or Serve caps every batch at max_ongoing_requests"
            )
        return self


class GeneratorArgs(DeploymentArgs):
    """Generator deployment: batches are counted in images, several model dirs per replica."""

    max_batch_size: int = Field(32, ge=1)
    max_ongoing_requests: int = Field(64, ge=1)
    max_models_per_replica: int = Field(2, ge=1)  # LRU cache of loaded generators (multiplexing)


class LimitArgs(BaseModel):
    """What one client request may ask for; anything above is refused with a 4xx."""

    model_config = ConfigDict(extra="forbid")

    max_n: int = Field(16, ge=1)  # images per generate request
    max_steps: int = Field(50, ge=1)  # denoising steps per generate request
    default_steps: int = Field(25, ge=1)
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024)  # request body size (413 above)
    max_pixels: int = Field(4096 * 4096, ge=1)  # decoded pixels: decompression bombs stop here
    min_side: int = Field(16, ge=1)  # smaller images carry no diagnostic content
    max_aspect: float = Field(8.0, ge=1.0)  # long side / short side

    @model_validator(mode="after")
    def _default_within_max(self) -> LimitArgs:
        if self.default_steps > self.max_steps:
            raise ValueError(f"default_steps ({self.default_steps}) exceeds max_steps ({self.max_steps})")
        return self


class ServeArgs(BaseModel):
    """Arguments of ``serving.app:build_app``; validated before any replica starts."""

    model_config = ConfigDict(extra="forbid")

    generators: dict[str, str] = Field(default_factory=dict)  # model id -> exported generator/adapter dir
    default_generator: str | None = None  # id used when a request names no model (default: first)
    classifier_dir: str | None = None  # saved classifier; None disables /v1/classify (503)
    token: str | None = None  # prefer BUSGEN_API_TOKEN or token_file: args may be logged
    token_file: str | None = None
    insecure_local: bool = False  # no auth; demos on loopback only
    access_log_fp: str | None = None  # also append the JSON access log to this file
    limits: LimitArgs = Field(default_factory=LimitArgs)
    generator: GeneratorArgs = Field(default_factory=GeneratorArgs)
    classifier: DeploymentArgs = Field(default_factory=DeploymentArgs)
    ingress_num_cpus: float = Field(0.5, ge=0)

    @field_validator("generators", mode="before")
    @classmethod
    def _parse_generators(cls, value):
        """Accept a dict, a JSON object, or ``id=dir,id2=dir2`` (what ``serve run key=value`` can pass)."""
        if not isinstance(value, str):
            return value
        if value.lstrip().startswith("{"):
            return json.loads(value)
        pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"generators must be 'id=dir,id2=dir2' or a JSON object, got {value!r}")
        return {k.strip(): v.strip() for k, v in pairs}

    @model_validator(mode="after")
    def _check_models(self) -> ServeArgs:
        if not self.generators:
            raise ValueError("no generators configured: pass generators={'id': '/path/to/model_dir'}")
        if self.default_generator is not None and self.default_generator not in self.generators:
            raise ValueError(
                f"default_generator {self.default_generator!r} is not in generators {list(self.generators)}"
            )
        if self.limits.max_n > self.generator.max_batch_size:  # Serve refuses batch items larger than a batch
            raise ValueError(
                f"limits.max_n ({self.limits.max_n}) exceeds generator.max_batch_size "
                f"({self.generator.max_batch_size}): one request must fit in one batch"
            )
        return self

    @property
    def default_id(self) -> str:
        return self.default_generator or next(iter(self.generators))


class IngressSettings(BaseModel):
    """What the HTTP ingress replica needs: the token's digest (never the token), registry, limits."""

    generators: dict[str, str]
    default_id: str
    classifier_dir: str | None
    token_sha256: str | None  # None: insecure_local
    limits: LimitArgs
    access_log_fp: str | None = None

    @classmethod
    def from_args(cls, args: ServeArgs) -> IngressSettings:
        return cls(
            generators=args.generators,
            default_id=args.default_id,
            classifier_dir=args.classifier_dir,
            token_sha256=token_digest(args),
            limits=args.limits,
            access_log_fp=args.access_log_fp,
        )


# Auth


def resolve_token(token: str | None = None, token_file: str | None = None) -> str | None:
    """The API token: explicit value, else $BUSGEN_API_TOKEN, else a token file (arg or $BUSGEN_API_TOKEN_FILE)."""
    token = token or os.environ.get(TOKEN_ENV)
    token_file = token_file or os.environ.get(TOKEN_FILE_ENV)
    if not token and token_file:
        token = Path(token_file).read_text().strip()
    return token or None


def token_digest(args: ServeArgs) -> str | None:
    """sha256 of the resolved token, or None in insecure_local mode.

    Raises:
        ValueError: no token (and not insecure_local), or a token too short to resist guessing.
    """
    if args.insecure_local:
        return None
    token = resolve_token(args.token, args.token_file)
    if not token:
        raise ValueError(
            f"no API token: set {TOKEN_ENV} or {TOKEN_FILE_ENV}, pass token_file=..., "
            "or pass insecure_local=True for a loopback-only demo"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"API token is too short ({len(token)} chars); use at least {MIN_TOKEN_CHARS}")
    return hashlib.sha256(token.encode()).hexdigest()


class BearerAuth:
    """Checks ``Authorization: Bearer <token>`` against a stored sha256 in constant time."""

    def __init__(self, digest: str | None):
        self.digest = digest  # None: auth disabled (insecure_local)

    def check(self, token: str | None) -> None:
        """Raise 401 unless ``token`` (the credentials after "Bearer ") matches."""
        if self.digest is None:
            return
        if not token:
            raise RequestError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        presented = hashlib.sha256(token.encode()).hexdigest()
        if not hmac.compare_digest(presented, self.digest):
            raise RequestError(401, "invalid bearer token")


# Model registry


class GeneratorInfo(BaseModel):
    """What a client may know about a served generator (never its directory)."""

    id: str
    model_id: str  # weights fingerprint: changes whenever the weights do
    class_names: list[str]
    domain_names: list[str]
    image_size: int


class ClassifierInfo(BaseModel):
    model_id: str  # sha256 of the weights file (classifier.json has no id of its own)
    model_version: str  # "<format_version>-<model_id>", echoed in every classify response
    class_names: list[str]
    image_size: int


def read_generator_info(model_id: str, model_dir: str) -> GeneratorInfo:
    """Read ``busgen.json`` (no torch) so the ingress can validate requests without loading weights."""
    meta_fp = Path(model_dir) / "busgen.json"
    if not meta_fp.is_file():
        raise ValueError(f"generator {model_id!r}: {model_dir} is not a BUSGen model directory (no busgen.json)")
    meta = json.loads(meta_fp.read_text())
    return GeneratorInfo(
        id=model_id,
        model_id=meta.get("model_id", "unknown"),
        class_names=meta["class_names"],
        domain_names=meta["domain_names"],
        image_size=meta["image_size"],
    )


def read_classifier_info(model_dir: str) -> ClassifierInfo:
    """Read ``classifier.json`` and fingerprint ``model.pt``."""
    root = Path(model_dir)
    if not (root / "classifier.json").is_file():
        raise ValueError(f"{model_dir} is not a saved classifier (no classifier.json)")
    meta = json.loads((root / "classifier.json").read_text())
    digest = hashlib.sha256((root / "model.pt").read_bytes()).hexdigest()[:16]
    return ClassifierInfo(
        model_id=digest,
        model_version=f"{meta.get('format_version', 1)}-{digest}",
        class_names=meta["class_names"],
        image_size=meta["config"]["image_size"],
    )


class ModelRegistry:
    """Model id -> directory and metadata, fixed at deploy time; the only way a request reaches a model."""

    def __init__(self, generators: dict[str, str], default_id: str):
        self.dirs = dict(generators)
        self.default_id = default_id
        self.infos = {k: read_generator_info(k, d) for k, d in self.dirs.items()}

    def resolve(self, model: str | None) -> GeneratorInfo:
        """Info of ``model`` (default model when None); 404 for ids not in the registry."""
        key = model or self.default_id
        if key not in self.infos:
            raise RequestError(404, f"unknown model {key!r}; available models: {sorted(self.infos)}")
        return self.infos[key]

    def dir_of(self, model: str) -> str:
        self.resolve(model)
        return self.dirs[model]


# Request and response schemas


class GenerateRequest(BaseModel):
    """Body of ``POST /v1/generate``."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=64, description="class name, see GET /v1/models")
    n: int = Field(1, ge=1, description="number of images (at most limits.max_n)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="image i uses seed + i: same request, same images")
    steps: int | None = Field(None, ge=1, description="denoising steps (default limits.default_steps)")
    guidance: float | None = Field(None, ge=0.0, le=20.0, description="classifier-free guidance scale")
    sampler: Literal["ddpm", "ddim", "dpmpp"] = "ddim"
    model: str | None = Field(None, max_length=128, description="generator id; default model when omitted")
    domain: str | None = Field(None, max_length=64, description="acquisition domain; omitted = unconditional")
    box: list[float] | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="lesion box [x0, y0, x1, y1] in [0, 1]; omitted = drawn from the prior",
    )

    @field_validator("box")
    @classmethod
    def _box_in_unit_square(cls, box):
        if box is not None and not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
            raise ValueError("box must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        return box


class GenerateResponse(BaseModel):
    model: str
    model_id: str
    label: str
    domain: str | None
    seeds: list[int]
    steps: int
    guidance: float
    sampler: str
    image_size: int
    images: list[str] = Field(description="base64-encoded 8-bit grayscale PNGs")


class ClassifyResponse(BaseModel):
    label: str
    probs: dict[str, float]
    model_id: str
    model_version: str


class ModelsResponse(BaseModel):
    generators: list[GeneratorInfo]
    default_generator: str
    classifier: ClassifierInfo | None
    limits: LimitArgs


def validate_generate(req: GenerateRequest, info: GeneratorInfo, limits: LimitArgs) -> dict:
    """Check a request against the model and the limits; return the job sent to the generator deployment."""
    if req.n > limits.max_n:
        raise RequestError(422, f"n={req.n} exceeds the limit of {limits.max_n} images per request")
    steps = req.steps or limits.default_steps
    if steps > limits.max_steps:
        raise RequestError(422, f"steps={steps} exceeds the limit of {limits.max_steps}")
    if req.label not in info.class_names:
        raise RequestError(422, f"unknown label {req.label!r} for model {info.id!r}; valid labels: {info.class_names}")
    if req.domain is not None and req.domain not in info.domain_names:
        raise RequestError(
            422, f"unknown domain {req.domain!r} for model {info.id!r}; valid domains: {info.domain_names}"
        )
    return {
        "label": req.label,
        "n": req.n,
        "seed": req.seed,
        "steps": steps,
        "guidance": req.guidance,
        "sampler": req.sampler,
        "domain": req.domain,
        "box": req.box,
    }


def images_in(jobs: list[dict]) -> int:
    """``serve.batch`` size function: a generator batch is measured in images, not requests."""
    return sum(job["n"] for job in jobs)


def png_base64(images: np.ndarray) -> list[str]:
    """uint8 (N, H, W) -> base64 PNG strings (JSON-safe)."""
    from busgen.data.imageio import encode_png

    return [base64.b64encode(encode_png(img)).decode("ascii") for img in images]


# Model-side batch functions (run inside the model replicas)


def sample_jobs(gen, jobs: list[dict], default_guidance: float, batch_size: int) -> list[dict]:
    """Run a batch of generate jobs on one ``Generator``; one result dict per job.

    Jobs sharing (steps, guidance, sampler) run in one ``sample`` call: per-image
    seeds make each image independent of what it was batched with. A failing group
    reports ``{"error": ...}`` for its own jobs only, so one bad job cannot fail
    the others in the batch.
    """
    results: list[dict] = [{} for _ in jobs]
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        guidance = default_guidance if job["guidance"] is None else job["guidance"]
        groups.setdefault((job["steps"], guidance, job["sampler"]), []).append(i)
    for (steps, guidance, sampler), members in groups.items():
        labels, domains, boxes, seeds = [], [], [], []
        for i in members:
            job = jobs[i]
            seeds_i = [job["seed"] + k for k in range(job["n"])]
            labels += [job["label"]] * job["n"]
            domains += [job["domain"]] * job["n"]
            boxes += [job["box"]] * job["n"]
            seeds += seeds_i
            results[i] = {"seeds": seeds_i, "steps": steps, "guidance": guidance, "sampler": sampler}
        try:
            images = gen.sample(
                labels,
                domains=domains,
                boxes=boxes,
                steps=steps,
                guidance=guidance,
                sampler=sampler,
                seeds=seeds,
                batch_size=batch_size,
            )
        except ValueError as exc:  # a condition the model does not know
            for i in members:
                results[i] = {"error": str(exc)}
            continue
        start = 0
        for i in members:
            results[i]["images"] = images[start : start + jobs[i]["n"]]
            start += jobs[i]["n"]
    return results


def classify_images(predictor, images: list[np.ndarray], image_size: int) -> list[dict]:
    """Resize each image like ingest does (aspect kept, zero-padded), predict in one batch."""
    from busgen.data.imageio import resize_square

    batch = np.stack([resize_square(img, image_size, "pad") for img in images])  # (B, S, S) uint8
    out = predictor({"image": batch})
    return [{"probs": p.astype(float).tolist(), "pred": int(k)} for p, k in zip(out["probs"], out["pred"])]


# Upload guards


async def read_body_limited(request, max_bytes: int) -> bytes:
    """Read a request body, refusing (413) anything over ``max_bytes`` without buffering it all.

    The declared Content-Length is checked first; the stream is counted too, since
    chunked uploads declare nothing.
    """
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise RequestError(413, f"request body too large: limit is {max_bytes} bytes")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise RequestError(413, f"request body too large: limit is {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def extract_upload(body: bytes, content_type: str | None) -> tuple[bytes, str]:
    """The uploaded file from a multipart/form-data body (field ``file`` or the first file part), or the raw body.

    Returns:
        (file bytes, client file name or "").
    """
    if not (content_type or "").lower().startswith("multipart/form-data"):
        return body, ""
    header = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + body)
    if not msg.is_multipart():
        raise RequestError(400, "malformed multipart body (missing or wrong boundary)")
    parts = [p for p in msg.iter_parts() if p.get_content_disposition() == "form-data"]
    named = [p for p in parts if p.get_param("name", header="content-disposition") == "file"]
    files = named or [p for p in parts if p.get_filename()]
    if not files:
        raise RequestError(400, "multipart body has no file part: send the image as form field 'file'")
    return files[0].get_payload(decode=True) or b"", files[0].get_filename() or ""


def decode_upload(data: bytes, filename: str, limits: LimitArgs) -> np.ndarray:
    """Decode an uploaded PNG, JPEG or DICOM to uint8 (H, W), mapping every failure to a 4xx.

    415: not PNG/JPEG/DICOM; 400: corrupt or truncated; 413: too many pixels
    (checked from the header, before decoding); 422: sides too small or too elongated.
    """
    from busgen.data.imageio import ImageDecodeError, decode_image

    if not data:
        raise RequestError(400, "empty upload (0 bytes)")
    is_dicom = data[128:132] == DICOM_MAGIC or filename.lower().endswith((".dcm", ".dicom"))
    if not (is_dicom or data.startswith(PNG_MAGIC) or data.startswith(JPEG_MAGIC)):
        raise RequestError(415, "unsupported file type: send a PNG, JPEG or DICOM image")
    try:
        if is_dicom:
            check_dicom_size(data, limits.max_pixels)
            from busgen.data.ingest import read_any_image

            image = read_any_image(data, filename or "upload.dcm")
        else:
            image = decode_image(data, max_pixels=limits.max_pixels)
    except ImageDecodeError as exc:
        status = 413 if "too large" in str(exc) else 400
        raise RequestError(status, f"cannot decode image: {exc}") from None
    check_dimensions(image, limits)
    return image


def check_dicom_size(data: bytes, max_pixels: int) -> None:
    """Refuse (413) DICOMs whose header declares more than ``max_pixels`` samples over all frames.

    ``read_any_image`` decodes every frame to float64 before keeping the first, so
    the header is checked before any pixel is touched.
    """
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except Exception as exc:  # pydicom raises many kinds on garbage
        raise RequestError(400, f"cannot decode image: unreadable DICOM header: {exc}") from None
    if rows * cols == 0:
        raise RequestError(400, "cannot decode image: DICOM has no pixel dimensions")
    if rows * cols * frames * samples > max_pixels:
        raise RequestError(413, f"image too large: DICOM {cols}x{rows}x{frames} frames exceeds {max_pixels} pixels")


def check_dimensions(image: np.ndarray, limits: LimitArgs) -> None:
    """422 for images too small or too elongated to be an ultrasound frame."""
    if image.ndim != 2:
        raise RequestError(422, f"expected a 2-D grayscale image, got shape {image.shape}")
    h, w = image.shape
    if min(h, w) < limits.min_side:
        raise RequestError(422, f"image {w}x{h} is too small: each side must be >= {limits.min_side} px")
    if max(h, w) / min(h, w) > limits.max_aspect:
        raise RequestError(422, f"image {w}x{h} is too elongated: aspect ratio must be <= {limits.max_aspect}")


# Access log


ACCESS_LOGGER = "busgen.serve.api.access"


def configure_access_log(log_fp: str | None = None) -> logging.Logger:
    """One JSON line per request on stderr (the replica's log) and optionally a file; idempotent."""
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # Serve's own handlers would re-wrap the JSON in their text format
    wanted = [("stderr", lambda: logging.StreamHandler(sys.stderr))]
    if log_fp:
        wanted.append((log_fp, lambda: logging.FileHandler(log_fp)))
    have = {getattr(h, "busgen_key", None) for h in logger.handlers}
    for key, make in wanted:
        if key not in have:
            handler = make()
            handler.busgen_key = key
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
    return logger


def access_record(method: str, path: str, status: int, started: float, n: int | None = None) -> dict:
    """The fields of one access-log line; ``started`` is a ``time.perf_counter()`` value."""
    return {
        "ts": round(time.time(), 3),
        "method": method,
        "path": path,
        "status": int(status),
        "latency_ms": round((time.perf_counter() - started) * 1000.0, 2),
        "n": n,
    }


def log_access(record: dict) -> None:
    logging.getLogger(ACCESS_LOGGER).info(json.dumps(record, separators=(",", ":")))


# Local runner (used by the ``busgen serve`` CLI)


def ensure_serving_importable() -> None:
    """Put the repository root (holding ``serving/``) on sys.path for this driver and its Ray workers."""
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:  # workers started after this inherit it
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])


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
    ensure_serving_importable()
    from ray import serve

    from busgen.core.raylocal import init_ray
    from serving.app import build_app

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
