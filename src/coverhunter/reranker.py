"""Evaluation's re-ranker: the two-stage search of ``evaluate --rerank`` over a distance matrix.

:func:`build_reranker` reads every query and reference recording's alignment data from
its feature files (:func:`coverhunter.alignment_inputs.alignment_features`, with the chroma
:func:`features_chroma` chooses), their 2D Fourier summaries, the first stage's recurrence
votes (:func:`recurrence_votes`, :func:`coverhunter.index.recurrence.vote_matrix`), in
a small catalogue the scan beside them (:func:`coarse_scan`,
:func:`coverhunter.rerank.scans`) and,
for source ``"embedding"`` or ``"both"``, the model's short-chunk embeddings
(:func:`chunk_embeddings`); :class:`Reranker` then re-orders blocks of the query x
reference distance matrix, each row by :func:`coverhunter.rerank.rerank_row` (shortlist,
alignment, fusion, query expansion: the maths and its settings live in
:mod:`coverhunter.rerank`). Used by :mod:`coverhunter.evaluate` and the benchmarks.

Imports ``alignment_inputs``, ``chroma``, ``classical``, ``qmax``, ``rerank``; on first use
``embed``, ``index.recurrence``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .alignment_inputs import alignment_features, global_summaries, recurrence_chroma
from .chroma import CHROMA_SPEC, chroma_path, search_view
from .classical import CHROMA_PARAMS, euclidean_distances
from .inputs import model_input
from .qmax import alignment_distance_matrix, qmax_scores, qmax_sequences
from .rerank import RerankConfig, first_stage_searches, rerank_row, scans, shortlist_length, zscore

log = logging.getLogger(__name__)


def chunk_windowing(cfg, rr: RerankConfig):
    """Short windows for the embedding alignment, from a model config (``Config``), in
    frames of the model's input (:mod:`coverhunter.inputs`)."""
    from .embed import Windowing

    inp = model_input(cfg)
    return Windowing.from_config(rr, inp.frames_per_second, cfg.data.mean_size, inp.pad_value)


def chunk_embeddings(
    model,
    feats: list,
    cfg,
    rr: RerankConfig,
    *,
    device="cpu",
    cache_dir=None,
    fingerprint: str | None = None,
    verbose: bool = False,
) -> list[np.ndarray]:
    """L2-normalised short-chunk embeddings (n_chunks, E) of each recording (``feats``: their
    CQT files; a "fine_chroma" model reads the chroma stored beside each)."""
    from .embed import EmbeddingCache, embed_tracks, l2_normalise

    inp = model_input(cfg)
    win = chunk_windowing(cfg, rr)
    cache = EmbeddingCache(cache_dir, fingerprint, win) if cache_dir and fingerprint else None
    was = model.training
    model.eval()
    try:
        out = embed_tracks(
            model,
            [inp.source(f) for f in feats],
            win,
            device=device,
            batch_size=cfg.eval.batch_size,
            cache=cache,
            verbose=verbose,
            desc="embed short chunks",
            load=inp.loader(),
        )
    finally:
        model.train(was)
    return [l2_normalise(e).astype(np.float32) for e, _ in out]


