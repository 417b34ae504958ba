"""On-disk cache of frozen-backbone features: pooled image and text features, and the
frozen trunk activations and token states under a trained tail.

With a frozen backbone only the hash heads learn, so each image and caption goes
through its encoder once; features are cached under a key made of the encoder config
and the dataset split's fingerprint, and every later epoch (and run) reads them back.
Images are cached in two views: as-is and horizontally flipped, which gives the
intra-modal image loss two views without running the CNN again.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import NamedTuple

import torch

from .errors import InvalidInput
from .progress import progress
from .views import make_views, view_count


def split_fingerprint(ds) -> str:
    """The datasets fingerprint changes whenever the split's content does."""
    return getattr(ds, "_fingerprint", None) or hashlib.sha256(str(len(ds)).encode()).hexdigest()


def encoder_key(cfg) -> dict:
    """The encoder-config fields that change cached values. The pooling does not: pooled
    features are only cached for mean pooling, and trunk activations come before it."""
    from dataclasses import asdict

    return {k: v for k, v in asdict(cfg).items() if k != "pooling"}


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def cache_key(kind: str, encoder_cfg: dict, ds, extra: str = "") -> str:
    return _digest({"kind": kind, "encoder": encoder_cfg, "data": split_fingerprint(ds), "extra": extra, "v": 1})


def _device(module) -> torch.device:
    return next(module.parameters()).device


def _load_or_compute_tensors(path: Path, compute) -> dict[str, torch.Tensor]:
    """Read a cached safetensors file, or compute its tensors and write them atomically."""
    from safetensors.torch import load_file, save_file

    if path.is_file():
        return load_file(str(path))
    tensors = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)
    return tensors


def _load_or_compute(path: Path, compute) -> torch.Tensor:
    return _load_or_compute_tensors(path, lambda: {"features": compute()})["features"]


class TokenStates(NamedTuple):
    """Token states of many captions, packed without padding: caption i owns rows
    ``offsets[i]:offsets[i+1]`` of ``states`` (float16 on disk and in memory)."""
    states: torch.Tensor  #: [total tokens, H]
    offsets: torch.Tensor  #: [M + 1]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def batch(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions ``rows`` -> float32 states [B, T, H] padded to the longest, and the mask [B, T]."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        lengths = ends - starts
        width = int(lengths.max()) if len(rows) else 0
        out = torch.zeros(len(rows), width, self.states.shape[1])
        mask = torch.arange(width)[None, :] < lengths[:, None]
        # every token of the chosen captions, in row order (no Python loop: this runs every step)
        first_of_row = torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
        token_rows = torch.repeat_interleave(starts, lengths) + torch.arange(int(lengths.sum())) - first_of_row
        out[mask] = self.states[token_rows].float()
        return out, mask.long()


def length_sorted_batches(captions: list[str], batch_size: int) -> list[list[int]]:
    """Caption rows in batches of similar length (by characters, a proxy for tokens): a
    batch is padded to its longest caption, so random batches of Flickr8k captions carried
    about twice the tokens they needed. A caption's features do not depend on its batch."""
    order = sorted(range(len(captions)), key=lambda r: (len(captions[r]), r))
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


@torch.inference_mode()
def image_features(encoder, encoder_cfg: dict, ds, cache_dir: Path | None, batch_size: int = 64,
                   desc: str = "image features", trunk_of: int = 0, views: str | None = None,
                   workers: int | None = None) -> torch.Tensor:
    """[N, V, D] features of the split's images: the plain view, [N, 1, D] (default), or
    ``views="flip"``: the plain and the mirrored view, [N, 2, D] (training with flips, the
    intra-image term, a model that encodes both), or ``views="crops"``: the five crops of
    :func:`~crossmodal.views.make_views`, [N, 5, D]. Each is cached apart; a cached pair
    also answers for the plain view, so the CNN runs once for whichever came first.

    With ``trunk_of=N``: the activations before the encoder's last N stages instead,
    [N, 2, C, H, W] in float16 (the frozen trunk of a ``last:N`` fine-tune).

    Images are decoded by the one batch encoder (:mod:`crossmodal.image_batches`), in
    ``workers`` processes (default: :data:`~crossmodal.image_batches.DATASET_WORKERS`);
    the batches, and so the features, are the same whatever the count."""
    def compute() -> torch.Tensor:
        from .image_batches import DATASET_WORKERS, DatasetCells, encode_batches
        from .runtime import feature_extractor

        encoder.eval()
        # the exported graph is keyed by config: only for cached (frozen) weights
        extract = feature_extractor(encoder, graph_key, trunk_of, "auto" if cache_dir is not None else "torch")
        out = []
        batches = encode_batches(DatasetCells(ds), encoder.transform(train=False),
                                 lambda x: extract(make_views(x, views)), batch_size,
                                 DATASET_WORKERS if workers is None else workers, desc=desc, unit="image")
        for batch in batches:
            if batch.failed:  # screening keeps undecodable rows out of a prepared split
                row, why = batch.failed[0]
                raise InvalidInput(f"image row {row} of the split cannot be decoded ({why}); prepare the dataset "
                                   f"again, or screen it")
            f = batch.outputs.half() if trunk_of else batch.outputs.float()
            out.append(torch.stack(f.chunk(view_count(views)), dim=1))
        return torch.cat(out) if out else torch.zeros(0, view_count(views), encoder.output_dim)

    views = views or "plain"
    kind = f"image-trunk{trunk_of}" if trunk_of else "image"
    graph_key = _digest({"kind": kind, "encoder": encoder_cfg})  # the exported graph: by config, not data
    if cache_dir is None:
        return compute()
    both = Path(cache_dir) / f"img-{cache_key(kind, encoder_cfg, ds)}.safetensors"  # plain + mirrored
    if views == "plain":
        if both.is_file():  # the plain view is the first of a cached pair: nothing to compute
            return _load_or_compute(both, compute)[:, :1]
        return _load_or_compute(Path(cache_dir) / f"img-{cache_key(kind + '-plain', encoder_cfg, ds)}.safetensors",
                                compute)
    if views == "crops":
        return _load_or_compute(Path(cache_dir) / f"img-{cache_key(kind + '-crops', encoder_cfg, ds)}.safetensors",
                                compute)
    return _load_or_compute(both, compute)


