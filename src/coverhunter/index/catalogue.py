"""Catalogue index: chunk embeddings of known recordings on disk, searched by new recordings.

An index folder holds::

    meta.json          format, model fingerprint, windowing, shards, tombstones,
                       search engine, calibration (the commit point)
    shard_00000.npy    L2-normalised chunk embeddings (float32, [chunks, E])
    shard_00000.jsonl  one line per recording: track, work, audio, first row, chunk starts (s)
    shard_00000.chroma.npz  per-recording chroma for re-ranking
    ann.faiss          optional approximate index (faiss HNSW or IVF-PQ) over every shard

Writers never lose each other's work or the index they replace:

- ``add``, ``remove`` and ``compact`` run under an exclusive lock (``fcntl`` on
  ``.INDEX.lock`` beside the folder; ``add`` embeds before taking it), re-read
  ``meta.json``, write new files and ``meta.json`` last (atomically). A killed writer
  leaves the index as it was at its last commit (``add`` commits every
  ``ADD_GROUP`` recordings, so a re-run resumes).
- ``add`` appends to the approximate index in place; ``remove`` and replacing a track
  add tombstones (``removed_rows``: first rows of dead recordings) that searches skip;
  once a quarter of the rows are dead the index is compacted (new shards and engine
  index under new names; the replaced files are deleted by the next compaction, so a
  reader holding the old ``meta.json`` can still open them).
- ``build`` (also with ``--overwrite``) builds into a hidden sibling folder and swaps it
  in only when it holds at least one recording: a failed or killed build leaves the old
  index (or none) in place, never an empty one. A sharded build (``world_size > 1``)
  adds each rank's slice to one index in place instead.

A recording is scored against a catalogue track by its best chunk pair (cosine
similarity), and a work by its best track.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..checkpoint import LoadedModel
from ..chroma import CHROMA_SPEC, chroma_path, fine_views
from ..dataset import Track, read_dataset
from ..embed import EmbeddingCache, Windowing
from ..utils import file_lock, remove_stale_tmp
from . import faiss_backend as fb
from . import folder as fs
from .calibration import (
    ALIGNMENT_MAX_RECORDINGS,
    MIN_STRANGERS,
    SELECTED_FRACTION,
    alignment_pairs,
    fit_calibration,
    p_impostor,
    probability_same,
)
from .embedding import embed_recordings, tracks_from_folder
from .qdrant_backend import QdrantStore, new_collection_name
from .results import CatalogueError, Match
from .search import RowView, clean_shortlist, exact_search
from .shard import rank_slice, resolve_rank

log = logging.getLogger(__name__)

FORMAT = fs.FORMAT
APPROX_MIN_VECTORS = fb.EXACT_MAX  # "auto" switches to faiss HNSW above this many chunks
BACKENDS = ("auto", *fb.KINDS, "qdrant")
ADD_GROUP = 256  # recordings embedded and committed at a time by ``add``
COMPACT_AT = 0.25  # compact once this share of the rows belongs to removed recordings
FLUSH_SHARE = 0.25  # an add writes the faiss file once this share of it is unsaved (and at its end)
ALREADY = "already in the index"


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
        self._ann = None
        self._lock_root = self.root  # the folder whose lock guards writes
        self._writer: list | None = None  # [ann file name, faiss index, rows saved]: add()'s
        self._warned_qmax = False  # alignment_calibration's stale-settings warning was given
        self._chroma_of: tuple | None = None  # (shards, the chroma they store), see _shard_chroma
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
        # the model's path resolved: the index is used from other working directories
        meta = {
            "format": FORMAT,
            "model_fingerprint": lm.fingerprint,
            "model": str(Path(lm.source).resolve()),
            "embed_dim": lm.config.model.embed_dim,
            "windowing": asdict(win),
            "frames_per_second": lm.config.features.frames_per_second,
            "backend": backend,
            "shards": [],
            "n_tracks": 0,
            "n_vectors": 0,
            "removed_rows": [],
            "engine": _new_engine(root, uri, lm.config.model.embed_dim),
            "calibration": None,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        idx = cls(root, meta)
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

    # -- adding -------------------------------------------------------------------------
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
        self.check_model(lm)
        failed = []
        for g in range(0, len(tracks), ADD_GROUP):
            failed += self._add_group(lm, tracks[g : g + ADD_GROUP], device, verbose, cache, replace)
        self._flush_engine()
        return failed

    def _add_group(self, lm, tracks, device, verbose, cache, replace) -> list:
        known = {t["track_id"] for t in self.tracks()}
        failed, todo, seen = [], [], set()
        for t in tracks:
            if (t.track_id in known and not replace) or t.track_id in seen:
                failed.append((t.track_id, ALREADY))
            else:
                todo.append(t)
                seen.add(t.track_id)
        new, chroma, bad = self._embed(lm, todo, device, verbose, cache)
        failed += bad
        if not new:
            return failed
        with self._locked():
            remove_stale_tmp(self.root)
            self._reload()
            failed += self._append(new, chroma, replace)
        return failed

    def _embed(self, lm, todo, device, verbose, cache):
        """``(embedded (track, vectors, starts), chroma by track id, failures)``, no lock held."""
        from ..rerank import compact_chroma

        chroma = {}  # per-recording uint8 chroma for re-ranking, stored beside the shard
        embs = embed_recordings(
            lm,
            todo,
            self.windowing,
            device,
            cache,
            verbose=verbose,
            on_features=lambda i, f, fine: chroma.__setitem__(todo[i].track_id, compact_chroma(f, fine)),
            views=fine_views(CHROMA_SPEC),
        )
        new, failed = [], []
        for t, (emb, starts) in zip(todo, embs):
            if emb is None:
                failed.append((t.track_id, starts))
            else:
                new.append((t, emb, starts))
        return new, chroma, failed

    def _append(self, new, chroma, replace) -> list:
        """Write one shard of new recordings and commit (call under the lock)."""
        live = {t["track_id"]: t for t in self.tracks()}
        n0 = self.meta["n_vectors"]
        rows, vecs, replaced, failed = [], [], [], []
        for t, emb, starts in new:
            if t.track_id in live:
                if not replace:  # added by another writer meanwhile
                    failed.append((t.track_id, ALREADY))
                    continue
                replaced.append(live[t.track_id])
            rows.append(
                {
                    "track_id": t.track_id,
                    "work": t.work,
                    "audio": t.audio,
                    "row": n0 + sum(len(v) for v in vecs),
                    "starts": starts,
                }
            )
            vecs.append(emb)
        if not rows:
            return failed
        name = self._next_shard()
        arr = np.concatenate(vecs)
        fs.write_shard(self.root, name, arr, rows, [chroma[r["track_id"]] for r in rows])
        self._engine_append(arr)  # before the commit: readers ignore rows past n_vectors
        self.meta["shards"].append(name)
        self.meta["n_tracks"] += len(rows) - len(replaced)
        self.meta["n_vectors"] += len(arr)
        self._commit_removing(replaced)
        return failed

    # -- removing -----------------------------------------------------------------------
    def remove(self, track_ids: list[str]) -> list[str]:
        """Remove recordings by track id; returns the ids that were not in the index."""
        with self._locked():
            remove_stale_tmp(self.root)
            self._reload()
            live = {t["track_id"]: t for t in self.tracks()}
            missing = [tid for tid in track_ids if tid not in live]
            gone = [live[tid] for tid in dict.fromkeys(track_ids) if tid in live]
            if gone:
                self.meta["n_tracks"] -= len(gone)
                self._commit_removing(gone)
        return missing

    def _commit_removing(self, tracks: list[dict]) -> None:
        """Commit ``meta.json`` with ``tracks`` (maybe none) tombstoned, under the lock; then
        drop their engine points and compact once ``COMPACT_AT`` of the rows are dead."""
        self.meta["removed_rows"] = self.meta.get("removed_rows", []) + [t["row"] for t in tracks]
        self._commit()
        self._forget()
        if tracks and self.meta.get("engine"):
            rows = np.concatenate([np.arange(t["row"], t["row"] + len(t["starts"])) for t in tracks])
            self._store().remove(rows)
        if self.meta["removed_rows"] and (self._dead_rows().sum() >= COMPACT_AT * self.meta["n_vectors"]):
            self._compact()

    def compact(self) -> int:
        """Rewrite the index without its removed recordings; returns the rows dropped."""
        with self._locked():
            remove_stale_tmp(self.root)
            self._reload()
            return self._compact()

    def _compact(self) -> int:
        """New shard and engine index of the live rows, committed; old files go after."""
        removed = set(self.meta.get("removed_rows", []))
        if not removed:
            return 0
        vecs, rows, chromas, first, n = [], [], [], 0, 0
        dropped = []
        for s in self.meta["shards"]:
            arr, lines = fs.read_shard(self.root, s, first, self.meta["embed_dim"])
            stored = fs.read_shard_chroma(self.root, s) or [np.zeros((0, 12), np.uint8)] * len(lines)
            for t, chroma in zip(lines, stored):
                if t["row"] in removed:
                    dropped.append(t)
                else:
                    a = t["row"] - first
                    vecs.append(np.asarray(arr[a : a + len(t["starts"])]))
                    rows.append({**t, "row": n})
                    chromas.append(chroma)
                    n += len(t["starts"])
            first += len(arr)
        # the files replaced now stay until the next compaction, so a reader that loaded
        # the old meta.json just before this commit can still open them
        stale = self.meta.get("stale") or {}
        name = self._next_shard()
        arr = np.concatenate(vecs) if vecs else np.zeros((0, self.meta["embed_dim"]), np.float32)
        if rows:
            fs.write_shard(self.root, name, arr, rows, chromas)
        self.meta.update(
            shards=[name] if rows else [],
            n_vectors=n,
            removed_rows=[],
            stale={k: self.meta.get(k) for k in ("shards", "ann_file", "engine")},
        )
        self._engine_rebuild(arr, name)
        self._commit()
        self._forget()
        _delete_stale(self.root, stale)
        _delete_uploads(self.root, dropped, rows)
        log.info("%s: compacted, %d rows of removed recordings dropped", self.root, first - n)
        return first - n

    def _next_shard(self) -> str:
        stale = (self.meta.get("stale") or {}).get("shards") or []
        return fs.next_shard_name(self.meta["shards"] + stale)

    # -- the search engine ----------------------------------------------------------------
    @property
    def kind(self) -> str:
        """How the index searches now: ``exact``, ``hnsw``, ``ivfpq`` or ``qdrant``."""
        if self.meta.get("engine"):
            return "qdrant"
        return fb.choose_kind(self.meta["backend"], self.meta["n_vectors"])

    def _store(self) -> QdrantStore:
        e = self.meta["engine"]
        return QdrantStore(e["uri"], e["collection"])

    def _ann_path(self) -> Path:
        return self.root / self.meta.get("ann_file", fb.ANN_FILE)

    def _engine_append(self, arr: np.ndarray) -> None:
        """Append ``arr`` (rows n_vectors..) to the engine (under the lock, before the commit).

        The faiss index stays in memory between the groups of one ``add`` and is written
        at its end, or once a quarter of it is unsaved (never, in a build's private
        folder, before the end): the file may lag behind ``meta.json``, and searches
        cover the lagging rows exactly (:meth:`search_vectors`).
        """
        n0 = self.meta["n_vectors"]
        if self.meta.get("engine"):
            self._store().add(arr, n0)
            return
        kind = fb.choose_kind(self.meta["backend"], n0 + len(arr))
        if kind == "exact":
            return
        ann = self._writer_ann(kind, n0)
        if ann is None:
            # first approximate index, a change of kind (the catalogue outgrew it), or a
            # file a killed writer left longer than meta.json says: build it once
            log.info("%s: building the %s index over %d vectors", self.root, kind, n0 + len(arr))
            ann = fb.build_ann(kind, RowView([*self._all_parts(), arr], arr.shape[1]))
            self._writer = [self._ann_path().name, ann, 0]
        else:  # catch up with rows committed without it (a killed add), then append
            fb.append(ann, np.concatenate([self._rows(ann.ntotal, n0), arr]))
        if self._lock_root is not None and ann.ntotal - self._writer[2] >= ann.ntotal * FLUSH_SHARE:
            self._save_writer()

    def _writer_ann(self, kind: str, n0: int):
        """The faiss index to append to: kept from this add's last group, else the file;
        None when neither holds a prefix of the current rows."""
        name = self._ann_path().name
        if self._writer is None or self._writer[0] != name or self._writer[1].ntotal > n0:
            ann = fb.load_ann(self._ann_path())
            self._writer = None if ann is None else [name, ann, ann.ntotal]
        if self._writer is None or fb.kind_of(self._writer[1]) != kind or self._writer[1].ntotal > n0:
            return None
        return self._writer[1]

    def _save_writer(self) -> None:
        name, ann, saved = self._writer
        if ann.ntotal > saved:
            fb.save_ann(ann, self.root / name)
            self._writer[2] = ann.ntotal

    def _flush_engine(self) -> None:
        """Write what ``add`` appended to the faiss index, if it still matches the rows."""
        if self._writer is None or self._writer[1].ntotal == self._writer[2]:
            self._writer = None
            return
        with self._locked():
            self._reload()
            if self._writer[0] == self._ann_path().name and self._writer[1].ntotal <= self.meta["n_vectors"]:
                self._save_writer()
        self._writer = None

    def _all_parts(self) -> list[np.ndarray]:
        """Each shard's vectors, memory-mapped (or the concatenation when already made)."""
        if self._parts is None and self._vectors is None:
            self._check_shards()
        return self._parts if self._parts is not None else [self._vectors]

    def row_view(self) -> RowView:
        """Every chunk vector as a :class:`RowView`: rows are read from the memory-mapped
        shards when asked for, never all at once."""
        return RowView(self._all_parts(), self.meta["embed_dim"])

    def _rows(self, start: int, stop: int) -> np.ndarray:
        """Vectors of rows ``start..stop-1`` without concatenating every shard."""
        return self.row_view()[start:stop]

    def _engine_rebuild(self, arr: np.ndarray, name: str) -> None:
        """A new engine index over ``arr`` under a new name (compaction; before the commit)."""
        if self.meta.get("engine"):
            store = QdrantStore(self.meta["engine"]["uri"], new_collection_name(self.root.name))
            store.create(self.meta["embed_dim"])
            store.add(arr, 0)
            self.meta["engine"] = {**self.meta["engine"], "collection": store.collection}
            return
        kind = fb.choose_kind(self.meta["backend"], len(arr))
        self.meta["ann_file"] = f"ann_{name}.faiss"
        if kind != "exact" and len(arr):
            fb.save_ann(fb.build_ann(kind, arr), self._ann_path())

    def _ann_index(self, kind: str):
        """The approximate index for searching (built in memory if the file lags behind)."""
        if self._ann is None:
            ann = fb.load_ann(self._ann_path())
            if ann is None:
                log.info("%s: no %s index on disk; building one in memory", self.root, kind)
                ann = fb.build_ann(kind, self.row_view())
            self._ann = ann
        return self._ann

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
        n_dead = int(dead.sum())
        k = max(1, min(k, self.meta["n_vectors"] - n_dead))
        kind = self.kind
        if approximate is False or (approximate is None and kind == "exact"):
            return exact_search(q, self.vectors(), dead, k)
        # fetch past the tombstones a query may meet (a replaced track's old rows are
        # near-duplicates of its new ones), then keep the best k live rows
        k_engine = min(self.meta["n_vectors"], k + min(n_dead, 8 * k))
        if kind == "qdrant":
            sims, rows = self._store().search(q, k_engine)
            return clean_shortlist(q, sims, rows, k, dead=dead, n_rows=len(dead))
        ann = self._ann_index("hnsw" if kind == "exact" else kind)
        sims, rows = fb.search_ann(ann, q, k_engine)
        if ann.ntotal < len(dead):  # rows the last writer has not written into the file yet
            t_sims, t_rows = exact_search(
                q, self._rows(ann.ntotal, len(dead)), dead[ann.ntotal :], min(k, len(dead) - ann.ntotal)
            )
            sims = np.concatenate([sims, t_sims], 1)
            rows = np.concatenate([rows, np.where(t_rows >= 0, t_rows + ann.ntotal, -1)], 1)
        rescore = self.row_view() if fb.kind_of(ann) == "ivfpq" else None
        return clean_shortlist(q, sims, rows, k, dead=dead, n_rows=len(dead), vectors=rescore)

    def search(
        self, q: np.ndarray, q_starts: list[float], top: int = 10, approximate: bool | None = None
    ) -> list[Match]:
        """Best works for one query recording (its normalised chunk embeddings)."""
        if self.meta["n_tracks"] == 0:
            return []
        tracks = self.tracks()
        row_starts = np.array([t["row"] for t in tracks])
        # enough chunk neighbours to reach `top` distinct works in practice
        k = max(50, 8 * top * max(1, len(q_starts)))
        sims, rows = self.search_vectors(q, k, approximate)
        best: dict[str, Match] = {}
        owner = np.searchsorted(row_starts, rows, side="right") - 1
        order = np.argsort(-sims, axis=None)
        for flat in order:
            qi, j = divmod(int(flat), sims.shape[1])
            if rows[qi, j] < 0:
                continue
            t = tracks[owner[qi, j]]
            if t["work"] in best:
                continue
            ref_chunk = int(rows[qi, j] - t["row"])
            best[t["work"]] = Match(
                t["work"], t["track_id"], float(sims[qi, j]), q_starts[qi], t["starts"][ref_chunk]
            )
            if len(best) >= top:
                break
        return self._calibrated(sorted(best.values(), key=lambda m: -m.score))

    def _calibrated(self, matches: list[Match]) -> list[Match]:
        cal = self.meta.get("calibration")
        if cal:
            n = self.meta["n_tracks"]  # a work scores its best track: n wrong tracks compete
            matches = [_with_calibration(m, cal, m.score, n) for m in matches]
        return matches

    def score_tracks(self, q: np.ndarray, q_starts: list[float], track_ids: list[str]) -> list[Match]:
        """Exact matches of a query (its normalised chunk embeddings (m, E)) with the given
        catalogue recordings: one per work (its best listed recording), best first.

        Unknown or removed track ids are skipped. Used for candidates that another search
        found (:func:`coverhunter.rerank.search_reranked`).
        """
        if not track_ids or self.meta["n_tracks"] == 0:
            return []
        if self._by_id is None:
            self._by_id = {t["track_id"]: t for t in self.tracks()}
        best: dict[str, Match] = {}
        q = np.asarray(q, np.float32)
        view = self.row_view()
        for tid in track_ids:
            t = self._by_id.get(tid)
            if t is None:
                continue
            sims = q @ view[t["row"] : t["row"] + len(t["starts"])].T
            qi, j = np.unravel_index(int(np.argmax(sims)), sims.shape)
            m = Match(t["work"], t["track_id"], float(sims[qi, j]), q_starts[qi], t["starts"][j])
            if t["work"] not in best or m.score > best[t["work"]].score:
                best[t["work"]] = m
        return self._calibrated(sorted(best.values(), key=lambda m: -m.score))

    # -- calibration ----------------------------------------------------------------------
    def calibrate(
        self,
        lm: LoadedModel,
        tracks: list[Track],
        device="cpu",
        cache: EmbeddingCache | None = None,
        prior: float | None = None,
        max_aligned: int = ALIGNMENT_MAX_RECORDINGS,
    ) -> dict:
        """Fit same-work / different-work score distributions on a labelled set (not the
        catalogue itself, to avoid optimism) and store them in the index (see the
        assumptions above :func:`fit_calibration`).

        When the index stores chroma (re-ranking), the chroma alignment scores of the
        set's pairs are fitted as well (``calibration["alignment"]``): every same-work
        pair, and each recording with the nearest tenth (at least 20) of the other works'
        recordings by the search's first stage (embedding and summary), as a search aligns the
        strangers most like the query (at most ``max_aligned`` recordings,
        :func:`coverhunter.index.calibration.alignment_pairs`). An aligned match then
        takes its probability and p-value from its alignment score
        (:meth:`calibrated_alignments`), which tells covers from other music far better
        than the embedding score on arrangements the model never heard.
        """
        from .. import rerank as rr
        from ..classical import euclidean_distances
        from ..embed import distance_matrix
        from .chroma_store import IndexChroma

        self.check_model(lm)
        chroma = IndexChroma.of(self, lm.summary_projection)
        align = {} if chroma.available() else None
        embs = embed_recordings(
            lm,
            tracks,
            self.windowing,
            device,
            cache,
            on_features=None
            if align is None
            else lambda i, f, fine: align.__setitem__(i, chroma.query_features(f, fine)),
            views=chroma.fine_views if align is not None else (),
        )
        bad = [(t.track_id, err) for t, (e, err) in zip(tracks, embs) if e is None]
        if bad:
            raise CatalogueError(
                f"calibration set: {len(bad)} recording(s) failed, e.g. {bad[0][0]}: {bad[0][1]}"
            )
        vecs = [e for e, _ in embs]
        dist = distance_matrix(vecs, vecs, "min")
        labels = np.array([t.work for t in tracks])
        iu = np.triu_indices(len(tracks), 1)
        scores = 1.0 - dist[iu]
        same = labels[iu[0]] == labels[iu[1]]
        cal = fit_calibration(scores, same, prior=prior)
        cal["source"] = f"{len(tracks)} recordings, {len(set(labels))} works"
        if align is not None:
            t0 = time.time()
            feats = [align[i] for i in range(len(tracks))]
            stored = [rr.as_stored(f) for f in feats]  # the catalogue side, as the index keeps it
            cfg = rr.RerankConfig()
            glob = None
            if cfg.global_weight > 0:  # the search's first stage: embedding and summary
                vecs = np.stack([chroma.query_summary(f) for f in feats])
                glob = euclidean_distances(vecs, vecs)
            off = np.where(np.eye(len(tracks), dtype=bool), np.nan, dist)
            first = rr.first_stage_matrix(off, glob, cfg)
            a_scores, a_same, n_used = alignment_pairs(
                feats, labels, first, max_recordings=max_aligned, candidates=stored
            )
            try:
                # the embedding part's base rate (all pairs), not the aligned pairs' share
                cal["alignment"] = fit_calibration(a_scores, a_same, prior=cal["prior"])
                cal["alignment"]["qmax"] = asdict(cfg.qmax)  # the settings its scores were made with
                cal["alignment"]["chroma"] = _chroma_record(chroma.params)  # and the chroma
                cal["alignment"]["source"] = (
                    f"{n_used} recordings, {len(set(labels))} works; other works: the nearest "
                    f"{SELECTED_FRACTION:.0%} (at least {MIN_STRANGERS}) by the first stage"
                )
                log.info(
                    "alignment calibration: %d pairs of %d recordings in %.0f s",
                    len(a_scores),
                    n_used,
                    time.time() - t0,
                )
            except ValueError as e:  # too few same-work pairs among the aligned recordings
                log.warning(
                    "calibration set: no alignment calibration (%s); re-ranked matches "
                    "keep the embedding's probabilities",
                    e,
                )
        with self._locked():
            self._reload()
            self.meta["calibration"] = cal
            self._commit()
        return cal

    def calibrated_alignments(self, matches: list[Match], n_aligned: int) -> list[Match]:
        """Matches whose probability and p-value come from their alignment score, for those
        that were aligned, when the calibration has an alignment part (else unchanged).

        The p-value is the chance that the best of the ``n_aligned`` recordings aligned for
        the query (all wrong when it performs no catalogue work) scores as high, as
        :func:`p_impostor` computes it for the embedding's ``n_tracks`` wrong tracks.
        """
        cal = self.alignment_calibration
        if not cal:
            return matches
        n = max(1, n_aligned)
        return [m if m.alignment is None else _with_calibration(m, cal, m.alignment, n) for m in matches]

    @property
    def alignment_calibration(self) -> dict | None:
        """The alignment part of the index's calibration (re-ranked verdicts), or None.

        None also when it was fitted with other alignment settings than the re-ranking's
        (:class:`coverhunter.classical.QmaxParams`; a calibration without a record of them
        was made with :data:`coverhunter.classical.LEGACY_QMAX_PARAMS`): its scores would
        not be comparable. A warning says so once; ``index calibrate`` fits it anew.
        """
        from .. import rerank as rr
        from ..classical import LEGACY_QMAX_PARAMS

        cal = (self.meta.get("calibration") or {}).get("alignment")
        if not cal:
            return None
        fitted = cal.get("qmax", asdict(LEGACY_QMAX_PARAMS))
        # a calibration without a chroma record was fitted on the CQT's chroma alone
        chroma = cal.get("chroma", "cqt-only")
        current = _chroma_record(self._shard_chroma())
        if fitted != asdict(rr.RerankConfig().qmax) or (
            chroma != current and not (chroma == "cqt-only" and isinstance(current, list))
        ):
            if not self._warned_qmax:
                self._warned_qmax = True
                log.warning(
                    "%s: its alignment calibration was fitted with other alignment settings "
                    "or chroma (%s, chroma %s; the index aligns %s); re-ranked matches take "
                    "the embedding's probabilities until `coverhunter index calibrate` is "
                    "run again",
                    self.root,
                    fitted,
                    chroma,
                    current,
                )
            return None
        return cal

    def _shard_chroma(self):
        """The chroma the index's re-ranking aligns (``chroma_store.IndexChroma.params``),
        read once per list of shards."""
        from .chroma_store import IndexChroma

        shards = tuple(self.meta["shards"])
        if self._chroma_of is None or self._chroma_of[0] != shards:
            self._chroma_of = (shards, IndexChroma.of(self).params)
        return self._chroma_of[1]