@dataclass
class Reranker:
    """Re-ranks blocks of a query x reference distance matrix.

    ``query_align``/``ref_align`` (chroma data) are needed for sources "chroma" and
    "both", ``query_chunks``/``ref_chunks`` (short-chunk embeddings) for "embedding" and
    "both"; ``query_summary``/``ref_summary`` (2D Fourier summaries, (n, D)), when given,
    choose the shortlist among the ``pool`` nearest
    (:func:`coverhunter.rerank.cascade_shortlist`). The time spent re-scoring is
    accumulated in ``seconds``.

    ``symmetric``: the queries are the references (an all-vs-all evaluation). Alignment
    scores are symmetric (Qmax of (i, j) equals that of (j, i)), so each pair is aligned
    once and its score reused when the pair comes up again, from the other side or as an
    anchor's neighbour. ``n_pairs`` counts the alignments the queries asked for (what a
    single query costs), ``n_computed`` those actually run.
    """

    cfg: RerankConfig
    query_align: list | None = None
    ref_align: list | None = None
    query_chunks: list | None = None
    ref_chunks: list | None = None
    query_summary: np.ndarray | None = None
    ref_summary: np.ndarray | None = None
    # first stage "recurrence": the queries' recurrence votes for the references
    # (n_queries, n_refs), larger = closer (recurrence_votes); without them the summaries
    # choose the shortlist, as with first stage "summary"
    votes: np.ndarray | None = None
    # the scan (coverhunter.rerank.scans): the queries' coarse alignment scores with every
    # reference (n_queries, n_refs), larger = closer (coarse_scan); when given it is a
    # chroma search beside the votes and the summary, and the coarse pass reads it instead
    # of aligning
    scan: np.ndarray | None = None
    # cfg.expand_votes > 0: reference index -> its recurrence votes for every reference
    # (n_refs,), larger = closer, itself 0 (anchor_vote_rows); without it the summaries
    # find all of the anchor's neighbours
    anchor_votes: Callable[[int], np.ndarray] | None = None
    # the coarse pass (cfg.coarse_keep > 0, source "chroma"): the chroma view it aligns
    # (coverhunter.chroma.search_view of the chroma spec; None = all views)
    coarse_view: int | None = None
    symmetric: bool = False
    seconds: float = 0.0
    n_queries: int = 0
    n_pairs: int = 0
    n_computed: int = 0
    n_coarse: int = 0  # coarse alignments (the coarse pass), not in n_pairs
    k_used: int = 0  # the shortlist length of the last block's catalogue (shortlist_length)
    # a list: each re-ranked query's shortlist and the items aligned in full appended
    # (rerank_row's trace), for a benchmark of the first stage's recall; None: not kept
    traces: list | None = None
    _checked: bool = field(default=False, repr=False)
    _pairs: dict = field(default_factory=dict, repr=False)  # (i, j), i < j -> per-source scores
    _coarse: dict = field(default_factory=dict, repr=False)  # (is_query, i) -> coarse features

    def _check(self) -> None:
        need_chroma = self.cfg.source in ("chroma", "both")
        need_chunks = self.cfg.source in ("embedding", "both")
        if need_chroma and (self.query_align is None or self.ref_align is None):
            raise ValueError(f"rerank source {self.cfg.source!r} needs chroma of queries and references")
        if need_chunks and (self.query_chunks is None or self.ref_chunks is None):
            raise ValueError(f"rerank source {self.cfg.source!r} needs chunk embeddings")
        self._checked = True

    def _parts(self, align, chunks, refs: np.ndarray) -> np.ndarray:
        """Raw alignment scores, shape (n_sources, len(refs)): chroma Qmax and/or chunk Qmax."""
        self.n_computed += len(refs)
        parts = []
        if self.cfg.source in ("chroma", "both"):
            parts.append(qmax_scores(align, [self.ref_align[j] for j in refs], self.cfg.qmax))
        if self.cfg.source in ("embedding", "both"):
            parts.append(qmax_sequences(chunks, [self.ref_chunks[j] for j in refs], self.cfg.chunk_qmax))
        return np.asarray(parts, np.float64).reshape(len(parts), len(refs))

    def _align(self, owner: int, align, chunks, refs: np.ndarray) -> np.ndarray:
        """Alignment scores of recording ``owner`` (its chroma data / chunk embeddings)
        against reference indices; with ``symmetric``, pairs already aligned are reused."""
        if not self._checked:
            self._check()
        refs = np.asarray(refs, np.int64)
        self.n_pairs += len(refs)
        if not self.symmetric:
            parts = self._parts(align, chunks, refs)
        else:
            keys = [(min(owner, j), max(owner, j)) for j in refs.tolist()]
            known = [self._pairs.get(k) for k in keys]
            todo = [i for i, v in enumerate(known) if v is None]
            if todo:
                new = self._parts(align, chunks, refs[todo]).T
                for i, v in zip(todo, new):
                    known[i] = self._pairs[keys[i]] = tuple(v.tolist())
            n_src = 2 if self.cfg.source == "both" else 1
            parts = np.asarray(known, np.float64).reshape(len(refs), n_src).T
        return parts[0] if len(parts) == 1 else np.mean([zscore(p) for p in parts], axis=0)

    def scores(self, qi: int, refs: np.ndarray) -> np.ndarray:
        """Alignment scores (larger = closer) of query ``qi`` against reference indices."""
        return self._align(
            qi,
            None if self.query_align is None else self.query_align[qi],
            None if self.query_chunks is None else self.query_chunks[qi],
            refs,
        )

    def _coarse_of(self, is_query: bool, i: int):
        key = (is_query and not self.symmetric, i)
        if key not in self._coarse:
            align = (self.query_align if is_query else self.ref_align)[i]
            self._coarse[key] = align.coarse(self.cfg.coarse_block, self.coarse_view)
        return self._coarse[key]

    def coarse_scores(self, qi: int, refs: np.ndarray) -> np.ndarray:
        """Coarse alignment scores (larger = closer) of query ``qi`` against reference
        indices: the coarse pass of :func:`coverhunter.rerank.rerank_row`."""
        refs = np.asarray(refs, np.int64)
        self.n_coarse += len(refs)
        cands = [self._coarse_of(False, int(j)) for j in refs]
        return qmax_scores(self._coarse_of(True, qi), cands, self.cfg.coarse_qmax)

    def anchor_scores(self, ri: int, refs: np.ndarray) -> np.ndarray:
        """Alignment scores of reference ``ri`` (an anchor) against other reference indices."""
        return self._align(
            ri,
            None if self.ref_align is None else self.ref_align[ri],
            None if self.ref_chunks is None else self.ref_chunks[ri],
            refs,
        )

    def neighbours(self, ri: int, n: int, blocked: np.ndarray) -> np.ndarray:
        """The ``n`` references nearest to reference ``ri`` (an anchor), none blocked and
        not ``ri`` itself: the ``round(n * cfg.expand_votes)`` most voted by its recurrence
        votes (:attr:`anchor_votes`, those with a vote), then the nearest by the 2D Fourier
        summary; empty without either."""
        blocked = np.asarray(blocked, bool).copy()
        blocked[ri] = True
        voted = np.zeros(0, np.int64)
        n_votes = round(n * self.cfg.expand_votes) if self.anchor_votes is not None else 0
        if n_votes > 0:
            v = np.asarray(self.anchor_votes(ri), np.float64).copy()
            v[blocked | ~(v > 0)] = -np.inf
            order = np.argsort(-v, kind="stable")[:n_votes]
            voted = order[np.isfinite(v[order])]
            blocked[voted] = True
        return np.concatenate([voted, self._summary_neighbours(ri, n - len(voted), blocked)])

    def _summary_neighbours(self, ri: int, n: int, blocked: np.ndarray) -> np.ndarray:
        if self.ref_summary is None or n <= 0:
            return np.zeros(0, np.int64)
        d = euclidean_distances(self.ref_summary[ri : ri + 1], self.ref_summary)[0]
        d[blocked] = np.inf
        n_ok = int(np.isfinite(d).sum())
        if n_ok == 0:
            return np.zeros(0, np.int64)
        n = min(n, n_ok)
        top = np.argpartition(d, n - 1)[:n] if n < len(d) else np.arange(len(d))
        return top[np.lexsort((top, d[top]))]

    def rerank_block(self, dist: np.ndarray, start: int, exclude: np.ndarray | None = None) -> np.ndarray:
        """Re-ranked rows ``start .. start + len(dist)`` of the distance matrix.

        Parameters
        ----------
        dist : np.ndarray, shape (b, n_refs)
            Embedding distances of queries ``start .. start + b``.
        exclude : bool array (b, n_refs), optional
        """
        t0 = time.perf_counter()
        out = np.empty_like(np.asarray(dist, np.float64))
        self.k_used = shortlist_length(self.cfg, out.shape[1])
        rows = slice(start, start + len(dist))
        summ = None
        if self.query_summary is not None and self.ref_summary is not None:
            summ = euclidean_distances(self.query_summary[rows], self.ref_summary)
        glob = first_stage_searches(
            self.cfg.first_stage,
            None if self.votes is None else self.votes[rows],
            summ,
            None if self.scan is None else self.scan[rows],
        )  # (b, n_searches, n_refs)
        coarse = self.cfg.coarse_keep > 0 and self.cfg.source == "chroma" and self.query_align is not None
        for r in range(len(dist)):
            ex = None if exclude is None else exclude[r]
            qi = start + r
            trace = None if self.traces is None else {}
            if not coarse:
                coarse_fn = None
            elif self.scan is not None:  # the scan's scores: the coarse alignments already made
                coarse_fn = lambda refs, qi=qi: self.scan[qi, np.asarray(refs, np.int64)]  # noqa: E731
            else:
                coarse_fn = lambda refs, qi=qi: self.coarse_scores(qi, refs)  # noqa: E731
            out[r] = rerank_row(
                dist[r],
                lambda refs, qi=qi: self.scores(qi, refs),
                self.cfg,
                ex,
                None if glob is None else glob[r],
                neighbours=self.neighbours,
                anchor_scores=self.anchor_scores,
                coarse_fn=coarse_fn,
                trace=trace,
            )
            if trace is not None:
                self.traces.append(trace)
        self.n_queries += len(dist)
        self.seconds += time.perf_counter() - t0
        return out

    def summary(self) -> str:
        per = self.seconds / max(1, self.n_queries)
        pairs = self.n_pairs / max(1, self.n_queries)
        shared = (
            f" ({self.n_computed / max(1, self.n_queries):.0f} computed, the rest shared by symmetric pairs)"
            if self.symmetric
            else ""
        )
        if self.n_coarse:
            shared += f", after {self.n_coarse / max(1, self.n_queries):.0f} coarse ones"
        return (
            f"re-ranked {self.n_queries} queries (top {self.k_used or self.cfg.k}, {self.cfg.source}, "
            f"weight {self.cfg.weight}, expand {self.cfg.expand}, expansion weight "
            f"{self.cfg.expansion_weight}): {self.seconds:.2f} s, {per * 1e3:.1f} ms and "
            f"{pairs:.0f} alignments per query{shared}"
        )


