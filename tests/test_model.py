import json

import numpy as np
import pytest
import torch
from PIL import Image

from crossmodal.model import CrossModalHasher
from conftest import tiny_config


def _images(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(n)]


TEXTS = ["a red circle", "a blue square left of a circle", "green star", "two dogs", "a cat", "snow"]


@pytest.mark.parametrize("quantizer", ["sign", "itq", "kmeans"])
def test_save_load_gives_bit_identical_codes(tmp_path, quantizer):
    torch.manual_seed(0)
    model = CrossModalHasher(tiny_config(quantizer))
    model.text_encoder.build_vocab(TEXTS)
    model.eval()
    if model.quantizer.needs_fit:
        model.fit_quantizer(np.random.default_rng(0).normal(size=(200, 32)).astype(np.float32),
                            np.random.default_rng(1).normal(size=(200, 32)).astype(np.float32))
    imgs = _images()
    before = [model.encode_images(imgs, 32), model.encode_texts(TEXTS, 16)]
    model.save_pretrained(tmp_path / "m")
    loaded = CrossModalHasher.from_pretrained(tmp_path / "m")
    after = [loaded.encode_images(imgs, 32), loaded.encode_texts(TEXTS, 16)]
    assert before[0].dtype == np.uint8 and before[0].shape == (6, 4) and before[1].shape == (6, 2)
    for a, b in zip(before, after):
        assert np.array_equal(a, b)
    assert loaded.fingerprint() == model.fingerprint()
    assert json.loads((tmp_path / "m" / "config.json").read_text())["quantizer"] == quantizer


def test_codes_are_nested_prefixes_with_sign():
    model = CrossModalHasher(tiny_config())
    model.text_encoder.build_vocab(TEXTS)
    c16, c32 = model.encode_texts(TEXTS, 16), model.encode_texts(TEXTS, 32)
    assert np.array_equal(c16, c32[:, :2])


def test_fingerprint_changes_with_weights():
    model = CrossModalHasher(tiny_config())
    fp = model.fingerprint()
    with torch.no_grad():
        model.image_head.mlp[0].weight[0, 0] += 1
    assert model.fingerprint() != fp


def test_from_pretrained_refuses_non_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a crossmodal model folder"):
        CrossModalHasher.from_pretrained(tmp_path)


def test_default_model_encodes_images_and_captions():
    from crossmodal import create_model

    model = create_model()
    codes = model.encode_images(_images(2), 64)
    assert codes.shape == (2, 8)
    assert model.encode_texts(["a dog"], 128).shape == (1, 16)