def _chroma_record(params) -> str | list:
    """A chroma spec (str) or an old index's CQT chroma parameters (list), as JSON keeps it."""
    return params if isinstance(params, str) else [float(x) for x in params]


def _with_calibration(m: Match, cal: dict, score: float, n: int) -> Match:
    """``m`` with P(same work) and the p-value of ``score`` against ``n`` wrong tracks."""
    return Match(
        **{**asdict(m), "probability": probability_same(cal, score), "p_value": p_impostor(cal, score, n)}
    )


def _new_engine(root: Path, uri: str | None, dim: int) -> dict | None:
    """A new Qdrant collection for an index at ``root`` (None: the faiss folder index)."""
    if uri is None:
        return None
    uri = str(uri) if str(uri).startswith(("http://", "https://")) else str(Path(uri).resolve())
    stem = root.name.split(fs.BUILD_TAG)[0].lstrip(".")
    store = QdrantStore(uri, new_collection_name(stem))
    store.create(dim)
    return {"kind": "qdrant", "uri": uri, "collection": store.collection}


def _delete_stale(root: Path, stale: dict) -> None:
    """Delete what the compaction before the last one replaced: shards, engine file or
    collection (``meta["stale"]`` as it was before the last compaction)."""
    if not stale:
        return
    fs.delete_shards(root, stale.get("shards") or [])
    (root / (stale.get("ann_file") or fb.ANN_FILE)).unlink(missing_ok=True)
    if stale.get("engine"):
        QdrantStore(stale["engine"]["uri"], stale["engine"]["collection"]).drop()


