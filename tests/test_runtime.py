"""ONNX Runtime for bulk image encoding: the same codes as PyTorch, exported once."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from crossmodal.model import CrossModalHasher
from crossmodal.runtime import OnnxImageRuntime, TorchImageRuntime, agrees, image_runtime


def test_onnx_runtime_gives_the_codes_pytorch_gives(tiny_model, tmp_path):
    model = CrossModalHasher.from_pretrained(tiny_model)
    onnx = image_runtime(model, "onnx", cache_dir=tmp_path)
    assert isinstance(onnx, OnnxImageRuntime)
    exported = list(tmp_path.glob("image-*.onnx"))
    assert len(exported) == 1 and model.fingerprint() in exported[0].name
    pixels = torch.from_numpy(np.random.default_rng(1).normal(0, 1, (9, 3, 224, 224)).astype(np.float32))
    a, b = onnx.relaxed(pixels), TorchImageRuntime(model).relaxed(pixels)
    assert a.shape == b.shape == (9, model.config.max_bits)
    for nbits in model.config.bits:
        assert np.array_equal(model.quantize(a, nbits), model.quantize(b, nbits))
    mtime = exported[0].stat().st_mtime_ns
    image_runtime(model, "onnx", cache_dir=tmp_path)  # reuses the export
    assert exported[0].stat().st_mtime_ns == mtime


def test_auto_picks_onnx_and_torch_is_honoured(tiny_model, tmp_path, monkeypatch):
    model = CrossModalHasher.from_pretrained(tiny_model)
    assert image_runtime(model, "auto", cache_dir=tmp_path).name == "onnx"
    assert image_runtime(model, "torch", cache_dir=tmp_path).name == "torch"
    monkeypatch.setenv("CROSSMODAL_NO_ONNX", "1")
    assert image_runtime(model, "auto", cache_dir=tmp_path).name == "torch"


def test_a_runtime_that_disagrees_is_not_used(tiny_model, tmp_path, monkeypatch, capsys):
    model = CrossModalHasher.from_pretrained(tiny_model)

    class Wrong(TorchImageRuntime):
        def relaxed(self, pixels):
            return -super().relaxed(pixels)

    assert not agrees(Wrong(model), TorchImageRuntime(model), 224, 64)
    monkeypatch.setattr("crossmodal.runtime.OnnxImageRuntime", lambda m, c, t: Wrong(m))
    assert type(image_runtime(model, "auto", cache_dir=tmp_path)) is TorchImageRuntime
    assert "differ" in capsys.readouterr().err
