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

Where each part lives (this module gathers their public names):

- :mod:`.store`: :class:`CatalogueIndex`, an index opened: loading and checking,
  ``meta.json`` commits under the lock, reading rows, and the methods callers use;
- :mod:`.writes`: add, remove, compact;
- :mod:`.backend`: the search engines' protocol and choice (:mod:`.exact_backend`,
  :mod:`.faiss_backend`, :mod:`.qdrant_backend`);
- :mod:`.scoring`: from nearest chunk rows to works;
- :mod:`.calibrate`: fitting and applying the calibration (statistics in :mod:`.calibration`);
- :mod:`.build`: :func:`build_index` and :func:`build_shard`;
- :mod:`.folder`: the files, the lock's path, the swap of a build.
"""

from __future__ import annotations

from . import faiss_backend as fb
from . import folder as fs
from .backend import BACKENDS
from .build import build_index, build_shard
from .faiss_backend import FLUSH_SHARE
from .store import CatalogueIndex
from .writes import ADD_GROUP, ALREADY, COMPACT_AT

FORMAT = fs.FORMAT
APPROX_MIN_VECTORS = fb.EXACT_MAX  # "auto" switches to faiss HNSW above this many chunks

__all__ = [
    "CatalogueIndex",
    "build_index",
    "build_shard",
    "BACKENDS",
    "APPROX_MIN_VECTORS",
    "FORMAT",
    "ADD_GROUP",
    "COMPACT_AT",
    "FLUSH_SHARE",
    "ALREADY",
]
