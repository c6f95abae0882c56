"""Chroma from our CQT and the classical global summary of it (the alignment: :mod:`coverhunter.qmax`).

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

Imports nothing of the package (numpy).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

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


__all__ = [
    "chroma_from_cqt",
    "block_mean",
    "CHROMA_PARAMS",
    "LEGACY_CHROMA_PARAMS",
    "LOWEST_OCTAVE",
    "CHROMA_POWER",
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
]
