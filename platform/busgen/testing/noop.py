"""The framework's own ceiling: the BUSGen deployment shape with all BUSGen work taken out.

A FastAPI ingress forwards each request through a handle to a model deployment that
batches with ``@serve.batch`` and returns a constant. Deployed with the same options
as the real app (``ServeArgs``), its requests/s on a machine is what Ray Serve itself
allows there; ``evals/benchmarks/serve_load.py`` compares the real API against it.
"""

from fastapi import FastAPI, Request
from ray import serve
from ray.serve.handle import DeploymentHandle

from busgen.serve.config import ServeArgs

noop_api = FastAPI(title="BUSGen no-op ceiling")


@serve.deployment(name="NoopModel")
class NoopModel:
    def __init__(self, max_batch_size: int, batch_wait_timeout_s: float):
        self._batch.set_max_batch_size(max_batch_size)
        self._batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def call(self, body: bytes) -> int:
        return await self._batch(body)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _batch(self, bodies: list[bytes]) -> list[int]:
        return [0] * len(bodies)


@serve.deployment(name="NoopIngress")
@serve.ingress(noop_api)
class NoopIngress:
    def __init__(self, model: DeploymentHandle):
        self.model = model

    @noop_api.post("/v1/noop")
    async def noop(self, request: Request) -> dict:
        return {"pred": await self.model.call.remote(await request.body())}


def build_noop_app(args: ServeArgs) -> serve.Application:
    """The no-op app with the ingress and classifier options of ``args`` (replicas, CPUs, queues, batching)."""
    c, i = args.classifier, args.ingress
    model = NoopModel.options(
        num_replicas=c.num_replicas,
        ray_actor_options={"num_cpus": c.num_cpus},
        max_ongoing_requests=c.max_ongoing_requests,
        max_queued_requests=c.max_queued_requests,
    ).bind(c.max_batch_size, c.batch_wait_timeout_s)
    ingress = NoopIngress.options(
        num_replicas=i.num_replicas,
        ray_actor_options={"num_cpus": i.num_cpus},
        max_ongoing_requests=i.max_ongoing_requests,
        max_queued_requests=i.max_queued_requests,
    )
    return ingress.bind(model)
