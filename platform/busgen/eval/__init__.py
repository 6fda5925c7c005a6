"""busgen.eval."""
