"""Constant-Q transform (the original's, exactly and fast), frame pooling and CQT tempo stretch."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .config import FeatureConfig

SAMPLE_RATE = 16000  # Hz
HOP_LENGTH = 640  # samples per CQT frame
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 25 CQT frames per second
N_BINS = 96  # 8 octaves x 12 bins from 32 Hz
PAD_DB = -100.0  # value the original pads short chunks with, in dB
_BLOCK = 64  # frames per FFT block: keeps the working set in cache


class CQTKernel:
    """The original's spectral CQT kernel, folded onto a real FFT and split by octave.

    The original (a port of the "zaf" CQT) multiplies the full complex FFT ``F`` of
    each N-sample frame by a sparse kernel ``K`` (entries below 0.01 zeroed). Frames
    are real, so ``F[N-k] = conj(F[k])`` and the product only needs the rFFT:

        X = F_re @ (A + B) + 1j * F_im @ (A - B)

    where ``A`` holds the kernel's columns ``0..N/2`` and ``B`` the columns above
    ``N/2`` mirrored to ``N-k``. Each octave's 12 bins touch only a narrow band of
    columns, so the product is done per octave on that band with dense BLAS.
    """

    def __init__(self, sample_rate: int, fmin: float, n_bins: int, bins_per_octave: int):
        q = 1.0 / (2.0 ** (1.0 / bins_per_octave) - 1.0)
        self.n_fft = int(2 ** math.ceil(math.log2(q * sample_rate / fmin)))
        n = self.n_fft
        kernel = np.zeros((n_bins, n), dtype=np.complex128)
        for i in range(n_bins):
            freq = fmin * 2.0 ** (i / bins_per_octave)
            length = int(2 * round(q * sample_rate / freq / 2) + 1)  # odd window
            t = np.arange(length) - (length - 1) / 2
            temporal = np.hamming(length) * np.exp(2j * np.pi * q * t / length) / length
            start = (n - length + 1) // 2  # centred in the FFT frame
            kernel[i, start : start + length] = temporal
        kernel = np.fft.fft(kernel, axis=1)
        kernel[np.abs(kernel) < 0.01] = 0.0
        kernel = np.conj(kernel) / n
        half = n // 2
        a = kernel[:, : half + 1]
        b = np.zeros_like(a)
        b[:, 1:half] = kernel[:, n - 1 : half : -1]  # column N-k lands on k
        plus, minus = a + b, a - b
        self.groups = []  # (first bin, end bin, first col, end col, weights [2w, 2g])
        for g0 in range(0, n_bins, bins_per_octave):
            g1 = min(n_bins, g0 + bins_per_octave)
            used = np.flatnonzero(np.abs(plus[g0:g1]).sum(0) + np.abs(minus[g0:g1]).sum(0))
            c0, c1 = int(used[0]), int(used[-1]) + 1

            # rows interleave (Re F_k, Im F_k) to match view_as_real of the spectrum;
            # columns are (Re X, Im X) of the group's bins:
            #   Re X = Re F @ Re P - Im F @ Im M,   Im X = Re F @ Im P + Im F @ Re M
            pg, mg = plus[g0:g1, c0:c1].T, minus[g0:g1, c0:c1].T  # [w, g]
            w = np.empty((2 * (c1 - c0), 2 * (g1 - g0)))
            w[0::2] = np.concatenate([pg.real, pg.imag], axis=1)
            w[1::2] = np.concatenate([-mg.imag, mg.real], axis=1)
            self.groups.append((g0, g1, c0, c1, torch.from_numpy(w)))
        self.n_bins = n_bins
        self._cast = {torch.float64: self.groups}

    def groups_as(self, dtype: torch.dtype) -> list:
        """``groups`` with the weights in ``dtype`` (cast once, then kept)."""
        if dtype not in self._cast:
            self._cast[dtype] = [(g0, g1, c0, c1, w.to(dtype)) for g0, g1, c0, c1, w in self.groups]
        return self._cast[dtype]


@functools.lru_cache(maxsize=4)
def cqt_kernel(
    sample_rate: int = SAMPLE_RATE, fmin: float = 32.0, n_bins: int = N_BINS, bins_per_octave: int = 12
) -> CQTKernel:
    return CQTKernel(sample_rate, fmin, n_bins, bins_per_octave)


def cqt_magnitude(
    y: np.ndarray,
    *,
    sample_rate: int = SAMPLE_RATE,
    hop_length: int = HOP_LENGTH,
    fmin: float = 32.0,
    n_bins: int = N_BINS,
    bins_per_octave: int = 12,
    dtype: torch.dtype = torch.float64,
) -> np.ndarray:
    """Linear CQT magnitude, shape (frames, n_bins), frames = len(y) // hop_length.

    ``dtype`` is the arithmetic of the FFT and the kernel product (and of the result):
    float64 is the original's; float32 is about twice as fast (see :func:`cqt`).
    """
    kern = cqt_kernel(sample_rate, fmin, n_bins, bins_per_octave)
    n = kern.n_fft
    n_frames = len(y) // hop_length
    out = torch.empty((n_frames, n_bins), dtype=dtype)
    if n_frames == 0:
        return out.numpy()
    left = math.ceil((n - hop_length) / 2)
    right = (n - hop_length) // 2
    # float64 FFT: a float32 FFT loses ~0.2 dB in bins 120 dB below the frame's peak
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    padded = torch.from_numpy(np.pad(np.asarray(y, dtype=np_dtype), (left, right)))
    for s in range(0, n_frames, _BLOCK):
        e = min(n_frames, s + _BLOCK)
        spec = torch.fft.rfft(padded[s * hop_length : (e - 1) * hop_length + n].unfold(0, n, hop_length))
        spec = torch.view_as_real(spec)  # [B, n/2+1, 2], no copy
        for g0, g1, c0, c1, w in kern.groups_as(dtype):
            x = spec[:, c0:c1].reshape(e - s, -1) @ w  # [B, 2g] = (Re X, Im X)
            k = g1 - g0
            out[s:e, g0:g1] = torch.hypot(x[:, :k], x[:, k:])
    return out.numpy()


def cqt(y: np.ndarray, cfg: FeatureConfig | None = None, *, fast: bool = False) -> np.ndarray:
    """The original CoverHunter CQT: dB relative to the recording's maximum.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono audio at ``cfg.sample_rate`` (peak-normalise it first to match the original).
    cfg : FeatureConfig, optional
        Defaults: 16 kHz, hop 640, 96 bins from 32 Hz, 12 per octave, float32 output.
    fast : bool
        FFT and kernel product in float32, about twice as fast (embedding audio directly,
        :func:`coverhunter.embed.embed_audio_files`). Compared with the float64 path: within
        0.01 dB in bins within 60 dB of the recording's maximum, 0.1 dB within 100 dB,
        up to ~1 dB in the near-silent bins below.

    Returns
    -------
    np.ndarray, shape (frames, n_bins)
        ``20 log10(|X| + 1e-9)`` minus its maximum, so every value is <= 0.
        ``frames = n_samples // hop_length`` (time-major, as the original stores it).
        float64 when ``cfg.precision == "float64"`` (matches the original to ~1e-10 dB),
        else float32 (same computation, rounded at the end).
    """
    cfg = cfg or FeatureConfig()
    if cfg.precision not in ("float32", "float64"):
        raise ValueError(f"precision must be 'float32' or 'float64', got {cfg.precision!r}")
    mag = cqt_magnitude(
        y,
        sample_rate=cfg.sample_rate,
        hop_length=cfg.hop_length,
        fmin=cfg.fmin,
        n_bins=cfg.n_bins,
        bins_per_octave=cfg.bins_per_octave,
        dtype=torch.float32 if fast else torch.float64,
    )
    db = 20.0 * np.log10(mag + mag.dtype.type(1e-9))
    if db.size:
        db -= db.max()
    return db.astype(np.float32 if cfg.precision == "float32" else np.float64)


def pool_frames(feat: np.ndarray, mean_size: int = 3) -> np.ndarray:
    """Non-overlapping means of ``mean_size`` frames (the original's ``shorter``).

    Parameters
    ----------
    feat : np.ndarray, shape (frames, n_bins)

    Returns
    -------
    np.ndarray, shape (frames // mean_size, n_bins); a trailing partial group is dropped.
    """
    t = feat.shape[0] // mean_size
    return feat[: t * mean_size].reshape(t, mean_size, feat.shape[1]).mean(axis=1)


def stretch_frames(feat: np.ndarray, rate: float) -> np.ndarray:
    """Tempo-change a CQT by ``rate`` (>1 faster, shorter) with linear interpolation in time.

    The CQT keeps pitch on its frequency axis, so resampling the time axis is a tempo
    change with the pitch unchanged (what ``sox tempo`` did to the audio in the original),
    without running any external program.

    Parameters
    ----------
    feat : np.ndarray, shape (frames, n_bins)
    rate : float > 0

    Returns
    -------
    np.ndarray, shape (round(frames / rate), n_bins), same dtype.
    """
    if rate <= 0:
        raise ValueError(f"tempo rate must be > 0, got {rate}")
    n = feat.shape[0]
    m = max(1, int(round(n / rate)))
    if n == 0 or m == n:
        return feat.copy()
    pos = np.minimum(np.arange(m) * rate, n - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (pos - i0)[:, None].astype(feat.dtype)
    return (feat[i0] * (1 - w) + feat[i1] * w).astype(feat.dtype)
