"""busgen.generate.shards."""
