"""Training on photos without captions: the deep (denoising) autoencoder family.

``crossmodal train --images DIR`` has no pairs to learn from, so the image head learns
codes that keep what reconstructs the frozen CNN features (``LossConfig.reconstruction``:
a training-only decoder rebuilds the clean features from the code of their noisy copy),
optionally with the intra-modal contrast between a photo's plain and mirrored views.
A seeded cut of the photos is held out; after each epoch it is scored by the share of
its features' variance the codes reconstruct (and, reported beside it, how well a photo's
mirrored view finds the photo itself), which picks the epoch kept. The model is ``image_only``: it serves image
search, duplicates and every index command, and refuses text.
"""
from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from crossmodal.cache import default_cache_dir
from crossmodal.codes import hamming_distances, sign_codes
from crossmodal.config import ModelConfig
from crossmodal.errors import InvalidInput
from crossmodal.features import encoder_key, photo_features
from crossmodal.model import CrossModalHasher
from crossmodal.pretrained import write_card
from crossmodal.progress import progress

from .config import PHOTO_LOSS, LossConfig, TrainConfig
from .losses import HashingLoss
from .trainer import warmup_cosine

#: the held-out cut: this share of the photos, and never fewer than MIN_DEV of them
DEV_SHARE = 0.1
MIN_DEV = 4
#: fewer photos than this leave too little to learn codes from (and to score them on)
MIN_PHOTOS = 20


@dataclass
class PhotoRun:
    summary: dict
    failed: list[tuple[str, str]]  #: (path, why) of the photos that could not be decoded