def recurrence_votes(queries: list, refs: list | None, spec, verbose: bool = False, index=None) -> np.ndarray:
    """The first stage's recurrence votes of queries for references (their
    :class:`coverhunter.qmax.AlignmentFeatures`, made with chroma ``spec``; ``refs``
    None: all-vs-all, a query never votes for itself): (n_queries, n_refs), larger = closer
    (:func:`coverhunter.index.recurrence.vote_matrix`; ``index``: the references' index,
    :func:`reference_index`, else one is built)."""
    from .index.recurrence import vote_matrix

    t0 = time.perf_counter()
    q = [recurrence_chroma(a, spec) for a in queries]
    r = None if refs is None else [recurrence_chroma(a, spec) for a in refs]
    votes = vote_matrix(q, r, verbose=verbose, index=index)
    log.info("recurrence votes of %d queries in %.1f s", len(q), time.perf_counter() - t0)
    return votes


def coarse_scan(queries: list, refs: list | None, rr: RerankConfig, view: int | None) -> np.ndarray:
    """The scan of a small catalogue (:func:`coverhunter.rerank.scans`): each query's coarse
    alignment score with every reference, (n_queries, n_refs), larger = closer.

    Queries and references are :class:`coverhunter.qmax.AlignmentFeatures`, aligned on
    chroma view ``view`` (None = all) at ``rr.coarse_block`` times fewer frames with
    ``rr.coarse_qmax``, as the coarse pass aligns them. ``refs`` None: all-vs-all, each pair
    aligned once (the score is symmetric), a query's score with itself 0."""
    t0 = time.perf_counter()
    q = [a.coarse(rr.coarse_block, view) for a in queries]
    if refs is None:
        out = 1.0 - alignment_distance_matrix(q, rr.coarse_qmax)
        np.fill_diagonal(out, 0.0)
    else:
        r = [a.coarse(rr.coarse_block, view) for a in refs]
        out = np.stack([qmax_scores(a, r, rr.coarse_qmax) for a in q]) if q else np.zeros((0, len(r)))
    log.info("scanned %d queries x %d references in %.1f s", len(q), out.shape[1], time.perf_counter() - t0)
    return out


