"""Test helpers, imported one way: ``from helpers.<module> import ...`` (``tests/`` is on pytest's pythonpath).

paths (the repository and shared data), data (small Parquet and DICOM sets), models (random-weight
exports), serve (a loopback Serve app), architecture (the layer table and docs/ARCHITECTURE.md).
"""
