"""Markdown reports with PNG figures: dataset reports, sample grids, plots.

Reports are plain files (``report.md`` plus ``*.png``) so they render on GitHub,
in a notebook, or in any Markdown viewer, and are easy to diff across runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw


def image_grid(rows: Mapping[str, np.ndarray], cell: int = 64, pad: int = 2, label_width: int = 80) -> Image.Image:
    """Tile uint8 images into one picture: one row per key, the key written on the left.

    Args:
        rows: row name -> uint8 array (N, H, W).
        cell: side of each tile in pixels (images are resized to it).
        pad: gap between tiles.
        label_width: width of the text column.
    """
    ncols = max((len(v) for v in rows.values()), default=1) or 1
    width = label_width + ncols * (cell + pad)
    height = max(1, len(rows)) * (cell + pad)
    canvas = Image.new("L", (width, height), color=255)
    draw = ImageDraw.Draw(canvas)
    for r, (name, images) in enumerate(rows.items()):
        y = r * (cell + pad)
        draw.text((4, y + cell // 2 - 6), str(name)[:12], fill=0)
        for c, img in enumerate(images):
            tile = Image.fromarray(np.asarray(img, dtype=np.uint8)).resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (label_width + c * (cell + pad), y))
    return canvas


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


class Report:
    """Accumulates Markdown sections and figures, then writes ``report.md`` into a folder."""

    def __init__(self, out_dir: str | Path, title: str):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.parts = [f"# {title}", "", f"_Generated {time.strftime('%Y-%m-%d %H:%M:%S')}_", ""]

    def section(self, title: str, text: str = "") -> "Report":
        self.parts += [f"## {title}", "", text, ""] if text else [f"## {title}", ""]
        return self

    def text(self, text: str) -> "Report":
        self.parts += [text, ""]
        return self

    def table(self, header: Sequence[str], rows: Sequence[Sequence]) -> "Report":
        self.parts += [markdown_table(header, rows), ""]
        return self

    def figure(self, name: str, image: Image.Image, caption: str = "") -> "Report":
        path = self.out_dir / name
        image.save(path)
        self.parts += [f"![{caption or name}]({name})", ""]
        return self

    def plot(self, name: str, fig, caption: str = "") -> "Report":
        """Save a matplotlib figure as PNG and reference it."""
        fig.savefig(self.out_dir / name, dpi=100, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        self.parts += [f"![{caption or name}]({name})", ""]
        return self

    def write(self, name: str = "report.md") -> Path:
        path = self.out_dir / name
        path.write_text("\n".join(self.parts))
        return path


def dataset_report(dataset_dir: str | Path, out_dir: str | Path, per_class: int = 8, seed: int = 0) -> Path:
    """Counts per split and class, domains, quarantine summary, and a sample grid per class."""
    import csv

    from busgen.data import schema as S
    from busgen.data.dataset import dataset_info, decode_images, read_table

    info = dataset_info(dataset_dir)
    table = read_table(dataset_dir, [S.LABEL, S.SPLIT, S.DOMAIN, S.BOX])
    labels = np.array(table.column(S.LABEL).to_pylist())
    splits = np.array(table.column(S.SPLIT).to_pylist())
    classes = sorted(set(labels.tolist()))
    rep = Report(out_dir, f"Dataset report: {Path(dataset_dir).name}")
    rep.section("Summary").table(
        ["field", "value"],
        [
            [k, info.get(k)]
            for k in (
                "source",
                "layout",
                "image_size",
                "resize_mode",
                "n_images",
                "n_duplicates",
                "n_quarantined",
                "created_at",
            )
            if k in info
        ],
    )
    rows = [
        [c] + [int(((labels == c) & (splits == s)).sum()) for s in S.SPLITS] + [int((labels == c).sum())]
        for c in classes
    ]
    rows.append(["total"] + [int((splits == s).sum()) for s in S.SPLITS] + [len(labels)])
    rep.section("Images per class and split").table(["class", *S.SPLITS, "total"], rows)
    domains_col = np.array(table.column(S.DOMAIN).to_pylist())
    if len(set(domains_col.tolist())) > 1:  # several sites/scanners: where each split's images come from
        by_domain = [
            [d, c] + [int(((domains_col == d) & (labels == c) & (splits == s)).sum()) for s in S.SPLITS]
            for d in sorted(set(domains_col.tolist()))
            for c in classes
        ]
        rep.section("Images per domain, class and split").table(["domain", "class", *S.SPLITS], by_domain)
    n_boxes = sum(b is not None for b in table.column(S.BOX).to_pylist())
    domains = sorted(set(table.column(S.DOMAIN).to_pylist()))
    rep.text(f"Lesion boxes (from masks): {n_boxes} of {len(labels)} images. Domains: {', '.join(domains)}.")
    rng = np.random.default_rng(seed)
    grid = {}
    for c in classes:
        t = read_table(dataset_dir, [S.IMAGE], classes=[c])
        pick = rng.choice(t.num_rows, size=min(per_class, t.num_rows), replace=False)
        grid[c] = decode_images([t.column(S.IMAGE)[int(i)].as_py() for i in sorted(pick)])
    rep.section("Samples per class").figure("samples.png", image_grid(grid), "random samples per class")
    qpath = Path(dataset_dir) / S.QUARANTINE_CSV
    if qpath.exists():
        with open(qpath) as fh:
            q = list(csv.DictReader(fh))
        rep.section("Quarantine", f"{len(q)} files were not ingested; see `{qpath}`.")
        if q:
            rep.table(["source", "reason"], [[r["source"], r["reason"][:120]] for r in q[:20]])
    return rep.write()
