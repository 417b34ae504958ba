"""The prepared-dataset format: building it from records, writing and loading it.

Bad input never stops a run: an unreadable image drops its item and is counted (with
up to 20 examples named) in a :class:`PrepareReport`; an empty caption is dropped and
counted; an item left with no caption is dropped and counted.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from PIL import Image

from ..errors import InvalidInput, MissingField, MissingInput, UnsafeOutput
from .images import open_image

COLUMNS = ("id", "image", "captions", "labels")
MAX_EXAMPLES = 20


@dataclass
class PrepareReport:
    items: dict[str, int] = field(default_factory=dict)
    captions: dict[str, int] = field(default_factory=dict)
    bad_images: int = 0
    bad_image_examples: list[str] = field(default_factory=list)
    empty_captions: int = 0
    items_without_captions: int = 0
    duplicates: int = 0
    notes: list[str] = field(default_factory=list)

    def bad_image(self, what: str, why: str) -> None:
        self.bad_images += 1
        if len(self.bad_image_examples) < MAX_EXAMPLES:
            self.bad_image_examples.append(f"{what}: {why}")

    def summary(self) -> str:
        lines = [f"{s}: {n} items, {self.captions.get(s, 0)} captions" for s, n in self.items.items()]
        lines.append(f"skipped: {self.bad_images} unreadable images, {self.empty_captions} empty captions, "
                     f"{self.items_without_captions} items without any caption, {self.duplicates} duplicated ids")
        lines += [f"  bad image {e}" for e in self.bad_image_examples]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def open_image_checked(source: str | bytes | os.PathLike, min_side: int | None = None) -> tuple[bytes, Image.Image]:
    """Read an image fully (a truncated file fails here, not at training time), within
    the pixel limit (see :mod:`.images`). Returns its original bytes and the decoded RGB
    image (decoded reduced to ``min_side`` when that is given)."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    return data, open_image(data, min_side=min_side)


def _features():
    from datasets import Features, Image as HFImage, Sequence, Value
    return Features({"id": Value("string"), "image": HFImage(), "captions": Sequence(Value("string")),
                     "labels": Sequence(Value("string"))})


def _clean_records(records: Iterable[dict], split: str, report: PrepareReport, seen: dict[str, str],
                   dedupe: bool) -> Iterator[dict]:
    """Yield records with decoded-and-verified image bytes and non-empty captions.
    ``seen``: ids already written (in any split) -> their split; a repeated id is an
    error naming it, or with ``dedupe`` is dropped (the first one is kept) and counted."""
    from ..progress import progress

    n_items = n_caps = 0
    for rec in progress(records, desc=f"prepare {split}", unit="item"):
        item = str(rec["id"])
        if item in seen:
            if not dedupe:
                raise InvalidInput(f"id {item!r} appears twice (splits {seen[item]!r} and {split!r}); ids must be "
                                   f"unique: fix the source, or pass --dedupe to keep the first")
            report.duplicates += 1
            continue
        caps = [str(c).strip() for c in rec.get("captions", []) if c is not None]
        kept = [c for c in caps if c]
        report.empty_captions += len(caps) - len(kept)
        if not kept:
            report.items_without_captions += 1
            continue
        try:
            data, _ = open_image_checked(rec["image"])
        except Exception as e:  # PIL raises many types for bad files
            name = rec["image"] if not isinstance(rec["image"], bytes) else rec["id"]
            report.bad_image(str(name), f"{type(e).__name__}: {e}")
            continue
        seen[item] = split
        n_items += 1
        n_caps += len(kept)
        yield {"id": str(rec["id"]), "image": {"bytes": data, "path": None}, "captions": kept,
               "labels": [str(x) for x in rec.get("labels", []) if x is not None and str(x) != ""]}
    report.items[split] = n_items
    report.captions[split] = n_caps


