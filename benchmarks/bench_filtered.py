"""Filtered search at scale: a folder or date filter must not turn a query into a scan.

One index of N items (default 1M, 64-bit codes, int8 outputs for re-ranking), items
spread over 100 folders and ten years of dates. Queries one at a time, as a user sends
them, k = 10 and the index's default re-ranking (100 candidates): unfiltered, then
filters that keep 1 %, 10 % and 50 % of the items (a folder, a date range, both). The
flat index filters inside faiss' scan (a bitmap ``IDSelector``); the IVF index searches
a filter keeping up to 5 % exactly among its items' codes, and widens its candidate list
for a wider one. The first query of a new filter (which makes its bitmap or gathers its
items' codes) is timed apart from the steady state. Reported as milliseconds per query and as the ratio to the unfiltered
query of the same index type in the same run; the one-off cost of the filter columns
(built at the first filtered query of a loaded index) is reported apart.

    python benchmarks/bench_filtered.py [--items 1000000] [--queries 200]
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import publish  # noqa: E402


def build(kind: str, n: int, width: int, seed: int):
    from crossmodal.codes import sign_codes
    from retrieval.index import CrossModalIndex
    from retrieval.store import Item

    rng = np.random.default_rng(seed)
    params = {"nlist": 1024, "nprobe": 16} if kind == "ivf" else None
    idx = CrossModalIndex(64, "bench", kind, params)
    idx.keep_outputs("int8")
    start = dt.datetime(2015, 1, 1)
    step = 200_000
    for s in range(0, n, step):
        m = min(step, n - s)
        floats = rng.standard_normal((m, width)).astype(np.float32)
        items = [Item(key=f"/photos/f{(s + i) % 100:02d}/{s + i}.jpg", source=f"/photos/f{(s + i) % 100:02d}/{s + i}.jpg",
                      extra={"date": (start + dt.timedelta(minutes=5 * (s + i))).isoformat()}) for i in range(m)]
        idx.add("image", items, sign_codes(floats, 64), floats=floats)
    return idx


def per_query_ms(idx, queries: np.ndarray, where) -> float:
    from crossmodal.codes import sign_codes

    codes = sign_codes(queries, 64)
    t = time.perf_counter()
    for q in range(len(queries)):
        idx.search(codes[q:q + 1], "image", k=10, query_floats=queries[q:q + 1], where=where)
    return 1000 * (time.perf_counter() - t) / len(queries)


def main() -> int:
    from retrieval.filters import ItemFilter

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--width", type=int, default=128)
    args = ap.parse_args()
    n = args.items
    end = dt.datetime(2015, 1, 1) + dt.timedelta(minutes=5 * n)
    span = end - dt.datetime(2015, 1, 1)

    def dates(share: float) -> tuple[str, str]:
        lo = dt.datetime(2015, 1, 1) + span * 0.3
        return lo.isoformat(), (lo + span * share).isoformat()

    filters = {
        "folder 1%": ItemFilter.parse(["/photos/f07"]),
        "dates 1%": ItemFilter.parse(None, *dates(0.01)),
        "folder 10% + dates 10% (1%)": ItemFilter.parse([f"/photos/f{i:02d}" for i in range(10)], *dates(0.1)),
        "folders 10%": ItemFilter.parse([f"/photos/f{i:02d}" for i in range(10)]),
        "dates 50%": ItemFilter.parse(None, *dates(0.5)),
    }
    rng = np.random.default_rng(99)
    queries = rng.standard_normal((args.queries, args.width)).astype(np.float32)
    metrics: dict = {}
    for kind in ("flat", "ivf"):
        t = time.perf_counter()
        idx = build(kind, n, args.width, seed=1)
        built = time.perf_counter() - t
        t = time.perf_counter()
        shares = {name: len(idx.allowed_ids("image", f)) / n for name, f in filters.items()}
        columns_s = time.perf_counter() - t
        per_query_ms(idx, queries[:50], None)  # warm: page in the codes and the re-rank store
        base = per_query_ms(idx, queries, None)
        rows = {"unfiltered": {"ms_per_query": round(base, 3), "ratio": 1.0, "share": 1.0}}
        for name, f in filters.items():
            first = per_query_ms(idx, queries[:1], f)  # a new filter: its bitmap or its items' codes are made once
            ms = per_query_ms(idx, queries, f)
            rows[name] = {"ms_per_query": round(ms, 3), "ratio": round(ms / base, 3), "share": round(shares[name], 4),
                          "first_query_ms": round(first, 2)}
        metrics[kind] = {"rows": rows, "build_s": round(built, 1), "filter_columns_s": round(columns_s, 2)}
        print(kind, metrics[kind], flush=True)
        del idx
    lines = ["| index | query | items kept | ms / query | × unfiltered | first query of the filter (ms) |",
             "|---|---|---|---|---|---|"]
    for kind, m in metrics.items():
        for name, r in m["rows"].items():
            lines.append(f"| {kind} | {name} | {100 * r['share']:.1f} % | {r['ms_per_query']:.2f} | {r['ratio']:.2f} | "
                         f"{r.get('first_query_ms', '')} |")
    summary = (f"{n:,} items, 64-bit codes, int8 outputs re-ranking 100 candidates, k = 10, {args.queries} queries "
               f"one at a time after a warm-up. Filter columns built once per loaded index: "
               + ", ".join(f"{k} {m['filter_columns_s']:.1f} s" for k, m in metrics.items()) + ".\n\n"
               + "\n".join(lines))
    publish("filtered-search", "Filtered search at 1M items (folders, dates)", "synthetic", metrics, summary)
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
