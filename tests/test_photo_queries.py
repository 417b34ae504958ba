"""Photo queries from the command line, as a user runs them: folders, dates (EXIF and
file times), date order, a score cut-off, exclusion, text + image; and the edges a fault
probe found (renamed folders, bad index parameters, unreadable builds, hand edits)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.index import CrossModalIndex, IndexChanges, NewIndex, read_manifest, write_index
from retrieval.store import Item

CLI = [sys.executable, "-m", "crossmodal.cli"]


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(os.fsdecode, args)], capture_output=True, text=True, timeout=600)


def one_line_error(res: subprocess.CompletedProcess, *words: str) -> None:
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for w in words:
        assert w in lines[0], lines[0]


def photo(path: Path, seed: int, taken: str | None = None, mtime: float | None = None) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if taken:
        exif.get_ifd(0x8769)[36867] = taken
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(path, exif=exif)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def two_years(root: Path, per_year: int, second_year: int) -> None:
    """root/2021/a*.jpg taken in May 2021, root/<second_year>/b*.jpg taken from January on (EXIF)."""
    for i in range(per_year):
        photo(root / "2021" / f"a{i}.jpg", i, taken=f"2021:05:0{i + 1} 10:00:00")
        photo(root / str(second_year) / f"b{i}.jpg", 10 + i, taken=f"{second_year}:0{i + 1}:15 12:00:00")


def build_photo_index(model, root: Path) -> Path:
    idx = root.parent / "idx"
    res = cli("index", "build", "--model", model, "--images", root, "--workers", "0", "--bits", "32", "--out", idx)
    assert res.returncode == 0, res.stderr[-2000:]
    return idx


@pytest.fixture(scope="module")
def dated_library(tiny_model, tmp_path_factory):
    """lib/2021 (EXIF 2021), lib/2022 (EXIF 2022), lib/scans (no EXIF: file times in 2019)."""
    root = tmp_path_factory.mktemp("dated") / "lib"
    two_years(root, 3, 2022)
    for i in range(2):
        photo(root / "scans" / f"s{i}.jpg", 20 + i, mtime=1546300800 + 86400 * i)  # 2019-01-01, 2019-01-02 UTC
    idx = root.parent / "idx"
    res = cli("index", "build", "--model", tiny_model, "--images", root, "--workers", "0", "--bits", "32",
              "--out", idx)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "8 photo(s) seen: added 8, updated 0, already present 0, unreadable 0" in res.stdout
    return root, idx


def search(idx, *args) -> dict:
    res = cli("search", "--index", idx, "--json", *args)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout)


def test_folder_and_date_filters_sort_and_cut_off(dated_library):
    root, idx = dated_library
    everything = search(idx, "--text", "a red circle", "-k", "8")["results"]
    assert len(everything) == 8
    dates = {Path(h["key"]).name: h["extra"]["date"] for h in everything}
    assert dates["a0.jpg"] == "2021-05-01T10:00:00" and dates["b2.jpg"] == "2022-03-15T12:00:00"
    assert all(h["extra"]["date_from"] == "mtime" for h in everything if "/scans/" in h["key"])
    under = search(idx, "--text", "a red circle", "-k", "8", "--under", root / "2021")["results"]
    assert sorted(Path(h["key"]).name for h in under) == ["a0.jpg", "a1.jpg", "a2.jpg"]
    both = search(idx, "--text", "a red circle", "-k", "8", "--under", root / "2021", "--under", root / "scans")
    assert len(both["results"]) == 5
    after = search(idx, "--text", "a red circle", "-k", "8", "--after", "2022-01-01")["results"]
    assert sorted(Path(h["key"]).name for h in after) == ["b0.jpg", "b1.jpg", "b2.jpg"]
    window = search(idx, "--text", "a red circle", "-k", "8", "--after", "2021-05-02", "--before", "2022-02-01")
    assert sorted(Path(h["key"]).name for h in window["results"]) == ["a1.jpg", "a2.jpg", "b0.jpg"]
    by_date = search(idx, "--text", "a red circle", "-k", "8", "--sort", "date")["results"]
    assert {h["id"] for h in by_date} == {h["id"] for h in everything}  # the same results, reordered
    got = [h["extra"]["date"] for h in by_date]
    assert got == sorted(got, reverse=True) and got != [h["extra"]["date"] for h in everything]
    scores = sorted(h["score"] for h in everything)
    cut = (scores[3] + scores[4]) / 2
    kept = search(idx, "--text", "a red circle", "-k", "8", "--min-score", str(cut))["results"]
    assert [h["id"] for h in kept] == [h["id"] for h in everything if h["score"] >= cut] and len(kept) == 4


def test_exclusion_and_text_plus_image_queries(dated_library):
    root, idx = dated_library
    query = root / "2021" / "a0.jpg"
    alone = search(idx, "--image", query, "--target", "image", "-k", "8")["results"]
    assert Path(alone[0]["key"]) == query
    as_text = search(idx, "--text", "a blue square", "-k", "8")["results"]
    image_only = search(idx, "--image", query, "--text", "a blue square", "--mix", "1", "-k", "8")["results"]
    text_only = search(idx, "--image", query, "--text", "a blue square", "--mix", "0", "-k", "8")["results"]
    assert [h["id"] for h in image_only] == [h["id"] for h in alone]
    assert [h["id"] for h in text_only] == [h["id"] for h in as_text]
    # the command line's exclusion is the library's: the query pushed away from the concept
    from retrieval.search import Searcher, compose_query
    pushed = search(idx, "--text", "a blue square", "--not", "a red circle", "--not-weight", "1.5", "-k", "8")
    assert pushed["query"]["not"] == ["a red circle"]
    searcher = Searcher.open(idx)
    t, away = searcher.model.embed_texts(["a blue square", "a red circle"])
    expected = searcher.search_relaxed(compose_query(t, exclude=away[None], exclude_weight=1.5)[None], "image", 8)[0]
    assert [str(h["id"]) for h in pushed["results"]] == [str(h.id) for h in expected]
    assert [h.id for h in expected] != [h["id"] for h in as_text]  # it does move the ranking
    one_line_error(cli("search", "--index", idx, "--text", "x", "--mix", "0.5"), "--mix")
    one_line_error(cli("search", "--index", idx, "--text", "x", "--after", "yesterday"), "not a date")
    one_line_error(cli("search", "--index", idx, "--text", "x", "--target", "text", "--under", root), "captions")
    one_line_error(cli("search", "--index", idx, "--text", "x", "--min-score", "0.2", "--rerank", "0"), "re-ranked")


def test_dates_reach_an_older_index_on_its_next_sync(tiny_model, tmp_path):
    lib = tmp_path / "lib"
    photo(lib / "old.jpg", 1, taken="2018:07:04 09:30:00")
    idx = tmp_path / "idx"
    assert cli("index", "build", "--model", tiny_model, "--images", lib, "--workers", "0", "--bits", "32",
               "--out", idx).returncode == 0
    # as an earlier release left it: no date in the metadata
    from crossmodal.model import CrossModalHasher
    model = CrossModalHasher.from_pretrained(tiny_model)
    meta = next(iter(CrossModalIndex.load(idx).items_of("image")))
    undated = {k: v for k, v in meta["extra"].items() if k not in ("date", "date_from")}
    write_index(idx, model, IndexChanges().restamp("image", [Item(meta["key"], meta["source"], extra=undated)]))
    assert "date" not in next(iter(CrossModalIndex.load(idx).items_of("image")))["extra"]
    res = cli("index", "sync", "--index", idx, "--images", lib, "--workers", "0")
    assert res.returncode == 0 and "unchanged 1" in res.stdout, res.stdout + res.stderr
    assert next(iter(CrossModalIndex.load(idx).items_of("image")))["extra"]["date"] == "2018-07-04T09:30:00"


def test_a_renamed_folder_synced_then_pruned_keeps_the_count(tiny_model, tmp_path):
    lib = tmp_path / "Pictures"
    for i in range(3):
        photo(lib / "trip" / f"p{i}.jpg", i)
    photo(lib / "home.jpg", 9)
    idx = tmp_path / "idx"
    assert cli("index", "build", "--model", tiny_model, "--images", lib, "--workers", "0", "--bits", "32",
               "--out", idx).returncode == 0
    (lib / "trip").rename(lib / "trip-2024")
    assert cli("index", "sync", "--index", idx, "--images", lib / "trip-2024", "--workers", "0").returncode == 0
    assert read_manifest(idx)["counts"]["image"] == 7  # the old paths are still there: doubled
    dry = cli("index", "sync", "--index", idx, "--prune-missing", "--dry-run")
    assert dry.returncode == 0 and "3 photo(s) whose files are gone would be removed" in dry.stdout, dry.stderr
    assert read_manifest(idx)["counts"]["image"] == 7
    res = cli("index", "sync", "--index", idx, "--prune-missing")
    assert res.returncode == 0 and "3 photo(s) whose files are gone removed" in res.stdout
    keys = {m["key"] for m in CrossModalIndex.load(idx).items_of("image")}
    assert len(keys) == 4 and all(os.path.exists(k) for k in keys)
    # a folder dropped from the library in one command
    res = cli("index", "remove", "--index", idx, "--under", lib / "trip-2024")
    assert res.returncode == 0 and "removed 3 photo(s)" in res.stdout
    assert {m["key"] for m in CrossModalIndex.load(idx).items_of("image")} == {str(lib / "home.jpg")}
    one_line_error(cli("index", "remove", "--index", idx, "--under", lib / "trip-2024"), "nothing removed")


@pytest.mark.parametrize("param,words", [("nlist=abc", "whole number"), ("nprobe=xyz", "whole number"),
                                         ("nlist=-1", ">= 1"), ("nlist=500", "needs at least 500 items"),
                                         ("nprobe=64", "more than nlist")])
def test_bad_index_parameters_stop_before_encoding_and_leave_nothing(tiny_model, tmp_path, param, words):
    lib = tmp_path / "lib"
    for i in range(4):
        photo(lib / f"p{i}.jpg", i)
    out = tmp_path / "idx"
    extra = ["--param", "nlist=2"] if param.startswith("nprobe=64") else []
    res = cli("index", "build", "--model", tiny_model, "--images", lib, "--workers", "0", "--type", "ivf",
              *extra, "--param", param, "--out", out)
    one_line_error(res, words)
    assert not out.exists()
    if param == "nlist=500":  # and the corrected command then builds (nothing was left to block it)
        ok = cli("index", "build", "--model", tiny_model, "--images", lib, "--workers", "0", "--type", "ivf",
                 "--param", "nlist=2", "--bits", "32", "--out", out)
        assert ok.returncode == 0, ok.stderr[-1500:]


def test_a_build_that_indexes_nothing_exits_2_and_leaves_no_index(tiny_model, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(3):
        (lib / f"broken{i}.jpg").write_text("not a jpeg")
    out = tmp_path / "idx"
    res = cli("index", "build", "--model", tiny_model, "--images", lib, "--workers", "0", "--out", out)
    assert res.returncode == 2 and "3 of 3 photo(s) unreadable" in res.stderr and "no index was written" in res.stderr
    assert "Traceback" not in res.stderr and not out.exists()


def test_an_empty_index_left_by_a_failed_build_does_not_block_the_next(tiny_model, tmp_path):
    from crossmodal.model import CrossModalHasher

    out = tmp_path / "idx"
    model = CrossModalHasher.from_pretrained(tiny_model)
    write_index(out, model, None, create=NewIndex(32, "ivf", {"nlist": 1024}, build_inputs={"images": ["/gone"]}))
    lib = tmp_path / "lib"
    photo(lib / "p.jpg", 0)
    res = cli("index", "build", "--model", tiny_model, "--images", lib, "--workers", "0", "--bits", "32", "--out", out)
    assert res.returncode == 0 and "removed the empty index" in res.stderr, res.stderr[-1500:]
    assert read_manifest(out)["counts"] == {"image": 1} and read_manifest(out)["index_type"] == "flat"


def test_summary_counts_add_up(tiny_model, tmp_path):
    lib = tmp_path / "lib"
    for i in range(3):
        photo(lib / f"p{i}.jpg", i)
    (lib / "bad.jpg").write_text("no")
    out = tmp_path / "idx"
    res = cli("index", "build", "--model", tiny_model, "--images", lib, lib / "missing.jpg", "--workers", "0",
              "--bits", "32", "--out", out)
    assert res.returncode == 0
    assert "5 photo(s) seen: added 3, updated 0, already present 0, unreadable 2" in res.stdout, res.stdout
    photo(lib / "p0.jpg", 100)  # changed
    photo(lib / "p3.jpg", 3)  # new
    res = cli("index", "add", "--index", out, "--images", lib, "--texts", "a caption rides along", "--update",
              "--workers", "0")
    assert "5 photo(s) seen: added 1, updated 1, already present 2, unreadable 1" in res.stdout, res.stdout


def test_hand_edits_and_a_stray_lock_folder_are_one_line(tiny_model, tmp_path):
    lib = tmp_path / "lib"
    photo(lib / "p.jpg", 0)
    out = tmp_path / "idx"
    assert cli("index", "build", "--model", tiny_model, "--images", lib, "--workers", "0", "--bits", "32",
               "--out", out).returncode == 0
    manifest = out / (out / "CURRENT").read_text().strip() / "manifest.json"
    good = manifest.read_text()
    for edit, words in (({"nbits": 16}, "manifest"), ({"nbits": "64"}, "nbits"), ({"nbits": 12}, "multiple of 8")):
        manifest.write_text(json.dumps({**json.loads(good), **edit}))
        one_line_error(cli("search", "--index", out, "--text", "a dog"), *words.split())
    broken = json.loads(good)
    del broken["counts"]
    manifest.write_text(json.dumps(broken))
    one_line_error(cli("index", "info", "--index", out), "counts")
    manifest.write_text(good)
    (out / ".lock").unlink(missing_ok=True)
    (out / ".lock").mkdir()
    one_line_error(cli("index", "add", "--index", out, "--texts", "a new caption"), ".lock", "folder")
    shutil.rmtree(out / ".lock")
    assert cli("index", "add", "--index", out, "--texts", "fine again").returncode == 0


def test_video_sampling_limits_are_checked(tiny_model, tmp_path):
    res = cli("video", "add", "--index", tmp_path / "idx", "clip.mp4", "--max-frames", "0")
    assert res.returncode == 2 and "--max-frames: must be at least 1" in res.stderr


def test_duplicates_among_real_photos_find_every_planted_copy(tmp_path):
    """Issue V's check: 30 real photos and 4 planted copies (2 exact, 1 re-encoded, 1
    resized), the bundled model: four groups, each a copy with its original, no other."""
    from conftest import shared_path

    images = shared_path("flickr8k", "images")
    names = sorted(p.name for p in images.iterdir())[:30]
    lib = tmp_path / "Pictures"
    for i, name in enumerate(names):
        (lib / f"album{i % 3}").mkdir(parents=True, exist_ok=True)
        shutil.copy(images / name, lib / f"album{i % 3}" / name)
    copies = lib / "from-phone"
    copies.mkdir()
    shutil.copy(images / names[0], copies / "exact-1.jpg")
    shutil.copy(images / names[1], copies / "exact-2.jpg")
    Image.open(images / names[2]).save(copies / "resaved.jpg", quality=50)
    big = Image.open(images / names[3])
    big.resize((big.width * 3 // 4, big.height * 3 // 4), Image.LANCZOS).save(copies / "smaller.jpg", quality=90)
    idx = tmp_path / "idx"
    assert cli("index", "build", "--images", lib, "--out", idx).returncode == 0
    res = cli("duplicates", "--index", idx, "--json")
    assert res.returncode == 0, res.stderr
    groups = json.loads(res.stdout)["groups"]
    got = sorted(tuple(sorted(Path(k).name for k in g["keys"])) for g in groups)
    assert got == sorted([tuple(sorted(p)) for p in (("exact-1.jpg", names[0]), ("exact-2.jpg", names[1]),
                                                     ("resaved.jpg", names[2]), ("smaller.jpg", names[3]))])


def test_messages_say_what_is_true(dated_library, tmp_path):
    """A file given as --index is named as a file; a query image that is not one is named,
    not Pillow's in-memory buffer."""
    root, idx = dated_library
    afile = tmp_path / "notes.txt"
    afile.write_text("hello")
    one_line_error(cli("search", "--index", afile, "--text", "a dog"), "is a file, not an index")
    bad = tmp_path / "query.jpg"
    bad.write_text("not an image")
    res = cli("search", "--index", idx, "--image", bad)
    one_line_error(res, str(bad), "not an image file")
    assert "BytesIO" not in res.stderr
