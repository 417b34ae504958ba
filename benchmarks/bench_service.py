"""Bounded load test of the HTTP service on loopback: N concurrent clients x M requests
each (text searches), stopping by itself. Reports throughput, p50/p99 latency, errors.

    python benchmarks/bench_service.py --index runs/demo/index --clients 8 --requests 200
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import publish  # noqa: E402

WORDS = ["red", "blue", "green", "yellow", "purple", "orange", "circle", "square", "triangle", "star", "large",
         "small", "left", "right", "dog", "beach", "snow", "child", "running", "water"]


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--index", required=True)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=200, help="per client")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "crossmodal.cli", "serve", "--index", args.index, "--port",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)

        def client(seed: int):
            rng = np.random.default_rng(seed)
            lat, errors = [], 0
            with httpx.Client(timeout=30) as c:
                for _ in range(args.requests):
                    q = " ".join(rng.choice(WORDS, size=5))
                    t = time.perf_counter()
                    try:
                        ok = c.get(base + "/api/search/text", params={"q": q, "k": 10}).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    lat.append(time.perf_counter() - t)
                    errors += not ok
            return lat, errors

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as ex:
            results = list(ex.map(client, range(args.clients)))
        wall = time.perf_counter() - t0
        stats = httpx.get(base + "/api/stats").json()
    finally:
        server.terminate()
        server.wait(10)
    lat = np.array([x for r in results for x in r[0]]) * 1000
    errors = sum(r[1] for r in results)
    n = len(lat)
    batching = next(iter(stats["batching"].values()))
    print(f"{n} requests from {args.clients} clients in {wall:.1f}s: {n / wall:.1f} req/s, p50 {np.percentile(lat, 50):.0f} ms, "
          f"p99 {np.percentile(lat, 99):.0f} ms, {errors} errors; model batches {batching['batches']} for "
          f"{batching['items']} queries")
    if args.no_write:
        return
    counts = stats["indexes"][str(stats["default_bits"])]["counts"]
    body = [f"`crossmodal serve` on loopback over {counts} ({stats['default_bits']}-bit flat), text search k=10 "
            f"(MiniLM query encoding + Hamming search + metadata), {args.clients} concurrent clients x "
            f"{args.requests} requests, {os.cpu_count()} CPU cores shared by clients and server:", "",
            "| requests | errors | throughput | p50 latency | p99 latency | mean queries per model batch |",
            "|---|---|---|---|---|---|",
            f"| {n} | {errors} | {n / wall:.1f} req/s | {np.percentile(lat, 50):.0f} ms | {np.percentile(lat, 99):.0f} ms "
            f"| {batching['items'] / max(1, batching['batches']):.1f} |"]
    metrics = {"requests": n, "errors": errors, "clients": args.clients, "seconds": wall,
               "requests_per_second": n / wall, "p50_ms": float(np.percentile(lat, 50)),
               "p99_ms": float(np.percentile(lat, 99)), "model_batches": batching["batches"],
               "batched_queries": batching["items"], "index_counts": counts}
    publish("service", "Service: load test", "index as given", metrics, "\n".join(body))


if __name__ == "__main__":
    main()
