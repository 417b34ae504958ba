"""Every metric against hand-computed values and brute force, edge cases included."""
import itertools

import numpy as np
import pytest

from retrieval.metrics import (average_precision, code_health, item_recall_at_k, label_relevance,
                               matched_distance_gap, mean_average_precision, ndcg_at_k, pair_relevance,
                               precision_at_k, radius_precision_recall, rank_by_distance, recall_at_k,
                               tie_aware_average_precision, tie_aware_map)


def test_ranking_breaks_ties_by_database_order():
    d = np.array([[2, 1, 1, 0, 1]])
    assert rank_by_distance(d).tolist() == [[3, 1, 2, 4, 0]]


def test_ap_hand_computed():
    # ranking: rel, irrel, rel, irrel -> AP = (1/1 + 2/3) / 2
    d = np.array([[0, 1, 2, 3]])
    rel = np.array([[True, False, True, False]])
    assert average_precision(rank_by_distance(d), rel)[0] == pytest.approx((1 + 2 / 3) / 2)
    # mAP@2 (DCMH convention): only the first relevant is found in the top 2 -> AP = 1
    assert mean_average_precision(rank_by_distance(d), rel, k=2)["mAP@2"] == pytest.approx(1.0)


def test_all_tied_ranking_stable_order_and_tie_aware_value():
    d = np.zeros((1, 4), dtype=int)
    rel = np.array([[True, False, False, True]])
    assert average_precision(rank_by_distance(d), rel)[0] == pytest.approx((1 + 2 / 4) / 2)
    res = tie_aware_average_precision(d, rel)
    assert res["best"][0] == pytest.approx(1.0)
    assert res["worst"][0] == pytest.approx((1 / 3 + 2 / 4) / 2)
    # brute force over the 4! orders
    aps = []
    for perm in itertools.permutations(range(4)):
        r = rel[0, list(perm)]
        hits = np.cumsum(r)
        aps.append((hits / np.arange(1, 5))[r].mean())
    assert res["expected"][0] == pytest.approx(np.mean(aps))


@pytest.mark.parametrize("seed", range(6))
def test_tie_aware_ap_equals_bruteforce_expectation(seed):
    rng = np.random.default_rng(seed)
    n = 7
    d = rng.integers(0, 3, (1, n))
    rel = rng.random((1, n)) < 0.4
    rel[0, 0] = True
    groups = [np.flatnonzero(d[0] == v) for v in np.unique(d[0])]
    aps = []
    for orders in itertools.product(*[list(itertools.permutations(g)) for g in groups]):
        ranking = np.concatenate([np.array(o) for o in orders])
        r = rel[0, ranking]
        aps.append((np.cumsum(r) / np.arange(1, n + 1))[r].mean())
    res = tie_aware_average_precision(d, rel)
    assert res["expected"][0] == pytest.approx(np.mean(aps), abs=1e-12)
    assert res["best"][0] == pytest.approx(max(aps)) and res["worst"][0] == pytest.approx(min(aps))


def test_query_without_relevant_item_is_excluded_and_counted():
    d = np.array([[0, 1], [0, 1]])
    rel = np.array([[False, True], [False, False]])
    m = mean_average_precision(rank_by_distance(d), rel)
    assert m["mAP"] == pytest.approx(0.5) and m["queries_without_relevant"] == 1
    t = tie_aware_map(d, rel)
    assert t["mAP_tie_aware"] == pytest.approx(0.5) and t["queries_without_relevant"] == 1
    r = recall_at_k(rank_by_distance(d), rel, ks=(1, 2))
    assert r["R@1"] == 0.0 and r["R@2"] == 100.0 and r["queries_without_relevant"] == 1


def test_k_larger_than_database():
    d = np.array([[0, 1, 2]])
    rel = np.array([[True, False, True]])
    ranking = rank_by_distance(d)
    assert precision_at_k(ranking, rel, ks=(10,))["P@10"] == pytest.approx(2 / 10)
    assert item_recall_at_k(ranking, rel, ks=(10,))["itemR@10"] == pytest.approx(1.0)
    assert recall_at_k(ranking, rel, ks=(10,))["R@10"] == 100.0
    assert mean_average_precision(ranking, rel, k=10)["mAP@10"] == pytest.approx((1 + 2 / 3) / 2)