def reference_index(refs: list, spec):
    """A recurrence index of references (their AlignmentFeatures made with chroma
    ``spec``; their positions as track ids), for :func:`recurrence_votes` and
    :func:`anchor_vote_rows` to share."""
    from .index.recurrence import RecurrenceIndex

    index = RecurrenceIndex()
    index.add(np.arange(len(refs)), [recurrence_chroma(a, spec) for a in refs])
    return index


def anchor_vote_rows(
    refs: list, spec, rows: np.ndarray | None = None, index=None, stride: int | None = None
) -> Callable[[int], np.ndarray]:
    """Reference index -> its recurrence votes for every reference, itself 0: rows of an
    all-vs-all vote matrix ``rows`` when given, else searched in a recurrence index of the
    references (``index``, or one built at the first call) with every ``stride``-th of
    the reference's shingles (default: the index's ``query_stride``), at its own tempo
    only (the other ``query_rates`` would triple the cost), and kept.

    Parameters
    ----------
    refs : list of AlignmentFeatures, made with chroma ``spec``
    rows : np.ndarray, shape (n_refs, n_refs), optional
    index : coverhunter.index.recurrence.RecurrenceIndex, optional
        Of the references' search views, their indices as track ids, in order.
    """
    if rows is not None:
        return lambda ri: rows[ri]
    chroma = [recurrence_chroma(a, spec) for a in refs]
    if index is not None and len(index) != len(refs):
        raise ValueError(f"a recurrence index of {len(index)} recordings for {len(refs)} references")
    built = [] if index is None else [index]  # the index, built at the first call

    @functools.cache
    def votes_of(ri: int) -> np.ndarray:
        if not built:
            built.append(reference_index(refs, spec))
        if not built[0].n_shingles:
            return np.zeros(len(refs))
        return built[0].scores(chroma[ri], exclude=ri, stride=stride, rates=(1.0,))

    return votes_of


