"""busgen.model."""