def test_pair_relevance_flickr_style():
    # 2 images, 4 captions: captions 0,1 belong to image 0; 2,3 to image 1
    rel = pair_relevance(np.arange(2), np.array([0, 0, 1, 1]))
    assert rel.tolist() == [[True, True, False, False], [False, False, True, True]]
    # image 0's ranking puts caption 2 first, then caption 1: a hit at rank 2
    d = np.array([[3, 1, 0, 2], [2, 3, 0, 1]])
    r = recall_at_k(rank_by_distance(d), rel, ks=(1, 2))
    assert r["R@1"] == 50.0 and r["R@2"] == 100.0 and r["median_rank"] == 1.5


def test_single_and_multi_label_relevance():
    single = label_relevance(np.array([[1, 0], [0, 1]]), np.array([[1, 0], [1, 0], [0, 1]]))
    assert single.tolist() == [[True, True, False], [False, False, True]]
    multi = label_relevance(np.array([[1, 1, 0]]), np.array([[0, 1, 0], [0, 0, 1], [1, 1, 1]]))
    assert multi.tolist() == [[True, False, True]]


def test_radius_precision_recall_hand_computed():
    d = np.array([[0, 1, 1, 3], [2, 2, 5, 5]])
    rel = np.array([[True, False, True, True], [True, False, False, False]])
    res = radius_precision_recall(d, rel, radii=[0, 1, 2])
    # r=0: q0 retrieves {0}: P=1, R=1/3; q1 retrieves nothing: P=0, R=0
    assert res["precision"][0] == pytest.approx(0.5) and res["recall"][0] == pytest.approx(1 / 6)
    # r=1: q0 {0,1,2}: P=2/3, R=2/3; q1 nothing
    assert res["precision"][1] == pytest.approx(1 / 3) and res["recall"][1] == pytest.approx(1 / 3)
    # r=2: q0 same; q1 {0,1}: P=1/2, R=1
    assert res["precision"][2] == pytest.approx((2 / 3 + 0.5) / 2) and res["recall"][2] == pytest.approx((2 / 3 + 1) / 2)
    assert res["retrieved"] == [0.5, 1.5, 2.5]


def test_ndcg_graded():
    gains = np.array([[2, 0, 1]])
    assert ndcg_at_k(rank_by_distance(np.array([[0, 1, 2]])), gains, k=3) == pytest.approx(
        (3 + 1 / np.log2(4)) / (3 + 1 / np.log2(3)))
    assert ndcg_at_k(rank_by_distance(np.array([[0, 2, 1]])), gains, k=3) == pytest.approx(1.0)


def test_code_health():
    codes = np.packbits(np.array([[1, 0, 1, 0, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0, 0, 0], [0, 1, 0, 1, 0, 0, 0, 0],
                                  [0, 1, 1, 0, 0, 0, 0, 0]], dtype=bool), axis=1)
    h = code_health(codes, 4)
    assert h["collision_rate"] == pytest.approx(0.5) and h["distinct_codes"] == 3
    # bit shares of ones: .5, .5, .75, .25 -> imbalance mean(0,0,.25,.25)
    assert h["bit_imbalance"] == pytest.approx(0.125)
    ent = -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25))
    assert h["bit_entropy"] == pytest.approx((2 + 2 * ent) / 4)


def test_matched_distance_gap():
    g = matched_distance_gap(np.array([[0, 4], [6, 2]]), np.array([[True, False], [False, True]]))
    assert g == {"mean_distance_matched": 1.0, "mean_distance_unmatched": 5.0}


def test_per_query_metrics_in_row_blocks_equal_the_whole_matrix(monkeypatch):
    from retrieval import metrics as M

    rng = np.random.default_rng(3)
    dist = rng.integers(0, 6, size=(70, 40))  # many ties
    rel = rng.random((70, 40)) < 0.1
    rel[5] = False  # a query with nothing relevant
    whole_ap = M.average_precision(M.rank_by_distance(dist), rel, 10)
    whole = M.tie_aware_average_precision(dist, rel)
    monkeypatch.setattr(M, "ROW_BLOCK", 16)
    assert np.array_equal(M.average_precision(M.rank_by_distance(dist), rel, 10), whole_ap, equal_nan=True)
    blocked = M.tie_aware_average_precision(dist, rel)
    for key in ("expected", "best", "worst"):
        assert len(blocked[key]) == 70 and np.allclose(blocked[key], whole[key], equal_nan=True)
