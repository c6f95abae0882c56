"""faiss search over the index folder: exact (flat), HNSW, or IVF-PQ, grown in place.

Which kind ``backend="auto"`` picks, by the number of chunk vectors ``n``:

==================  ==========  =========================================================
n                   kind        why
==================  ==========  =========================================================
< 200,000           exact       a matrix product over the float vectors is fast enough
200,000 - 2,000,000 hnsw        ~0.8 KB/vector (floats + graph); best recall per ms
>= 2,000,000        ivfpq       ~41 B/vector (32 B codes, id); shortlist re-scored exactly
==================  ==========  =========================================================

The approximate index is one file (``ann.faiss``; compaction writes a new name) whose
vector ids are the index's row numbers (faiss numbers vectors in the order they are
added). ``add`` appends the new
rows to it (HNSW inserts into the graph, IVF-PQ encodes against its trained
quantisers) instead of rebuilding; only compaction or a change of kind rebuilds.
Removed rows are not deleted from it: the catalogue filters them (tombstones).

:class:`FaissBackend` is the :class:`~coverhunter.index.backend.Backend` of an ``hnsw`` or
``ivfpq`` index: it appends to that file, rebuilds it at compaction and searches it (rows
committed after the file was last written are searched exactly). The functions below it
(``build_ann``, ``append``, ``search_ann``, ...) work on a faiss index alone, HNSW and
IVF-PQ side by side: they differ only in how an index is made (``new_hnsw``,
``new_ivfpq``) and searched (``efSearch``; ``nprobe`` and a re-scored shortlist).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils import atomic_write  # (path, writer of a temporary path)
from .results import CatalogueError
from .search import RowView, clean_shortlist, exact_search, fetch_size

log = logging.getLogger(__name__)

EXACT_MAX = 200_000  # "auto": exact search below this many chunk vectors
HNSW_MAX = 2_000_000  # "auto": HNSW below this many, IVF-PQ from here on
KINDS = ("exact", "hnsw", "ivfpq")
ANN_FILE = "ann.faiss"
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
IVF_PROBE_SHARE = 8  # a query visits 1/8 of the inverted lists (at least IVF_MIN_PROBE)
IVF_MIN_PROBE = 128  # 0.96 recall@10 at 10^6 clustered vectors (1,024 lists); 64 gave 0.91
IVF_TRAIN_PER_LIST = 50  # k-means sample: this many vectors per list (faiss wants >= 39)
PQ_TRAIN_MIN = 10_000  # and at least this many: 39 per code of an 8-bit sub-quantiser
RESCORE = 4  # IVF-PQ: the shortlist is this many times k, re-scored with the float vectors
FLUSH_SHARE = 0.25  # an add writes the faiss file once this share of it is unsaved (and at its end)


def choose_kind(backend: str, n_vectors: int) -> str:
    """The faiss kind for a backend setting and an index size (see the module table)."""
    if backend in KINDS:
        return backend
    if backend != "auto":
        raise ValueError(f"not a faiss backend: {backend!r} (use auto, {', '.join(KINDS)})")
    if n_vectors < EXACT_MAX:
        return "exact"
    return "hnsw" if n_vectors < HNSW_MAX else "ivfpq"


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise CatalogueError("approximate search needs faiss: pip install faiss-cpu") from e
    return faiss


def ivf_lists(n_vectors: int) -> int:
    """Inverted lists for ``n_vectors``: a power of two near sqrt(n), with >= 39 per list."""
    n_lists = 2 ** round(math.log2(max(1.0, math.sqrt(n_vectors))))
    return int(max(1, min(n_lists, n_vectors // 39)))


def _pq_shape(dim: int, n_train: int) -> tuple[int, int]:
    """(sub-quantisers, bits each): 4 dimensions per 8-bit code, fewer bits on tiny samples."""
    m = max(1, dim // 4)
    while dim % m:
        m -= 1
    return m, int(max(1, min(8, math.floor(math.log2(max(2, n_train))))))


def new_hnsw(dim: int):
    """An empty HNSW graph over inner products (the vectors are unit length)."""
    faiss = _faiss()
    ann = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    ann.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    return ann


def new_ivfpq(sample: np.ndarray, n_expected: int):
    """An IVF-PQ index trained once on ``sample`` (n, dim), sized for ``n_expected`` vectors."""
    faiss = _faiss()
    dim = sample.shape[1]
    n_lists = ivf_lists(n_expected)
    m, bits = _pq_shape(dim, len(sample))
    quantizer = faiss.IndexFlatIP(dim)
    ann = faiss.IndexIVFPQ(quantizer, dim, n_lists, m, bits, faiss.METRIC_INNER_PRODUCT)
    ann.train(np.ascontiguousarray(sample, dtype=np.float32))
    return ann


def training_sample(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """Rows to train IVF-PQ on: ``IVF_TRAIN_PER_LIST`` per list, at most all of them."""
    n = len(vectors)
    want = min(n, max(PQ_TRAIN_MIN, IVF_TRAIN_PER_LIST * ivf_lists(n)))
    rows = np.sort(np.random.default_rng(seed).choice(n, want, replace=False))
    return np.asarray(vectors[rows], dtype=np.float32)


def build_ann(kind: str, vectors: np.ndarray):
    """A new approximate index of ``kind`` holding ``vectors`` (n, dim) as ids 0..n-1."""
    if kind == "hnsw":
        ann = new_hnsw(vectors.shape[1])
    elif kind == "ivfpq":
        ann = new_ivfpq(training_sample(vectors), len(vectors))
    else:
        raise ValueError(f"no approximate index for kind {kind!r}")
    append(ann, vectors)
    return ann


def append(ann, vectors: np.ndarray, block: int = 100_000) -> None:
    """Add ``vectors`` (n, dim) after the ones ``ann`` holds (ids continue from ntotal)."""
    for i in range(0, len(vectors), block):
        ann.add(np.ascontiguousarray(vectors[i : i + block], dtype=np.float32))


def kind_of(ann) -> str:
    """``ivfpq`` or ``hnsw``, for an index made by :func:`build_ann` or :func:`load_ann`."""
    return "ivfpq" if isinstance(ann, _faiss().IndexIVFPQ) else "hnsw"


def save_ann(ann, path: Path) -> None:
    """Write the approximate index atomically (readers see the old file or the new one)."""
    faiss = _faiss()
    atomic_write(Path(path), lambda tmp: faiss.write_index(ann, str(tmp)))


def load_ann(path: Path):
    """The approximate index stored at ``path``, or None when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    faiss = _faiss()
    try:
        ann = faiss.read_index(str(path))
    except RuntimeError as e:
        raise CatalogueError(f"{path}: damaged ({str(e).splitlines()[0]})") from e
    return ann  # typed (IndexHNSWFlat / IndexIVFPQ): downcasting again would free it


