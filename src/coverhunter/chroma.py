"""Chroma from the audio: a 36-bin-per-octave CQT with estimated tuning, folded by librosa.

The alignment and the first stage compare pitch-class content, so their input should
resolve pitch finely and hold when a version is tuned off concert pitch. The model's CQT
(one bin per semitone from 32 Hz, :mod:`coverhunter.features`) does neither: a tone
between two bins smears over both, and a recording tuned a quarter-tone off lands on the
wrong ones. Here the audio goes through ``librosa.cqt`` at three bins per semitone with
``librosa.estimate_tuning``'s correction and ``librosa.filters.cq_to_chroma`` folds the
bins onto 12 pitch classes (each centred on its semitone); frames are averaged to
:data:`FRAMES_PER_SECOND` and scaled to a maximum of 1, as
:func:`coverhunter.classical.chroma_from_cqt` does for the model's CQT.

One CQT from C1 (7 octaves) gives every view: :data:`VIEWS` names them (``"c3"``: from C3,
five octaves, no bass line; ``"c1"``: from C1, bass included). A view is a short string
recorded with every stored chroma, so an index or a model file always knows which
chroma its data came from.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000  # Hz, as every recording is decoded
BINS_PER_OCTAVE = 36  # three bins per semitone
N_OCTAVES = 7  # C1 (32.7 Hz) .. B7 (3.95 kHz)
HOP_LENGTH = 640  # samples: 25 CQT frames per second, as the model's CQT
BLOCK = 10  # CQT frames averaged into one chroma frame
FRAMES_PER_SECOND = SAMPLE_RATE / HOP_LENGTH / BLOCK  # 2.5 chroma frames per second
MIN_SECONDS = 4.0  # shorter audio is padded with silence for the CQT (its frames are cut off)


@dataclass(frozen=True)
class ChromaView:
    """One way to fold the 36-bin CQT onto 12 pitch classes.

    Attributes
    ----------
    lowest_octave : int
        Octaves of the CQT below this one are left out (0: from C1; 2: from C3, 131 Hz,
        above most bass lines).
    power : float
        CQT magnitudes are raised to this power before folding.
    """

    lowest_octave: int = 2
    power: float = 1.0


VIEWS = {"c3": ChromaView(2, 1.0), "c1": ChromaView(0, 1.0), "c3p15": ChromaView(2, 1.5)}


def estimate_tuning(y: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Deviation of the recording's tuning from A440, in fractions of a 36-bin bin.

    Returns 0 for silence and for audio without peaks above librosa's pitch floor.
    """
    import librosa

    if not np.any(np.abs(y) > 1e-6):
        return 0.0
    with warnings.catch_warnings():
        # no peaks in its frequency range (a recording of bass alone): tuning 0, as it returns
        warnings.filterwarnings("ignore", "Trying to estimate tuning from empty", UserWarning)
        return float(librosa.estimate_tuning(y=y, sr=sample_rate, bins_per_octave=BINS_PER_OCTAVE))


def fine_cqt(y: np.ndarray, sample_rate: int = SAMPLE_RATE, tuning: float | None = None) -> np.ndarray:
    """Magnitude CQT at 36 bins per octave from C1, tuned to the recording.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono audio at ``sample_rate``.
    tuning : float, optional
        As :func:`estimate_tuning` returns; estimated from ``y`` when None.

    Returns
    -------
    np.ndarray, shape (n_frames, 252), float32
        ``n_frames = 1 + n_samples // HOP_LENGTH``; magnitudes, not dB.
    """
    import librosa

    y = np.asarray(y, np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected mono audio of shape (n_samples,), got {y.shape}")
    if tuning is None:
        tuning = estimate_tuning(y, sample_rate)
    n_frames = 1 + len(y) // HOP_LENGTH
    # the lowest octave's filters span about 1.6 s: shorter signals are padded with silence
    y = np.pad(y, (0, max(0, int(MIN_SECONDS * sample_rate) - len(y))))
    c = librosa.cqt(y, sr=sample_rate, hop_length=HOP_LENGTH, fmin=librosa.note_to_hz("C1"),
                    n_bins=BINS_PER_OCTAVE * N_OCTAVES, bins_per_octave=BINS_PER_OCTAVE,
                    tuning=tuning)
    return np.abs(c).T[:n_frames].astype(np.float32)


def _fold_matrix(lowest_octave: int) -> np.ndarray:
    """(n_bins, 12) librosa fold of the CQT's bins from ``lowest_octave`` up."""
    import librosa

    n_bins = BINS_PER_OCTAVE * (N_OCTAVES - lowest_octave)
    fmin = librosa.note_to_hz("C1") * 2.0 ** lowest_octave
    return librosa.filters.cq_to_chroma(n_bins, bins_per_octave=BINS_PER_OCTAVE, n_chroma=12,
                                        fmin=fmin).T.astype(np.float32)


def fold(cqt_mag: np.ndarray, view: ChromaView, block: int = BLOCK) -> np.ndarray:
    """Block-averaged, max-normalised chroma of a :func:`fine_cqt`.

    Parameters
    ----------
    cqt_mag : np.ndarray, shape (n_frames, 252)
    view : ChromaView
    block : int
        CQT frames averaged into one chroma frame (a trailing partial block is kept).

    Returns
    -------
    np.ndarray, shape (ceil(n_frames / block), 12), float32
        Each frame scaled to a maximum of 1; silent frames are zero.
    """
    x = np.asarray(cqt_mag, np.float32)
    if x.ndim != 2 or x.shape[1] != BINS_PER_OCTAVE * N_OCTAVES or len(x) == 0:
        raise ValueError(f"expected a fine CQT of shape (frames > 0, {BINS_PER_OCTAVE * N_OCTAVES}), "
                         f"got {x.shape}")
    if not 0 <= view.lowest_octave < N_OCTAVES or view.power <= 0:
        raise ValueError(f"bad chroma view {view}")
    x = x[:, view.lowest_octave * BINS_PER_OCTAVE:]
    if view.power != 1.0:
        x = x ** view.power
    chroma = x @ _fold_matrix(view.lowest_octave)  # (frames, 12)
    n = -(-len(chroma) // block)
    pad = n * block - len(chroma)
    summed = np.pad(chroma, ((0, pad), (0, 0))).reshape(n, block, 12).sum(1)
    counts = np.full(n, block, np.float32)
    counts[-1] = block - pad
    avg = summed / counts[:, None]
    peak = avg.max(axis=1, keepdims=True)
    return np.where(peak > 1e-9 * max(float(peak.max()), 1e-30), avg / np.maximum(peak, 1e-30),
                    0.0).astype(np.float32)


def audio_chroma(y: np.ndarray, views=("c3",), sample_rate: int = SAMPLE_RATE) -> dict[str, np.ndarray]:
    """The chroma views of one recording, from one tuned CQT.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono audio at ``sample_rate``.
    views : sequence of str
        Names in :data:`VIEWS`.

    Returns
    -------
    dict of str to np.ndarray, each of shape (T, 12), float32, T = ceil((1 + n // 640) / 10)
    """
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise ValueError(f"unknown chroma view(s) {unknown}; known: {sorted(VIEWS)}")
    c = fine_cqt(y, sample_rate)
    return {v: fold(c, VIEWS[v]) for v in views}


__all__ = ["ChromaView", "VIEWS", "FRAMES_PER_SECOND", "BINS_PER_OCTAVE", "estimate_tuning",
           "fine_cqt", "fold", "audio_chroma"]