def build_dataset_dict(splits: dict[str, Iterable[dict]], report: PrepareReport | None = None,
                       dedupe: bool = False):
    """Records per split -> a DatasetDict in the prepared format. Rows are streamed to
    Arrow files with ``ArrowWriter``, so a large source is never held in memory."""
    from datasets import Dataset, DatasetDict
    from datasets.arrow_writer import ArrowWriter

    report = report if report is not None else PrepareReport()
    cache = tempfile.mkdtemp(prefix="crossmodal-prepare-")
    features = _features()
    out = {}
    seen: dict[str, str] = {}
    for split, records in splits.items():
        path = os.path.join(cache, f"{split}.arrow")
        with ArrowWriter(features=features, path=path) as writer:
            for row in _clean_records(records, split, report, seen, dedupe):
                writer.write(features.encode_example(row))
            writer.finalize()
        out[split] = Dataset.from_file(path)
    dd = DatasetDict(out)
    dd._crossmodal_cache = cache  # removed by write_prepared
    return dd, report


def is_prepared_dataset(path: str | os.PathLike) -> bool:
    return (Path(path) / "dataset_dict.json").is_file()


def check_prepare_destination(out: str | os.PathLike, source: str | os.PathLike | None = None,
                              overwrite: bool = False) -> None:
    """Refuse, before any work, an ``out`` that would destroy something: the source
    itself, a folder containing it or inside it, or a non-empty folder that is not a
    prepared dataset (unless ``overwrite``). Replacing an earlier prepared dataset is fine."""
    out = Path(out).resolve()
    if source is not None and Path(source).exists():
        src = Path(source).resolve()
        if out == src or src.is_relative_to(out) or out.is_relative_to(src):
            raise UnsafeOutput(f"--out {out} is, contains or lies inside --source {src}: writing there would "
                               f"delete the source; choose an --out outside it")
    if out.exists() and not out.is_dir():
        raise UnsafeOutput(f"--out {out} is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not is_prepared_dataset(out) and not overwrite:
        raise UnsafeOutput(f"--out {out} is a non-empty folder that is not a prepared dataset; refusing to replace "
                           f"it: choose a new folder, or pass --overwrite to replace it")


def validate_dataset(dd, report: PrepareReport) -> None:
    """A dataset that could not be trained on or indexed is an error before it is written."""
    if not len(dd):
        raise InvalidInput("the source produced no split at all; check --source and its manifest")
    empty = [s for s, ds in dd.items() if len(ds) == 0]
    if empty:
        raise InvalidInput(f"split(s) {', '.join(empty)} would be empty: {report.bad_images} unreadable image(s), "
                           f"{report.items_without_captions} item(s) without any caption, {report.empty_captions} "
                           f"empty caption(s); check the caption column/field and the image paths")


def write_prepared(dd, report: PrepareReport, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save atomically: a half-written dataset folder is never left under ``out``, and a
    failed write leaves the old ``out`` as it was. Refuses to replace a folder that is
    not a prepared dataset unless ``overwrite`` (see :func:`check_prepare_destination`)."""
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    out = Path(out)
    check_prepare_destination(out, overwrite=overwrite)
    validate_dataset(dd, report)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        was_enabled = is_progress_bar_enabled()
        disable_progress_bar()  # our own bar already covered the slow part (reading and verifying images)
        try:
            dd.save_to_disk(str(tmp / "data"))
        finally:
            if was_enabled:  # not when the command line turned them off (a log, --quiet)
                enable_progress_bar()
        (tmp / "prepare_report.json").write_text(json.dumps(asdict(report), indent=2))
        for name in os.listdir(tmp / "data"):
            os.replace(tmp / "data" / name, tmp / name)
        os.rmdir(tmp / "data")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():  # move the old one aside first: at every moment one complete dataset is under a name
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        os.replace(out, old / "data")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    cache = getattr(dd, "_crossmodal_cache", None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)
    return out


def load_prepared(path: str | os.PathLike, splits: Iterable[str] | None = None):
    """Load a prepared dataset; a missing folder, split or column is a clear error."""
    from datasets import load_from_disk

    path = Path(path)
    if not (path / "dataset_dict.json").is_file():
        raise MissingInput(f"{path} is not a prepared crossmodal dataset (no dataset_dict.json); "
                                f"make one with data_scripts/prepare_*.py")
    dd = load_from_disk(str(path))
    for split in splits or ():
        if split not in dd:
            raise MissingField(f"{path} has no split {split!r} (it has: {', '.join(dd.keys())})")
    for split, ds in dd.items():
        missing = [c for c in COLUMNS if c not in ds.column_names]
        if missing:
            raise MissingField(f"{path} split {split!r} lacks column(s) {missing}")
    return dd
