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
import sys
import warnings
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from .atomic import atomic_write_bytes
from .config import RUNTIMES
from .errors import InvalidInput, Unavailable

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


class OnnxSession:
    """A pixels -> tensor module exported once to ``path`` and run by ONNX Runtime."""

    def __init__(self, module: torch.nn.Module, path: Path, size: int, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise Unavailable("--runtime onnx needs onnxruntime: pip install onnxruntime onnx") from None
        if not path.is_file():
            _export(module, size, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3
        # no arena: it keeps the peak of the largest batch ever run for the session's life
        options.enable_cpu_mem_arena = False
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, pixels: torch.Tensor) -> np.ndarray:
        x = np.ascontiguousarray(pixels.detach().cpu().numpy(), dtype=np.float32)
        parts = [self.session.run(None, {"pixels": x[s:s + ONNX_MAX_ROWS]})[0]
                 for s in range(0, len(x), ONNX_MAX_ROWS)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class OnnxImageRuntime:
    """The model's pixels -> outputs path, exported once and run by ONNX Runtime."""
    name = "onnx"

    def __init__(self, session: OnnxSession):
        self.session = session

    def relaxed(self, pixels: torch.Tensor) -> np.ndarray:
        return self.session.run(pixels)


def checked_onnx(module: torch.nn.Module, path: Path, size: int, agree: Callable[[np.ndarray, np.ndarray], bool],
                 what: str, required: bool = False, threads: int | None = None) -> OnnxSession | None:
    """The one export -> probe -> fall back flow: ``module`` (pixels -> tensor, on the CPU)
    exported to ``path`` once and run by ONNX Runtime, used only if ``agree(onnx, torch)``
    on a fixed random probe batch. Otherwise None with a note, so PyTorch does the job; or,
    when ONNX Runtime was asked for by name (``required``), one line saying why not."""
    try:
        session = OnnxSession(module, path, size, threads)
    except Unavailable:
        if required:
            raise
        return None
    except Exception as e:  # a module the exporter cannot handle
        if required:
            raise Unavailable(f"{what} could not be exported to ONNX ({type(e).__name__}: {e}); use --runtime torch") \
                from None
        print(f"note: ONNX export of {what} failed ({type(e).__name__}); running it with PyTorch", file=sys.stderr)
        return None
    probe = torch.from_numpy(np.random.default_rng(0).normal(0, 1, (PROBE_BATCH, 3, size, size)).astype(np.float32))
    with torch.inference_mode():
        reference = module.eval()(probe).float().numpy()
    if not agree(session.run(probe), reference):
        if required:
            raise Unavailable(f"ONNX Runtime's outputs differ from PyTorch's for {what}, so --runtime onnx cannot be "
                              f"used; use --runtime auto or torch")
        print(f"note: ONNX Runtime's outputs differ from PyTorch's for {what}; running it with PyTorch",
              file=sys.stderr)
        return None
    return session


def same_codes(nbits: int) -> Callable[[np.ndarray, np.ndarray], bool]:
    """Model outputs agree: the same signs in the first ``nbits`` (the codes) and values within 1e-3."""
    return lambda a, b: bool(np.array_equal(a[:, :nbits] >= 0, b[:, :nbits] >= 0) and np.allclose(a, b, atol=1e-3))


def close_features(a: np.ndarray, b: np.ndarray) -> bool:
    """Encoder features agree: within 1e-3 relative, and 1e-3 of the largest value."""
    return bool(np.allclose(a, b, rtol=1e-3, atol=1e-3 * float(np.abs(b).max())))


def _export(module: torch.nn.Module, size: int, path: Path) -> None:
    import io

    module = module.eval().cpu()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.zeros(1, 3, size, size), buf, input_names=["pixels"],
                          output_names=["out"], dynamic_axes={"pixels": {0: "batch"}, "out": {0: "batch"}},
                          opset_version=17, dynamo=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


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
    onnx = checked_onnx(module, cache_root() / "onnx" / f"features-{key}-{trunk_of}-{size}.onnx", size, close_features,
                        "the image encoder")
    return torch_run if onnx is None else (lambda pixels: torch.from_numpy(onnx.run(pixels)))


def image_runtime(model, name: str = "auto", cache_dir: Path | None = None, threads: int | None = None) -> ImageRuntime:
    """The runtime for bulk image encoding: ``torch``, ``onnx``, or ``auto`` (ONNX Runtime
    when installed and the model is on the CPU, checked against PyTorch; else PyTorch)."""
    if name not in RUNTIMES:
        raise InvalidInput(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}")
    torch_runtime = TorchImageRuntime(model)
    if name == "torch" or (name == "auto" and (model.device.type != "cpu" or not onnxruntime_enabled())):
        return torch_runtime
    from .cache import cache_root

    size = model.image_encoder.image_size
    path = (Path(cache_dir) if cache_dir else cache_root() / "onnx") / f"image-{model.fingerprint()}-{size}.onnx"
    session = checked_onnx(_ImagePath(model), path, size, same_codes(model.config.output_width), "this model",
                           required=name == "onnx", threads=threads)
    return torch_runtime if session is None else OnnxImageRuntime(session)


def onnxruntime_enabled() -> bool:
    """ONNX Runtime is installed and not turned off (``CROSSMODAL_NO_ONNX=1``)."""
    import importlib.util
    return importlib.util.find_spec("onnxruntime") is not None and os.environ.get("CROSSMODAL_NO_ONNX") != "1"
