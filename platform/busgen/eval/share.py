"""The share filter: a copy of a synthetic set without memorised or copied images, with its audit record.

A command of its own (``busgen share-filter``), not a suite part: it reads one synthetic set
and the generator's real training data (for an adapted generator: its base model's data, and
the support set from the model folder; `busgen.train.provenance`), audits every image with the measurements of
`busgen.measure.privacy` and writes the rows that pass plus ``audit.json``.
"""

from __future__ import annotations

from pathlib import Path

from busgen.data.dataset import DatasetError
from busgen.measure.arrays import read_splits


def training_data_of(syn_dir: str | Path):
    """What the generator that wrote a synthetic set trained on (`busgen.train.provenance.TrainingData`).

    Raises:
        DatasetError: the set has no generation manifest, or its model folder is gone or incomplete.
    """
    import json

    from busgen.train.provenance import ProvenanceError, training_data

    manifest_fp = Path(syn_dir) / "manifest.json"
    if not manifest_fp.is_file():
        raise DatasetError(f"{syn_dir} has no manifest.json: pass a set written by `busgen generate`")
    try:
        return training_data(json.loads(manifest_fp.read_text())["model"])
    except ProvenanceError as exc:
        raise DatasetError(f"cannot check what the generator of {syn_dir} was trained on: {exc}") from None


def check_real_is_training_set(syn_dir: str | Path, real_dir: str | Path, split: str | None) -> str:
    """Refuse to audit against data the generator never trained on: the filter would pass real copies.

    ``real_dir`` must be the (base model's) training data; an adapted generator's support
    set is added to the members by ``share_filter_dir``. Returns the verdict recorded.

    Raises:
        DatasetError: ``real_dir`` (its ``split``) differs from the generator's (base) training data.
    """
    from busgen.train.provenance import ProvenanceError, check_base_data

    try:
        return check_base_data(training_data_of(syn_dir), real_dir, split, "--no-check-real")
    except ProvenanceError as exc:
        raise DatasetError(f"--real {exc}") from None


def members_of(syn_dir: str | Path, real_dir: str | Path, split: str | None, check_real: bool) -> tuple:
    """(member images, record): what the generator saw, or exactly ``--real`` when the check is overridden."""
    from busgen.train.provenance import read_support, unite

    real = read_splits(real_dir, [split] if split else None, None)
    if not check_real:
        return real[0], {"real_check": "overridden (--no-check-real)", "rule": "exactly --real", "support_added": 0}
    verdict = check_real_is_training_set(syn_dir, real_dir, split)
    td = training_data_of(syn_dir)
    (images, *_), added = unite(real, read_support(td))
    rule = "--real + the support set" if td.adapted else "--real (the generator's training data)"
    return images, {"real_check": verdict, "rule": rule, "support_added": added, "generator": td.describe()}


def share_filter_dir(
    syn_dir: str | Path,
    real_dir: str | Path,
    out_dir: str | Path,
    split: str | None = "train",
    encoder_epochs: int = 30,
    seed: int = 0,
    check_real: bool = True,
) -> dict:
    """Audit a synthetic set against the generator's real training images and write a filtered copy.

    Composes `busgen.measure.privacy.audit.audit_memorization` and `busgen.measure.privacy.audit.share_filter` over
    one listing of the set (`busgen.measure.privacy.listing.read_set`): the copy holds every row
    that is neither a pixel copy nor a memorised near-copy, plus ``audit.json``, the audit
    record: inputs, fingerprints, whether the real-data check ran or was overridden,
    thresholds, counts, and the DCR membership attack (members = ``real_dir``'s ``split``, plus an
    adapted generator's support set unless the check is overridden; non-members = half of its
    other splits) in pixel and copy-encoder space. The copy encoder trains on the other half of
    those splits (``copy_encoder`` names it); with fewer than 4 held-out images (or ``split``
    None) there is none and the audit is pixel-only.

    Returns:
        The audit.json content: the record, the audit summary, ``rows_in``, ``rows_out`` and ``removed_ids``.
    """
    from busgen.measure.privacy import audit as privacy
    from busgen.measure.privacy import encoder as encoders
    from busgen.measure.privacy.dcr import dcr_membership, split_non_members
    from busgen.measure.privacy.listing import read_set

    real, members = members_of(syn_dir, real_dir, split, check_real)
    shared = read_set(syn_dir)
    held = [s for s in ("train", "val", "test") if s != split] if split else []
    non_members = encoders.disjoint_images(read_splits(real_dir, held, None)[0], real) if held else real[:0]
    # One half of the non-members trains the copy encoder, the other is the DCR attack's non-members:
    # the encoder must know neither the members it audits nor the images the attack scores.
    enc_images, attack_non_members = split_non_members(non_members, seed)
    enc = None
    if len(enc_images) >= 2:
        enc = encoders.train_copy_encoder(
            enc_images,
            epochs=encoder_epochs,
            seed=seed,
            cfg=encoders.CopyEncoderConfig(image_size=real.shape[-1]),
            data=f"half of splits {'+'.join(held)} of {Path(real_dir).resolve()}",
        )
    audit = privacy.audit_memorization(shared.images, real, enc, syn_ids=shared.ids)
    if "generator" not in members:  # overridden: describe the generator when it can be found, without refusing
        try:
            members["generator"] = training_data_of(syn_dir).describe()
        except DatasetError:
            members["generator"] = {"model": None}
    dcr = dcr_membership(real, attack_non_members, shared.images, enc) if len(attack_non_members) else None
    record = {
        "inputs": {"synthetic": str(Path(syn_dir).resolve()), "real": str(Path(real_dir).resolve()), "split": split},
        "generator": members["generator"],
        "real_check": members["real_check"],
        "members": {"images": len(real), "support_added": members["support_added"], "rule": members["rule"]},
        "copy_encoder": audit.encoder_data or "none: fewer than 4 held-out images, pixel-only audit",
        "dcr_membership": dcr,
        "risk_note": "dcr_membership and memorization measure the shared samples; model weights are not audited here",
    }
    return privacy.share_filter(syn_dir, out_dir, audit, record=record, table=shared.table)