def features_chroma(feats: list) -> str | tuple:
    """The chroma to align feature files with: :data:`coverhunter.chroma.CHROMA_SPEC` when
    every file has its fine views beside it, else (features extracted before the fine
    chroma existed) the CQT's chroma alone, said once in the log."""
    if all(chroma_path(f).is_file() for f in feats if not isinstance(f, np.ndarray)):
        return CHROMA_SPEC
    missing = next(f for f in feats if not isinstance(f, np.ndarray) and not chroma_path(f).is_file())
    log.warning(
        "%s and maybe others have no fine chroma beside them (extracted before it "
        "existed): re-ranking aligns the CQT's chroma alone; run 'coverhunter extract' "
        "on the data folder again for the fine chroma",
        missing,
    )
    return CHROMA_PARAMS


def build_reranker(
    model,
    cfg,
    queries: list,
    refs: list | None,
    rr: RerankConfig,
    *,
    device="cpu",
    cache_dir=None,
    fingerprint: str | None = None,
    verbose: bool = False,
    projection=None,
) -> Reranker:
    """A :class:`Reranker` for query/reference tracks (``Track`` with ``feat``; refs None = queries,
    an all-vs-all evaluation, where each symmetric pair is aligned once).

    Computes each recording's chroma (and, for source "embedding"/"both", its short-chunk
    embeddings) from its CQT file; the time this takes is logged. ``projection``: the
    model's 2D Fourier summary projection (``LoadedModel.summary_projection``), if any.
    """
    t0 = time.perf_counter()
    q_feats = [t.feat for t in queries]
    r_feats = q_feats if refs is None else [t.feat for t in refs]
    rk = Reranker(rr, symmetric=refs is None)
    # summaries for the shortlist's second search and for the anchor's neighbours
    cascade = (rr.global_weight > 0 and (rr.pool > rr.k or rr.global_pool > 0)) or rr.expand > 0
    if rr.source in ("chroma", "both") or cascade:
        spec = features_chroma(q_feats + (r_feats if refs is not None else []))
        rk.query_align = [alignment_features(f, spec) for f in q_feats]
        rk.ref_align = rk.query_align if refs is None else [alignment_features(f, spec) for f in r_feats]
        rk.coarse_view = search_view(spec)
    if cascade:
        rk.query_summary = global_summaries(rk.query_align, projection)
        rk.ref_summary = rk.query_summary if refs is None else global_summaries(rk.ref_align, projection)
    scan = cascade and scans(rr, len(r_feats))
    query_votes = cascade and rr.global_weight > 0 and rr.first_stage in ("recurrence", "both")
    anchor_votes = rr.expand > 0 and rr.expand_votes > 0
    # queries against references: one index of the references for both searches
    ref_index = (
        reference_index(rk.ref_align, spec) if refs is not None and query_votes and anchor_votes else None
    )
    if query_votes:
        refs_align = None if refs is None else rk.ref_align
        rk.votes = recurrence_votes(rk.query_align, refs_align, spec, verbose, ref_index)
    if scan:
        rk.scan = coarse_scan(rk.query_align, None if refs is None else rk.ref_align, rr, rk.coarse_view)
    if anchor_votes:
        # all-vs-all: a reference's votes are its row of the vote matrix as a query; else
        # searched in a recurrence index when needed
        rows = rk.votes if refs is None and rk.votes is not None else None
        stride = rr.expand_votes_stride
        rk.anchor_votes = anchor_vote_rows(rk.ref_align, spec, rows, ref_index, stride=stride)
    if rr.source in ("embedding", "both"):
        kw = dict(device=device, cache_dir=cache_dir, fingerprint=fingerprint, verbose=verbose)
        rk.query_chunks = chunk_embeddings(model, q_feats, cfg, rr, **kw)
        rk.ref_chunks = rk.query_chunks if refs is None else chunk_embeddings(model, r_feats, cfg, rr, **kw)
    log.info(
        "re-ranking data of %d recordings in %.2f s",
        len(set(map(str, q_feats + r_feats))),
        time.perf_counter() - t0,
    )
    return rk


__all__ = [
    "Reranker",
    "build_reranker",
    "chunk_embeddings",
    "chunk_windowing",
    "recurrence_votes",
    "coarse_scan",
    "anchor_vote_rows",
    "reference_index",
    "features_chroma",
]
