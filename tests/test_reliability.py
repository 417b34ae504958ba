"""Nothing lost, nobody wedged: concurrent writers, kills at every point of a save,
careless arguments and bad inputs, each as a user meets them (real processes, real
files, a real server)."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from crossmodal.cli import main
from retrieval.index import CrossModalIndex, NotAnIndex, read_current_version
from retrieval.store import item_id

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "crossmodal.cli"]


def run_cli(*args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, **kw)


def texts_in(index_dir) -> set[str]:
    idx = CrossModalIndex.load(index_dir)
    rows = idx.metadata.db.execute("SELECT key FROM items WHERE modality = 'text'").fetchall()
    return {r[0] for r in rows}


@pytest.fixture()
def index_dir(tiny_model, tiny_data, feature_cache_dir, tmp_path):
    """A fresh small index (16 images, 80 captions) per test."""
    out = tmp_path / "idx"
    assert main(["index", "build", "--model", str(tiny_model), "--data", str(tiny_data), "--split", "test",
                 "--bits", "32", "--cache-dir", str(feature_cache_dir), "--out", str(out)]) == 0
    return out


# ---- writers ------------------------------------------------------------------------------
def test_two_concurrent_index_adds_keep_every_item(index_dir):
    before = texts_in(index_dir)
    batches = [[f"writer {w} caption {n}" for n in range(5)] for w in range(2)]
    procs = [subprocess.Popen([*CLI, "index", "add", "--index", str(index_dir), "--texts", *b],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for b in batches]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("captions: added 5, already present 0" in o for o, _ in outs)
    assert texts_in(index_dir) == before | set(batches[0]) | set(batches[1])


PAUSE = 20  # seconds writer A holds the lock when B waits for it


@pytest.mark.parametrize("locking", [True, False], ids=["locked", "lock-disabled"])
def test_a_writer_waits_for_the_one_holding_the_lock(index_dir, tmp_path, locking):
    """Forced overlap: writer A loads the index and holds it (paused) while writer B starts
    and reaches its commit. With the lock, B waits (A's pause runs out first) and both sets
    of captions survive; with locking switched off (a test-only switch) B commits inside
    A's pause, A is released after it and its save drops B's captions, so this test is
    shown to fail without the lock."""
    before = texts_in(index_dir)
    marker = tmp_path / "a-holds-the-lock"
    no_lock = {} if locking else {"CROSSMODAL_TEST_NO_LOCK": "1"}
    a_texts, b_texts = ["writer A caption one", "writer A caption two"], ["writer B caption one"]
    a = subprocess.Popen([*CLI, "index", "add", "--index", str(index_dir), "--texts", *a_texts],
                         env={**os.environ, **no_lock,
                              "CROSSMODAL_PAUSE_AT": f"loaded:{PAUSE if locking else 10 * PAUSE}:{marker}"},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not marker.exists():
        assert a.poll() is None and time.time() < deadline, a.communicate()
        time.sleep(0.05)
    paused_at = time.time()
    b = run_cli("index", "add", "--index", index_dir, "--texts", *b_texts, env=no_lock)
    b_done = time.time()
    Path(f"{marker}.release").touch()  # unlocked: let A go on only now, whatever B's start-up cost
    a_out = a.communicate(timeout=300)
    assert a.returncode == 0 and b.returncode == 0, (a_out, b.stderr)
    found = texts_in(index_dir)
    if locking:
        assert found == before | set(a_texts) | set(b_texts)
        assert b_done - paused_at >= PAUSE - 1  # B waited for A to release the lock
    else:
        assert set(b_texts).isdisjoint(found) and set(a_texts) <= found  # the lost update the lock prevents


def test_server_writes_and_cli_adds_do_not_overwrite_each_other(index_dir, tmp_path):
    from test_service import _free_port, _start

    port = _free_port()
    proc = _start(["--index", str(index_dir), "--allow-writes", "--write-token", "t0k"], port)
    base = f"http://127.0.0.1:{port}"
    try:
        photo = tmp_path / "photo.png"
        Image.new("RGB", (48, 48), (10, 200, 30)).save(photo)
        res = run_cli("index", "add", "--index", index_dir, "--images", photo)
        assert res.returncode == 0, res.stderr
        # the server serves the CLI's addition without a restart ...
        stats = httpx.get(f"{base}/api/stats").json()
        assert stats["indexes"]["32"]["counts"]["image"] == 17
        # ... and bases its own write on it
        r = httpx.post(f"{base}/api/index/texts", json={"texts": ["a caption from the web page"]},
                       headers={"Authorization": "Bearer t0k"})
        assert r.status_code == 200 and r.json()["added"] == 1
        res = run_cli("index", "add", "--index", index_dir, "--texts", "a caption from the command line")
        assert res.returncode == 0, res.stderr
        idx = CrossModalIndex.load(index_dir)
        assert idx.count("image") == 17 and str(photo.resolve()) in {
            r[0] for r in idx.metadata.db.execute("SELECT key FROM items WHERE modality='image'")}
        assert {"a caption from the web page", "a caption from the command line"} <= texts_in(index_dir)
        hits = httpx.get(f"{base}/api/search/text", params={"q": "x", "target": "text", "k": 200}).json()["results"]
        assert "a caption from the command line" in {h["source"] for h in hits}
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_stray_version_newer_than_current_does_not_wedge_the_index(index_dir, capsys):
    live = read_current_version(index_dir)
    stray = f"v-{int(live.split('-')[1]) + 1:06d}"
    shutil.copytree(index_dir / live, index_dir / stray)  # what a kill before the CURRENT switch leaves
    assert main(["index", "add", "--index", str(index_dir), "--texts", "after the crash"]) == 0
    assert "after the crash" in texts_in(index_dir)
    assert main(["index", "remove", "--index", str(index_dir), "--modality", "text", "after the crash"]) == 0
    assert "after the crash" not in texts_in(index_dir)


@pytest.mark.parametrize("point", ["version-files-written", "version-renamed", "current-tmp-written",
                                   "current-switched"])
def test_sigkill_during_a_save_leaves_a_usable_index(index_dir, point):
    before = texts_in(index_dir)
    res = run_cli("index", "add", "--index", index_dir, "--texts", "the killed write",
                  env={"CROSSMODAL_KILL_AT": point})
    assert res.returncode == -signal.SIGKILL, res.stderr
    after = texts_in(index_dir)  # loads: checksums verified
    assert before <= after
    assert ("the killed write" in after) == (point == "current-switched")
    res = run_cli("search", "--index", index_dir, "--text", "a red circle", "-k", "3", "--json")
    assert res.returncode == 0 and len(json.loads(res.stdout)["results"]) == 3
    res = run_cli("index", "add", "--index", index_dir, "--texts", "the next write")
    assert res.returncode == 0, res.stderr
    assert texts_in(index_dir) >= before | {"the next write"}
    assert not [p.name for p in index_dir.iterdir() if p.name.endswith(".tmp")]


def test_load_messages_say_what_is_wrong(index_dir):
    live = read_current_version(index_dir)
    manifest = index_dir / live / "manifest.json"
    m = json.loads(manifest.read_text())
    del m["files"]
    manifest.write_text(json.dumps(m))
    with pytest.raises(Exception, match="lacks 'files'.*rebuild it"):
        CrossModalIndex.load(index_dir)
    (index_dir / "CURRENT").write_text("v-000099")
    with pytest.raises(NotAnIndex, match="names version v-000099, which is missing"):
        CrossModalIndex.load(index_dir)


# ---- index add / remove that do nothing ---------------------------------------------------------
def test_add_with_nothing_readable_fails_and_writes_no_version(index_dir, tmp_path, capsys):
    live = read_current_version(index_dir)
    assert main(["index", "add", "--index", str(index_dir)]) == 2
    assert "nothing to add" in capsys.readouterr().err
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    assert main(["index", "add", "--index", str(index_dir), "--images", str(bad)]) == 2
    assert "nothing added" in capsys.readouterr().err
    assert read_current_version(index_dir) == live


def test_remove_takes_relative_paths_and_refuses_unknown_keys(index_dir, tmp_path, monkeypatch, capsys):
    photo = tmp_path / "pics" / "p.png"
    photo.parent.mkdir()
    Image.new("RGB", (40, 40), (0, 0, 255)).save(photo)
    monkeypatch.chdir(tmp_path)
    assert main(["index", "add", "--index", str(index_dir), "--images", "pics/p.png"]) == 0
    live = read_current_version(index_dir)
    assert main(["index", "remove", "--index", str(index_dir), "--modality", "image", "pics/nope.png"]) == 2
    assert "nothing removed" in capsys.readouterr().err
    assert read_current_version(index_dir) == live
    assert main(["index", "remove", "--index", str(index_dir), "--modality", "image", "pics/p.png"]) == 0
    assert "removed 1" in capsys.readouterr().out
    assert not CrossModalIndex.load(index_dir).metadata.existing([item_id("image", str(photo.resolve()))])


def test_index_build_refuses_a_foreign_out_before_any_work(tiny_model, tiny_data, tmp_path, capsys):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("mine")
    cache = tmp_path / "fresh-cache"
    assert main(["index", "build", "--model", str(tiny_model), "--data", str(tiny_data), "--bits", "32",
                 "--cache-dir", str(cache), "--out", str(out)]) == 2
    assert "not a crossmodal index" in capsys.readouterr().err
    assert (out / "todo.txt").read_text() == "mine"
    assert not cache.exists()  # refused before feature extraction or even screening


# ---- search arguments ---------------------------------------------------------------------------
def test_search_argument_limits(index_dir, capsys):
    assert main(["search", "--index", str(index_dir), "--text", "a red circle", "-k", "1000000000", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 16  # capped at the index size
    for bad in (["--rerank", "-5"], ["--radius", "-1"], ["-k", "0"]):
        with pytest.raises(SystemExit) as e:
            main(["search", "--index", str(index_dir), "--text", "a red circle", *bad])
        assert e.value.code == 2
        assert "must be at least" in capsys.readouterr().err
    assert main(["search", "--index", str(index_dir), "--text", "   "]) == 2
    assert "must not be empty" in capsys.readouterr().err


# ---- the service -------------------------------------------------------------------------------
def test_service_limits_bombs_and_huge_ids(index_dir, tmp_path):
    from test_service import _free_port, _start

    port = _free_port()
    proc = _start(["--index", str(index_dir), "--allow-writes", "--write-token", "t", "--max-megapixels", "2"], port)
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer t"}
    try:
        for ident in (str(2 ** 63), str(2 ** 64 + 5), "-1"):
            for route in ("items", "thumbnails"):
                r = httpx.get(f"{base}/api/{route}/{ident}")
                assert r.status_code == 404 and r.json() == {"error": "no such item"}
        assert httpx.get(f"{base}/api/search/text", params={"q": "   "}).status_code == 422
        for texts in ([""], ["   "], ["x" * 200_000]):
            r = httpx.post(f"{base}/api/index/texts", json={"texts": texts}, headers=auth)
            assert r.status_code == 422, texts[0][:10]
        buf = io.BytesIO()
        Image.new("L", (2000, 1500)).save(buf, format="PNG")  # 3 MP of zeros: a few KB on the wire
        assert len(buf.getvalue()) < 100_000
        r = httpx.post(f"{base}/api/search/image", files={"file": ("bomb.png", buf.getvalue(), "image/png")})
        assert r.status_code == 413 and "exceeds the limit of 2 MP" in r.json()["error"]
        assert httpx.get(f"{base}/api/health").status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_pixel_bomb_is_refused_from_its_header():
    from crossmodal.data.images import ImageTooLarge, open_image

    buf = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buf, format="PNG")  # 144 MP in a small file
    with pytest.raises(ImageTooLarge, match="144 MP exceeds the limit of 40 MP"):
        open_image(buf.getvalue())


def test_large_jpegs_decode_reduced_but_not_below_the_encoder_size_and_upright():
    from crossmodal.data.images import open_image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.fromarray(rng.integers(0, 255, (1500, 2000, 3), dtype=np.uint8)).save(buf, "JPEG", exif=exif)
    img = open_image(buf.getvalue(), min_side=224)
    assert min(img.size) >= 224 and max(img.size) < 2000 / 2  # reduced by DCT scaling
    assert img.size[1] > img.size[0]  # portrait after EXIF rotation
    assert open_image(buf.getvalue()).size == (1500, 2000)


# ---- datasets ----------------------------------------------------------------------------------
def _write_dataset_with_bad_rows(out: Path) -> None:
    """A prepared dataset where one image's bytes were damaged after preparing and one
    item's only caption is blank (as an edited or hand-made dataset can have)."""
    from datasets import Dataset, DatasetDict

    from crossmodal.data.format import _features
    from crossmodal.data.synthetic import synthetic_splits

    splits = {}
    for split, records in synthetic_splits(train=24, dev=8, test=8, seed=3, size=48).items():
        rows = []
        for n, r in enumerate(records):
            buf = io.BytesIO()
            Image.open(io.BytesIO(r["image"])).save(buf, format="PNG") if isinstance(r["image"], bytes) \
                else r["image"].save(buf, format="PNG")
            data = buf.getvalue()
            caps = list(r["captions"])
            if split == "train" and n == 3:
                data = data[: len(data) // 3]  # truncated
            if split == "train" and n == 5:
                caps = ["   "]
            if split == "train" and n == 6:
                caps = caps + [""]
            rows.append({"id": r["id"], "image": {"bytes": data, "path": None}, "captions": caps,
                         "labels": list(r.get("labels", []))})
        splits[split] = Dataset.from_list(rows, features=_features())
    DatasetDict(splits).save_to_disk(str(out))


def test_training_and_indexing_skip_a_corrupt_image_and_blank_captions(tmp_path):
    data = tmp_path / "data"
    _write_dataset_with_bad_rows(data)
    from datasets import load_from_disk
    train_ids = load_from_disk(str(data))["train"]["id"]
    res = run_cli("train", "--data", data, "--out", tmp_path / "m", "--image-encoder", "small-cnn",
                  "--image-weights", "none", "--image-size", "32", "--text-encoder", "gru", "--text-vocab-size", "100",
                  "--text-hidden", "16", "--head-hidden", "32", "--bits", "16", "--epochs", "2", "--batch-size", "8",
                  "--cache-dir", tmp_path / "cache")
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"skipping item {train_ids[3]!r}: unreadable image" in res.stderr
    assert f"skipping item {train_ids[5]!r}: no non-empty caption" in res.stderr
    assert "train: skipped 1 unreadable image(s), 1 item(s) without a caption, 2 empty caption(s)" in res.stdout
    res = run_cli("index", "build", "--model", tmp_path / "m", "--data", data, "--split", "train", "--bits", "16",
                  "--cache-dir", tmp_path / "cache", "--out", tmp_path / "idx")
    assert res.returncode == 0, res.stderr[-2000:]
    idx = CrossModalIndex.load(tmp_path / "idx")
    assert idx.count("image") == 22
    # item metadata points at the item's own row of the dataset as stored
    meta = idx.metadata.get([item_id("image", train_ids[7])])[item_id("image", train_ids[7])]
    assert meta["extra"]["row"] == 7
    res = run_cli("encode", "--model", tmp_path / "m", "--data", data, "--split", "train", "--out", tmp_path / "c.npz")
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(np.load(tmp_path / "c.npz")["image_ids"]) == 22


def _prepare(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "data_scripts" / "prepare_folder.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def _photo_folder(root: Path, n: int = 10, manifest: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        Image.new("RGB", (32, 32), (i * 20, 0, 0)).save(root / f"p{i}.png")
        lines.append(json.dumps({"image": f"p{i}.png", "caption": f"photo number {i}"}))
    (root / "manifest.jsonl").write_text(manifest if manifest is not None else "\n".join(lines) + "\n")
    return root


def _one_line_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert "Traceback" not in res.stderr and sum("error:" in line for line in lines) == 1, res.stderr
    assert "error:" in lines[-1], res.stderr
    for needle in needles:
        assert needle in res.stderr, res.stderr


def test_prepare_never_deletes_what_it_does_not_own(tmp_path):
    photos = _photo_folder(tmp_path / "photos")
    before = sorted(p.name for p in photos.iterdir())
    _one_line_error(_prepare("--source", photos, "--out", photos), "would delete the source")
    _one_line_error(_prepare("--source", photos, "--out", photos / "prepared"), "lies inside --source")
    _one_line_error(_prepare("--source", photos, "--out", tmp_path), "contains")
    assert sorted(p.name for p in photos.iterdir()) == before
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    _one_line_error(_prepare("--source", photos, "--out", notes), "--overwrite")
    assert (notes / "todo.txt").read_text() == "keep me"
    good = tmp_path / "prepared"
    assert _prepare("--source", photos, "--out", good).returncode == 0
    # a failed re-prepare (blank captions everywhere) leaves the old dataset as it was
    (photos / "manifest.jsonl").write_text("".join(json.dumps({"image": f"p{i}.png", "caption": " "}) + "\n"
                                                   for i in range(10)))
    _one_line_error(_prepare("--source", photos, "--out", good), "would be empty")
    from crossmodal.data import load_prepared
    assert sum(len(ds) for ds in load_prepared(good).values()) == 10
    assert _prepare("--source", photos, "--out", notes, "--overwrite").returncode == 2  # still empty: refused
    assert (notes / "todo.txt").exists()


@pytest.mark.parametrize("manifest,needles", [
    ('{"image": "p0.png", "caption": "ok"}\n{"image": "p1.png", "caption": \n', ["manifest.jsonl:2", "not valid JSON"]),
    ('{"image": "p0.png", "text": "ok"}\n', ["no 'captions' or 'caption'"]),
    ('{"picture": "p0.png", "caption": "ok"}\n', ["no 'image'"]),
    ('{"image": "../outside.png", "caption": "ok"}\n', ["manifest.jsonl:1", "outside", "--allow-outside"]),
    ('{"image": "/etc/hostname", "caption": "ok"}\n', ["outside", "--allow-outside"]),
])
def test_bad_manifests_get_one_line(tmp_path, manifest, needles):
    photos = _photo_folder(tmp_path / "photos", manifest=manifest)
    _one_line_error(_prepare("--source", photos, "--out", tmp_path / "out"), *needles)
    assert not (tmp_path / "out").exists()


def test_non_utf8_csv_missing_source_and_duplicate_ids(tmp_path):
    photos = _photo_folder(tmp_path / "photos")
    (photos / "manifest.jsonl").unlink()
    (photos / "manifest.csv").write_bytes("image,caption\np0.png,caf\xe9 au lait\n".encode("latin-1"))
    _one_line_error(_prepare("--source", photos, "--out", tmp_path / "o1"), "manifest.csv", "not UTF-8")
    _one_line_error(_prepare("--source", tmp_path / "nowhere", "--out", tmp_path / "o2"), "nowhere")
    rows = "".join(json.dumps({"id": "same" if i < 2 else f"i{i}", "image": f"p{i}.png", "caption": f"c{i}",
                               "split": "train" if i % 2 else "test"}) + "\n" for i in range(10))
    (photos / "manifest.csv").unlink()
    (photos / "manifest.jsonl").write_text(rows)
    _one_line_error(_prepare("--source", photos, "--out", tmp_path / "o3"), "'same' appears twice", "--dedupe")
    res = _prepare("--source", photos, "--out", tmp_path / "o3", "--dedupe")
    assert res.returncode == 0 and "1 duplicated ids" in res.stdout


def test_allow_outside_accepts_paths_outside_the_source(tmp_path):
    Image.new("RGB", (32, 32), "red").save(tmp_path / "outside.png")
    lines = [json.dumps({"image": "../outside.png", "caption": "a red square", "split": "train"})]
    lines += [json.dumps({"image": f"p{i}.png", "caption": f"c{i}", "split": "train"}) for i in range(3)]
    photos = _photo_folder(tmp_path / "photos", n=3, manifest="\n".join(lines) + "\n")
    res = _prepare("--source", photos, "--out", tmp_path / "out", "--allow-outside")
    assert res.returncode == 0, res.stderr
    assert "train: 4 items" in res.stdout
