"""ONNX Runtime for bulk image encoding: the same codes as PyTorch, exported once."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from crossmodal.errors import Unavailable
from crossmodal.model import CrossModalHasher
from crossmodal.runtime import OnnxImageRuntime, TorchImageRuntime, image_runtime


def test_onnx_runtime_gives_the_codes_pytorch_gives(tiny_model, tmp_path):
    model = CrossModalHasher.from_pretrained(tiny_model)
    onnx = image_runtime(model, "onnx", cache_dir=tmp_path)
    assert isinstance(onnx, OnnxImageRuntime)
    exported = list(tmp_path.glob("image-*.onnx"))
    assert len(exported) == 1 and model.fingerprint() in exported[0].name
    size = model.image_encoder.image_size
    pixels = torch.from_numpy(np.random.default_rng(1).normal(0, 1, (9, 3, size, size)).astype(np.float32))
    a, b = onnx.relaxed(pixels), TorchImageRuntime(model).relaxed(pixels)
    assert a.shape == b.shape == (9, model.config.output_width)
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
    """An ONNX graph whose outputs differ from PyTorch's on the probe (here: every sign
    flipped) is not used: auto falls back to PyTorch with a note, --runtime onnx says why."""
    from crossmodal.onnx_graphs import OnnxGraph, same_codes

    model = CrossModalHasher.from_pretrained(tiny_model)
    probe = np.random.default_rng(0).normal(size=(4, model.config.output_width))
    assert same_codes(64)(probe, probe + 1e-4) and not same_codes(64)(-probe, probe)
    real_run = OnnxGraph.run
    monkeypatch.setattr(OnnxGraph, "run", lambda self, inputs: -real_run(self, inputs))
    assert type(image_runtime(model, "auto", cache_dir=tmp_path)) is TorchImageRuntime
    assert "differ" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # a graph that failed its check is not cached
    with pytest.raises(Unavailable, match="--runtime auto or torch"):  # asked for by name: never a silent fallback
        image_runtime(model, "onnx", cache_dir=tmp_path)


def test_feature_cache_is_filled_through_onnx_with_pytorchs_values(tiny_data, tmp_path, monkeypatch):
    """A frozen CNN's cached features (pooled, and trunk activations) come from ONNX Runtime
    when it is installed: equal to PyTorch's, and the graph is exported once per config."""
    from crossmodal.config import ImageEncoderConfig
    from crossmodal.data import load_prepared
    from crossmodal.encoders import create_image_encoder
    from crossmodal.features import encoder_key, image_features

    from crossmodal.onnx_graphs import OnnxGraph

    onnx_rows = []
    real_run = OnnxGraph.run
    monkeypatch.setattr(OnnxGraph, "run",
                        lambda self, inputs: onnx_rows.append(len(inputs["pixels"])) or real_run(self, inputs))
    monkeypatch.setenv("CROSSMODAL_CACHE", str(tmp_path / "root"))
    cfg = ImageEncoderConfig(name="efficientnet-lite0", image_size=64)
    enc = create_image_encoder(cfg)
    ds = load_prepared(tiny_data)["dev"]
    for trunk_of in (0, 1):
        monkeypatch.setenv("CROSSMODAL_NO_ONNX", "1")
        reference = image_features(enc, encoder_key(cfg), ds, tmp_path / "torch", trunk_of=trunk_of, views="flip")
        monkeypatch.delenv("CROSSMODAL_NO_ONNX")
        onnx_rows.clear()
        onnx = image_features(enc, encoder_key(cfg), ds, tmp_path / "onnx", trunk_of=trunk_of, views="flip")
        assert sum(onnx_rows) >= 2 * len(ds)  # every image (both views) went through ONNX Runtime, after the probe
        assert onnx.shape == reference.shape and onnx.dtype == reference.dtype
        scale = reference.float().abs().max()
        assert torch.allclose(onnx.float(), reference.float(), atol=1e-3 * scale, rtol=1e-3)
    graphs = sorted(p.name for p in (tmp_path / "root" / "onnx").glob("features-*.onnx"))
    assert len(graphs) == 2 and {g.rsplit("-", 2)[1] for g in graphs} == {"0", "1"}  # pooled, and trunk


def test_a_damaged_cached_graph_is_dropped_and_exported_again(tiny_model, tmp_path, capsys):
    model = CrossModalHasher.from_pretrained(tiny_model)
    assert image_runtime(model, "auto", cache_dir=tmp_path).name == "onnx"
    (graph,) = tmp_path.glob("*.onnx")
    graph.write_bytes(b"half a graph")  # a disk error, or an edit
    assert type(image_runtime(model, "auto", cache_dir=tmp_path)) is TorchImageRuntime
    assert "ONNX export of this model failed" in capsys.readouterr().err and not graph.exists()
    assert image_runtime(model, "auto", cache_dir=tmp_path).name == "onnx" and graph.stat().st_size > 1000


def test_openvino_bf16_gives_nearly_the_codes_or_says_why_not(tiny_model, tmp_path):
    """On a CPU that computes bfloat16 natively: codes within a few bits of PyTorch's (and
    not asked for by ``auto``); elsewhere one line saying the CPU lacks it."""
    import openvino as ov

    model = CrossModalHasher.from_pretrained(tiny_model)
    size = model.image_encoder.image_size
    pixels = torch.from_numpy(np.random.default_rng(2).normal(0, 1, (16, 3, size, size)).astype(np.float32))
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        with pytest.raises(Unavailable, match="does not compute bfloat16 natively"):
            image_runtime(model, "openvino-bf16", cache_dir=tmp_path)
        return
    bf16 = image_runtime(model, "openvino-bf16", cache_dir=tmp_path)
    assert bf16.name == "openvino-bf16" and image_runtime(model, "auto", cache_dir=tmp_path).name == "onnx"
    a, b = bf16.relaxed(pixels), TorchImageRuntime(model).relaxed(pixels)
    assert a.shape == b.shape and not np.array_equal(a, b)  # computed in bfloat16, not the float graph
    flipped = np.mean((a >= 0) != (b >= 0))
    assert flipped < 0.05, flipped
    assert np.abs(a - b).max() < 0.25
