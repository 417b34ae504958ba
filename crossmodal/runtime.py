"""Where the image path (CNN + hash head) runs for bulk encoding, and a frozen CNN runs
to fill the feature cache: eager PyTorch, or ONNX Runtime.

ONNX Runtime runs the CNNs + head faster than eager PyTorch on a CPU with the same
outputs to about 1e-5 (``benchmarks/bench_ingest.py`` measures both), so photo ingest
uses it when ``onnxruntime`` is installed. The model is
exported once per fingerprint and image size (``~/.cache/crossmodal/onnx``), and every runtime
is checked against PyTorch on a probe batch before use: a runtime whose codes differ is
not used (PyTorch takes over, with one line saying so).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .config import RUNTIMES
from .errors import InvalidInput, Unavailable
from .onnx_graphs import Agreement, OnnxGraph, checked_graph, close_features, same_codes

PROBE_BATCH = 4
#: rows ONNX Runtime runs at once: outputs are per row, so splitting a batch changes no
#: value, and the activations of 64 images at 260 px (the default's Lite2) would cost GBs
ONNX_MAX_ROWS = 16


class ImageRuntime(Protocol):
    """Normalised pixels [B, 3, S, S] -> relaxed outputs [B, output_width]."""
    name: str

    def relaxed(self, pixels: torch.Tensor) -> np.ndarray: ...


class TorchImageRuntime:
    name = "torch"

    def __init__(self, model):
        self.model = model

    def relaxed(self, pixels: torch.Tensor) -> np.ndarray:
        self.model.eval()
        with torch.inference_mode():
            return self.model.image_relaxed(pixels.to(self.model.device)).float().cpu().numpy()


class _ImagePath(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.image_relaxed(pixels)


class OnnxImageRuntime:
    """The model's pixels -> outputs path, exported once and run by ONNX Runtime."""
    name = "onnx"

    def __init__(self, graph: OnnxGraph):
        self.graph = graph

    def relaxed(self, pixels: torch.Tensor) -> np.ndarray:
        return self.graph.run({"pixels": _pixels(pixels)})


