"""Readers: each public source's original files -> records per split.

A record is ``{"id", "image" (path or bytes), "captions" (list), "labels" (list)}``;
``format.build_dataset_dict`` verifies and stores them. Readers only parse: they never
decode images, so a source's quirks are handled here and bad files are counted there.
"""
from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from PIL import Image

from ..errors import InvalidInput, MissingField, MissingInput, Unavailable
from .format import PrepareReport


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise MissingInput(f"{what} not found: {path}")
    return path


def seeded_split(ids: list[str], sizes: dict[str, int], seed: int, rest: str = "train") -> dict[str, str]:
    """Assign ids to splits of fixed sizes (the remainder to ``rest``), reproducibly."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    out, start = {}, 0
    for split, n in sizes.items():
        for i in order[start:start + n]:
            out[i] = split
        start += n
    for i in order[start:]:
        out[i] = rest
    return out


# ---- Flickr8k ------------------------------------------------------------------------
def read_flickr8k(source: str | Path, report: PrepareReport) -> dict[str, list[dict]]:
    """Flickr8k's original release: ``Flickr8k.token.txt`` + split files + ``images/``
    (or the original ``Flicker8k_Dataset/``).

    Quirks handled: a caption line naming ``X.jpg.1`` belongs to ``X.jpg`` when that
    image exists; images in no split file are left out (counted in the report).
    """
    src = Path(source)
    img_dir = src / "images" if (src / "images").is_dir() else src / "Flicker8k_Dataset"
    _require(img_dir, "Flickr8k image folder (images/ or Flicker8k_Dataset/)")
    tokens = _require(src / "Flickr8k.token.txt", "Flickr8k caption file")
    captions: dict[str, list[str]] = defaultdict(list)
    remapped = 0
    for line in tokens.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        key, _, caption = line.partition("\t")
        name = key.split("#")[0]
        if not name.endswith(".jpg") and ".jpg." in name:
            name = name[: name.index(".jpg.") + 4]
            remapped += 1
        captions[name].append(caption)
    if remapped:
        report.notes.append(f"flickr8k: {remapped} caption line(s) named 'X.jpg.N'; attached to X.jpg")
    split_files = {"train": "Flickr_8k.trainImages.txt", "dev": "Flickr_8k.devImages.txt",
                   "test": "Flickr_8k.testImages.txt"}
    splits: dict[str, list[dict]] = {}
    in_split = set()
    for split, fname in split_files.items():
        names = [n.strip() for n in _require(src / fname, f"Flickr8k split file for {split}").read_text().split()]
        in_split.update(names)
        splits[split] = [{"id": n, "image": img_dir / n, "captions": captions.get(n, []), "labels": []}
                         for n in names]
    orphans = len(set(captions) - in_split)
    if orphans:
        report.notes.append(f"flickr8k: {orphans} captioned image(s) are in no split file and were left out")
    return splits


# ---- fashion catalogue ---------------------------------------------------------------
def read_fashion(source: str | Path, report: PrepareReport, label_columns: Iterable[str] = ("articleType",),
                 seed: int = 0, test_size: int = 2000, dev_size: int = 500) -> dict[str, list[dict]]:
    """``styles.csv`` + ``images/<id>.jpg``; text = ``productDisplayName``; labels from
    ``label_columns`` (values 'NA' or empty are dropped); fixed seeded split."""
    src = Path(source)
    table = _require(src / "styles.csv", "fashion catalogue table")
    with table.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    label_columns = list(label_columns)
    if rows:
        for col in ["id", "productDisplayName", *label_columns]:
            if col not in rows[0]:
                raise MissingField(f"{table} has no column {col!r} (columns: {', '.join(rows[0])})")
    assign = seeded_split([r["id"] for r in rows], {"test": test_size, "dev": dev_size}, seed)
    splits: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    for r in rows:
        labels = [r[c] for c in label_columns if r.get(c) and r[c] != "NA"]
        splits[assign[r["id"]]].append({"id": r["id"], "image": src / "images" / f"{r['id']}.jpg",
                                        "captions": [r.get("productDisplayName") or ""], "labels": labels})
    return splits


# ---- COCO ----------------------------------------------------------------------------
def read_coco(source: str | Path, report: PrepareReport, year: str = "2017", dev_size: int = 5000,
              seed: int = 0) -> dict[str, list[dict]]:
    """COCO captions (+ instances, when present, for labels = category names).
    ``val{year}`` becomes ``test``; ``dev_size`` seeded images of ``train{year}`` become ``dev``."""
    src = Path(source)
    ann = src / "annotations"
    splits: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    for coco_split, ours in (("train", "train"), ("val", "test")):
        cap_file = ann / f"captions_{coco_split}{year}.json"
        if not cap_file.exists():
            if coco_split == "train":
                raise MissingInput(f"COCO caption file not found: {cap_file}")
            continue
        caps = json.loads(cap_file.read_text())
        by_image: dict[int, list[str]] = defaultdict(list)
        for a in caps["annotations"]:
            by_image[a["image_id"]].append(a["caption"])
        labels: dict[int, set[str]] = defaultdict(set)
        inst_file = ann / f"instances_{coco_split}{year}.json"
        if inst_file.exists():
            inst = json.loads(inst_file.read_text())
            names = {c["id"]: c["name"] for c in inst["categories"]}
            for a in inst["annotations"]:
                labels[a["image_id"]].add(names[a["category_id"]])
        img_dir = src / f"{coco_split}{year}"
        records = [{"id": str(im["id"]), "image": img_dir / im["file_name"], "captions": by_image.get(im["id"], []),
                    "labels": sorted(labels.get(im["id"], ()))} for im in caps["images"]]
        if ours == "train":
            assign = seeded_split([r["id"] for r in records], {"dev": dev_size}, seed)
            for r in records:
                splits[assign[r["id"]]].append(r)
        else:
            splits["test"] = records
    return splits


# ---- a folder with a manifest --------------------------------------------------------
def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [v for v in (s.strip() for s in str(value).split("|")) if v]


def _manifest_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) of a JSONL or CSV manifest; a bad file is one clear error naming it and the line."""
    try:
        if path.suffix == ".jsonl":
            rows = []
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise InvalidInput(f"{path}:{n}: not valid JSON ({e.msg})") from None
                    if not isinstance(row, dict):
                        raise InvalidInput(f"{path}:{n}: expected a JSON object with an 'image' field")
                    rows.append((n, row))
            return rows
        with path.open(newline="", encoding="utf-8") as f:
            return [(n, row) for n, row in enumerate(csv.DictReader(f), 2)]
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{path}: not UTF-8 text (byte {e.start}); save the manifest as UTF-8") from None
    except csv.Error as e:
        raise InvalidInput(f"{path}: not a readable CSV ({e})") from None


