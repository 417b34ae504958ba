"""Test-time image views: what averaging several views of each image buys a trained
model, and what it costs in CNN passes.

    python benchmarks/bench_views.py --model /tmp/q/models/flickr8k-default --data /tmp/q/data/flickr8k

The model is trained as shipped (its heads saw the plain and mirrored centre crops).
At encode time each test image goes through the frozen CNN once per view; the head's
relaxed outputs of the views are averaged before the sign (what ``--flip-tta`` does
with the plain and mirrored views). Captions are unchanged. Views:

* ``center``: the encoder's transform (shorter side to S, centre crop S): the baseline;
* ``flip``: the centre crop mirrored;
* ``full``: the whole image squashed to S x S (the crop cuts a 4:3 photo's sides; on
  images stored square, as the shared Flickr8k copy is, it is the centre view again);
* ``crop5``: the four corners and the centre of the image resized to 1.15 S (multi-crop);
* ``*_flip``: the same, mirrored.

Flickr8k protocol (1,000 test images vs their 5,000 captions, pairs), Hamming ranking.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2 as T

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, publish  # noqa: E402

sys.path.insert(0, str(ROOT))

COMBOS = {
    "center (shipped)": ["center"],
    "center + flip (`--flip-tta`)": ["center", "center_flip"],
    "center + full": ["center", "full"],
    "center + full, both mirrored": ["center", "center_flip", "full", "full_flip"],
    "5 crops at 1.15x": [f"crop{i}" for i in range(5)],
    "center + 5 crops, all mirrored": ["center", "center_flip"] + [f"crop{i}{f}" for i in range(5) for f in ("", "_flip")],
}


def view_tensors(encoder, img) -> dict[str, torch.Tensor]:
    """Every view of one PIL image as normalised tensors [3, S, S]."""
    s = encoder.image_size
    norm = T.Compose([T.ToImage(), T.RGB(), T.ToDtype(torch.float32, scale=True), T.Normalize(encoder.mean, encoder.std)])
    out = {"center": encoder.transform(train=False)(img), "full": norm(T.Resize((s, s), antialias=True)(img))}
    big = T.Resize(int(round(s * 1.15)), antialias=True)(img)
    for i, crop in enumerate(T.FiveCrop(s)(big)):
        out[f"crop{i}"] = norm(crop)
    for k in list(out):
        out[f"{k}_flip"] = torch.flip(out[k], dims=[2])
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="prepared Flickr8k folder")
    p.add_argument("--split", default="dev", help="choices are made on dev; test is measured once, for the default")
    p.add_argument("--bits", default="16,64")
    p.add_argument("--title", default=None, help="BENCHMARKS.md section title")
    args = p.parse_args()
    from crossmodal.cache import default_cache_dir
    from crossmodal.data import load_prepared
    from crossmodal.data.splits import flatten_split
    from crossmodal.data.images import open_cell
    from crossmodal.features import _digest, encoder_key
    from crossmodal.split_outputs import relaxed_outputs
    from crossmodal.model import CrossModalHasher
    from crossmodal.runtime import feature_extractor
    from datasets import Image as HFImage
    from retrieval.protocol import EvalConfig, ItemSet, Side, evaluate

    torch.set_grad_enabled(False)
    model = CrossModalHasher.from_pretrained(args.model).eval()
    enc = model.image_encoder
    ds = load_prepared(args.data, splits=[args.split])[args.split]
    flat = flatten_split(ds)
    shipped = relaxed_outputs(model, ds, flat.captions, default_cache_dir())
    key = _digest({"kind": "image", "encoder": encoder_key(model.config.image_encoder)})
    extract = feature_extractor(enc, key)
    cells = ds.cast_column("image", HFImage(decode=False))["image"]

    relaxed: dict[str, list[np.ndarray]] = {}
    t_cnn = 0.0
    batch = 32
    for s in range(0, len(cells), batch):
        views = [view_tensors(enc, open_cell(v)) for v in cells[s:s + batch]]
        for name in views[0]:
            x = torch.stack([v[name] for v in views])
            t = time.perf_counter()
            f = extract(x)
            t_cnn += time.perf_counter() - t
            relaxed.setdefault(name, []).append(model.image_relaxed_from_features(f.float()).numpy())
        print(f"\r{min(s + batch, len(cells))}/{len(cells)} images", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    relaxed = {k: np.concatenate(v) for k, v in relaxed.items()}
    ms_per_pass = 1000 * t_cnn / (len(cells) * len(relaxed))
    drift = float(np.abs(relaxed["center"] - shipped.image_relaxed).max())
    full_vs_center = float(np.abs(relaxed["center"] - relaxed["full"]).mean() / np.abs(relaxed["center"]).mean())
    square = sum(w == h for w, h in (open_cell(v).size for v in cells[:50]))

    bits = tuple(int(b) for b in args.bits.split(","))
    texts = Side(shipped.text_relaxed, flat.caption_owners())
    rows, measured = [], {}
    for label, names in COMBOS.items():
        images = Side(np.mean([relaxed[n] for n in names], axis=0), list(flat.ids))
        rep = evaluate(model.quantize, ItemSet(images, texts, [args.split]), None,
                       EvalConfig(bits=bits, relevance="pairs", baselines=False))
        cells_ = []
        for b in bits:
            r = {d: rep["results"][d][str(b)] for d in ("i2t", "t2i")}
            cells_.append(" / ".join(f"{r[d][f'R@{k}']:.1f}" for d in ("i2t", "t2i") for k in (1, 5, 10)))
        measured[label] = {"cnn_passes": len(names), "results": {
            str(b): {d: {f"R@{k}": rep["results"][d][str(b)][f"R@{k}"] for k in (1, 5, 10)} for d in ("i2t", "t2i")}
            for b in bits}}
        rows.append(f"| {label} | {len(names)} | {' | '.join(cells_)} |")
        print(rows[-1], flush=True)

    head = " | ".join(f"{b} bits: i→t R@1/5/10 / t→i R@1/5/10" for b in bits)
    body = "\n".join([
        f"Model: `{args.model}` ({model.config.image_encoder.name}, frozen; its heads trained on plain and mirrored "
        f"centre crops). {len(cells):,} images, {len(flat.captions):,} captions; captions unchanged, each "
        f"image's relaxed outputs averaged over its views before the sign ({args.split} split). One CNN pass costs "
        f"{ms_per_pass:.1f} ms an image here (ONNX Runtime), so an image's encoding cost is the number "
        f"of views times that. The centre view recomputed here matches the cached one to {drift:.1e}. "
        f"{square} of the first 50 images are square (the shared Flickr8k copy stores every photo squashed to "
        f"224x224), where the centre crop already is the whole photo: `full` then differs from `center` by "
        f"{full_vs_center:.1%} of the outputs' magnitude and adds nothing; the crops are of an upscaled "
        f"224-px image.", "",
        f"| views | CNN passes per image | {head} |",
        "|---|---|" + "---|" * len(bits),
        *rows])
    publish(f"views-{args.split}", args.title or f"Test-time image views (Flickr8k {args.split})", args.split,
            {"views": measured, "cnn_ms_per_pass": ms_per_pass, "centre_drift": drift}, body,
            kind="ablation" if args.split != "test" else "benchmark")


if __name__ == "__main__":
    main()
