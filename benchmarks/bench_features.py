"""Feature-cache extraction through the one batch encoder: decoding in a worker process
against decoding in the main process, on a prepared split's images.

Each run extracts the default image encoder's features (both views, through ONNX Runtime
where installed) of the first ``--images`` images of the split into an empty temporary
cache; runs alternate between worker counts, ``--repeats`` each, and the fastest of each
is kept (the least disturbed by a noisy machine). The features of every run must be
bit-identical: the worker count changes speed, never a cached value.

    python benchmarks/bench_features.py --data runs/data/flickr8k --split dev --images 256
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import publish  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a prepared dataset folder")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--workers", default="0,1", help="decoding processes to compare")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import torch

    from crossmodal.config import ModelConfig
    from crossmodal.data.format import load_prepared
    from crossmodal.features import encoder_key, image_features
    from crossmodal.model import create_model

    ds = load_prepared(args.data)[args.split]
    ds = ds.select(range(min(args.images, len(ds))))
    config = ModelConfig()
    encoder = create_model(config).image_encoder
    key = encoder_key(config.image_encoder)
    counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        image_features(encoder, key, ds.select(range(8)), Path(tmp) / "warm")  # the ONNX export, once, not timed
        seconds = {w: [] for w in counts}
        reference = None
        for r in range(args.repeats):
            for w in counts:
                t = time.perf_counter()
                feats = image_features(encoder, key, ds, Path(tmp) / f"run{r}-{w}", workers=w)
                seconds[w].append(time.perf_counter() - t)
                if reference is None:
                    reference = feats
                elif not torch.equal(feats, reference):
                    raise SystemExit(f"features with {w} worker(s) differ from the first run's")
    best = {w: min(s) for w, s in seconds.items()}
    metrics = {"images": len(ds), "encoder": config.image_encoder.name, "image_size": encoder.image_size,
               "seconds": {str(w): s for w, s in seconds.items()},
               "images_per_second": {str(w): len(ds) / best[w] for w in counts},
               "identical_features": True}
    base = counts[0]
    rows = ["| decoding workers | images/s (best of %d) | vs %d |" % (args.repeats, base), "|---|---|---|"]
    rows += [f"| {w} | {len(ds) / best[w]:.1f} | {best[base] / best[w]:.2f}x |" for w in counts]
    summary = (f"Feature-cache extraction of {len(ds)} {args.split} images of `{args.data}` with the default image "
               f"encoder ({config.image_encoder.name}, {encoder.image_size} px, both views), into an empty cache:\n\n"
               + "\n".join(rows) + "\n\nThe features are bit-identical whatever the worker count (checked in the run).")
    print(summary)
    publish("features-decoding", "Feature extraction: decoding workers", args.split, metrics, summary)


if __name__ == "__main__":
    main()
