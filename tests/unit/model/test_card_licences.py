"""Issue 31, "honest model cards": a card carries its training data's licences and citations, the training
settings and a usage snippet that runs, and a non-commercial source makes the weights non-commercial."""

from __future__ import annotations

import pytest
from helpers.models import export_untrained_tiny
from helpers.paths import SHARED_BUSI

from busgen.data import licences
from busgen.data.phantom import write_phantom
from busgen.model import card, generator

BUSI = {"name": "busi128", "license": "cc-by-4.0", "citation": "Al-Dhabyani et al., Data in Brief 28 (2020) 104863"}
UCLM = {"name": "busuclm128", "license": "cc-by-nc-4.0", "citation": "Vallez N. et al., Scientific Data (2025)"}
PHANTOM = {"name": "phantom", "license": "apache-2.0", "citation": ""}


def _card(tmp_path, datasets, training=None):
    meta = {"model_id": "m1", "class_names": ["benign", "malignant"], "domain_names": [], "image_size": 32}
    path = card.write_card(tmp_path, meta | {"datasets": datasets, "training": training or {}})
    return card.read_front_matter(path), path.read_text()


def test_the_shared_readmes_give_busi_cc_by_and_bus_uclm_cc_by_nc_with_their_citations():
    uclm_dir = SHARED_BUSI.parent / "busuclm128"
    if not (SHARED_BUSI / "README.md").exists() or not (uclm_dir / "README.md").exists():
        pytest.skip("shared BUSI / BUS-UCLM copies not found")
    busi, uclm = licences.read_readme(SHARED_BUSI), licences.read_readme(uclm_dir)
    assert busi["license"] == "cc-by-4.0" and "doi:10.1016/j.dib.2019.104863" in busi["citation"]
    assert uclm["license"] == "cc-by-nc-4.0" and "doi:10.1038/s41597-025-04562-3" in uclm["citation"]


def test_the_licence_in_bold_wins_over_mirrors_named_first(tmp_path):
    (tmp_path / "README.md").write_text(
        "# Data\n\n- Licence: the Kaggle mirror lists CC0 1.0.\n  Treat it as **CC BY 4.0 (attribution)**.\n"
        "- Citation: A. Author. A dataset.\n  Journal 1 (2020).\n\n## Contents\n"
    )
    found = licences.read_readme(tmp_path)
    assert found == {"license": "cc-by-4.0", "citation": "A. Author. A dataset. Journal 1 (2020)."}
    assert licences.read_readme(tmp_path / "none") == {"license": "unknown", "citation": ""}


def test_busi_only_weights_are_cc_by_and_cite_busi(tmp_path):
    fm, text = _card(tmp_path, [BUSI])
    assert fm["license"] == "cc-by-4.0" and fm["datasets"] == ["busi128"]
    assert "| busi128 | cc-by-4.0 | Al-Dhabyani et al., Data in Brief 28 (2020) 104863 |" in text
    assert "Non-commercial" not in text


def test_any_cc_by_nc_source_makes_the_card_non_commercial(tmp_path):
    fm, text = _card(tmp_path, [BUSI, UCLM])
    assert fm["license"] == "cc-by-nc-4.0" and fm["datasets"] == ["busi128", "busuclm128"]
    assert "**Non-commercial use only.**" in text and "CC BY-NC 4.0" in text and "Vallez N. et al." in text


def test_phantom_only_weights_stay_apache(tmp_path):
    fm, text = _card(tmp_path, [PHANTOM])
    assert fm["license"] == "apache-2.0" and "Apache-2.0" in text.split("## Licence")[1]


def test_unrecorded_training_data_is_said_not_guessed(tmp_path):
    fm, text = _card(tmp_path, [])
    assert fm["license"] == "other" and fm["license_name"] == "training-data-terms-not-recorded"
    assert "was not recorded" in text and "datasets" not in fm
    fm, _ = _card(tmp_path, [BUSI, {"name": "mystery", "license": "unknown", "citation": ""}])
    assert fm["license"] == "other"


def test_the_phantom_folder_states_its_licence_for_ingest(tmp_path):
    src = write_phantom(tmp_path / "phantom", 6, size=16)
    assert licences.dataset_record("phantom", src) == PHANTOM


def test_the_card_lists_training_settings_and_its_python_snippet_runs(tmp_path):
    model = export_untrained_tiny(tmp_path / "model")
    meta = generator.read_meta(model) | {"datasets": [PHANTOM], "training": {"batch_size": 16, "max_steps": 600}}
    text = card.write_card(model, meta).read_text()
    assert "* batch_size: 16" in text and "* max_steps: 600" in text
    snippet = text.split("```python\n")[1].split("```")[0].replace("<this folder>", str(model))
    snippet = snippet.replace("steps=25", "steps=2")  # the same call, fewer denoising steps
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102 -- the card's own snippet, as a user would paste it
    assert scope["images"].shape == (4, 32, 32) and str(scope["images"].dtype) == "uint8"
