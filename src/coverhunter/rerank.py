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
   free). ``global_weight`` 0 (or ``pool`` <= ``k``) is the plain top ``k``. In a
   catalogue of up to ``scan_below`` recordings (:data:`DEFAULT_SCAN_BELOW`) the **scan**
   (:func:`scans`) joins them as a third chroma search: the query aligned coarsely (as in
   step 1b) with every recording, which puts more covers in the shortlist.
   The shortlist grows with the catalogue: beyond ``grow_after`` recordings, ``k`` becomes
   ``k * sqrt(n / grow_after)`` (:func:`shortlist_length`), because the first stage leaves
   more covers outside a fixed ``k`` the larger the catalogue; the cost per query still
   grows far slower than aligning the whole catalogue.

   1b. **Coarse pass** (``coarse_keep`` > 0, where the caller can align coarsely): every
   shortlisted item is first aligned on one chroma view at ``coarse_block`` times fewer
   frames (:meth:`coverhunter.qmax.AlignmentFeatures.coarse`, ``coarse_qmax``), fused
   with the first stage as in step 3, and only the best ``coarse_keep`` share, never
   fewer than ``coarse_min`` items, goes on to the full alignment; the rest follow it in
   that fused order (:func:`coarse_count`, :func:`coarse_cut`). A shortlist of at most
   ``coarse_min`` items (a catalogue of up to ``grow_after`` recordings at the defaults)
   has no coarse pass. Beyond ``widen_after`` recordings the shortlist is ``widen`` times
   longer and the pass keeps ``coarse_keep / widen`` of it: as many aligned in full,
   chosen among more (:func:`for_catalogue`).
2. **Alignment score** of each shortlisted reference, over whole tracks (no cut):
   ``"chroma"``: Qmax over the chroma cross-recurrence plot (transposed by the OTI,
   :mod:`coverhunter.qmax`); ``"embedding"``: Qmax over the cross-recurrence plot of
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
   work, and other versions resemble it as much as they resemble the query. ``expand``
   recordings near it join the shortlist and are aligned with the query (covers the
   first stage missed): a share ``expand_votes`` the most voted by its own recurrence
   votes (searched with every ``expand_votes_stride``-th of its shingles where they are
   not rows of a vote matrix already computed), the rest its nearest by the 2D Fourier
   summary; then every shortlisted item
   gains ``expansion_weight * z(alignment with the anchor)`` (query expansion, Chum et
   al. 2007; the transitivity of cover-song networks, Serra et al. 2012). It costs
   ``expand`` + ``k + expand - 1`` more alignments per query, about three times the plain
   re-ranking at the defaults; ``expansion_top`` > 0 aligns only the best that many
   items by the fused score with the anchor (the others gain nothing). ``identify`` ranks
   works, one entry per work, so the anchor's other versions are not in its list: it does
   not expand.
5. **Re-ordering**: the shortlist is sorted by the fused score and placed first; every
   reference outside it keeps its embedding order (and ties) after it. Nothing is
   dropped: the output is a distance row with the same entries, only re-ordered.

The re-ordered row is returned as distances: ``r / k`` for the shortlisted item at
position ``r`` (in [0, 1)), ``1 + d - min(d)`` for the others (>= 1), so every metric
and every tie rule sees the new order.

This module is the maths alone (numpy and :mod:`coverhunter.qmax`; no torch, no
file, no index): the settings (:class:`RerankConfig` and the defaults, with how each was
chosen) and the functions of arrays above. Its users bring the data:

- :mod:`coverhunter.reranker`: evaluation's re-ranker (:class:`~coverhunter.reranker.Reranker`,
  :func:`~coverhunter.reranker.build_reranker`), all recordings' chroma, summaries,
  recurrence votes and chunk embeddings from their feature files, each query's row
  re-ordered by :func:`rerank_row`;
- :mod:`coverhunter.index.reranked_search`: ``identify``'s re-ranking of a catalogue
  search (:func:`~coverhunter.index.reranked_search.search_reranked`), the index's stored
  chroma (:mod:`coverhunter.index.chroma_format`, read by
  :class:`coverhunter.index.chroma_store.IndexChroma`) aligned with the query; a work is
  aligned through up to ``versions`` of its recordings and scores the best;
