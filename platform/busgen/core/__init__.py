"""The core stage.

What every stage shares: typed config loading, command-line words, storage paths and URIs, the local
Ray runtime, MLflow tracking and the stage timer. Imports nothing else of busgen.
"""
