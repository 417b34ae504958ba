"""Progress that reads well everywhere.

On a terminal: tqdm bars. On a pipe or a file (a log, CI): no carriage-return frames,
but one plain line at most every ``CROSSMODAL_PROGRESS_INTERVAL`` seconds (default 30)
while a task runs, and one when a task that printed such lines ends; a short task is
silent there (its result is printed anyway, e.g. the trainer's line per epoch).
``crossmodal --quiet`` (or ``CROSSMODAL_QUIET=1``) silences progress altogether; results
and errors still print.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable, Iterable, Iterator, Sized, TypeVar

from .settings import env_number

T = TypeVar("T")


def quiet() -> bool:
    return os.environ.get("CROSSMODAL_QUIET", "") not in ("", "0")


def set_quiet(value: bool) -> None:
    os.environ["CROSSMODAL_QUIET"] = "1" if value else "0"


class _Lines:
    """A tqdm stand-in for logs: a few whole lines instead of a redrawn bar."""

    def __init__(self, iterable: Iterable[T], desc: str, unit: str, total: int | None, interval: float,
                 size: Callable[[T], int] | None = None):
        self.iterable, self.desc, self.unit, self.interval = iterable, desc, unit, interval
        self.size = size
        self.total = total if total is not None else (len(iterable) if isinstance(iterable, Sized) else None)
        self.postfix = ""

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def _line(self, n: int, start: float) -> None:
        rate = n / max(time.time() - start, 1e-9)
        of = f"/{self.total}" if self.total is not None else ""
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {n}{of} {self.unit} ({rate:.1f} {self.unit}/s{extra})", file=sys.stderr, flush=True)

    def __iter__(self) -> Iterator[T]:
        start = last = time.time()
        n = lines = 0
        for item in self.iterable:
            yield item
            n += self.size(item) if self.size else 1
            if time.time() - last >= self.interval:
                self._line(n, start)
                last, lines = time.time(), lines + 1
        if lines:  # a long task also says that it ended; a short one stays silent
            self._line(n, start)

    def close(self) -> None:
        pass


def progress(iterable: Iterable[T], desc: str, unit: str = "it", total: int | None = None,
             disable: bool = False, size: Callable[[T], int] | None = None):
    """``iterable`` with progress reporting suited to where stderr goes. ``size``: how
    many units an item counts for (a batch counts its photos, so the rate is photos/s);
    ``total`` is then in those units."""
    if disable or quiet():
        from tqdm.auto import tqdm
        return tqdm(iterable, disable=True)
    if sys.stderr.isatty():
        from tqdm.auto import tqdm
        if size is None:
            return tqdm(iterable, desc=desc, unit=unit, total=total, leave=False)
        return _sized_bar(iterable, tqdm(desc=desc, unit=unit, total=total, leave=False), size)
    return _Lines(iterable, desc, unit, total, env_number("CROSSMODAL_PROGRESS_INTERVAL", 30.0), size)


def _sized_bar(iterable: Iterable[T], bar, size: Callable[[T], int]) -> Iterator[T]:
    try:
        for item in iterable:
            yield item
            bar.update(size(item))
    finally:
        bar.close()
