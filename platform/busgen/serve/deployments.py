"""The two model deployments: each owns its model, its replicas, CPUs/GPUs and dynamic batching.

Torch is imported inside ``__init__`` so that importing this module (which the
ingress and the app builder do) never loads it. What a replica does with one batch
is in ``busgen.serve.batching``.
"""

from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from busgen.core.types import DEFAULT_GUIDANCE
from busgen.serve.batching import classify_images, images_in, sample_jobs
from busgen.serve.config import DeploymentArgs, GeneratorArgs
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
        """One validated job (see ``schemas.validate_generate``) -> images uint8 (n, H, W) and what was used."""
        result = await self._generate_batch(job)
        if "error" in result:
            raise ValueError(result["error"])
        return result

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.02, batch_size_fn=images_in)
    async def _generate_batch(self, jobs: list[dict]) -> list[dict]:
        # Serve splits batches by multiplexed model id, so the whole batch uses one model.
        gen = await self.get_generator(serve.get_multiplexed_model_id())
        results = await asyncio.to_thread(sample_jobs, gen, jobs, self.default_guidance, self.opts.max_batch_size)
        return [{**r, "model_id": gen.model_id} for r in results]


@serve.deployment(name="ClassifierDeployment", max_ongoing_requests=32)
class ClassifierDeployment:
    """Predicts class probabilities for decoded uint8 images, batched across requests."""

    def __init__(self, model_dir: str, opts: dict):
        import torch

        from busgen.model.classifier import Predictor

        self.opts = DeploymentArgs(**opts)
        if self.opts.torch_threads:
            torch.set_num_threads(self.opts.torch_threads)
        self.info = read_classifier_info(model_dir)
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
        return await asyncio.to_thread(classify_images, self.predictor, images, self.info.image_size)
