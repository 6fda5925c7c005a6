"""Model-side batch functions: what a model replica does with one batch of requests.

Plain Python over a loaded ``Generator`` or ``Predictor`` (no Ray), so batching
semantics are testable without Serve; the deployments in ``busgen.serve.deployments``
call these from their ``@serve.batch`` methods.
"""

from __future__ import annotations

import numpy as np

from busgen.data.imageio import encode_png, resize_square
from busgen.serve.config import LimitArgs
from busgen.serve.errors import RequestError
from busgen.serve.guards import decode_upload


def images_in(jobs: list[dict]) -> int:
    """``serve.batch`` size function: a generator batch is measured in images, not requests."""
    return sum(job["n"] for job in jobs)


def uploads_in(requests: list[dict]) -> int:
    """``serve.batch`` size function of the classifier: images (uploaded files), not requests."""
    return sum(len(r["uploads"]) for r in requests)


def encode_results(results: list[dict]) -> list[dict]:
    """Replace each result's uint8 images by PNG bytes, so replicas send kilobytes, not arrays, to the ingress."""
    for r in results:
        if "images" in r:
            r["pngs"] = [encode_png(img) for img in r.pop("images")]
    return results


def sample_jobs(
    gen, jobs: list[dict], default_guidance: float, batch_size: int, protect_min_fit: float | None = None
) -> list[dict]:
    """Run a batch of generate jobs on one ``Generator``; one result dict per job.

    Jobs sharing (steps, guidance, sampler, protect) run in one ``sample`` call: per-image
    seeds make each image independent of what it was batched with. Boxes left to the prior
    are drawn here (``resolve_boxes``, seeded per image as ``sample`` would) so that each
    result can say where its lesion box is. A failing group
    reports ``{"error": ...}`` for its own jobs only, so one bad job cannot fail
    the others in the batch; ``"status"`` is 409 when protection exists but fails its fit
    floor (``protect_min_fit``, the operator's setting; None = the library default).
    """
    results: list[dict] = [{} for _ in jobs]
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        guidance = default_guidance if job["guidance"] is None else job["guidance"]
        protection = (job.get("protect", "none"), job.get("protect_strength"), job.get("protect_threshold"))
        groups.setdefault((job["steps"], guidance, job["sampler"], protection), []).append(i)
    for (steps, guidance, sampler, (protect, strength, threshold)), members in groups.items():
        labels, domains, boxes, seeds = [], [], [], []
        for i in members:
            job = jobs[i]
            seeds_i = [job["seed"] + k for k in range(job["n"])]
            labels += [job["label"]] * job["n"]
            domains += [job["domain"]] * job["n"]
            boxes += [job["box"]] * job["n"]
            seeds += seeds_i
            results[i] = {"seeds": seeds_i, "steps": steps, "guidance": guidance, "sampler": sampler}
            results[i]["protect"] = protect
        protect_kwargs = {"protect": protect}
        if strength is not None:
            protect_kwargs["protect_strength"] = strength
        if threshold is not None:
            protect_kwargs["protect_threshold"] = threshold
        if protect_min_fit is not None and protect != "none":
            protect_kwargs["protect_min_fit"] = protect_min_fit
        try:
            boxes = gen.resolve_boxes(labels, boxes, seeds)  # what sample() would draw, kept to answer with
            images = gen.sample(
                labels,
                domains=domains,
                boxes=boxes,
                steps=steps,
                guidance=guidance,
                sampler=sampler,
                seeds=seeds,
                batch_size=batch_size,
                **protect_kwargs,
            )
        except ValueError as exc:  # a condition the model does not know, or no protection classifier
            message, status = str(exc), 422
            if type(exc).__name__ == "ProtectError":  # its text names server paths: say what the client can do
                message = (
                    "protect=cpsample is not available for this generator (it has no valid protection classifier; "
                    "the operator trains one with `busgen protect`): use protect=none or another model"
                )
            elif type(exc).__name__ == "ProtectFitError":  # it exists but would fail open: refuse, as a conflict
                status, message = (
                    409,
                    (
                        "error: protect=cpsample is refused for this generator: its protection classifier did not "
                        "fit its training images (recorded fit accuracy below the server's floor), so it would leave "
                        "some of them unprotected; the operator retrains it longer with `busgen protect ... "
                        "max_minutes=...` or lowers the floor (generator.protect_min_fit)"
                    ),
                )
            for i in members:
                results[i] = {"error": message, "status": status}
            continue
        start = 0
        for i in members:
            results[i]["images"] = images[start : start + jobs[i]["n"]]
            results[i]["boxes"] = [[round(float(v), 4) for v in b] for b in boxes[start : start + jobs[i]["n"]]]
            start += jobs[i]["n"]
    return results


def classify_requests(predictors: dict, image_sizes: dict[str, int], requests: list[dict], limits: LimitArgs):
    """Decode and classify a batch of classify requests; one result dict per request.

    Each request is ``{"classifier": id, "uploads": [(bytes, filename), ...]}``. Decoding
    happens here, in the model replica (the ingress only checks sizes and types), with
    the same guards; a bad file fails its own request with ``{"error": [status, detail]}``
    and never the others of the batch. Images of one classifier run in one forward pass.
    """
    results: list[dict] = [{} for _ in requests]
    by_model: dict[str, list[tuple[int, np.ndarray]]] = {}
    for i, req in enumerate(requests):
        try:
            images = [decode_upload(data, name, limits) for data, name in req["uploads"]]
        except RequestError as exc:
            results[i] = {"error": [exc.status_code, exc.detail]}
            continue
        results[i] = {"results": []}
        by_model.setdefault(req["classifier"], []).extend((i, img) for img in images)
    for model, members in by_model.items():
        outs = classify_images(predictors[model], [img for _, img in members], image_sizes[model])
        for (i, _), out in zip(members, outs):
            results[i]["results"].append(out)
    return results


def classify_images(predictor, images: list[np.ndarray], image_size: int) -> list[dict]:
    """Resize each image like ingest does (aspect kept, zero-padded), predict in one batch."""
    batch = np.stack([resize_square(img, image_size, "pad") for img in images])  # (B, S, S) uint8
    out = predictor({"image": batch})
    return [{"probs": p.astype(float).tolist(), "pred": int(k)} for p, k in zip(out["probs"], out["pred"])]
