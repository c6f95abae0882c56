"""Two-stage retrieval: the embedding search proposes a shortlist, an alignment re-orders it.

For each query:

1. **Shortlist**: the ``pool`` references nearest by the model's embedding distance
   (excluded pairs, e.g. the query itself, never enter it) and the ``global_pool`` the
   chroma search finds best, of which the ``k`` best by ``(1 - global_weight) *
   z(embedding similarity) + global_weight * z(chroma search score)`` go on. The chroma
   search (``first_stage``) is recurrence voting by default
   (:mod:`coverhunter.index.recurrence`: the alignment's own primitive, short chroma
   passages that recur in order, searched in a vector index of chroma shingles), or the
   global chroma summary of earlier releases (``"summary"``:
   :func:`coverhunter.classical.fourier_summary`, transposition-invariant and nearly
   free). ``global_weight`` 0 (or ``pool`` <= ``k``) is the plain top ``k``.
   The shortlist grows with the catalogue: beyond ``grow_after`` recordings, ``k`` becomes
   ``k * sqrt(n / grow_after)`` (:func:`shortlist_length`), because the first stage leaves
   more covers outside a fixed ``k`` the larger the catalogue; the cost per query still
   grows far slower than aligning the whole catalogue.
2. **Alignment score** of each shortlisted reference, over whole tracks (no cut):
   ``"chroma"``: Qmax over the chroma cross-recurrence plot (transposed by the OTI,
   :mod:`coverhunter.classical`); ``"embedding"``: Qmax over the cross-recurrence plot of
   the model's own short-chunk embeddings (windows of a few seconds: the paper's
   coarse-to-fine idea at search time); ``"both"``: the mean of the two z-scores.
3. **Fusion**: within the shortlist, both scores become z-scores (mean 0, standard
   deviation 1 over the ``k`` items; a constant score gives 0), and

       fused = (1 - weight) * z(first stage) + weight * z(alignment score)

   where the first stage is the score that chose the shortlist (embedding and summary
   z-scores at ``global_weight``; the embedding similarity alone without summaries):
   the alignment corrects the first stage rather than replacing the summary's evidence.

   ``weight`` (default :data:`DEFAULT_WEIGHT`) was chosen on training-type data,
   never on a test corpus: see ``benchmarks/bench_accuracy.py --tune``.
4. **Expansion** (evaluate's recording-level search, :func:`rerank_row`): the best-fused
   shortlisted recording, the *anchor*, is most often another version of the query's
   work, and other versions resemble it as much as they resemble the query. Its
   ``expand`` nearest recordings by the 2D Fourier summary join the shortlist and are
   aligned with the query (covers the first stage missed), then every shortlisted item
   gains ``expansion_weight * z(alignment with the anchor)`` (query expansion, Chum et
   al. 2007; the transitivity of cover-song networks, Serra et al. 2012). It costs
   ``expand`` + ``k + expand - 1`` more alignments per query, about three times the plain
   re-ranking at the defaults. ``identify`` ranks works, one entry per work, so the
   anchor's other versions are not in its list: it does not expand.
5. **Re-ordering**: the shortlist is sorted by the fused score and placed first; every
   reference outside it keeps its embedding order (and ties) after it. Nothing is
   dropped: the output is a distance row with the same entries, only re-ordered.

The re-ordered row is returned as distances: ``r / k`` for the shortlisted item at
position ``r`` (in [0, 1)), ``1 + d - min(d)`` for the others (>= 1), so every metric
and every tie rule sees the new order.

In a catalogue index, each shard keeps its recordings' chroma as uint8 (T, 12) in
``shard_NNNNN.chroma.npz`` (30 bytes per second of audio; written by
:func:`write_shard_chroma`, read by :class:`coverhunter.index.chroma_store.IndexChroma`,
which this module never imports); ``identify`` re-orders the best ``k`` works with
:func:`rerank_matches` when the index has them. A catalogue work often has several
recordings, and the one the embedding found is not always the one that aligns best with
the query: up to ``versions`` of them are aligned (the one found, then the work's others
nearest to the query by the 2D Fourier summary), and the work scores the best.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np

from .chroma import (
    CHROMA_SPEC,
    CQT_VIEW,
    chroma_path,
    fine_views,
    load_chroma,
    search_view,
    spec_chroma,
    view_of,
)
from .classical import (
    CHROMA_PARAMS,
    N_CHROMA,
    SUMMARY_PATCHES,
    AlignmentFeatures,
    QmaxParams,
    chroma_from_cqt,
    euclidean_distances,
    fourier_summary,
    multiscale_summary,
    qmax_scores,
    qmax_sequences,
    summary_size,
)
from .index.recurrence import vote_matrix

log = logging.getLogger(__name__)

DEFAULT_K = 50
# weight of the alignment z-score against the embedding z-score, chosen on training-type
# data, never on the test corpus: `bench_accuracy.py --tune --works 30` (corpus v2,
# split "train", seed 1000, 187 recordings; shipped model v2; top 50; Qmax defaults) gave
# MAP 0.094 at weight 0, 0.184 at 0.5, 0.208 at 0.8, 0.207 at 0.9, 0.206 at 1 with the
# plain top 50, and 0.239 at 0.9 (0.239 at 1) with the 2D Fourier shortlist below.
# Since the alignment is fused with the first stage's score (embedding and summary, not
# the embedding alone), `--tune` with the discriminant summary projection: 0.369 at 0.7,
# 0.371 at 0.6, 0.361 at 0.8, 0.346 at 0.9 (0.335 at 0.9 when fused with the embedding
# alone).
DEFAULT_WEIGHT = 0.7
# candidates from the embedding search, and the weight of the 2D Fourier summary when
# choosing the k to align among them; on the same corpus (weight 0.9): MAP 0.207 for the
# plain top 50, 0.239 with pool 100 and global weight 0.5; a sweep outside the benchmark
# gave 0.240 with pool 150 (0.5) and 0.238 with pool 150 (0.75)
# The recordings nearest by the 2D Fourier summary join the candidates (``global_pool``):
# on the same corpus, with pool 100 and weight 0.9, MAP 0.239 without them (global weight
# 0.5), 0.245 with the summary's top 100 at global weight 0.5, 0.246 at 0.7, 0.236 at 0.9
# (with the summary's top 50: 0.242, 0.241, 0.234); `bench_accuracy.py --tune` with these
# defaults: 0.246 at fusion weight 0.9 and 1.0, 0.244 at 0.8.
# With the shipped model's summary projection (PCA to 20 whitened dimensions, fitted on
# training recordings: `coverhunter fit-summary`), `--tune` gives 0.286 at weight 0.9,
# 0.284 at 1.0 and 0.282 at 0.8. With its discriminant projection of 30 s and 2 min
# summaries (`fit-summary` defaults, chosen by benchmarks/bench_summary.py): 0.335 at 0.9
# and 1.0, 0.331 at 0.8.
DEFAULT_POOL = 100
DEFAULT_GLOBAL_POOL = 100
DEFAULT_GLOBAL_WEIGHT = 0.7
# expansion (step 4): recordings added from the anchor's summary neighbours, and the weight
# of the anchor's alignment; `bench_accuracy.py --tune` (187 recordings): MAP 0.369 without,
# 0.410 at 25 / 0.5 (10: 0.407, 40: 0.408; weight 0.25: 0.397, 1.0: 0.408); on the 1,812
# recordings of runs/corpus-v2/val-extra (`--tune --tune-data`, training sounds, works
# disjoint from the summary projection's): 0.118 without, 0.145 at 25 / 0.5 (10: 0.137,
# 40: 0.148). With the current chroma (classical.CHROMA_PARAMS) and its refitted
# projection, `--tune`: fusion weight 0.388 at 0.6, 0.386 at 0.7, 0.376 at 0.9 (no
# expansion); expansion 0.386 without, 0.421 at 25 / 0.5 (10: 0.416, 40: 0.423)
DEFAULT_EXPAND = 25
DEFAULT_EXPANSION_WEIGHT = 0.5
# catalogue size (recordings) up to which the shortlist is k, beyond which it grows as
# sqrt(n / grow_after): on the 1,812 training-type recordings of runs/corpus-v2/val-extra
# (`bench_accuracy.py --tune --tune-data ... --expansion-only --k K`, expansion 25 / 0.5),
# MAP 0.179 at k 50 (149 alignments per query), 0.201 at k 100 (249) and 0.210 at k 150
# (349): 100 there, four times the size of the 450 below which k 50 was chosen (187 and
# 367 recordings), buys most of it at two thirds of the cost of 150. Re-checked with the
# current QmaxParams on `--tune --works 300` (the 1,387 recordings of its works the shipped
# model did not train on): 0.215 at k 50, 0.236 at 100, 0.245 at 150
DEFAULT_GROW_AFTER = 450
# recordings of each shortlisted work that identify aligns (the work scores the best): on a
# catalogue split of runs/corpus-v2/val-extra (training sounds, works never trained on;
# `bench_identify.py --corpus runs/corpus-v2/val-extra/full.txt --versions-aligned 1 2 5`,
# 815 catalogue recordings of 200 works, 400 queries of them), HR@1 0.263 aligning the one
# recording the search found (177 ms per query), 0.343 with 2 (214 ms), 0.368 with 3
# (241 ms), 0.388 with 5 (281 ms)
DEFAULT_VERSIONS = 3
SOURCES = ("chroma", "embedding", "both")
# the first stage's chroma searches, beside the embedding: "recurrence" (recurrence voting
# over chroma shingles, coverhunter.index.recurrence), "summary" (the projected 2D Fourier
# summary, the search of earlier releases) or "both": each proposes its best global_pool
# candidates and their z-scores are averaged (cascade_shortlist). Chosen on the two
# training-type tune corpora (`bench_accuracy.py --tune --tune-data
# runs/bench_accuracy/tune-mix-w60-s{1000,1001}/full.txt --tune-first-stage`, works the model
# never trained on, 260 and 241 recordings; shortlist recall / MAP with expansion at
# global_weight 0.7): summary 0.672 / 0.553 and 0.675 / 0.527, recurrence 0.679 / 0.613 and
# 0.618 / 0.535, both 0.754 / 0.607 and 0.707 / 0.562. global_weight 0.5 or 0.85 was no
# better for any of them (docs/first-stage.md)
FIRST_STAGES = ("recurrence", "summary", "both")
DEFAULT_FIRST_STAGE = "both"


@dataclass(frozen=True)
class RerankConfig:
    """How the shortlist is re-scored."""

    k: int = DEFAULT_K  # shortlist length per query
    weight: float = DEFAULT_WEIGHT  # 0 = embedding order, 1 = alignment order
    pool: int = DEFAULT_POOL  # embedding candidates the shortlist is chosen from
    # nearest by the 2D Fourier summary added to those candidates (0 = none)
    global_pool: int = DEFAULT_GLOBAL_POOL
    global_weight: float = DEFAULT_GLOBAL_WEIGHT  # 2D Fourier summary in that choice
    source: str = "chroma"  # "chroma", "embedding" or "both"
    # the chroma search that proposes candidates beside the embedding (FIRST_STAGES)
    first_stage: str = DEFAULT_FIRST_STAGE
    # recordings nearest to the anchor (the best-fused one) by the 2D Fourier summary added
    # to the shortlist, and the weight of each item's alignment with the anchor (0 = none)
    expand: int = DEFAULT_EXPAND
    expansion_weight: float = DEFAULT_EXPANSION_WEIGHT
    # catalogue size beyond which k grows as sqrt(n / grow_after) (0 = k whatever the size)
    grow_after: int = DEFAULT_GROW_AFTER
    # identify: recordings of each shortlisted work aligned with the query (the one the
    # search found, then the work's others nearest to the query by the 2D Fourier
    # summary); the work scores the best of them
    versions: int = DEFAULT_VERSIONS
    qmax: QmaxParams = QmaxParams()
    # chunk embeddings for source "embedding": window and hop in seconds, and Qmax settings
    # (no delay embedding: each chunk already spans several seconds)
    chunk_s: float = 8.0
    hop_s: float = 2.0
    chunk_qmax: QmaxParams = QmaxParams(m=1, kappa=0.1, gap_onset=2.0, gap_extension=0.5)

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"rerank source must be one of {SOURCES}, got {self.source!r}")
        if self.first_stage not in FIRST_STAGES:
            raise ValueError(f"rerank first stage must be one of {FIRST_STAGES}, got {self.first_stage!r}")
        if self.k < 1:
            raise ValueError(f"rerank shortlist k must be >= 1, got {self.k}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"rerank weight must be in [0, 1], got {self.weight}")
        if self.pool < 0 or self.global_pool < 0:
            raise ValueError(f"rerank pools must be >= 0, got {self.pool} and {self.global_pool}")
        if not 0.0 <= self.global_weight <= 1.0:
            raise ValueError(f"rerank global_weight must be in [0, 1], got {self.global_weight}")
        if self.expand < 0 or self.expansion_weight < 0:
            raise ValueError(
                f"rerank expand and expansion_weight must be >= 0, got {self.expand} "
                f"and {self.expansion_weight}"
            )
        if self.grow_after < 0:
            raise ValueError(f"rerank grow_after must be >= 0 (0 = fixed k), got {self.grow_after}")
        if self.versions < 1:
            raise ValueError(f"rerank versions must be >= 1, got {self.versions}")


def shortlist_length(cfg: RerankConfig, n_refs: int) -> int:
    """How many references to align per query in a catalogue of ``n_refs`` recordings:
    ``cfg.k`` up to ``cfg.grow_after`` recordings, ``ceil(k * sqrt(n_refs / grow_after))``
    beyond (``grow_after`` 0: always ``k``)."""
    if cfg.grow_after <= 0 or n_refs <= cfg.grow_after:
        return cfg.k
    return int(np.ceil(cfg.k * np.sqrt(n_refs / cfg.grow_after) - 1e-9))


def identify_config(
    rerank: int | None = None, grow_after: int | None = None, versions: int | None = None
) -> RerankConfig | None:
    """``identify``'s re-ranking settings: shortlist ``rerank`` (None = :data:`DEFAULT_K`)
    growing beyond ``grow_after`` recordings (None = :data:`DEFAULT_GROW_AFTER`), up to
    ``versions`` recordings aligned per work (None = :data:`DEFAULT_VERSIONS`); None when
    ``rerank`` is 0 (re-ranking off)."""
    k = DEFAULT_K if rerank is None else rerank
    if k <= 0:
        return None
    return RerankConfig(
        k=k,
        grow_after=DEFAULT_GROW_AFTER if grow_after is None else grow_after,
        versions=DEFAULT_VERSIONS if versions is None else versions,
    )


def for_catalogue(cfg: RerankConfig, n_refs: int) -> RerankConfig:
    """``cfg`` with the shortlist length of a catalogue of ``n_refs`` recordings, fixed
    (``grow_after`` 0), so that applying it twice changes nothing."""
    if cfg.grow_after <= 0:
        return cfg
    return replace(cfg, k=shortlist_length(cfg, n_refs), grow_after=0)


# ---------------------------------------------------------------------------
# the pure parts: shortlist, fusion, re-ordered distances


def shortlist(dist_row: np.ndarray, k: int, exclude_row: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` nearest references, nearest first (ties: lower index first).

    Excluded and NaN entries never enter the shortlist.
    """
    d = np.asarray(dist_row, np.float64).copy()
    bad = np.isnan(d) if exclude_row is None else (np.isnan(d) | np.asarray(exclude_row, bool))
    d[bad] = np.inf
    n_ok = int((~bad).sum())
    order = np.argsort(d, kind="stable")
    return order[: min(k, n_ok)]


