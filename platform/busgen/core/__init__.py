"""busgen.core."""
