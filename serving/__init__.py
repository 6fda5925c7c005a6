"""BUSGen online inference: Ray Serve application (app.py) and its Serve config (config.yaml)."""