def cascade_shortlist(
    dist_row: np.ndarray,
    global_row: np.ndarray | None,
    cfg: RerankConfig,
    exclude_row: np.ndarray | None = None,
) -> np.ndarray:
    """The ``k`` references to align, chosen among the first stage's searches' candidates.

    The candidates are the ``pool`` nearest by embedding and the ``global_pool`` best by
    each chroma search (recurrence votes, 2D Fourier summary distances); the ``k`` best
    of them by the fused score (:func:`chroma_search_score` and the embedding,
    ``global_weight``) are kept.

    Parameters
    ----------
    dist_row : np.ndarray, shape (n_refs,)
        Embedding distances.
    global_row : np.ndarray, shape (n_refs,) or (n_searches, n_refs), or None
        The chroma searches' distances (smaller = closer: summary distances, minus the
        recurrence votes); None: the plain embedding top ``k``.

    Returns
    -------
    np.ndarray of int, shape (<= k,), best first by the fused score.
    """
    cand = shortlist(dist_row, max(cfg.k, cfg.pool), exclude_row)
    if global_row is None or cfg.global_weight == 0.0:
        return cand[: cfg.k]
    rows = np.atleast_2d(np.asarray(global_row, np.float64))
    if cfg.global_pool > 0:
        missing = np.isnan(np.asarray(dist_row, np.float64))
        for g in rows:
            cand = np.union1d(cand, shortlist(np.where(missing, np.nan, g), cfg.global_pool, exclude_row))
    if len(cand) <= cfg.k and cfg.global_pool == 0:
        return cand[: cfg.k]
    f = fuse(np.asarray(dist_row)[cand], chroma_search_score(rows[:, cand]), cfg.global_weight)
    return cand[np.argsort(-f, kind="stable")][: cfg.k]


