"""The generate stage.

Synthetic sets with Ray Data as deterministic, resumable Parquet shards, their plan, lock, tiling
check and store.
"""
