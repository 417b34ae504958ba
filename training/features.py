"""On-disk cache of frozen-backbone features.

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

import torch
from PIL import Image
from crossmodal.progress import progress

from crossmodal.data.images import open_image


def split_fingerprint(ds) -> str:
    """The datasets fingerprint changes whenever the split's content does."""
    return getattr(ds, "_fingerprint", None) or hashlib.sha256(str(len(ds)).encode()).hexdigest()


def cache_key(kind: str, encoder_cfg: dict, ds, extra: str = "") -> str:
    payload = json.dumps({"kind": kind, "encoder": encoder_cfg, "data": split_fingerprint(ds), "extra": extra,
                          "v": 1}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _device(module) -> torch.device:
    return next(module.parameters()).device


def _load_or_compute(path: Path, compute) -> torch.Tensor:
    from safetensors.torch import load_file, save_file

    if path.is_file():
        return load_file(str(path))["features"]
    feats = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({"features": feats.contiguous()}, str(tmp))
    os.replace(tmp, path)
    return feats


def decode_image(value) -> Image.Image:
    """A ``datasets.Image`` cell (decoded PIL, or {'bytes', 'path'}) -> RGB PIL image."""
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    return open_image(value.get("bytes") or value["path"])


@torch.inference_mode()
def image_features(encoder, encoder_cfg: dict, ds, cache_dir: Path | None, batch_size: int = 64,
                   desc: str = "image features", trunk_of: int = 0) -> torch.Tensor:
    """[N, 2, D] features of the split's images (view 0 plain, view 1 flipped).

    With ``trunk_of=N``: the activations before the encoder's last N stages instead,
    [N, 2, C, H, W] in float16 (the frozen trunk of a ``last:N`` fine-tune)."""
    from datasets import Image as HFImage

    def compute() -> torch.Tensor:
        encoder.eval()
        tf = encoder.transform(train=False)
        plain = ds.cast_column("image", HFImage(decode=False))
        out = []
        for s in progress(range(0, len(plain), batch_size), desc=desc, unit="batch"):
            rows = plain[s:s + batch_size]["image"]
            x = torch.stack([tf(decode_image(v)) for v in rows])
            x = torch.cat([x, torch.flip(x, dims=[3])]).to(_device(encoder))
            f = encoder.trunk(x, trunk_of).half().cpu() if trunk_of else encoder(x).float().cpu()
            out.append(torch.stack([f[: len(rows)], f[len(rows):]], dim=1))
        return torch.cat(out) if out else torch.zeros(0, 2, encoder.output_dim)

    if cache_dir is None:
        return compute()
    kind = f"image-trunk{trunk_of}" if trunk_of else "image"
    return _load_or_compute(Path(cache_dir) / f"img-{cache_key(kind, encoder_cfg, ds)}.safetensors", compute)


@torch.inference_mode()
def text_features(encoder, encoder_cfg: dict, ds, captions: list[str], cache_dir: Path | None,
                  batch_size: int = 256, desc: str = "text features") -> torch.Tensor:
    """[M, D] features of every caption of the split (flattened in item order)."""

    def compute() -> torch.Tensor:
        encoder.eval()
        dev = _device(encoder)
        out = [encoder(**{k: v.to(dev) for k, v in encoder.tokenize(captions[s:s + batch_size]).items()}).float().cpu()
               for s in progress(range(0, len(captions), batch_size), desc=desc, unit="batch")]
        return torch.cat(out) if out else torch.zeros(0, encoder.output_dim)

    if cache_dir is None:
        return compute()
    return _load_or_compute(Path(cache_dir) / f"txt-{cache_key('text', encoder_cfg, ds)}.safetensors", compute)