def first_stage_searches(
    first_stage: str, votes: np.ndarray | None = None, summary_dist: np.ndarray | None = None
) -> np.ndarray | None:
    """The chroma searches' distances a first stage chooses its shortlist with (smaller =
    closer), stacked on the second-to-last axis: minus the recurrence ``votes`` for
    ``"recurrence"`` and ``"both"``, the 2D Fourier ``summary_dist`` for ``"summary"`` and
    ``"both"`` (and for ``"recurrence"`` without votes). Inputs (..., n_refs), the same
    shape; output (..., n_searches, n_refs), or None when there is neither."""
    searches = []
    if first_stage in ("recurrence", "both") and votes is not None:
        searches.append(-np.asarray(votes, np.float64))
    if summary_dist is not None and (first_stage != "recurrence" or votes is None):
        searches.append(np.asarray(summary_dist, np.float64))
    return np.stack(searches, axis=-2) if searches else None


def chroma_search_score(glob: np.ndarray) -> np.ndarray:
    """One score (larger = closer) from the chroma searches' distances of the same items,
    (n_items,) or (n_searches, n_items): the mean of their z-scores over the items."""
    rows = np.atleast_2d(np.asarray(glob, np.float64))
    return np.mean([zscore(-g) for g in rows], axis=0)


def first_stage_distances(dist: np.ndarray, glob: np.ndarray | None, cfg: RerankConfig) -> np.ndarray:
    """What the alignment score is fused with, as distances (smaller = closer): the
    embedding distances ``dist``, or, with 2D Fourier summary distances ``glob`` (same
    items), minus the score :func:`cascade_shortlist` chose the shortlist by."""
    if glob is None or cfg.global_weight == 0.0:
        return np.asarray(dist, np.float64)
    return -fuse(dist, chroma_search_score(glob), cfg.global_weight)


