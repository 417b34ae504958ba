"""Atomic writes: a reader sees the old file or the new one, never half of one."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True,
                       on_written: Callable[[], None] | None = None) -> Path:
    """Write ``data`` to a temporary sibling, fsync it (``durable``), rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    if on_written is not None:
        on_written()
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, durable: bool = True,
                      on_written: Callable[[], None] | None = None) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), durable, on_written)
