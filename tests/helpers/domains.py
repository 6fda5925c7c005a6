"""Does a generator condition on the domain? A domain classifier trained on real images of two devices judges it."""

from __future__ import annotations

from busgen.studies.fewshot import fit_domain_classifier, texture_features

CLASSES = ["benign", "malignant"]
DOMAINS = ["dev_a", "dev_b"]


def share_called_b(gen, real_a, real_b, n: int = 24) -> tuple[float, float]:
    """Share of samples the real-trained domain classifier calls device b, under condition a and under b."""
    clf = fit_domain_classifier(real_b, real_a)
    labels = [CLASSES[i % 2] for i in range(n)]
    shares = []
    for d in DOMAINS:
        samples = gen.sample(labels, domains=d, steps=10, seed=1)
        shares.append(float(clf.predict(texture_features(samples)).mean()))
    return shares[0], shares[1]