def first_stage_matrix(dist: np.ndarray, glob: np.ndarray | None, cfg: RerankConfig) -> np.ndarray:
    """:func:`first_stage_distances` of many queries at once: row i fuses query i's
    distances to every item over that row's finite entries (NaN ones, e.g. a query
    against itself, stay NaN and take no part).

    Parameters
    ----------
    dist, glob : np.ndarray, shape (n_queries, n_items)
        Embedding and 2D Fourier summary distances (``glob`` None: the embedding alone).

    Returns
    -------
    np.ndarray, shape (n_queries, n_items): smaller = closer.
    """
    dist = np.asarray(dist, np.float64)
    out = np.full(dist.shape, np.nan)
    for i in range(len(dist)):
        ok = np.isfinite(dist[i]) if glob is None else np.isfinite(dist[i]) & np.isfinite(glob[i])
        if ok.any():
            out[i, ok] = first_stage_distances(dist[i, ok], None if glob is None else glob[i, ok], cfg)
    return out


def zscore(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std over the items; all zeros when x is constant or empty."""
    x = np.asarray(x, np.float64)
    if x.size == 0:  # an empty shortlist (e.g. a one-recording catalogue): nothing to scale
        return x.copy()
    sd = x.std()
    return np.zeros_like(x) if sd < 1e-12 else (x - x.mean()) / sd


def fuse(embed_dist: np.ndarray, align_score: np.ndarray, weight: float) -> np.ndarray:
    """Fused score of shortlisted items (larger = better), see the module docstring."""
    return (1.0 - weight) * zscore(-np.asarray(embed_dist)) + weight * zscore(align_score)


def anchor_expansion(fused: np.ndarray, anchor: int, anchor_scores: np.ndarray, weight: float) -> np.ndarray:
    """Fused scores raised by each item's alignment with the anchor (query expansion).

    Parameters
    ----------
    fused : np.ndarray, shape (k,)
        Fused scores of the shortlist (larger = better).
    anchor : int
        Position of the anchor in the shortlist (normally ``argmax(fused)``).
    anchor_scores : np.ndarray, shape (k - 1,)
        Alignment scores of the anchor with the other items, in shortlist order.
    weight : float

    Returns
    -------
    np.ndarray, shape (k,): ``fused + weight * z``, where ``z`` is the z-score of
    ``anchor_scores`` over the other items and the anchor's own ``z`` is their maximum
    (it keeps its lead rather than gaining from matching itself).
    """
    z = zscore(anchor_scores)
    own = z.max() if len(z) else 0.0
    return np.asarray(fused, np.float64) + weight * np.insert(z, anchor, own)


def reordered_distances(dist_row: np.ndarray, head: np.ndarray) -> np.ndarray:
    """A distance row that ranks ``head`` first, in its order, and the rest as before.

    Parameters
    ----------
    dist_row : np.ndarray, shape (n_refs,)
    head : np.ndarray of int, shape (k,)
        Re-ordered shortlist.

    Returns
    -------
    np.ndarray, shape (n_refs,)
        ``r / k`` at ``head[r]``; ``1 + d - min(d)`` elsewhere (NaN stays NaN).
    """
    d = np.asarray(dist_row, np.float64)
    out = d.copy()
    finite = np.isfinite(d)
    lo = d[finite].min() if finite.any() else 0.0
    out[finite] = 1.0 + d[finite] - lo
    out[head] = np.arange(len(head)) / max(1, len(head))
    return out


def rerank_row(
    dist_row: np.ndarray,
    score_fn,
    cfg: RerankConfig,
    exclude_row: np.ndarray | None = None,
    global_row: np.ndarray | None = None,
    *,
    neighbours=None,
    anchor_scores=None,
) -> np.ndarray:
    """Re-rank one query's distance row (steps 1 to 5 of the module docstring).

    Parameters
    ----------
    dist_row : np.ndarray, shape (n_refs,)
        Embedding distances.
    score_fn : callable (np.ndarray of ref indices) -> np.ndarray of scores (larger = closer)
    cfg : RerankConfig
    exclude_row : bool array (n_refs,), optional
    global_row : np.ndarray, shape (n_refs,) or (n_searches, n_refs), optional
        The chroma searches' distances, for :func:`cascade_shortlist`.
    neighbours : callable (ref index, n, blocked bool array (n_refs,)) -> ref indices, optional
        The ``n`` references nearest to a reference by the 2D Fourier summary, nearest
        first, none of them blocked; with ``cfg.expand`` > 0 they join the shortlist.
    anchor_scores : callable (ref index, np.ndarray of ref indices) -> scores, optional
        Alignment of a reference with others; with ``cfg.expansion_weight`` > 0, see
        :func:`anchor_expansion`.

    Returns
    -------
    np.ndarray, shape (n_refs,): see :func:`reordered_distances`.
    """
    d = np.asarray(dist_row, np.float64)
    cfg = for_catalogue(cfg, len(d))
    sl = cascade_shortlist(d, global_row, cfg, exclude_row)
    if len(sl) == 0:
        return d.copy()
    glob = None if global_row is None else np.asarray(global_row, np.float64)

    def fused_of(items, scores):
        first = first_stage_distances(d[items], None if glob is None else glob[..., items], cfg)
        return fuse(first, scores, cfg.weight)

    scores = np.asarray(score_fn(sl), np.float64)
    fused = fused_of(sl, scores)
    if cfg.expand > 0 and neighbours is not None:
        blocked = np.isnan(d) if exclude_row is None else (np.isnan(d) | np.asarray(exclude_row, bool))
        blocked[sl] = True
        new = np.asarray(neighbours(int(sl[np.argmax(fused)]), cfg.expand, blocked), np.int64)
        if len(new):
            sl = np.concatenate([sl, new])
            scores = np.concatenate([scores, np.asarray(score_fn(new), np.float64)])
            fused = fused_of(sl, scores)
    if cfg.expansion_weight > 0 and anchor_scores is not None and len(sl) > 2:
        a = int(np.argmax(fused))
        fused = anchor_expansion(
            fused, a, np.asarray(anchor_scores(int(sl[a]), np.delete(sl, a))), cfg.expansion_weight
        )
    head = sl[np.argsort(-fused, kind="stable")]
    return reordered_distances(d, head)


# ---------------------------------------------------------------------------
# per-recording data and the re-ranker used by evaluate / identify


def alignment_features(feat, chroma_params=CHROMA_SPEC, fine: dict | None = None) -> AlignmentFeatures:
    """Chroma alignment data of a recording: its CQT file (``.npy``) or array, and its fine
    chroma views.

    ``chroma_params``: a chroma spec (:data:`coverhunter.chroma.CHROMA_SPEC`, the views
    side by side), or, for an index written before the fine chroma existed, the
    ``(lowest_octave, power)`` of :func:`coverhunter.classical.chroma_from_cqt` (an
    index's own, :attr:`coverhunter.index.chroma_store.IndexChroma.params`, for a query
    against it). ``fine``: the
    recording's fine views (:func:`coverhunter.chroma.audio_chroma`); when None and
    ``feat`` is a path, they are read from the file ``extract`` wrote beside it.
    """
    cqt = feat if isinstance(feat, np.ndarray) else np.load(feat, mmap_mode="r")  # array or path
    if isinstance(chroma_params, str):
        views = fine_views(chroma_params)
        if fine is None and views:
            fine = None if isinstance(feat, np.ndarray) else load_chroma(chroma_path(feat), views)
            if fine is None:
                where = "this CQT array" if isinstance(feat, np.ndarray) else str(chroma_path(feat))
                raise ValueError(
                    f"no fine chroma ({', '.join(views)}) for {where}: features "
                    "extracted before it existed; run extract again"
                )
        return AlignmentFeatures.from_chroma(spec_chroma(chroma_params, np.asarray(cqt), fine or {}))
    lowest, power = chroma_params
    return AlignmentFeatures.from_chroma(
        chroma_from_cqt(np.asarray(cqt), lowest_octave=int(lowest), power=float(power))
    )


def summary_params(params) -> tuple:
    """What a 2D Fourier summary reads under chroma ``params``, as a projection records it:
    a spec's first view (the CQT's chroma parameters, or ``(view,)`` for a fine view);
    an old index's ``(lowest_octave, power)`` as they are."""
    if isinstance(params, str):
        first = params.split("|")[0]
        return CHROMA_PARAMS if first == CQT_VIEW else (first,)
    return tuple(params)


