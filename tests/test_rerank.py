"""Two-stage search: Hamming candidates re-ranked by a compact, memory-mapped store of the
model's outputs; on by default for new indexes; measured by `crossmodal eval` as `served`."""
import hashlib
import json

import numpy as np
import pytest

from crossmodal.codes import pack_bits
from retrieval.index import CrossModalIndex, IndexChanges, IndexCorrupt, write_index
from retrieval.protocol import EvalConfig, ItemSet, Side, evaluate
from retrieval.rerank import RerankStore, compress, cosines, unit_rows
from retrieval.store import Item, item_id


class SignModel:
    """The writer's view of a model (``retrieval.index.CodeModel``): sign codes of its outputs."""

    def fingerprint(self) -> str:
        return "fp"

    def quantize(self, relaxed, nbits):
        return pack_bits(np.resize(relaxed, (len(relaxed), nbits)) > 0)


def _items(n, prefix="t"):
    return [Item(key=f"{prefix}{i}", source=f"caption {i}") for i in range(n)]


def test_int8_rows_keep_cosines_within_a_hundredth():
    rng = np.random.default_rng(0)
    x, q = rng.normal(size=(500, 128)), rng.normal(size=(20, 128))
    exact = unit_rows(q) @ unit_rows(x).T
    for dtype, tol in (("int8", 0.01), ("float16", 0.002)):
        vectors, scales = compress(x, dtype)
        assert vectors.dtype == np.dtype(dtype) and scales.shape == (500,)
        assert np.abs(cosines(unit_rows(q), vectors, scales) - exact).max() < tol


def test_store_adds_replaces_removes_and_round_trips_memory_mapped(tmp_path):
    rng = np.random.default_rng(1)
    store = RerankStore("int8")
    store.add(np.array([30, 10, 20]), rng.normal(size=(3, 8)))
    store.add(np.array([10]), np.ones((1, 8)))  # replaces item 10
    store.remove([20])
    assert len(store) == 2
    vectors, scales, found = store.lookup(np.array([10, 20, 30, 99]))
    assert found.tolist() == [True, False, True, False]
    assert np.allclose(vectors[0] * scales[0], np.full(8, 1 / np.sqrt(8)), atol=0.01)
    names = store.write_into(tmp_path, "text")
    assert sorted(names) == ["rerank_text.ids.npy", "rerank_text.scales.npy", "rerank_text.vectors.npy"]
    opened = RerankStore.open(tmp_path, "text", "int8")
    assert isinstance(opened._vectors, np.memmap)  # not read into memory
    assert opened._ids.tolist() == [10, 30]  # sorted by id
    again, _, found_again = opened.lookup(np.array([30, 10]))
    assert found_again.all() and np.array_equal(again, store.lookup(np.array([30, 10]))[0])
    opened.remove([10])
    opened.add(np.array([5]), np.ones((1, 8)))
    assert opened.merged()[0].tolist() == [5, 30]


def _index(keep=True):
    """Four captions: t0 nearest by code to the query, t3 farthest, but t3's outputs point
    exactly where the query's do."""
    idx = CrossModalIndex(8, "fp")
    if keep:
        idx.keep_outputs("int8", candidates=4)
    codes = pack_bits(np.array([[1] * 8, [1] * 7 + [0], [1] * 6 + [0, 0], [1] * 5 + [0, 0, 0]]) > 0)
    floats = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1, 0]], np.float32)
    idx.add("text", _items(4), codes, floats=floats)
    return idx


QUERY_CODE = pack_bits(np.ones((1, 8)) > 0)
QUERY_FLOATS = np.array([[0, 0, 1, 0]], np.float32)


