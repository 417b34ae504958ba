"""The Milvus backend against a real Milvus standalone server (started once per session
by the ``milvus_server`` fixture): BIN_FLAT and BIN_IVF_FLAT equal to faiss, the whole
index life cycle through the command line, idempotent writes, and a server restart."""
from __future__ import annotations

import json
import urllib.request
import subprocess
import sys

import numpy as np
import pytest

from crossmodal.cli import main
from retrieval.backends import FaissBinaryIndex
from retrieval.index import CrossModalIndex
from retrieval.search import Searcher
from conftest import require_milvus_module

pytestmark = pytest.mark.timeout(600)


def _codes(n, nbytes=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, nbytes), dtype=np.uint8)


def _assert_same_results(Df, If, Dm, Im):
    """Distances equal; ids equal below each row's boundary distance (ties at the
    cut-off may be any of the tied items)."""
    assert np.array_equal(Df, Dm)
    for r in range(len(Df)):
        inner = Df[r] < Df[r, -1]
        assert If[r][inner].tolist() == Im[r][inner].tolist()


@pytest.mark.parametrize("kind,params", [("flat", {}), ("ivf", {"nlist": 16, "nprobe": 16})])
def test_server_search_equals_faiss_flat(milvus_server, kind, params):
    from retrieval.milvus import MilvusBinaryIndex, MilvusOptions

    codes = _codes(4000, 8, seed=7)
    ids = np.arange(4000) * 7 + 1
    fa = FaissBinaryIndex(64, "flat")
    fa.add(ids, codes)
    mv = MilvusBinaryIndex(64, "image", MilvusOptions(uri=milvus_server.uri, index_id=f"eq{kind}"), kind, params)
    mv.add(ids, codes)
    assert mv.ntotal == 4000
    q = codes[:30] ^ np.uint8(5)
    _assert_same_results(*fa.search(q, 25), *mv.search(q, 25))  # nprobe = nlist: IVF scans every list
    for (df, i_f), (dm, i_m) in zip(fa.range_search(q[:3], 22), mv.range_search(q[:3], 22)):
        assert sorted(i_f.tolist()) == sorted(i_m.tolist()) and np.array_equal(np.sort(df), np.sort(dm))
    # a process that died before saving its version is retried by a new one: no second copy
    mv = MilvusBinaryIndex(64, "image", MilvusOptions(uri=milvus_server.uri, index_id=f"eq{kind}"), kind, params)
    mv.add(ids[:500], codes[:500])
    assert mv.ntotal == 4000
    assert mv.remove(ids[:10].tolist() + [999_999_999]) == 10 and mv.ntotal == 3990
    assert mv.remove(ids[:10]) == 0
    mv.drop()


def test_server_filtered_search_and_all_codes_equal_faiss(milvus_server):
    """Folder/date filters on the server backend (widened candidates) give faiss' filtered
    answer, and the codes it holds come back whole (what near-duplicate search reads)."""
    from retrieval.milvus import MilvusBinaryIndex, MilvusOptions

    codes = _codes(3000, 8, seed=11)
    ids = np.arange(3000) * 3 + 5
    allowed = np.sort(ids[::40])  # 75 items: 2.5 %
    fa = FaissBinaryIndex(64, "flat")
    fa.add(ids, codes)
    mv = MilvusBinaryIndex(64, "image", MilvusOptions(uri=milvus_server.uri, index_id="filtered"), "flat", {})
    mv.add(ids, codes)
    q = codes[:12] ^ np.uint8(9)
    Df, If = fa.search(q, 10, allowed)
    Dm, Im = mv.search(q, 10, allowed)
    assert np.isin(Im, allowed).all() and np.isin(If, allowed).all()
    _assert_same_results(Df, If, Dm, Im)
    got_ids, got_codes = mv.codes_of_all()
    order = np.argsort(got_ids)
    assert np.array_equal(got_ids[order], ids) and np.array_equal(got_codes[order], codes)
    mv.drop()


def _build(tiny_model, tiny_data, cache, out, *extra):
    assert main(["index", "build", "--model", str(tiny_model), "--data", str(tiny_data), "--split", "test",
                 "--bits", "32", "--cache-dir", str(cache), "--out", str(out), *extra]) == 0


