"""How a photo run works: chunk, batch, decoding workers, runtime. Plain data without
torch, so ``--help`` shows these defaults without loading it."""
from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_CHUNK = 2000
DEFAULT_BATCH = 32


@dataclass
class PhotoOptions:
    """How a photo run works (all of it is speed and safety; none changes a code)."""
    chunk_size: int = DEFAULT_CHUNK  #: photos per commit: a kill loses at most this many
    batch_size: int = DEFAULT_BATCH  #: photos per CNN batch
    workers: int | None = None  #: decoding processes (None: all cores but one; 0: in this process)
    runtime: str = "auto"  #: image encoding runtime (:mod:`crossmodal.runtime`)
    store_floats: bool = False  #: keep continuous outputs for re-ranking


def default_workers() -> int:
    """Decoding processes: about four in five cores. A 12-MP JPEG costs ~22 ms to decode
    even reduced (entropy decoding reads every byte) against ~3 ms of ONNX Runtime CNN
    time, so decoding needs most of the cores (measured in ``bench_ingest.py``: on two
    cores, 2 workers + 1 runtime thread beat 1 worker + 2 threads by ~40%)."""
    return max(1, round(0.8 * (os.cpu_count() or 2)))
