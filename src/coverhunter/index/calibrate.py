"""Calibrating an index and the matches it answers with.

:func:`calibrate` fits an index's calibration on a labelled set (``index calibrate``,
``index build --calibrate``) and commits it to ``meta.json``: the embedding part (best
chunk-pair scores of every pair) and, when the index stores chroma, the alignment part
(chroma alignment scores of the pairs a re-ranked search would align).
:func:`calibrated` gives a search's matches their probability and p-value from the
embedding part, :func:`calibrated_alignments` gives aligned matches theirs from the
alignment part, which :func:`alignment_calibration` returns only while it fits the index's
alignment settings and chroma. The statistics themselves are in :mod:`.calibration`.

Each function takes the index (a :class:`~coverhunter.index.CatalogueIndex`); the index's
methods of the same names call them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace

import numpy as np

from ..checkpoint import LoadedModel
from ..dataset import Track
from ..embed import EmbeddingCache
from .calibration import (
    ALIGNMENT_MAX_RECORDINGS,
    MIN_STRANGERS,
    SELECTED_FRACTION,
    alignment_pairs,
    fit_calibration,
    p_impostors,
    probability_same,
)
from .embedding import embed_recordings
from .results import CatalogueError, Match

log = logging.getLogger(__name__)


def calibrate(
    index,
    lm: LoadedModel,
    tracks: list[Track],
    device="cpu",
    cache: EmbeddingCache | None = None,
    prior: float | None = None,
    max_aligned: int = ALIGNMENT_MAX_RECORDINGS,
) -> dict:
    """Fit same-work / different-work score distributions on a labelled set (not the
    catalogue itself, to avoid optimism) and store them in the index (see the
    assumptions above :func:`fit_calibration`).

    When the index stores chroma (re-ranking), the chroma alignment scores of the
    set's pairs are fitted as well (``calibration["alignment"]``): every same-work
    pair, and each recording with the nearest tenth (at least 20) of the other works'
    recordings by the search's first stage (embedding and summary), as a search aligns the
    strangers most like the query (at most ``max_aligned`` recordings,
    :func:`coverhunter.index.calibration.alignment_pairs`). An aligned match then
    takes its probability and p-value from its alignment score
    (:func:`calibrated_alignments`), which tells covers from other music far better
    than the embedding score on arrangements the model never heard.

    Returns
    -------
    dict
        The calibration as committed to ``meta.json``.
    """
    from .. import rerank as rr
    from ..classical import euclidean_distances
    from ..embed import distance_matrix
    from .chroma_format import as_stored
    from .chroma_store import IndexChroma

    index.check_model(lm)
    chroma = IndexChroma.of(index, lm.summary_projection)
    align = {} if chroma.available() else None
    embs = embed_recordings(
        lm,
        tracks,
        index.windowing,
        device,
        cache,
        on_features=None
        if align is None
        else lambda i, f, fine: align.__setitem__(i, chroma.query_features(f, fine)),
        views=chroma.fine_views if align is not None else (),
    )
    bad = [(t.track_id, err) for t, (e, err) in zip(tracks, embs) if e is None]
    if bad:
        raise CatalogueError(
            f"calibration set: {len(bad)} recording(s) failed, e.g. {bad[0][0]}: {bad[0][1]}"
        )
    vecs = [e for e, _ in embs]
    dist = distance_matrix(vecs, vecs, "min")
    labels = np.array([t.work for t in tracks])
    iu = np.triu_indices(len(tracks), 1)
    scores = 1.0 - dist[iu]
    same = labels[iu[0]] == labels[iu[1]]
    cal = fit_calibration(scores, same, prior=prior)
    cal["source"] = f"{len(tracks)} recordings, {len(set(labels))} works"
    if align is not None:
        t0 = time.time()
        feats = [align[i] for i in range(len(tracks))]
        stored = [as_stored(f) for f in feats]  # the catalogue side, as the index keeps it
        cfg = rr.RerankConfig()
        glob = None
        if cfg.global_weight > 0:  # the search's first stage: embedding and summary
            vecs = np.stack([chroma.query_summary(f) for f in feats])
            glob = euclidean_distances(vecs, vecs)
        off = np.where(np.eye(len(tracks), dtype=bool), np.nan, dist)
        first = rr.first_stage_matrix(off, glob, cfg)
        a_scores, a_same, n_used = alignment_pairs(
            feats, labels, first, max_recordings=max_aligned, candidates=stored
        )
        try:
            # the embedding part's base rate (all pairs), not the aligned pairs' share
            cal["alignment"] = fit_calibration(a_scores, a_same, prior=cal["prior"])
            cal["alignment"]["qmax"] = asdict(cfg.qmax)  # the settings its scores were made with
            cal["alignment"]["chroma"] = chroma_record(chroma.params)  # and the chroma
            cal["alignment"]["source"] = (
                f"{n_used} recordings, {len(set(labels))} works; other works: the nearest "
                f"{SELECTED_FRACTION:.0%} (at least {MIN_STRANGERS}) by the first stage"
            )
            log.info(
                "alignment calibration: %d pairs of %d recordings in %.0f s",
                len(a_scores),
                n_used,
                time.time() - t0,
            )
        except ValueError as e:  # too few same-work pairs among the aligned recordings
            log.warning(
                "calibration set: no alignment calibration (%s); re-ranked matches "
                "keep the embedding's probabilities",
                e,
            )
    with index._locked():
        index._reload()
        index.meta["calibration"] = cal
        index._commit()
    return cal


def calibrated(index, matches: list[Match]) -> list[Match]:
    """A search's matches with P(same work) and the p-value of their embedding score,
    when the index is calibrated (else unchanged): a work scores its best track, so the
    index's ``n_tracks`` wrong tracks compete."""
    cal = index.meta.get("calibration")
    if cal:
        n = index.meta["n_tracks"]
        matches = with_calibrations(matches, cal, [m.score for m in matches], n)
    return matches


