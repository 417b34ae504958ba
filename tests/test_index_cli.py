"""`crossmodal index` and `crossmodal search` as a user runs them."""
import json

import numpy as np
import pytest
from PIL import Image

from crossmodal.cli import main
from retrieval.index import CrossModalIndex, IndexMismatch
from retrieval.search import Searcher


@pytest.fixture(scope="module")
def built_index(tiny_model, tiny_data, feature_cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("idx") / "idx"
    assert main(["index", "build", "--model", str(tiny_model), "--data", str(tiny_data), "--split", "test",
                 "--bits", "64", "--cache-dir", str(feature_cache_dir), "--out", str(out)]) == 0
    return out


def test_build_info_and_search_both_directions(built_index, tiny_data, capsys):
    assert main(["index", "info", "--index", str(built_index)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["counts"] == {"image": 16, "text": 80} and info["nbits"] == 64
    assert info["memory_bytes"]["image"] == 16 * 16  # 8 bytes of code + 8 bytes of id
    assert info["rerank"]["dtype"] == "int8" and info["rerank"]["candidates"] == 100  # 64 bits: chosen on dev
    width = Searcher.open(built_index).model.config.output_width
    assert info["rerank_store_bytes"]["image"] == 16 * (width + 4 + 8)  # int8 row, its scale, its id
    from crossmodal.data import load_prepared
    test = load_prepared(tiny_data)["test"]
    caption = test[0]["captions"][0]
    assert main(["search", "--index", str(built_index), "--text", caption, "-k", "5", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["target"] == "image" and len(res["results"]) == 5
    # a new index serves two-stage search: candidates by code, ranked by the stored outputs
    scores = [r["score"] for r in res["results"]]
    assert None not in scores and scores == sorted(scores, reverse=True)
    assert res["results"][0]["extra"]["split"] == "test"
    assert main(["search", "--index", str(built_index), "--text", caption, "-k", "5", "--json", "--rerank", "0"]) == 0
    hamming = json.loads(capsys.readouterr().out)["results"]
    d = [r["distance"] for r in hamming]
    assert d == sorted(d) and all(r["score"] is None for r in hamming)
    img_path = built_index.parent / "q.png"
    test[0]["image"].save(img_path)
    assert main(["search", "--index", str(built_index), "--image", str(img_path), "-k", "3", "--rerank", "10"]) == 0
    table = capsys.readouterr().out
    assert "text result(s)" in table and "rank" in table and len(table.strip().splitlines()) == 2 + 3


def test_search_matches_brute_force_hamming_ranking(built_index, tiny_data, feature_cache_dir):
    from retrieval.ingest import embed_prepared

    searcher = Searcher.open(built_index)
    q = ["a large red circle left of a small blue square", "green star on a black background"]
    hits = searcher.search_texts(q, "image", k=16, rerank=0)
    relaxed_q = searcher.model.embed_texts(q)
    assert all(len(h) == 16 for h in hits)
    images = next(step for step in embed_prepared(searcher.model, tiny_data, ["test"], feature_cache_dir)[0].steps
                  if step.modality == "image")
    codes = dict(zip((it.key for it in images.items), searcher.model.quantize(images.relaxed, 64)))
    # every image distance equals the Hamming distance between the codes, nearest first
    for qi, hs in enumerate(hits):
        qc = searcher.model.quantize(relaxed_q[qi:qi + 1], 64)
        brute = sorted(int(np.unpackbits(qc ^ c).sum()) for c in codes.values())
        assert [h.distance for h in hs] == brute[:16]
        for h in hs:
            assert h.distance == int(np.unpackbits(qc ^ codes[h.key]).sum())


def test_add_images_skips_corrupt_and_dedups_then_remove(built_index, tmp_path, capsys):
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 40), (250, 0, 0)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert main(["index", "add", "--index", str(built_index), "--images", str(good), str(bad),
                 str(tmp_path / "missing.png")]) == 0
    out = capsys.readouterr()
    assert "3 photo(s) seen: added 1, updated 0, already present 0, unreadable 2" in out.out and "bad.jpg" in out.err
    assert main(["index", "add", "--index", str(built_index), "--images", str(good)]) == 0
    assert "1 photo(s) seen: added 0, updated 0, already present 1, unreadable 0" in capsys.readouterr().out
    assert CrossModalIndex.load(built_index).count("image") == 17
    assert main(["index", "remove", "--index", str(built_index), "--modality", "image", str(good.resolve())]) == 0
    assert CrossModalIndex.load(built_index).count("image") == 16


def test_search_refuses_index_of_another_model(built_index, tiny_data, tmp_path, capsys):
    from crossmodal.model import CrossModalHasher
    other = CrossModalHasher.from_pretrained(CrossModalIndex.load(built_index).model_path)
    import torch
    with torch.no_grad():
        other.text_head.mlp[0].bias += 0.01
    other.save_pretrained(tmp_path / "other")
    assert main(["search", "--index", str(built_index), "--model", str(tmp_path / "other"), "--text", "x"]) == 2
    assert "rebuild the index" in capsys.readouterr().err
    with pytest.raises(IndexMismatch):
        Searcher(other, CrossModalIndex.load(built_index))
