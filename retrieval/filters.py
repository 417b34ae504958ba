"""Which items a query may return: photos inside some folders, taken within a date range.

A filter is turned into a sorted array of allowed item ids, which the binary index
searches within (faiss: an ``IDSelector`` inside the scan, so a selective filter costs
about what an unfiltered query does; other backends widen their candidate list). The
ids come from two sorted columns kept per modality while an index is open, so a query
at a million items reads ``O(log n + matches)``, never the whole metadata table:

* **path**: an image's file (``source``) or a frame's video, sorted: the items under a
  folder are one contiguous range (a prefix ``DIR/``).
* **date**: when the photo was taken: EXIF ``DateTimeOriginal`` when the file has it,
  else the file's modification time, as a naive local date-time stored at ingest
  (``extra["date"]``, ISO 8601). Items without a date (dataset rows, captions, photos
  indexed before dates were kept, until their next sync) never pass a date filter.

Dates compare as written, without a time zone: a camera's clock knows none, and "after
2024-06-01" means the same on every machine.
"""
from __future__ import annotations

import bisect
import datetime as dt
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from crossmodal.errors import InvalidInput

SORTS = ("relevance", "date")


def parse_date(text: str, what: str) -> dt.datetime:
    """``2024-06-01`` or ``2024-06-01T14:30[:00]`` (a space also separates date and time)."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        raise InvalidInput(f"{what} {text!r} is not a date: write YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    return value.replace(tzinfo=None)


def date_key(value: dt.datetime) -> float:
    """A date-time as a number that sorts as the date-time does (seconds, read as UTC)."""
    return value.replace(tzinfo=dt.timezone.utc).timestamp()


def folder_prefix(folder: str | os.PathLike) -> str:
    """What every path inside ``folder`` starts with (absolute, as photos are keyed)."""
    path = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    return path if path.endswith(os.sep) else path + os.sep


@dataclass(frozen=True)
class ItemFilter:
    """Items inside any of ``under`` (folders), taken at or after ``after`` and before
    ``before``. Empty: every item."""
    under: tuple[str, ...] = ()
    after: dt.datetime | None = None
    before: dt.datetime | None = None

    def __post_init__(self):
        if self.after is not None and self.before is not None and self.after >= self.before:
            raise InvalidInput(f"the date range is empty: after {self.after.isoformat()} is not before "
                               f"{self.before.isoformat()}")

    @classmethod
    def parse(cls, under: Sequence[str] | None = None, after: str | None = None,
              before: str | None = None) -> "ItemFilter":
        """From what a user types (the CLI, the service)."""
        return cls(tuple(folder_prefix(u) for u in (under or ()) if str(u).strip()),
                   parse_date(after, "--after") if after else None,
                   parse_date(before, "--before") if before else None)

    def __bool__(self) -> bool:
        return bool(self.under) or self.after is not None or self.before is not None

    def to_dict(self) -> dict:
        return {"under": list(self.under), "after": self.after.isoformat() if self.after else None,
                "before": self.before.isoformat() if self.before else None}


class FilterColumns:
    """One modality's items sorted by path and by date, to answer an :class:`ItemFilter`
    with sorted id arrays. Built once per loaded index version (the index rebuilds it
    after a change)."""

    def __init__(self, rows: Iterable[tuple[int, str | None, str | None]]):
        """``rows``: (id, path or None, ISO date or None) of every item."""
        with_path, with_date = [], []
        for item, path, date in rows:
            if path is not None:
                with_path.append((path, item))
            if date:
                try:
                    with_date.append((date_key(dt.datetime.fromisoformat(date).replace(tzinfo=None)), item))
                except ValueError:
                    pass  # a hand-edited date: the item passes no date filter
        with_path.sort()
        self.paths = [p for p, _ in with_path]
        self.path_ids = np.array([i for _, i in with_path], dtype=np.int64)
        with_date.sort()
        self.dates = np.array([d for d, _ in with_date], dtype=np.float64)
        self.date_ids = np.array([i for _, i in with_date], dtype=np.int64)

    def allowed(self, where: ItemFilter) -> np.ndarray:
        """Sorted ids of the items that pass ``where``."""
        sets = []
        if where.under:
            ranges = []
            for prefix in where.under:
                lo = bisect.bisect_left(self.paths, prefix)
                hi = bisect.bisect_left(self.paths, prefix[:-1] + chr(ord(prefix[-1]) + 1))
                ranges.append(self.path_ids[lo:hi])
            sets.append(np.unique(np.concatenate(ranges)))
        if where.after is not None or where.before is not None:
            lo = 0 if where.after is None else int(np.searchsorted(self.dates, date_key(where.after), "left"))
            hi = len(self.dates) if where.before is None else int(np.searchsorted(self.dates, date_key(where.before),
                                                                                 "left"))
            sets.append(np.unique(self.date_ids[lo:hi]))
        if not sets:
            raise ValueError("an empty filter allows everything: do not ask for its ids")
        out = sets[0]
        for s in sets[1:]:
            out = np.intersect1d(out, s, assume_unique=True)
        return out
