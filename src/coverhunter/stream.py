"""The CQT of a recording of any length, computed block by block in bounded memory.

``features.cqt`` needs the whole recording in memory (a 2-hour concert at 16 kHz is
115 M samples: 0.5 GB in float32, twice that in the float64 FFT input, before
resampling). Here audio arrives in blocks; each block's frames are computed with
``features.cqt_magnitude`` on the block plus the few hundred milliseconds of context
that the CQT window needs on each side, so the frames are the very frames of the
whole-recording transform::

    audio  |--- block 1 ---|--- block 2 ---|--- block 3 ---|
    frames |ffffffffffff|fffffffffffffff|fffffffffffffff|ff   (each frame once)
                     <-->  context kept from the previous block

The peak normalisation and the "dB relative to the maximum" of ``features.cqt`` need
the whole recording; the magnitude is linear in the signal, so both are applied at the
end, to the (frames, 96) magnitudes only: 69 MB for 2 hours in float32.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .audio import BLOCK_S, iter_audio_blocks
from .chroma import ChromaStream
from .config import FeatureConfig
from .features import cqt_kernel, cqt_magnitude

log = logging.getLogger(__name__)


def _frames(
    buf: np.ndarray,
    b0: int,
    fa: int,
    fb: int,
    total: int,
    final: bool,
    cfg: FeatureConfig,
    lead: int,
    left: int,
    n_fft: int,
) -> np.ndarray:
    """CQT magnitude frames [fa, fb) of the whole signal, from ``buf`` = y[b0:total]."""
    hop = cfg.hop_length
    zs = max(0, (fa - lead) * hop)  # first sample the first frame's window needs
    ze = total if final else (fb - 1) * hop - left + n_fft
    z = buf[zs - b0 : ze - b0]
    mag = cqt_magnitude(
        z,
        sample_rate=cfg.sample_rate,
        hop_length=hop,
        fmin=cfg.fmin,
        n_bins=cfg.n_bins,
        bins_per_octave=cfg.bins_per_octave,
    )
    j0 = fa - zs // hop
    return mag[j0 : j0 + fb - fa]


def stream_cqt(
    blocks: Iterable[np.ndarray],
    cfg: FeatureConfig | None = None,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """``features.cqt(peak_normalize(y))`` of the concatenated blocks, in bounded memory.

    Parameters
    ----------
    blocks : iterable of np.ndarray, shape (n,)
        Consecutive mono blocks at ``cfg.sample_rate`` (any lengths).
    cfg : FeatureConfig, optional
    progress : callable, optional
        Called with the seconds of audio analysed so far after each block.

    Returns
    -------
    np.ndarray, shape (frames, n_bins)
        ``frames = n_samples // hop_length``, dB relative to the maximum (every value
        <= 0), float32 (or float64 with ``cfg.precision == "float64"``). Equal to the
        whole-recording transform up to float rounding (~1e-5 dB).
    """
    cfg = cfg or FeatureConfig()
    dtype = np.float64 if cfg.precision == "float64" else np.float32
    kern = cqt_kernel(cfg.sample_rate, cfg.fmin, cfg.n_bins, cfg.bins_per_octave)
    n_fft, hop = kern.n_fft, cfg.hop_length
    left = math.ceil((n_fft - hop) / 2)  # zero padding before the first frame
    lead = math.ceil(left / hop)  # frames of context a block needs before its first frame
    parts: list[np.ndarray] = []
    buf, b0, total, fa, peak = np.zeros(0, np.float32), 0, 0, 0, 0.0
    for block in blocks:
        block = np.asarray(block, dtype=np.float32)
        if not len(block):
            continue
        peak = max(peak, float(np.abs(block).max()))
        buf = np.concatenate([buf, block])
        total += len(block)
        # frames whose whole window lies inside what has arrived
        fb = min(total // hop, (total + left - n_fft) // hop + 1)
        if fb > fa:
            parts.append(_frames(buf, b0, fa, fb, total, False, cfg, lead, left, n_fft).astype(dtype))
            fa = fb
            keep = max(0, (fa - lead) * hop)
            buf, b0 = buf[keep - b0 :], keep
        if progress is not None:
            progress(total / cfg.sample_rate)
    fb = total // hop
    if fb > fa:
        parts.append(_frames(buf, b0, fa, fb, total, True, cfg, lead, left, n_fft).astype(dtype))
    return _to_db(parts, peak, cfg.n_bins, dtype)


def _to_db(parts: list[np.ndarray], peak: float, n_bins: int, dtype) -> np.ndarray:
    """Peak normalisation and dB relative to the maximum, part by part, into one array."""
    scale = 0.999 / max(0.001, peak)  # features' peak_normalize, applied to the magnitude
    out = np.empty((sum(len(p) for p in parts), n_bins), dtype)
    pos = 0
    while parts:
        p = parts.pop(0)  # free each part once converted
        out[pos : pos + len(p)] = 20.0 * np.log10(p.astype(np.float64) * scale + 1e-9)
        pos += len(p)
    if out.size:
        out -= out.max()
    return out


def recording_cqt(
    path: str | Path,
    cfg: FeatureConfig | None = None,
    *,
    block_s: float = BLOCK_S,
    max_seconds: float | None = None,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """CQT of an audio file of any length and format, decoded and analysed block by block.

    Parameters
    ----------
    path : str or Path
    cfg : FeatureConfig, optional
    block_s : float
        Seconds of audio per block (memory holds about two blocks of audio).
    max_seconds : float, optional
        Refuse (AudioError) recordings longer than this.
    progress : callable, optional
        Called with the seconds analysed so far.

    Returns
    -------
    np.ndarray, shape (frames, n_bins)
        As :func:`stream_cqt`.
    """
    return recording_analysis(path, cfg, (), block_s=block_s, max_seconds=max_seconds, progress=progress)[0]


def recording_analysis(
    path: str | Path,
    cfg: FeatureConfig | None = None,
    views=("c3",),
    *,
    block_s: float = BLOCK_S,
    max_seconds: float | None = None,
    progress: Callable[[float], None] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """CQT and fine chroma (:mod:`coverhunter.chroma`) of an audio file of any length, from
    one decoding pass, block by block.

    Parameters
    ----------
    views : sequence of str
        Chroma views to compute (:data:`coverhunter.chroma.VIEWS`); empty for none.

    Returns
    -------
    cqt : np.ndarray, shape (frames, n_bins)
        As :func:`recording_cqt`.
    chroma : dict of str to np.ndarray, each (T, 12) float32
        As :func:`coverhunter.chroma.audio_chroma` gives for the whole recording.
    """
    cfg = cfg or FeatureConfig()
    blocks = iter_audio_blocks(path, cfg.sample_rate, block_s, max_seconds)
    if not views:
        return stream_cqt(blocks, cfg, progress), {}
    fine = ChromaStream(views, cfg.sample_rate)

    def tee(blocks):
        for b in blocks:
            fine.feed(b)
            yield b

    feat = stream_cqt(tee(blocks), cfg, progress)
    return feat, fine.finish() if len(feat) else {}


class ProgressLog:
    """A progress callback that logs seconds analysed at most every ``every_s`` of wall time."""

    def __init__(self, name: str, every_s: float = 10.0, duration_s: float | None = None):
        self.name, self.every_s, self.duration_s = name, every_s, duration_s
        self.t0 = self.last = time.monotonic()

    def __call__(self, seconds: float) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        of = f" of {self.duration_s / 60:.1f} min" if self.duration_s else ""
        log.info("%s: %.1f min%s analysed (%.0f s)", self.name, seconds / 60, of, now - self.t0)