def _delete_uploads(root: Path, dropped: list[dict], live: list[dict]) -> None:
    """Delete the files ``POST /tracks`` kept in ``uploads/`` (``ID.ext``, ``ID.cqt.npy``
    and ``ID.chroma.npz``) for recordings a compaction dropped, unless a live recording still
    uses them (a replaced track keeps its id)."""
    uploads = root / "uploads"
    if not uploads.is_dir():
        return
    live_ids = {t["track_id"] for t in live}
    live_audio = {
        Path(t.get("audio") or "").name for t in live if Path(t.get("audio") or "").parent.name == "uploads"
    }
    for t in dropped:
        if t["track_id"] in live_ids:
            continue
        names = [f"{t['track_id']}.cqt.npy", chroma_path(f"{t['track_id']}.cqt.npy").name]
        audio = Path(t.get("audio") or "")
        if audio.parent.name == "uploads" and audio.name not in live_audio:
            names.append(audio.name)
        for name in names:
            (uploads / name).unlink(missing_ok=True)


def _build_tracks(dataset, folder) -> list[Track]:
    if (dataset is None) == (folder is None):
        raise ValueError("give exactly one of a dataset list or an audio folder")
    return read_dataset(dataset) if dataset is not None else tracks_from_folder(Path(folder))


def build_index(
    index_dir,
    lm: LoadedModel,
    *,
    dataset=None,
    folder=None,
    backend="auto",
    overwrite=False,
    device="cpu",
    calibrate_with=None,
    cache: EmbeddingCache | None = None,
    uri: str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> tuple[CatalogueIndex, list]:
    """Create an index from a dataset list or a folder of audio files.

    The index is built in a hidden sibling folder and swapped in only when at least one
    recording was added (and calibration, if asked, succeeded): a failed or killed build
    leaves the previous index, or no index, never an empty or half-built one.

    Parameters
    ----------
    backend : str
        See :meth:`CatalogueIndex.create`; ``uri`` goes with ``qdrant``.
    rank, world_size : int, optional
        Sharded build (default: torchrun's ``RANK`` / ``WORLD_SIZE``, else one process):
        see :func:`build_shard`.
    """
    rank, world_size = resolve_rank(rank, world_size)
    if world_size > 1:
        return build_shard(
            index_dir,
            lm,
            dataset=dataset,
            folder=folder,
            backend=backend,
            overwrite=overwrite,
            device=device,
            cache=cache,
            uri=uri,
            rank=rank,
            world_size=world_size,
        )
    root = Path(index_dir)
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(fs.lock_path(root)):
        fs.recover(root)
        fs.replaceable(root, overwrite)
        tracks = _build_tracks(dataset, folder)
        win = _windowing(lm)
        tmp = root.parent / f".{root.name}{fs.BUILD_TAG}{os.getpid()}"
        idx = None
        try:
            idx = CatalogueIndex.create(tmp, lm, win, backend, uri=uri)
            idx._lock_root = None  # private folder; the lock is held here
            failed = idx.add(lm, tracks, device, cache=cache)
            if idx.meta["n_tracks"] == 0:
                first = f" (e.g. {failed[0][0]}: {failed[0][1]})" if failed else ""
                keep = "the existing index is unchanged" if root.exists() else "no index written"
                raise CatalogueError(f"{root}: no recording could be added{first}; {keep}")
            if calibrate_with is not None:
                idx.calibrate(lm, read_dataset(calibrate_with), device, cache)
            old = fs.read_meta(root) if (root / "meta.json").is_file() else {}
            fs.swap_in(tmp, root)
            idx = None
            if old.get("engine"):  # the replaced index's collection
                QdrantStore(old["engine"]["uri"], old["engine"]["collection"]).drop()
        finally:
            if idx is not None and idx.meta.get("engine"):  # failed: drop its collection
                idx._store().drop()
            shutil.rmtree(tmp, ignore_errors=True)
    return CatalogueIndex.load(root), failed


def build_shard(
    index_dir,
    lm: LoadedModel,
    *,
    rank: int,
    world_size: int,
    dataset=None,
    folder=None,
    backend="auto",
    overwrite=False,
    device="cpu",
    cache: EmbeddingCache | None = None,
    uri: str | None = None,
) -> tuple[CatalogueIndex, list]:
    """Rank ``rank`` of ``world_size`` adds its slice of the catalogue to one index.

    The first rank to arrive creates the index in place (under the lock); every rank
    then adds every ``world_size``-th recording, committing as it goes, so a re-run of a
    rank resumes its slice. There is no swap: ``overwrite`` is refused.
    """
    if overwrite:
        raise ValueError(
            "a sharded build (world size > 1) adds to one index in place; "
            "remove the old index first instead of --overwrite"
        )
    root = Path(index_dir)
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(fs.lock_path(root)):
        fs.recover(root)
        if not (root / "meta.json").is_file():
            fs.replaceable(root, False)
            CatalogueIndex.create(root, lm, _windowing(lm), backend, uri=uri)
    idx = CatalogueIndex.load(root)
    tracks = rank_slice(_build_tracks(dataset, folder), rank, world_size)
    log.info("rank %d of %d: %d recordings", rank, world_size, len(tracks))
    failed = idx.add(lm, tracks, device, cache=cache)
    return CatalogueIndex.load(root), failed


def _windowing(lm: LoadedModel) -> Windowing:
    cfg = lm.config
    return Windowing.from_config(cfg.eval, cfg.features.frames_per_second, cfg.data.mean_size)


__all__ = [
    "CatalogueIndex",
    "build_index",
    "build_shard",
    "BACKENDS",
    "APPROX_MIN_VECTORS",
    "FORMAT",
]
