"""Which works are performed where: recordings of any length, medleys, concerts, DJ mixes.

:func:`coverhunter.identification.identify` hands the chunk embeddings of a recording (cut into
the index's chunk windows and embedded in batches, memory bounded by the (frames, 96) CQT,
69 MB for 2 hours) to :func:`find_segments`:

1. every chunk is searched in the catalogue: for each candidate work, its best chunk
   similarity ``S[t, w]`` (works not among a chunk's neighbours get the lowest neighbour
   similarity, an upper bound);
2. a Viterbi path through the chunks picks one work per chunk, maximising the summed
   similarity minus ``switch_cost`` x (typical gap between a chunk's best and second-best
   work) for each change of work, so one odd chunk does not open a segment;
3. each run of chunks with one work is a segment: its time range, and the catalogue
   search of its chunks alone gives the score, offsets, calibrated probability and
   p-value exactly as the search of a whole recording does (``identify`` adds the
   verdict, by its one rule).

Boundaries fall half-way through the overlap of the last chunk of one segment and the
first of the next, so their precision is about a quarter of a chunk (about 4 s with
15 s chunks every 7.5 s).
"""

from __future__ import annotations

import logging
from dataclasses import asdict

import numpy as np

from .index import CatalogueIndex, Match, Segment

log = logging.getLogger(__name__)

NEIGHBOURS = 64  # catalogue chunks looked up per query chunk for the segmentation


# ---------------------------------------------------------------------------
# segmentation


def chunk_work_scores(
    index: CatalogueIndex,
    emb: np.ndarray,
    k: int = NEIGHBOURS,
    per_chunk: int = 3,
    max_works: int = 256,
    block: int = 256,
    approximate: bool | None = None,
) -> tuple[list[str], np.ndarray]:
    """Best similarity of every query chunk to each candidate work.

    Parameters
    ----------
    emb : np.ndarray, shape (m, E)
        Unit chunk embeddings of the query.
    k : int
        Catalogue neighbours looked up per chunk.
    per_chunk : int
        The best ``per_chunk`` works of each chunk become candidates (at most ``max_works``,
        the most frequent first).

    Returns
    -------
    (list of str, np.ndarray, shape (m, n_works))
        Candidate works and ``S[t, w]``; a work missing from chunk t's neighbours gets the
        lowest neighbour similarity of that chunk.
    """
    tracks = index.tracks()
    row_starts = np.array([t["row"] for t in tracks])
    work_of_track = [t["work"] for t in tracks]
    k = min(k, index.meta["n_vectors"])
    per_chunk_best: list[dict[str, float]] = []
    floors = []
    for i in range(0, len(emb), block):
        sims, rows = index.search_vectors(emb[i : i + block], k, approximate)
        owner = np.searchsorted(row_starts, rows, side="right") - 1
        for srow, rrow, orow in zip(sims, rows, owner):
            best: dict[str, float] = {}
            for s, r, o in zip(srow, rrow, orow):
                if r >= 0 and work_of_track[o] not in best:
                    best[work_of_track[o]] = float(s)
            per_chunk_best.append(best)
            floors.append(float(srow[rrow >= 0].min()) if (rrow >= 0).any() else -1.0)
    votes: dict[str, int] = {}
    for best in per_chunk_best:
        for w in sorted(best, key=best.get, reverse=True)[:per_chunk]:
            votes[w] = votes.get(w, 0) + 1
    works = sorted(votes, key=lambda w: (-votes[w], w))[:max_works]
    col = {w: j for j, w in enumerate(works)}
    S = np.repeat(np.asarray(floors, np.float64)[:, None], len(works), axis=1)
    for t, best in enumerate(per_chunk_best):
        for w, s in best.items():
            if w in col:
                S[t, col[w]] = s
    return works, S


