"""A prepared dataset's splits, opened once: loaded, screened, flattened, and turned into
model outputs. The one reader behind training, evaluation, indexing and ``encode``, so
every job skips the same unusable rows and reads the same captions in the same order."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .format import load_prepared
from .screen import Screening, screen_prepared
from .splits import FlatSplit, flatten_split


class PreparedSplits:
    """Splits of a prepared dataset (``datasets`` rows with unusable ones dropped by
    screening), each flattened once on first use; ``outputs`` runs a model over a split
    through the feature cache in ``cache_dir``."""

    def __init__(self, datasets, screening: dict[str, Screening], cache_dir: Path | None,
                 path: str | os.PathLike | None = None):
        self.datasets = datasets
        self.screening = screening
        self.cache_dir = cache_dir
        self.path = Path(path) if path is not None else None
        self._flat: dict[str, FlatSplit] = {}

    @classmethod
    def open(cls, path: str | os.PathLike, splits: Iterable[str], cache_dir: Path | None,
             also_screen: Iterable[str] = (), warn: bool = True) -> "PreparedSplits":
        """Load ``path`` (each of ``splits`` must exist) and screen ``splits`` and those of
        ``also_screen`` it has: a row whose image cannot be decoded, or with no caption, is
        dropped and named (``screening`` says which)."""
        splits = list(splits)
        dd = load_prepared(path, splits=splits)
        wanted = [s for s in dict.fromkeys([*splits, *also_screen]) if s in dd]
        return cls(dd, screen_prepared(dd, wanted, cache_dir, warn), cache_dir, path)

    def __contains__(self, split: str) -> bool:
        return split in self.datasets

    def __getitem__(self, split: str):
        return self.datasets[split]

    def flat(self, split: str) -> FlatSplit:
        if split not in self._flat:
            self._flat[split] = flatten_split(self.datasets[split])
        return self._flat[split]

    def rows(self, split: str):
        """Each kept item's row in the dataset as stored (screening may have dropped some)."""
        screened = self.screening.get(split)
        return screened.rows if screened is not None else range(len(self.datasets[split]))

    def outputs(self, model, split: str, views: str | None = None):
        """``crossmodal.split_outputs.SplitOutputs`` of ``model`` over ``split``."""
        from crossmodal.split_outputs import relaxed_outputs

        return relaxed_outputs(model, self.datasets[split], self.flat(split).captions, self.cache_dir, views)
