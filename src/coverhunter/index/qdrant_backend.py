"""Qdrant as the search engine of an index: the chunk vectors live in a Qdrant collection.

``uri`` is a Qdrant server or cluster (``http://host:6333``; the collection can be
sharded and replicated there) or a folder, which runs Qdrant's local mode in this
process (the same client API, no server: what the tests use). Point ids are the
index's row numbers, so the index folder (``meta.json``, track lines, float vectors,
chroma) stays the catalogue's record and Qdrant only answers nearest-neighbour queries.
Removing a track deletes its points.

A local-mode folder is held by one client at a time: one process uses it at once (a
server has no such limit).
"""

from __future__ import annotations

import logging
import uuid

import numpy as np

from .results import CatalogueError

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


__all__ = ["QdrantStore", "new_collection_name"]
