"""busgen.eval.privacy."""
