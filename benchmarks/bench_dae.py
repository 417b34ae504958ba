"""Codes without captions: the denoising autoencoder head (``crossmodal train --images``)
against LSH and ITQ of the same frozen CNN features, image -> image on the labelled
fashion catalogue (relevance: the same ``articleType``), at 16/32/64 bits, over seeds.

Photos are a seeded sample of ../shared/data/fashion: ``--train`` to learn the codes
(the autoencoder trains on them, LSH and ITQ are fitted on them), then ``--dev`` photos
to choose on and ``--test`` photos measured once (``--split test``), all disjoint. Each
evaluated photo queries the others of its split (itself left out); mAP over the whole
ranking (stable order for ties) and its tie-aware expectation.

    python benchmarks/bench_dae.py --seeds 0,1,2              # dev: choose
    python benchmarks/bench_dae.py --seeds 0,1,2 --split test # once, for what was chosen
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import publish  # noqa: E402

FASHION = ROOT.parent / "shared" / "data" / "fashion"


def sample(n_train: int, n_dev: int, n_test: int, seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """(path, articleType) of disjoint train/dev/test photos; the sample is the same for every
    method and seed (only what learns is seeded)."""
    rows = [(str(FASHION / "images" / f"{r['id']}.jpg"), r["articleType"])
            for r in csv.DictReader((FASHION / "styles.csv").open(encoding="utf-8"))
            if r.get("articleType") and (FASHION / "images" / f"{r['id']}.jpg").is_file()]
    order = np.random.default_rng(seed).permutation(len(rows))
    picked = [rows[i] for i in order[:n_train + n_dev + n_test]]
    return {"train": picked[:n_train], "dev": picked[n_train:n_train + n_dev], "test": picked[n_train + n_dev:]}


def label_map(codes: np.ndarray, labels: list[str]) -> dict[str, float]:
    from crossmodal.codes import hamming_distances
    from retrieval import metrics as M

    dist = hamming_distances(codes, codes).astype(np.float64)
    np.fill_diagonal(dist, np.inf)  # a photo never retrieves itself
    lab = np.array(labels)
    rel = lab[:, None] == lab[None, :]
    np.fill_diagonal(rel, False)
    ranking = M.rank_by_distance(dist)[:, :-1]  # itself, at infinity, dropped
    rel_ranked = np.take_along_axis(rel, ranking, axis=1)
    ap = M.mean_average_precision(np.broadcast_to(np.arange(ranking.shape[1]), ranking.shape), rel_ranked)["mAP"]
    tie = M.tie_aware_map(np.take_along_axis(dist, ranking, axis=1), rel_ranked)["mAP_tie_aware"]
    return {"mAP": round(float(ap), 4), "mAP_tie_aware": round(float(tie), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--bits", default="16,32,64")
    ap.add_argument("--split", default="dev", choices=["dev", "test"])
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--dev", type=int, default=1000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=None, help="default: what `crossmodal train --images` uses")
    ap.add_argument("--loss", default=None, help="the autoencoder's --loss override (JSON), e.g. intra-image on")
    args = ap.parse_args()
    if not FASHION.is_dir():
        raise SystemExit(f"{FASHION} is absent: this benchmark needs ../shared/data/fashion")

    import torch

    from crossmodal.cache import default_cache_dir
    from crossmodal.codes import sign_codes
    from crossmodal.config import ModelConfig
    from crossmodal.encoders import create_image_encoder
    from crossmodal.features import encoder_key, photo_features
    from crossmodal.model import CrossModalHasher
    from retrieval.baselines import ITQ, LSH
    from training import LossConfig
    from training.config import PHOTO_LOSS, PHOTO_TRAIN
    from training.photos import train_on_photos

    seeds = [int(s) for s in args.seeds.split(",")]
    bits = [int(b) for b in args.bits.split(",")]
    cfg = ModelConfig(bits=tuple(bits))
    photos = sample(args.train, args.dev, args.test)
    encoder = create_image_encoder(cfg.image_encoder)
    key = encoder_key(cfg.image_encoder)
    feats = {}
    for split in ("train", args.split):
        f, kept, failed = photo_features(encoder, key, [p for p, _ in photos[split]], default_cache_dir(),
                                         desc=f"{split} features")
        if failed:
            raise SystemExit(f"{len(failed)} fashion photo(s) did not decode: {failed[:3]}")
        feats[split] = f[:, 0].numpy()  # the plain view
    labels = [lab for _, lab in photos[args.split]]
    loss = LossConfig(**{**PHOTO_LOSS.__dict__, **(json.loads(args.loss) if args.loss else {})})
    per_seed: dict[str, dict[str, dict[str, list]]] = {}
    best_epochs: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            run = train_on_photos([p for p, _ in photos["train"]], Path(tmp) / f"dae{seed}", cfg,
                                  replace(PHOTO_TRAIN, seed=seed, epochs=args.epochs or PHOTO_TRAIN.epochs), loss)
            best_epochs.append(run.summary["best_epoch"])
            model = CrossModalHasher.from_pretrained(Path(tmp) / f"dae{seed}")
            with torch.inference_mode():
                relaxed = model.image_relaxed_from_features(torch.from_numpy(feats[args.split])).numpy()
            for b in bits:
                methods = {"DAE (ours, no captions)": sign_codes(relaxed, b),
                           "LSH of the CNN features": LSH(feats["train"].shape[1], b, seed).fit(feats["train"]).encode(
                               feats[args.split]),
                           "ITQ of the CNN features": ITQ(b, seed=seed).fit(feats["train"]).encode(feats[args.split])}
                for name, codes in methods.items():
                    for metric, v in label_map(codes, labels).items():
                        per_seed.setdefault(name, {}).setdefault(str(b), {}).setdefault(metric, []).append(v)
    metrics = {"seeds": seeds, "photos": {k: len(v) for k, v in photos.items()}, "relevance": "same articleType",
               "loss": loss.__dict__, "epochs": args.epochs or PHOTO_TRAIN.epochs, "methods": {}}
    lines = [f"Image → image mAP on fashion {args.split} ({len(labels)} photos, each querying the others; relevant: "
             f"same articleType), codes learned or fitted on {len(photos['train'])} other photos; mean ± std over "
             f"seeds {seeds}.", "", "| method | " + " | ".join(f"{b} bits" for b in bits) + " |",
             "|---|" + "---|" * len(bits)]
    for name, by_bits in per_seed.items():
        row = {}
        for b in bits:
            vals = by_bits[str(b)]
            row[str(b)] = {m: {"mean": round(float(np.mean(v)), 4), "std": round(float(np.std(v)), 4), "per_seed": v}
                           for m, v in vals.items()}
        if name.startswith("DAE"):
            row["best_epoch"] = best_epochs
        metrics["methods"][name] = row
        lines.append(f"| {name} | " + " | ".join(f"{row[str(b)]['mAP']['mean']:.3f} ± {row[str(b)]['mAP']['std']:.3f}"
                                               for b in bits) + " |")
    publish("dae-fashion", "Codes without captions: autoencoder vs LSH and ITQ (fashion, image → image)",
            args.split, metrics, "\n".join(lines), kind="quality")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
