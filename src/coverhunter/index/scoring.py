"""From nearest chunk rows to works: how an index scores a query recording.

A recording scores a catalogue track by its best chunk pair (cosine similarity), and a
work by its best track. :func:`search_works` finds the best works through the index's
engine (:meth:`~coverhunter.index.CatalogueIndex.search_vectors`); :func:`score_tracks`
scores given tracks exactly (candidates another search found). Both answer with one
:class:`~coverhunter.index.results.Match` per work, calibrated when the index is
(:func:`coverhunter.index.calibrate.calibrated`).
"""

from __future__ import annotations

import numpy as np

from .calibrate import calibrated
from .results import Match


def search_works(
    index, q: np.ndarray, q_starts: list[float], top: int = 10, approximate: bool | None = None
) -> list[Match]:
    """Best works for one query recording.

    Parameters
    ----------
    index : CatalogueIndex
    q : np.ndarray, shape (m, E)
        The query's normalised chunk embeddings.
    q_starts : list of float
        Start (s) of each query chunk.
    top : int
        Works to return at most.
    approximate : bool, optional
        See :meth:`~coverhunter.index.CatalogueIndex.search_vectors`.

    Returns
    -------
    list of Match
        Best first, one per work.
    """
    if index.meta["n_tracks"] == 0:
        return []
    tracks = index.tracks()
    row_starts = np.array([t["row"] for t in tracks])
    # enough chunk neighbours to reach `top` distinct works in practice
    k = max(50, 8 * top * max(1, len(q_starts)))
    sims, rows = index.search_vectors(q, k, approximate)
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
    return calibrated(index, sorted(best.values(), key=lambda m: -m.score))


def score_tracks(index, q: np.ndarray, q_starts: list[float], track_ids: list[str]) -> list[Match]:
    """Exact matches of a query (its normalised chunk embeddings (m, E)) with the given
    catalogue recordings: one per work (its best listed recording), best first.

    Unknown or removed track ids are skipped. Used for candidates that another search
    found (:func:`coverhunter.index.reranked_search.search_reranked`).
    """
    if not track_ids or index.meta["n_tracks"] == 0:
        return []
    if index._by_id is None:
        index._by_id = {t["track_id"]: t for t in index.tracks()}
    best: dict[str, Match] = {}
    q = np.asarray(q, np.float32)
    view = index.row_view()
    for tid in track_ids:
        t = index._by_id.get(tid)
        if t is None:
            continue
        sims = q @ view[t["row"] : t["row"] + len(t["starts"])].T
        qi, j = np.unravel_index(int(np.argmax(sims)), sims.shape)
        m = Match(t["work"], t["track_id"], float(sims[qi, j]), q_starts[qi], t["starts"][j])
        if t["work"] not in best or m.score > best[t["work"]].score:
            best[t["work"]] = m
    return calibrated(index, sorted(best.values(), key=lambda m: -m.score))


__all__ = ["search_works", "score_tracks"]
