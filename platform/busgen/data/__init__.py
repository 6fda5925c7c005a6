"""busgen.data.dataset."""
