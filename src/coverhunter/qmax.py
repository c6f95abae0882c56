"""The chroma alignment of Serra, Serra & Andrzejak (New J. Phys. 2009): cross-recurrence and Qmax.

It reads the chroma of :mod:`coverhunter.classical` (2.5 frames per second), one or
several 12-column views side by side (:func:`stack_views`), aligned view by view
(:func:`qmax_scores`).

Method
    1. optimal transposition index (OTI): the circular pitch shift that best matches the
       two recordings' global chroma profiles; the candidate is shifted by it;
    2. delay embedding: each frame is stacked with its ``m - 1`` successors (``tau`` apart);
    3. binary cross-recurrence plot: R[i, j] = 1 when j is among the ``kappa`` fraction
       of nearest neighbours of i *and* i among those of j (Euclidean distance);
    4. Qmax: the longest local alignment path through R, allowing tempo deviations
       (steps (1,1), (2,1), (1,2)) and gaps (penalty ``gap_onset`` to open one,
       ``gap_extension`` per further step):

           R[i,j] = 1:  Q[i,j] = max(Q[i-1,j-1], Q[i-2,j-1], Q[i-1,j-2]) + 1
           R[i,j] = 0:  Q[i,j] = max(0, Q[p] - g(R[p]) for p in the same three cells)
           g(1) = gap_onset, g(0) = gap_extension.

       The recursion runs compiled (numba), cell by cell, over a stack of K pairs padded
       to a common size; each pair's padding columns are skipped (padding is R = 0,
       which could never raise Q anyway).
    The score ``Qmax / sqrt(N * M)`` (N, M: embedded lengths) lies in [0, 1] and, for a
    fixed query, ranks candidates as Serra's ``sqrt(M) / Qmax`` does; the distance is
    ``1 - score``.

Imports ``classical`` (and numba; tqdm on first use).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from .classical import N_CHROMA, block_mean


@dataclass(frozen=True)
class QmaxParams:
    """Alignment settings, on 2.5 chroma frames per second.

    Serra et al. (2009) used m 10, kappa 0.095 and gap penalties 5 / 0.5. On a
    training-type arranged-cover corpus (corpus v2, split "train", seed 1000, 187
    recordings; never the test corpus) kappa 0.15 with a gap onset of 2 raised MAP from
    0.260 to 0.302 at the same cost. With the current chroma, shorter context (m 7) and
    cheaper gaps (1 / 0.25) raised all-pairs MAP from 0.319 to 0.339 and from 0.259 to
    0.291 on two training-type corpora of 368 recordings (seeds 1000 and 1001;
    ``benchmarks/bench_accuracy.py --tune --tune-qmax``, docs/accuracy.md "Alignment
    settings"), at the same cost, so those are the defaults. Re-checked with the two-view
    chroma on the mixed tune corpora (366 and 361 recordings): no neighbour of the
    defaults gained more than 0.006 MAP on either (docs/accuracy.md).
    """

    m: int = 7  # embedding dimension (frames stacked): 2.8 s of context
    tau: int = 1  # delay between stacked frames
    kappa: float = 0.15  # fraction of nearest neighbours that recur
    gap_onset: float = 1.0
    gap_extension: float = 0.25


# the settings every alignment calibration was fitted with before calibrations recorded them
LEGACY_QMAX_PARAMS = QmaxParams(m=10, tau=1, kappa=0.15, gap_onset=2.0, gap_extension=0.5)


def global_profile(chroma: np.ndarray) -> np.ndarray:
    """Mean chroma (12,) scaled to a maximum of 1."""
    g = np.asarray(chroma, np.float64).mean(0)
    return g / max(g.max(), 1e-12)


def stack_views(views: list[np.ndarray]) -> np.ndarray:
    """Chroma views of one recording side by side, (T, 12 k), cut to the shortest; the
    alignment (:func:`qmax_scores`) averages the views' scores."""
    n = min(len(v) for v in views)
    return np.concatenate([np.asarray(v, np.float32)[:n] for v in views], axis=1)


def optimal_transposition(profile_a: np.ndarray, profile_b: np.ndarray) -> int:
    """The shift k in 0..11 such that ``np.roll(b, k, axis=-1)`` best matches ``a``."""
    scores = [float(np.dot(profile_a, np.roll(profile_b, k))) for k in range(N_CHROMA)]
    return int(np.argmax(scores))


def optimal_transpositions(profile_a: np.ndarray, profiles_b: np.ndarray) -> np.ndarray:
    """:func:`optimal_transposition` of one profile (12,) against many (K, 12), as (K,) int."""
    pb = np.asarray(profiles_b, np.float64).reshape(-1, N_CHROMA)
    rolled = np.stack([np.roll(pb, k, axis=1) for k in range(N_CHROMA)])  # (12, K, 12)
    return np.argmax(rolled @ np.asarray(profile_a, np.float64), axis=0)


def delay_embed(chroma: np.ndarray, m: int = 10, tau: int = 1) -> np.ndarray:
    """Delay coordinates: row i = frames i, i + tau, ..., i + (m-1) tau, concatenated.

    Returns
    -------
    np.ndarray, shape (max(1, T - (m-1) tau), 12 m), float32
        A recording shorter than the embedding window is zero-padded to one row.
    """
    x = np.asarray(chroma, np.float32)
    span = (m - 1) * tau + 1
    if len(x) < span:
        x = np.pad(x, ((0, span - len(x)), (0, 0)))
    n = len(x) - span + 1
    return np.concatenate([x[k * tau : k * tau + n] for k in range(m)], axis=1)


def cross_recurrence(x: np.ndarray, y: np.ndarray, kappa: float = 0.15) -> np.ndarray:
    """Binary cross-recurrence plot with mutual nearest neighbours.

    Parameters
    ----------
    x, y : np.ndarray, shape (N, D), (M, D)
        Delay-embedded sequences.
    kappa : float
        Fraction of each row's (column's) points that count as neighbours.

    Returns
    -------
    np.ndarray, shape (N, M), bool
        True where y[j] is among the ``ceil(kappa M)`` nearest of x[i] and x[i] among
        the ``ceil(kappa N)`` nearest of y[j].
    """
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    # squared distances in float32: same neighbours, ten times faster than float64 sqrt
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    n, m = d.shape
    kr, kc = max(1, math.ceil(kappa * m)), max(1, math.ceil(kappa * n))
    row_thr = np.partition(d, kr - 1, axis=1)[:, kr - 1]
    col_thr = np.partition(d, kc - 1, axis=0)[kc - 1, :]
    return (d <= row_thr[:, None]) & (d <= col_thr[None, :])


def qmax_batch(
    crp: np.ndarray, gap_onset: float = 2.0, gap_extension: float = 0.5, lengths: np.ndarray | None = None
) -> np.ndarray:
    """Qmax of a stack of cross-recurrence plots.

    The recursion (Serra et al. 2009) runs compiled (numba, a dependency of librosa),
    cell by cell: about ten times faster than the row-vectorised numpy version it
    replaced, with the same scores; the whole alignment (:func:`qmax_scores`) 2.6 times
    (``benchmarks/bench_alignment.py``, ``benchmarks/results/alignment.md``).

    Parameters
    ----------
    crp : np.ndarray, shape (K, N, M), bool
        Pairs padded with False to a common size.
    lengths : np.ndarray, shape (K,), int, optional
        Each plot's own column count (the rest is padding, skipped); default M.

    Returns
    -------
    np.ndarray, shape (K,), float32
    """
    crp = np.ascontiguousarray(crp, dtype=bool)
    k, n, m = crp.shape
    cols = np.full(k, m, np.int64) if lengths is None else np.minimum(np.asarray(lengths, np.int64), m)
    return _qmax_kernel(crp, cols, np.float32(gap_onset), np.float32(gap_extension))


@numba.njit(cache=True, nogil=True)
def _qmax_kernel(crp, cols, gap_onset, gap_extension):  # pragma: no cover - compiled
    k, n, m = crp.shape
    one = np.float32(1.0)
    zero = np.float32(0.0)
    best = np.zeros(k, np.float32)
    # two rows and columns of padding above and left: (i-2, j-1) and (i-1, j-2) always exist
    q = np.zeros((n + 2, m + 2), np.float32)
    g = np.empty((n + 2, m + 2), np.float32)
    for b in range(k):
        mb = cols[b]
        q[:, : mb + 2] = zero
        g[:, : mb + 2] = gap_extension
        top = zero
        for i in range(n):
            for j in range(mb):
                a = q[i + 1, j + 1]  # (i-1, j-1)
                u = q[i, j + 1]  # (i-2, j-1)
                c = q[i + 1, j]  # (i-1, j-2)
                if crp[b, i, j]:
                    v = max(a, u, c) + one
                    g[i + 2, j + 2] = gap_onset
                else:
                    v = max(a - g[i + 1, j + 1], u - g[i, j + 1], c - g[i + 1, j], zero)
                q[i + 2, j + 2] = v
                if v > top:
                    top = v
        best[b] = top
    return best


def qmax_pair(crp: np.ndarray, gap_onset: float = 2.0, gap_extension: float = 0.5) -> float:
    """Qmax of one cross-recurrence plot (N, M)."""
    return float(qmax_batch(crp[None], gap_onset, gap_extension)[0])


@dataclass
class AlignmentFeatures:
    """What the alignment needs per recording: its global profile and chroma."""

    chroma: np.ndarray  # (T, 12 k): k chroma views side by side (stack_views)
    profile: np.ndarray  # (k, 12): each view's global profile

    @classmethod
    def from_chroma(cls, chroma: np.ndarray) -> AlignmentFeatures:
        x = np.asarray(chroma, np.float32)
        views = range(x.shape[1] // N_CHROMA)
        return cls(x, np.stack([global_profile(x[:, v * N_CHROMA : (v + 1) * N_CHROMA]) for v in views]))

    def coarse(self, block: int, view: int | None = None) -> AlignmentFeatures:
        """A cheaper copy for a coarse alignment: one view (``view``; None = all) of the
        chroma, means of ``block`` consecutive frames (:func:`coverhunter.classical.block_mean`):
        one view of two and half the frames cost about a sixth of the full alignment
        (:func:`qmax_scores` grows with the frames of both recordings, and the views)."""
        n_views = self.chroma.shape[1] // N_CHROMA
        if view is not None and not 0 <= view < n_views:
            raise ValueError(f"chroma view {view} of a chroma of {n_views} views")
        x = self.chroma if view is None else self.chroma[:, view * N_CHROMA : (view + 1) * N_CHROMA]
        return AlignmentFeatures.from_chroma(block_mean(x, block) if block > 1 else x)


def qmax_scores(
    query: AlignmentFeatures,
    candidates: list[AlignmentFeatures],
    params: QmaxParams = QmaxParams(),
    max_cells: int = 20_000_000,
) -> np.ndarray:
    """Normalised Qmax score of one query against many candidates (chroma alignment).

    Each candidate is transposed to the query by the OTI of their global profiles, both
    are delay-embedded, and :func:`qmax_sequences` does the rest. Stacked chroma views
    (T, 12 k) (:func:`stack_views`) are aligned view by view, each with its own
    transposition, and the score is the mean of the views' scores (a score fusion: each
    view's recurrence plot keeps its own neighbours).

    Parameters
    ----------
    query : AlignmentFeatures
    candidates : list of AlignmentFeatures
    params : QmaxParams
    max_cells : int
        Bound on K x N x M cells per batch (memory ~ max_cells bytes).

    Returns
    -------
    np.ndarray, shape (len(candidates),), float64
        ``Qmax / sqrt(N M)`` in [0, 1]; larger is more similar.
    """
    n_views = query.chroma.shape[1] // N_CHROMA
    bad = [c.chroma.shape[1] for c in candidates if c.chroma.shape[1] != query.chroma.shape[1]]
    if bad:
        raise ValueError(f"chroma of {query.chroma.shape[1]} columns aligned with chroma of {bad[0]}")
    out = np.zeros(len(candidates))
    for v in range(n_views):
        cols = slice(v * N_CHROMA, (v + 1) * N_CHROMA)
        shifts = optimal_transpositions(query.profile[v], [c.profile[v] for c in candidates])
        qx = delay_embed(query.chroma[:, cols], params.m, params.tau)
        ys = [
            delay_embed(np.roll(c.chroma[:, cols], k, axis=1), params.m, params.tau)
            for c, k in zip(candidates, shifts)
        ]
        out += qmax_sequences(qx, ys, params, max_cells)
    return out / n_views


def qmax_sequences(
    x: np.ndarray, ys: list[np.ndarray], params: QmaxParams = QmaxParams(), max_cells: int = 20_000_000
) -> np.ndarray:
    """Normalised Qmax of a sequence against many, in padded batches of similar lengths.

    Parameters
    ----------
    x : np.ndarray, shape (N, D)
        Query sequence (delay-embedded chroma, or L2-normalised chunk embeddings: their
        Euclidean neighbours are their cosine neighbours).
    ys : list of np.ndarray, shapes (M_k, D)
    params : QmaxParams
        ``kappa`` and the gap penalties are used (``m`` and ``tau`` are not).
    max_cells : int
        Bound on K x N x M cells per batch.

    Returns
    -------
    np.ndarray, shape (len(ys),), float64: ``Qmax / sqrt(N M_k)``.
    """
    out = np.zeros(len(ys))
    order = np.argsort([len(y) for y in ys], kind="stable")  # similar lengths share a batch
    s = 0
    while s < len(order):
        e, m_max = s + 1, len(ys[order[s]])
        while e < len(order) and (e - s + 1) * len(x) * max(m_max, len(ys[order[e]])) <= max_cells:
            m_max = max(m_max, len(ys[order[e]]))
            e += 1
        idx = order[s:e]
        crp = np.zeros((len(idx), len(x), m_max), bool)
        for b, j in enumerate(idx):
            crp[b, :, : len(ys[j])] = cross_recurrence(x, ys[j], params.kappa)
        lengths = np.array([len(ys[j]) for j in idx], np.int64)
        q = qmax_batch(crp, params.gap_onset, params.gap_extension, lengths)
        out[idx] = q / np.sqrt(len(x) * lengths.astype(np.float64))
        s = e
    return out


def alignment_distance_matrix(
    feats: list[AlignmentFeatures], params: QmaxParams = QmaxParams(), verbose: bool = False
) -> np.ndarray:
    """All-pairs alignment distances ``1 - Qmax / sqrt(N M)`` (n, n); the diagonal is 0.

    The score is symmetric (the recursion and the mutual-neighbour plot are unchanged by
    swapping the two recordings), so only pairs i < j are computed.
    """
    from tqdm import tqdm

    n = len(feats)
    score = np.eye(n)
    for i in tqdm(range(n - 1), desc="qmax", unit="query", disable=not verbose):
        s = qmax_scores(feats[i], feats[i + 1 :], params)
        score[i, i + 1 :] = s
        score[i + 1 :, i] = s
    return 1.0 - score


__all__ = [
    "LEGACY_QMAX_PARAMS",
    "QmaxParams",
    "global_profile",
    "stack_views",
    "optimal_transposition",
    "optimal_transpositions",
    "delay_embed",
    "cross_recurrence",
    "qmax_batch",
    "qmax_pair",
    "AlignmentFeatures",
    "qmax_scores",
    "qmax_sequences",
    "alignment_distance_matrix",
]