def calibrated_alignments(index, matches: list[Match], n_aligned: int) -> list[Match]:
    """Matches whose probability and p-value come from their alignment score, for those
    that were aligned, when the calibration has an alignment part (else unchanged).

    The p-value is the chance that the best of the ``n_aligned`` recordings aligned for
    the query (all wrong when it performs no catalogue work) scores as high, as
    :func:`p_impostor` computes it for the embedding's ``n_tracks`` wrong tracks.
    """
    cal = index.alignment_calibration
    if not cal:
        return matches
    aligned = [m for m in matches if m.alignment is not None]
    done = iter(with_calibrations(aligned, cal, [m.alignment for m in aligned], n_aligned))
    return [m if m.alignment is None else next(done) for m in matches]


def alignment_calibration(index) -> dict | None:
    """The alignment part of the index's calibration (re-ranked verdicts), or None.

    None also when it was fitted with other alignment settings than the re-ranking's
    (:class:`coverhunter.qmax.QmaxParams`; a calibration without a record of them
    was made with :data:`coverhunter.qmax.LEGACY_QMAX_PARAMS`): its scores would
    not be comparable. A warning says so once per index object; ``index calibrate``
    fits it anew.
    """
    from .. import rerank as rr
    from ..qmax import LEGACY_QMAX_PARAMS

    cal = (index.meta.get("calibration") or {}).get("alignment")
    if not cal:
        return None
    fitted = cal.get("qmax", asdict(LEGACY_QMAX_PARAMS))
    # a calibration without a chroma record was fitted on the CQT's chroma alone
    chroma = cal.get("chroma", "cqt-only")
    current = chroma_record(shard_chroma(index))
    if fitted != asdict(rr.RerankConfig().qmax) or (
        chroma != current and not (chroma == "cqt-only" and isinstance(current, list))
    ):
        if not index._warned_qmax:
            index._warned_qmax = True
            log.warning(
                "%s: its alignment calibration was fitted with other alignment settings "
                "or chroma (%s, chroma %s; the index aligns %s); re-ranked matches take "
                "the embedding's probabilities until `coverhunter index calibrate` is "
                "run again",
                index.root,
                fitted,
                chroma,
                current,
            )
        return None
    return cal


def shard_chroma(index):
    """The chroma the index's re-ranking aligns (``chroma_store.IndexChroma.params``),
    read once per list of shards (kept in ``index._chroma_of``)."""
    from .chroma_store import IndexChroma

    shards = tuple(index.meta["shards"])
    if index._chroma_of is None or index._chroma_of[0] != shards:
        index._chroma_of = (shards, IndexChroma.of(index).params)
    return index._chroma_of[1]


def chroma_record(params) -> str | list:
    """A chroma spec (str) or an old index's CQT chroma parameters (list), as JSON keeps it."""
    return params if isinstance(params, str) else [float(x) for x in params]


def with_calibrations(matches: list[Match], cal: dict, scores: list[float], n: int) -> list[Match]:
    """Each of ``matches`` with P(same work) and the p-value of its score in ``scores``
    against ``n`` (at least 1) wrong tracks (:func:`p_impostors`: the calibration read once)."""
    p_values = p_impostors(cal, scores, n)
    return [
        replace(m, probability=probability_same(cal, s), p_value=p)
        for m, s, p in zip(matches, scores, p_values)
    ]


__all__ = [
    "calibrate",
    "calibrated",
    "calibrated_alignments",
    "alignment_calibration",
    "shard_chroma",
    "chroma_record",
    "with_calibrations",
]
