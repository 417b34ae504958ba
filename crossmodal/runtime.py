"""Where the image path (CNN + hash head) runs for bulk encoding: eager PyTorch, or
ONNX Runtime.

Measured on this project's 2-core CPU (``benchmarks/bench_ingest.py``), ONNX Runtime
runs EfficientNet-Lite0 + head several times faster than eager PyTorch with the same
outputs to 1e-5, so photo ingest uses it when ``onnxruntime`` is installed. The model is
exported once per fingerprint and image size (``~/.cache/crossmodal/onnx``), and every runtime
is checked against PyTorch on a probe batch before use: a runtime whose codes differ is
not used (PyTorch takes over, with one line saying so).
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .atomic import atomic_write_bytes
from .errors import InvalidInput, Unavailable

RUNTIMES = ("auto", "torch", "onnx")
PROBE_BATCH = 4


class ImageRuntime(Protocol):
    """Normalised pixels [B, 3, S, S] -> relaxed outputs [B, max_bits]."""
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
    name = "onnx"

    def __init__(self, model, cache_dir: Path, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise Unavailable("--runtime onnx needs onnxruntime: pip install onnxruntime onnx") from None
        size = model.image_encoder.image_size
        path = Path(cache_dir) / f"image-{model.fingerprint()}-{size}.onnx"
        if not path.is_file():
            _export(model, size, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def relaxed(self, pixels: torch.Tensor) -> np.ndarray:
        x = np.ascontiguousarray(pixels.detach().cpu().numpy(), dtype=np.float32)
        return self.session.run(None, {"pixels": x})[0]


def _export(model, size: int, path: Path) -> None:
    import io

    model = model.eval().cpu()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_ImagePath(model), torch.zeros(1, 3, size, size), buf, input_names=["pixels"],
                          output_names=["relaxed"], dynamic_axes={"pixels": {0: "batch"}, "relaxed": {0: "batch"}},
                          opset_version=17, dynamo=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def agrees(runtime: ImageRuntime, reference: ImageRuntime, size: int, nbits: int) -> bool:
    """Same signs (the codes) and outputs within 1e-3 on a fixed random probe batch."""
    probe = torch.from_numpy(np.random.default_rng(0).normal(0, 1, (PROBE_BATCH, 3, size, size)).astype(np.float32))
    a, b = runtime.relaxed(probe), reference.relaxed(probe)
    return bool(np.array_equal(a[:, :nbits] >= 0, b[:, :nbits] >= 0) and np.allclose(a, b, atol=1e-3))


def image_runtime(model, name: str = "auto", cache_dir: Path | None = None, threads: int | None = None) -> ImageRuntime:
    """The runtime for bulk image encoding: ``torch``, ``onnx``, or ``auto`` (ONNX Runtime
    when installed and the model is on the CPU, checked against PyTorch; else PyTorch)."""
    if name not in RUNTIMES:
        raise InvalidInput(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}")
    torch_runtime = TorchImageRuntime(model)
    if name == "torch" or (name == "auto" and (model.device.type != "cpu" or not _onnxruntime_installed())):
        return torch_runtime
    from .cache import cache_root

    try:
        onnx = OnnxImageRuntime(model, Path(cache_dir) if cache_dir else cache_root() / "onnx", threads)
    except Unavailable:
        if name == "onnx":
            raise
        return torch_runtime
    except Exception as e:  # an encoder the exporter cannot handle: PyTorch does the job
        if name == "onnx":
            raise Unavailable(f"this model could not be exported to ONNX ({type(e).__name__}: {e}); "
                              f"use --runtime torch") from None
        print(f"note: ONNX export failed ({type(e).__name__}); encoding with PyTorch", file=sys.stderr)
        return torch_runtime
    if not agrees(onnx, torch_runtime, model.image_encoder.image_size, max(model.config.bits)):
        print("note: ONNX Runtime's outputs differ from PyTorch's for this model; encoding with PyTorch",
              file=sys.stderr)
        return torch_runtime
    return onnx


def _onnxruntime_installed() -> bool:
    import importlib.util
    return importlib.util.find_spec("onnxruntime") is not None and os.environ.get("CROSSMODAL_NO_ONNX") != "1"
