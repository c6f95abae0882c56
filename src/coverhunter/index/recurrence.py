"""Recurrence-voting first stage: the alignment's own primitive, searched at catalogue scale.

The chroma alignment (:mod:`coverhunter.qmax`: cross-recurrence and Qmax) finds a
cover through many short passages that recur, one after the other, along a diagonal of
the cross-recurrence plot. This index finds the same evidence without comparing every
pair of recordings:

1. every catalogue recording's chroma (T, 12) is delay-embedded into shingles of ``m``
   stacked frames (:func:`coverhunter.qmax.delay_embed`), every ``stride``-th kept;
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

The settings (:class:`RecurrenceParams`) and the pure functions of steps 1-5 (shingles,
key normalisation, centring, vote weights, band scores) are in :mod:`.recurrence_maths`
and imported here under the same names; this module holds the faiss index of shingles
(:class:`RecurrenceIndex`), its files, and :func:`vote_matrix`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

from . import recurrence_maths as maths
from .recurrence_maths import (
    N_CHROMA,
    RecurrenceParams,
    band_scores,
    build_settings,
    canonical_shift,
    centred,
    key_candidates,
    l2_normalise,
    prepare,
    resample_time,
    roll_shingles,
    shingles,
    vote_weights,
)

log = logging.getLogger(__name__)

PARAMS_FILE, META_FILE, INDEX_FILE = "params.json", "meta.npz", "shingles.faiss"
TRANSPOSITIONS, CENTRES, VOTES = maths.TRANSPOSITIONS, maths.CENTRES, maths.VOTES  # the settings' choices


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

    def query_vectors(
        self, chroma: np.ndarray, stride: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The vectors a query searches with: (vectors (v, 12 m), frame (v,), roll (v,)).

        ``canonical``: each query shingle rolled to its ``query_keys`` strongest pitch
        classes; ``all``: its 12 rolls. ``roll`` is how far each vector was rolled;
        ``frame`` is the shingle's first frame (every ``stride``-th shingle searches;
        default ``params.query_stride``).
        """
        p = self.params
        stride = p.query_stride if stride is None else int(stride)
        if stride < 1:
            raise ValueError(f"query stride must be >= 1, got {stride}")
        x = shingles(chroma, p.m, p.tau)[::stride]
        frames = np.arange(len(x), dtype=np.float64) * stride
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

    def scores(
        self, query_chroma: np.ndarray, exclude=None, stride: int | None = None, rates: tuple | None = None
    ) -> np.ndarray:
        """Every catalogue recording's score for a query, in catalogue order.

        Parameters
        ----------
        query_chroma : np.ndarray, shape (T, 12)
        exclude : track id, optional
            A recording left out of the search (scores 0), see :meth:`search`.
        stride : int, optional
            Every ``stride``-th query shingle searches (default ``params.query_stride``):
            a larger one is a cheaper, coarser search.
        rates : tuple of float, optional
            The tempo rates the query is searched at (default ``params.query_rates``).

        Returns
        -------
        np.ndarray, shape (n_tracks,), float64: best-band vote totals, the best rate's
        (0: no vote; all 0 when the query is shorter than one shingle).
        """
        return self.scores_in(query_chroma, self._id_range(exclude), stride, rates)

    def scores_in(
        self, query_chroma: np.ndarray, id_range=None, stride: int | None = None, rates: tuple | None = None
    ) -> np.ndarray:
        """:meth:`scores` leaving out the shingle ids ``id_range`` (start, end) instead of
        one recording's (a query whose twin sits beside it is left out with it)."""
        if self.n_shingles == 0:
            raise ValueError("the recurrence index is empty: add recordings before searching")
        best = np.zeros(len(self))
        for sims, ids, frames, rolls in self.rate_searches(query_chroma, id_range, stride, rates):
            np.maximum(best, self.scores_from_neighbours(sims, ids, frames, rolls), out=best)
        return best

    def rate_searches(
        self, query_chroma: np.ndarray, id_range=None, stride: int | None = None, rates: tuple | None = None
    ) -> list[tuple]:
        """The query's searches, one per tempo rate (default ``params.query_rates``):
        (similarities, shingle ids, frames, rolls) each, frames in that rate's time; none
        for a rate at which the query is shorter than one shingle."""
        out = []
        for rate in self.params.query_rates if rates is None else rates:
            vectors, frames, rolls = self.query_vectors(resample_time(query_chroma, rate), stride)
            if len(vectors) == 0:
                log.debug(
                    "query of %d frames at rate %g is shorter than one shingle", len(query_chroma), rate
                )
                continue
            sims, ids = self.neighbours(vectors, id_range)
            out.append((sims, ids, frames, rolls))
        return out

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

    def searched_with(self, params: RecurrenceParams) -> RecurrenceIndex:
        """This index, searched from now on with ``params``' search settings
        (:data:`coverhunter.index.recurrence_maths.SEARCH_FIELDS`).

        Raises
        ------
        ValueError
            ``params`` would build another index (a field outside the search settings
            differs): build one with them instead.
        """
        mine, theirs = build_settings(self.params), build_settings(params)
        if mine != theirs:
            diff = sorted(k for k in mine if mine[k] != theirs[k])
            raise ValueError(f"recurrence index built with other settings ({', '.join(diff)}): rebuild it")
        self.params = params
        if is_hnsw(self.index):
            self.index.hnsw.efSearch = params.ef_search
        return self

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
    index: RecurrenceIndex | None = None,
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
    index : RecurrenceIndex, optional
        An index of ``refs`` already built (their positions as track ids; ``params`` is
        then unused): given, it is searched instead of a new one.

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
    if index is None:
        index = RecurrenceIndex(params)
        index.add(np.arange(len(refs)), refs)
    elif len(index) != len(refs):
        raise ValueError(f"a recurrence index of {len(index)} recordings for {len(refs)} references")
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
