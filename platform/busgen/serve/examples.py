"""Example inputs for the playground: phantom scans to try the classifier on without patient data.

The phantoms are ``busgen.data.phantom``'s simulated B-mode images (speckle, tissue
layers, a lesion for benign and malignant), one per class, the same on every server: a
newcomer can press a button instead of finding a scan, and nothing identifies a patient.
They are test patterns, so a classifier trained on real scans may call them anything; the
page says so.
"""

from __future__ import annotations

import base64

EXAMPLE_SIZE = 128  # pixels: large enough to show the speckle, small enough to send inline
EXAMPLE_SEED = 7


def phantom_examples(size: int = EXAMPLE_SIZE, seed: int = EXAMPLE_SEED) -> list[dict]:
    """One phantom per class: ``{"name", "label", "kind": "phantom", "image": base64 PNG}``."""
    from busgen.data.imageio import encode_png
    from busgen.data.phantom import CLASSES, make_phantom_arrays  # scipy: loaded on first use only

    images, _, labels = make_phantom_arrays(len(CLASSES), size, seed=seed)
    return [
        {
            "name": f"phantom-{label}.png",
            "label": label,
            "kind": "phantom",
            "image": base64.b64encode(encode_png(image)).decode("ascii"),
        }
        for image, label in zip(images, labels)
    ]