- :mod:`coverhunter.alignment_inputs`: a recording's alignment data and 2D Fourier
  summaries, from its feature files.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .qmax import QmaxParams

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
# Beyond grow_after recordings each chroma search's global_pool grows with the shortlist
# (for_catalogue), as the embedding's candidates (max(k, pool)) did: on clean training-type
# catalogues (`bench_catalogue_tune.py --distractor-offset 20088`, 300 queries; MAP / the
# shortlist's recall of the covers on 60 of them, benchmarks/results/catalogue-tune.md)
# 0.2881 / 0.382 -> 0.2949 / 0.400 at 10,000 recordings (shortlist 236), 0.3615 -> 0.3633 at
# 4,000 (150), 0.3825 -> 0.3835 at 1,800 (100), at the same alignments a query
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
# Then the anchor's own recurrence votes (expand_votes): on the training-type catalogue of
# 5,000 recordings below (benchmarks/results/catalogue-tune.md) a hop of 50, half by the
# anchor's votes, half by its summary, with the anchor re-scoring the best 75: MAP 0.3206
# against 0.3064 (25 by the summary, best 100) at the same 292 alignments a query; 25 by
# the summary alone to 50: 0.3129; 13 + 12: 0.3156
DEFAULT_EXPAND = 50
DEFAULT_EXPAND_VOTES = 0.5
DEFAULT_EXPANSION_WEIGHT = 0.5
# shortlisted items aligned with the anchor: on a training-type catalogue of 5,000
# recordings (`benchmarks/bench_catalogue_tune.py --distractors 5000`: bench_catalogue's
# distractors alone, 300 of them as queries; shortlist 167), MAP 0.308 aligning all of them
# (383 alignments, 188 ms a query), 0.306 the best 100 (292, 138 ms), 0.303 the best 50
# (242, 110 ms); a shortlist growing more slowly (84 there) lost more (0.293, 103 ms).
# With the hop above: the best 75 0.3206 (292 alignments), all 100 0.3224 (317)
DEFAULT_EXPANSION_TOP = 75
# the anchor's own vote search (expand_votes > 0, where it is searched: a catalogue, or
# queries against references) with every 4th of its shingles instead of every 2nd, at its
# own tempo only: on that catalogue with the hop above, MAP 0.3206 at 164 ms a query
# against 0.3216 at 187 ms (0.3064 at 134 ms without the anchor's votes; catalogue-tune.md;
# the queries' votes then searched every 2nd shingle at one rate, since commit 6d34528
# every 4th at three rates, RecurrenceParams)
DEFAULT_EXPAND_VOTES_STRIDE = 4
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
# the coarse pass (step 1b): the shortlist aligned first on one view at half the frame rate
# (AlignmentFeatures.coarse: about a sixth of the cost), and only the best share of it by
# that fused score, never fewer than coarse_min items, aligned in full. On the clean
# training-type catalogue of 4,000 recordings (`bench_catalogue_tune.py --distractors 4000
# --distractor-offset 20088`, shortlist 150, 300 queries; benchmarks/results/catalogue-tune.md):
# MAP 0.3626 aligning all 150 (275 alignments, 139 ms a query), 0.3617 at share 0.5, 0.3615
# at 0.4 (185 and 150 coarse, 107 ms), 0.3611 at 0.3, 0.3570 at 0.2. On the two small
# training-type corpora (`bench_accuracy.py --tune --tune-coarse`, 272 and 240 recordings,
# shortlist 50) any cut of the 50 lost MAP (0.5851 -> 0.5581 and 0.5467 -> 0.5242 at 0.4),
# for little (175 -> 139 alignments): the pass only cuts shortlists grown beyond coarse_min
DEFAULT_COARSE_KEEP = 0.4
DEFAULT_COARSE_MIN = DEFAULT_K
DEFAULT_COARSE_BLOCK = 2
# beyond widen_after recordings the coarse pass scans widen times the shortlist and keeps
# coarse_keep / widen of it, so that as many are aligned in full (for_catalogue): on clean
# training-type catalogues (`bench_catalogue_tune.py --distractor-offset 20088 --variant
# scan2 k=100,coarse_keep=0.2`, 300 queries; benchmarks/results/catalogue-tune.md) MAP
# 0.3835 -> 0.3847 at 1,800 recordings, 0.3633 -> 0.3619 at 4,000, 0.3384 -> 0.3403 at
# 6,000 (116 -> 125 ms a query), 0.2949 -> 0.3056 at 10,000 (119 -> 156 ms) and 0.2526 ->
# 0.2610 at 20,000 (162 -> 188 ms): it pays only where the shortlist outgrows what the
# full alignment gets
DEFAULT_WIDEN_AFTER = 5000
DEFAULT_WIDEN = 2.0
# up to scan_below recordings the first stage also scans: the coarse alignment
# (coarse_block, coarse_qmax, one view) of the query with every recording, a third chroma
# search beside the votes and the summary, whose scores the coarse pass then reuses. On
# three training-type corpora of works the model never trained on (`bench_accuracy.py
# --tune --tune-data ... --tune-scan 0 5000`, benchmarks/results/first-stage-tune.md; 272,
# 240 and 1,111 recordings) the fused shortlist's recall rose by 0.04-0.07, the MAP
# without expansion (identify's search) by +0.005 / +0.019 / +0.023, with expansion by
# +0.002 / -0.000 / +0.007. (Replacing the votes instead, commit bf013a0: the same recall,
# MAP -0.006 to +0.012.) Its cost: about 0.08 ms of one core per recording and query, so
# at most about 160 ms a query here; beyond, the votes and the summary alone. Checked on
# the held-out test corpora afterwards (benchmarks/results/accuracy-w60.md,
# accuracy-w300.md): MAP without expansion 0.412 -> 0.428, 0.903 -> 0.924, 0.707 -> 0.697
# at 367 / 367 / 182 recordings and 0.255 -> 0.269 at 1,834
DEFAULT_SCAN_BELOW = 2000


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
    # the share of those ``expand`` recordings taken from the anchor's own recurrence votes
    # (the most voted, the rest by the summary); 0 = all by the summary
    expand_votes: float = DEFAULT_EXPAND_VOTES
    # the anchor's vote search: every expand_votes_stride-th of its shingles searches, at
    # its own tempo only (a query's own votes: RecurrenceParams.query_stride and
    # query_rates); unused where the anchor's votes are rows of an all-vs-all vote matrix
    # (evaluate without references)
    expand_votes_stride: int = DEFAULT_EXPAND_VOTES_STRIDE
    expansion_weight: float = DEFAULT_EXPANSION_WEIGHT
    # items aligned with the anchor: the best expansion_top by the fused score (0 = all)
    expansion_top: int = DEFAULT_EXPANSION_TOP
    # catalogue size beyond which k grows as sqrt(n / grow_after) (0 = k whatever the size)
    grow_after: int = DEFAULT_GROW_AFTER
    # identify: recordings of each shortlisted work aligned with the query (the one the
    # search found, then the work's others nearest to the query by the 2D Fourier
    # summary); the work scores the best of them
    versions: int = DEFAULT_VERSIONS
    qmax: QmaxParams = QmaxParams()
    # the coarse pass: the share of the shortlist aligned in full, chosen by a coarse
    # alignment of all of it (0 = none); frames averaged by coarse_block, and its settings
    coarse_keep: float = DEFAULT_COARSE_KEEP
    coarse_min: int = DEFAULT_COARSE_MIN  # never fewer aligned in full (nor more than the shortlist)
    coarse_block: int = DEFAULT_COARSE_BLOCK
    coarse_qmax: QmaxParams = QmaxParams(m=4)
    # beyond widen_after recordings (0 = never) the coarse pass scans widen times the
    # grown shortlist and keeps coarse_keep / widen of it (for_catalogue)
    widen_after: int = DEFAULT_WIDEN_AFTER
    widen: float = DEFAULT_WIDEN
    # catalogues of up to scan_below recordings (0 = none): the query is aligned coarsely
    # with every recording (the scan, :func:`scans`), a chroma search beside the votes
    scan_below: int = DEFAULT_SCAN_BELOW
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
        if self.expand < 0 or self.expansion_weight < 0 or self.expansion_top < 0:
            raise ValueError(
                f"rerank expand, expansion_weight and expansion_top must be >= 0, got "
                f"{self.expand}, {self.expansion_weight} and {self.expansion_top}"
            )
        if not 0.0 <= self.expand_votes <= 1.0:
            raise ValueError(f"rerank expand_votes must be in [0, 1], got {self.expand_votes}")
        if self.expand_votes_stride < 1:
            raise ValueError(f"rerank expand_votes_stride must be >= 1, got {self.expand_votes_stride}")
        if self.grow_after < 0:
            raise ValueError(f"rerank grow_after must be >= 0 (0 = fixed k), got {self.grow_after}")
        if self.versions < 1:
            raise ValueError(f"rerank versions must be >= 1, got {self.versions}")
        if not 0.0 <= self.coarse_keep <= 1.0:
            raise ValueError(
                f"rerank coarse_keep must be in [0, 1] (0 = no coarse pass), got {self.coarse_keep}"
            )
        if self.coarse_min < 1:
            raise ValueError(f"rerank coarse_min must be >= 1, got {self.coarse_min}")
        if self.coarse_block < 1:
            raise ValueError(f"rerank coarse_block must be >= 1, got {self.coarse_block}")
        if self.widen_after < 0 or self.widen < 1.0:
            raise ValueError(
                f"rerank widen_after must be >= 0 (0 = never) and widen >= 1, got "
                f"{self.widen_after} and {self.widen}"
            )
        if self.scan_below < 0:
            raise ValueError(f"rerank scan_below must be >= 0 (0 = never), got {self.scan_below}")


