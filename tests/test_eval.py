"""`crossmodal eval`: the protocol, the baselines and the report, end to end."""
import json

import numpy as np
import pytest

from crossmodal.cli import main
from retrieval.protocol import EvalConfig, ItemSet, Side, evaluate


def test_eval_pairs_protocol_writes_full_report(tiny_model, tiny_data, feature_cache_dir, tmp_path):
    out = tmp_path / "report"
    assert main(["eval", "--model", str(tiny_model), "--data", str(tiny_data), "--split", "test",
                 "--relevance", "pairs", "--within", "--cache-dir", str(feature_cache_dir), "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["protocol"]["relevance"] == "pairs"
    assert rep["protocol"]["queries"] == {"images": 16, "texts": 80}
    assert set(rep["results"]) == {"i2t", "t2i", "i2i", "t2t"}
    m = rep["results"]["t2i"]["64"]
    for key in ("R@1", "R@5", "R@10", "mAP", "mAP_tie_aware", "mAP_best_case", "mAP_worst_case", "P@r<=2",
                "median_rank", "radius_curve"):
        assert key in m
    assert m["mAP_worst_case"] <= m["mAP_tie_aware"] <= m["mAP_best_case"]
    assert set(rep["baselines"]) == {"float", "lsh", "itq", "cca_itq"}
    assert set(rep["baselines"]["lsh"]["i2t"]) == {"16", "32", "64"}
    assert rep["code_health"]["64"]["query_images"]["bit_entropy"] > 0
    for f in ("pr_curves.png", "precision_radius.png", "R_at_10_vs_bits.png", "summary.md"):
        assert (out / f).is_file(), f
    summary = (out / "summary.md").read_text()
    assert "text → images" in summary and "image → texts" in summary and "LSH" in summary
    assert len(list((out / "examples").glob("*.jpg"))) == 3 * 5 + 3



def test_eval_label_protocol_against_other_splits(tiny_model, tiny_data, feature_cache_dir, tmp_path):
    out = tmp_path / "report"
    assert main(["eval", "--model", str(tiny_model), "--data", str(tiny_data), "--split", "test",
                 "--database", "train,dev", "--bits", "16,32", "--cache-dir", str(feature_cache_dir),
                 "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["protocol"]["relevance"] == "labels"
    assert rep["protocol"]["database"] == {"images": 64, "texts": 320}
    assert "NDCG@100" in rep["results"]["i2t"]["32"]
    # label relevance over 64 items (16 queries with pairs are too few to rank methods): the trained
    # 16-bit codes beat LSH (random hyperplanes over the same model's outputs) both ways
    for direction in ("i2t", "t2i"):
        trained, lsh = rep["results"][direction]["16"]["mAP"], rep["baselines"]["lsh"][direction]["16"]["mAP"]
        assert trained > lsh, (direction, trained, lsh)


def test_eval_without_baselines_reports_none(tiny_model, tiny_data, feature_cache_dir, tmp_path):
    out = tmp_path / "report"
    assert main(["eval", "--model", str(tiny_model), "--data", str(tiny_data), "--split", "test", "--bits", "32",
                 "--no-baselines", "--cache-dir", str(feature_cache_dir), "--out", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["baselines"] == {}


def test_eval_refuses_query_split_in_database(tiny_model, tiny_data, tmp_path, capsys):
    assert main(["eval", "--model", str(tiny_model), "--data", str(tiny_data), "--split", "test",
                 "--database", "test,train", "--out", str(tmp_path / "r")]) == 2
    assert "must not include the query split" in capsys.readouterr().err


def _side(relaxed, ids, labels=None):
    return Side(np.asarray(relaxed, dtype=np.float32), ids, None if labels is None else np.asarray(labels, bool))


def test_protocol_leak_check_and_hand_made_ranking():
    quant = lambda x, k: np.packbits(x[:, :k] >= 0, axis=1)  # noqa: E731
    q = ItemSet(_side([[1] * 8, [-1] * 8], ["a", "b"], [[1, 0], [0, 1]]),
                _side([[1] * 8, [-1] * 8], ["a", "b"], [[1, 0], [0, 1]]), ["test"])
    db = ItemSet(_side([[-1] * 8, [1] * 8], ["c", "d"], [[0, 1], [1, 0]]),
                 _side([[-1] * 8, [1] * 8], ["c", "d"], [[0, 1], [1, 0]]), ["train"])
    rep = evaluate(quant, q, db, EvalConfig(bits=(8,), baselines=False))
    assert rep["results"]["i2t"]["8"]["mAP"] == pytest.approx(1.0)
    assert rep["results"]["t2i"]["8"]["P@r<=0"] == pytest.approx(1.0)
    leaky = ItemSet(db.images, _side([[1] * 8], ["a"], [[1, 0]]), ["train"])
    with pytest.raises(ValueError, match="also in the database"):
        evaluate(quant, q, leaky, EvalConfig(bits=(8,), baselines=False))
    with pytest.raises(ValueError, match="pair-based relevance needs"):
        evaluate(quant, q, db, EvalConfig(bits=(8,), relevance="pairs", baselines=False))


def test_flip_tta_is_the_mean_of_both_cached_views(tiny_model, tiny_data, feature_cache_dir):
    from dataclasses import asdict

    import torch

    from crossmodal.data import load_prepared
    from crossmodal.data.splits import flatten_split
    from crossmodal.features import image_features, relaxed_outputs
    from crossmodal.model import CrossModalHasher

    model = CrossModalHasher.from_pretrained(tiny_model)
    ds = load_prepared(tiny_data)["test"]
    captions = flatten_split(ds).captions
    plain = relaxed_outputs(model, ds, captions, feature_cache_dir)
    tta = relaxed_outputs(model, ds, captions, feature_cache_dir, views="flip")
    feats = image_features(model.image_encoder, asdict(model.config.image_encoder), ds, feature_cache_dir)
    with torch.no_grad():
        mirrored = model.image_relaxed_from_features(feats[:, 1]).numpy()
    assert np.allclose(tta.image_relaxed, (plain.image_relaxed + mirrored) / 2, atol=1e-5)
    assert not np.allclose(tta.image_relaxed, plain.image_relaxed)
    assert np.array_equal(tta.text_relaxed, plain.text_relaxed)