#: manifest fields and the JSON types each may hold (a CSV cell is always text)
_FIELD_TYPES = {"image": "text", "id": "text or a number", "split": "text", "caption": "text",
                "captions": "text or a list of texts", "labels": "text or a list of texts"}


def _check_row_types(path: Path, n: int, row: dict) -> None:
    """One clear line naming the field and the line when a value has the wrong type (a
    number for a split, captions nested in a list of lists), before anything is written."""
    for key, allowed in _FIELD_TYPES.items():
        value = row.get(key)
        if value is None or isinstance(value, str):
            continue
        ok = ((allowed == "text or a number" and isinstance(value, (int, float)) and not isinstance(value, bool))
              or (allowed == "text or a list of texts" and isinstance(value, list)
                  and all(isinstance(v, str) for v in value)))
        if not ok:
            raise InvalidInput(f"{path}:{n}: field {key!r} must be {allowed}, got {json.dumps(value)[:60]}; "
                               f"fix that line of the manifest")


def read_folder(source: str | Path, report: PrepareReport, manifest: str | None = None, seed: int = 0,
                dev_fraction: float = 0.1, test_fraction: float = 0.1, allow_outside: bool = False
                ) -> dict[str, list[dict]]:
    """A folder of images + ``manifest.jsonl`` or ``manifest.csv``.

    Fields: ``image`` (path relative to the folder), ``captions`` (list, or '|'-separated)
    or ``caption``, optional ``labels`` (list or '|'-separated), optional ``split``, optional
    ``id`` (defaults to the image path). Without ``split``, a seeded 80/10/10 split.
    Image paths must stay inside the folder (no absolute paths, no ``..`` out of it)
    unless ``allow_outside``.
    """
    src = Path(source)
    if not src.is_dir():
        raise MissingInput(f"--source {src} is not a folder")
    if manifest is None:
        candidates = [src / "manifest.jsonl", src / "manifest.csv"]
        found = [c for c in candidates if c.exists()]
        if not found:
            raise MissingInput(f"no manifest.jsonl or manifest.csv in {src} (pass --manifest PATH)")
        path = found[0]
    else:
        path = _require(Path(manifest) if Path(manifest).is_absolute() else src / manifest, "manifest")
    rows = _manifest_rows(path)
    if not rows:
        raise InvalidInput(f"{path} lists no images")
    fields = set().union(*(r.keys() for _, r in rows))
    if "image" not in fields:
        raise InvalidInput(f"{path} has no 'image' field/column (it has: {', '.join(sorted(map(str, fields)))})")
    if not fields & {"captions", "caption"}:
        raise InvalidInput(f"{path} has no 'captions' or 'caption' field/column (it has: "
                           f"{', '.join(sorted(map(str, fields)))})")
    root = src.resolve()
    records = []
    for n, r in rows:
        _check_row_types(path, n, r)
        if not r.get("image"):
            raise InvalidInput(f"{path}:{n}: empty 'image'")
        image = (src / str(r["image"])).resolve()
        if not allow_outside and not image.is_relative_to(root):
            raise InvalidInput(f"{path}:{n}: image {r['image']!r} lies outside {src}; keep images inside the "
                               f"source folder, or pass --allow-outside")
        caps = _as_list(r.get("captions")) or _as_list(r.get("caption"))
        records.append({"id": str(r.get("id") or r["image"]), "image": image, "captions": caps,
                        "labels": _as_list(r.get("labels")), "split": r.get("split")})
    if any(not r["split"] for r in records):
        n = len(records)
        assign = seeded_split([r["id"] for r in records],
                              {"test": int(round(n * test_fraction)), "dev": int(round(n * dev_fraction))}, seed)
        for r in records:
            r["split"] = r["split"] or assign[r["id"]]
    splits: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        splits[r.pop("split")].append(r)
    return dict(splits)


