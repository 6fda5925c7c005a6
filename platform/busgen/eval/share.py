"""The share filter: a copy of a synthetic set without memorised or copied images, with its audit record.

A command of its own (``busgen share-filter``), not a suite part: it reads one synthetic set
and the generator's real training data, audits every image with the measurements of
`busgen.measure.privacy` and writes the rows that pass plus ``audit.json``.
"""

from __future__ import annotations

from pathlib import Path

from busgen.data.dataset import DatasetError
from busgen.measure.arrays import read_splits


def training_data_of(syn_dir: str | Path) -> tuple[str, str]:
    """(model folder, data fingerprint) of the generator that wrote a synthetic set (adapters: their base model).

    Raises:
        DatasetError: the set has no generation manifest, or its model folder is gone.
    """
    import json

    from busgen.model.generator import ModelLoadError, read_meta, resolve_base

    manifest_fp = Path(syn_dir) / "manifest.json"
    if not manifest_fp.is_file():
        raise DatasetError(f"{syn_dir} has no manifest.json: pass a set written by `busgen generate`")
    model_dir = Path(json.loads(manifest_fp.read_text())["model"])
    try:
        meta = read_meta(model_dir)
        if meta.get("kind") == "adapter":
            model_dir = resolve_base(model_dir, meta)
            meta = read_meta(model_dir)
    except (ModelLoadError, ValueError) as exc:
        raise DatasetError(f"cannot check what the generator of {syn_dir} was trained on: {exc}") from None
    return str(model_dir), str(meta.get("data_fingerprint", ""))


def check_real_is_training_set(syn_dir: str | Path, real_dir: str | Path, split: str | None) -> None:
    """Refuse to audit against data the generator never trained on: the filter would pass real copies.

    Raises:
        DatasetError: ``real_dir`` (its ``split``) differs from the generator's training data.
    """
    from busgen.train.pretrain import read_train_metadata

    model_dir, expected = training_data_of(syn_dir)
    got = read_train_metadata(real_dir)["fingerprint"] if split == "train" else ""
    if not expected or got != expected:
        raise DatasetError(
            f"--real {real_dir} (split {split!r}, data fingerprint {got or 'n/a'}) is not the training data of "
            f"the generator {model_dir} (fingerprint {expected or 'unknown'}): pass the dataset it was pretrained on "
            "with --split train, or --no-check-real if you know better"
        )


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
    thresholds, counts, and the DCR membership attack (members = ``real_dir``'s ``split``,
    non-members = half of its other splits) in pixel and copy-encoder space. The copy encoder
    trains on the other half of those splits (``copy_encoder`` names it); with fewer than 4
    held-out images (or ``split`` None) there is none and the audit is pixel-only.

    Returns:
        The audit.json content: the record, the audit summary, ``rows_in``, ``rows_out`` and ``removed_ids``.
    """
    from busgen.measure.privacy import audit as privacy
    from busgen.measure.privacy import encoder as encoders
    from busgen.measure.privacy.dcr import dcr_membership, split_non_members
    from busgen.measure.privacy.listing import read_set

    if check_real:
        check_real_is_training_set(syn_dir, real_dir, split)
    real = read_splits(real_dir, [split] if split else None, None)[0]
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
    model_dir, model_fp = training_data_of(syn_dir) if (Path(syn_dir) / "manifest.json").is_file() else (None, None)
    dcr = dcr_membership(real, attack_non_members, shared.images, enc) if len(attack_non_members) else None
    record = {
        "inputs": {"synthetic": str(Path(syn_dir).resolve()), "real": str(Path(real_dir).resolve()), "split": split},
        "generator": {"model": model_dir, "data_fingerprint": model_fp},
        "real_check": "matched" if check_real else "overridden (--no-check-real)",
        "copy_encoder": audit.encoder_data or "none: fewer than 4 held-out images, pixel-only audit",
        "dcr_membership": dcr,
        "risk_note": "dcr_membership and memorization measure the shared samples; model weights are not audited here",
    }
    return privacy.share_filter(syn_dir, out_dir, audit, record=record, table=shared.table)
