"""Classical cover song baselines on chroma from our CQT: a global summary and an alignment.

Chroma
    The CQT's 96 bins (8 octaves x 12, dB relative to the recording's maximum) are turned
    back into linear magnitude, folded onto 12 pitch classes, averaged over blocks of
    ``block`` frames (10 frames = 0.4 s, 2.5 chroma frames per second) and each frame is
    scaled to a maximum of 1.

Global summary: 2D Fourier transform magnitude (Bertin-Mahieux & Ellis, WASPAA 2012)
    Every patch of ``patch`` consecutive chroma frames, raised to a power for contrast,
    goes through a 2D FFT; its magnitude does not change when the patch is shifted
    circularly in pitch (transposition) or in time (phase). The median over patches is one
    fixed-length vector per recording (optionally projected: :class:`SummaryProjection`);
    distance = Euclidean.

Alignment: cross-recurrence and Qmax (Serra, Serra & Andrzejak, New J. Phys. 2009)
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

       Row i depends only on rows i-1 and i-2, so the recursion runs row by row with
       whole rows as vectors, for a stack of K padded pairs at once (padding is R = 0,
       which can never raise Q).
    The score ``Qmax / sqrt(N * M)`` (N, M: embedded lengths) lies in [0, 1] and, for a
    fixed query, ranks candidates as Serra's ``sqrt(M) / Qmax`` does; the distance is
    ``1 - score``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numba
import numpy as np

log = logging.getLogger(__name__)

N_CHROMA = 12
BLOCK = 10  # CQT frames per chroma frame: 25 / 10 = 2.5 chroma frames per second
# The chroma leaves out the CQT's two lowest octaves (C1-B2, below 131 Hz: the bass line,
# which a re-harmonised cover changes) and raises magnitudes to the power 1.5 before
# folding (the strongest line, most often the melody, weighs more). All-pairs Qmax on
# training-type corpora (`bench_accuracy.py --tune --tune-chroma [--works 60]`; never the
# test corpus): MAP
# 0.302 -> 0.359 (187 recordings), 0.262 -> 0.319 (368 recordings) against all octaves at
# power 1; two octaves left out at power 1 gave 0.336 / 0.299, one octave 0.298, three
# 0.295, power 0.5 0.236 (0.250 without the bass), power 2 0.333 (without the bass).
LOWEST_OCTAVE = 2
CHROMA_POWER = 1.5
CHROMA_PARAMS = (LOWEST_OCTAVE, CHROMA_POWER)
# what every chroma was before: stored chroma without a record of its parameters is this
LEGACY_CHROMA_PARAMS = (0, 1.0)


# ---------------------------------------------------------------------------
# chroma


def chroma_from_cqt(
    cqt_db: np.ndarray,
    *,
    block: int = BLOCK,
    bins_per_octave: int = 12,
    floor_db: float = -70.0,
    lowest_octave: int = LOWEST_OCTAVE,
    power: float = CHROMA_POWER,
) -> np.ndarray:
    """Block-averaged, max-normalised chroma of a CQT.

    Parameters
    ----------
    cqt_db : np.ndarray, shape (frames, n_bins)
        Our CQT (dB relative to the recording's maximum, bin 0 near C1).
    block : int
        CQT frames averaged into one chroma frame (a trailing partial block is kept).
    bins_per_octave : int
        Must be 12 (one bin per semitone).
    floor_db : float
        Bins below this level (dB re. maximum) count as silence.
    lowest_octave : int
        Octaves of the CQT below this one are left out (0 = all; 2 = from C3, 131 Hz).
    power : float
        Linear magnitudes are raised to this power before they are folded.

    Returns
    -------
    np.ndarray, shape (ceil(frames / block), 12), float32
        Each frame scaled to a maximum of 1; silent frames are all zero.
    """
    if bins_per_octave != N_CHROMA:
        raise ValueError(f"chroma needs 12 bins per octave, got {bins_per_octave}")
    x = np.asarray(cqt_db, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected a CQT of shape (frames, bins) with frames > 0, got {x.shape}")
    n_oct = x.shape[1] // N_CHROMA
    if not 0 <= lowest_octave < n_oct:
        raise ValueError(
            f"lowest_octave must be in [0, {n_oct}) for a CQT of {x.shape[1]} bins, got {lowest_octave}"
        )
    if power <= 0:
        raise ValueError(f"chroma power must be > 0, got {power}")
    x = x[:, lowest_octave * N_CHROMA : n_oct * N_CHROMA]
    # dB / 20 * power: the magnitude raised to `power` in one exponential
    mag = np.where(x > floor_db, 10.0 ** (x * (power / 20.0)), 0.0)
    fold = mag.reshape(len(x), n_oct - lowest_octave, N_CHROMA).sum(1)  # (frames, 12)
    return normalise_frames(block_mean(fold, block))


def block_mean(frames: np.ndarray, block: int) -> np.ndarray:
    """Means of consecutive blocks of ``block`` frames (T, D) -> (ceil(T / block), D); a
    trailing partial block is the mean of the frames it has."""
    n_blocks = -(-len(frames) // block)
    pad = n_blocks * block - len(frames)
    summed = np.pad(frames, ((0, pad), (0, 0))).reshape(n_blocks, block, frames.shape[1]).sum(1)
    counts = np.full(n_blocks, block, np.float32)
    counts[-1] = block - pad
    return summed / counts[:, None]


def normalise_frames(chroma: np.ndarray) -> np.ndarray:
    """Frames (T, 12) scaled to a maximum of 1 (all-zero frames stay zero), float32."""
    peak = chroma.max(axis=1, keepdims=True)
    return (chroma / np.where(peak > 1e-12, peak, 1.0)).astype(np.float32)


def chroma_to_uint8(chroma: np.ndarray) -> np.ndarray:
    """Compact storage of a normalised chroma (T, 12) in [0, 1]: uint8 (T, 12)."""
    return np.round(np.clip(chroma, 0.0, 1.0) * 255.0).astype(np.uint8)


def chroma_from_uint8(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`chroma_to_uint8` (within 1/510): float32 (T, 12)."""
    return np.asarray(packed, dtype=np.float32) / 255.0


# ---------------------------------------------------------------------------
# global summary: 2D Fourier transform magnitude


def patch_2dftm(patches: np.ndarray) -> np.ndarray:
    """Magnitude of the 2D FFT of chroma patches, non-redundant half.

    Parameters
    ----------
    patches : np.ndarray, shape (..., 12, L)
        Pitch by time.

    Returns
    -------
    np.ndarray, shape (..., 12, L // 2 + 1)
        Unchanged by circular shifts of a patch in pitch or in time.
    """
    return np.abs(np.fft.rfft2(patches, axes=(-2, -1)))


def fourier_summary(
    chroma: np.ndarray, *, patch: int = 75, power: float = 1.96, hop: int = 1, max_patches: int = 1000
) -> np.ndarray:
    """One vector per recording: median 2D Fourier magnitude of its chroma patches.

    Parameters
    ----------
    chroma : np.ndarray, shape (T, 12)
    patch : int
        Patch length in chroma frames (75 = 30 s at 2.5 frames/s). Shorter recordings
        are zero-padded to one patch.
    power : float
        Power applied to the chroma before the transform (contrast, as in the paper).
    hop : int
        Frames between patch starts.
    max_patches : int
        At most this many patches enter the median: a longer recording (beyond about 7
        minutes at hop 1) takes every n-th patch, so a two-hour recording costs what seven
        minutes do (time and memory), and shorter ones are unchanged.

    Returns
    -------
    np.ndarray, shape (12 * (patch // 2 + 1),), float32, unit length.
    """
    x = np.asarray(chroma, dtype=np.float64) ** power
    if len(x) < patch:
        x = np.pad(x, ((0, patch - len(x)), (0, 0)))
    n_windows = len(x) - patch + 1
    hop = max(int(hop), -(-n_windows // max(1, int(max_patches))))
    windows = np.lib.stride_tricks.sliding_window_view(x, patch, axis=0)[::hop]  # (P, 12, L)
    med = np.median(patch_2dftm(windows), axis=0).ravel()
    return (med / max(np.linalg.norm(med), 1e-12)).astype(np.float32)


SUMMARY_PATCHES = (75, 300)  # 30 s and 2 min: the summary the shipped projection reads


def multiscale_summary(chroma: np.ndarray, patches=(75,), **kw) -> np.ndarray:
    """:func:`fourier_summary` at several patch lengths, concatenated (each part unit length).

    Long patches see a work's melodic and harmonic outline across phrases, short ones its
    local figures; a projection fitted on training works weighs the two
    (:class:`SummaryProjection`). ``patches=(75,)`` is the plain summary.

    Returns
    -------
    np.ndarray, shape (summary_size(patches),), float32.
    """
    return np.concatenate([fourier_summary(chroma, patch=int(p), **kw) for p in patches])


def summary_size(patches) -> int:
    """Length of :func:`multiscale_summary` for these patch lengths (12 x (p // 2 + 1) each)."""
    return sum(N_CHROMA * (int(p) // 2 + 1) for p in patches)


def _principal_axes(x: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean (D,), singular values (n,), axes (n, D)) of rows ``x`` (n_samples, D)."""
    mean = x.mean(0)
    _, sv, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, sv[:n_components], vt[:n_components]


@dataclass(frozen=True)
class PCA:
    """Mean and principal axes fitted on summary vectors."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (n, D)

    @classmethod
    def fit(cls, x: np.ndarray, n_components: int = 50) -> PCA:
        """Principal axes of rows ``x`` (n_samples, D); fit on training-type data."""
        mean, _, axes = _principal_axes(x, n_components)
        return cls(mean, axes)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) @ self.components.T


@dataclass(frozen=True)
class SummaryProjection(PCA):
    """A linear map of 2D Fourier summaries fitted on training recordings, ``(n, D) -> (n, k)``
    unit rows: ``(x - mean) @ components.T / scale``, then scaled to unit length.

    Two fits:

    - :meth:`fit`: PCA with whitening (as Bertin-Mahieux & Ellis 2012 reduce theirs).
      Every kept direction gets the same weight, so the few directions that carry most
      of the variance (loudness and texture rather than the tune) no longer dominate.
    - :meth:`fit_discriminant`: linear discriminant analysis on the recordings' work
      labels (as Humphrey, Nieto & Bello 2013 learn theirs): the directions in which
      versions of one work lie close together and different works far apart. It needs
      labels, and gains with the number of training works.
    """

    scale: np.ndarray  # (k,), the singular values of the kept axes (ones after LDA)
    patches: tuple = (75,)  # the patch lengths of the summaries it reads (multiscale_summary)
    chroma: tuple = CHROMA_PARAMS  # (lowest_octave, power) of the chroma it was fitted on

    def __call__(self, summaries: np.ndarray) -> np.ndarray:
        p = self.transform(np.atleast_2d(np.asarray(summaries, np.float32))) / self.scale
        return (p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def summarise(self, chroma: np.ndarray) -> np.ndarray:
        """The raw summary this projection reads, of one recording's chroma (T, 12): (D,)."""
        return multiscale_summary(chroma, self.patches)

    @staticmethod
    def _check(s: np.ndarray, patches) -> None:
        if s.ndim != 2 or s.shape[1] != summary_size(patches):
            raise ValueError(
                f"summaries of patches {tuple(patches)} have {summary_size(patches)} "
                f"values each, got shape {s.shape}"
            )

    @classmethod
    def fit(cls, summaries: np.ndarray, dims: int = 20, patches=(75,)) -> SummaryProjection:
        """Fit on ``summaries`` (n, D) of training recordings (never the test set), made by
        :func:`multiscale_summary` with ``patches``."""
        s = np.asarray(summaries, np.float64)
        cls._check(s, patches)
        if len(s) <= dims:
            raise ValueError(
                f"a {dims}-dimensional summary projection needs more than {dims} recordings, got {len(s)}"
            )
        mean, sv, axes = _principal_axes(s, dims)
        keep = sv > 1e-9 * sv[0]
        return cls(
            mean.astype(np.float32),
            axes[keep].astype(np.float32),
            sv[keep].astype(np.float32),
            tuple(int(p) for p in patches),
        )

    @classmethod
    def fit_discriminant(
        cls,
        summaries: np.ndarray,
        works,
        dims: int = 30,
        pca_dims: int = 100,
        patches=SUMMARY_PATCHES,
        ridge: float = 1e-3,
    ) -> SummaryProjection:
        """Linear discriminant analysis of ``summaries`` (n, D) of training recordings
        (:func:`multiscale_summary` with ``patches``) labelled with their ``works`` (n,);
        never the test set.

        1. PCA to ``pca_dims`` with whitening: the summaries' covariance becomes the identity;
        2. within-work covariance ``Sw`` (each recording minus its work's mean), plus
           ``ridge`` times its mean eigenvalue on the diagonal; ``Sw`` is whitened too;
        3. the ``dims`` directions of largest between-work covariance in that space.

        Returns a projection whose outputs have unit within-work spread along every axis.
        """
        s = np.asarray(summaries, np.float64)
        cls._check(s, patches)
        labels, inv = np.unique(np.asarray(works), return_inverse=True)
        counts = np.bincount(inv)
        if (counts >= 2).sum() < 2:
            raise ValueError(
                "a discriminant summary projection needs at least 2 works with "
                f"2 or more recordings each, got {(counts >= 2).sum()}"
            )
        pca_dims = min(pca_dims, s.shape[1], len(s) - 1)
        if not 0 < dims <= min(pca_dims, len(labels) - 1):
            raise ValueError(
                f"a {dims}-dimensional discriminant projection of {len(labels)} works "
                f"needs 1 <= dims <= {min(pca_dims, len(labels) - 1)}"
            )
        mean, sv, axes = _principal_axes(s, pca_dims)
        keep = sv > 1e-9 * sv[0]
        to_white = axes[keep].T / sv[keep] * math.sqrt(len(s))  # (D, p): unit total covariance
        z = (s - mean) @ to_white
        centroids = np.zeros((len(labels), z.shape[1]))
        np.add.at(centroids, inv, z)
        centroids /= counts[:, None]
        within = z - centroids[inv]
        sw = within.T @ within / len(z)
        sw += ridge * np.trace(sw) / len(sw) * np.eye(len(sw))
        sb = (centroids * counts[:, None]).T @ centroids / len(z)
        ew, vw = np.linalg.eigh(sw)
        w_white = vw / np.sqrt(ew)  # (p, p): unit within-work covariance
        eb, vb = np.linalg.eigh(w_white.T @ sb @ w_white)
        order = np.argsort(eb)[::-1][:dims]
        proj = to_white @ w_white @ vb[:, order]  # (D, dims)
        return cls(
            mean.astype(np.float32),
            proj.T.astype(np.float32),
            np.ones(dims, np.float32),
            tuple(int(p) for p in patches),
        )

    def to_state(self) -> dict:
        return {
            "mean": self.mean,
            "components": self.components,
            "scale": self.scale,
            "patches": np.asarray(self.patches, np.int64),
            "chroma": np.asarray(self.chroma, np.float64),
        }

    @classmethod
    def from_state(cls, state: dict) -> SummaryProjection:
        """Inverse of :meth:`to_state`; states written before ``patches`` existed read (75,),
        before ``chroma`` existed :data:`LEGACY_CHROMA_PARAMS`."""
        patches = tuple(int(p) for p in np.asarray(state.get("patches", (75,))).ravel())
        chroma = chroma_params_of(state.get("chroma"))
        return cls(
            *(np.asarray(state[k], np.float32) for k in ("mean", "components", "scale")), patches, chroma
        )


def chroma_params_of(stored) -> tuple:
    """``(lowest_octave, power)`` from a stored array, or :data:`LEGACY_CHROMA_PARAMS`
    when nothing was stored (files written before the chroma had parameters)."""
    if stored is None:
        return LEGACY_CHROMA_PARAMS
    v = np.asarray(stored, np.float64).ravel()
    return (int(v[0]), float(v[1]))


def euclidean_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Euclidean distances (n_a, n_b) between rows of ``a`` and ``b``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


# ---------------------------------------------------------------------------
# alignment: OTI, delay embedding, cross-recurrence, Qmax


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
    settings"), at the same cost, so those are the defaults.
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
    "chroma_from_cqt",
    "block_mean",
    "CHROMA_PARAMS",
    "LEGACY_CHROMA_PARAMS",
    "LOWEST_OCTAVE",
    "CHROMA_POWER",
    "LEGACY_QMAX_PARAMS",
    "chroma_params_of",
    "chroma_to_uint8",
    "chroma_from_uint8",
    "fourier_summary",
    "multiscale_summary",
    "summary_size",
    "SUMMARY_PATCHES",
    "patch_2dftm",
    "PCA",
    "SummaryProjection",
    "euclidean_distances",
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