def test_candidates_are_reranked_by_cosine_and_rerank_0_is_hamming_order(tmp_path):
    idx = _index()
    served = idx.search(QUERY_CODE, "text", k=4, query_floats=QUERY_FLOATS)[0]
    assert [h.key for h in served][0] == "t3" and served[0].score == pytest.approx(1.0, abs=0.01)
    hamming = idx.search(QUERY_CODE, "text", k=4, query_floats=QUERY_FLOATS, rerank=0)[0]
    assert [h.key for h in hamming] == ["t0", "t1", "t2", "t3"]
    two = idx.search(QUERY_CODE, "text", k=4, query_floats=QUERY_FLOATS, rerank=2)[0]
    assert [h.key for h in two][2:] == ["t2", "t3"]  # only the 2 nearest codes are re-ranked
    write_index(tmp_path / "idx", None, create=idx)
    loaded = CrossModalIndex.load(tmp_path / "idx")
    assert loaded.rerank_config == {"dtype": "int8", "candidates": 4} and loaded.rerank_candidates == 4
    assert [h.key for h in loaded.search(QUERY_CODE, "text", k=1, query_floats=QUERY_FLOATS)[0]] == ["t3"]
    manifest = json.loads((tmp_path / "idx" / loaded.version / "manifest.json").read_text())
    assert "rerank_text.vectors.npy" in manifest["files"] and manifest["rerank"]["candidates"] == 4


def test_an_index_without_outputs_keeps_hamming_order_and_a_damaged_store_is_caught(tmp_path):
    plain = _index(keep=False)
    assert plain.rerank_candidates == 0 and not plain.rerank_stores
    assert [h.key for h in plain.search(QUERY_CODE, "text", k=4, query_floats=QUERY_FLOATS)[0]][0] == "t0"
    write_index(tmp_path / "idx", None, create=_index())
    live = tmp_path / "idx" / (tmp_path / "idx" / "CURRENT").read_text().strip()
    data = bytearray((live / "rerank_text.vectors.npy").read_bytes())
    data[-1] ^= 0xFF
    (live / "rerank_text.vectors.npy").write_bytes(bytes(data))
    with pytest.raises(IndexCorrupt, match="rerank_text.vectors.npy"):
        CrossModalIndex.load(tmp_path / "idx")


def test_removed_items_leave_the_store_and_writes_keep_it_whole(tmp_path):
    idx = _index()
    write_index(tmp_path / "idx", None, create=idx)
    changes = (IndexChanges().remove_keys("text", ["t3"])
               .add("text", [Item(key="t9", source="new")], np.array([[0, 0, 0.9, 0.1]], np.float32)))
    write_index(tmp_path / "idx", SignModel(), changes)
    loaded = CrossModalIndex.load(tmp_path / "idx")
    assert len(loaded.rerank_stores["text"]) == 4
    hits = loaded.search(QUERY_CODE, "text", k=5, query_floats=QUERY_FLOATS)[0]
    assert [h.key for h in hits][0] == "t9" and "t3" not in [h.key for h in hits]


def test_an_earlier_releases_float_store_still_loads(tmp_path):
    idx = _index(keep=False)
    write_index(tmp_path / "idx", None, create=idx)
    live = tmp_path / "idx" / (tmp_path / "idx" / "CURRENT").read_text().strip()
    ids = np.array([item_id("text", f"t{i}") for i in range(4)], np.int64)
    np.savez(live / "rerank_text.npz", ids=ids, floats=np.array(
        [[1, 0, 0, 0], [0, 1, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1, 0]], np.float16))
    manifest = json.loads((live / "manifest.json").read_text())  # listed with its checksum, as that release did
    manifest["files"]["rerank_text.npz"] = hashlib.sha256((live / "rerank_text.npz").read_bytes()).hexdigest()
    (live / "manifest.json").write_text(json.dumps(manifest))
    old = CrossModalIndex.load(tmp_path / "idx")
    assert old.rerank_candidates == 0  # re-ranked only when asked, as before
    assert old.search(QUERY_CODE, "text", k=1, query_floats=QUERY_FLOATS)[0][0].key == "t0"
    assert old.search(QUERY_CODE, "text", k=1, query_floats=QUERY_FLOATS, rerank=4)[0][0].key == "t3"


