"""A user's photo library: nested folders of camera-size photos with bad files among
them, indexed in bounded memory, resumed after a real kill, kept in sync with the
folder, rotated by EXIF, and shown as thumbnails from the originals."""
from __future__ import annotations

import gc
import io
import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossmodal.cli import main
from crossmodal import image_batches
from retrieval.index import CrossModalIndex, read_current_version
from retrieval.photos import PhotoReport, encode_photos, walk_photos

CLI = [sys.executable, "-m", "crossmodal.cli"]


def photo(path: Path, seed: int, size=(320, 240), quality: int = 90, exif: Image.Exif | None = None) -> Path:
    """A textured JPEG (noise over a colour gradient), different for every seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.zeros((h, w, 3), np.float32)
    base[..., rng.integers(0, 3)] = np.linspace(0, 255, w)[None, :]
    base[..., rng.integers(0, 3)] += np.linspace(255, 0, h)[:, None] * rng.uniform(0.3, 1)
    pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=quality, **({"exif": exif} if exif is not None else {}))
    return path


@pytest.fixture()
def library(tmp_path) -> Path:
    """Nested folders: 7 good photos, a corrupt JPEG, a text file, a hidden folder, a
    symlink loop and a PNG."""
    root = tmp_path / "Pictures"
    for n, rel in enumerate(["2024/a.jpg", "2024/summer/b.jpg", "2024/summer/c.JPG", "2025/d.jpeg",
                             "2025/x/y/z/e.jpg", "f.jpg"]):
        photo(root / rel, n)
    Image.new("RGB", (300, 200), (0, 120, 240)).save(root / "2025" / "g.png")
    (root / "2025" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "notes.txt").write_text("not a photo")
    photo(root / ".thumbnails" / "hidden.jpg", 99)
    os.symlink(root, root / "2024" / "loop")  # a folder that contains itself
    return root


def keys_in(index_dir) -> set[str]:
    idx = CrossModalIndex.load(index_dir)
    return {r[0] for r in idx.metadata.db.execute("SELECT key FROM items WHERE modality = 'image'")}


def test_walk_is_recursive_skips_hidden_non_images_and_symlink_loops(library):
    report = PhotoReport()
    found = walk_photos([library], report)
    names = sorted(Path(p.path).name for p in found)
    assert names == ["a.jpg", "b.jpg", "broken.jpg", "c.JPG", "d.jpeg", "e.jpg", "f.jpg", "g.png"]
    assert report.found == 8 and not report.failed
    assert len({p.path for p in found}) == 8  # the loop does not bring anything twice


def test_build_from_folders_counts_bad_files_and_searches(tiny_model, library, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CROSSMODAL_PROGRESS_INTERVAL", "0")  # a log line per batch (stderr is not a terminal here)
    out = tmp_path / "idx"
    assert main(["index", "build", "--model", str(tiny_model), "--images", str(library), str(tmp_path / "gone"),
                 "--bits", "32", "--out", str(out), "--workers", "1"]) == 0
    text = capsys.readouterr()
    assert "9 photo(s) seen: added 7, updated 0, already present 0, unreadable 2" in text.out
    assert "broken.jpg" in text.err and "gone" in text.err
    broken = next(line for line in text.err.splitlines() if "broken.jpg" in line)
    assert "the image file is truncated" in broken and "BytesIO" not in broken  # the file named, in words
    assert "photos: 8/8 photo (" in text.err and "photo/s" in text.err  # progress counts photos, with a rate
    assert {Path(k).name for k in keys_in(out)} == {"a.jpg", "b.jpg", "c.JPG", "d.jpeg", "e.jpg", "f.jpg", "g.png"}
    meta = next(m for m in CrossModalIndex.load(out).items_of("image") if m["key"].endswith("f.jpg"))
    st = os.stat(meta["key"])
    assert meta["extra"]["size"] == st.st_size and meta["extra"]["mtime_ns"] == st.st_mtime_ns
    assert len(meta["extra"]["hash"]) == 32
    assert main(["search", "--index", str(out), "--image", str(library / "f.jpg"), "--target", "image",
                 "-k", "1", "--json"]) == 0
    assert '"distance": 0' in capsys.readouterr().out


def test_memory_is_bounded_by_the_batch_not_the_library(tiny_model, tmp_path, monkeypatch):
    """Counts decoded images alive: holding every photo before encoding (the old path)
    would have all 40 alive at once."""
    from crossmodal.model import CrossModalHasher

    files = [photo(tmp_path / "lib" / f"{i // 10}" / f"p{i}.jpg", i) for i in range(40)]
    alive, peak = set(), [0]
    real_open = image_batches.open_image

    def counting_open(*a, **kw):
        img = real_open(*a, **kw)
        token = object()
        alive.add(id(token))
        weakref.finalize(img, alive.discard, id(token))
        peak[0] = max(peak[0], len(alive))
        return img

    monkeypatch.setattr(image_batches, "open_image", counting_open)
    model = CrossModalHasher.from_pretrained(tiny_model)
    seen = 0
    for items, relaxed, failed in encode_photos(model, walk_photos([tmp_path / "lib"]), batch_size=4, workers=0):
        gc.collect()
        seen += len(items)
        assert len(alive) <= 4
    assert seen == 40 and 1 <= peak[0] <= 4


def test_exif_orientation_is_applied(tiny_model, tmp_path):
    """A phone photo stored sideways with EXIF orientation 6 encodes like the upright photo."""
    from crossmodal.model import CrossModalHasher

    upright = photo(tmp_path / "upright.jpg", 5, size=(240, 320), quality=100)
    stored = Image.open(upright).transpose(Image.Transpose.ROTATE_90)  # how the camera wrote the pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    stored.save(tmp_path / "sideways_exif.jpg", quality=100, exif=exif)
    stored.save(tmp_path / "sideways_plain.jpg", quality=100)
    model = CrossModalHasher.from_pretrained(tiny_model)
    files = walk_photos([tmp_path / "upright.jpg", tmp_path / "sideways_exif.jpg", tmp_path / "sideways_plain.jpg"])
    enc = model.image_encoder
    sources = image_batches.PhotoFiles([f.path for f in files], enc.image_size)
    decoded = image_batches.decoded_pixels(sources, enc.transform(train=False), range(len(files)))  # what the CNN is fed
    pixels = {Path(f.path).name: x for f, x in zip(files, decoded)}
    same = (pixels["sideways_exif.jpg"] - pixels["upright.jpg"]).abs().mean()
    different = (pixels["sideways_plain.jpg"] - pixels["upright.jpg"]).abs().mean()
    assert same < 0.1 * different, (same, different)


def test_killed_build_resumes_where_it_stopped(tiny_model, tmp_path):
    """A real ``index build`` process is SIGKILLed after its first committed chunks; the
    same command run again finishes the job without reading those photos again."""
    lib = tmp_path / "lib"
    for i in range(60):
        photo(lib / f"{i % 3}" / f"p{i:02d}.jpg", i)
    out = tmp_path / "idx"
    cmd = [*CLI, "index", "build", "--model", str(tiny_model), "--images", str(lib), "--bits", "32", "--out",
           str(out), "--chunk-size", "4", "--batch-size", "4", "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "CURRENT").is_file() and read_current_version(out) >= "v-000003":  # empty index + 2 chunks
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the build finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = len(keys_in(out))
    assert 8 <= before < 60
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "resuming" in res.stdout
    assert f"already present {before}" in res.stdout
    idx = CrossModalIndex.load(out)
    assert len(keys_in(out)) == 60 == idx.count("image")  # nothing twice, nothing lost


def test_sync_adds_updates_removes_and_is_idempotent(tiny_model, library, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", "build", "--model", str(tiny_model), "--images", str(library), "--bits", "32",
                 "--out", str(out), "--workers", "0"]) == 0
    capsys.readouterr()
    photo(library / "2025" / "new.jpg", 50)  # new
    # changed content, unlike any noise photo (so its code differs whatever the model)
    checkerboard = np.kron(np.indices((6, 8)).sum(0) % 2, np.ones((40, 40)))[..., None] * np.array([255, 40, 0])
    Image.fromarray(checkerboard.astype(np.uint8)).save(library / "2024" / "a.jpg", quality=90)
    os.utime(library / "f.jpg", ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same content
    (library / "2024" / "summer" / "b.jpg").unlink()  # deleted
    outside = photo(tmp_path / "elsewhere" / "keep.jpg", 52)
    assert main(["index", "add", "--index", str(out), "--images", str(outside), "--workers", "0"]) == 0
    assert _distance_to(out, library / "2024" / "a.jpg") > 0  # the index still has the old a.jpg
    capsys.readouterr()
    assert main(["index", "sync", "--index", str(out), "--images", str(library), "--workers", "0"]) == 0
    line = capsys.readouterr().out
    assert "added 1, updated 1, removed 1, unchanged 5, unreadable 1" in line, line
    names = {Path(k).name for k in keys_in(out)}
    assert "new.jpg" in names and "b.jpg" not in names and "keep.jpg" in names  # outside the synced folder: kept
    assert _distance_to(out, library / "2024" / "a.jpg") == 0  # re-encoded
    f_meta = next(m for m in CrossModalIndex.load(out).items_of("image") if m["key"].endswith("f.jpg"))
    assert f_meta["extra"]["mtime_ns"] == os.stat(library / "f.jpg").st_mtime_ns  # re-stamped
    version = read_current_version(out)
    assert main(["index", "sync", "--index", str(out), "--images", str(library), "--workers", "0"]) == 0
    assert "added 0, updated 0, removed 0, unchanged 7" in capsys.readouterr().out
    assert read_current_version(out) == version  # nothing changed: no new version


def _distance_to(index_dir, path: Path) -> int:
    """Hamming distance between what ``path`` holds now and what the index has for it."""
    from retrieval.search import Searcher

    searcher = Searcher.open(index_dir)
    hits = searcher.search_images([Image.open(path)], "image", k=searcher.index.count("image"))[0]
    return next(h.distance for h in hits if h.key == str(path.resolve()))


def test_thumbnails_come_from_the_original_photo(tiny_model, tmp_path):
    """A 12-MP phone photo stored sideways (EXIF orientation 6): the service's thumbnail is
    decoded reduced from the original file (no copy of the library), and is upright."""
    from fastapi.testclient import TestClient

    from retrieval.search import Searcher
    from retrieval.service import create_app

    upright = Image.open(photo(tmp_path / "upright.jpg", 7, size=(4032, 3024), quality=85))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the camera wrote the pixels turned left
    big = tmp_path / "lib" / "big.jpg"
    big.parent.mkdir()
    upright.transpose(Image.Transpose.ROTATE_90).save(big, quality=85, exif=exif)
    assert Image.open(big).size == (3024, 4032)
    out = tmp_path / "idx"
    assert main(["index", "build", "--model", str(tiny_model), "--images", str(big), "--bits", "32",
                 "--out", str(out), "--workers", "0"]) == 0
    searcher = Searcher.open(out)
    client = TestClient(create_app({32: searcher}))
    item = next(searcher.index.items_of("image"))
    res = client.get(f"/api/thumbnails/{item['id']}", params={"size": 128})
    assert res.status_code == 200
    thumb = Image.open(io.BytesIO(res.content))
    assert thumb.size == (128, 96)  # landscape, as displayed
    expected = np.asarray(upright.resize(thumb.size), np.float32)
    got = np.asarray(thumb.convert("RGB"), np.float32)
    turned = np.asarray(upright.rotate(180).resize(thumb.size), np.float32)  # orientation applied the wrong way
    assert np.abs(got - expected).mean() < 0.5 * np.abs(got - turned).mean()
