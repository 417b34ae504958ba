"""Photos/s of ``crossmodal index build --images`` as a user runs it, for 1, 10 and
10,000 generated 12-MP JPEGs (start-up included: a fresh command each time), per image
runtime, with the peak memory of the 10,000-photo build, and where a photo's time goes
(reading, hashing, reduced decoding and the transform on one core, against the CNNs
per runtime on one thread).

    python benchmarks/bench_ingest_scale.py [--sizes 1,10,10000] [--runtimes auto,openvino-bf16]

The bundled model (three CNNs) does the encoding; photos are hard links to ``--distinct``
generated sources (``bench_ingest.py``'s generator), read from the page cache.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.bench_ingest import make_library, make_sources, tree_pss  # noqa: E402
from benchmarks.common import publish  # noqa: E402

CLI = [sys.executable, "-m", "crossmodal.cli", "--quiet"]


def build(library: Path, out: Path, runtime: str) -> tuple[float, int]:
    """Seconds of one ``index build --images`` process and its peak PSS (with its workers)."""
    t = time.perf_counter()
    proc = subprocess.Popen([*CLI, "index", "build", "--images", str(library), "--out", str(out), "--runtime", runtime],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_pss(proc.pid))
        time.sleep(0.25)
    seconds = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(proc.stderr.read())
    return seconds, peak


def per_photo_split(sources: list[Path], runtimes: list[str]) -> dict:
    """Milliseconds per photo on one core: opening (read, hash, reduced decode, look) and the
    transform; the image path per runtime on one thread (batches of 32)."""
    import torch

    from crossmodal.image_batches import PhotoFiles
    from crossmodal.model import CrossModalHasher
    from crossmodal.runtime import image_runtime

    torch.set_num_threads(1)
    model = CrossModalHasher.from_pretrained("default")
    files = PhotoFiles([str(p) for p in sources], min_side=model.image_encoder.image_size)
    transform = model.image_encoder.transform(train=False)
    t = time.perf_counter()
    pixels = [transform(files.open(i)[0]) for i in range(len(files))]
    out = {"decode_ms": round(1000 * (time.perf_counter() - t) / len(files), 1)}
    batch = torch.stack((pixels * (32 // len(pixels) + 1))[:32])
    for name in runtimes:
        rt = image_runtime(model, name, threads=1)
        rt.relaxed(batch)
        t = time.perf_counter()
        for _ in range(2):
            rt.relaxed(batch)
        out[f"cnn_ms/{name}"] = round(1000 * (time.perf_counter() - t) / 64, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,10,10000")
    ap.add_argument("--runtimes", default="auto,openvino-bf16")
    ap.add_argument("--distinct", type=int, default=20)
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    runtimes = args.runtimes.split(",")

    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        tmp = Path(tmp)
        big, _ = make_sources(tmp / "sources", args.distinct)
        split = per_photo_split(big, runtimes)
        print(split, flush=True)
        rows = {}
        for runtime in runtimes:
            for n in sizes:
                library = make_library(tmp / f"lib{n}", big, n) if not (tmp / f"lib{n}").exists() else tmp / f"lib{n}"
                seconds, peak = build(library, tmp / f"idx-{runtime}-{n}", runtime)
                rows[f"{runtime}/{n}"] = {"photos": n, "seconds": round(seconds, 1),
                                          "photos_per_s": round(n / seconds, 2), "peak_pss_mb": round(peak / 2**20)}
                print(runtime, rows[f"{runtime}/{n}"], flush=True)

    largest = max(sizes)
    table = "\n".join(f"| {r} | {n:,} | {row['seconds']:.1f} | {row['photos_per_s']:.1f} | {row['peak_pss_mb']:,} |"
                      for r in runtimes for n in sizes for row in [rows[f"{r}/{n}"]])
    cnn = ", ".join(f"{split[f'cnn_ms/{r}']} ms with `{r}`" for r in runtimes)
    best = max(rows[f"{r}/{largest}"]["photos_per_s"] for r in runtimes)
    summary = (
        f"`crossmodal index build --images` with the bundled model, a fresh command each time (start-up included), "
        f"generated 4032x3024 JPEGs (q90, hard links to {args.distinct} sources), {os.cpu_count()} cores:\n\n"
        f"| runtime | photos | seconds | photos/s | peak memory (PSS, MB) |\n|---|---|---|---|---|\n{table}\n\n"
        f"Where a photo's time goes, on one core: reading, hashing, decoding at 1/8 scale and the transform "
        f"{split['decode_ms']} ms; the three CNNs and the head {cnn}. The default build runs two decoding "
        f"processes and one CNN thread on two cores. At {largest:,} photos the best rate is {best:.1f} photos/s "
        f"({'at or above' if best >= 40 else 'below'} the 40 photos/s target).")
    metrics = {"runs": rows, "per_photo_one_core": split, "sources": args.distinct}
    publish("ingest-scale", "Photo ingest at 1, 10 and 10,000 photos", "generated photos", metrics, summary)
    print(summary)


if __name__ == "__main__":
    main()
