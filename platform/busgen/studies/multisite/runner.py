"""Orchestration of the multi-site protocol: prepare generators, adapters and synthetic sets, evaluate each variant.

Every stage writes into ``cfg.work`` and is skipped when its output exists (a generator or
adapter folder with ``busgen.json``, a synthetic set whose shards tile it, a K-real dataset
with ``kreal.json``, a suite folder with ``results.json``), so an interrupted run resumes
where it stopped. Classifier training, fidelity and privacy are `busgen.eval.runner.run_suite`
per variant, with the *K-real* dataset as its real data: T's K support rows per class as the
train split (the very rows the adapter trained on, checked by hash), T's test split, and as
the val split (early stopping, the Youden threshold) K rows per class of T's val split for an
integer K (`cap_val`; the rest of val is kept as ``val_heldout`` for fidelity and privacy only)
or T's whole val split for ``all``. The cross-site test is a copy of S's test split alone
(`Stages.cross_site`), whatever ``utility.external_split`` says. The ``real T+S`` control
trains on T's and S's real train splits (`Stages.real_pair`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from busgen.core.timings import Timings
from busgen.data import dataset as data
from busgen.data import schema
from busgen.eval import build
from busgen.eval.results import EvalResult
from busgen.eval.runner import run_suite
from busgen.eval.suites import SuiteConfig
from busgen.studies.multisite import report
from busgen.studies.multisite.config import ALL, CROSS_SITE_SPLIT, JOINT, MultisiteConfig, Shots
from busgen.studies.multisite.plan import Variant, generators_needed, plan

KREAL_JSON = "kreal.json"
PAIR_JSON = "real_pair.json"
CROSS_JSON = "cross_site.json"
TIMINGS_JSON = "timings.json"
VAL_REST = "val_heldout"  # T's val rows a K-shot dataset does not validate on (fidelity / privacy reference only)


class MultisiteError(ValueError):
    """The protocol cannot run as configured; the message names the site, class or folder and the remedy."""


# ----------------------------------------------------------------------------- sites and checks


def site_domain(site: str, path: str) -> str:
    """The one domain name of a site's dataset (what generators are conditioned on)."""
    domains = sorted(set(data.read_table(path, [schema.DOMAIN]).column(schema.DOMAIN).to_pylist()))
    if len(domains) != 1:
        raise MultisiteError(f"site {site!r} ({path}) holds domains {domains}: give one single-domain dataset per site")
    return domains[0]


def train_counts(path: str, classes: list[str]) -> dict[str, int]:
    labels = data.read_table(path, [schema.LABEL], split="train").column(schema.LABEL).to_pylist()
    return {c: labels.count(c) for c in classes}


def check_shots(cfg: MultisiteConfig) -> dict[str, dict[str, int]]:
    """Target -> class -> train count; a K above any count is an error naming the class (never clipped)."""
    counts = {t: train_counts(cfg.sites[t], cfg.classes) for t in cfg.target_sites}
    for t, by_class in counts.items():
        for k in (k for k in cfg.shots if k != ALL):
            short = {c: n for c, n in by_class.items() if n < k}
            if short:
                c, n = next(iter(short.items()))
                raise MultisiteError(
                    f"K={k} labelled images per class, but class {c!r} of target {t!r} has {n} training images "
                    f"({cfg.sites[t]}): lower shots to at most {min(by_class.values())} or use {ALL!r}"
                )
    return counts


def support_shots(shots: Shots, counts: dict[str, int]) -> int:
    """K per class for the adapter: K itself, or for ``all`` the largest balanced K (the smallest class)."""
    return min(counts.values()) if shots == ALL else int(shots)


def cap_val(val: pa.Table, shots: int, classes: list[str], seed: int, exclude: set[str]) -> pa.Table:
    """At most K rows per class of a val split, seeded, none of them in ``exclude`` (the support set's sha256).

    The rows not picked come back relabelled ``val_heldout``: classifiers never validate on them. Rows are
    sorted by sha256 before the seeded draw (independent of Parquet file order), as `select_support` does.

    Returns:
        The val table with a ``split`` of ``val`` (at most K per class) or ``val_heldout`` on every row.
    """
    import numpy as np

    labels = val.column(schema.LABEL).to_pylist()
    hashes = val.column(schema.SHA256).to_pylist()
    rng = np.random.default_rng([seed, 1])  # its own stream: never the support draw's
    keep: set[int] = set()
    for c in classes:
        rows = sorted((i for i, x in enumerate(labels) if x == c and hashes[i] not in exclude), key=hashes.__getitem__)
        keep |= {rows[int(j)] for j in rng.permutation(len(rows))[:shots]}
    field = val.schema.field(schema.SPLIT)
    split = pa.array(["val" if i in keep else VAL_REST for i in range(val.num_rows)]).cast(field.type)
    return val.set_column(val.schema.get_field_index(schema.SPLIT), field, split)