def dev_cut(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, dev positions) of ``n`` photos: a seeded share held out."""
    if n < MIN_PHOTOS:
        raise InvalidInput(f"{n} readable photo(s): training on photos needs at least {MIN_PHOTOS} (a share is held "
                           f"out to pick the best epoch); add photos, or use the bundled model")
    n_dev = max(MIN_DEV, round(DEV_SHARE * n))
    order = np.random.default_rng([seed, 7]).permutation(n)
    return np.sort(order[n_dev:]), np.sort(order[:n_dev])


def view_retrieval_score(plain: np.ndarray, mirrored: np.ndarray, nbits: int) -> dict[str, float]:
    """How well each photo's mirrored view finds the photo among the held-out ones, and the
    other way: R@1/5/10 (%) at ``nbits`` sign codes, ties counted against the photo (its
    rank is the number of others at a distance no greater than its own), and their mean."""
    a, b = sign_codes(plain, nbits), sign_codes(mirrored, nbits)
    out = {}
    for name, (q, d) in {"m2p": (b, a), "p2m": (a, b)}.items():
        dist = hamming_distances(q, d)
        own = np.diag(dist)
        rank = (dist <= own[:, None]).sum(1) - 1  # others as near as its own view
        for k in (1, 5, 10):
            out[f"{name}_R@{k}"] = float(100 * np.mean(rank < k))
    out["score"] = float(np.mean(list(out.values())))
    return out


def train_on_photos(paths: list[str], out: str | Path, model_config: ModelConfig, config: TrainConfig,
                    loss: LossConfig | None = None, card: dict | None = None) -> PhotoRun:
    """Train an image-only model on the photo files ``paths`` and write it to ``out``."""
    out = Path(out)
    cfg = config
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    model_config = replace(model_config, image_only=True)
    model = CrossModalHasher(model_config)
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    feats, kept, failed = photo_features(model.image_encoder, encoder_key(model_config.image_encoder), paths, cache)
    failed_paths = [(paths[p], why) for p, why in failed]
    train_pos, dev_pos = dev_cut(len(kept), cfg.seed)
    # the head learns on centred features, scaled to unit mean variance: a library's photos share a
    # large common component (a CNN's pooled activations are all positive), and on raw features every
    # photo's code collapsed to the same one; the centring is folded into the first layer at the end
    centre = feats[torch.from_numpy(train_pos), 0].mean(0)
    scale = (feats[torch.from_numpy(train_pos), 0] - centre).pow(2).mean().sqrt().clamp(min=1e-6)
    feats = (feats - centre) / scale
    loss_cfg = loss or PHOTO_LOSS
    if not (loss_cfg.reconstruction or loss_cfg.intra_image or loss_cfg.intra_triplet):
        raise InvalidInput("training on photos needs the reconstruction term or the intra-image term: set "
                           "--loss '{\"reconstruction\": 1.0}' (the default for photos)")
    decoder = {"image": int(feats.shape[-1])} if loss_cfg.reconstruction else {}
    torch.manual_seed(cfg.seed)  # the decoder's start, whether the features were computed (probes drawn) or read
    loss_fn = HashingLoss(loss_cfg, model_config.trained_bits, model_config.output_width, decoder)
    val_bits = cfg.val_bits if cfg.val_bits in model_config.bits else model_config.bits[-1]
    params = list(model.image_head.parameters()) + list(loss_fn.parameters())
    opt = torch.optim.AdamW([p for p in params if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = min(cfg.batch_size, len(train_pos))
    steps_per_epoch = max(1, len(train_pos) // batch)
    sched = warmup_cosine(opt, cfg.warmup_fraction, steps_per_epoch * cfg.epochs)
    out.mkdir(parents=True, exist_ok=True)
    best_dir, log_path = out / ".best", out / "train_log.jsonl"
    log_path.unlink(missing_ok=True)
    state = {"best_score": -float("inf"), "best_epoch": -1, "bad": 0, "step": 0}
    start = time.time()
    for epoch in range(cfg.epochs):
        model.image_head.train()
        rng = np.random.default_rng([cfg.seed, epoch])
        order = train_pos[rng.permutation(len(train_pos))]
        sums: dict[str, float] = {}
        for s in progress(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch"):
            # noise and dropout from (seed, step) alone: whether the features were computed or read from
            # the cache (an export draws random probes) changes nothing
            torch.manual_seed(cfg.seed * 1_000_003 + state["step"])
            idx = torch.from_numpy(order[s * batch:(s + 1) * batch])
            view = torch.from_numpy(rng.integers(0, 2, len(idx)))
            clean = feats[idx, view]
            noisy = nn.functional.dropout(clean, cfg.feature_noise) if cfg.feature_noise else clean
            image = model.image_relaxed_from_features(noisy)
            other = feats[idx, 1 - view]
            view2 = None
            if loss_cfg.intra_image or loss_cfg.intra_triplet:
                view2 = model.image_relaxed_from_features(
                    nn.functional.dropout(other, cfg.feature_noise) if cfg.feature_noise else other)
            parts = loss_fn(image, None, None, image_view2=view2,
                            image_positives=torch.eye(len(idx), dtype=torch.bool), targets={"image": clean})
            opt.zero_grad(set_to_none=True)
            parts["total"].backward()
            opt.step()
            sched.step()
            state["step"] += 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
        scores = _score(model, loss_fn, feats[torch.from_numpy(dev_pos)], val_bits)
        record = {"epoch": epoch + 1, "step": state["step"], "time_s": round(time.time() - start, 1),
                  **{f"loss_{k}": v / steps_per_epoch for k, v in sums.items()},
                  **{f"val_{k}": v for k, v in scores.items()}}
        improved = scores["score"] > state["best_score"]
        if improved:
            state.update(best_score=scores["score"], best_epoch=epoch + 1, bad=0)
            model.save_pretrained(best_dir)
        else:
            state["bad"] += 1
        with log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"epoch {epoch + 1}: loss {record['loss_total']:.4f}  held-out score {scores['score']:.2f} (view "
              f"retrieval {scores['view_score']:.1f})"
              f"{'  *' if improved else ''}", flush=True)
        if state["bad"] >= cfg.patience:
            print(f"early stop: no improvement for {cfg.patience} epochs", flush=True)
            break
    model.load_saved_weights(best_dir)
    fold_input_standardisation(model.image_head.mlp[0], centre, scale)
    model.save_pretrained(out, heads_dtype=cfg.heads_dtype)
    shutil.rmtree(best_dir, ignore_errors=True)
    summary = {"best_epoch": state["best_epoch"], "best_score": state["best_score"], "steps": state["step"],
               "photos": {"train": len(train_pos), "dev": len(dev_pos), "unreadable": len(failed)},
               "train_config": asdict(cfg), "loss_used": asdict(loss_cfg)}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    write_card(out, {"name": out.resolve().name, "fingerprint": model.fingerprint(),
                     "trained_on": {"photos": len(kept), "captions": 0, "split": "photos without captions",
                                    **(card or {})},
                     "serves": "image search and duplicates; no text (image_only)",
                     "best_epoch": state["best_epoch"], "validation_score": state["best_score"]})
    return PhotoRun(summary, failed_paths)


@torch.no_grad()
def fold_input_standardisation(first: nn.Linear, centre: torch.Tensor, scale: torch.Tensor) -> None:
    """Make ``first`` take raw features: W((x - c) / s) + b = (W / s) x + (b - (W / s) c), so the
    saved head is an ordinary one and search needs no extra step."""
    first.weight.div_(scale)
    first.bias.sub_(first.weight @ centre)


@torch.inference_mode()
def _score(model: CrossModalHasher, loss_fn: HashingLoss, dev_feats: torch.Tensor, nbits: int) -> dict[str, float]:
    """The held-out photos' scores. ``score`` (what picks the epoch) is the share of their
    features' variance the codes reconstruct (%), where the reconstruction term trains: the
    autoencoder's own objective on photos it never saw. Mirrored-view retrieval alone
    favoured the untrained head on a catalogue of look-alike products (every code near
    every other, no view found), so it decides only for a run without the term."""
    from .losses import reconstruction_loss

    model.image_head.eval()
    plain = model.image_relaxed_from_features(dev_feats[:, 0])
    mirrored = model.image_relaxed_from_features(dev_feats[:, 1])
    scores = view_retrieval_score(plain.numpy(), mirrored.numpy(), nbits)
    scores["view_score"] = scores.pop("score")
    if "image" in loss_fn.decoders:
        loss_fn.eval()
        explained = 1 - float(reconstruction_loss(loss_fn.decoders["image"](plain), dev_feats[:, 0]))
        loss_fn.train()
        scores["explained_%"] = 100 * explained
    scores["score"] = scores.get("explained_%", scores["view_score"])
    return scores
