"""Model-side batch functions: what a model replica does with one batch of requests.

Plain Python over a loaded ``Generator`` or ``Predictor`` (no Ray), so batching
semantics are testable without Serve; the deployments in ``busgen.serve.deployments``
call these from their ``@serve.batch`` methods.
"""

from __future__ import annotations

import numpy as np

from busgen.data.imageio import resize_square


def images_in(jobs: list[dict]) -> int:
    """``serve.batch`` size function: a generator batch is measured in images, not requests."""
    return sum(job["n"] for job in jobs)


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
    batch = np.stack([resize_square(img, image_size, "pad") for img in images])  # (B, S, S) uint8
    out = predictor({"image": batch})
    return [{"probs": p.astype(float).tolist(), "pred": int(k)} for p, k in zip(out["probs"], out["pred"])]
