"""A prepared split's outputs: the one place that turns a split's images and captions
into relaxed codes (and the encoders' pooled features), for evaluation, indexing,
validation and quantizer fitting alike, reading the feature cache where the model's
inputs allow (:mod:`crossmodal.features`)."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .features import TokenStates, encoder_key, image_features, text_features, text_trunk_states
from .views import view_count


class SplitOutputs(NamedTuple):
    """Continuous outputs of one split: relaxed codes (what quantizers and indexes take)
    and the encoders' pooled features (what the float and CCA baselines take)."""
    image_relaxed: np.ndarray  #: [N, output_width]
    text_relaxed: np.ndarray  #: [M, output_width], captions flattened in item order
    image_features: np.ndarray  #: [N, D_image]
    text_features: np.ndarray  #: [M, D_text]


def text_tail_features(model, trunk: TokenStates) -> torch.Tensor:
    """Pooled text features from cached trunk token states, through the trained tail."""
    n, dev = model.text_tail_layers, model.device
    if not len(trunk):
        return torch.zeros(0, model.text_encoder.output_dim)
    out = []
    for s in range(0, len(trunk), TAIL_CHUNK):
        states, mask = trunk.batch(range(s, min(s + TAIL_CHUNK, len(trunk))))
        out.append(model.text_encoder.tail(states.to(dev), mask.to(dev), n).float().cpu())
    return torch.cat(out)


class TrainingInputs(NamedTuple):
    """What the trainer samples batches from, by the model's inputs (``image_input``,
    ``text_input``): cached features or trunk activations [N, 2 views, ...] and cached
    features or token states of every caption; None where that side trains on pixels or
    tokens (decoded per step)."""
    image: torch.Tensor | None
    text: torch.Tensor | TokenStates | None


def training_inputs(model, ds, captions: list[str], cache_dir: Path, name: str,
                    image_views: str = "flip") -> TrainingInputs:
    """Fill (or read) the feature cache with split ``name``'s training inputs; the images'
    ``image_views`` ("plain", or "flip" for the mirrored view as well)."""
    img_cfg, txt_cfg = encoder_key(model.config.image_encoder), encoder_key(model.config.text_encoder)
    image = text = None
    if model.image_input != "pixels":
        image = image_features(model.image_encoder, img_cfg, ds, cache_dir, desc=f"{name} image features",
                               trunk_of=model.image_tail_stages if model.image_input == "trunk" else 0,
                               views=image_views)
    if model.text_input == "features":
        text = text_features(model.text_encoder, txt_cfg, ds, captions, cache_dir, desc=f"{name} text features")
    elif model.text_input == "trunk":
        text = text_trunk_states(model.text_encoder, txt_cfg, ds, captions, cache_dir,
                                 trunk_of=model.text_tail_layers, desc=f"{name} text token states")
    return TrainingInputs(image, text)


IMAGE_HEAD_CHUNK = 2048
TEXT_HEAD_CHUNK = 4096
TAIL_CHUNK = 256


@torch.inference_mode()
def relaxed_outputs(model, ds, captions: list[str], cache_dir: Path | None, views: str | None = None) -> SplitOutputs:
    """The outputs of a split's images and captions: the one place that computes them,
    for evaluation, indexing, validation and quantizer fitting alike.

    A frozen encoder's features come from the feature cache, and so do the frozen trunk
    activations (CNN) and token states (text) under a fine-tuned tail (``last:N``); any other fine-tuned encoder is run
    directly (its weights are not part of the cache key). Heads and tails run in chunks
    on the model's device. An image's output is the mean over ``views`` (default: the
    model's ``image_views``; :mod:`crossmodal.views`): "flip" is free where the cache
    holds both views, as it does for frozen encoders and ``last:N`` trunks (a second CNN
    pass otherwise); "crops" are five more passes, cached apart."""
    from .config import check_views_fit

    model.eval()
    dev = model.device
    img_cfg, txt_cfg = encoder_key(model.config.image_encoder), encoder_key(model.config.text_encoder)
    views = views or model.config.image_views
    check_views_fit(views, model.config.image_encoder)
    picked = range(view_count(views))
    if model.image_input == "trunk":
        n_tail = model.image_tail_stages
        acts = image_features(model.image_encoder, img_cfg, ds, cache_dir, trunk_of=n_tail, views=views)
        img_views = [torch.cat([model.image_encoder.tail(acts[s:s + TAIL_CHUNK, v].to(dev).float(), n_tail).cpu()
                                for s in range(0, len(acts), TAIL_CHUNK)]) if len(acts) else
                     torch.zeros(0, model.image_encoder.output_dim) for v in picked]
        img_raw = img_views[0]
    else:
        img_cache = cache_dir if model.image_input == "features" else None  # trained weights: not cached
        feats = image_features(model.image_encoder, img_cfg, ds, img_cache, views=views)
        img_views = [feats[:, v] for v in picked]
        if views == "crops":  # the baselines take the plain view's features
            feats = image_features(model.image_encoder, img_cfg, ds, img_cache)
        img_raw = feats[:, 0]
    if model.text_input == "trunk":
        txt_raw = text_tail_features(model, text_trunk_states(model.text_encoder, txt_cfg, ds, captions, cache_dir,
                                                              trunk_of=model.text_tail_layers))
    else:
        txt_cache = cache_dir if model.text_input == "features" else None
        txt_raw = text_features(model.text_encoder, txt_cfg, ds, captions, txt_cache)

    def heads(fn, x: torch.Tensor, chunk: int) -> np.ndarray:
        if not len(x):
            return np.zeros((0, model.config.output_width), np.float32)
        return torch.cat([fn(x[s:s + chunk].to(dev).float()).cpu() for s in range(0, len(x), chunk)]).numpy()

    image_relaxed = np.mean([heads(model.image_relaxed_from_features, v, IMAGE_HEAD_CHUNK) for v in img_views], axis=0)
    return SplitOutputs(image_relaxed,
                        heads(model.text_relaxed_from_features, txt_raw, TEXT_HEAD_CHUNK),
                        img_raw.float().numpy(), txt_raw.float().numpy())
