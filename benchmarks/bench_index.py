"""Index speed, memory and recall on 1,000,000 64-bit codes and 1,000 queries, k=100.

Codes: by default "trained-like" codes at scale: the backbone features of a prepared
dataset (every image and caption) are mixed pairwise at random (convex combinations
plus noise) and passed through a trained model's hash heads, so the million codes have
the structure of real learned codes. ``--random`` uses uniform random codes instead.

Reports, all in one run (ratios are what to read on a noisy machine):
  * crossmodal flat backend vs raw faiss IndexBinaryFlat (queries per second);
  * faiss IndexFlatIP on the items' float outputs (the head's full width, unit rows): the
    float ceiling at scale, and the ground truth of the two-stage search's recall;
  * two-stage search as an index serves it (binary flat top N, re-ranked by the int8
    re-rank store, ``retrieval.rerank``): queries/s, recall@k against float flat's top k,
    and bytes per item all in (code + id + store);
  * bytes per item held for codes and ids;
  * ivf recall@100 against flat, and its speed-up;
  * Milvus Lite (BIN_FLAT) on a subset (``--milvus-items``);
  * with ``--milvus-uri``: a Milvus server, BIN_FLAT and BIN_IVF_FLAT on the same codes:
    insert rate, queries/s and recall@k (tie-aware and by id) beside faiss flat and IVF
    from the same run, written to its own section.

    python benchmarks/bench_index.py --model runs/f8k --data data/flickr8k
    python benchmarks/bench_index.py --random --milvus-uri http://127.0.0.1:19530
    python benchmarks/bench_index.py --random --milvus-local /tmp/milvus-bench   # starts its own server
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_of, publish  # noqa: E402


def trained_like_codes(model_dir: str, data_dir: str, n: int, seed: int = 0):
    """n codes (and their 64-d relaxed outputs) from mixtures of real backbone features."""
    import torch

    from crossmodal.data import load_prepared
    from crossmodal.data.splits import flatten_split
    from crossmodal.split_outputs import relaxed_outputs
    from crossmodal.model import CrossModalHasher
    from crossmodal.cache import default_cache_dir

    model = CrossModalHasher.from_pretrained(model_dir)
    ds = load_prepared(data_dir)
    img_raw, txt_raw = [], []
    for split in ds:
        flat = flatten_split(ds[split])
        outputs = relaxed_outputs(model, ds[split], flat.captions, default_cache_dir())
        img_raw.append(outputs.image_features)
        txt_raw.append(outputs.text_features)
    rng = np.random.default_rng(seed)
    out = np.empty((n, model.config.output_width), np.float32)
    with torch.inference_mode():
        for s in range(0, n, 50000):
            m = min(50000, n - s)
            use_img = s < n // 2
            feats = np.concatenate(img_raw if use_img else txt_raw)
            a, b = rng.integers(0, len(feats), m), rng.integers(0, len(feats), m)
            w = rng.uniform(0.0, 0.5, (m, 1)).astype(np.float32)
            x = (1 - w) * feats[a] + w * feats[b]
            x += rng.normal(0, 0.05, x.shape).astype(np.float32) * x.std(0, keepdims=True)
            head = model.image_relaxed_from_features if use_img else model.text_relaxed_from_features
            out[s:s + m] = head(torch.from_numpy(x)).numpy()
    return model.quantize(out, 64), out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model")
    p.add_argument("--data")
    p.add_argument("--random", action="store_true")
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("-k", type=int, default=100)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    p.add_argument("--milvus-items", type=int, default=200_000)
    p.add_argument("--milvus-uri", default=None,
                   help="a Milvus server: measure BIN_FLAT and BIN_IVF_FLAT there (and write only that section)")
    p.add_argument("--milvus-local", default=None, metavar="DIR",
                   help="start a local Milvus standalone server over DIR (the milvus package) and use it")
    p.add_argument("--candidates", type=int, nargs="+", default=[100, 200, 500, 1000],
                   help="Hamming candidates the two-stage search re-ranks")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()

    import faiss

    from retrieval.backends import FaissBinaryIndex

    t0 = time.time()
    if args.random or not args.model:
        rng = np.random.default_rng(0)
        codes = rng.integers(0, 256, (args.items + args.queries, 8), dtype=np.uint8)
        floats = rng.normal(size=(args.items + args.queries, 128)).astype(np.float32)
        kind = "uniform random codes"
    else:
        codes, floats = trained_like_codes(args.model, args.data, args.items + args.queries)
        kind = f"trained-like codes from {args.model} on {args.data}"
    db, q = codes[: args.items], codes[args.items:]
    fdb, fq = floats[: args.items], floats[args.items:]
    ids = np.arange(args.items, dtype=np.int64)
    print(f"{args.items} items, {args.queries} queries, k={args.k}: {kind} ({time.time() - t0:.0f}s to make)")
    rows = []

    raw = faiss.IndexBinaryFlat(64)
    raw.add(db)
    t_raw = best_of(lambda: raw.search(q, args.k))
    flat = FaissBinaryIndex(64, "flat")
    flat.add(ids, db)
    bytes_per_item = flat.memory_bytes() / args.items  # faiss' own code and id vectors
    t_flat = best_of(lambda: flat.search(q, args.k))
    from retrieval.rerank import unit_rows

    fdb, fq = unit_rows(fdb), unit_rows(fq)
    fip = faiss.IndexFlatIP(fdb.shape[1])
    fip.add(fdb)
    t_fip = best_of(lambda: fip.search(fq, args.k), repeats=2)
    truth = fip.search(fq, args.k)[1]
    fip.reset()  # frees its 0.5 GB of floats before the IVF is built
    qps = lambda t: args.queries / t  # noqa: E731
    rows.append(("raw faiss IndexBinaryFlat", qps(t_raw), "1.00x", "exact"))
    rows.append(("crossmodal flat (IDMap, heap search)", qps(t_flat), f"{t_raw / t_flat:.2f}x", "exact"))
    rows.append((f"faiss IndexFlatIP, {fdb.shape[1]}-d float", qps(t_fip), f"{t_raw / t_fip:.2f}x", "exact (float)"))
    print(f"flat vs raw faiss: {t_raw / t_flat:.2f}x; flat vs float IP: {t_fip / t_flat:.1f}x faster; "
          f"{bytes_per_item:.1f} bytes/item held by faiss (codes + ids)")

    D_ref, I_ref = flat.search(q, args.k)
    train = db[np.random.default_rng(1).choice(len(db), min(len(db), 100 * args.nlist), replace=False)]
    ivf = FaissBinaryIndex(64, "ivf", {"nlist": args.nlist, "nprobe": args.nprobe[0]})
    t = time.time()
    ivf.train(train)
    ivf.add(ids, db)
    build = time.time() - t
    ivf_rows = []
    for nprobe in args.nprobe:
        ivf.params["nprobe"] = nprobe
        ivf._apply_search_params()
        t_ivf = best_of(lambda: ivf.search(q, args.k))
        D, I = ivf.search(q, args.k)
        id_recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(I, I_ref)])
        # tie-aware: the share of flat's top-k distances matched (items at equal distance are interchangeable)
        dist_recall = np.mean([_multiset_overlap(a, b) / args.k for a, b in zip(D, D_ref)])
        ivf_rows.append((nprobe, qps(t_ivf), t_flat / t_ivf, id_recall, dist_recall))
        print(f"ivf nlist={args.nlist} nprobe={nprobe}: {qps(t_ivf):.0f} q/s ({t_flat / t_ivf:.1f}x flat), "
              f"recall@{args.k} ids {id_recall:.3f}, tie-aware {dist_recall:.3f}")

    def ivf_search(nprobe: int):
        def search(codes, n):
            ivf.params["nprobe"] = nprobe
            ivf._apply_search_params()
            return ivf.search(codes, n)
        return search
    stages = {"flat": flat.search, **{f"ivf nlist={args.nlist} nprobe={p}": ivf_search(p) for p in args.nprobe}}
    two_stage = bench_two_stage(ids, fdb, q, fq, args.k, args.candidates, truth, t_fip, stages)

    if args.milvus_local:
        from retrieval.milvus_server import LocalMilvus
        with LocalMilvus(args.milvus_local) as server:
            server_rows = bench_milvus_server(server.uri, ids, db, q, args.k, args.nlist, args.nprobe, D_ref, I_ref)
        if not args.no_write:
            write_milvus_section(args, kind, rows[1], ivf_rows, server_rows)
        return
    if args.milvus_uri:
        server_rows = bench_milvus_server(args.milvus_uri, ids, db, q, args.k, args.nlist, args.nprobe, D_ref, I_ref)
        if not args.no_write:
            write_milvus_section(args, kind, rows[1], ivf_rows, server_rows)
        return

    mv_row = None
    if args.milvus_items:
        try:
            import tempfile

            from retrieval.milvus import MilvusBinaryIndex
            n = min(args.milvus_items, args.items)
            with tempfile.TemporaryDirectory() as tmp:
                mv = MilvusBinaryIndex(64, "bench", str(Path(tmp) / "bench.db"))
                t = time.time()
                mv.add(ids[:n], db[:n])
                ins = time.time() - t
                sub = FaissBinaryIndex(64, "flat")
                sub.add(ids[:n], db[:n])
                nq = min(args.queries, 200)
                t_mv = best_of(lambda: mv.search(q[:nq], args.k), repeats=2)
                t_sub = best_of(lambda: sub.search(q[:nq], args.k))
                Dm, _ = mv.search(q[:nq], args.k)
                Ds, _ = sub.search(q[:nq], args.k)
                same = bool(np.array_equal(Dm, Ds))
                mv_row = (n, nq / t_mv, nq / t_sub, ins, same)
                print(f"Milvus Lite BIN_FLAT on {n} items: {nq / t_mv:.0f} q/s vs faiss flat {nq / t_sub:.0f} q/s "
                      f"on the same items; insert {ins:.0f}s; same distances: {same}")
        except ImportError as e:
            print(f"Milvus Lite skipped: {e}")

    if args.no_write:
        return
    threads = faiss.omp_get_max_threads()
    body = [f"{args.items:,} 64-bit codes ({kind}), {args.queries:,} queries, k={args.k}, {threads} faiss threads; "
            f"each time the fastest of 3 runs (float flat: of 2).", "",
            "| index | queries/s | speed vs raw faiss binary flat | search |", "|---|---|---|---|"]
    body += [f"| {r[0]} | {r[1]:,.0f} | {r[2]} | {r[3]} |" for r in rows]
    body += ["", f"Flat backend: **{t_raw / t_flat:.2f}x** raw faiss `IndexBinaryFlat`, **{t_fip / t_flat:.1f}x** "
             f"faster than `IndexFlatIP` on {fdb.shape[1]}-d floats. Memory for codes and ids: "
             f"**{bytes_per_item:.1f} bytes per item** (the sizes of faiss' code and id vectors: 8 B + 8 B).", "",
             f"IVF (nlist={args.nlist}, trained on {len(train):,} codes in {build:.0f}s including adding):", "",
             f"| nprobe | queries/s | speed-up vs flat | recall@{args.k} (ids) | recall@{args.k} (tie-aware) |",
             "|---|---|---|---|---|"]
    body += [f"| {r[0]} | {r[1]:,.0f} | {r[2]:.1f}x | {r[3]:.3f} | {r[4]:.3f} |" for r in ivf_rows]
    body += ["", "Tie-aware recall counts a result as found when its Hamming distance matches one of flat's top-k "
             "distances (items at equal distance are interchangeable); id recall also depends on which tied items "
             "each index keeps at the cut-off."]
    if mv_row:
        body += ["", f"Milvus Lite 2.5.1 (BIN_FLAT, local file) on the first {mv_row[0]:,} items, {min(args.queries, 200)}"
                 f" queries: **{mv_row[1]:,.0f} q/s** vs faiss flat {mv_row[2]:,.0f} q/s on the same items; insert "
                 f"{mv_row[3]:.0f}s; identical distances: {mv_row[4]}."]
    body += ["", f"Two-stage search as an index serves it: the first stage's top N codes (the flat index, or IVF), "
             f"re-ranked by cosine against the int8 re-rank store ({two_stage['float_dim']} outputs an item, one "
             f"scale per row, memory-mapped). Recall@{args.k}: the share of `IndexFlatIP`'s top {args.k} on the "
             f"float outputs that it returns. Float `IndexFlatIP`: {qps(t_fip):,.0f} queries/s.", "",
             f"| first stage | N | queries/s | vs float `IndexFlatIP` | recall@{args.k} vs float flat | bytes per item "
             f"(code + id + store) |", "|---|---|---|---|---|---|"]
    body += [f"| {stage} | {n} | {r['queries_per_second']:,.0f} | {r['speedup_vs_float_flat']:.1f}x | "
             f"{r['recall_vs_float_flat']:.3f} | {r['bytes_per_item']:.0f} |"
             for stage, by_n in two_stage["by_stage"].items() for n, r in by_n.items()]
    metrics = {"items": args.items, "queries": args.queries, "k": args.k, "codes": kind, "faiss_threads": threads,
               "two_stage": two_stage,
               "queries_per_second": {name: q_s for name, q_s, _, _ in rows},
               "bytes_per_item": bytes_per_item, "ivf": {"nlist": args.nlist, "build_seconds": build, "by_nprobe": {
                   str(r[0]): {"queries_per_second": r[1], "speedup_vs_flat": r[2], "recall_ids": r[3],
                               "recall_tie_aware": r[4]} for r in ivf_rows}}}
    if mv_row:
        metrics["milvus_lite"] = {"items": mv_row[0], "queries_per_second": mv_row[1],
                                  "faiss_flat_same_items_qps": mv_row[2], "insert_seconds": mv_row[3],
                                  "same_distances": mv_row[4]}
    publish("index-1m", "Index: 1M codes", "synthetic mixtures of all splits' features" if args.model else "random",
            metrics, "\n".join(body))


def bench_two_stage(ids, fdb, q, fq, k: int, candidate_counts, truth: np.ndarray, t_float: float,
                    stages: dict) -> dict:
    """The served path at scale: a first stage's top N (``stages``: name -> search(codes, n)),
    then each query's candidates looked up in a ``RerankStore`` (memory-mapped from disk, as
    a loaded index holds it) and ranked by cosine, as ``CrossModalIndex._rerank`` does."""
    import tempfile

    from retrieval.rerank import RerankStore, bytes_per_item, cosines

    with tempfile.TemporaryDirectory() as tmp:
        store = RerankStore("int8")
        store.add(ids, fdb)
        store.write_into(Path(tmp), "image")
        store = RerankStore.open(Path(tmp), "image", "int8")

        def serve(search, n: int) -> np.ndarray:
            _, cand = search(q, n)
            out = np.full((len(q), k), -1, np.int64)
            for i, row in enumerate(cand):
                row = row[row >= 0]
                vectors, scales, _ = store.lookup(row)
                best = row[np.argsort(-cosines(fq[i:i + 1], vectors, scales)[0], kind="stable")[:k]]
                out[i, :len(best)] = best
            return out

        result = {"float_dim": int(fdb.shape[1]), "float_flat_queries_per_second": len(q) / t_float, "by_stage": {}}
        for stage, search in stages.items():
            for n in candidate_counts:
                t = best_of(lambda: serve(search, n), repeats=2)
                found = serve(search, n)
                recall = float(np.mean([len(set(a[a >= 0]) & set(b)) / k for a, b in zip(found, truth)]))
                result["by_stage"].setdefault(stage, {})[str(n)] = {
                    "queries_per_second": len(q) / t, "speedup_vs_float_flat": t_float / t,
                    "recall_vs_float_flat": recall,
                    "bytes_per_item": bytes_per_item(64, store.width, store.dtype)}
                print(f"two-stage {stage} N={n}: {len(q) / t:.0f} q/s ({t_float / t:.1f}x float flat), recall@{k} "
                      f"vs float flat {recall:.3f}", flush=True)
    return result


def _recalls(D, I, D_ref, I_ref, k) -> tuple[float, float]:
    id_recall = np.mean([len(set(a[a >= 0]) & set(b)) / k for a, b in zip(I, I_ref)])
    dist_recall = np.mean([_multiset_overlap(a[i >= 0], b) / k for a, i, b in zip(D, I, D_ref)])
    return float(id_recall), float(dist_recall)


def bench_milvus_server(uri: str, ids, db, q, k: int, nlist: int, nprobes, D_ref, I_ref) -> list[tuple]:
    """Insert the codes into BIN_FLAT and BIN_IVF_FLAT collections on the server, wait
    until they are indexed and loaded, then time batched searches."""
    from retrieval.milvus import MilvusBinaryIndex, MilvusOptions

    out = []
    for kind, params in (("flat", {}), ("ivf", {"nlist": nlist, "nprobe": nprobes[0]})):
        options = MilvusOptions(uri=uri, index_id=f"bench{int(time.time())}", insert_batch=20_000)
        mv = MilvusBinaryIndex(64, kind, options, kind, params)
        t = time.time()
        mv.add(ids, db)
        mv.client.flush(mv.collection)
        insert_s = time.time() - t
        mv.wait_until_indexed()
        mv.client.release_collection(mv.collection)
        mv.client.load_collection(mv.collection)  # sealed, indexed segments, as a server serves them
        ready_s = time.time() - t
        n = mv.ntotal
        for nprobe in (nprobes if kind == "ivf" else [None]):
            if nprobe:
                mv.params["nprobe"] = nprobe
            D, I = _batched(mv, q, k)
            t_s = best_of(lambda: _batched(mv, q, k), repeats=2)
            id_r, dist_r = _recalls(D, I, D_ref, I_ref, k)
            out.append((f"Milvus {'BIN_FLAT' if kind == 'flat' else 'BIN_IVF_FLAT'}", nprobe, len(q) / t_s, id_r,
                        dist_r, len(ids) / insert_s, ready_s, n))
            print(f"Milvus {kind} nprobe={nprobe}: {len(q) / t_s:.0f} q/s, recall ids {id_r:.3f} tie-aware "
                  f"{dist_r:.3f}; insert {len(ids) / insert_s:,.0f}/s, ready after {ready_s:.0f}s", flush=True)
        mv.drop()
    return out


def _batched(mv, q, k: int, batch: int = 100):
    parts = [mv.search(q[s:s + batch], k) for s in range(0, len(q), batch)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def write_milvus_section(args, kind: str, flat_row, ivf_rows, server_rows) -> None:
    body = [f"{args.items:,} 64-bit codes ({kind}), {args.queries:,} queries (Milvus: 100 per request), "
            f"k={args.k}; a Milvus 2.3.5 standalone server (the `milvus` package) on the same 2-core machine, "
            f"talking gRPC over loopback; recall against crossmodal's exact flat index. Each collection is "
            f"flushed, indexed over every row and reloaded before searching. Uniform random codes have no "
            f"cluster structure, the worst case for IVF recall (trained codes: section \"Index: 1M codes\").", "",
            "| index | nprobe | queries/s | recall@k (ids) | recall@k (tie-aware) | insert rate | "
            "ready to search after |", "|---|---|---|---|---|---|---|",
            f"| faiss flat (crossmodal) | | {flat_row[1]:,.0f} | 1.000 | 1.000 | | |"]
    body += [f"| faiss IVF nlist={args.nlist} | {r[0]} | {r[1]:,.0f} | {r[3]:.3f} | {r[4]:.3f} | | |" for r in ivf_rows]
    body += [f"| {r[0]} | {r[1] or ''} | {r[2]:,.0f} | {r[3]:.3f} | {r[4]:.3f} | {r[5]:,.0f} items/s | {r[6]:.0f} s |"
             for r in server_rows]
    body += ["", "Sizing: each item costs 8 B of code + 8 B of id + 8 B of insertion order on the server (before "
             "Milvus' own overheads). Queries/s is for one standalone node sharing two cores with the client; "
             "BIN_IVF_FLAT's queries/s not moving with nprobe says the cost here is the request (gRPC, 100 x k "
             "results decoded in Python), not the scan: a query node on its own cores, with larger batches, "
             "answers faster."]
    metrics = {"items": args.items, "queries": args.queries, "k": args.k, "codes": kind,
               "faiss_flat_qps": flat_row[1],
               "faiss_ivf": [{"nprobe": r[0], "queries_per_second": r[1], "recall_ids": r[3], "recall_tie_aware": r[4]}
                             for r in ivf_rows],
               "milvus": [{"index": r[0], "nprobe": r[1], "queries_per_second": r[2], "recall_ids": r[3],
                           "recall_tie_aware": r[4], "insert_items_per_second": r[5], "ready_seconds": r[6],
                           "rows": r[7]} for r in server_rows]}
    publish("index-1m-milvus-server", "Index: 1M codes on a Milvus server", "random" if "random" in kind else "synthetic",
            metrics, "\n".join(body))


def _multiset_overlap(a: np.ndarray, b: np.ndarray) -> int:
    va, ca = np.unique(a[a >= 0], return_counts=True)
    vb, cb = np.unique(b[b >= 0], return_counts=True)
    common, ia, ib = np.intersect1d(va, vb, return_indices=True)
    return int(np.minimum(ca[ia], cb[ib]).sum())


if __name__ == "__main__":
    main()
