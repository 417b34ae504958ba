"""Text queries without transformers: a frozen transformers text encoder (MiniLM)
exported once to ONNX and run by ONNX Runtime, its tokenizer read by ``tokenizers``.

Why: a text query needs the text encoder's pooled features and nothing else, yet
importing transformers' modelling code (it pulls in ``torch._dynamo`` and
``torch.distributed``) costs more than torch itself; ``crossmodal search --text`` paid
that at every start. The graph is exported the first time a model loaded from a folder
embeds text through PyTorch, checked against PyTorch on probe captions, and cached
under ``~/.cache/crossmodal/onnx`` by a key over everything the graph depends on (the
checksum of the encoder's weights its model folder records, its tokenizer file, the
export code's version, the torch, onnx and onnxruntime versions: :func:`cache_key`), so
every later process skips transformers altogether, and a change to any of those exports
again rather than reusing a stale graph.

Only an encoder the folder references by checksum (frozen, with no weight of its own)
qualifies: then the export stands for exactly the weights the model was trained over.
Features agree with PyTorch to about 1e-6, so a code bit can differ only for an output
within that distance of zero.
"""
from __future__ import annotations

import hashlib
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from .config import TextEncoderConfig
from .onnx_graphs import OnnxGraph, checked_graph, within

#: captions the export is checked on: padded batches, accents, another script, a long one
PROBE_CAPTIONS = ["a dog", "Two dogs play in the snow near a red barn .", "Ein Hund läuft über die Straße",
                  "一只狗在雪地里奔跑", "a man " * 40]
#: largest difference from PyTorch's features accepted (features are O(0.1..1))
TOLERANCE = 1e-4


#: the export code's version: raise it when a change to this module or to
#: ``onnx_graphs.export_graph`` changes what a graph holds, so cached graphs are not reused
EXPORT_VERSION = 2
#: the packages whose versions a cached graph depends on
GRAPH_PACKAGES = ("torch", "onnx", "onnxruntime")


def package_versions() -> dict[str, str]:
    out = {}
    for name in GRAPH_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def cache_key(sha256: str, cfg: TextEncoderConfig) -> str:
    """What a cached graph stands for: the weights (their checksum), the tokenizer file's
    bytes, the sequence length, :data:`EXPORT_VERSION` and :func:`package_versions`."""
    tokenizer = tokenizer_file(cfg)
    parts = [sha256, hashlib.sha256(tokenizer.read_bytes()).hexdigest() if tokenizer else "no tokenizer",
             f"max_length={cfg.max_length}", f"export={EXPORT_VERSION}",
             *(f"{k}={v}" for k, v in sorted(package_versions().items()))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def export_path(cache_dir: Path, sha256: str, cfg: TextEncoderConfig) -> Path:
    return Path(cache_dir) / f"text-{cache_key(sha256, cfg)[:24]}.onnx"


def tokenizer_file(cfg: TextEncoderConfig) -> Path | None:
    """The ``tokenizer.json`` of a transformers text encoder given by a local folder
    (``minilm`` is one, shipped by its package); None for any other encoder."""
    if cfg.name == "minilm":
        from .encoders.text import minilm_path

        folder = minilm_path()
    elif cfg.name != "gru" and Path(cfg.name).is_dir():
        folder = Path(cfg.name)
    else:
        return None
    return folder / "tokenizer.json" if (folder / "tokenizer.json").is_file() else None


class _Tokenize:
    """Captions -> padded ``input_ids`` and ``attention_mask`` by ``tokenizers`` alone, as
    the transformers tokenizer pads and truncates them."""

    def __init__(self, tokenizer: Path, max_length: int):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.enable_truncation(max_length)
        pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token=self.tokenizer.id_to_token(pad_id) or "[PAD]")

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        encoded = self.tokenizer.encode_batch(list(texts))
        return {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64)}


class OnnxTextFeatures:
    """Captions -> pooled features [B, H] (float32 torch tensor), as the PyTorch encoder gives."""

    def __init__(self, graph: Path, tokenizer: Path, max_length: int, threads: int | None = None):
        self.tokenize = _Tokenize(tokenizer, max_length)
        self.graph = OnnxGraph(graph, threads)

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return torch.from_numpy(self.graph.run(self.tokenize(texts)))


def load_cached(cache_dir: Path, sha256: str, cfg: TextEncoderConfig) -> OnnxTextFeatures | None:
    """The engine for a referenced encoder with this checksum, if its export is cached."""
    graph, tokenizer = export_path(cache_dir, sha256, cfg), tokenizer_file(cfg)
    if tokenizer is None or not graph.is_file():
        return None
    try:
        return OnnxTextFeatures(graph, tokenizer, cfg.max_length)
    except Exception as e:  # a damaged cache file: PyTorch does the job and exports it again
        print(f"note: cannot load the cached text graph {graph} ({type(e).__name__}); using PyTorch",
              file=sys.stderr)
        graph.unlink(missing_ok=True)
        return None


class _Pooled(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask)


def export(encoder, cfg: TextEncoderConfig, cache_dir: Path, sha256: str) -> bool:
    """Export ``encoder`` (a frozen transformers encoder whose weights have ``sha256``),
    check it against PyTorch on :data:`PROBE_CAPTIONS` (the same token ids from
    ``tokenizers`` as from transformers, and features within :data:`TOLERANCE`), and cache
    the graph only if both agree (:func:`~crossmodal.onnx_graphs.checked_graph`). True
    when the cache now holds it."""
    tokenizer = tokenizer_file(cfg)
    if tokenizer is None:
        return False
    tokens, ours = encoder.tokenize(PROBE_CAPTIONS), _Tokenize(tokenizer, cfg.max_length)(PROBE_CAPTIONS)
    if not all(np.array_equal(ours[k], tokens[k].numpy()) for k in ("input_ids", "attention_mask")):
        print("note: the tokenizer file splits captions differently from the text encoder's own tokenizer; "
              "text queries keep using PyTorch", file=sys.stderr)
        return False
    probe = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
    dynamic = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    # eval on the wrapper too: a training-mode export keeps dropout
    graph = checked_graph(_Pooled(encoder).eval(), export_path(cache_dir, sha256, cfg), probe, within(TOLERANCE), dynamic,
                          "the text encoder", fallback="text queries keep using PyTorch")
    return graph is not None
