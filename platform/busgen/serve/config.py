"""Arguments of the serve application builder, validated before any replica starts.

These are what an operator sets (``serve run busgen.serve.app:build_app key=value``,
config.yaml ``args``, or ``run_local`` keyword overrides): models, limits, resources
and batching. What HTTP clients send is in ``busgen.serve.schemas``.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from busgen.core.types import DEFAULT_PROTECT_MIN_FIT


class DeploymentArgs(BaseModel):
    """Resources and dynamic batching of one model deployment."""

    model_config = ConfigDict(extra="forbid")

    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0, description="1 on a GPU node; the model then loads on cuda")
    max_batch_size: int = Field(16, ge=1, description="requests (classifier) or images (generator) per forward pass")
    batch_wait_timeout_s: float = Field(0.02, ge=0, description="how long a batch waits to fill up")
    max_ongoing_requests: int = Field(32, ge=1, description="must be >= max_batch_size or batches never fill")
    # Requests waiting at each caller beyond max_ongoing_requests; above it the caller answers 503 at once.
    # Serve's default (-1) queues without bound, so overload only ever grows latency and memory.
    max_queued_requests: int = Field(64, ge=1)
    retry_after_s: float = Field(1.0, ge=0, description="Retry-After header of the 503 answered when the queue is full")
    torch_threads: int | None = Field(None, ge=1, description="None: Ray's per-actor default (OMP_NUM_THREADS)")

    @model_validator(mode="after")
    def _batches_can_fill(self) -> DeploymentArgs:
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) must be >= max_batch_size "
                f"({self.max_batch_size}), or Serve caps every batch at max_ongoing_requests"
            )
        return self


class IngressArgs(BaseModel):
    """The HTTP ingress: cheap per request (auth, checks, forwarding), so one replica takes many at once."""

    model_config = ConfigDict(extra="forbid")

    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0.5, ge=0)
    max_ongoing_requests: int = Field(256, ge=1)
    max_queued_requests: int = Field(256, ge=1, description="at the HTTP proxy; above it the proxy answers 503")
    retry_after_s: float = Field(1.0, ge=0)


class DataArgs(BaseModel):
    """The playground's data deployment (galleries, nearest image, reader study): small, one replica."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: float = Field(0.1, ge=0)
    max_ongoing_requests: int = Field(16, ge=1)
    max_queued_requests: int = Field(64, ge=1)


class GeneratorArgs(DeploymentArgs):
    """Generator deployment: batches are counted in images, several model dirs per replica."""

    max_batch_size: int = Field(32, ge=1)
    max_ongoing_requests: int = Field(64, ge=1)
    max_models_per_replica: int = Field(2, ge=1, description="LRU cache of loaded generators (multiplexing)")
    protect_min_fit: float = Field(
        DEFAULT_PROTECT_MIN_FIT,
        ge=0,
        le=1,
        description="protect=cpsample answers 409 when the classifier's recorded fit accuracy is lower",
    )


class LimitArgs(BaseModel):
    """What one client request may ask for; anything above is refused with a 4xx."""

    model_config = ConfigDict(extra="forbid")

    max_n: int = Field(16, ge=1, description="images per generate request, and files per classify request")
    max_steps: int = Field(50, ge=1, description="denoising steps per generate request")
    default_steps: int = Field(25, ge=1)
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="request body size (413 above)")
    max_pixels: int = Field(4096 * 4096, ge=1, description="decoded pixels: decompression bombs stop here")
    # A classify upload needs one frame (16 MP x 16 bit = 32 MiB), so 64 MiB leaves room for short cine loops.
    max_decoded_mb: float = Field(
        64, gt=0, description="DICOM uploads: all frames as stored, and the output of a Deflated body (413 above)"
    )
    min_side: int = Field(16, ge=1, description="smaller images carry no diagnostic content")
    max_aspect: float = Field(8.0, ge=1.0, description="long side / short side")

    @property
    def max_decoded_bytes(self) -> int:
        return int(self.max_decoded_mb * 2**20)

    @model_validator(mode="after")
    def _default_within_max(self) -> LimitArgs:
        if self.default_steps > self.max_steps:
            raise ValueError(f"default_steps ({self.default_steps}) exceeds max_steps ({self.max_steps})")
        return self


class ServeArgs(BaseModel):
    """Arguments of ``busgen.serve.app:build_app``; validated before any replica starts."""

    model_config = ConfigDict(extra="forbid")

    generators: dict[str, str] = Field(default_factory=dict, description="model id -> exported generator/adapter dir")
    default_generator: str | None = Field(None, description="id used when a request names no model (default: first)")
    classifier_dir: str | None = Field(None, description='saved classifier, served as id "default"')
    classifiers: dict[str, str] = Field(
        default_factory=dict, description="more classifiers: id -> saved classifier dir"
    )
    reference_parquet: str | None = Field(
        None, description='training images: nearest-neighbour check and reader-study "real" items'
    )
    galleries: dict[str, str] = Field(
        default_factory=dict, description="name -> generated Parquet set (file or folder)"
    )
    study_dir: str | None = Field(None, description="reader-study answers are written here as Parquet")
    study_items: int = Field(20, ge=2, le=500, description="items per reader: half real, half synthetic")
    study_owner_token: str | None = Field(
        None,
        description="sees the reader-study scores (X-Study-Owner-Token) and closes the study; default "
        "$BUSGEN_STUDY_OWNER_TOKEN",
    )
    study_owner_token_file: str | None = Field(None, description="file holding the study owner's token")
    token: str | None = Field(None, description="prefer BUSGEN_API_TOKEN or token_file: args may be logged")
    token_file: str | None = None
    insecure_local: bool = Field(False, description="no auth; demos on loopback only")
    access_log_fp: str | None = Field(None, description="also append the JSON access log to this file")
    limits: LimitArgs = Field(default_factory=LimitArgs)
    generator: GeneratorArgs = Field(default_factory=GeneratorArgs)
    classifier: DeploymentArgs = Field(default_factory=DeploymentArgs)
    ingress: IngressArgs = Field(default_factory=IngressArgs)
    data: DataArgs = Field(default_factory=DataArgs)
    ingress_num_cpus: float | None = Field(None, ge=0, description="kept for old configs: same as ingress.num_cpus")

    @field_validator("generators", "classifiers", "galleries", mode="before")
    @classmethod
    def _parse_generators(cls, value):
        """Accept a dict, a JSON object, or ``id=dir,id2=dir2`` (what ``serve run key=value`` can pass)."""
        if not isinstance(value, str):
            return value
        if value.lstrip().startswith("{"):
            return json.loads(value)
        pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"expected 'id=dir,id2=dir2' or a JSON object, got {value!r}")
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
        if self.ingress_num_cpus is not None:
            self.ingress.num_cpus = self.ingress_num_cpus
        return self

    @property
    def default_id(self) -> str:
        return self.default_generator or next(iter(self.generators))

    @property
    def classifier_dirs(self) -> dict[str, str]:
        """Every served classifier: ``classifier_dir`` as "default" first, then ``classifiers``."""
        return ({"default": self.classifier_dir} if self.classifier_dir else {}) | dict(self.classifiers)
