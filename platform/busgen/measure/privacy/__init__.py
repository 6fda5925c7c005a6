"""Privacy measurements: memorisation audit, copy-detection encoder, DCR and denoising-error membership attacks."""