def test_cli_life_cycle_on_the_server_matches_faiss(milvus_server, tiny_model, tiny_data, feature_cache_dir,
                                                    tmp_path, capsys):
    on_server, local = tmp_path / "server-idx", tmp_path / "faiss-idx"
    _build(tiny_model, tiny_data, feature_cache_dir, on_server, "--backend", "milvus", "--milvus-uri",
           milvus_server.uri, "--type", "ivf", "--param", "nlist=4", "--param", "nprobe=4")
    _build(tiny_model, tiny_data, feature_cache_dir, local)
    capsys.readouterr()
    server, faiss_ = Searcher.open(on_server), Searcher.open(local)
    info = server.index.info()
    assert info["backend"] == "milvus" and info["backend_options"]["uri"] == milvus_server.uri
    assert info["codes_at"]["image"] == f"Milvus collection crossmodal_{server.index.uid}_image"
    assert info["counts"] == faiss_.index.info()["counts"] == {"image": 16, "text": 80}
    captions = ["a red circle", "two blue squares", "a small green triangle"]
    for target in ("image", "text"):
        # the codes' ranking (--rerank 0): equal Hamming distances, the same items below the cut-off's distance
        for a, b in zip(server.search_texts(captions, target, k=8, rerank=0),
                        faiss_.search_texts(captions, target, k=8, rerank=0)):
            assert [h.distance for h in a] == [h.distance for h in b]
            below = [h.key for h in b if h.distance < b[-1].distance]
            assert [h.key for h in a][:len(below)] == below
    # add, update, remove through the CLI: the folder's versions and the server's collection move together
    assert main(["index", "add", "--index", str(on_server), "--texts", "a yellow star", "a purple hexagon"]) == 0
    assert main(["index", "add", "--index", str(on_server), "--texts", "a yellow star", "--update"]) == 0
    assert main(["index", "remove", "--index", str(on_server), "--modality", "text", "a purple hexagon"]) == 0
    reopened = CrossModalIndex.load(on_server)
    assert reopened.count("text") == 81 and reopened.metadata.count("text") == 81
    hits = Searcher.open(on_server).search_texts(["a yellow star"], "text", k=1)[0]
    assert hits[0].key == "a yellow star" and hits[0].distance == 0
    # a second index on the same server has collections of its own
    other = tmp_path / "other"
    _build(tiny_model, tiny_data, feature_cache_dir, other, "--backend", "milvus", "--milvus-uri", milvus_server.uri)
    assert CrossModalIndex.load(other).count("text") == 80 and CrossModalIndex.load(on_server).count("text") == 81
    res = subprocess.run([sys.executable, "-m", "crossmodal.cli", "search", "--index", str(on_server), "--text",
                          "a red circle", "-k", "3", "--json"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout)["results"]) == 3
    # served (two-stage) search gives the same answers whichever backend holds the codes: both re-rank
    # every candidate from the same store when the candidates cover the index
    for a, b in zip(server.search_texts(captions, "image", k=5, rerank=16),
                    faiss_.search_texts(captions, "image", k=5, rerank=16)):
        assert [h.key for h in a] == [h.key for h in b] and all(h.score is not None for h in a)


def test_index_survives_a_server_restart(milvus_server, tiny_model, tiny_data, feature_cache_dir, tmp_path):
    out = tmp_path / "idx"
    _build(tiny_model, tiny_data, feature_cache_dir, out, "--backend", "milvus", "--milvus-uri", milvus_server.uri)
    before = [[(h.key, h.distance) for h in hits] for hits in Searcher.open(out).search_texts(["a red circle"], k=5)]
    pid = milvus_server.pid
    with pytest.MonkeyPatch.context() as mp:
        # a user's http_proxy, as urllib's default opener saw it first (the offline-weights test sets a dead
        # one), must not stand between the readiness check and the server's own loopback health port
        mp.setattr(urllib.request, "_opener", None)
        for name in ("http_proxy", "HTTP_PROXY"):
            mp.setenv(name, "http://127.0.0.1:9")
        for name in ("no_proxy", "NO_PROXY"):
            mp.delenv(name, raising=False)
        milvus_server.restart()
    assert milvus_server.alive() and milvus_server.pid != pid
    after = [[(h.key, h.distance) for h in hits] for hits in Searcher.open(out).search_texts(["a red circle"], k=5)]
    assert after == before
    assert CrossModalIndex.load(out).count("image") == 16


def test_unreachable_server_is_one_clear_line(tiny_model, tiny_data, feature_cache_dir, tmp_path, capsys,
                                              monkeypatch):
    require_milvus_module("pymilvus", reason="pymilvus comes with the test extras")
    from retrieval.milvus_server import free_port

    monkeypatch.setenv("CROSSMODAL_MILVUS_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    code = main(["index", "build", "--model", str(tiny_model), "--data", str(tiny_data), "--split", "test",
                 "--bits", "32", "--cache-dir", str(feature_cache_dir), "--out", str(tmp_path / "idx"),
                 "--backend", "milvus", "--milvus-uri", "http://example.invalid:19530"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot connect to Milvus at http://127.0.0.1:" in err[0]
