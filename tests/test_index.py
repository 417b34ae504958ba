"""Binary indexes: every type round-trips, add/remove/update, tie order, radius search
against brute force, atomic saves under SIGKILL, refusal of a mismatched model, and
Milvus Lite equal to faiss flat."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from crossmodal.codes import hamming_distances
from retrieval.backends import FaissBinaryIndex, UnsupportedOperation
from conftest import require_milvus_module
from retrieval.index import CrossModalIndex, IndexCorrupt, IndexMismatch, NotAnIndex, write_index
from retrieval.store import Item

TYPES = [("flat", {}), ("ivf", {"nlist": 8, "nprobe": 8}), ("hnsw", {"M": 8}), ("multihash", {"nhash": 2, "b": 8})]


def _codes(n, nbytes=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, nbytes), dtype=np.uint8)


def _index(n=500, kind="flat", params=None, nbits=64, seed=0):
    idx = CrossModalIndex(nbits, "fp-test", kind, params)
    codes = _codes(n, nbits // 8, seed)
    idx.add("image", [Item(key=f"img{i}", source=f"/p/{i}.jpg", labels=["a" if i % 2 else "b"]) for i in range(n)],
            codes)
    return idx, codes


@pytest.mark.parametrize("kind,params", TYPES)
def test_every_index_type_round_trips_with_identical_results(tmp_path, kind, params):
    idx, codes = _index(kind=kind, params=params)
    q = codes[:20].copy()
    q[:, 0] ^= 1  # one bit away from the first 20 items
    before = idx.search(q, "image", k=10)
    write_index(tmp_path / "idx", None, create=idx)
    loaded = CrossModalIndex.load(tmp_path / "idx", model_fingerprint="fp-test", nbits=64)
    after = loaded.search(q, "image", k=10)
    assert [[(h.id, h.distance) for h in r] for r in before] == [[(h.id, h.distance) for h in r] for r in after]
    assert before[0][0].key == "img0" and before[0][0].distance == 1 and before[0][0].source == "/p/0.jpg"
    assert loaded.info()["counts"] == {"image": 500} and loaded.index_type == kind


@pytest.mark.parametrize("nbits,k,queries", [(16, 500, 300), (32, 50, 1), (64, 100, 200)])
def test_faiss_heap_search_breaks_ties_by_position_like_the_counting_sort(nbits, k, queries):
    """The flat index searches with faiss' heap (faster for batches): its order at equal
    distances, also at the cut-off, must be the counting sort's (index position)."""
    import faiss

    codes = _codes(20000, nbits // 8, seed=nbits)
    heap, counting = faiss.IndexBinaryFlat(nbits), faiss.IndexBinaryFlat(nbits)
    counting.use_heap = False
    heap.add(codes)
    counting.add(codes)
    q = _codes(queries, nbits // 8, seed=7)
    assert np.array_equal(heap.search(q, k)[1], counting.search(q, k)[1])


def test_flat_search_is_exact_with_documented_tie_order():
    be = FaissBinaryIndex(32, "flat")
    codes = _codes(3000, 4, seed=1)
    codes[::5] = codes[0]  # many exact ties
    ids = np.random.default_rng(2).permutation(10**6)[:3000]  # ids not in insertion order
    be.add(ids, codes)
    q = codes[:7]
    D, I = be.search(q, 40)
    full = hamming_distances(q, codes)
    for r in range(len(q)):
        order = np.lexsort((np.arange(len(codes)), full[r]))[:40]  # (distance, insertion position)
        assert I[r].tolist() == ids[order].tolist()
        assert D[r].tolist() == full[r, order].tolist()


@pytest.mark.parametrize("kind,params", [("flat", {}), ("ivf", {"nlist": 4, "nprobe": 4}),
                                         ("multihash", {"nhash": 1, "b": 16, "nflip": 0})])
def test_radius_search_matches_bruteforce(kind, params):
    be = FaissBinaryIndex(16, kind, params)
    codes = _codes(2000, 2, seed=3)
    be.add(np.arange(2000), codes)
    q = codes[:10]
    full = hamming_distances(q, codes)
    radius = 0 if kind == "multihash" else 3  # multi-index hashing with no flips is exact at radius 0
    for r, (d, i) in enumerate(be.range_search(q, radius)):
        expect = np.flatnonzero(full[r] <= radius)
        assert sorted(i.tolist()) == expect.tolist()
        assert (np.diff(d) >= 0).all() and (d == full[r, i]).all()


def test_add_remove_update_without_rebuild():
    idx, codes = _index(100)
    assert idx.add("image", [Item(key="img5")], codes[5:6]) == {"added": 0, "replaced": 0, "skipped": 1}  # no dup
    assert idx.count("image") == 100
    idx.remove_keys("image", ["img5"])
    assert idx.count("image") == 99 and idx.search(codes[5:6], "image", k=1)[0][0].key != "img5"
    new_code = codes[7:8].copy()
    res = idx.add("image", [Item(key="img3", source="moved")], new_code, update=True)
    assert res["added"] == 1 and res["replaced"] == 1 and idx.count("image") == 99
    top = idx.search(new_code, "image", k=2)[0]
    assert {h.key for h in top if h.distance == 0} == {"img3", "img7"}
    assert [h for h in top if h.key == "img3"][0].source == "moved"


@pytest.mark.parametrize("kind", ["hnsw", "multihash"])
def test_indexes_without_removal_name_the_alternative(kind):
    idx, _ = _index(50, kind=kind)
    with pytest.raises(UnsupportedOperation, match="--type flat or --type ivf"):
        idx.remove_keys("image", ["img1"])


def test_rerank_breaks_ties_by_continuous_outputs():
    idx = CrossModalIndex(8, "fp")
    idx.keep_outputs("float16", candidates=0)  # outputs kept, re-ranked only when asked
    codes = np.array([[0b10101010]] * 3, dtype=np.uint8)
    floats = np.array([[0.1] * 8, [0.9] * 8, [0.5] * 8], dtype=np.float32) * np.array([1, -1] * 4)
    idx.add("text", [Item(key=k) for k in "abc"], codes, floats=floats)
    plain = idx.search(codes[:1], "text", k=3)[0]
    assert [h.key for h in plain] == ["a", "b", "c"]  # insertion order among ties
    q = np.array([[1, -1] * 4], dtype=np.float32) * np.array([1, 1, 1, 1, 1, 1, 1, 0.2])
    ranked = idx.search(codes[:1], "text", k=3, query_floats=q, rerank=3)[0]
    assert all(h.score is not None for h in ranked)
    assert [h.score for h in ranked] == sorted([h.score for h in ranked], reverse=True)


def test_load_refuses_mismatch_corruption_and_non_index(tmp_path):
    idx, _ = _index(20)
    write_index(tmp_path / "idx", None, create=idx)
    with pytest.raises(IndexMismatch, match="built by model fp-test"):
        CrossModalIndex.load(tmp_path / "idx", model_fingerprint="another")
    with pytest.raises(IndexMismatch, match="64-bit"):
        CrossModalIndex.load(tmp_path / "idx", nbits=32)
    with pytest.raises(NotAnIndex, match="not a crossmodal index"):
        CrossModalIndex.load(tmp_path)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(NotAnIndex, match="refusing to write"):
        write_index(tmp_path / "junk", None, create=idx)
    version = (tmp_path / "idx" / "CURRENT").read_text()
    f = tmp_path / "idx" / version / "image.faissbin"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch for image.faissbin"):
        CrossModalIndex.load(tmp_path / "idx")


def test_killed_save_leaves_previous_index_intact(tmp_path):
    """A process saving large indexes in a loop is SIGKILLed at random moments; the
    folder always loads, verifies, and holds one of the versions that was saved."""
    path = tmp_path / "idx"
    script = textwrap.dedent(f"""
        import numpy as np, sys
        from retrieval.index import CrossModalIndex, write_index
        from retrieval.store import Item
        rng = np.random.default_rng(0)
        idx = CrossModalIndex(64, "fp", "flat")
        n = 0
        while True:
            m = 200000
            idx.add("image", [Item(key=f"k{{n + i}}") for i in range(m)], rng.integers(0, 256, (m, 8), dtype=np.uint8))
            n += m
            write_index({str(path)!r}, None, create=idx, replace=True)
            print(n, flush=True)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    rng = np.random.default_rng(0)
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
        first = proc.stdout.readline()  # one complete save exists
        assert first.strip(), "the saving process died before its first save"
        time.sleep(float(rng.uniform(0.2, 1.5)))  # land somewhere inside a later save
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        committed = int(([first] + proc.stdout.read().split())[-1])  # the last save it reported finished
        loaded = CrossModalIndex.load(path)  # verifies every checksum
        n = loaded.count("image")
        # the last reported save is live, or the one after it if it finished before the kill landed
        assert n % 200000 == 0 and committed <= n <= committed + 200000, (committed, n)
        assert loaded.metadata.count("image") == n


def test_milvus_lite_equals_faiss_flat(tmp_path):
    require_milvus_module("pymilvus", reason="pymilvus comes with the test extras (an optional dependency)")
    require_milvus_module("milvus_lite", reason="milvus-lite comes with the test extras (an optional dependency)")
    from retrieval.milvus import MilvusBinaryIndex, MilvusOptions

    codes = _codes(3000, 8, seed=5)
    ids = np.arange(3000) * 11 + 3
    fa = FaissBinaryIndex(64, "flat")
    fa.add(ids, codes)
    mv = MilvusBinaryIndex(64, "codes", MilvusOptions(uri=str(tmp_path / "milvus.db")))
    mv.add(ids, codes)
    assert mv.ntotal == 3000
    q = codes[:25] ^ np.uint8(3)
    k = 20
    Df, If = fa.search(q, k)
    Dm, Im = mv.search(q, k)
    assert np.array_equal(Df, Dm)
    for r in range(len(q)):
        inner = Df[r] < Df[r, -1]  # below the boundary distance the sets must be identical, in the same order
        assert If[r][inner].tolist() == Im[r][inner].tolist()
    (df, i_f), (dm, i_m) = fa.range_search(q[:1], 20)[0], mv.range_search(q[:1], 20)[0]
    assert sorted(i_f.tolist()) == sorted(i_m.tolist()) and np.array_equal(np.sort(df), np.sort(dm))
    mv.remove(ids[:1])
    assert mv.ntotal == 2999 and mv.search(codes[:1], 1)[1][0, 0] != ids[0]


@pytest.mark.parametrize("field,value,says", [("format_version", "1", "'format_version' should be int"),
                                               ("files", [], "'files' should be an object"),
                                               ("nbits", "64", "'nbits' should be int"),
                                               ("nbits", 60, "positive multiple of 8")])
def test_a_hand_edited_manifest_is_named_not_a_traceback(tmp_path, field, value, says):
    idx, _ = _index(10)
    write_index(tmp_path / "idx", None, create=idx)
    live = tmp_path / "idx" / (tmp_path / "idx" / "CURRENT").read_text().strip()
    manifest = json.loads((live / "manifest.json").read_text())
    manifest[field] = value
    (live / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexCorrupt, match=says):
        CrossModalIndex.load(tmp_path / "idx")


def test_a_file_dropped_from_the_manifest_is_still_checked(tmp_path):
    idx, _ = _index(10)
    write_index(tmp_path / "idx", None, create=idx)
    live = tmp_path / "idx" / (tmp_path / "idx" / "CURRENT").read_text().strip()
    manifest = json.loads((live / "manifest.json").read_text())
    name = next(n for n in manifest["files"] if n.endswith(".faissbin"))
    del manifest["files"][name]
    (live / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexCorrupt, match=f"{name} in .* not listed in its manifest"):
        CrossModalIndex.load(tmp_path / "idx")


def test_the_writer_creates_applies_in_one_commit_and_writes_nothing_for_no_change(tmp_path):
    """write_index, the one writer, on vectors made elsewhere (SignCodes): creates the index
    where there is none, applies every step of one IndexChanges as one new version, writes
    no version when nothing changed, replaces on a rebuild, and refuses a missing index
    without a description of one to create."""
    from crossmodal.errors import InvalidInput
    from retrieval.index import IndexChanges, NewIndex, SignCodes, read_current_version

    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(6, 32))
    items = [Item(key=f"k{i}", source=f"text {i}") for i in range(6)]
    own = SignCodes("mine")
    with pytest.raises(NotAnIndex):
        write_index(tmp_path / "none", own, IndexChanges().add("text", items, vecs))
    first = write_index(tmp_path / "idx", own, IndexChanges().add("text", items[:4], vecs[:4]),
                        create=NewIndex(32, rerank_dtype="float16"))
    assert first.added == 4 and first.version == read_current_version(tmp_path / "idx")
    # one commit: adds (one already there), re-stamps, removes by key and by rule
    changes = (IndexChanges().add("text", items[3:], vecs[3:])
               .restamp("text", [Item(key="k0", source="text 0, re-stamped")])
               .remove_keys("text", ["k1"])
               .remove_where("text", lambda meta: meta["source"] == "text 2"))
    report = write_index(tmp_path / "idx", own, changes, create=NewIndex(32))  # create is ignored: it exists
    assert (report.added, report.skipped, report.restamped, report.removed) == (2, 1, 1, 2)
    assert report.version == "v-000002" and report.counts == {"text": 4}
    idx = CrossModalIndex.load(tmp_path / "idx", model_fingerprint="mine", nbits=32)
    assert sorted(m["key"] for m in idx.items_of("text")) == ["k0", "k3", "k4", "k5"]
    assert next(m for m in idx.items_of("text") if m["key"] == "k0")["source"] == "text 0, re-stamped"
    hits = idx.search(own.quantize(vecs[4:5], 32), "text", k=1, query_floats=vecs[4:5].astype(np.float32))
    assert hits[0][0].key == "k4" and hits[0][0].score == pytest.approx(1.0, abs=1e-3)
    # nothing changed: no new version
    assert write_index(tmp_path / "idx", own, IndexChanges().remove_keys("text", ["absent"])).version is None
    assert read_current_version(tmp_path / "idx") == "v-000002"
    # a rebuild replaces; another model's writer is refused; too-short vectors are one clear line
    assert write_index(tmp_path / "idx", own, create=NewIndex(32), replace=True).counts == {}
    with pytest.raises(IndexMismatch):
        write_index(tmp_path / "idx", SignCodes("other"), IndexChanges().add("text", items[:1], vecs[:1]))
    with pytest.raises(InvalidInput, match="at least 32 outputs per row, got 16"):
        write_index(tmp_path / "idx", own, IndexChanges().add("text", items[:1], vecs[:1, :16]))
