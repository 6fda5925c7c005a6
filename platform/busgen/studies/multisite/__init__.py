"""The multi-site protocol: target-only vs foundation + few-shot vs joint generators, tested in-site and cross-site.

`config.MultisiteConfig` is the suite spec (``platform/busgen/configs/multisite*.yaml``), `plan` lists the
generator variants, `runner.run_multisite` runs them (each evaluation through
`busgen.eval.runner.run_suite`) and `report` writes the table, the AUC-vs-K plot and the
sample grids per domain.
"""
