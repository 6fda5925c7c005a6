"""Test and benchmark fixtures that ship with the package: nothing in the pipeline imports them.

models (random-weight exports for plumbing and throughput checks), training (a briefly trained
phantom model for quality guards, in-process, no Ray) and noop (the Serve deployment shape
with the work taken out: the framework's own ceiling). They live in the package so that
benchmarks on a bare GPU machine can import them without the tests folder.
"""