def test_served_section_reaches_the_float_ceiling_with_every_item_reranked():
    rng = np.random.default_rng(2)
    latent = rng.normal(size=(120, 32))
    images = Side((latent + 0.6 * rng.normal(size=latent.shape)).astype(np.float32), [f"i{i}" for i in range(120)])
    texts = Side((latent + 0.6 * rng.normal(size=latent.shape)).astype(np.float32), [f"i{i}" for i in range(120)])
    items = ItemSet(images, texts, ["test"])
    quant = lambda x, k: pack_bits(x[:, :k] >= 0)  # noqa: E731
    everything = evaluate(quant, items, None, EvalConfig(bits=(8,), rerank=120, rerank_dtype="float16"))
    some = evaluate(quant, items, None, EvalConfig(bits=(8,), rerank=20, baselines=False))
    none = evaluate(quant, items, None, EvalConfig(bits=(8,), rerank=0, baselines=False))
    assert "served" not in none
    for d in ("i2t", "t2i"):
        ceiling, served = everything["baselines"]["float"][d]["mAP"], everything["served"][d]["8"]
        assert served["mAP"] == pytest.approx(ceiling, abs=2e-3)  # every item re-ranked = cosine ranking
        assert served["bytes_per_item"] == 1 + 8 + 32 * 2 + 4 + 8 and served["rerank"] == 120
        hamming = some["results"][d]["8"]["mAP"]
        assert hamming < some["served"][d]["8"]["mAP"] < ceiling + 1e-9  # 8-bit codes rank worse than floats


@pytest.mark.parametrize("kind,params,candidates", [("flat", [], 6), ("flat", [], 16),
                                                   ("ivf", ["--param", "nlist=4", "--param", "nprobe=4"], 16)])
def test_served_ranking_of_the_evaluator_is_what_the_searcher_returns(tiny_model, tiny_data, feature_cache_dir,
                                                                      tmp_path, kind, params, candidates):
    """`crossmodal eval`'s served numbers rank exactly as a built index answers: the same
    items in the same order with the same scores, for every caption of a test split
    (IVF scanning all its lists; at a cut-off inside a tie only the flat index keeps the
    evaluator's insertion order, so IVF is compared with every image re-ranked)."""
    from crossmodal.cli import main
    from crossmodal.codes import hamming_distances
    from retrieval.ingest import embed_prepared
    from retrieval.rerank import served_ranking
    from retrieval.search import Searcher

    out = tmp_path / "idx"
    assert main(["index", "build", "--model", str(tiny_model), "--data", str(tiny_data), "--split", "test",
                 "--bits", "32", "--type", kind, *params, "--cache-dir", str(feature_cache_dir),
                 "--out", str(out)]) == 0
    searcher = Searcher.open(out)
    steps = {s.modality: s for s in embed_prepared(searcher.model, tiny_data, ["test"], feature_cache_dir)[0].steps}
    images, texts = steps["image"], steps["text"]
    q = texts.relaxed
    hamming = hamming_distances(searcher.model.quantize(q, 32), searcher.model.quantize(images.relaxed, 32))
    vectors, scales = compress(images.relaxed, "int8")
    ranking = served_ranking(hamming, q, vectors, scales, candidates)
    found = searcher.search_relaxed(q, "image", k=16, rerank=candidates)
    unit_q = unit_rows(q)
    for r, hits in enumerate(found):
        assert [h.key for h in hits] == [images.items[i].key for i in ranking[r]], r
        expected = cosines(unit_q[r:r + 1], vectors[ranking[r][:candidates]], scales[ranking[r][:candidates]])[0]
        # the same cosines, to float32's rounding (BLAS sums a 6-row and a 16-row product alike only so far)
        assert [h.score for h in hits[:candidates]] == pytest.approx([float(x) for x in expected], abs=1e-6)
        assert all(h.score is None for h in hits[candidates:])
