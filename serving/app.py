"""Deploy entry for ``serve run serving.app:...``; the application itself is ``busgen.serve.app``.

Kept so existing commands still work from a repository checkout::

    serve run serving.app:build_app generators=base=/models/base classifier_dir=/models/clf
    BUSGEN_GENERATORS=base=/models/base serve run serving.app:app

``serving/config.yaml`` imports ``busgen.serve.app:build_app`` directly, so a cluster
with the package installed needs nothing from this folder.
"""

from busgen.serve.app import args_from_env, build_app

__all__ = ["app", "build_app"]

_env = args_from_env()  # None without $BUSGEN_GENERATORS: importing this module then builds nothing
app = build_app(_env) if _env is not None else None
