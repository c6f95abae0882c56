"""``identify``'s re-ranking of a catalogue search: :func:`search_reranked`.

The catalogue search (:meth:`coverhunter.index.CatalogueIndex.search`) answers works
ranked by embedding score; :func:`search_reranked` adds the works the chroma searches
find (the most voted by recurrence voting, the nearest by the 2D Fourier summary, both
through the index's stored chroma, :class:`coverhunter.index.chroma_store.IndexChroma`)
and :func:`rerank_matches` chooses the shortlist among them and aligns it with the query
(:func:`coverhunter.rerank.cascade_shortlist`, :func:`coverhunter.rerank.fuse`: the
maths and its settings live in :mod:`coverhunter.rerank`). A catalogue work often has
several recordings, and the one the embedding found is not always the one that aligns
best with the query: up to ``versions`` of them are aligned (:func:`version_choice`: the
one found, then the work's others nearest to the query by the 2D Fourier summary), and
the work scores the best. The index and its chroma are passed in: this module imports
neither, and only ``identification`` imports it.

Imports ``chroma``, ``classical``, ``qmax``, ``rerank``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..chroma import search_view
from ..classical import euclidean_distances, fourier_summary
from ..qmax import AlignmentFeatures, qmax_scores
from ..rerank import (
    RerankConfig,
    cascade_shortlist,
    coarse_split,
    first_stage_distances,
    first_stage_searches,
    for_catalogue,
    fuse,
    scans,
)


def version_choice(match, versions, n: int, summary=None, query_summary=None) -> list[str]:
    """The recordings of a shortlisted work to align: the one the search found (``match``),
    then up to ``n - 1`` of the work's others (``versions(work)`` -> track ids), nearest to
    the query by the 2D Fourier summary when both summaries are known (else in catalogue
    order; ties by catalogue order)."""
    if versions is None or n <= 1:
        return [match.track_id]
    others = [t for t in versions(match.work) if t != match.track_id]
    if query_summary is not None and summary is not None and len(others) > n - 1:
        vecs = [summary(t) for t in others]
        # a recording without a summary has no stored chroma either: it cannot be aligned
        others = [t for t, v in zip(others, vecs) if v is not None]
        if others:
            d = euclidean_distances(
                np.asarray(query_summary)[None], np.stack([v for v in vecs if v is not None])
            )[0]
            others = [others[i] for i in np.argsort(d, kind="stable")]
    return [match.track_id] + others[: n - 1]


class _Candidates:
    """The candidates' alignment data (``lookup``), each made on first use: only the
    shortlist is aligned, so most candidates of a large catalogue (at 20,000 recordings
    up to 680 from the embedding and 680 from each chroma search, of which 680 are
    shortlisted) are never made; ``available`` (track id -> bool) says which have data
    without making it (None: made to find out)."""

    def __init__(self, cand: list, lookup, available=None):
        self._cand, self._lookup, self._available, self._made = cand, lookup, available, {}

    def __len__(self) -> int:
        return len(self._cand)

    def __getitem__(self, i: int):
        if i not in self._made:
            self._made[i] = self._lookup(self._cand[i].track_id)
        return self._made[i]

    def available(self, i: int) -> bool:
        if self._available is None or i in self._made:
            return self[i] is not None
        return bool(self._available(self._cand[i].track_id))


def rerank_matches(
    matches: list,
    query: AlignmentFeatures,
    lookup,
    cfg: RerankConfig,
    summary=None,
    extra: list | None = None,
    query_summary=None,
    versions=None,
    calibrate=None,
    votes: dict | None = None,
    coarse_view: int | None = None,
    available=None,
    coarse_scores: dict | None = None,
    scan: dict | None = None,
) -> list:
    """Re-order a query's best matches (best first) by chroma alignment.

    The first ``cfg.pool`` matches are the candidates; the ``cfg.k`` of them chosen by
    :func:`coverhunter.rerank.cascade_shortlist` (embedding and 2D Fourier summary) are
    aligned and placed first, ordered by the fused score; the other candidates follow in
    their embedding order, then the rest, unchanged.

    Parameters
    ----------
    matches : list of index.Match
        Sorted by embedding score, best first.
    query : AlignmentFeatures
    lookup : callable track_id -> AlignmentFeatures or None
    cfg : RerankConfig
    summary : callable track_id -> 2D Fourier summary, optional
        Cached summaries of the catalogue
        (:meth:`coverhunter.index.chroma_store.IndexChroma.summary`); default: computed
        from ``lookup``'s chroma.
    extra : list of index.Match, optional
        More candidates (the works the chroma search found: most voted, or nearest by the
        2D Fourier summary; with their embedding scores); those of works already among the
        candidates are ignored.
    query_summary : np.ndarray, optional
        The query's summary, made as ``summary``'s are
        (:meth:`coverhunter.index.chroma_store.IndexChroma.query_summary`); default: the
        raw 2D Fourier summary.
    versions : callable work -> list of track ids, optional
        The catalogue's recordings of a work: up to ``cfg.versions`` of them are aligned
        per shortlisted work (:func:`version_choice`) and the work scores the best.
        Default: only the recording the search found.
    calibrate : callable (matches, number of alignments) -> matches, optional
        Applied to the result (:meth:`coverhunter.index.CatalogueIndex.calibrated_alignments`).
    votes : dict of work -> float, optional
        The query's recurrence votes per work (first stage ``"recurrence"``,
        :meth:`coverhunter.index.chroma_store.IndexChroma.work_votes`): they, not the
        summary distances, join the embedding scores to choose the shortlist (a work
        without votes has 0).
    coarse_view : int, optional
        With ``cfg.coarse_keep`` > 0, the chroma view the coarse pass aligns (None = all):
        the shortlisted works' found recordings are aligned coarsely and only the best
        of them (:func:`coverhunter.rerank.coarse_split`)
        are aligned in full, versions included; the others follow the aligned ones in
        that order, without an alignment score.
    coarse_scores : dict of track_id -> float, optional
        The query's scan of the catalogue (:meth:`coverhunter.index.chroma_store.IndexChroma.scan`,
        :func:`coverhunter.rerank.scans`): the coarse pass reads each candidate's score
        there instead of aligning it coarsely (a recording without one scores 0).
    scan : dict of work -> float, optional
        The same scan per work (its best recording's score): a chroma search of its own
        beside the votes and the summary (:func:`coverhunter.rerank.first_stage_searches`;
        a work without a score has 0).
    available : callable track_id -> bool, optional
        Whether ``lookup`` has data for a recording, without making it
        (:meth:`coverhunter.index.chroma_store.IndexChroma.has`): with ``summary``, only
        the shortlisted candidates' data is then made. Default: ``lookup`` is asked.

    Returns
    -------
    list of Match: the same matches, re-ordered; the aligned ones carry their work's
    best alignment score (``Match.alignment``). A match without stored chroma gets the
    candidates' mean summary distance and alignment score (z = 0), so it is ranked by its
    embedding score alone, and no alignment score.

    Notes
    -----
    ``cfg.expand`` and ``cfg.expansion_weight`` are not used: the matches are works, one
    recording each, so the anchor's other versions, which the expansion finds, are not
    among them (they would only push the anchor's look-alike *works* up).
    """
    calibrate = calibrate or (lambda ms, n: ms)
    cand, rest = list(matches[: max(cfg.k, cfg.pool)]), list(matches[max(cfg.k, cfg.pool) :])
    if extra:
        seen = {m.work for m in cand}
        added = [m for m in extra if m.work not in seen and not seen.add(m.work)]
        cand += added
        rest = [m for m in rest if m.work not in seen]
    refs = _Candidates(cand, lookup, available)
    have = [i for i in range(len(cand)) if refs.available(i)]
    if len(cand) < 2 or not have:
        return list(matches)
    dist = np.array([1.0 - m.score for m in cand])
    glob = None
    if cfg.global_weight > 0 and len(cand) > cfg.k:
        v = None if votes is None else np.array([votes.get(m.work, 0.0) for m in cand], np.float64)
        g = None
        if v is None or cfg.first_stage != "recurrence":  # the summary search is needed
            g = np.full(len(cand), np.nan)
            q = (fourier_summary(query.chroma) if query_summary is None else query_summary)[None]
            vecs = [summary(cand[i].track_id) if summary else fourier_summary(refs[i].chroma) for i in have]
            g[have] = euclidean_distances(q, np.stack(vecs))[0]
            g[np.isnan(g)] = g[have].mean()
        s = None if scan is None else np.array([scan.get(m.work, 0.0) for m in cand], np.float64)
        glob = first_stage_searches(cfg.first_stage, v, g, s)  # (n_searches, n_candidates)
    sl = cascade_shortlist(dist, glob, cfg)
    known = None
    if coarse_scores is not None:
        known = lambda items: np.array([coarse_scores.get(cand[i].track_id, 0.0) for i in items])  # noqa: E731
    sl, cut = coarse_pass(query, refs, sl, dist, glob, cfg, coarse_view, known)
    chosen = set(int(i) for i in sl) | set(int(i) for i in cut)
    others = [cand[i] for i in cut] + [m for i, m in enumerate(cand) if i not in chosen] + rest
    sl_have = [r for r, i in enumerate(sl) if refs[i] is not None]
    if not sl_have:
        return calibrate([cand[i] for i in sl] + others, 0)
    # each shortlisted work's recordings to align: the one found, and its other versions
    to_align, owner = [], []
    for r in sl_have:
        m = cand[sl[r]]
        picked = [refs[sl[r]]] + [
            lookup(t) for t in version_choice(m, versions, cfg.versions, summary, query_summary)[1:]
        ]
        picked = [f for f in picked if f is not None]
        to_align += picked
        owner += [r] * len(picked)
    flat = qmax_scores(query, to_align, cfg.qmax)
    scores = np.full(len(sl), np.nan)
    np.fmax.at(scores, np.asarray(owner, int), flat)  # each work's best; NaN where none aligned
    have_score = set(sl_have)
    aligned = [
        replace(cand[i], alignment=float(scores[r])) if r in have_score else cand[i] for r, i in enumerate(sl)
    ]
    scores[np.isnan(scores)] = scores[sl_have].mean()
    first = first_stage_distances(dist[sl], None if glob is None else glob[:, sl], cfg)
    order = np.argsort(-fuse(first, scores, cfg.weight), kind="stable")
    return calibrate([aligned[r] for r in order] + others, len(to_align))


def coarse_pass(
    query, refs: list, sl: np.ndarray, dist, glob, cfg: RerankConfig, view: int | None, known=None
):
    """The shortlist positions ``sl`` split by the coarse pass: those to align in full (the
    best of the candidates with chroma, :func:`coverhunter.rerank.coarse_split`,
    and those without, which are never aligned) and the rest, best first; ``(sl, [])``
    where the pass does not cut. ``known``: positions -> their coarse scores, already
    made (the scan), instead of aligning them."""
    with_chroma = np.asarray([i for i in sl if refs[i] is not None], np.int64)

    def first(items):
        return first_stage_distances(dist[items], None if glob is None else glob[:, items], cfg)

    def coarse(items):
        if known is not None:
            return known(items)
        q = query.coarse(cfg.coarse_block, view)
        return qmax_scores(q, [refs[i].coarse(cfg.coarse_block, view) for i in items], cfg.coarse_qmax)

    kept, dropped = coarse_split(with_chroma, first, coarse, cfg)
    if len(dropped) == 0:
        return sl, dropped
    keep = set(kept.tolist())
    return np.asarray([i for i in sl if refs[i] is None or i in keep], np.int64), dropped


def search_reranked(
    index,
    emb: np.ndarray,
    starts,
    top: int,
    query: AlignmentFeatures,
    chroma,
    cfg: RerankConfig,
    approximate: bool | None = None,
) -> list:
    """A query's catalogue search with its best matches re-ranked: the first ``top``.

    The shortlist length is that of the catalogue's size
    (:func:`coverhunter.rerank.for_catalogue`). The search asks for ``cfg.pool`` works
    (at least ``top`` and that length), and the ``cfg.global_pool`` works the chroma
    search found join them with their embedding scores, so that :func:`rerank_matches`
    can choose the shortlist among both: the most voted by recurrence voting (first stage
    ``"recurrence"``, :meth:`~coverhunter.index.chroma_store.IndexChroma.work_votes`; the
    index is built at the first search after a change), the recordings nearest by the 2D
    Fourier summary (``"summary"``; ``"both"``: both searches), and in a catalogue of up
    to ``cfg.scan_below`` recordings the best by the scan
    (:meth:`~coverhunter.index.chroma_store.IndexChroma.scan`, whose scores the coarse
    pass then reuses).

    Parameters
    ----------
    index : coverhunter.index.CatalogueIndex
    emb : np.ndarray, shape (n_chunks, E)
        The query's chunk embeddings, and ``starts`` their start times.
    query : AlignmentFeatures
        The query's chroma.
    chroma : coverhunter.index.chroma_store.IndexChroma
        The catalogue's stored chroma (reuse one across queries: it caches; made by
        :func:`coverhunter.index.chroma_store.catalogue_reranking`).

    Returns
    -------
    list of index.Match: the aligned ones carry their work's best alignment score (up to
    ``cfg.versions`` of its recordings aligned), and, when the index's calibration has an
    alignment part, their probability and p-value come from it
    (:meth:`coverhunter.index.CatalogueIndex.calibrated_alignments`, every alignment made
    for the query counted as a competitor).
    """
    scanning = scans(cfg, index.meta["n_tracks"])
    cfg = for_catalogue(cfg, index.meta["n_tracks"])
    matches = index.search(emb, starts, max(top, cfg.k, cfg.pool), approximate)
    extra, votes, scanned, scan_works = None, None, None, None
    q_summary = chroma.query_summary(query) if cfg.global_weight > 0 else None  # once per query
    found_ids = []
    view = search_view(chroma.params)
    searched = []  # each chroma search's best recording per work: work -> (track id, score)
    if cfg.first_stage in ("recurrence", "both") and cfg.global_weight > 0:
        searched.append(chroma.work_votes(query))
        votes = {w: v for w, (_, v) in searched[-1].items()}
    if scanning:
        scanned = chroma.scan(query, cfg.coarse_block, view, cfg.coarse_qmax)
        searched.append(chroma.per_work(scanned.items()))
        scan_works = {w: v for w, (_, v) in searched[-1].items()}
    for found in searched:
        found_ids += [t for t, _ in sorted(found.values(), key=lambda tv: -tv[1])[: cfg.global_pool]]
    if cfg.first_stage != "recurrence" and cfg.global_pool > 0 and q_summary is not None:
        found_ids += chroma.nearest(q_summary, cfg.global_pool)
    if found_ids:
        extra = index.score_tracks(emb, starts, list(dict.fromkeys(found_ids)))
    return rerank_matches(
        matches,
        query,
        chroma.get,
        cfg,
        chroma.summary,
        extra,
        q_summary,
        versions=index.work_tracks,
        calibrate=index.calibrated_alignments,
        votes=votes,
        coarse_view=view,
        available=chroma.has,
        coarse_scores=scanned,
        scan=scan_works,
    )[:top]


__all__ = ["search_reranked", "rerank_matches", "coarse_pass", "version_choice"]
