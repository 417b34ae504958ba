"""A prepared split flattened for training and evaluation: items, and every caption
with the index of the item it describes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FlatSplit:
    ids: list[str]
    captions: list[str]
    #: index into ``ids`` of the item each caption describes
    caption_item: np.ndarray
    labels: list[list[str]]

    @property
    def has_labels(self) -> bool:
        return any(self.labels)

    def label_matrix(self, vocab: list[str]) -> np.ndarray:
        """Multi-hot [N, len(vocab)] (labels outside the vocabulary are ignored)."""
        index = {v: i for i, v in enumerate(vocab)}
        m = np.zeros((len(self.ids), len(vocab)), dtype=bool)
        for i, labs in enumerate(self.labels):
            for lab in labs:
                if lab in index:
                    m[i, index[lab]] = True
        return m

    def caption_ids(self) -> list[str]:
        """Each caption's id, ``'<item id>#<n>'`` (n counts the item's captions from 0):
        the key a caption has in code files and indexes."""
        seen: dict[int, int] = {}
        out = []
        for owner in self.caption_item.tolist():
            n = seen.get(owner, 0)
            seen[owner] = n + 1
            out.append(f"{self.ids[owner]}#{n}")
        return out

    def caption_owners(self) -> list[str]:
        """Each caption's item id (the item it describes)."""
        return [self.ids[i] for i in self.caption_item.tolist()]

    def captions_of(self) -> list[np.ndarray]:
        """For each item, the indices of its captions."""
        order = np.argsort(self.caption_item, kind="stable")
        bounds = np.searchsorted(self.caption_item[order], np.arange(len(self.ids) + 1))
        return [order[bounds[i]:bounds[i + 1]] for i in range(len(self.ids))]


def flatten_split(ds) -> FlatSplit:
    """Items and their captions; empty or blank captions are left out (screening counts them)."""
    cols = ds.select_columns(["id", "captions", "labels"])[:]
    caps, owner = [], []
    for i, cs in enumerate(cols["captions"]):
        kept = [c for c in cs if c and c.strip()]
        caps.extend(kept)
        owner.extend([i] * len(kept))
    return FlatSplit(ids=list(cols["id"]), captions=caps, caption_item=np.asarray(owner, dtype=np.int64),
                     labels=[list(x) for x in cols["labels"]])


def label_vocab(*splits: FlatSplit) -> list[str]:
    return sorted({lab for s in splits for labs in s.labels for lab in labs})
