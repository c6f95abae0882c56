"""Recurrence-voting first stage: the alignment's own primitive, searched at catalogue scale.

The chroma alignment (:mod:`coverhunter.classical`: cross-recurrence and Qmax) finds a
cover through many short passages that recur, one after the other, along a diagonal of
the cross-recurrence plot. This index finds the same evidence without comparing every
pair of recordings:

1. every catalogue recording's chroma (T, 12) is delay-embedded into shingles of ``m``
   stacked frames (:func:`coverhunter.classical.delay_embed`), every ``stride``-th kept;
2. each shingle is *key-normalised*: rolled in pitch so that the pitch class with the
   largest summed chroma comes first, so that a transposed passage finds its original
   in one search (``transpositions="canonical"``; ``query_keys`` > 1 also searches the
   query shingle rolled to its next strongest pitch classes); ``"all"`` searches the 12
   rolls of every query shingle instead (12 times the cost); the roll of every
   catalogue shingle is kept (one byte), so each match knows its transposition
   (query roll minus catalogue roll);
3. shingles are centred (``centre``: each frame minus its mean over the 12 pitch
   classes, so the cosine is a correlation and a flat, noisy or dense shingle is no
   longer close to everything), L2-normalised and put in a faiss inner-product index
   (exact below ``exact_max`` shingles, HNSW above);
4. each query shingle at frame ``i`` finds its ``neighbours`` nearest catalogue shingles
   (recording ``r``, frame ``j``) and votes for the pair (``r``, band of ``i - s j``) for
   each tempo ratio ``s`` in ``slopes``; bands are ``band`` frames wide and a second
   set of bands shifted by half a band catches diagonals that straddle a border;
5. a recording's score is the vote total of its best (transposition, band, slope):
   passages that recur in order along one diagonal, in one key, count; chance matches
   scattered over offsets and keys do not (``key_groups=False``: any key).

Votes are weighted (``vote``): ``"count"`` (1 each), ``"rank"`` (``1 / (1 + rank)``
among the query shingle's neighbours) or ``"margin"`` (how far the neighbour's
similarity stands above the query shingle's last neighbour, relative to its first:
``(s - s_k) / (s_1 - s_k)``). With ``hub_power`` p > 0, each weight is also multiplied
by the catalogue shingle's inverse hubness, ``(1 + h / E) ** -p``, where ``h`` counts how
often the shingle is among the neighbours of a sample of other catalogue shingles and
``E`` is that count's mean: a shingle near everything (a held chord, silence) votes
for no-one in particular.

Shapes: chroma (T, 12) at 2.5 frames per second, each frame max-normalised; a shingle
is ``12 m`` values (``m = 7``: 2.8 s).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

from coverhunter import classical

log = logging.getLogger(__name__)

N_CHROMA = classical.N_CHROMA
PARAMS_FILE, META_FILE, INDEX_FILE = "params.json", "meta.npz", "shingles.faiss"
TRANSPOSITIONS = ("canonical", "all")
CENTRES = ("none", "frame", "shingle")
VOTES = ("count", "rank", "margin")


@dataclass(frozen=True)
class RecurrenceParams:
    """Settings of a :class:`RecurrenceIndex` (frames are chroma frames, 2.5 per second).

    The defaults were chosen on the two training-type corpora only (``tune-mix-w60-s1000``
    and ``-s1001``, ~370 recordings each, view c3; ``benchmarks/bench_first_stage.py``),
    recall@50 of every recording against the rest. From the first key-normalised index
    (m 7, tau 1, 30 neighbours, plain counts in 2.4 s bands: 0.36 / 0.34), each step on
    tune1001 (tune1000 agreed): hubness weighting (power 1; 2 was no better) +0.06,
    one vote per query shingle and band +0.03, frame centring +0.02, tau 2 (5.2 s of
    context in 84 values; m 10 or 14 at tau 1 did as well at 1.5-2.5 times the cost)
    +0.03, 16-frame bands over five tempo ratios (against 6-frame bands at ratio 1)
    +0.025, the match's transposition as a vote group +0.015, two query keys +0.026
    (three: another +0.02 at 1.6 times the cost). All together 0.57 / 0.51 against
    0.36 / 0.32 for the 2D Fourier summary and 0.67 / 0.64 for all-pairs alignment. Rank
    and margin votes lost to counts once hubs were weighted; dividing by the
    recording's length was neutral; stride 2 halves the memory and loses 0.02.

    Attributes
    ----------
    m, tau : int
        Delay embedding: ``m`` frames, ``tau`` apart, per shingle.
    stride : int
        Every ``stride``-th catalogue shingle is indexed (queries use all of theirs).
    neighbours : int
        Nearest catalogue shingles per query shingle.
    band : int
        Width of a time-offset band in frames.
    slopes : tuple of float
        Tempo ratios (query frames per catalogue frame) voted for; ``(1.0,)`` is plain
        offset voting.
    transpositions : str
        ``"canonical"`` (key-normalised shingles, one search) or ``"all"`` (12 rolls of
        each query shingle against unrolled catalogue shingles; the best band of any
        transposition counts).
    centre : str
        ``"frame"``: each frame of a shingle minus its mean over pitch classes;
        ``"shingle"``: the shingle minus its mean; ``"none"``.
    query_keys : int
        ``canonical``: each query shingle is searched rolled to its ``query_keys``
        strongest pitch classes (1: its canonical form only).
    key_groups : bool
        Votes of different transpositions (query roll minus catalogue roll) never share
        a band.
    vote : str
        ``"count"``, ``"rank"`` or ``"margin"`` (see the module docstring).
    hub_power : float
        Votes are weighed by ``(1 + hubness) ** -hub_power`` (0: not at all).
    one_vote : bool
        A query shingle votes at most once per (recording, band): its best neighbour
        there (adjacent overlapping catalogue shingles otherwise all vote).
    length_power : float
        A recording's score is divided by its shingle count to this power.
    exact_max : int
        Above this many catalogue shingles the index becomes HNSW.
    hnsw_m, ef_search, ef_construction : int
        HNSW graph degree and search / build breadth.
    float16 : bool
        Store vectors as float16 (faiss scalar quantiser): half the memory.
    hub_probes : int
        Catalogue shingles sampled to count hubness (``hub_power > 0``).
    """

    m: int = 7
    tau: int = 2
    stride: int = 1
    neighbours: int = 100
    band: int = 16
    slopes: tuple = (0.8, 0.9, 1.0, 1.1, 1.25)
    transpositions: str = "canonical"
    centre: str = "frame"
    query_keys: int = 2
    key_groups: bool = True
    vote: str = "count"
    hub_power: float = 1.0
    one_vote: bool = True
    length_power: float = 0.0
    exact_max: int = 200_000
    hnsw_m: int = 32
    ef_search: int = 128
    ef_construction: int = 80
    float16: bool = False
    hub_probes: int = 20_000

    def __post_init__(self):
        if min(self.m, self.tau, self.stride, self.neighbours, self.band, self.query_keys) < 1:
            raise ValueError(f"m, tau, stride, neighbours and band must be >= 1: {self}")
        if self.transpositions not in TRANSPOSITIONS:
            raise ValueError(f"transpositions must be one of {TRANSPOSITIONS}, got {self.transpositions!r}")
        if self.centre not in CENTRES:
            raise ValueError(f"centre must be one of {CENTRES}, got {self.centre!r}")
        if self.vote not in VOTES:
            raise ValueError(f"vote must be one of {VOTES}, got {self.vote!r}")
        if not self.slopes or any(s <= 0 for s in self.slopes):
            raise ValueError(f"slopes must be positive tempo ratios, got {self.slopes}")
        object.__setattr__(self, "slopes", tuple(float(s) for s in self.slopes))

    @property
    def dim(self) -> int:
        """Length of one shingle vector: ``12 m``."""
        return N_CHROMA * self.m

    @property
    def span(self) -> int:
        """Chroma frames one shingle covers: ``(m - 1) tau + 1``."""
        return (self.m - 1) * self.tau + 1


# ---------------------------------------------------------------------------
# pure functions: shingles, key normalisation, voting


def shingles(chroma: np.ndarray, m: int, tau: int = 1) -> np.ndarray:
    """Delay-embedded chroma: (T - (m-1) tau, 12 m) float32; empty when T is too short.

    Unlike :func:`coverhunter.classical.delay_embed`, a recording shorter than one
    shingle gives no rows (nothing to match) instead of a zero-padded one.
    """
    x = np.asarray(chroma, np.float32)
    if x.ndim != 2 or x.shape[1] != N_CHROMA:
        raise ValueError(f"chroma must have shape (T, {N_CHROMA}), got {x.shape}")
    if len(x) < (m - 1) * tau + 1:
        return np.zeros((0, N_CHROMA * m), np.float32)
    return classical.delay_embed(x, m, tau)


def roll_shingles(x: np.ndarray, shift: np.ndarray | int) -> np.ndarray:
    """Shingles (n, 12 m) with every frame rolled by ``shift`` pitch classes (scalar or (n,)):
    ``out[., f, p] = x[., f, (p + shift) % 12]``."""
    n, d = x.shape
    frames = x.reshape(n, d // N_CHROMA, N_CHROMA)
    cols = (np.arange(N_CHROMA)[None, :] + np.reshape(shift, (-1, 1))) % N_CHROMA  # (n or 1, 12)
    cols = np.broadcast_to(cols[:, None, :], (n, d // N_CHROMA, N_CHROMA))
    return np.take_along_axis(frames, cols, axis=2).reshape(n, d)


def canonical_shift(x: np.ndarray) -> np.ndarray:
    """Each shingle's key: the pitch class with the largest chroma summed over its frames, (n,)."""
    n, d = x.shape
    return x.reshape(n, d // N_CHROMA, N_CHROMA).sum(1).argmax(1)


def centred(x: np.ndarray, centre: str) -> np.ndarray:
    """Shingles (n, 12 m) minus each frame's mean (``"frame"``), each shingle's mean
    (``"shingle"``), or unchanged (``"none"``)."""
    if centre == "none" or not len(x):
        return x
    n, d = x.shape
    if centre == "shingle":
        return x - x.mean(1, keepdims=True)
    frames = x.reshape(n, d // N_CHROMA, N_CHROMA)
    return (frames - frames.mean(2, keepdims=True)).reshape(n, d)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero), float32."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norm > 1e-12, norm, 1.0)).astype(np.float32)


def key_candidates(x: np.ndarray, n: int) -> np.ndarray:
    """Each shingle's ``n`` strongest pitch classes (summed over its frames), strongest
    first: (rows, n) int."""
    rows, d = x.shape
    summed = x.reshape(rows, d // N_CHROMA, N_CHROMA).sum(1)
    return np.argsort(-summed, axis=1, kind="stable")[:, :n]


def prepare(x: np.ndarray, canonical: bool, centre: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """Shingles as indexed: (centred unit-length vectors (n, 12 m), rolls (n,) uint8),
    key-normalised (each rolled by its canonical shift) when ``canonical``."""
    shift = canonical_shift(x) if canonical and len(x) else np.zeros(len(x), np.int64)
    if canonical and len(x):
        x = roll_shingles(x, shift)
    return l2_normalise(centred(x, centre)), shift.astype(np.uint8)


def vote_weights(
    sims: np.ndarray, ids: np.ndarray, vote: str, hub_weight: np.ndarray | None = None
) -> np.ndarray:
    """Weight of each neighbour's vote, (n, k) float64; missing neighbours (id -1) weigh 0.

    Parameters
    ----------
    sims, ids : np.ndarray, shape (n, k)
        faiss results (inner products of unit vectors), best first.
    vote : str
        ``"count"``, ``"rank"`` or ``"margin"``.
    hub_weight : np.ndarray, shape (n_shingles,), optional
        Inverse hubness of every catalogue shingle, multiplied in.
    """
    n, k = ids.shape
    ok = ids >= 0
    if vote == "count":
        w = np.ones((n, k))
    elif vote == "rank":
        w = np.broadcast_to(1.0 / (1.0 + np.arange(k)), (n, k)).copy()
    elif vote == "margin":
        s = np.where(ok, sims, np.nan).astype(np.float64)
        last = np.nanmin(s, axis=1, keepdims=True) if k else s
        first = s[:, :1]
        w = np.nan_to_num((s - last) / np.maximum(first - last, 1e-6), nan=0.0) + 1.0 / k
    else:
        raise ValueError(f"unknown vote {vote!r}")
    if hub_weight is not None:
        w *= hub_weight[np.maximum(ids, 0)]
    w[~ok] = 0.0
    return w


def band_scores(
    n_tracks: int,
    track: np.ndarray,
    q_frame: np.ndarray,
    c_frame: np.ndarray,
    weight: np.ndarray,
    group: np.ndarray,
    slopes: tuple,
    band: int,
    one_vote: bool = False,
) -> np.ndarray:
    """Each recording's best offset-band vote total, (n_tracks,) float64.

    Parameters
    ----------
    n_tracks : int
    track, q_frame, c_frame, weight, group : np.ndarray, shape (v,)
        One entry per vote: the catalogue recording, the query shingle's frame, the
        catalogue shingle's frame, the vote's weight, and a group (the query
        transposition: votes of different groups never share a band).
    slopes : tuple of float
        Tempo ratios; the band of a vote is ``floor((q - s c) / band)`` (and of the
        half-band-shifted grid).
    band : int
        Band width in frames.
    one_vote : bool
        A query shingle (frame and group) counts once per band: its best vote there.
    """
    best = np.zeros(n_tracks)
    if len(track) == 0:
        return best
    n_groups = int(group.max()) + 1
    qf = q_frame.astype(np.int64)
    n_q = int(qf.max()) + 1
    for s in slopes:
        offset = q_frame - s * c_frame
        for shift in (0.0, 0.5):
            b = np.floor(offset / band + shift).astype(np.int64)
            b -= b.min()
            n_b = int(b.max()) + 1
            key = (track.astype(np.int64) * n_groups + group) * n_b + b
            w = weight
            if one_vote:  # the best vote of each (query shingle, band)
                sub = key * n_q + qf
                order = np.lexsort((-w, sub))
                first = np.ones(len(sub), bool)
                first[1:] = sub[order][1:] != sub[order][:-1]
                key, w = key[order][first], w[order][first]
            uniq, inv = np.unique(key, return_inverse=True)
            total = np.bincount(inv, weights=w)
            np.maximum.at(best, uniq // (n_groups * n_b), total)
    return best


# ---------------------------------------------------------------------------
# faiss index construction


def make_faiss_index(dim: int, n: int, p: RecurrenceParams) -> faiss.Index:
    """An empty inner-product index for ``n`` vectors: flat up to ``p.exact_max``, HNSW beyond."""
    metric = faiss.METRIC_INNER_PRODUCT
    if n <= p.exact_max:
        if p.float16:
            return faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, metric)
        return faiss.IndexFlatIP(dim)
    if p.float16:
        index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, p.hnsw_m, metric)
    else:
        index = faiss.IndexHNSWFlat(dim, p.hnsw_m, metric)
    index.hnsw.efConstruction = p.ef_construction
    index.hnsw.efSearch = p.ef_search
    return index


def is_hnsw(index: faiss.Index) -> bool:
    return isinstance(index, (faiss.IndexHNSWFlat, faiss.IndexHNSWSQ))


def search_params(index: faiss.Index, p: RecurrenceParams, exclude: tuple[int, int] | None):
    """faiss search parameters leaving out the id range ``exclude`` (start, end), or None."""
    if exclude is None and not is_hnsw(index):
        return None
    sel = None
    if exclude is not None:
        sel = faiss.IDSelectorNot(faiss.IDSelectorRange(int(exclude[0]), int(exclude[1])))
    if is_hnsw(index):
        sp = faiss.SearchParametersHNSW(sel=sel, efSearch=max(p.ef_search, p.neighbours))
    else:
        sp = faiss.SearchParameters(sel=sel)
    sp._keep = sel  # the selector must outlive the search
    return sp


# ---------------------------------------------------------------------------
# the index


class RecurrenceIndex:
    """Catalogue of delay-embedded chroma shingles, searched by recurrence voting.

    Parameters
    ----------
    params : RecurrenceParams

    Examples
    --------
    >>> idx = RecurrenceIndex()
    >>> idx.add(["a", "b"], [chroma_a, chroma_b])          # doctest: +SKIP
    >>> ids, scores = idx.search(query_chroma, k=50)      # doctest: +SKIP
    """

    def __init__(self, params: RecurrenceParams = RecurrenceParams()):
        self.params = params
        self.track_ids = np.zeros(0, np.int64)  # (n_tracks,)
        self.starts = np.zeros(1, np.int64)  # (n_tracks + 1,): shingle id ranges
        self.rolls = np.zeros(0, np.uint8)  # (n_shingles,): each shingle's key roll
        self.index = make_faiss_index(params.dim, 0, params)
        self.hubness: np.ndarray | None = None  # (n_shingles,), float32: h / E

    # -- sizes -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.track_ids)

    @property
    def n_shingles(self) -> int:
        return int(self.index.ntotal)

    def memory_report(self) -> dict:
        """Bytes held: faiss index (serialised size), id ranges and rolls, hubness (counted
        before it is computed, at the first search); in all and per recording."""
        index_bytes = int(faiss.serialize_index(self.index).nbytes) if self.n_shingles else 0
        meta = self.track_ids.nbytes + self.starts.nbytes + self.rolls.nbytes
        hub = 4 * self.n_shingles if self.params.hub_power or self.hubness is not None else 0  # float32
        total = index_bytes + meta + hub
        return {
            "recordings": len(self),
            "shingles": self.n_shingles,
            "kind": "hnsw" if is_hnsw(self.index) else "exact",
            "index_bytes": index_bytes,
            "meta_bytes": int(meta),
            "hub_bytes": int(hub),
            "total_bytes": int(total),
            "bytes_per_recording": total / max(1, len(self)),
        }

    # -- building ----------------------------------------------------------

    def _catalogue_vectors(self, chroma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        x = shingles(chroma, p.m, p.tau)[:: p.stride]
        return prepare(x, p.transpositions == "canonical", p.centre)

    def add(self, track_ids, chromas) -> None:
        """Add recordings.

        Parameters
        ----------
        track_ids : sequence of int or str, length n
        chromas : sequence of np.ndarray, each (T_i, 12)
            A recording shorter than one shingle is kept (it is never found).
        """
        track_ids, chromas = list(track_ids), list(chromas)
        if len(track_ids) != len(chromas):
            raise ValueError(f"{len(track_ids)} track ids for {len(chromas)} chromas")
        if not track_ids:
            return
        prepared = [self._catalogue_vectors(c) for c in chromas]
        vecs = [v for v, _ in prepared]
        counts = np.array([len(v) for v in vecs], np.int64)
        new_ids = np.asarray(track_ids)
        if len(self) and new_ids.dtype.kind != self.track_ids.dtype.kind:
            raise ValueError(f"track ids of kind {new_ids.dtype} added to ids of kind {self.track_ids.dtype}")
        self.track_ids = np.concatenate([self.track_ids, new_ids]) if len(self) else new_ids
        self.starts = np.concatenate([self.starts, self.starts[-1] + np.cumsum(counts)])
        self.rolls = np.concatenate([self.rolls] + [r for _, r in prepared])
        self._grow(self.n_shingles + int(counts.sum()))
        if counts.sum():
            self.index.add(np.concatenate(vecs))
        self.hubness = None  # stale: recomputed at the next search that needs it
        log.debug("added %d recordings (%d shingles); %d in all", len(counts), counts.sum(), self.n_shingles)

    def _grow(self, total: int) -> None:
        """Switch from exact to HNSW when ``total`` shingles pass ``exact_max``."""
        if is_hnsw(self.index) or total <= self.params.exact_max:
            return
        new = make_faiss_index(self.params.dim, total, self.params)
        if self.n_shingles:
            new.add(self.index.reconstruct_n(0, self.n_shingles))
        log.info("recurrence index: %d shingles, exact -> HNSW", total)
        self.index = new

    def hub_counts(self) -> np.ndarray:
        """Hubness of every catalogue shingle (n_shingles,): how often it is among the
        ``neighbours`` nearest of a sample of ``hub_probes`` catalogue shingles of other
        recordings, over the mean count. Computed once (one search per probe), then kept."""
        if self.hubness is not None and len(self.hubness) == self.n_shingles:
            return self.hubness
        p, n = self.params, self.n_shingles
        rng = np.random.default_rng(0)
        probes = np.sort(rng.choice(n, size=min(n, p.hub_probes), replace=False))
        x = self.index.reconstruct_batch(probes)
        k = min(p.neighbours + 1, n)
        _, ids = self.index.search(x, k, params=search_params(self.index, p, None))
        owner = np.searchsorted(self.starts, probes, side="right") - 1
        ids_owner = np.searchsorted(self.starts, np.maximum(ids, 0), side="right") - 1
        keep = (ids >= 0) & (ids_owner != owner[:, None])  # neighbours in other recordings
        h = np.bincount(ids[keep], minlength=n).astype(np.float64)
        expected = max(h.mean(), 1e-12)
        self.hubness = (h / expected).astype(np.float32)
        return self.hubness

    # -- searching ---------------------------------------------------------

    def query_vectors(self, chroma: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The vectors a query searches with: (vectors (v, 12 m), frame (v,), roll (v,)).

        ``canonical``: each query shingle rolled to its ``query_keys`` strongest pitch
        classes; ``all``: its 12 rolls. ``roll`` is how far each vector was rolled.
        """
        p = self.params
        x = shingles(chroma, p.m, p.tau)
        frames = np.arange(len(x), dtype=np.float64)
        if p.transpositions == "canonical":
            keys = key_candidates(x, p.query_keys) if len(x) else np.zeros((0, p.query_keys), np.int64)
            xc = centred(x, p.centre)
            vecs = [l2_normalise(roll_shingles(xc, keys[:, r])) for r in range(p.query_keys)]
            rolls = keys.T.ravel()
        else:
            xc = l2_normalise(centred(x, p.centre))
            vecs = [roll_shingles(xc, r) for r in range(N_CHROMA)]
            rolls = np.repeat(np.arange(N_CHROMA), len(x))
        n_rolls = len(vecs)
        return np.concatenate(vecs), np.tile(frames, n_rolls), rolls.astype(np.int64)

    def neighbours(self, vectors: np.ndarray, exclude: tuple[int, int] | None = None):
        """faiss search: (similarities (v, k), shingle ids (v, k)), -1 where none."""
        k = min(self.params.neighbours, self.n_shingles)
        return self.index.search(vectors, k, params=search_params(self.index, self.params, exclude))

    def scores_from_neighbours(
        self,
        sims: np.ndarray,
        ids: np.ndarray,
        frames: np.ndarray,
        rolls: np.ndarray,
        params: RecurrenceParams | None = None,
    ) -> np.ndarray:
        """Every recording's score (n_tracks,) from a query's neighbour lists.

        ``params`` may change the voting settings (vote, band, slopes, length_power,
        and fewer neighbours than were searched) without searching again.
        """
        p = params or self.params
        sims, ids = sims[:, : p.neighbours], ids[:, : p.neighbours]
        hub = (1.0 + self.hub_counts()) ** -p.hub_power if p.hub_power else None
        w = vote_weights(sims, ids, p.vote, hub)
        ok = ids >= 0
        sid = ids[ok]
        track = np.searchsorted(self.starts, sid, side="right") - 1
        c_frame = ((sid - self.starts[track]) * self.params.stride).astype(np.float64)
        q_frame = np.broadcast_to(frames[:, None], ids.shape)[ok]
        if p.key_groups:  # the match's transposition: query roll minus catalogue roll
            roll = np.broadcast_to(rolls[:, None], ids.shape)[ok]
            group = (roll - self.rolls[sid].astype(np.int64)) % N_CHROMA
        else:
            group = np.zeros(len(sid), np.int64)
        score = band_scores(len(self), track, q_frame, c_frame, w[ok], group, p.slopes, p.band, p.one_vote)
        if p.length_power:
            score /= np.maximum(np.diff(self.starts), 1) ** p.length_power
        return score

    def search(self, query_chroma: np.ndarray, k: int, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best recordings for a query.

        Parameters
        ----------
        query_chroma : np.ndarray, shape (T, 12)
        k : int
        exclude : track id, optional
            A recording left out of the search (the query itself, when it is in the
            catalogue: its own shingles would take neighbour places).

        Returns
        -------
        track_ids : np.ndarray, shape (k',)
            Best first; ``k' <= k``: only recordings that got a vote, none when the
            query is shorter than one shingle.
        scores : np.ndarray, shape (k',), float64
            Best-band vote totals (larger is better).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return self.top(self.scores(query_chroma, exclude), k)

    def scores(self, query_chroma: np.ndarray, exclude=None) -> np.ndarray:
        """Every catalogue recording's score for a query, in catalogue order.

        Parameters
        ----------
        query_chroma : np.ndarray, shape (T, 12)
        exclude : track id, optional
            A recording left out of the search (scores 0), see :meth:`search`.

        Returns
        -------
        np.ndarray, shape (n_tracks,), float64: best-band vote totals (0: no vote; all 0
        when the query is shorter than one shingle).
        """
        if self.n_shingles == 0:
            raise ValueError("the recurrence index is empty: add recordings before searching")
        vectors, frames, rolls = self.query_vectors(query_chroma)
        if len(vectors) == 0:
            log.debug(
                "query of %d frames is shorter than one shingle (%d)", len(query_chroma), self.params.span
            )
            return np.zeros(len(self))
        sims, ids = self.neighbours(vectors, self._id_range(exclude))
        return self.scores_from_neighbours(sims, ids, frames, rolls)

    def _id_range(self, track_id) -> tuple[int, int] | None:
        if track_id is None:
            return None
        where = np.flatnonzero(self.track_ids == track_id)
        if len(where) == 0:
            return None
        t = int(where[0])
        return int(self.starts[t]), int(self.starts[t + 1])

    def top(self, score: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best-scored recordings that got any vote: (track ids, scores), best first."""
        voted = np.flatnonzero(score > 0)
        order = voted[np.argsort(-score[voted], kind="stable")[:k]]
        return self.track_ids[order], score[order]

    # -- persistence -------------------------------------------------------

    def save(self, folder) -> None:
        """Write ``params.json``, ``meta.npz`` and ``shingles.faiss`` to ``folder``, each
        through a temporary name then :func:`os.replace`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"track_ids": self.track_ids, "starts": self.starts, "rolls": self.rolls}
        if self.hubness is not None:
            meta["hubness"] = self.hubness
        _atomic(folder / INDEX_FILE, lambda t: faiss.write_index(self.index, str(t)))
        _atomic(folder / META_FILE, lambda t: _save_npz(t, meta))
        _atomic(folder / PARAMS_FILE, lambda t: Path(t).write_text(json.dumps(asdict(self.params), indent=1)))

    @classmethod
    def load(cls, folder) -> RecurrenceIndex:
        """Inverse of :meth:`save`."""
        folder = Path(folder)
        missing = [f for f in (PARAMS_FILE, META_FILE, INDEX_FILE) if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} is not a recurrence index: missing {missing}")
        raw = json.loads((folder / PARAMS_FILE).read_text())
        raw["slopes"] = tuple(raw.get("slopes", (1.0,)))
        out = cls(RecurrenceParams(**raw))
        with np.load(folder / META_FILE, allow_pickle=False) as z:
            out.track_ids, out.starts, out.rolls = z["track_ids"], z["starts"], z["rolls"]
            out.hubness = z["hubness"] if "hubness" in z else None
        out.index = faiss.read_index(str(folder / INDEX_FILE))
        if is_hnsw(out.index):
            out.index.hnsw.efSearch = out.params.ef_search
        if out.index.ntotal != out.starts[-1]:
            raise ValueError(f"{folder}: index holds {out.index.ntotal} shingles, metadata {out.starts[-1]}")
        return out


def vote_matrix(
    queries: list[np.ndarray],
    refs: list[np.ndarray] | None = None,
    params: RecurrenceParams = RecurrenceParams(),
    verbose: bool = False,
) -> np.ndarray:
    """Recurrence votes of every query for every reference (an evaluation's first stage).

    Parameters
    ----------
    queries : list of np.ndarray, each (T_i, 12)
    refs : list of np.ndarray, each (T_j, 12), optional
        None: the queries are the references (all-vs-all), and each query's own
        recording is left out of its search (its shingles would take neighbour places).
    params : RecurrenceParams
    verbose : bool
        A progress bar over the queries.

    Returns
    -------
    np.ndarray, shape (n_queries, n_refs), float32: vote totals (0: no vote; a query
    against itself in an all-vs-all evaluation: 0).
    """
    symmetric = refs is None
    refs = queries if symmetric else refs
    out = np.zeros((len(queries), len(refs)), np.float32)
    if not len(queries) or not len(refs):
        return out
    index = RecurrenceIndex(params)
    index.add(np.arange(len(refs)), refs)
    if index.n_shingles == 0:
        return out  # every reference shorter than one shingle: nothing to vote for
    for i, q in enumerate(tqdm(queries, desc="recurrence votes", unit="query", disable=not verbose)):
        out[i] = index.scores(q, exclude=i if symmetric else None)
    return out


def _save_npz(path, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _atomic(path: Path, write) -> None:
    """Call ``write(tmp)`` on a temporary name beside ``path``, then move it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


__all__ = [
    "RecurrenceParams",
    "RecurrenceIndex",
    "vote_matrix",
    "shingles",
    "roll_shingles",
    "canonical_shift",
    "centred",
    "l2_normalise",
    "key_candidates",
    "prepare",
    "vote_weights",
    "band_scores",
    "make_faiss_index",
]