def val_counts(path: str, classes: list[str]) -> dict[str, int]:
    """Class -> images of a dataset's val split: what its classifiers early-stop and pick thresholds on."""
    labels = data.read_table(path, [schema.LABEL], split="val").column(schema.LABEL).to_pylist()
    return {c: labels.count(c) for c in classes}


# ----------------------------------------------------------------------------- stages


class Stages:
    """The run's resumable stages; ``timings`` (stage -> seconds) persist across resumed runs."""

    def __init__(self, cfg: MultisiteConfig):
        self.cfg = cfg
        self.work = cfg.work
        self.work.mkdir(parents=True, exist_ok=True)
        self.clock = Timings(tag="multisite", path=self.work / TIMINGS_JSON)
        self.domains = {s: site_domain(s, p) for s, p in cfg.sites.items()}

    @property
    def timings(self) -> dict[str, float]:
        return self.clock.seconds

    # -- data

    def joint_dir(self) -> str:
        """The combined dataset of both sites (combined here unless ``joint_dir`` is given)."""
        if self.cfg.joint_dir:
            return str(Path(self.cfg.joint_dir).resolve())
        out = self.work / "data" / JOINT
        if not (out / "dataset.json").is_file():
            from busgen.data.combine import CombineConfig, combine

            self.clock.timed("combine", combine, CombineConfig(inputs=list(self.cfg.sites.values()), out=str(out)))
        return str(out)

    def kreal(self, target: str, shots: Shots) -> tuple[str, set[str]]:
        """The K-real dataset of (T, K) and its support hashes: K rows per class of T's train, T's val and test.

        For an integer K the val split is capped at K rows per class (`cap_val`): a K-shot arm sees no
        more labels of T than K per class for training and as many again for validation.
        """
        from busgen.train.adapt import select_support

        out = self.work / "kreal" / f"{target}-k{shots}"
        marker = out / KREAL_JSON
        src = self.cfg.sites[target]
        val_cap = ALL if shots == ALL else int(shots)
        if marker.is_file():
            record = json.loads(marker.read_text())
            if "val_per_class" not in record:
                raise MultisiteError(
                    f"{out} was made by an earlier protocol (its classifiers validated on T's whole val split): "
                    f"use another work_dir, or delete {self.work / 'kreal'} and {self.work / 'suites'} to re-run "
                    "the evaluations"
                )
            if Path(record["dataset"]).resolve() != Path(src).resolve() or record["seed"] != self.cfg.support_seed:
                raise MultisiteError(
                    f"{out} was made from {record['dataset']} with seed {record['seed']}, not from {src} with "
                    f"seed {self.cfg.support_seed}: use another work_dir, or delete it to start over"
                )
            return str(out), set(record["support_sha256"])
        if shots == ALL:
            train = data.read_table(src, split="train", classes=self.cfg.classes)
        else:
            train = select_support(src, int(shots), self.cfg.classes, self.cfg.support_seed)
        hashes = sorted(train.column(schema.SHA256).to_pylist())
        val = data.read_table(src, split="val", classes=self.cfg.classes).select(train.column_names)
        if shots != ALL:
            val = cap_val(val, int(shots), self.cfg.classes, self.cfg.support_seed, set(hashes))
        test = data.read_table(src, split="test", classes=self.cfg.classes).select(train.column_names)
        out.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables([train, val, test]), out / "part-00000.parquet")
        record = {"site": target, "dataset": src, "shots": shots, "seed": self.cfg.support_seed}
        record |= {"val_per_class": val_cap, "val_counts": val_counts(str(out), self.cfg.classes)}
        marker.write_text(json.dumps(record | {"support_sha256": hashes}, indent=2))
        return str(out), set(hashes)

    def real_pair(self, target: str, source: str) -> str:
        """The ``real T+S`` dataset: T's and S's real train splits as train, T's whole val and test."""
        out = self.work / "real_pair" / f"{target}+{source}"
        marker = out / PAIR_JSON
        t_dir, s_dir = (str(Path(self.cfg.sites[x]).resolve()) for x in (target, source))
        record = {"target": t_dir, "source": s_dir, "classes": self.cfg.classes}
        if marker.is_file():
            if json.loads(marker.read_text()) != record:
                raise MultisiteError(f"{out} was made from other sites or classes: use another work_dir or delete it")
            return str(out)
        t_rows = data.read_table(t_dir, classes=self.cfg.classes)
        s_train = data.read_table(s_dir, split="train", classes=self.cfg.classes)
        missing = sorted(set(t_rows.column_names) - set(s_train.column_names))
        if missing:
            raise MultisiteError(f"site {source!r} ({s_dir}) lacks columns {missing} of {target!r}: re-ingest it")
        out.mkdir(parents=True, exist_ok=True)
        table = pa.concat_tables([t_rows, s_train.select(t_rows.column_names).cast(t_rows.schema)])
        pq.write_table(table, out / "part-00000.parquet")
        marker.write_text(json.dumps(record, indent=2))
        return str(out)

    def cross_site(self, source: str) -> str:
        """A copy of S's test split alone: the cross-site test set, which no setting can widen to S's train rows."""
        out = self.work / "cross_site" / source
        src = str(Path(self.cfg.sites[source]).resolve())
        if not (out / CROSS_JSON).is_file() or json.loads((out / CROSS_JSON).read_text())["dataset"] != src:
            out.mkdir(parents=True, exist_ok=True)
            pq.write_table(data.read_table(src, split=CROSS_SITE_SPLIT), out / "part-00000.parquet")
            (out / CROSS_JSON).write_text(json.dumps({"dataset": src, "split": CROSS_SITE_SPLIT}, indent=2))
        return str(out)

    # -- generators

    def generator(self, key: str) -> str | None:
        """A pretrained generator (site or joint): the given folder, or pretrained here on that data.

        None when the folder has no model yet and the suite has no ``pretrain`` section: the
        variants that need it are reported as pending (a later run picks them up).
        """
        from busgen.train.pretrain import PretrainConfig

        out = Path(self.cfg.models.get(key) or self.work / "generators" / key).resolve()
        if not build.is_model(out) and (self.cfg.pretrain is None or self.cfg.report_only):
            print(f"[multisite] generator {key!r} not found at {out} (nothing is trained here): skipping its variants")
            return None

        def pretrain_config() -> PretrainConfig:
            data_dir = self.joint_dir() if key == JOINT else self.cfg.sites[key]
            p = self.cfg.pretrain
            if p.image_size is None:
                p = p.model_copy(update={"image_size": data.dataset_info(data_dir).get("image_size") or 64})
            return PretrainConfig(
                **p.model_dump(),
                data_dir=str(Path(data_dir).resolve()),
                storage_path=str(self.work / "ray_runs"),
                run_name=f"{self.cfg.name}-pretrain-{key}",
                out=str(out),
            )

        return build.generator(out, pretrain_config, self.clock, f"pretrain:{key}")

    def adapted(self, v: Variant, base: str, support: set[str], counts: dict[str, int]) -> str:
        """The source generator adapted to T with (T, K)'s support set; its support hashes must match."""
        from busgen.train.adapt import AdaptConfig, support_hashes

        out = self.work / "adapted" / f"{v.target}-{v.label}-k{v.shots}"
        acfg = AdaptConfig(
            **self.cfg.adapt.model_dump(),
            base=base,
            data_dir=str(Path(self.cfg.sites[v.target]).resolve()),
            out=str(out),
            shots=support_shots(v.shots, counts),
            method=v.label,
            classes=self.cfg.classes,
            storage_path=str(self.work / "ray_runs"),
            run_name=f"{self.cfg.name}-adapt-{v.key}",
            seed=self.cfg.support_seed,
        )
        build.adapter(acfg, self.clock, f"adapt:{v.key}")
        got = support_hashes(out)
        if (v.shots != ALL and got != support) or not got <= support:
            raise MultisiteError(
                f"the adapter {out} trained on another support set than the K-real dataset of {v.target} K={v.shots}: "
                f"delete {out} (and {self.work / 'kreal'}) and re-run"
            )
        return str(out)

    def synthetic(self, name: str, model: str, sites: tuple[str, ...]) -> str:
        """A synthetic set of the suite's classes (uniform) under the given sites' domain conditions."""
        from busgen.generate.shards import GenerateConfig

        gcfg = GenerateConfig(
            **self.cfg.generate.model_dump(),
            model=model,
            out=str(self.work / "synthetic" / name),
            class_ratio={c: 1.0 for c in self.cfg.classes},
            domain_ratio={self.domains[s]: 1.0 for s in sites},
        )
        return build.synthetic_set(gcfg, self.clock, f"generate:{name}")

    # -- evaluation

    def suite_config(self, v: Variant, real_dir: str, model: str | None, syn_dir: str | None) -> SuiteConfig:
        """The `run_suite` spec of one variant: its real arm, T test + S's test split (+ external sets), parts."""
        cfg = self.cfg
        external = {v.source: self.cross_site(v.source)}
        clash = set(external) & set(cfg.utility.external_test)
        if clash:
            raise MultisiteError(f"utility.external_test names {sorted(clash)}, which are sites; rename them")
        external |= cfg.utility.external_test
        parts = syn_dir is not None and (not v.is_augmentation or cfg.fidelity_privacy_on_augmentation)
        # the generator's own T images are the members: the support set (adapted) or T's train split
        members = None if v.method else str(Path(cfg.sites[v.target]).resolve())
        rest = [VAL_REST] if v.caps_val else []  # T's val rows the classifiers do not see stay reference images
        utility = cfg.utility.model_copy(update={"external_test": external})
        if v.is_real_pair:  # real images only: one arm
            utility = utility.model_copy(update={"ratios": [0], "synthetic_only": False})
        fidelity, privacy = cfg.fidelity, cfg.privacy
        return SuiteConfig(
            name=f"{cfg.name}-{v.key}",
            real_dir=real_dir,
            model=model,
            synthetic_dir=syn_dir,
            out=str(self.work / "suites" / v.key),
            classes=cfg.classes,
            positive=cfg.positive,
            utility=utility,
            fidelity=fidelity.model_copy(
                update={"enabled": fidelity.enabled and parts, "real_splits": fidelity.real_splits + rest}
            ),
            privacy=privacy.model_copy(
                update={
                    "enabled": privacy.enabled and parts,
                    "member_dir": members,
                    "heldout_splits": privacy.heldout_splits + rest,
                }
            ),
            resources_per_trial=cfg.resources_per_trial,
            max_concurrent_trials=cfg.max_concurrent_trials,
            torch_threads=cfg.torch_threads,
            dry_run=cfg.dry_run,
            tracking=cfg.tracking,
        )

    def suite(self, v: Variant, real_dir: str, model: str | None, syn_dir: str | None) -> EvalResult:
        """`run_suite` for one variant (reused when its folder holds a result)."""
        out = self.work / "suites" / v.key
        if (out / "results.json").is_file():
            return EvalResult.read(out)
        return self.clock.timed(f"evaluate:{v.key}", run_suite, self.suite_config(v, real_dir, model, syn_dir))


