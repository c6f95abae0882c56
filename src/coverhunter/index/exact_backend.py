"""Exact search as an index's engine: one matrix product over every chunk vector.

The shards are the engine: there is no file to append to, remove from or rebuild.
``backend="auto"`` searches this way below :data:`~coverhunter.index.faiss_backend.EXACT_MAX`
chunk vectors (fast enough there, and recall 1); ``identify --search exact`` searches any
index this way.
"""

from __future__ import annotations

import numpy as np

from .faiss_backend import ann_file_name
from .search import exact_search


class ExactBackend:
    """The :class:`~coverhunter.index.backend.Backend` of an ``exact`` index.

    Parameters
    ----------
    index : CatalogueIndex
    """

    kind = "exact"

    def __init__(self, index):
        self.index = index

    def append(self, vectors: np.ndarray, first_row: int) -> None:
        """Nothing: the new shard holds the rows."""

    def remove(self, rows: np.ndarray) -> None:
        """Nothing: searches skip removed rows."""

    def rebuild(self, vectors: np.ndarray, shard: str) -> dict:
        """No engine file, only its name (compaction): the one an ``auto`` index writes
        when an add takes it past ``EXACT_MAX``."""
        return {"ann_file": ann_file_name(shard)}

    def search(self, q: np.ndarray, k: int, dead: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` live rows by inner product over every vector (concatenated once)."""
        return exact_search(q, self.index.vectors(), dead, k)


__all__ = ["ExactBackend"]
