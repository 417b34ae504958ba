"""Readers and the prepared format, on small sources written by the tests, including
every bad input the readers must survive; plus the real releases where present."""
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossmodal.data import PrepareReport, build_dataset_dict, load_prepared, write_prepared
from crossmodal.data.sources import read_coco, read_fashion, read_flickr8k, read_folder, read_hf
from crossmodal.data.splits import flatten_split, label_vocab
from conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]


def _img(path: Path, colour=(200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 16), colour).save(path)
    return path


def _corrupt(path: Path) -> Path:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue()[:200])  # truncated JPEG
    return path


def _prepare(splits, report, out):
    dd, report = build_dataset_dict(splits, report)
    write_prepared(dd, report, out)
    return load_prepared(out), report


@pytest.fixture
def flickr_source(tmp_path):
    src = tmp_path / "f8k"
    names = [f"{i}_x.jpg" for i in range(6)]
    for i, n in enumerate(names):
        _img(src / "images" / n, (40 * i, 10, 10))
    _corrupt(src / "images" / names[5])
    lines = []
    for n in names:
        for k in range(5):
            lines.append(f"{n}#{k}\tcaption {k} of {n}")
    lines[4] = f"{names[0]}.1#4\tfifth caption under a quirky name"
    lines[6] = f"{names[1]}#1\t   "  # empty caption
    lines.append("orphan.jpg#0\tin no split")
    (src / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    (src / "Flickr_8k.trainImages.txt").write_text("\n".join(names[:3]) + "\n")
    (src / "Flickr_8k.devImages.txt").write_text(names[3] + "\n")
    (src / "Flickr_8k.testImages.txt").write_text("\n".join(names[4:]) + "\n")
    return src


def test_flickr8k_reader_handles_quirks_and_bad_files(flickr_source, tmp_path):
    report = PrepareReport()
    dd, report = _prepare(read_flickr8k(flickr_source, report), report, tmp_path / "out")
    assert (len(dd["train"]), len(dd["dev"]), len(dd["test"])) == (3, 1, 1)  # corrupt test image skipped
    first = dd["train"][0]
    assert first["id"] == "0_x.jpg" and len(first["captions"]) == 5
    assert "fifth caption under a quirky name" in first["captions"]
    assert len(dd["train"][1]["captions"]) == 4  # the empty caption was dropped
    assert report.bad_images == 1 and "5_x.jpg" in report.bad_image_examples[0]
    assert report.empty_captions == 1
    assert any("X.jpg.N" in n for n in report.notes) and any("no split" in n for n in report.notes)
    saved = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    assert saved["bad_images"] == 1


def test_flickr8k_missing_split_file_is_named(flickr_source):
    (flickr_source / "Flickr_8k.devImages.txt").unlink()
    with pytest.raises(FileNotFoundError, match="devImages"):
        read_flickr8k(flickr_source, PrepareReport())


@pytest.fixture
def fashion_source(tmp_path):
    src = tmp_path / "fashion"
    cols = ["id", "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "year",
            "usage", "productDisplayName"]
    with (src / "styles.csv").open("w", newline="") if src.mkdir() is None else None as f:
        w = csv.writer(f)
        w.writerow(cols)
        for i in range(30):
            art = ["Shirts", "Watches", "NA"][i % 3]
            w.writerow([100 + i, "Men", "Apparel", "Topwear", art, "Blue", "Fall", "2011", "Casual",
                        f"Product {i} {art}" if i != 7 else ""])
            _img(src / "images" / f"{100 + i}.jpg", (i * 8, 50, 50))
    return src


def test_fashion_reader_split_labels_and_missing_values(fashion_source, tmp_path):
    report = PrepareReport()
    splits = read_fashion(fashion_source, report, test_size=10, dev_size=5)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [15, 5, 10]
    again = read_fashion(fashion_source, PrepareReport(), test_size=10, dev_size=5)
    assert [r["id"] for r in again["test"]] == [r["id"] for r in splits["test"]]  # seeded
    dd, report = _prepare(splits, report, tmp_path / "out")
    assert report.items_without_captions == 1  # product 7 had no title
    labels = [tuple(x) for s in dd.values() for x in s["labels"]]
    assert ("NA",) not in labels and () in labels and ("Shirts",) in labels
    multi = read_fashion(fashion_source, PrepareReport(), label_columns=["articleType", "gender"], test_size=10,
                         dev_size=5)
    assert any(r["labels"] == ["Shirts", "Men"] for s in multi.values() for r in s)


def test_fashion_missing_column_is_named(fashion_source):
    with pytest.raises(KeyError, match="no column 'colour'"):
        read_fashion(fashion_source, PrepareReport(), label_columns=["colour"])


def test_coco_reader_with_captions_and_instances(tmp_path):
    src = tmp_path / "coco"
    (src / "annotations").mkdir(parents=True)
    for split, ids in (("train", [1, 2, 3, 4]), ("val", [5, 6])):
        images = [{"id": i, "file_name": f"{i:012d}.jpg"} for i in ids]
        for i in ids:
            _img(src / f"{split}2017" / f"{i:012d}.jpg", (i * 30, 0, 0))
        caps = [{"image_id": i, "id": 10 * i + k, "caption": f"image {i} caption {k}"} for i in ids for k in range(2)]
        (src / "annotations" / f"captions_{split}2017.json").write_text(json.dumps({"images": images,
                                                                                    "annotations": caps}))
        inst = {"categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}],
                "annotations": [{"image_id": i, "category_id": 1 + i % 2} for i in ids] +
                               [{"image_id": ids[0], "category_id": 1}]}
        (src / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(inst))
    report = PrepareReport()
    dd, _ = _prepare(read_coco(src, report, dev_size=1), report, tmp_path / "out")
    assert (len(dd["train"]), len(dd["dev"]), len(dd["test"])) == (3, 1, 2)
    test = {r["id"]: r for r in dd["test"]}
    assert test["5"]["labels"] == ["cat", "dog"] and len(test["5"]["captions"]) == 2


def test_coco_missing_caption_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="captions_train2017.json"):
        read_coco(tmp_path, PrepareReport())


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_folder_reader_jsonl_and_csv(tmp_path, fmt):
    src = tmp_path / "mine"
    rows = []
    for i in range(20):
        _img(src / "pics" / f"{i}.png", (i * 10, 100, 0))
        rows.append({"image": f"pics/{i}.png", "captions": [f"picture {i}", f"photo number {i}"],
                     "labels": ["even" if i % 2 == 0 else "odd"]})
    rows[3]["captions"] = ["", "only one left"]
    if fmt == "jsonl":
        (src / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    else:
        with (src / "manifest.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["image", "captions", "labels"])
            w.writeheader()
            for r in rows:
                w.writerow({"image": r["image"], "captions": "|".join(r["captions"]), "labels": "|".join(r["labels"])})
    report = PrepareReport()
    dd, report = _prepare(read_folder(src, report), report, tmp_path / "out")
    assert sum(len(s) for s in dd.values()) == 20 and set(dd) == {"train", "dev", "test"}
    assert len(dd["test"]) == 2 and len(dd["dev"]) == 2
    if fmt == "jsonl":
        assert report.empty_captions == 1
    item = [r for s in dd.values() for r in s if r["id"] == "pics/3.png"][0]
    assert item["captions"] == ["only one left"]


def test_folder_reader_bad_manifest_line_is_located(tmp_path):
    (tmp_path / "manifest.jsonl").write_text('{"image": "a.png", "caption": "x"}\n{broken\n')
    with pytest.raises(ValueError, match=r"manifest.jsonl:2"):
        read_folder(tmp_path, PrepareReport())


def test_folder_reader_without_manifest_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest"):
        read_folder(tmp_path, PrepareReport())


def test_hf_reader_from_disk(tmp_path):
    import datasets

    imgs = [Image.new("RGB", (10, 10), (i * 20, 0, 0)) for i in range(5)]
    ds = datasets.Dataset.from_dict({"img": imgs, "text": [f"red {i}" for i in range(5)],
                                     "cls": ["a", "b", "a", "b", "a"]},
                                    features=datasets.Features({"img": datasets.Image(), "text": datasets.Value("string"),
                                                                "cls": datasets.Value("string")}))
    datasets.DatasetDict({"train": ds, "test": ds.select([0, 1])}).save_to_disk(str(tmp_path / "hf"))
    report = PrepareReport()
    splits = read_hf(str(tmp_path / "hf"), report, image_column="img", caption_column="text", label_column="cls")
    dd, _ = _prepare(splits, report, tmp_path / "out")
    assert len(dd["train"]) == 5 and dd["train"][2]["captions"] == ["red 2"] and dd["train"][1]["labels"] == ["b"]
    with pytest.raises(KeyError, match="no column 'nope'"):
        read_hf(str(tmp_path / "hf"), report, image_column="img", caption_column="nope")


def test_load_prepared_errors_name_what_is_missing(tiny_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a prepared crossmodal dataset"):
        load_prepared(tmp_path)
    with pytest.raises(KeyError, match="no split 'validation'"):
        load_prepared(tiny_data, splits=["validation"])


def test_flatten_split_and_label_vocab(tiny_data):
    flat = flatten_split(load_prepared(tiny_data)["train"])
    assert len(flat.ids) == 48 and len(flat.captions) == 48 * 5
    assert np.array_equal(np.bincount(flat.caption_item), np.full(48, 5))
    vocab = label_vocab(flat)
    m = flat.label_matrix(vocab)
    assert m.shape == (48, len(vocab)) and (m.sum(1) == 1).all()
    assert [c.tolist() for c in flat.captions_of()[:2]] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_prepare_script_runs_as_documented(flickr_source, tmp_path):
    out = tmp_path / "prepared"
    res = subprocess.run([sys.executable, str(ROOT / "data_scripts" / "prepare_flickr8k.py"), "--source",
                          str(flickr_source), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "1 unreadable images" in res.stdout
    assert len(load_prepared(out)["train"]) == 3


def test_real_flickr8k_reader_counts():
    src = shared_path("flickr8k")
    report = PrepareReport()
    splits = read_flickr8k(src, report)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [6000, 1000, 1000]
    assert all(len(r["captions"]) == 5 for s in splits.values() for r in s)


def test_real_fashion_reader_split_sizes():
    src = shared_path("fashion")
    splits = read_fashion(src, PrepareReport())
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [7083, 500, 2000]
    assert len({lab for s in splits.values() for r in s for lab in r["labels"]}) >= 70


@pytest.mark.parametrize("field,value,says", [("split", 5, "'split' must be text"),
                                               ("captions", [["nested"]], "'captions' must be text or a list"),
                                               ("labels", {"a": 1}, "'labels' must be text or a list"),
                                               ("image", ["a.png"], "'image' must be text")])
def test_a_manifest_value_of_the_wrong_type_is_one_line_and_writes_nothing(tmp_path, field, value, says):
    src = tmp_path / "mine"
    _img(src / "a.png", (10, 100, 0))
    _img(src / "b.png", (100, 10, 0))
    rows = [{"image": "a.png", "captions": ["a red square"]}, {"image": "b.png", "captions": ["a green one"]}]
    rows[1][field] = value
    (src / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, str(ROOT / "data_scripts" / "prepare_folder.py"), "--source", str(src),
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "manifest.jsonl:2" in res.stderr and says in res.stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_prepare_hf_of_a_hub_name_offline_is_one_line(tmp_path):
    import os

    res = subprocess.run([sys.executable, str(ROOT / "data_scripts" / "prepare_hf.py"), "--source",
                          "someone/some-dataset", "--out", str(tmp_path / "out")], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "not a folder here" in res.stderr and "save_to_disk" in res.stderr
    assert not (tmp_path / "out").exists()
