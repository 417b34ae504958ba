"""What the safety of the reliability work costs, measured in one run on this machine.

* screening a split (decode every image reduced, once per dataset) against extracting
  its features with the default CNN: the screening overhead as a ratio;
* a 12-MP JPEG decoded in full against reduced to the encoder's size (``Image.draft``);
* a pixel bomb refused from its header;
* a serialised write (lock -> load newest -> add -> save new version) on indexes of
  growing size, and the per-request ``CURRENT`` check of a server.

    python benchmarks/bench_reliability.py [--images 1000]
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import best_of, publish  # noqa: E402


def _photo(rng, w, h, quality=90) -> bytes:
    base = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    img = np.kron(base, np.ones((16, 16, 1), np.uint8))[:h, :w]
    img = np.clip(img.astype(np.int16) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def bench_screening(n: int, tmp: Path) -> tuple[list[str], dict]:
    import torch
    from datasets import Dataset

    from crossmodal.config import ImageEncoderConfig, ModelConfig
    from crossmodal.data.format import _features
    from crossmodal.data.screen import screen_split
    from crossmodal.model import CrossModalHasher
    from crossmodal.features import image_features

    rng = np.random.default_rng(0)
    rows = [{"id": f"i{i}", "image": {"bytes": _photo(rng, 224, 224, 85), "path": None}, "captions": ["a photo"],
             "labels": []} for i in range(n)]
    ds = Dataset.from_list(rows, features=_features())
    t = time.perf_counter()
    screen_split(ds, "bench", tmp / "cache", warn=False)
    first = time.perf_counter() - t
    cached = best_of(lambda: screen_split(ds, "bench", tmp / "cache", warn=False))
    torch.set_num_threads(2)
    model = CrossModalHasher(ModelConfig(image_encoder=ImageEncoderConfig(name="efficientnet-lite0")))
    t = time.perf_counter()
    image_features(model.image_encoder, {}, ds, None)
    feats = time.perf_counter() - t
    return [f"| screening {n} images of 224x224 (first time, decodes each) | {first:.2f} s "
            f"({first / n * 1000:.2f} ms/image) |",
            f"| screening again (cached result) | {cached * 1000:.1f} ms |",
            f"| feature extraction of the same images (EfficientNet-Lite0, 2 views) | {feats:.1f} s "
            f"({feats / n * 1000:.1f} ms/image) |",
            f"| screening overhead on the first feature extraction | {first / feats:.1%} |"], {
        "screening_images": n, "screening_first_seconds": first, "screening_cached_seconds": cached,
        "feature_extraction_seconds": feats}


def bench_decoding() -> tuple[list[str], dict]:
    from crossmodal.data.images import ImageTooLarge, open_image

    rng = np.random.default_rng(1)
    data = _photo(rng, 4032, 3024)
    full = best_of(lambda: open_image(data))
    reduced = best_of(lambda: open_image(data, min_side=224))
    bomb = io.BytesIO()
    Image.new("1", (12000, 12000)).save(bomb, "PNG")
    bomb_bytes = bomb.getvalue()

    def refuse():
        try:
            open_image(bomb_bytes)
        except ImageTooLarge:
            pass
    refused = best_of(refuse)
    size = open_image(data, min_side=224).size
    return [f"| 12-MP JPEG ({len(data) / 1e6:.1f} MB), full decode | {full * 1000:.0f} ms |",
            f"| same, reduced to the encoder's size (decoded {size[0]}x{size[1]}) | {reduced * 1000:.0f} ms "
            f"({full / reduced:.1f}x faster) |",
            f"| 144-MP PNG bomb ({len(bomb_bytes) / 1e3:.0f} KB) refused from its header | {refused * 1000:.2f} ms |"], {
        "jpeg_12mp_bytes": len(data), "full_decode_seconds": full, "reduced_decode_seconds": reduced,
        "reduced_size": list(size), "bomb_refused_seconds": refused}


def bench_writes(tmp: Path) -> tuple[list[str], dict]:
    from retrieval.index import CrossModalIndex, IndexChanges, NewIndex, SignCodes, read_current_version, write_index
    from retrieval.store import Item

    rng = np.random.default_rng(2)
    vectors = SignCodes("bench")
    out, measured = [], {}
    for n in (10_000, 100_000):
        folder = tmp / f"idx{n}"
        write_index(folder, vectors, IndexChanges().add("text", [Item(key=f"t{i}", source=f"caption {i}")
                                                                 for i in range(n)], rng.normal(size=(n, 64))),
                    create=NewIndex(64, rerank_dtype=None))
        counter = iter(range(10 ** 9))

        def write():
            k = next(counter)
            write_index(folder, vectors, IndexChanges().add("text", [Item(key=f"new{k}-{j}", source="x")
                                                                     for j in range(5)], rng.normal(size=(5, 64))))
        load = best_of(lambda: CrossModalIndex.load(folder))
        w = best_of(write)
        measured[f"write_5_into_{n}_seconds"], measured[f"load_{n}_seconds"] = w, load
        out.append(f"| serialised write of 5 captions into an index of {n:,} captions (lock, load, add, save) | "
                   f"{w * 1000:.0f} ms (of which load {load * 1000:.0f} ms) |")
    folder = tmp / "idx10000"
    t = time.perf_counter()
    for _ in range(10_000):
        read_current_version(folder)
    check = (time.perf_counter() - t) / 10_000
    measured["version_check_seconds"] = check
    out.append(f"| a server's per-request check for a newer version (`CURRENT`) | {check * 1e6:.0f} µs |")
    return out, measured


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        parts = {"decoding": bench_decoding(), "screening": bench_screening(args.images, tmp),
                 "writes": bench_writes(tmp)}
    rows = [row for part_rows, _ in parts.values() for row in part_rows]
    body = "\n".join(["| what | time |", "|---|---|", *rows, "",
                      "Screening is paid once per dataset (its result is cached by the split's fingerprint). "
                      "A write's cost is dominated by loading and saving the index, which the writer lock "
                      "serialises; the per-request version check is one small file read."])
    print(body)
    publish("reliability", "Reliability: what the safeguards cost", "generated data",
            {name: measured for name, (_, measured) in parts.items()}, body)


if __name__ == "__main__":
    main()
