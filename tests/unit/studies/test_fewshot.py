"""The few-shot sweep: scores per K, a K=0 baseline, results tables."""

from busgen.data.phantom import make_phantom_arrays
from busgen.studies.fewshot import fit_domain_classifier, texture_features


def test_domain_classifier_tells_the_two_phantom_devices_apart():
    a, _, _ = make_phantom_arrays(80, 32, seed=0, style="a")
    b, _, _ = make_phantom_arrays(80, 32, seed=1, style="b")
    clf = fit_domain_classifier(b[:60], a[:60])
    assert clf.predict(texture_features(b[60:])).mean() >= 0.9
    assert clf.predict(texture_features(a[60:])).mean() <= 0.1
