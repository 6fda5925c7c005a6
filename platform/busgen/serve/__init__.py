"""Online inference on Ray Serve: one authenticated HTTP API over the generators and the classifier.

Modules, each with one job (import from them directly; this package imports nothing):

- ``config``: ``ServeArgs`` and its parts, the app builder's arguments (operator side).
- ``schemas``: HTTP request/response bodies and the generate-request check (client side).
- ``auth``: where the API token comes from, its digest, ``BearerAuth``.
- ``guards``: upload size, type, pixel-count and dimension checks before decoding.
- ``registry``: model id -> directory and metadata; clients never name a path.
- ``access_log``: one JSON line per request.
- ``batching``: what a model replica does with one batch (plain Python, no Ray).
- ``deployments``: ``GeneratorDeployment`` and ``ClassifierDeployment`` (torch inside replicas only).
- ``ingress``: the FastAPI ``Ingress`` deployment.
- ``preflight``: what the driver checks before Serve starts (folders; CPUs planned to fit the cluster).
- ``app``: ``build_app(args)``, ``args_from_env()``, ``run_local(...)``.

The pure modules (config, schemas, auth, guards, registry, access_log, batching, preflight) import
neither Ray nor torch; ``deployments``, ``ingress`` and ``app`` import Ray Serve.
"""
