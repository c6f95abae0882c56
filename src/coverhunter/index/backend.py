"""The search engine of a catalogue index: the :class:`Backend` protocol, and which one an
index uses.

An index's chunk vectors live in its shards; its engine answers nearest-row queries over
them:

==========  ======================================  ======================================
kind        engine                                  where
==========  ======================================  ======================================
``exact``   matrix product over every vector        :mod:`.exact_backend` (no engine file)
``hnsw``    faiss HNSW graph, appended in place     :mod:`.faiss_backend` (``ann*.faiss``)
``ivfpq``   faiss IVF-PQ, trained once, appended    :mod:`.faiss_backend` (``ann*.faiss``)
``qdrant``  a Qdrant collection (server or folder)  :mod:`.qdrant_backend`
==========  ======================================  ======================================

``meta.json`` says which: an index with an ``engine`` record is ``qdrant``; otherwise its
``backend`` setting (``auto``, ``exact``, ``hnsw`` or ``ivfpq``) and size choose the faiss
kind (:func:`coverhunter.index.faiss_backend.choose_kind`; ``auto`` switches kind once,
when an add crosses ``EXACT_MAX`` or ``HNSW_MAX``). HNSW and IVF-PQ share one engine class,
:class:`~.faiss_backend.FaissBackend`: one file, appended in place, that may lag behind
``meta.json``; they differ only in how the faiss index is made and searched.

The index calls its engine at fixed points of its writes (:mod:`.writes`), always under its
write lock: :meth:`Backend.append` before the commit that lists new rows (readers ignore
rows past ``n_vectors``), :meth:`Backend.remove` after the commit that tombstones rows, and
:meth:`Backend.rebuild` during a compaction, under a new name (the old engine file or
collection stays until the next compaction, for readers of the old ``meta.json``).
Searches (:meth:`coverhunter.index.CatalogueIndex.search_vectors`) take no lock.

The first stage's recurrence index (:mod:`.recurrence`) is not a Backend: it indexes chroma
shingles, not chunk embeddings, and answers with recordings voted for, not rows. It is built
from the shards' stored chroma on first use and cached by a key of those files
(:meth:`coverhunter.index.chroma_store.IndexChroma.recurrence`), so writes never touch it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from . import faiss_backend as fb
from .exact_backend import ExactBackend
from .qdrant_backend import QdrantBackend

BACKENDS = ("auto", *fb.KINDS, "qdrant")  # an index's ``backend`` setting


@runtime_checkable
class Backend(Protocol):
    """What the index asks of its search engine.

    Rows are the index's row numbers (``0..n_vectors - 1``, shard after shard). Each
    engine holds a reference to its index and reads ``index.meta``, ``index.root`` and the
    shards (``index.row_view()``) from it.
    """

    kind: str  # exact, hnsw, ivfpq or qdrant

    def append(self, vectors: np.ndarray, first_row: int) -> None:
        """Take ``vectors`` (n, dim) as rows ``first_row..first_row + n - 1``."""

    def remove(self, rows: np.ndarray) -> None:
        """Forget ``rows`` of removed recordings (or leave them: searches skip tombstones)."""

    def rebuild(self, vectors: np.ndarray, shard: str) -> dict:
        """A new engine over ``vectors`` (rows ``0..``) under a new name, for the
        compaction that writes ``shard``; returns the ``meta.json`` entries naming it."""

    def search(self, q: np.ndarray, k: int, dead: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` live rows for query vectors ``q`` (m, dim): (similarities (m, k),
        rows (m, k)), best first, -1 pads; ``dead`` (n_vectors,) marks tombstoned rows."""


def kind_for(meta: dict, n_vectors: int) -> str:
    """The engine kind of an index (its ``meta.json``) holding ``n_vectors`` rows."""
    if meta.get("engine"):
        return "qdrant"
    return fb.choose_kind(meta["backend"], n_vectors)


def open_backend(index, kind: str) -> Backend:
    """The engine of ``kind`` for ``index`` (a :class:`~coverhunter.index.CatalogueIndex`)."""
    if kind == "qdrant":
        return QdrantBackend(index)
    if kind == "exact":
        return ExactBackend(index)
    return fb.FaissBackend(index, kind)


__all__ = ["Backend", "BACKENDS", "kind_for", "open_backend"]
