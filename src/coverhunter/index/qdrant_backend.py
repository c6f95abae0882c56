"""Qdrant as the search engine of an index: the chunk vectors live in a Qdrant collection.

``uri`` is a Qdrant server or cluster (``http://host:6333``; the collection can be
sharded and replicated there) or a folder, which runs Qdrant's local mode in this
process (the same client API, no server: what the tests use). Point ids are the
index's row numbers, so the index folder (``meta.json``, track lines, float vectors,
chroma) stays the catalogue's record and Qdrant only answers nearest-neighbour queries.
Removing a track deletes its points.

A local-mode folder is held by one client at a time: one process uses it at once (a
server has no such limit).

:class:`QdrantBackend` is the :class:`~coverhunter.index.backend.Backend` of a ``qdrant``
index; :func:`new_engine` makes the collection of a new index (its ``meta["engine"]``) and
:func:`drop_engine` deletes one that a build or a compaction replaced.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import numpy as np

from . import folder as fs
from .results import CatalogueError
from .search import clean_shortlist, fetch_size

log = logging.getLogger(__name__)

UPSERT_BATCH = 2048  # points per upsert request
_CLIENTS: dict[str, object] = {}  # uri -> client: a local-mode folder admits one client per process


def _client(uri: str):
    try:
        from qdrant_client import QdrantClient
    except ImportError as e:
        raise CatalogueError(
            "the qdrant backend needs qdrant-client: pip install 'coverhunter[vectordb]'"
        ) from e
    if uri not in _CLIENTS:
        remote = uri.startswith(("http://", "https://"))
        _CLIENTS[uri] = QdrantClient(url=uri) if remote else QdrantClient(path=uri)
    return _CLIENTS[uri]


def new_collection_name(stem: str) -> str:
    """A fresh collection name (each build writes a new one, swapped in with ``meta.json``)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem) or "index"
    return f"coverhunter_{safe}_{uuid.uuid4().hex[:8]}"


class QdrantStore:
    """The collection holding an index's chunk vectors (id = row number).

    Parameters
    ----------
    uri : str
        ``http(s)://host:port`` of a Qdrant server or cluster, or a local-mode folder.
    collection : str
        Collection name (``meta.json`` records it).
    """

    def __init__(self, uri: str, collection: str):
        self.uri, self.collection = str(uri), collection

    @property
    def client(self):
        return _client(self.uri)

    def create(self, dim: int) -> None:
        from qdrant_client import models

        if self.client.collection_exists(self.collection):
            raise CatalogueError(f"{self.uri}: collection {self.collection} exists already")
        self.client.create_collection(
            self.collection, vectors_config=models.VectorParams(size=dim, distance=models.Distance.DOT)
        )

    def drop(self) -> None:
        """Delete the collection (nothing happens if it is gone)."""
        if self.client.collection_exists(self.collection):
            self.client.delete_collection(self.collection)

    def add(self, vectors: np.ndarray, first_row: int) -> None:
        """Upsert ``vectors`` (n, dim) as rows ``first_row..first_row + n - 1``.

        Upserting rows a killed writer left overwrites them, so a retried add is exact.
        """
        from qdrant_client import models

        for i in range(0, len(vectors), UPSERT_BATCH):
            block = np.asarray(vectors[i : i + UPSERT_BATCH], dtype=np.float32)
            ids = list(range(first_row + i, first_row + i + len(block)))
            self.client.upsert(
                self.collection, points=models.Batch(ids=ids, vectors=block.tolist()), wait=True
            )

    def remove(self, rows: np.ndarray) -> None:
        """Delete the points of ``rows`` (removed or replaced recordings)."""
        from qdrant_client import models

        rows = [int(r) for r in rows]
        for i in range(0, len(rows), UPSERT_BATCH):
            self.client.delete(
                self.collection,
                wait=True,
                points_selector=models.PointIdsList(points=rows[i : i + UPSERT_BATCH]),
            )

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(similarities (m, k), rows (m, k))`` of the query vectors ``q`` (m, dim); -1 pads."""
        from qdrant_client import models

        requests = [models.QueryRequest(query=v.tolist(), limit=k) for v in np.asarray(q, np.float32)]
        answers = self.client.query_batch_points(self.collection, requests=requests)
        sims = np.full((len(q), k), -np.inf, np.float32)
        rows = np.full((len(q), k), -1, np.int64)
        for i, a in enumerate(answers):
            for j, p in enumerate(a.points[:k]):
                sims[i, j], rows[i, j] = p.score, int(p.id)
        return sims, rows


def new_engine(root: Path, uri: str | None, dim: int) -> dict | None:
    """A new Qdrant collection for an index at ``root``, as ``meta["engine"]`` records it
    (None without ``uri``: the index searches with faiss in its folder)."""
    if uri is None:
        return None
    uri = str(uri) if str(uri).startswith(("http://", "https://")) else str(Path(uri).resolve())
    stem = root.name.split(fs.BUILD_TAG)[0].lstrip(".")
    store = QdrantStore(uri, new_collection_name(stem))
    store.create(dim)
    return {"kind": "qdrant", "uri": uri, "collection": store.collection}


def drop_engine(engine: dict | None) -> None:
    """Delete the collection a ``meta["engine"]`` record names (nothing for None)."""
    if engine:
        QdrantStore(engine["uri"], engine["collection"]).drop()


class QdrantBackend:
    """The :class:`~coverhunter.index.backend.Backend` of a ``qdrant`` index: its chunk
    vectors in the collection ``meta["engine"]`` names.

    Parameters
    ----------
    index : CatalogueIndex
    """

    kind = "qdrant"

    def __init__(self, index):
        self.index = index

    @property
    def store(self) -> QdrantStore:
        e = self.index.meta["engine"]
        return QdrantStore(e["uri"], e["collection"])

    def append(self, vectors: np.ndarray, first_row: int) -> None:
        """Upsert ``vectors`` as rows ``first_row..`` (under the lock, before the commit)."""
        self.store.add(vectors, first_row)

    def remove(self, rows: np.ndarray) -> None:
        """Delete the points of removed or replaced recordings (after the commit)."""
        self.store.remove(rows)

    def rebuild(self, vectors: np.ndarray, shard: str) -> dict:
        """A new collection of ``vectors`` (compaction, before the commit); returns the
        ``meta.json`` entry naming it. The old one goes at the next compaction."""
        engine = self.index.meta["engine"]
        store = QdrantStore(engine["uri"], new_collection_name(self.index.root.name))
        store.create(self.index.meta["embed_dim"])
        store.add(vectors, 0)
        return {"engine": {**engine, "collection": store.collection}}

    def search(self, q: np.ndarray, k: int, dead: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` live rows of the collection's shortlist."""
        sims, rows = self.store.search(q, fetch_size(k, dead))
        return clean_shortlist(q, sims, rows, k, dead=dead, n_rows=len(dead))


__all__ = ["QdrantStore", "QdrantBackend", "new_collection_name", "new_engine", "drop_engine"]
