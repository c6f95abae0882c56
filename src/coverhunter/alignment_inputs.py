"""A recording's alignment data for re-ranking, from its feature files or arrays.

What the re-ranking (:mod:`coverhunter.rerank`) aligns and summarises, made from what
``extract`` wrote: :func:`alignment_features` (the chroma views of a chroma spec, from a
CQT ``.npy`` file and the fine chroma beside it, or from arrays), the 2D Fourier summaries
the first stage compares (:func:`summary_chroma`, :func:`global_summaries`, and the
columns and chroma of a stored or projected summary: :func:`summary_columns`,
:func:`summary_params`), and the view recurrence voting searches
(:func:`recurrence_chroma`). Used by evaluation's re-ranker
(:mod:`coverhunter.reranker`), the index's stored chroma (:mod:`coverhunter.index.chroma_format`,
:mod:`coverhunter.index.chroma_store`), ``fit-summary`` and the benchmarks.

Imports ``chroma``, ``classical`` and ``qmax``.
"""

from __future__ import annotations

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
    chroma_from_cqt,
    fourier_summary,
    summary_size,
)
from .qmax import AlignmentFeatures


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


def recurrence_chroma(align: AlignmentFeatures, spec) -> np.ndarray:
    """The view of a recording's alignment chroma that recurrence voting searches, (T, 12)
    (:func:`coverhunter.chroma.search_view` of the chroma ``spec`` it was made with)."""
    return view_of(align.chroma, search_view(spec))


__all__ = [
    "alignment_features",
    "summary_params",
    "summary_chroma",
    "global_summaries",
    "summary_columns",
    "recurrence_chroma",
]