def viterbi_path(S: np.ndarray, switch: float) -> np.ndarray:
    """Column per row maximising ``sum S[t, path[t]] - switch * (number of changes)``.

    Parameters
    ----------
    S : np.ndarray, shape (m, n)
    switch : float >= 0

    Returns
    -------
    np.ndarray, shape (m,), int
    """
    m, n = S.shape
    back = np.zeros((m, n), np.int64)
    score = S[0].copy()
    for t in range(1, m):
        j = int(score.argmax())
        stay = score
        move = score[j] - switch
        back[t] = np.where(stay >= move, np.arange(n), j)
        score = np.maximum(stay, move) + S[t]
    path = np.empty(m, np.int64)
    path[-1] = int(score.argmax())
    for t in range(m - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def _runs(labels: np.ndarray) -> list[tuple[int, int]]:
    """[first, last] chunk index of each run of equal labels."""
    cut = np.flatnonzero(np.diff(labels)) + 1
    edges = np.concatenate([[0], cut, [len(labels)]])
    return [(int(a), int(b) - 1) for a, b in zip(edges[:-1], edges[1:])]


def find_segments(
    index: CatalogueIndex,
    emb: np.ndarray,
    starts: list[float],
    duration_s: float,
    chunk_s: float,
    *,
    switch_cost: float = 3.0,
    approximate: bool | None = None,
) -> list[Segment]:
    """Time ranges of the query, each with the work performed there.

    Parameters
    ----------
    emb : np.ndarray, shape (m, E)
        Unit chunk embeddings of the query, windows of ``chunk_s`` seconds.
    starts : list of float
        Each chunk's start in seconds.
    duration_s : float
        Length of the query (the last segment ends there).
    switch_cost : float
        Price of a change of work, in units of the median gap between a chunk's best and
        second-best candidate work.

    Returns
    -------
    list of Segment
        In time order, covering [0, duration_s]; neighbours never share a work. Their
        ``verdict`` is empty: :func:`coverhunter.identification.identify` gives it.
    """
    if len(emb) == 0 or index.meta["n_vectors"] == 0:
        return []
    works, S = chunk_work_scores(index, emb, approximate=approximate)
    top2 = -np.sort(-S, axis=1)[:, :2] if S.shape[1] > 1 else np.c_[S, S]
    scale = max(1e-3, float(np.median(top2[:, 0] - top2[:, 1])))
    labels = viterbi_path(S, switch_cost * scale)
    segs: list[Segment] = []
    runs = _runs(labels)
    for i, (a, b) in enumerate(runs):
        lo = 0.0 if i == 0 else (starts[a - 1] + chunk_s + starts[a]) / 2
        hi = duration_s if i == len(runs) - 1 else (starts[b] + chunk_s + starts[b + 1]) / 2
        seg = _segment(index, emb[a : b + 1], starts[a : b + 1], works[labels[a]], lo, hi, approximate)
        if segs and segs[-1].work == seg.work:  # same work after the search: one segment
            seg = _merge(segs.pop(), seg)
        segs.append(seg)
    return segs


def _segment(
    index: CatalogueIndex,
    emb: np.ndarray,
    starts: list[float],
    work: str,
    lo: float,
    hi: float,
    approximate: bool | None,
) -> Segment:
    """The catalogue search of one range's chunks; the labelled work's match when the
    search lists it (else the search's best)."""
    matches = index.search(emb, list(starts), 10, approximate)
    m = next((x for x in matches if x.work == work), matches[0])
    return Segment(
        round(lo, 2),
        round(hi, 2),
        m.work,
        m.track_id,
        m.score,
        m.query_offset_s,
        m.ref_offset_s,
        m.probability,
        m.p_value,
    )


def _merge(a: Segment, b: Segment) -> Segment:
    best = a if a.score >= b.score else b
    return Segment(
        a.start_s, b.end_s, **{k: v for k, v in asdict(best).items() if k not in ("start_s", "end_s")}
    )


def matches_from_segments(segs: list[Segment], top: int) -> list[Match]:
    """Works of a long recording: each work's best segment, best first."""
    best: dict[str, Segment] = {}
    for s in segs:
        if s.work not in best or s.score > best[s.work].score:
            best[s.work] = s
    ranked = sorted(best.values(), key=lambda s: -s.score)[:top]
    return [
        Match(s.work, s.track_id, s.score, s.query_offset_s, s.ref_offset_s, s.probability, s.p_value)
        for s in ranked
    ]
