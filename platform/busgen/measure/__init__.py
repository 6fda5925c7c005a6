"""Measurements: tensors or arrays in, numbers out.

metrics (AUC and friends with bootstrap and t intervals), stats (seed-paired Δ intervals and
power for the utility study), fidelity (FID/KID/PRDC, MS-SSIM
diversity), classify (the downstream diagnosis classifier), arrays (datasets read into
memory) and privacy/ (memorisation audit, copy encoder, DCR and denoising-error membership
attacks). Imports only core, data and model: suites (`busgen.eval`) and studies
(`busgen.studies`) are built on top of it, never the other way round.
"""
