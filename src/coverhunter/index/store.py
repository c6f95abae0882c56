"""The catalogue index object: :class:`CatalogueIndex`, an index folder opened.

It holds ``meta.json`` as last read or written, reads the shards (memory-mapped, checked
on load), commits under the index's write lock and answers searches through its engine.
What each write does is in :mod:`.writes`, the engines in :mod:`.backend`, scoring works in
:mod:`.scoring`, calibration in :mod:`.calibrate`, the files in :mod:`.folder`; the
methods below that name them are one-line calls.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np

from ..checkpoint import LoadedModel
from ..dataset import Track
from ..embed import EmbeddingCache, Windowing
from ..utils import file_lock
from . import calibrate as cb
from . import folder as fs
from . import scoring, writes
from .backend import BACKENDS, kind_for, open_backend
from .calibration import ALIGNMENT_MAX_RECORDINGS
from .qdrant_backend import QdrantBackend, QdrantStore, new_engine
from .results import CatalogueError, Match
from .search import RowView


class CatalogueIndex:
    """Chunk embeddings of a catalogue, with exact or approximate search."""

    def __init__(self, root: Path, meta: dict):
        self.root, self.meta = Path(root), meta
        self._parts: list[np.ndarray] | None = None  # each shard's vectors, memory-mapped
        self._vectors: np.ndarray | None = None  # their concatenation, made on first use
        self._tracks: list[dict] | None = None  # live recordings, in row order
        self._by_work: dict[str, list[str]] = {}  # work -> track ids, made from _by_work_of
        self._by_work_of: list[dict] | None = None
        self._dead: np.ndarray | None = None  # (n_vectors,) bool: rows of removed recordings
        self._by_id: dict | None = None  # track_id -> track line, made on first use
        self._lock_root = self.root  # the folder whose lock guards writes (None: held by a caller)
        # the faiss engine's state (faiss_backend.FaissBackend): the file as searches read
        # it, and the faiss index an add appends to (kept across its re-reads of meta.json)
        self._ann = None
        self._writer = None
        self._warned_qmax = False  # alignment_calibration's stale-settings warning was given
        self._chroma_of: tuple | None = None  # (shards, the chroma they store), see calibrate
        self._stamp = None  # fs.meta_stamp of the meta.json read or written last

    # -- creation and loading -----------------------------------------------------------
    @classmethod
    def create(
        cls,
        root: str | Path,
        lm: LoadedModel,
        win: Windowing,
        backend: str = "auto",
        overwrite: bool = False,
        uri: str | None = None,
    ) -> CatalogueIndex:
        """An empty index in a new folder (``build_index`` uses it on a hidden sibling).

        Parameters
        ----------
        backend : str
            ``auto`` (by size, see :mod:`.faiss_backend`), ``exact``, ``hnsw``, ``ivfpq``
            (faiss, in the folder) or ``qdrant`` (a Qdrant collection at ``uri``).
        uri : str, optional
            Qdrant server URL or local-mode folder (``qdrant`` only).
        """
        root = Path(root)
        if (root / "meta.json").exists() and not overwrite:
            raise CatalogueError(f"{root}: an index exists already (use 'index add', or --overwrite)")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if (backend == "qdrant") != (uri is not None):
            raise ValueError("--uri goes with --backend qdrant, and the qdrant backend needs it")
        root.mkdir(parents=True, exist_ok=True)
        for old in list(root.glob("shard_*")) + list(root.glob("ann*.faiss")):
            old.unlink()
        idx = cls(root, fs.new_meta(lm, win, backend, new_engine(root, uri, lm.config.model.embed_dim)))
        idx._commit()
        return idx

    read_meta = staticmethod(fs.read_meta)

    @classmethod
    def load(cls, root: str | Path) -> CatalogueIndex:
        """Open an index and check every shard (each problem names its file); a swap that
        a killed build left unfinished is finished first."""
        root = Path(root)
        if fs.swap_interrupted(root):  # one listing of the parent folder
            with file_lock(fs.lock_path(root)):
                fs.recover(root)
        stamp = fs.meta_stamp(root)  # before reading: a commit in between shows as a change
        idx = cls(root, fs.read_meta(root))
        idx._stamp = stamp
        idx._check_shards()
        return idx

    @property
    def generation(self) -> int:
        """How many commits ``meta.json`` has seen (0: written before generations existed)."""
        return int(self.meta.get("generation", 0))

    def changed_on_disk(self) -> bool:
        """Whether ``meta.json`` was committed (by any process) since this object read it."""
        return fs.meta_stamp(self.root) != self._stamp

    def fresh(self) -> CatalogueIndex:
        """This index, or the index as it is on disk now when ``meta.json`` changed since
        it was read (a new object: searches running on this one are not disturbed).

        A long-running reader calls it before each search, so that it never searches
        (and re-ranks with) shards another process has replaced or removed.
        """
        if not self.changed_on_disk():
            return self
        return CatalogueIndex.load(self.root)

    def _read_all(self) -> tuple[list[np.ndarray], list[dict]]:
        """Every shard's vectors and track lines, removed recordings included."""
        parts, tracks, n = [], [], 0
        for s in self.meta["shards"]:
            arr, rows = fs.read_shard(self.root, s, n, self.meta["embed_dim"])
            parts.append(arr)
            tracks += rows
            n += len(arr)
        return parts, tracks

    def _check_shards(self) -> None:
        parts, tracks = self._read_all()
        ends = np.cumsum([len(p) for p in parts])
        per_shard = np.bincount(
            np.searchsorted(ends, [t["row"] for t in tracks], side="right"), minlength=len(parts)
        )
        for s, n in zip(self.meta["shards"], per_shard):
            fs.check_shard_chroma(self.root, s, int(n))
        removed = set(self.meta.get("removed_rows", []))
        live = [t for t in tracks if t["row"] not in removed]
        n = sum(len(p) for p in parts)
        if n != self.meta["n_vectors"] or len(live) != self.meta["n_tracks"]:
            raise CatalogueError(
                f"{self.root / 'meta.json'}: damaged (says {self.meta['n_tracks']} "
                f"recordings / {self.meta['n_vectors']} vectors, shards hold "
                f"{len(live)} / {n})"
            )
        self._dead = np.zeros(n, bool)
        for t in tracks:
            if t["row"] in removed:
                self._dead[t["row"] : t["row"] + len(t["starts"])] = True
        self._tracks, self._parts = live, parts

    def check_model(self, lm: LoadedModel) -> None:
        if lm.fingerprint != self.meta["model_fingerprint"]:
            raise CatalogueError(
                f"{self.root}: built with model {self.meta['model_fingerprint']} "
                f"({self.meta.get('model')}), not {lm.fingerprint} ({lm.source}); rebuild the "
                "index with this model or use the one it was built with"
            )

    def check_not_empty(self) -> None:
        if self.meta["n_tracks"] == 0:
            raise CatalogueError(
                f"{self.root}: the index is empty (no recordings); add some with "
                "'coverhunter index add' or build it again"
            )

    @property
    def windowing(self) -> Windowing:
        return Windowing(**self.meta["windowing"])

    # -- committing under the lock ------------------------------------------------------
    def _commit(self) -> None:
        self.meta["generation"] = self.generation + 1
        fs.write_meta(self.root, self.meta)
        self._stamp = fs.meta_stamp(self.root)

    def _locked(self):
        """The index's write lock, or nothing while ``build_index`` already holds it."""
        if self._lock_root is None:
            return nullcontext()
        return file_lock(fs.lock_path(self._lock_root))

    def _reload(self) -> None:
        """Re-read ``meta.json`` (under the lock: another process may have written)."""
        self._stamp = fs.meta_stamp(self.root)
        self.meta = fs.read_meta(self.root)
        self._forget()

    def _forget(self) -> None:
        self._parts, self._vectors, self._tracks, self._dead, self._ann = None, None, None, None, None
        self._by_id = None

    # -- writing (writes.py) ------------------------------------------------------------
    def add(
        self,
        lm: LoadedModel,
        tracks: list[Track],
        device="cpu",
        verbose: bool = True,
        cache: EmbeddingCache | None = None,
        replace: bool = False,
    ) -> list[tuple[str, str]]:
        """Embed and append recordings; returns the (track_id, error) pairs that failed.

        Embedding runs without the lock; the read-modify-write of the shard list runs
        under it, against the index as it is on disk then (other writers included).
        Recordings are committed ``ADD_GROUP`` at a time, so a killed add keeps what it
        committed and a re-run skips those (``already in the index``).

        Parameters
        ----------
        replace : bool
            A recording whose track id is in the index replaces it (the old one becomes
            a tombstone); otherwise it fails with ``already in the index``.
        """
        return writes.add(self, lm, tracks, device, verbose, cache, replace)

    def remove(self, track_ids: list[str]) -> list[str]:
        """Remove recordings by track id; returns the ids that were not in the index."""
        return writes.remove(self, track_ids)

    def compact(self) -> int:
        """Rewrite the index without its removed recordings; returns the rows dropped."""
        return writes.compact(self)

    def _compact(self) -> int:
        """:meth:`compact` for a caller that holds the lock (``index repair``)."""
        return writes.compact_locked(self)

    # -- the search engine (backend.py) -------------------------------------------------
    @property
    def kind(self) -> str:
        """How the index searches now: ``exact``, ``hnsw``, ``ivfpq`` or ``qdrant``."""
        return kind_for(self.meta, self.meta["n_vectors"])

    def _store(self) -> QdrantStore:
        """The Qdrant collection of a ``qdrant`` index."""
        return QdrantBackend(self).store

    # -- reading ------------------------------------------------------------------------
    def tracks(self) -> list[dict]:
        """The index's recordings (removed ones left out), in row order."""
        if self._tracks is None:
            self._check_shards()
        return self._tracks

    def vectors(self) -> np.ndarray:
        """Every chunk vector, (n_vectors, E); rows of removed recordings included."""
        if self._vectors is None:
            if self._parts is None:
                self._check_shards()
            self._vectors = (
                np.concatenate(self._parts)
                if self._parts
                else np.zeros((0, self.meta["embed_dim"]), np.float32)
            )
        return self._vectors

    def _dead_rows(self) -> np.ndarray:
        if self._tracks is None:
            self._check_shards()
        return self._dead

    def row_view(self) -> RowView:
        """Every chunk vector as a :class:`RowView`: rows are read from the memory-mapped
        shards when asked for, never all at once (or the concatenation when already made)."""
        if self._parts is None and self._vectors is None:
            self._check_shards()
        return RowView(self._parts if self._parts is not None else [self._vectors], self.meta["embed_dim"])

    def work_tracks(self, work: str) -> list[str]:
        """Track ids of a work's recordings in the index (removed ones left out), in row
        order; [] for a work it does not hold."""
        tracks = self.tracks()
        if self._by_work_of is not tracks:  # rebuilt when the tracks change
            by_work: dict[str, list[str]] = {}
            for t in tracks:
                by_work.setdefault(t["work"], []).append(t["track_id"])
            self._by_work, self._by_work_of = by_work, tracks
        return list(self._by_work.get(work, []))

    @property
    def n_works(self) -> int:
        return len({t["work"] for t in self.tracks()})

    # -- searching ----------------------------------------------------------------------
    def search_vectors(self, q: np.ndarray, k: int = 10, approximate: bool | None = None):
        """Best chunk rows for query chunks: (similarities (m, k), rows (m, k)); -1 pads.

        ``approximate``: None uses the index's engine, False exact search, True the
        engine (an in-memory HNSW graph when the index is exact).
        """
        dead = self._dead_rows()
        k = max(1, min(k, self.meta["n_vectors"] - int(dead.sum())))
        kind = self.kind
        if approximate is False:
            kind = "exact"
        elif approximate and kind == "exact":
            kind = "hnsw"  # built in memory (faiss_backend.FaissBackend.loaded)
        return open_backend(self, kind).search(q, k, dead)

    def search(
        self, q: np.ndarray, q_starts: list[float], top: int = 10, approximate: bool | None = None
    ) -> list[Match]:
        """Best works for one query recording (its normalised chunk embeddings); see
        :func:`coverhunter.index.scoring.search_works`."""
        return scoring.search_works(self, q, q_starts, top, approximate)

    def score_tracks(self, q: np.ndarray, q_starts: list[float], track_ids: list[str]) -> list[Match]:
        """Exact matches of a query with the given catalogue recordings, one per work; see
        :func:`coverhunter.index.scoring.score_tracks`."""
        return scoring.score_tracks(self, q, q_starts, track_ids)

    # -- calibration (calibrate.py) -----------------------------------------------------
    def calibrate(
        self,
        lm: LoadedModel,
        tracks: list[Track],
        device="cpu",
        cache: EmbeddingCache | None = None,
        prior: float | None = None,
        max_aligned: int = ALIGNMENT_MAX_RECORDINGS,
    ) -> dict:
        """Fit and commit the index's calibration on a labelled set (not the catalogue);
        see :func:`coverhunter.index.calibrate.calibrate`."""
        return cb.calibrate(self, lm, tracks, device, cache, prior, max_aligned)

    def calibrated_alignments(self, matches: list[Match], n_aligned: int) -> list[Match]:
        """Aligned matches with the probability and p-value of their alignment score; see
        :func:`coverhunter.index.calibrate.calibrated_alignments`."""
        return cb.calibrated_alignments(self, matches, n_aligned)

    @property
    def alignment_calibration(self) -> dict | None:
        """The alignment part of the calibration, or None (also when it was fitted with
        other alignment settings or chroma); see
        :func:`coverhunter.index.calibrate.alignment_calibration`."""
        return cb.alignment_calibration(self)


__all__ = ["CatalogueIndex"]
