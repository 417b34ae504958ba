"""A PyTorch module exported to ONNX once, checked against PyTorch, and run by ONNX
Runtime: the one export -> probe -> cache flow, for the image path, a frozen CNN's
features (:mod:`crossmodal.runtime`) and the frozen text encoder (:mod:`crossmodal.onnx_text`).

A graph is written under a staging name, run on probe inputs, and moved to its cache
path only when its outputs agree with PyTorch's by the caller's stated test
(:func:`same_codes`, :func:`close_features`, or a tolerance): the cache never holds a
graph that was not checked, and a process killed mid-export leaves only the staging file.
"""
from __future__ import annotations

import io
import os
import sys
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .atomic import atomic_write_bytes
from .errors import Unavailable

#: probe -> bool: do ONNX Runtime's outputs (first) agree with PyTorch's (second)?
Agreement = Callable[[np.ndarray, np.ndarray], bool]


class OnnxGraph:
    """An exported graph run by ONNX Runtime on the CPU. ``max_rows``: run at most that many
    rows at once (outputs are per row, so splitting a batch changes no value, and bounds
    the activations' memory)."""

    def __init__(self, path: Path, threads: int | None = None, max_rows: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise Unavailable("ONNX Runtime is not installed: pip install onnxruntime onnx") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3
        # no arena: it keeps the peak of the largest batch ever run for the session's life
        options.enable_cpu_mem_arena = False
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.max_rows = max_rows

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Named inputs (rows first) -> the graph's first output."""
        n = len(next(iter(inputs.values())))
        step = self.max_rows or max(n, 1)
        parts = [self.session.run(None, {k: v[s:s + step] for k, v in inputs.items()})[0] for s in range(0, n, step)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def export_graph(module: torch.nn.Module, example: dict[str, torch.Tensor], path: Path,
                 dynamic_axes: dict[str, dict[int, str]]) -> None:
    """Trace ``module(**example)`` (eval mode, CPU) to ONNX at ``path``, atomically; the
    output is named ``out``."""
    module = module.eval().cpu()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(example.values()), buf, input_names=list(example), output_names=["out"],
                          dynamic_axes={**dynamic_axes, "out": {0: "batch"}}, opset_version=17, dynamo=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def checked_graph(module: torch.nn.Module, path: Path, probe: dict[str, torch.Tensor], agree: Agreement,
                  dynamic_axes: dict[str, dict[int, str]], what: str, required: bool = False,
                  threads: int | None = None, max_rows: int | None = None,
                  fallback: str = "running it with PyTorch") -> OnnxGraph | None:
    """The graph of ``module`` at ``path`` (exported and checked there first if absent),
    used only if ``agree(onnx, torch)`` on ``probe``. Otherwise None with a note naming
    ``what`` and the ``fallback``, so PyTorch does the job; or, when ONNX Runtime was asked
    for by name (``required``), one :class:`Unavailable` line saying why not. A full or
    read-only cache is not an error: the graph is not cached and PyTorch answers."""
    staged = path.with_name(f".{path.name}.{os.getpid()}.checking")
    source = path if path.is_file() else staged
    try:
        if source is staged:
            export_graph(module, probe, staged, dynamic_axes)
        graph = OnnxGraph(source, threads, max_rows)
    except Unavailable:
        staged.unlink(missing_ok=True)
        if required:
            raise
        return None
    except OSError:
        staged.unlink(missing_ok=True)
        if required:
            raise Unavailable(f"the ONNX graph of {what} cannot be written to {path.parent}; use --runtime torch") \
                from None
        return None
    except Exception as e:  # a module the exporter cannot handle, or a damaged cached graph
        staged.unlink(missing_ok=True)
        if source is path:  # exported again next time
            path.unlink(missing_ok=True)
        if required:
            raise Unavailable(f"{what} could not be exported to ONNX ({type(e).__name__}: {e}); use --runtime torch") \
                from None
        print(f"note: ONNX export of {what} failed ({type(e).__name__}); {fallback}", file=sys.stderr)
        return None
    with torch.inference_mode():
        reference = module.eval()(**probe).float().numpy()
    if not agree(graph.run({k: v.numpy() for k, v in probe.items()}), reference):
        staged.unlink(missing_ok=True)
        if required:
            raise Unavailable(f"ONNX Runtime's outputs differ from PyTorch's for {what}, so --runtime onnx cannot be "
                              f"used; use --runtime auto or torch")
        print(f"note: ONNX Runtime's outputs differ from PyTorch's for {what}; {fallback}", file=sys.stderr)
        return None
    if source is staged:
        os.replace(staged, path)
    return graph


def same_codes(nbits: int) -> Agreement:
    """Model outputs agree: the same signs in the first ``nbits`` (the codes) and values within 1e-3."""
    return lambda a, b: bool(np.array_equal(a[:, :nbits] >= 0, b[:, :nbits] >= 0) and np.allclose(a, b, atol=1e-3))


def close_features(a: np.ndarray, b: np.ndarray) -> bool:
    """Encoder features agree: within 1e-3 relative, and 1e-3 of the largest value."""
    return bool(np.allclose(a, b, rtol=1e-3, atol=1e-3 * float(np.abs(b).max())))


def within(tolerance: float) -> Agreement:
    """Outputs agree to ``tolerance`` absolute."""
    return lambda a, b: a.shape == b.shape and float(np.abs(a - b).max(initial=0.0)) <= tolerance
