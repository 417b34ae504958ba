"""Where crossmodal keeps what it computes once: feature caches and image scans."""
from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$CROSSMODAL_CACHE/features``, or ``~/.cache/crossmodal/features``."""
    return Path(os.environ.get("CROSSMODAL_CACHE", Path.home() / ".cache" / "crossmodal")) / "features"