def search_ann(ann, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw ``(similarities (m, k), ids (m, k))`` of an HNSW or IVF-PQ index; -1 pads."""
    faiss = _faiss()
    if isinstance(ann, faiss.IndexIVF):
        ann.nprobe = min(ann.nlist, max(IVF_MIN_PROBE, ann.nlist // IVF_PROBE_SHARE))
        k = min(ann.ntotal, k * RESCORE)
    else:
        ann.hnsw.efSearch = max(HNSW_EF_SEARCH, k)
    return ann.search(np.ascontiguousarray(q, dtype=np.float32), max(1, k))


def ann_file_name(shard: str) -> str:
    """The faiss file a compaction writing ``shard`` gives the index (``meta["ann_file"]``)."""
    return f"ann_{shard}.faiss"


def ann_path(index) -> Path:
    """The faiss file of ``index`` (a :class:`~coverhunter.index.CatalogueIndex`): its
    ``meta["ann_file"]``, or ``ann.faiss`` for an index never compacted."""
    return index.root / index.meta.get("ann_file", ANN_FILE)


@dataclass
class FaissWriter:
    """The faiss index one ``add`` appends to, kept in memory between its groups.

    Attributes
    ----------
    name : str
        The file it belongs to (``meta["ann_file"]`` when it was made).
    ann : faiss.Index
        HNSW or IVF-PQ, holding rows ``0..ann.ntotal - 1``.
    saved : int
        Rows the file on disk holds (``ann.ntotal`` once written).
    """

    name: str
    ann: object
    saved: int

    def save(self, root: Path) -> None:
        """Write the rows not on disk yet (atomically, the whole file)."""
        if self.ann.ntotal > self.saved:
            save_ann(self.ann, Path(root) / self.name)
            self.saved = self.ann.ntotal


class FaissBackend:
    """An ``hnsw`` or ``ivfpq`` index's engine: the faiss file in its folder
    (:func:`ann_path`), whose ids are row numbers.

    The file may lag behind ``meta.json`` (an add writes it at its end, or once
    ``FLUSH_SHARE`` of it is unsaved; a killed add leaves it short): searches cover the
    lagging rows exactly and the next add appends them. Its state lives on the index
    object, so that it outlasts the re-reads of ``meta.json`` between an add's groups:
    ``index._writer`` (a :class:`FaissWriter`, the add's) and ``index._ann`` (the file as
    searches read it, dropped on each re-read).

    Parameters
    ----------
    index : CatalogueIndex
    kind : str
        ``hnsw`` or ``ivfpq``: the kind an index this engine makes takes (a file that is
        read keeps its own kind).
    """

    def __init__(self, index, kind: str):
        self.index, self.kind = index, kind

    def append(self, vectors: np.ndarray, first_row: int) -> None:
        """Append ``vectors`` as rows ``first_row..`` (under the lock, before the commit).

        The first approximate index, a change of kind (an ``auto`` catalogue outgrew its
        kind) or a file longer than ``meta.json`` says (a killed writer's) builds the
        index once from every row; otherwise rows committed without it (a killed add) are
        caught up with and ``vectors`` appended. The file is written once ``FLUSH_SHARE``
        of it is unsaved, never in a build's private folder (its end writes it).
        """
        idx = self.index
        ann = self._writer_ann(first_row)
        if ann is None:
            log.info(
                "%s: building the %s index over %d vectors", idx.root, self.kind, first_row + len(vectors)
            )
            ann = build_ann(self.kind, RowView([*idx.row_view().parts, vectors], vectors.shape[1]))
            idx._writer = FaissWriter(ann_path(idx).name, ann, 0)
        else:
            append(ann, np.concatenate([idx.row_view()[ann.ntotal : first_row], vectors]))
        if idx._lock_root is not None and ann.ntotal - idx._writer.saved >= ann.ntotal * FLUSH_SHARE:
            idx._writer.save(idx.root)

    def _writer_ann(self, first_row: int):
        """The faiss index to append to: kept from this add's last group, else the file;
        None when neither holds a prefix of the rows before ``first_row`` in this kind."""
        idx = self.index
        name = ann_path(idx).name
        w = idx._writer
        if w is None or w.name != name or w.ann.ntotal > first_row:
            ann = load_ann(ann_path(idx))
            idx._writer = w = None if ann is None else FaissWriter(name, ann, ann.ntotal)
        if w is None or kind_of(w.ann) != self.kind or w.ann.ntotal > first_row:
            return None
        return w.ann

    def remove(self, rows: np.ndarray) -> None:
        """Nothing: removed rows stay in the file (searches skip them) until compaction."""

    def rebuild(self, vectors: np.ndarray, shard: str) -> dict:
        """A new file of ``vectors`` under a name of its own (compaction, before the
        commit); returns the ``meta.json`` entry naming it."""
        name = ann_file_name(shard)
        if len(vectors):
            save_ann(build_ann(self.kind, vectors), self.index.root / name)
        return {"ann_file": name}

    def loaded(self):
        """The faiss index searches read: the file, or (none on disk) one of ``kind``
        built in memory from the shards; kept until ``meta.json`` is read again."""
        idx = self.index
        if idx._ann is None:
            ann = load_ann(ann_path(idx))
            if ann is None:
                log.info("%s: no %s index on disk; building one in memory", idx.root, self.kind)
                ann = build_ann(self.kind, idx.row_view())
            idx._ann = ann
        return idx._ann

    def search(self, q: np.ndarray, k: int, dead: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` live rows: the file's shortlist (re-scored from the float vectors
        for IVF-PQ), and the rows it lacks searched exactly."""
        idx = self.index
        ann = self.loaded()
        sims, rows = search_ann(ann, q, fetch_size(k, dead))
        if ann.ntotal < len(dead):  # rows the last writer has not written into the file yet
            view = idx.row_view()
            t_sims, t_rows = exact_search(
                q, view[ann.ntotal : len(dead)], dead[ann.ntotal :], min(k, len(dead) - ann.ntotal)
            )
            sims = np.concatenate([sims, t_sims], 1)
            rows = np.concatenate([rows, np.where(t_rows >= 0, t_rows + ann.ntotal, -1)], 1)
        rescore = idx.row_view() if kind_of(ann) == "ivfpq" else None
        return clean_shortlist(q, sims, rows, k, dead=dead, n_rows=len(dead), vectors=rescore)


__all__ = [
    "FaissBackend",
    "FaissWriter",
    "ann_path",
    "ann_file_name",
    "EXACT_MAX",
    "HNSW_MAX",
    "KINDS",
    "choose_kind",
    "build_ann",
    "append",
    "save_ann",
    "load_ann",
    "search_ann",
    "kind_of",
    "ivf_lists",
]
