"""Screening a prepared split before any work: the rows that cannot be used are dropped
up front, counted and named once, so one bad image never costs the rest of a run.

A prepared dataset was verified when it was written, but files change afterwards (a
split that stores paths, a dataset edited by hand, a disk error). Screening decodes
every image at a reduced size (cheap: a JPEG is decoded at 1/8 scale) and remembers
the result per split fingerprint in the cache folder, so it is paid once per dataset.

Dropped: items whose image cannot be decoded (or exceeds the pixel limit), and items
with no non-empty caption. Empty captions of an item that keeps others are dropped by
:func:`~crossmodal.data.splits.flatten_split` and counted here.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..errors import InvalidInput
from .images import open_cell

MAX_NAMED = 5


@dataclass
class Screening:
    """What screening did to one split."""
    split: str
    rows: np.ndarray  #: original row of every kept item (for item metadata that points back into the dataset)
    unreadable: dict[str, str] = field(default_factory=dict)  #: id -> why
    without_captions: list[str] = field(default_factory=list)
    empty_captions: int = 0

    @property
    def dropped(self) -> int:
        return len(self.unreadable) + len(self.without_captions)

    def summary(self) -> str | None:
        """One line for the command's summary, or None when nothing was skipped."""
        if not (self.dropped or self.empty_captions):
            return None
        return (f"{self.split}: skipped {len(self.unreadable)} unreadable image(s), "
                f"{len(self.without_captions)} item(s) without a caption, {self.empty_captions} empty caption(s)")

    def counts(self) -> dict[str, int]:
        return {"unreadable_images": len(self.unreadable), "items_without_captions": len(self.without_captions),
                "empty_captions": self.empty_captions}


def _scan_key(ds) -> str:
    fp = getattr(ds, "_fingerprint", None) or f"{len(ds)}"
    return hashlib.sha256(f"screen-v1:{fp}".encode()).hexdigest()[:24]


def unreadable_rows(ds, cache_dir: Path | None) -> dict[int, str]:
    """Rows of ``ds`` whose image does not decode: ``{row: reason}``, cached per split."""
    from datasets import Image as HFImage

    path = Path(cache_dir) / f"screen-{_scan_key(ds)}.json" if cache_dir is not None else None
    if path is not None and path.is_file():
        return {int(k): v for k, v in json.loads(path.read_text()).items()}
    bad: dict[int, str] = {}
    cells = ds.cast_column("image", HFImage(decode=False)).select_columns(["image"])
    for start in range(0, len(cells), 512):
        for n, cell in enumerate(cells[start:start + 512]["image"]):
            try:
                open_cell(cell, min_side=8)
            except Exception as e:  # Pillow raises many types for bad files
                bad[start + n] = f"{type(e).__name__}: {e}"
    if path is not None:  # a cache: atomic, but no need to survive a power cut
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(bad), durable=False)
    return bad


def screen_split(ds, split: str, cache_dir: Path | None, warn: bool = True):
    """``(usable dataset, Screening)``. The dataset is ``ds`` itself when every row is
    usable (so caches keyed on its fingerprint stay valid), else ``ds.select(kept rows)``."""
    bad = unreadable_rows(ds, cache_dir)
    cols = ds.select_columns(["id", "captions"])[:]
    report = Screening(split, np.arange(len(ds)))
    keep = []
    for row, (item, caps) in enumerate(zip(cols["id"], cols["captions"])):
        nonempty = sum(1 for c in caps if c and c.strip())
        if row in bad:
            report.unreadable[item] = bad[row]
            continue
        report.empty_captions += len(caps) - nonempty
        if not nonempty:
            report.without_captions.append(item)
            continue
        keep.append(row)
    if warn:
        for item, why in list(report.unreadable.items())[:MAX_NAMED]:
            print(f"warning: {split}: skipping item {item!r}: unreadable image ({why})", file=sys.stderr)
        for item in report.without_captions[:MAX_NAMED]:
            print(f"warning: {split}: skipping item {item!r}: no non-empty caption", file=sys.stderr)
        if report.dropped > MAX_NAMED:
            print(f"warning: {split}: ... {report.dropped} item(s) skipped in all", file=sys.stderr)
    if not report.dropped:
        return ds, report
    report.rows = np.asarray(keep, dtype=np.int64)
    return ds.select(keep), report


def screen_prepared(dd, splits, cache_dir: Path | None, warn: bool = True) -> dict[str, Screening]:
    """Screen ``splits`` of a loaded DatasetDict in place; returns each split's report."""
    reports = {}
    for split in splits:
        dd[split], reports[split] = screen_split(dd[split], split, cache_dir, warn)
        if len(dd[split]) == 0:
            raise InvalidInput(f"split {split!r} has no usable item left after screening "
                               f"({reports[split].summary()})")
    return reports