def _grown_length(cfg: RerankConfig, n_refs: int) -> int:
    """``cfg.k`` up to ``cfg.grow_after`` recordings, ``ceil(k * sqrt(n_refs / grow_after))``
    beyond (``grow_after`` 0: always ``k``)."""
    if cfg.grow_after <= 0 or n_refs <= cfg.grow_after:
        return cfg.k
    return int(np.ceil(cfg.k * np.sqrt(n_refs / cfg.grow_after) - 1e-9))


def widens(cfg: RerankConfig, n_refs: int) -> bool:
    """Whether the coarse pass scans ``cfg.widen`` times the shortlist in a catalogue of
    ``n_refs`` recordings: beyond ``widen_after`` (> 0) recordings, where the shortlist
    grows (``grow_after`` > 0) and the coarse pass cuts (``coarse_keep`` > 0)."""
    return 0 < cfg.widen_after < n_refs and cfg.grow_after > 0 and cfg.coarse_keep > 0 and cfg.widen > 1.0


def scans(cfg: RerankConfig, n_refs: int) -> bool:
    """Whether the first stage scans a catalogue of ``n_refs`` recordings: up to
    ``scan_below`` of them, where the recurrence votes would search (first stage
    ``"recurrence"`` or ``"both"``, ``global_weight`` > 0). The scan aligns the query
    coarsely with every recording (the coarse pass's alignment, ``coarse_block``,
    ``coarse_qmax``): its scores are a third chroma search beside the votes and the
    summary (:func:`first_stage_searches`), in the candidates and in the fused score, and
    the coarse pass reuses them instead of aligning again. It costs
    ``n_refs`` coarse alignments a query (about a sixth of a full one each), so it pays
    only in small catalogues, where recurrence voting misses more of what alignment finds."""
    return (
        0 < n_refs <= cfg.scan_below and cfg.first_stage in ("recurrence", "both") and cfg.global_weight > 0
    )