@torch.inference_mode()
def text_trunk_states(encoder, encoder_cfg: dict, ds, captions: list[str], cache_dir: Path | None, trunk_of: int,
                      batch_size: int = 256, desc: str = "text token states") -> TokenStates:
    """Token states of every caption before the text encoder's last ``trunk_of`` layers
    (the frozen trunk of a ``last:N`` fine-tune), packed, float16."""

    def compute() -> dict[str, torch.Tensor]:
        encoder.eval()
        dev = _device(encoder)
        per_caption: list[torch.Tensor | None] = [None] * len(captions)
        for rows in progress(length_sorted_batches(captions, batch_size), desc=desc, unit="batch"):
            tok = {k: v.to(dev) for k, v in encoder.tokenize([captions[r] for r in rows]).items()}
            h = encoder.trunk(tok["input_ids"], tok["attention_mask"], trunk_of).half().cpu()
            mask = tok["attention_mask"].bool().cpu()
            for j, r in enumerate(rows):
                per_caption[r] = h[j][mask[j]]
        lengths_all = torch.tensor([len(x) for x in per_caption], dtype=torch.long)
        return {"states": torch.cat(per_caption) if captions else torch.zeros(0, encoder.output_dim,
                                                                              dtype=torch.float16),
                "offsets": torch.cat([torch.zeros(1, dtype=torch.long), lengths_all.cumsum(0)])}

    if cache_dir is None:
        t = compute()
    else:
        key = cache_key(f"text-trunk{trunk_of}", encoder_cfg, ds)
        t = _load_or_compute_tensors(Path(cache_dir) / f"txt-{key}.safetensors", compute)
    return TokenStates(t["states"], t["offsets"])


@torch.inference_mode()
def text_features(encoder, encoder_cfg: dict, ds, captions: list[str], cache_dir: Path | None,
                  batch_size: int = 256, desc: str = "text features") -> torch.Tensor:
    """[M, D] features of every caption of the split (flattened in item order)."""

    def compute() -> torch.Tensor:
        encoder.eval()
        dev = _device(encoder)
        out = torch.zeros(len(captions), encoder.output_dim)
        for rows in progress(length_sorted_batches(captions, batch_size), desc=desc, unit="batch"):
            tokens = encoder.tokenize([captions[r] for r in rows])
            out[torch.as_tensor(rows)] = encoder(**{k: v.to(dev) for k, v in tokens.items()}).float().cpu()
        return out

    if cache_dir is None:
        return compute()
    return _load_or_compute(Path(cache_dir) / f"txt-{cache_key('text', encoder_cfg, ds)}.safetensors", compute)


@torch.inference_mode()
def photo_features(encoder, encoder_cfg: dict, paths: list[str], cache_dir: Path | None, batch_size: int = 32,
                   desc: str = "photo features") -> tuple[torch.Tensor, list[int], list[tuple[int, str]]]:
    """Features of photo files for training on photos without captions: ([N, 2, D] plain
    and mirrored views of the photos that decode, the positions in ``paths`` they are, and
    ``(position, why)`` of those that do not). Cached like a prepared split's, keyed by the
    encoder and each file's path, size and modification time, so a rerun (or an interrupted
    run's rerun) reads them back and a changed folder is encoded again."""
    from .image_batches import PhotoFiles, encode_batches
    from .runtime import feature_extractor

    def compute() -> dict[str, torch.Tensor]:
        encoder.eval()
        extract = feature_extractor(encoder, _digest({"kind": "image", "encoder": encoder_cfg}), 0,
                                    "auto" if cache_dir is not None else "torch")
        feats, kept, failed = [], [], []
        for batch in encode_batches(PhotoFiles(paths, encoder.image_size), encoder.transform(train=False),
                                    lambda x: extract(make_views(x, "flip")), batch_size, desc=desc, unit="photo"):
            failed += batch.failed
            if batch.positions:
                feats.append(torch.stack(batch.outputs.float().chunk(2), dim=1))
                kept += batch.positions
        reasons = "\n".join(f"{p}\t{why}" for p, why in failed)
        return {"features": torch.cat(feats) if feats else torch.zeros(0, 2, encoder.output_dim),
                "positions": torch.tensor(kept, dtype=torch.long),
                "failed": torch.frombuffer(bytearray(reasons.encode() or b"\n"), dtype=torch.uint8)}

    if cache_dir is None:
        t = compute()
    else:
        files = []
        for p in paths:
            st = os.stat(p)
            files.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
        key = _digest({"kind": "photos", "encoder": encoder_cfg, "files": files, "v": 1})
        t = _load_or_compute_tensors(Path(cache_dir) / f"img-{key}.safetensors", compute)
    failed = [(int(p), why) for p, why in (line.split("\t", 1) for line in bytes(t["failed"].tolist()).decode()
                                            .splitlines() if "\t" in line)]
    return t["features"], t["positions"].tolist(), failed