# ----------------------------------------------------------------------------- run


def run_multisite(cfg: MultisiteConfig) -> dict:
    """Run every variant of the protocol; writes the report folder and returns its summary."""
    from busgen.core.raylocal import init_ray

    cfg = cfg.shrunk() if cfg.dry_run else cfg
    t0 = time.time()
    variants = plan(cfg)
    counts = check_shots(cfg)  # before any training: a K no target can give fails now, not after hours
    init_ray()
    st = Stages(cfg)
    gens = {key: st.generator(key) for key in generators_needed(cfg, variants)}
    results: list[tuple[Variant, EvalResult, str]] = []
    pending: list[str] = []
    for v in variants:
        needs = v.source if v.method else v.generator
        if needs is not None and gens[needs] is None:
            pending.append(f"{v.key} (generator {needs!r} missing)")
            continue
        if cfg.report_only and not (st.work / "suites" / v.key / "results.json").is_file():
            pending.append(f"{v.key} (not finished)")
            continue
        if v.is_real_pair:
            results.append((v, st.suite(v, st.real_pair(v.target, v.source), None, None), None))
            continue
        real_dir, support = st.kreal(v.target, v.shots)
        if v.method:
            model = st.adapted(v, gens[v.source], support, counts[v.target])
            syn_name = f"{v.target}-{v.label}-k{v.shots}"
        else:
            model = gens[v.generator]
            syn_name = f"{v.generator}-at-{'+'.join(v.domains)}"
        syn_dir = st.synthetic(syn_name, model, v.domains)
        results.append((v, st.suite(v, real_dir, model, syn_dir), syn_dir))
    seconds = round(time.time() - t0, 1)
    return report.write(cfg, st.domains, counts, results, st.timings, seconds, pending)
