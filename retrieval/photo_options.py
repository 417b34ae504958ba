"""How a photo run works: chunk, batch, decoding workers, runtime. Plain data without
torch, so ``--help`` shows these defaults without loading it."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from crossmodal.engines import EngineOptions

DEFAULT_CHUNK = 2000
DEFAULT_BATCH = 32


@dataclass
class PhotoOptions:
    """How a photo run works (all of it is speed and safety; none changes a code)."""
    chunk_size: int = DEFAULT_CHUNK  #: photos per commit: a kill loses at most this many
    batch_size: int = DEFAULT_BATCH  #: photos per CNN batch
    workers: int | None = None  #: decoding processes (None: all cores but one; 0: in this process)
    runtime: str = "auto"  #: image encoding runtime (:mod:`crossmodal.runtime`)
    #: where the batches run (:mod:`crossmodal.engines`): here, or on Ray actors (then
    #: ``workers`` is unused: the engine's own ``workers`` counts the actors)
    engine: EngineOptions = field(default_factory=EngineOptions)


def default_workers() -> int:
    """Decoding processes: about four in five cores. A camera JPEG costs more to decode,
    even reduced (entropy decoding reads every byte), than the CNN costs under ONNX
    Runtime, so decoding needs most of the cores (``bench_ingest.py`` compares worker and
    thread splits)."""
    return max(1, round(0.8 * (os.cpu_count() or 2)))
