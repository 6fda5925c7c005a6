"""The generator variants of a multi-site run, one evaluation each, in the order they run.

For every target site T (source S = the other site) and every K:

* ``target-only``: the generator trained on T's train split alone (the baseline);
* ``lora`` / ``full``: the S generator adapted to T with the K-shot support set;
* ``joint``: the generator trained on S u T, sampled under T's domain;

each evaluated with the K real support images as the real arm. Then, with all of T's
train split, the device-type augmentation arms: the joint generator sampled under S's
domain (``aug:S``), under every known domain (``aug:all``) and under T's (``aug:T``, the
same-domain control), each tested on S's test split too, beside the control ``real T+S``: a
classifier on T's and S's real labelled train images, no generator, which tells "device-type
augmentation helps cross-site" apart from "S's labelled images help".

K-shot evaluations (K an integer) early-stop and pick their threshold on K images per class of
T's val split (`busgen.studies.multisite.runner.cap_val`), never on the whole val split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from busgen.studies.multisite.config import ALL, JOINT, MultisiteConfig, Shots

TARGET_ONLY, JOINT_LABEL = "target-only", "joint"
AUGMENT = "aug"
REAL_TS = "real T+S"  # the real-data control of the augmentation arms (no generator)


@dataclass(frozen=True)
class Variant:
    """One evaluation: which generator, sampled under which domains, with which K real images."""

    target: str  # site T
    source: str  # site S
    label: str  # target-only | lora | full | joint | aug:<domain or all> | real T+S
    shots: Shots  # K real images per class in the real arm ("all" = T's whole train split)
    generator: str | None  # site name or "joint" (pretrained), "adapted" (lora/full), None (real T+S)
    domains: tuple[str, ...] = ()  # sites whose domain conditions the synthetic set is sampled under

    @property
    def method(self) -> str | None:
        return self.label if self.label in ("lora", "full") else None

    @property
    def is_augmentation(self) -> bool:
        return self.label.startswith(AUGMENT)

    @property
    def is_real_pair(self) -> bool:
        """The ``real T+S`` control: T's and S's real train images, no synthetic set."""
        return self.label == REAL_TS

    @property
    def caps_val(self) -> bool:
        """A K-shot evaluation: its classifiers validate on K images per class of T's val split."""
        return self.shots != ALL

    @property
    def key(self) -> str:
        """Folder-safe id, unique in the run: ``<T>-<label>-k<K>``, e.g. ``busi-aug_uclm-kall``, ``x-real_T_S-kall``."""
        return f"{self.target}-{re.sub(r'[^A-Za-z0-9-]+', '_', self.label)}-k{self.shots}"


def plan(cfg: MultisiteConfig) -> list[Variant]:
    """Every evaluation of the run (cheap ones first per target, so partial runs still have baselines)."""
    out: list[Variant] = []
    for t in cfg.target_sites:
        s = cfg.source_of(t)
        for k in cfg.shots:
            if "target_only" in cfg.variants:
                out.append(Variant(t, s, TARGET_ONLY, k, t, (t,)))
            if "foundation" in cfg.variants:
                out += [Variant(t, s, m, k, "adapted", (t,)) for m in cfg.methods]
            if "joint" in cfg.variants:
                out.append(Variant(t, s, JOINT_LABEL, k, JOINT, (t,)))
        if cfg.augmentation:
            out += [
                Variant(t, s, f"{AUGMENT}:{s}", ALL, JOINT, (s,)),
                Variant(t, s, f"{AUGMENT}:all", ALL, JOINT, tuple(sorted(cfg.sites))),
                Variant(t, s, f"{AUGMENT}:{t}", ALL, JOINT, (t,)),
            ]
        if cfg.real_target_source:
            out.append(Variant(t, s, REAL_TS, ALL, None))
    return out


def generators_needed(cfg: MultisiteConfig, variants: list[Variant]) -> list[str]:
    """Pretrained generators the variants use: target sites, source sites (adapted from) and the joint one."""
    keys: set[str] = set()
    for v in variants:
        if v.generator is not None:
            keys.add(v.source if v.generator == "adapted" else v.generator)
    return sorted(keys - {JOINT}) + [JOINT] * (JOINT in keys)
