"""Notes from a tuned log-frequency spectrum: approximate transcription by non-negative least squares.

Mauch and Dixon's NNLS chroma [1]_, written from the paper's description. Each frame of
the tuned spectrum (three bins per semitone, :func:`coverhunter.chroma.fine_cqt`) is
whitened: a bin keeps how far it rises above its neighbourhood in frequency (half an
octave), in units of that neighbourhood's spread. The whitened frame is then explained
as a non-negative sum of note templates (a tone with geometrically decaying partials),
and the notes' weights, folded onto pitch classes, are the chroma.

What it changes for cover search: a note counts by how clearly it stands out, not by its
energy. A folded chroma of a loud melody over quiet chords is the melody's; here the
chords count too, so two mixes of one harmony (the chords loud in one version, a lead
line in front in another) look alike (``tests/test_notes.py``). The whitening alone gives
part of that; the transcription the rest (docs/chroma.md "Notes"). It does not, with
these templates, take a bright tone's upper partials off their pitch classes: whitening
flattens a single tone's partials, and the templates decay.

It runs on block-averaged frames (2.5 a second), not on every CQT frame, and solves all
of a recording's frames at once (:func:`note_activations`): a small share of the fine
CQT's cost (docs/chroma.md "What it costs").

.. [1] M. Mauch and S. Dixon, "Approximate note transcription for the improved
   identification of difficult chords", ISMIR 2010.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

BINS_PER_SEMITONE = 3
N_NOTES = 84  # C1 .. B7: one per semitone of the fine CQT's seven octaves
N_BINS = N_NOTES * BINS_PER_SEMITONE
DECAY = 0.7  # amplitude of partial k is DECAY ** (k - 1)
PARTIALS = 20
WHITEN_BINS = 18  # half an octave: the neighbourhood a bin must rise above
ITERATIONS = 100  # of the batched solver (note_activations)
SILENT = 1e-5  # a frame whose largest magnitude is below this is silence (a full-scale tone: ~20)


@lru_cache(maxsize=8)
def note_templates(decay: float = DECAY, partials: int = PARTIALS) -> np.ndarray:
    """Spectral template of each note: partial k of note n at bin ``3 n + 36 log2 k``.

    A partial between two bins is shared between them linearly; partials above the top
    bin are left out; each template has unit length.

    Returns
    -------
    np.ndarray, shape (N_BINS, N_NOTES), float64 (read-only: it is cached)
    """
    if not 0 < decay < 1 or partials < 1:
        raise ValueError(f"note templates need 0 < decay < 1 and partials >= 1, got {decay}, {partials}")
    w = np.zeros((N_BINS, N_NOTES))
    per_octave = 12 * BINS_PER_SEMITONE
    for n in range(N_NOTES):
        for k in range(1, partials + 1):
            pos = BINS_PER_SEMITONE * n + per_octave * np.log2(k)
            i = int(pos)
            if i >= N_BINS:
                break
            frac = pos - i
            w[i, n] += decay ** (k - 1) * (1 - frac)
            if frac and i + 1 < N_BINS:
                w[i + 1, n] += decay ** (k - 1) * frac
    w /= np.linalg.norm(w, axis=0)
    w.flags.writeable = False
    return w


def _moving_mean(x: np.ndarray, width: int) -> np.ndarray:
    """Mean over ``width`` bins along axis 1, edges repeated (``scipy.ndimage.uniform_filter1d``
    with ``mode="nearest"``: bins ``i - width // 2 .. i + (width - 1) // 2``)."""
    left, right = width // 2, (width - 1) // 2
    padded = np.pad(x, ((0, 0), (left, right)), mode="edge")
    c = np.cumsum(np.pad(padded, ((0, 0), (1, 0))), axis=1)
    return (c[:, width:] - c[:, :-width]) / width


def whiten(spectrum: np.ndarray, width: int = WHITEN_BINS) -> np.ndarray:
    """How far each bin rises above its neighbourhood: ``(x - mean) / std`` over ``width``
    bins around it where positive, else 0.

    Parameters
    ----------
    spectrum : np.ndarray, shape (T, n_bins)
        Magnitudes.

    Returns
    -------
    np.ndarray, shape (T, n_bins), float64
    """
    x = np.asarray(spectrum, np.float64)
    mean = _moving_mean(x, width)
    var = _moving_mean(x * x, width) - mean * mean
    return np.where(x > mean, (x - mean) / np.sqrt(np.maximum(var, 1e-20)), 0.0)


@lru_cache(maxsize=8)
def _gram(decay: float, partials: int) -> tuple[np.ndarray, float]:
    """The templates' Gram matrix (N_NOTES, N_NOTES) and its largest eigenvalue."""
    w = note_templates(decay, partials)
    gram = w.T @ w
    gram.flags.writeable = False
    return gram, float(np.linalg.eigvalsh(gram)[-1])


def note_activations(
    spectrum: np.ndarray, decay: float = DECAY, partials: int = PARTIALS, iterations: int = ITERATIONS
) -> np.ndarray:
    """Each frame's notes: the non-negative weights of the note templates that best
    explain its whitened spectrum (least squares).

    Solved for all frames at once by accelerated projected gradient (FISTA, ``iterations``
    steps of size 1 / the Gram matrix's largest eigenvalue). Written here because
    :func:`scipy.optimize.nnls` solves one frame at a time: on 31 recordings of a tune
    corpus 100 steps took 0.105 of its CPU time, and the folded chroma differed from its
    exact solution by at most 0.001 (0.005 after 50 steps; ``runs``' probe, recorded in
    docs/chroma.md "Notes"); ``tests/test_notes.py`` holds it to scipy's.

    Parameters
    ----------
    spectrum : np.ndarray, shape (T, N_BINS)
        Magnitudes of a tuned CQT at three bins per semitone from C1
        (:func:`coverhunter.chroma.fine_cqt`, usually block-averaged).

    Returns
    -------
    np.ndarray, shape (T, N_NOTES), float64
        Silent frames (largest magnitude below :data:`SILENT`) are zero.
    """
    x = np.asarray(spectrum, np.float64)
    if x.ndim != 2 or x.shape[1] != N_BINS:
        raise ValueError(f"expected a spectrum of shape (frames, {N_BINS}), got {x.shape}")
    w = note_templates(decay, partials)
    gram, lipschitz = _gram(decay, partials)
    target = whiten(x) @ w  # (T, N_NOTES)
    target[x.max(axis=1, initial=0.0) < SILENT] = 0.0  # silence: all weights stay 0
    h = np.zeros_like(target)
    y, t = h, 1.0
    for _ in range(iterations):
        h_next = np.maximum(y - (y @ gram - target) / lipschitz, 0.0)
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        y = h_next + ((t - 1.0) / t_next) * (h_next - h)
        h, t = h_next, t_next
    return h


def notes_to_chroma(notes: np.ndarray, lowest_note: int = 0) -> np.ndarray:
    """Pitch-class profile of note activations from ``lowest_note`` (0: C1) up, each frame
    scaled to a maximum of 1 (frames without notes zero).

    Parameters
    ----------
    notes : np.ndarray, shape (T, N_NOTES)

    Returns
    -------
    np.ndarray, shape (T, 12), float32
    """
    a = np.asarray(notes, np.float64)[:, lowest_note:]
    pc = (np.arange(lowest_note, N_NOTES)) % 12
    chroma = np.zeros((len(a), 12))
    for p in range(12):
        chroma[:, p] = a[:, pc == p].sum(axis=1)
    peak = chroma.max(axis=1, keepdims=True)
    return np.where(peak > 0, chroma / np.where(peak > 0, peak, 1.0), 0.0).astype(np.float32)


__all__ = ["note_templates", "whiten", "note_activations", "notes_to_chroma", "N_NOTES", "N_BINS"]
