"""The prepared-dataset format: building it from records, writing and loading it.

Bad input never stops a run: an unreadable image drops its item and is counted (with
up to 20 examples named) in a :class:`PrepareReport`; an empty caption is dropped and
counted; an item left with no caption is dropped and counted.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from PIL import Image

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
    notes: list[str] = field(default_factory=list)

    def bad_image(self, what: str, why: str) -> None:
        self.bad_images += 1
        if len(self.bad_image_examples) < MAX_EXAMPLES:
            self.bad_image_examples.append(f"{what}: {why}")

    def summary(self) -> str:
        lines = [f"{s}: {n} items, {self.captions.get(s, 0)} captions" for s, n in self.items.items()]
        lines.append(f"skipped: {self.bad_images} unreadable images, {self.empty_captions} empty captions, "
                     f"{self.items_without_captions} items without any caption")
        lines += [f"  bad image {e}" for e in self.bad_image_examples]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def open_image_checked(source: str | bytes | os.PathLike) -> tuple[bytes, Image.Image]:
    """Read an image fully (a truncated file fails here, not at training time).
    Returns its original bytes and the decoded RGB image."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    img = Image.open(io.BytesIO(data))
    img.load()
    return data, img.convert("RGB")


def _features():
    from datasets import Features, Image as HFImage, Sequence, Value
    return Features({"id": Value("string"), "image": HFImage(), "captions": Sequence(Value("string")),
                     "labels": Sequence(Value("string"))})


def _clean_records(records: Iterable[dict], split: str, report: PrepareReport) -> Iterator[dict]:
    """Yield records with decoded-and-verified image bytes and non-empty captions."""
    from tqdm.auto import tqdm

    n_items = n_caps = 0
    for rec in tqdm(records, desc=f"prepare {split}", unit="item", leave=False):
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
        n_items += 1
        n_caps += len(kept)
        yield {"id": str(rec["id"]), "image": {"bytes": data, "path": None}, "captions": kept,
               "labels": [str(x) for x in rec.get("labels", []) if x is not None and str(x) != ""]}
    report.items[split] = n_items
    report.captions[split] = n_caps


def build_dataset_dict(splits: dict[str, Iterable[dict]], report: PrepareReport | None = None):
    """Records per split -> a DatasetDict in the prepared format. Rows are streamed to
    Arrow files with ``ArrowWriter``, so a large source is never held in memory."""
    from datasets import Dataset, DatasetDict
    from datasets.arrow_writer import ArrowWriter

    report = report if report is not None else PrepareReport()
    cache = tempfile.mkdtemp(prefix="crossmodal-prepare-")
    features = _features()
    out = {}
    for split, records in splits.items():
        path = os.path.join(cache, f"{split}.arrow")
        with ArrowWriter(features=features, path=path) as writer:
            for row in _clean_records(records, split, report):
                writer.write(features.encode_example(row))
            writer.finalize()
        out[split] = Dataset.from_file(path)
    dd = DatasetDict(out)
    dd._crossmodal_cache = cache  # removed by write_prepared
    return dd, report


def write_prepared(dd, report: PrepareReport, out: str | os.PathLike) -> Path:
    """Save atomically: a half-written dataset folder is never left under ``out``."""
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    disable_progress_bar()  # our own bar already covered the slow part (reading and verifying images)
    try:
        dd.save_to_disk(str(tmp / "data"))
    finally:
        enable_progress_bar()
    (tmp / "prepare_report.json").write_text(json.dumps(asdict(report), indent=2))
    for name in os.listdir(tmp / "data"):
        os.replace(tmp / "data" / name, tmp / name)
    os.rmdir(tmp / "data")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    cache = getattr(dd, "_crossmodal_cache", None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)
    return out


def load_prepared(path: str | os.PathLike, splits: Iterable[str] | None = None):
    """Load a prepared dataset; a missing folder, split or column is a clear error."""
    from datasets import load_from_disk

    path = Path(path)
    if not (path / "dataset_dict.json").is_file():
        raise FileNotFoundError(f"{path} is not a prepared crossmodal dataset (no dataset_dict.json); "
                                f"make one with data_scripts/prepare_*.py")
    dd = load_from_disk(str(path))
    for split in splits or ():
        if split not in dd:
            raise KeyError(f"{path} has no split {split!r} (it has: {', '.join(dd.keys())})")
    for split, ds in dd.items():
        missing = [c for c in COLUMNS if c not in ds.column_names]
        if missing:
            raise KeyError(f"{path} split {split!r} lacks column(s) {missing}")
    return dd