def summary_chroma(chroma: np.ndarray) -> np.ndarray:
    """The chroma a 2D Fourier summary reads: the first view of stacked chroma (T, 12)."""
    return np.asarray(chroma)[:, :N_CHROMA]


def global_summaries(align: list, projection=None) -> np.ndarray:
    """2D Fourier summaries (n, D) of recordings' alignment data, for :func:`cascade_shortlist`;
    ``projection`` (a model's :class:`coverhunter.classical.SummaryProjection`) maps them
    to (n, k) first."""
    if not align:
        return np.zeros((0, 1))
    if projection is None:
        return np.stack([fourier_summary(summary_chroma(a.chroma)) for a in align])
    return projection(np.stack([projection.summarise(summary_chroma(a.chroma)) for a in align]))


def summary_columns(stored_patches, patches) -> np.ndarray | None:
    """Columns of a stored :func:`coverhunter.classical.multiscale_summary` (made with
    ``stored_patches``) that form the summary of ``patches``; None if one is missing."""
    starts, pos = {}, 0
    for p in stored_patches:
        starts[int(p)] = pos
        pos += summary_size([p])
    if any(int(p) not in starts for p in patches):
        return None
    return np.concatenate([np.arange(starts[int(p)], starts[int(p)] + summary_size([p])) for p in patches])


