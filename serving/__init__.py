"""BUSGen deploy entry (app.py) and Serve config (config.yaml); the application lives in busgen.serve.app."""
