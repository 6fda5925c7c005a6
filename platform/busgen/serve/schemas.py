"""HTTP request and response bodies, and the check of a generate request against a model and the limits.

Plain pydantic: FastAPI renders these as the OpenAPI spec, and the sampler choice is
``busgen.core.types.SamplerName``, the same type the CLI and the suites validate with.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from busgen.core.types import DEFAULT_SAMPLER, SAMPLERS, ProtectName, SamplerName
from busgen.serve.config import LimitArgs
from busgen.serve.errors import RequestError
from busgen.serve.registry import ClassifierInfo, GeneratorInfo

# Privacy protection while sampling: "cpsample" needs the generator's protection classifier
# (`busgen protect`); a generator without one answers 422, one whose classifier did not fit its labels 409.
PROTECT_PLANNED: tuple[str, ...] = ()  # protections the playground shows as not yet available


class GenerateRequest(BaseModel):
    """Body of ``POST /v1/generate``."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=64, description="class name, see GET /v1/models")
    n: int = Field(1, ge=1, description="number of images (at most limits.max_n)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="image i uses seed + i: same request, same images")
    steps: int | None = Field(None, ge=1, description="denoising steps (default limits.default_steps)")
    guidance: float | None = Field(None, ge=0.0, le=20.0, description="classifier-free guidance scale")
    sampler: SamplerName = DEFAULT_SAMPLER
    model: str | None = Field(None, max_length=128, description="generator id; default model when omitted")
    domain: str | None = Field(None, max_length=64, description="acquisition domain; omitted = unconditional")
    box: list[float] | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="lesion box [x0, y0, x1, y1] in [0, 1]; omitted = drawn from the prior",
    )
    protect: ProtectName = Field("none", description="privacy protection while sampling (none | cpsample)")
    protect_strength: float | None = Field(None, ge=0.0, description="CPSample alpha (default: the library's)")
    protect_threshold: float | None = Field(None, ge=0.5, lt=1.0, description="CPSample confidence threshold")
    nearest: bool = Field(False, description="also return each image's nearest training image and its similarity")

    @field_validator("box")
    @classmethod
    def _box_in_unit_square(cls, box):
        if box is not None and not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
            raise ValueError("box must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        return box


class NearestMatch(BaseModel):
    similarity: float = Field(description="Pearson correlation of 32x32 thumbnails; near 1 = a copy")
    possible_copy: bool = Field(description="similarity >= the copy threshold (see NearestMetric)")
    percentile: float | None = Field(
        description="% of training images whose nearest other training image is less similar than this"
    )
    source: str = Field(description="id of the training image (its ingest source, never a server path)")
    image: str = Field(description="base64 PNG of the training image")


class NearestMetric(BaseModel):
    """What the nearest-image number is and what it is compared with (``busgen.serve.nearest``)."""

    metric: str = Field(description="the similarity and the features it is computed on")
    threshold: float = Field(description="copy threshold: at or above it an image is flagged possible_copy")
    reference_median: float | None = Field(description="median similarity of a training image to its nearest other")
    reference_size: int = Field(description="training images searched")


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
    protect: str = "none"
    images: list[str] = Field(description="base64-encoded 8-bit grayscale PNGs")
    boxes: list[list[float]] = Field(
        description="each image's lesion box [x0, y0, x1, y1] in [0, 1] (given, or drawn from the prior); [] = none"
    )
    nearest: list[NearestMatch] | None = Field(None, description="with nearest=true and a reference set")
    nearest_metric: NearestMetric | None = Field(None, description="the yardstick of `nearest`")


class ClassifyResult(BaseModel):
    label: str
    probs: dict[str, float]


class ClassifyResponse(BaseModel):
    label: str = Field(description="prediction for the first (or only) file")
    probs: dict[str, float]
    results: list[ClassifyResult] = Field(description="one per uploaded file, in upload order")
    classifier: str
    model_id: str
    model_version: str


class StudyAnswer(BaseModel):
    """Body of ``POST /v1/study/answer`` (the reader is the one the ``X-Study-Reader-Token`` opens)."""

    model_config = ConfigDict(extra="forbid")

    item: int = Field(ge=0)
    says_synthetic: bool
    confidence: int = Field(ge=1, le=5, description="1 = guessing ... 5 = certain")
    says_label: str | None = Field(None, max_length=64)


class NewReaders(BaseModel):
    """Body of ``POST /v1/study/readers`` (study owner): how many reader links to create."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(1, ge=1, le=50)


class ModelsResponse(BaseModel):
    generators: list[GeneratorInfo]
    default_generator: str
    classifier: ClassifierInfo | None = Field(description="the default classifier (first registered)")
    classifiers: dict[str, ClassifierInfo]
    galleries: list[str]
    nearest: bool = Field(description="a reference set is loaded: generate accepts nearest=true")
    study: bool = Field(description="the reader study is configured")
    protect: list[str] = Field(description="privacy protections available now")
    protect_planned: list[str]
    samplers: list[str] = Field(list(SAMPLERS), description="values of a generate request's sampler")
    limits: LimitArgs


def validate_generate(req: GenerateRequest, info: GeneratorInfo, limits: LimitArgs) -> dict:
    """Check a request against the model and the limits; return the job sent to the generator deployment."""
    if req.n > limits.max_n:
        raise RequestError(422, f"n={req.n} exceeds the limit of {limits.max_n} images per request")
    steps = req.steps or info.default_steps or limits.default_steps
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
        "protect": req.protect,
        "protect_strength": req.protect_strength,
        "protect_threshold": req.protect_threshold,
    }