def chunk_windowing(cfg, rr: RerankConfig):
    """Short windows for the embedding alignment, from a model config (``Config``)."""
    from .embed import Windowing

    fps = cfg.features.frames_per_second
    return Windowing(max(1, round(rr.chunk_s * fps)), max(1, round(rr.hop_s * fps)), cfg.data.mean_size)


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
    """L2-normalised short-chunk embeddings (n_chunks, E) of each recording."""
    from .embed import EmbeddingCache, embed_tracks, l2_normalise

    win = chunk_windowing(cfg, rr)
    cache = EmbeddingCache(cache_dir, fingerprint, win) if cache_dir and fingerprint else None
    was = model.training
    model.eval()
    try:
        out = embed_tracks(
            model,
            feats,
            win,
            device=device,
            batch_size=cfg.eval.batch_size,
            cache=cache,
            verbose=verbose,
            desc="embed short chunks",
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
    choose the shortlist among the ``pool`` nearest (:func:`cascade_shortlist`). The time
    spent re-scoring is accumulated in ``seconds``.

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
    symmetric: bool = False
    seconds: float = 0.0
    n_queries: int = 0
    n_pairs: int = 0
    n_computed: int = 0
    k_used: int = 0  # the shortlist length of the last block's catalogue (shortlist_length)
    _checked: bool = field(default=False, repr=False)
    _pairs: dict = field(default_factory=dict, repr=False)  # (i, j), i < j -> per-source scores

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

    def anchor_scores(self, ri: int, refs: np.ndarray) -> np.ndarray:
        """Alignment scores of reference ``ri`` (an anchor) against other reference indices."""
        return self._align(
            ri,
            None if self.ref_align is None else self.ref_align[ri],
            None if self.ref_chunks is None else self.ref_chunks[ri],
            refs,
        )

    def neighbours(self, ri: int, n: int, blocked: np.ndarray) -> np.ndarray:
        """The ``n`` references nearest to reference ``ri`` by the 2D Fourier summary, none
        blocked and not ``ri`` itself; empty without summaries."""
        if self.ref_summary is None:
            return np.zeros(0, np.int64)
        d = euclidean_distances(self.ref_summary[ri : ri + 1], self.ref_summary)[0]
        d[np.asarray(blocked, bool)] = np.inf
        d[ri] = np.inf
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
            self.cfg.first_stage, None if self.votes is None else self.votes[rows], summ
        )  # (b, n_searches, n_refs)
        for r in range(len(dist)):
            ex = None if exclude is None else exclude[r]
            out[r] = rerank_row(
                dist[r],
                lambda refs, qi=start + r: self.scores(qi, refs),
                self.cfg,
                ex,
                None if glob is None else glob[r],
                neighbours=self.neighbours,
                anchor_scores=self.anchor_scores,
            )
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
        return (
            f"re-ranked {self.n_queries} queries (top {self.k_used or self.cfg.k}, {self.cfg.source}, "
            f"weight {self.cfg.weight}, expand {self.cfg.expand}, expansion weight "
            f"{self.cfg.expansion_weight}): {self.seconds:.2f} s, {per * 1e3:.1f} ms and "
            f"{pairs:.0f} alignments per query{shared}"
        )


