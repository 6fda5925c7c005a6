"""busgen.serve.api."""
