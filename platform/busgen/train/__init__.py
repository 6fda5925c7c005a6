"""busgen.train.pretrain."""
