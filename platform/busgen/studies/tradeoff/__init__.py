"""CPSample's privacy-utility trade-off: `run` sweeps the protection strength, `report` writes its table and plot."""