def _pixels(pixels: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(pixels.detach().cpu().numpy(), dtype=np.float32)


def _checked_pixels_graph(module: torch.nn.Module, path: Path, size: int, agree: Agreement, what: str,
                          required: bool = False, threads: int | None = None) -> OnnxGraph | None:
    """:func:`~crossmodal.onnx_graphs.checked_graph` for a pixels -> tensor module, probed on
    a fixed random batch."""
    probe = torch.from_numpy(np.random.default_rng(0).normal(0, 1, (PROBE_BATCH, 3, size, size)).astype(np.float32))
    return checked_graph(module, path, {"pixels": probe}, agree, {"pixels": {0: "batch"}}, what, required=required,
                         threads=threads, max_rows=ONNX_MAX_ROWS)


class _Features(torch.nn.Module):
    """A frozen encoder's pooled features, or its activations before the last ``trunk_of`` stages."""

    def __init__(self, encoder, trunk_of: int):
        super().__init__()
        self.encoder, self.trunk_of = encoder, trunk_of

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.encoder.trunk(pixels, self.trunk_of) if self.trunk_of else self.encoder(pixels)


def feature_extractor(encoder, key: str, trunk_of: int = 0, name: str = "auto"):
    """A function pixels -> float32 features (or trunk activations) of a *frozen* encoder
    for the feature cache: ONNX Runtime where it is installed and the encoder is on the
    CPU (faster than eager PyTorch: what makes caching a larger or concatenated CNN
    affordable), checked against PyTorch on a probe batch first; else
    PyTorch. ``key`` names the exported graph (the encoder config's cache key)."""
    module = _Features(encoder, trunk_of).eval()
    device = next(encoder.parameters()).device

    def torch_run(pixels: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(pixels.to(device)).float().cpu()

    if name == "torch" or device.type != "cpu" or not onnxruntime_enabled():
        return torch_run
    from .cache import cache_root

    size = encoder.image_size
    graph = _checked_pixels_graph(module, cache_root() / "onnx" / f"features-{key}-{trunk_of}-{size}.onnx", size,
                                  close_features, "the image encoder")
    return torch_run if graph is None else (lambda pixels: torch.from_numpy(graph.run({"pixels": _pixels(pixels)})))


class OpenVinoBf16ImageRuntime:
    """The model's exported image graph compiled by OpenVINO to compute in bfloat16, on a
    CPU that does so natively (Intel AMX or AVX-512 BF16). Not the same bits as PyTorch:
    on Flickr8k dev, 0.4 of 64 code bits differ per image on average and R@10 moves by at
    most 0.7 at any length (BENCHMARKS.md, "Ingest runtimes"), for 2.5x the CNN's speed;
    so it is asked for by name, never chosen by ``auto``."""
    name = "openvino-bf16"

    def __init__(self, path: Path, threads: int | None = None):
        try:
            import openvino as ov
        except ImportError:
            raise Unavailable('--runtime openvino-bf16 needs OpenVINO: pip install "crossmodal[openvino]"') from None
        core = ov.Core()
        if "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise Unavailable("this CPU does not compute bfloat16 natively (no AMX or AVX-512 BF16), so --runtime "
                              "openvino-bf16 would be no faster: use --runtime auto")
        compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
                                                         "INFERENCE_PRECISION_HINT": "bf16"})
        self.request = compiled.create_infer_request()

    def relaxed(self, pixels: torch.Tensor) -> np.ndarray:
        x = _pixels(pixels)
        parts = [np.array(self.request.infer({0: x[s:s + ONNX_MAX_ROWS]})[0]) for s in range(0, len(x), ONNX_MAX_ROWS)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


#: share of code bits a reduced-precision runtime may flip on the probe batch before it is
#: refused as broken (bfloat16 flips under 1 %)
REDUCED_PRECISION_BIT_TOLERANCE = 0.05


def image_runtime(model, name: str = "auto", cache_dir: Path | None = None, threads: int | None = None) -> ImageRuntime:
    """The runtime for bulk image encoding: ``torch``, ``onnx``, ``openvino-bf16``, or
    ``auto`` (ONNX Runtime when installed and the model is on the CPU, checked against
    PyTorch; else PyTorch)."""
    if name not in RUNTIMES:
        raise InvalidInput(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}")
    torch_runtime = TorchImageRuntime(model)
    if name == "torch" or (name == "auto" and (model.device.type != "cpu" or not onnxruntime_enabled())):
        return torch_runtime
    from .cache import cache_root

    size = model.image_encoder.image_size
    path = (Path(cache_dir) if cache_dir else cache_root() / "onnx") / f"image-{model.fingerprint()}-{size}.onnx"
    graph = _checked_pixels_graph(_ImagePath(model), path, size, same_codes(model.config.output_width), "this model",
                                  required=name != "auto", threads=threads)
    if graph is None:
        return torch_runtime
    if name == "openvino-bf16":
        return _checked_bf16(OpenVinoBf16ImageRuntime(path, threads), torch_runtime, size)
    return OnnxImageRuntime(graph)


def _checked_bf16(runtime: OpenVinoBf16ImageRuntime, reference: TorchImageRuntime, size: int):
    """``runtime``, if its codes on the probe batch are PyTorch's but for a few bits."""
    probe = torch.from_numpy(np.random.default_rng(0).normal(0, 1, (PROBE_BATCH, 3, size, size)).astype(np.float32))
    flipped = float(np.mean((runtime.relaxed(probe) >= 0) != (reference.relaxed(probe) >= 0)))
    if flipped > REDUCED_PRECISION_BIT_TOLERANCE:
        raise Unavailable(f"OpenVINO's bfloat16 codes differ from PyTorch's in {flipped:.0%} of the bits on a probe "
                          f"batch (a broken compile?); use --runtime auto")
    return runtime


def onnxruntime_enabled() -> bool:
    """ONNX Runtime is installed and not turned off (``CROSSMODAL_NO_ONNX=1``)."""
    import importlib.util
    return importlib.util.find_spec("onnxruntime") is not None and os.environ.get("CROSSMODAL_NO_ONNX") != "1"
