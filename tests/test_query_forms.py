"""Query forms on the one query path: folder and date filters inside the binary index,
the score cut-off and date order, exclusion and text+image queries (issue V)."""
import datetime as dt

import numpy as np
import pytest

from crossmodal.errors import InvalidInput
from retrieval.filters import FilterColumns, ItemFilter
from retrieval.index import CrossModalIndex, Hit
from retrieval.search import ResultForm, compose_query
from retrieval.store import Item


def _rows():
    return [(1, "/photos/a/1.jpg", "2021-05-01T10:00:00"), (2, "/photos/a/sub/2.jpg", "2022-01-01T00:00:00"),
            (3, "/photos/ab/3.jpg", "2022-06-30T23:59:59"), (4, "/photos/b/4.jpg", None),
            (5, "/elsewhere/5.jpg", "2023-01-01T00:00:00"), (6, None, "2022-03-03T03:03:03")]


def test_filter_columns_select_folders_dates_and_both():
    cols = FilterColumns(_rows())
    assert cols.allowed(ItemFilter.parse(["/photos/a"])).tolist() == [1, 2]  # not the sibling /photos/ab
    assert cols.allowed(ItemFilter.parse(["/photos/a/", "/photos/b"])).tolist() == [1, 2, 4]
    assert cols.allowed(ItemFilter.parse(after="2022-01-01")).tolist() == [2, 3, 5, 6]  # inclusive
    assert cols.allowed(ItemFilter.parse(before="2022-01-01")).tolist() == [1]  # exclusive
    assert cols.allowed(ItemFilter.parse(after="2022-01-02", before="2023-01-01")).tolist() == [3, 6]
    assert cols.allowed(ItemFilter.parse(["/photos"], after="2022-01-01")).tolist() == [2, 3]  # undated 4 is out
    assert cols.allowed(ItemFilter.parse(["/nowhere"])).tolist() == []


def test_filter_input_is_checked_in_one_line():
    with pytest.raises(InvalidInput, match="not a date"):
        ItemFilter.parse(after="last tuesday")
    with pytest.raises(InvalidInput, match="empty"):
        ItemFilter.parse(after="2024-02-01", before="2024-01-01")
    assert not ItemFilter.parse([], None, None) and ItemFilter.parse(["/x"])