def shortlist_length(cfg: RerankConfig, n_refs: int) -> int:
    """How many references the first stage shortlists per query in a catalogue of
    ``n_refs`` recordings (:func:`for_catalogue`): ``cfg.k`` up to ``cfg.grow_after``
    recordings, ``ceil(k * sqrt(n_refs / grow_after))`` beyond, ``widen`` times that
    beyond ``widen_after`` (:func:`widens`; ``grow_after`` 0: always ``k``)."""
    return for_catalogue(cfg, n_refs).k


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
    (``grow_after`` and ``widen_after`` 0), so that applying it twice changes nothing.

    Beyond ``grow_after`` recordings the shortlist grows as ``sqrt(n / grow_after)`` and
    each chroma search proposes candidates in the same ratio to it as at ``k``
    (``global_pool`` grows with it; the embedding's candidates, ``max(k, pool)``, already
    do). Beyond ``widen_after`` recordings (:func:`widens`) the shortlist is ``widen``
    times that and the coarse pass keeps ``coarse_keep / widen`` of it: as many items
    aligned in full, chosen by the coarse alignment among twice as many."""
    if cfg.grow_after <= 0:
        return cfg
    k = _grown_length(cfg, n_refs)
    global_pool = int(np.ceil(cfg.global_pool * k / cfg.k - 1e-9))
    fixed = replace(cfg, k=k, global_pool=global_pool, grow_after=0, widen_after=0)
    if not widens(cfg, n_refs):
        return fixed
    # the coarse pass scans widen x the shortlist and keeps 1 / widen of its share: the
    # same number aligned in full, chosen among more (the embedding's candidates,
    # max(k, pool), widen with it; each chroma search's global_pool does not)
    return replace(fixed, k=int(np.ceil(cfg.widen * k - 1e-9)), coarse_keep=cfg.coarse_keep / cfg.widen)


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
    first_stage: str,
    votes: np.ndarray | None = None,
    summary_dist: np.ndarray | None = None,
    scan: np.ndarray | None = None,
) -> np.ndarray | None:
    """The chroma searches' distances a first stage chooses its shortlist with (smaller =
    closer), stacked on the second-to-last axis: minus the recurrence ``votes`` for
    ``"recurrence"`` and ``"both"``, the 2D Fourier ``summary_dist`` for ``"summary"`` and
    ``"both"`` (and for ``"recurrence"`` without votes), and minus the ``scan``'s coarse
    alignment scores where the catalogue is scanned (:func:`scans`: a search of its own
    beside the others). Inputs (..., n_refs), the same shape; output (..., n_searches,
    n_refs), or None when there is none."""
    searches = []
    if first_stage in ("recurrence", "both") and votes is not None:
        searches.append(-np.asarray(votes, np.float64))
    if summary_dist is not None and (first_stage != "recurrence" or votes is None):
        searches.append(np.asarray(summary_dist, np.float64))
    if scan is not None:
        searches.append(-np.asarray(scan, np.float64))
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


def coarse_count(cfg: RerankConfig, n: int) -> int:
    """How many of a shortlist of ``n`` items the full alignment gets after the coarse pass:
    ``n`` without one (``coarse_keep`` 0), else ``ceil(coarse_keep * n)`` but at least
    ``coarse_min`` (and at most ``n``: a shortlist that short has no coarse pass)."""
    if cfg.coarse_keep <= 0:
        return n
    return min(n, max(cfg.coarse_min, int(np.ceil(cfg.coarse_keep * n - 1e-9))))


def coarse_cut(
    first: np.ndarray, coarse_scores: np.ndarray, cfg: RerankConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Split a shortlist by a coarse alignment (step 1b): the positions to align in full
    and the rest, best first.

    Parameters
    ----------
    first : np.ndarray, shape (k,)
        First-stage distances of the shortlisted items (:func:`first_stage_distances`).
    coarse_scores : np.ndarray, shape (k,)
        Their coarse alignment scores (larger = closer).
    cfg : RerankConfig
        ``coarse_keep``, ``coarse_min``: how many are kept (:func:`coarse_count`);
        ``weight``: the fusion's.

    Returns
    -------
    kept, dropped : np.ndarray of int
        Positions in the shortlist: the :func:`coarse_count` best by the fused coarse
        score in shortlist order, and the others in fused order, best first.
    """
    n_keep = max(1, coarse_count(cfg, len(first)))
    order = np.argsort(-fuse(first, coarse_scores, cfg.weight), kind="stable")
    return np.sort(order[:n_keep]), order[n_keep:]


