"""Where crossmodal keeps what it computes once: feature caches and image scans."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$CROSSMODAL_CACHE``, or ``~/.cache/crossmodal``."""
    return Path(os.environ.get("CROSSMODAL_CACHE", Path.home() / ".cache" / "crossmodal"))


def default_cache_dir() -> Path:
    """``$CROSSMODAL_CACHE/features``, or ``~/.cache/crossmodal/features``."""
    return cache_root() / "features"