def recurrence_chroma(align: AlignmentFeatures, spec) -> np.ndarray:
    """The view of a recording's alignment chroma that recurrence voting searches, (T, 12)
    (:func:`coverhunter.chroma.search_view` of the chroma ``spec`` it was made with)."""
    return view_of(align.chroma, search_view(spec))


def recurrence_votes(queries: list, refs: list | None, spec, verbose: bool = False) -> np.ndarray:
    """The first stage's recurrence votes of queries for references (their
    :class:`AlignmentFeatures`, made with chroma ``spec``; ``refs`` None: all-vs-all, a
    query never votes for itself): (n_queries, n_refs), larger = closer
    (:func:`coverhunter.index.recurrence.vote_matrix`)."""
    t0 = time.perf_counter()
    q = [recurrence_chroma(a, spec) for a in queries]
    r = None if refs is None else [recurrence_chroma(a, spec) for a in refs]
    votes = vote_matrix(q, r, verbose=verbose)
    log.info("recurrence votes of %d queries in %.1f s", len(q), time.perf_counter() - t0)
    return votes


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
    if cascade:
        rk.query_summary = global_summaries(rk.query_align, projection)
        rk.ref_summary = rk.query_summary if refs is None else global_summaries(rk.ref_align, projection)
    if cascade and rr.global_weight > 0 and rr.first_stage in ("recurrence", "both"):
        rk.votes = recurrence_votes(rk.query_align, None if refs is None else rk.ref_align, spec, verbose)
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


# ---------------------------------------------------------------------------
# the catalogue index: compact per-recording chroma beside each shard, and identify

CHROMA_SUFFIX = ".chroma.npz"  # shard_00000.chroma.npz beside shard_00000.npy / .jsonl


def compact_chroma(feat, fine: dict | None = None, spec: str = CHROMA_SPEC) -> np.ndarray:
    """What the index keeps per recording for re-ranking: uint8 chroma (T, 12 k), 30 bytes/s
    per view, made with the chroma ``spec`` (:data:`coverhunter.chroma.CHROMA_SPEC`).

    ``feat``: a CQT array (frames, 96) or the path of its ``.npy`` file; ``fine``: the
    recording's fine chroma views (see :func:`alignment_features`).
    """
    from .classical import chroma_to_uint8

    return chroma_to_uint8(alignment_features(feat, spec, fine).chroma)


def as_stored(query: AlignmentFeatures) -> AlignmentFeatures:
    """``query``'s alignment data as a catalogue recording's are once its chroma went
    through the index's uint8 storage (:func:`compact_chroma`, read back by
    :meth:`coverhunter.index.chroma_store.IndexChroma.get`): what a calibration aligns a
    query with."""
    from .classical import chroma_from_uint8, chroma_to_uint8

    return AlignmentFeatures.from_chroma(chroma_from_uint8(chroma_to_uint8(query.chroma)))


