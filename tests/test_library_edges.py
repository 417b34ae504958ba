"""The edges of a photo library: a missing drive during sync, symlinked folders, names
that are not UTF-8, empty and repeated builds. Real files, real commands."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from retrieval.index import CrossModalIndex, read_manifest

CLI = [sys.executable, "-m", "crossmodal.cli"]


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(os.fsdecode, args)], capture_output=True, text=True, timeout=600)


def photos_in(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"photo{seed}_{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(path)
        out.append(path)
    return out


def image_keys(index_dir) -> set[str]:
    return {row["key"] for row in CrossModalIndex.load(index_dir).items_of("image")}


def build(model, *roots, out) -> subprocess.CompletedProcess:
    return cli("index", "build", "--model", model, "--images", *roots, "--workers", "0", "--bits", "32", "--out", out)


def test_sync_of_a_missing_drive_removes_nothing(tiny_model, tmp_path):
    drive = tmp_path / "drive"
    photos_in(drive, 3)
    idx = tmp_path / "idx"
    assert build(tiny_model, drive, out=idx).returncode == 0
    version = read_manifest(idx)
    shutil.move(drive, tmp_path / "unplugged")
    res = cli("index", "sync", "--index", idx, "--images", drive, "--workers", "0")
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "does not exist" in res.stderr and "nothing" in res.stderr
    assert len(image_keys(idx)) == 3 and read_manifest(idx)["saved"] == version["saved"]


def test_photos_under_a_symlinked_folder_belong_to_the_root_named(tiny_model, tmp_path):
    library, elsewhere = tmp_path / "library", tmp_path / "elsewhere" / "trip"
    photos_in(library, 2)
    trip = photos_in(elsewhere, 2, seed=1)
    (library / "trip").symlink_to(elsewhere, target_is_directory=True)
    idx = tmp_path / "idx"
    assert build(tiny_model, library, out=idx).returncode == 0
    keys = image_keys(idx)
    assert len(keys) == 4 and {str(library / "trip" / p.name) for p in trip} <= keys  # keyed under the root
    trip[0].unlink()  # a photo goes from the linked folder
    assert cli("index", "sync", "--index", idx, "--images", library, "--workers", "0").returncode == 0
    assert len(image_keys(idx)) == 3
    (library / "trip").unlink()  # the link goes
    assert cli("index", "sync", "--index", idx, "--images", library, "--workers", "0").returncode == 0
    assert image_keys(idx) == {str(p) for p in library.glob("*.jpg")}


def test_a_name_that_is_not_utf8_is_indexed_with_the_others(tiny_model, tmp_path):
    folder = tmp_path / "samba"
    good = photos_in(folder, 5)
    odd = os.path.join(os.fsencode(folder), b"caf\xe9.jpg")  # Latin-1 from an old drive
    shutil.copy(good[0], odd)
    Image.fromarray(np.full((60, 80, 3), 200, np.uint8)).save(odd, format="JPEG")
    idx = tmp_path / "idx"
    res = build(tiny_model, folder, out=idx)
    assert res.returncode == 0, res.stderr[-2000:]
    keys = image_keys(idx)
    assert len(keys) == 6 and os.fsdecode(odd) in keys  # stored losslessly: the same bytes come back
    assert os.fsencode(next(k for k in keys if "caf" in k)) == odd
    res = cli("search", "--index", idx, "--image", good[0], "--target", "image", "-k", "6")
    assert res.returncode == 0 and "caf\ufffd.jpg" in res.stdout  # shown with a replacement character
    res = cli("search", "--index", idx, "--image", good[0], "--target", "image", "-k", "6", "--json")
    assert os.fsdecode(odd) in {h["key"] for h in json.loads(res.stdout)["results"]}
    assert cli("index", "sync", "--index", idx, "--images", folder, "--workers", "0").returncode == 0
    assert len(image_keys(idx)) == 6  # unchanged: the odd name is recognised as already indexed
    twin = os.path.join(os.fsencode(folder), b"copie-\xe9t\xe9.jpg")  # an exact copy under another odd name
    shutil.copy(good[1], twin)
    assert cli("index", "sync", "--index", idx, "--images", folder, "--workers", "0").returncode == 0
    res = cli("duplicates", "--index", idx, "--json")  # lossless JSON (surrogate escapes), and the plain listing
    assert res.returncode == 0 and [sorted(g["keys"]) for g in json.loads(res.stdout)["groups"]] == \
        [sorted([os.fsdecode(twin), str(good[1])])]
    res = cli("duplicates", "--index", idx)
    assert res.returncode == 0 and "copie-\ufffdt\ufffd.jpg" in res.stdout


def test_empty_build_exits_2_and_writes_nothing(tiny_model, tmp_path):
    (tmp_path / "empty").mkdir()
    res = build(tiny_model, tmp_path / "empty", out=tmp_path / "idx")
    assert res.returncode == 2 and "no photos found" in res.stderr
    assert not (tmp_path / "idx" / "CURRENT").exists()


def test_build_onto_another_index_is_refused_unless_overwrite(tiny_model, tiny_data, feature_cache_dir, tmp_path):
    photos = tmp_path / "photos"
    photos_in(photos, 3)
    idx = tmp_path / "idx"
    assert build(tiny_model, photos, out=idx).returncode == 0
    before = read_manifest(idx)
    res = cli("index", "build", "--model", tiny_model, "--data", tiny_data, "--bits", "32", "--cache-dir",
              feature_cache_dir, "--out", idx)
    assert res.returncode == 2 and "already holds an index (3 images, 0 texts)" in res.stderr
    assert "--overwrite" in res.stderr and read_manifest(idx) == before
    other = tmp_path / "other"
    photos_in(other, 1, seed=3)
    assert build(tiny_model, other, out=idx).returncode == 2  # other photos into it: refused too
    assert build(tiny_model, photos, out=idx).returncode == 0  # the same build again: resumes, nothing re-read
    assert len(image_keys(idx)) == 3
    res = cli("index", "build", "--model", tiny_model, "--data", tiny_data, "--bits", "32", "--cache-dir",
              feature_cache_dir, "--out", idx, "--overwrite")
    assert res.returncode == 0 and read_manifest(idx)["counts"] == {"image": 16, "text": 80}


def exact_matches(results: list[dict]) -> set[str]:
    """Keys at Hamming distance 0 (noise photos may share a code: ties are kept in insertion order)."""
    return {h["key"] for h in results if h["distance"] == 0}


def test_an_image_query_on_a_photo_library_finds_photos(tiny_model, tmp_path):
    from fastapi.testclient import TestClient

    from retrieval.search import Searcher
    from retrieval.service import create_app

    photos = photos_in(tmp_path / "p", 3)
    idx = tmp_path / "idx"
    assert build(tiny_model, tmp_path / "p", out=idx).returncode == 0
    res = cli("search", "--index", idx, "--image", photos[1], "--json")  # no --target: the index has no texts
    assert res.returncode == 0
    out = json.loads(res.stdout)
    assert out["target"] == "image" and str(photos[1]) in exact_matches(out["results"])
    client = TestClient(create_app({32: Searcher.open(idx)}))
    with open(photos[2], "rb") as f:
        got = client.post("/api/search/image", files={"file": ("q.jpg", f, "image/jpeg")}).json()
    assert got["target"] == "image" and str(photos[2]) in exact_matches(got["results"])


def test_text_that_is_not_utf8_is_one_line_or_a_json_4xx(tiny_model, tmp_path):
    from fastapi.testclient import TestClient

    from retrieval.search import Searcher
    from retrieval.service import create_app

    photos_in(tmp_path / "p", 2)
    idx = tmp_path / "idx"
    assert build(tiny_model, tmp_path / "p", out=idx).returncode == 0
    for argv in (["search", "--index", idx, "--text", b"red \xff circle"],
                 ["index", "add", "--index", idx, "--texts", b"caf\xe9 au lait"]):
        res = cli(*argv)
        assert res.returncode == 2 and "not valid UTF-8" in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    client = TestClient(create_app({32: Searcher.open(idx)}, allow_writes=True, token="t"))
    got = client.post("/api/index/texts", content='{"texts": ["\\ud800"]}',
                      headers={"Authorization": "Bearer t", "Content-Type": "application/json"})
    assert got.status_code == 422 and "UTF-8" in got.json()["error"]
    assert client.get("/api/health").status_code == 200  # the connection is still good


def test_baselines_fit_on_a_small_split():
    from retrieval.baselines import ITQ

    x = np.random.default_rng(0).normal(size=(8, 128)).astype(np.float32)  # 8 rows, 64 bits
    codes = ITQ(64).fit(x).project(x)
    assert codes.shape == (8, 64)


def test_index_types_that_cannot_remove_say_so_in_one_line(tiny_model, tiny_data, feature_cache_dir, tmp_path):
    photos_in(tmp_path / "p", 1)
    res = cli("index", "build", "--model", tiny_model, "--images", tmp_path / "p", "--type", "hnsw", "--bits", "32",
              "--out", tmp_path / "lib")
    assert res.returncode == 2 and "photo library needs" in res.stderr and not (tmp_path / "lib" / "CURRENT").exists()
    idx = tmp_path / "hnsw"
    assert cli("index", "build", "--model", tiny_model, "--data", tiny_data, "--type", "hnsw", "--bits", "32",
               "--cache-dir", feature_cache_dir, "--out", idx).returncode == 0
    key = next(CrossModalIndex.load(idx).items_of("image"))["key"]
    res = cli("index", "remove", "--index", idx, "--modality", "image", key)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "cannot remove" in res.stderr


def dataset_index(tiny_model, tiny_data, feature_cache_dir, out) -> Path:
    assert cli("index", "build", "--model", tiny_model, "--data", tiny_data, "--bits", "32", "--cache-dir",
               feature_cache_dir, "--out", out).returncode == 0
    return out


def test_a_writer_waiting_for_the_lock_says_for_whom_then_gives_up_in_one_line(tiny_model, tiny_data,
                                                                               feature_cache_dir, tmp_path):
    from filelock import FileLock

    idx = dataset_index(tiny_model, tiny_data, feature_cache_dir, tmp_path / "idx")
    before = read_manifest(idx)
    with FileLock(str(idx / ".lock")):  # another writer, busy
        (idx / ".lock.owner").write_text("pid 4242 (crossmodal index sync)")
        res = subprocess.run([*CLI, "index", "add", "--index", str(idx), "--texts", "a new caption"],
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, "CROSSMODAL_LOCK_TIMEOUT": "3"})
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 2, res.stderr
    assert lines[0].startswith("waiting for another writer (pid 4242 (crossmodal index sync))")
    assert "stayed locked" in lines[1] and "nothing was written" in lines[1]
    assert read_manifest(idx) == before


def _mount(*args) -> bool:
    """Mount as root where the sandbox allows it (else the test injects the error instead)."""
    return os.geteuid() == 0 and subprocess.run(["mount", *args], capture_output=True).returncode == 0


def test_a_full_disk_is_one_line_and_the_index_stays_as_it_was(tiny_model, tiny_data, feature_cache_dir, tmp_path,
                                                               monkeypatch, capsys):
    disk = tmp_path / "small-disk"
    disk.mkdir()
    if _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)):  # a real full filesystem
        try:
            idx = dataset_index(tiny_model, tiny_data, feature_cache_dir, disk / "idx")
            before = read_manifest(idx)
            free = shutil.disk_usage(disk).free
            (disk / "filler").write_bytes(b"\0" * max(0, free - 20_000))
            res = cli("index", "add", "--index", idx, "--texts", *[f"caption {i}" for i in range(50)])
            assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
            assert "the disk is full" in res.stderr and "free some space" in res.stderr
            assert read_manifest(idx) == before and CrossModalIndex.load(idx).count("text") == 80
            (disk / "filler").unlink()
            assert cli("index", "add", "--index", idx, "--texts", "caption after").returncode == 0
        finally:
            subprocess.run(["umount", "-l", str(disk)])
    else:  # an injected ENOSPC at the same place
        import errno

        from crossmodal.cli import main
        from retrieval.store import MetadataStore

        idx = dataset_index(tiny_model, tiny_data, feature_cache_dir, tmp_path / "idx")
        before = read_manifest(idx)
        monkeypatch.setattr(MetadataStore, "save", lambda self, path: (_ for _ in ()).throw(
            OSError(errno.ENOSPC, "No space left on device")))
        assert main(["index", "add", "--index", str(idx), "--texts", "a caption"]) == 2
        assert "the disk is full" in capsys.readouterr().err and read_manifest(idx) == before


def test_a_read_only_index_searches_and_refuses_writes_in_one_line(tiny_model, tiny_data, feature_cache_dir, tmp_path,
                                                                   monkeypatch, capsys):
    idx = dataset_index(tiny_model, tiny_data, feature_cache_dir, tmp_path / "idx")
    ro = tmp_path / "ro"
    ro.mkdir()
    if _mount("--bind", str(idx), str(ro)) and _mount("-o", "remount,ro,bind", str(ro)):  # a real read-only folder
        try:
            assert cli("search", "--index", ro, "--text", "a red circle").returncode == 0
            res = cli("index", "add", "--index", ro, "--texts", "a caption")
            assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
            assert "cannot be written here" in res.stderr and "searches work" in res.stderr
        finally:
            subprocess.run(["umount", "-l", str(ro)])
    else:  # no mounts here: the error a read-only folder gives, injected where the writer meets it
        import errno

        from filelock import FileLock

        from crossmodal.cli import main

        monkeypatch.setattr(FileLock, "acquire", lambda self, *a, **k: (_ for _ in ()).throw(
            OSError(errno.EROFS, "Read-only file system")))
        assert main(["index", "add", "--index", str(idx), "--texts", "a caption"]) == 2
        assert "cannot be written here" in capsys.readouterr().err


def test_photos_and_captions_added_together_are_one_commit(tiny_model, tmp_path):
    idx = tmp_path / "idx"
    assert build(tiny_model, photos_in(tmp_path / "first", 2)[0].parent, out=idx).returncode == 0
    before = (idx / "CURRENT").read_text().strip()
    new = photos_in(tmp_path / "more", 3, seed=4)
    res = cli("index", "add", "--index", idx, "--images", new[0].parent, "--texts", "a red kite", "a blue boat",
              "--workers", "0")
    assert res.returncode == 0, res.stderr
    after = (idx / "CURRENT").read_text().strip()
    assert int(after.split("-")[1]) == int(before.split("-")[1]) + 1  # photos and captions: one new version
    index = CrossModalIndex.load(idx)
    assert index.count("image") == 5 and index.count("text") == 2
    assert "3 photo(s) seen: added 3" in res.stdout and "captions: added 2, already present 0" in res.stdout
    # captions alone (no photo needs a commit) still go in, by themselves
    res = cli("index", "add", "--index", idx, "--images", new[0].parent, "--texts", "a green tent", "--workers", "0")
    assert res.returncode == 0 and CrossModalIndex.load(idx).count("text") == 3