# ---- any Hugging Face dataset --------------------------------------------------------
def read_hf(name_or_path: str, report: PrepareReport, image_column: str = "image", caption_column: str = "captions",
            label_column: str | None = None, id_column: str | None = None) -> dict[str, Iterable[dict]]:
    """A ``datasets`` dataset, from disk (``save_to_disk`` folder) or by hub name (needs
    a network). Images may be ``datasets.Image`` values, PIL images or paths."""
    import io

    import datasets

    p = Path(name_or_path)
    if p.exists():
        dd = datasets.load_from_disk(str(p))
    else:
        try:
            dd = datasets.load_dataset(name_or_path)
        except (ConnectionError, OSError) as e:  # offline, or a name the hub does not have
            raise Unavailable(f"--source {name_or_path}: not a folder here, and the Hugging Face hub cannot give it "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:120]}). Offline, pass a folder written "
                              f"by datasets' save_to_disk") from None
    if isinstance(dd, datasets.Dataset):
        dd = datasets.DatasetDict({"train": dd})
    out = {}
    for split, ds in dd.items():
        for col in [image_column, caption_column, label_column, id_column]:
            if col and col not in ds.column_names:
                raise MissingField(f"{name_or_path} split {split!r} has no column {col!r} (has: {ds.column_names})")
        ds = ds.cast_column(image_column, datasets.Image(decode=False)) if isinstance(
            ds.features[image_column], datasets.Image) else ds

        def gen(ds=ds, split=split):
            for i, row in enumerate(ds):
                img = row[image_column]
                if isinstance(img, dict):
                    img = img.get("bytes") or img.get("path")
                elif isinstance(img, Image.Image):
                    buf = io.BytesIO()
                    img.save(buf, format="PNG")
                    img = buf.getvalue()
                yield {"id": str(row[id_column]) if id_column else f"{split}-{i}", "image": img,
                       "captions": _as_list(row[caption_column]),
                       "labels": _as_list(row[label_column]) if label_column else []}
        out[split] = gen()
    return out