def write_shard_chroma(root, shard: str, chromas: list[np.ndarray], spec: str = CHROMA_SPEC) -> None:
    """Chroma of a shard's recordings (in its ``.jsonl`` order), one file, written atomically.

    ``data``: all recordings' uint8 chroma concatenated (sum T, 12 k), made by
    :func:`compact_chroma` with the chroma spec in ``chroma_spec`` (files written before
    it existed hold ``chroma_params``: lowest octave and power of the CQT's chroma);
    ``offsets``: (n + 1,); ``summary``: their 2D Fourier summaries (n, D) float16, made with
    the patch lengths in ``summary_patches`` (:data:`coverhunter.classical.SUMMARY_PATCHES`;
    any model's projection reads the columns of its own patches, :func:`summary_columns`).
    """
    import io
    from pathlib import Path

    from .classical import chroma_from_uint8
    from .utils import atomic_write_bytes

    offsets = np.cumsum([0] + [len(c) for c in chromas]).astype(np.int64)
    data = np.concatenate(chromas) if chromas else np.zeros((0, 12), np.uint8)
    # 2D Fourier summaries (n, D) for the global candidates of identify, from the stored chroma
    summaries = (
        np.stack([multiscale_summary(summary_chroma(chroma_from_uint8(c)), SUMMARY_PATCHES) for c in chromas])
        if chromas
        else np.zeros((0, summary_size(SUMMARY_PATCHES)), np.float32)
    )
    buf = io.BytesIO()
    np.savez(
        buf,
        data=data.astype(np.uint8),
        offsets=offsets,
        summary=summaries.astype(np.float16),
        summary_patches=np.asarray(SUMMARY_PATCHES, np.int64),
        chroma_spec=np.str_(spec),
    )
    atomic_write_bytes(Path(root) / f"{shard}{CHROMA_SUFFIX}", buf.getvalue())


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
) -> list:
    """Re-order a query's best matches (best first) by chroma alignment.

    The first ``cfg.pool`` matches are the candidates; the ``cfg.k`` of them chosen by
    :func:`cascade_shortlist` (embedding and 2D Fourier summary) are aligned and placed
    first, ordered by the fused score; the other candidates follow in their embedding
    order, then the rest, unchanged.

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
    refs = [lookup(m.track_id) for m in cand]
    have = [i for i, r in enumerate(refs) if r is not None]
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
        glob = first_stage_searches(cfg.first_stage, v, g)  # (n_searches, n_candidates)
    sl = cascade_shortlist(dist, glob, cfg)
    chosen = set(int(i) for i in sl)
    others = [m for i, m in enumerate(cand) if i not in chosen] + rest
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

    The shortlist length is that of the catalogue's size (:func:`for_catalogue`). The
    search asks for ``cfg.pool`` works (at least ``top`` and that length), and the
    ``cfg.global_pool`` works the chroma search found join them with their embedding
    scores, so that :func:`rerank_matches` can choose the shortlist among both: the most
    voted by recurrence voting (first stage ``"recurrence"``,
    :meth:`~coverhunter.index.chroma_store.IndexChroma.work_votes`; the index is built at
    the first search after a change), or the recordings nearest by the 2D Fourier summary
    (``"summary"``).

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
    cfg = for_catalogue(cfg, index.meta["n_tracks"])
    matches = index.search(emb, starts, max(top, cfg.k, cfg.pool), approximate)
    extra, votes = None, None
    q_summary = chroma.query_summary(query) if cfg.global_weight > 0 else None  # once per query
    found_ids = []
    if cfg.first_stage in ("recurrence", "both") and cfg.global_weight > 0:
        found = chroma.work_votes(query)
        votes = {w: v for w, (_, v) in found.items()}
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
    )[:top]


__all__ = [
    "RerankConfig",
    "Reranker",
    "shortlist",
    "cascade_shortlist",
    "zscore",
    "fuse",
    "reordered_distances",
    "rerank_row",
    "anchor_expansion",
    "first_stage_distances",
    "first_stage_matrix",
    "alignment_features",
    "global_summaries",
    "summary_columns",
    "chunk_embeddings",
    "chunk_windowing",
    "build_reranker",
    "DEFAULT_K",
    "DEFAULT_WEIGHT",
    "DEFAULT_POOL",
    "DEFAULT_GLOBAL_POOL",
    "DEFAULT_GLOBAL_WEIGHT",
    "DEFAULT_EXPAND",
    "DEFAULT_EXPANSION_WEIGHT",
    "DEFAULT_GROW_AFTER",
    "shortlist_length",
    "for_catalogue",
    "identify_config",
    "compact_chroma",
    "as_stored",
    "write_shard_chroma",
    "rerank_matches",
    "search_reranked",
    "version_choice",
    "DEFAULT_VERSIONS",
    "CHROMA_SUFFIX",
]
