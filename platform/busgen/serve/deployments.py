"""The two model deployments: each owns its model, its replicas, CPUs/GPUs and dynamic batching.

Torch is imported inside ``__init__`` so that importing this module (which the
ingress and the app builder do) never loads it. What a replica does with one batch
is in ``busgen.serve.batching``.
"""

from __future__ import annotations

import asyncio

from ray import serve

from busgen.core.types import DEFAULT_GUIDANCE
from busgen.serve.batching import classify_requests, encode_results, images_in, sample_jobs, uploads_in
from busgen.serve.config import DeploymentArgs, GeneratorArgs, LimitArgs
from busgen.serve.errors import RequestError
from busgen.serve.registry import ModelRegistry, read_classifier_info


@serve.deployment(name="GeneratorDeployment", max_ongoing_requests=64)
class GeneratorDeployment:
    """Samples images; many generator/adapter dirs per replica, picked by multiplexed model id."""

    def __init__(self, generators: dict[str, str], default_id: str, opts: dict):
        import torch

        from busgen.model import generator

        self.registry = ModelRegistry(generators, default_id)
        self.opts = GeneratorArgs(**opts)
        self.default_guidance = DEFAULT_GUIDANCE
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
        """One validated job (see ``schemas.validate_generate``) -> ``pngs`` (n PNG bytes) and what was used."""
        result = await self._generate_batch(job)
        if "error" in result:  # the request asked for something this model cannot do: the text is for the client
            raise RequestError(result.get("status", 422), result["error"])
        return result

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.02, batch_size_fn=images_in)
    async def _generate_batch(self, jobs: list[dict]) -> list[dict]:
        # Serve splits batches by multiplexed model id, so the whole batch uses one model.
        gen = await self.get_generator(serve.get_multiplexed_model_id())

        def run() -> list[dict]:  # sampling and PNG encoding off the event loop, so requests keep queueing
            return encode_results(
                sample_jobs(gen, jobs, self.default_guidance, self.opts.max_batch_size, self.opts.protect_min_fit)
            )

        results = await asyncio.to_thread(run)
        return [{**r, "model_id": gen.model_id} for r in results]


@serve.deployment(name="ClassifierDeployment", max_ongoing_requests=32)
class ClassifierDeployment:
    """Decodes uploads and predicts class probabilities, batched across requests, for every registered classifier.

    Classifiers are small, so each replica holds all of them; a batch is split by
    classifier id inside ``batching.classify_requests`` rather than by Serve multiplexing.
    """

    def __init__(self, classifier_dirs: dict[str, str], opts: dict, limits: dict):
        import torch

        from busgen.model.classifier import Predictor

        self.opts = DeploymentArgs(**opts)
        self.limits = LimitArgs(**limits)
        if self.opts.torch_threads:
            torch.set_num_threads(self.opts.torch_threads)
        self.infos = {k: read_classifier_info(d) for k, d in classifier_dirs.items()}
        self.predictors = {k: Predictor.from_checkpoint(d) for k, d in classifier_dirs.items()}
        self.sizes = {k: info.image_size for k, info in self.infos.items()}
        self._classify_batch.set_max_batch_size(self.opts.max_batch_size)
        self._classify_batch.set_batch_wait_timeout_s(self.opts.batch_wait_timeout_s)

    async def ready(self) -> dict[str, str]:
        return {k: info.model_id for k, info in self.infos.items()}

    async def classify(self, request: dict) -> dict:
        """``{"classifier": id, "uploads": [(bytes, name), ...]}`` -> ``{"results": [{"probs", "pred"}, ...]}``.

        A file that fails the guards comes back as ``{"error": [status, detail]}``.
        """
        return await self._classify_batch(request)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01, batch_size_fn=uploads_in)
    async def _classify_batch(self, requests: list[dict]) -> list[dict]:
        return await asyncio.to_thread(classify_requests, self.predictors, self.sizes, requests, self.limits)
