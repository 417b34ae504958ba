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


def test_head_width_is_independent_of_the_served_lengths(tmp_path):
    """Serving fewer lengths keeps the head (and what the loss trains) as wide as the default,
    a wider head serves prefixes, and configs written before ``head_width`` still load."""
    import json

    from crossmodal.config import DEFAULT_HEAD_WIDTH, HeadConfig, ModelConfig
    from crossmodal.model import CrossModalHasher

    short = ModelConfig(bits=(16, 32))
    assert short.output_width == DEFAULT_HEAD_WIDTH == 128
    assert short.trained_bits == (16, 32, 64, 128)
    wide = ModelConfig(bits=(64,), head_width=256)
    assert wide.output_width == 256 and wide.trained_bits == (16, 32, 64, 128, 256)
    assert ModelConfig(bits=(256,)).output_width == 256  # a longer code widens the head
    with pytest.raises(ValueError, match="head width"):
        ModelConfig(head_width=100)

    torch.manual_seed(0)
    model = CrossModalHasher(ModelConfig(head=HeadConfig(hidden_dim=64), bits=(32,), head_width=64))
    texts = ["a dog runs", "two people on a beach"]
    relaxed = model.embed_texts(texts)
    assert relaxed.shape == (2, 64)
    assert np.array_equal(model.encode_texts(texts, 32), np.packbits(relaxed[:, :32] >= 0, axis=1))
    with pytest.raises(ValueError, match="serves code lengths"):
        model.encode_texts(texts, 64)  # trained, but not served

    # a config from before head_width: its heads were exactly max(bits) wide
    model.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    del cfg["head_width"]
    cfg["bits"] = [16, 32, 64]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    old = CrossModalHasher.from_pretrained(tmp_path / "m")
    assert old.config.output_width == 64
    assert np.array_equal(old.encode_texts(texts, 32), model.encode_texts(texts, 32))