def _index(kind: str, n: int = 600, seed: int = 0, params=None) -> tuple[CrossModalIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = CrossModalIndex(32, "fp", kind, params)
    idx.keep_outputs("float16", candidates=40)
    floats = rng.standard_normal((n, 48)).astype(np.float32)
    items = [Item(key=f"/lib/{'ab'[i % 2]}/{i}.jpg", source=f"/lib/{'ab'[i % 2]}/{i}.jpg",
                  extra={"date": (dt.datetime(2020, 1, 1) + dt.timedelta(days=i)).isoformat()}) for i in range(n)]
    from crossmodal.codes import sign_codes
    idx.add("image", items, sign_codes(floats, 32), floats=floats)
    return idx, floats


@pytest.mark.parametrize("kind,params", [("flat", None), ("ivf", {"nlist": 8, "nprobe": 8}), ("hnsw", None)])
def test_a_filtered_search_is_the_full_ranking_without_the_others(kind, params):
    """Every index type: the filtered top k equals the unfiltered ranking of everything,
    with the items the filter rejects taken out (flat filters inside faiss' scan; the
    approximate types widen their candidates until k allowed ones are found)."""
    from crossmodal.codes import sign_codes

    idx, floats = _index(kind, params=params)
    where = ItemFilter.parse(["/lib/b"], after="2020-06-01")
    allowed = set(idx.allowed_ids("image", where).tolist())
    assert 0 < len(allowed) < 300
    queries = floats[:5] + 0.3
    codes = sign_codes(queries, 32)
    for rerank in (0, 40):
        full = idx.search(codes, "image", k=600, query_floats=queries, rerank=0)
        got = idx.search(codes, "image", k=10, query_floats=queries, rerank=rerank, where=where)
        for q in range(5):
            assert {h.id for h in got[q]} <= allowed and len(got[q]) == 10
            if rerank == 0 and kind != "hnsw":
                assert [h.id for h in got[q]] == [h.id for h in full[q] if h.id in allowed][:10]
            assert all(h.extra["date"] >= "2020-06-01" and h.key.startswith("/lib/b/") for h in got[q])
    # radius search honours the filter too
    for hits in idx.search(codes, "image", k=0, radius=12, where=where, rerank=0) if kind != "hnsw" else []:
        assert {h.id for h in hits} <= allowed


@pytest.mark.parametrize("kind,params", [("ivf", {"nlist": 16, "nprobe": 1}), ("hnsw", None),
                                         ("multihash", {"nhash": 2, "b": 16})])
def test_a_selective_filter_on_an_approximate_index_is_exact(kind, params):
    """A filter keeping a few items: the approximate types search exactly among them (a
    probe of 1 list in 16 would miss most of them)."""
    from crossmodal.codes import sign_codes

    idx, floats = _index(kind, params=params)
    where = ItemFilter.parse(after="2020-03-01", before="2020-03-31")  # 30 of 600 items
    allowed = set(idx.allowed_ids("image", where).tolist())
    assert len(allowed) == 30
    codes = sign_codes(floats[:4] - 0.2, 32)
    brute = CrossModalIndex(32, "fp", "flat")
    ids = sorted(allowed)
    metas = idx.metadata.get(ids)
    brute.add("image", [Item(metas[i]["key"], metas[i]["source"]) for i in ids],
              idx.indexes["image"].codes_of_all()[1][[list(idx.indexes["image"].codes_of_all()[0]).index(i) for i in ids]])
    expected = brute.search(codes, "image", k=10, rerank=0)
    got = idx.search(codes, "image", k=10, rerank=0, where=where)
    for e, g in zip(expected, got):
        assert [h.distance for h in g] == [h.distance for h in e]
        last = e[-1].distance
        assert {h.key for h in g if h.distance < last} == {h.key for h in e if h.distance < last}


def test_filter_columns_follow_changes_to_the_index():
    idx, floats = _index("flat", n=50)
    where = ItemFilter.parse(["/lib/new"])
    assert idx.allowed_ids("image", where).tolist() == []
    from crossmodal.codes import sign_codes
    idx.add("image", [Item(key="/lib/new/x.jpg", source="/lib/new/x.jpg")], sign_codes(floats[:1], 32), floats[:1])
    assert len(idx.allowed_ids("image", where)) == 1
    with pytest.raises(InvalidInput, match="not captions"):
        idx.allowed_ids("text", where)


def _hit(i, score, date):
    return Hit(i, 3, "image", f"k{i}", None, [], extra={"date": date} if date else {}, score=score)


def test_result_form_cuts_on_score_and_sorts_by_date_stably():
    hits = [_hit(1, 0.9, "2020-01-01T00:00:00"), _hit(2, 0.8, None), _hit(3, 0.7, "2023-01-01T00:00:00"),
            _hit(4, 0.6, "2023-01-01T00:00:00"), _hit(5, 0.2, "2024-01-01T00:00:00")]
    assert [h.id for h in ResultForm(min_score=0.65).apply(hits)] == [1, 2, 3]
    assert [h.id for h in ResultForm(sort="date").apply(hits)] == [5, 3, 4, 1, 2]  # ties keep relevance, undated last
    assert [h.id for h in ResultForm(sort="date", min_score=0.5).apply(hits)] == [3, 4, 1, 2]
    with pytest.raises(InvalidInput, match="not re-ranked"):
        ResultForm(min_score=0.1).apply([_hit(1, None, None)])
    with pytest.raises(InvalidInput, match="unknown sort"):
        ResultForm(sort="size")


def test_compose_query_mixes_and_pushes_away():
    rng = np.random.default_rng(3)
    text, image, away = (rng.standard_normal(64).astype(np.float32) for _ in range(3))
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    cos = lambda a, b: float(unit(a) @ unit(b))  # noqa: E731
    assert cos(compose_query(text=text * 7), text) == pytest.approx(1.0, abs=1e-6)  # scale does not matter
    assert cos(compose_query(text, image, mix=0.0), text) == pytest.approx(1.0, abs=1e-6)
    assert cos(compose_query(text, image, mix=1.0), image) == pytest.approx(1.0, abs=1e-6)
    half = compose_query(text, image, mix=0.5)
    assert cos(half, text) == pytest.approx(cos(half, image), abs=1e-5)
    pushed = compose_query(text, exclude=away[None], exclude_weight=0.5)
    assert cos(pushed, away) < cos(text, away) - 0.2
    assert cos(compose_query(text, exclude=away[None], exclude_weight=0.0), text) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(InvalidInput, match="mix"):
        compose_query(text, image, mix=1.5)
    with pytest.raises(InvalidInput, match="needs a text"):
        compose_query()