def coarse_split(items: np.ndarray, first_fn, coarse_fn, cfg: RerankConfig) -> tuple[np.ndarray, np.ndarray]:
    """A shortlist split by the coarse pass (step 1b), where it cuts.

    Parameters
    ----------
    items : np.ndarray of int, shape (k,)
        The shortlist (reference indices).
    first_fn : callable (items) -> np.ndarray, shape (len(items),)
        First-stage distances of items (:func:`first_stage_distances`).
    coarse_fn : callable (items) -> np.ndarray, shape (len(items),), or None
        Coarse alignment scores of items (larger = closer); None: no coarse pass.
    cfg : RerankConfig
        The catalogue's settings (:func:`for_catalogue`).

    Returns
    -------
    kept, dropped : np.ndarray of int
        The items the full alignment gets, in shortlist order, and the others, best
        first by the fused coarse score (:func:`coarse_cut`); ``(items, [])`` where the
        pass does not cut (no ``coarse_fn``, or :func:`coarse_count` keeps them all), and
        then neither callable is called.
    """
    items = np.asarray(items, np.int64)
    if coarse_fn is None or coarse_count(cfg, len(items)) >= len(items):
        return items, np.zeros(0, np.int64)
    kept, dropped = coarse_cut(first_fn(items), np.asarray(coarse_fn(items), np.float64), cfg)
    return items[kept], items[dropped]


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
    coarse_fn=None,
    trace: dict | None = None,
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
    coarse_fn : callable (np.ndarray of ref indices) -> coarse alignment scores, optional
        With ``cfg.coarse_keep`` > 0, the coarse pass (step 1b, :func:`coarse_split`).
    trace : dict, optional
        Filled with what the first stage passed on: ``"shortlist"`` (reference indices,
        best first by the first stage) and ``"aligned"`` (those of them the full alignment
        got, before expansion: the coarse pass's best share, else all of them).

    Returns
    -------
    np.ndarray, shape (n_refs,): see :func:`reordered_distances`.
    """
    d = np.asarray(dist_row, np.float64)
    cfg = for_catalogue(cfg, len(d))
    sl = cascade_shortlist(d, global_row, cfg, exclude_row)
    if trace is not None:
        trace.update(shortlist=sl, aligned=sl)
    if len(sl) == 0:
        return d.copy()
    glob = None if global_row is None else np.asarray(global_row, np.float64)

    def first_of(items):
        return first_stage_distances(d[items], None if glob is None else glob[..., items], cfg)

    def fused_of(items, scores):
        return fuse(first_of(items), scores, cfg.weight)

    sl, tail = coarse_split(sl, first_of, coarse_fn, cfg)  # tail: placed after the aligned items
    if trace is not None:
        trace["aligned"] = sl
    scores = np.asarray(score_fn(sl), np.float64)
    fused = fused_of(sl, scores)
    if cfg.expand > 0 and neighbours is not None:
        blocked = np.isnan(d) if exclude_row is None else (np.isnan(d) | np.asarray(exclude_row, bool))
        blocked[sl] = True
        blocked[tail] = True
        new = np.asarray(neighbours(int(sl[np.argmax(fused)]), cfg.expand, blocked), np.int64)
        if len(new):
            sl = np.concatenate([sl, new])
            scores = np.concatenate([scores, np.asarray(score_fn(new), np.float64)])
            fused = fused_of(sl, scores)
    if cfg.expansion_weight > 0 and anchor_scores is not None and len(sl) > 2:
        a = int(np.argmax(fused))
        others = np.delete(np.arange(len(sl)), a)  # positions, in shortlist order
        if 0 < cfg.expansion_top < len(others):  # the best by the fused score; the rest get 0
            others = np.sort(others[np.argsort(-fused[others], kind="stable")[: cfg.expansion_top]])
        bonus = anchor_expansion(np.zeros(len(others) + 1), 0, anchor_scores(int(sl[a]), sl[others]), 1.0)
        gain = np.zeros(len(sl))
        gain[others], gain[a] = bonus[1:], bonus[0]
        fused = fused + cfg.expansion_weight * gain
    head = np.concatenate([sl[np.argsort(-fused, kind="stable")], tail])
    return reordered_distances(d, head)


__all__ = [
    "RerankConfig",
    "shortlist",
    "cascade_shortlist",
    "first_stage_searches",
    "chroma_search_score",
    "zscore",
    "fuse",
    "reordered_distances",
    "coarse_count",
    "scans",
    "coarse_cut",
    "coarse_split",
    "rerank_row",
    "anchor_expansion",
    "first_stage_distances",
    "first_stage_matrix",
    "DEFAULT_K",
    "DEFAULT_WEIGHT",
    "DEFAULT_POOL",
    "DEFAULT_GLOBAL_POOL",
    "DEFAULT_GLOBAL_WEIGHT",
    "DEFAULT_EXPAND",
    "DEFAULT_EXPAND_VOTES",
    "DEFAULT_EXPAND_VOTES_STRIDE",
    "DEFAULT_EXPANSION_WEIGHT",
    "DEFAULT_EXPANSION_TOP",
    "DEFAULT_GROW_AFTER",
    "DEFAULT_VERSIONS",
    "DEFAULT_FIRST_STAGE",
    "DEFAULT_COARSE_KEEP",
    "DEFAULT_COARSE_MIN",
    "DEFAULT_COARSE_BLOCK",
    "DEFAULT_SCAN_BELOW",
    "FIRST_STAGES",
    "SOURCES",
    "shortlist_length",
    "widens",
    "for_catalogue",
    "identify_config",
]
