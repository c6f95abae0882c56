"""What a score says: its melody, key and beat grid, all in source time.

The analysis a work's versions start from: :mod:`~coverhunter.corpus.harmony` and
:mod:`~coverhunter.corpus.arrange` read the melody and the key, the version's plan
(:mod:`~coverhunter.corpus.plan`) and the parts read the beats and the meter. A score is
a :class:`pretty_midi.PrettyMIDI` object; no audio involved. :func:`note` is the note
every part of an arrangement is written with.
"""

from __future__ import annotations

import numpy as np

# Krumhansl-Kessler key profiles (major, minor), tonic first
_KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def note(vel, pitch, start, end):
    """A pretty_midi Note with velocity and pitch clipped to MIDI's range, at least 30 ms long."""
    import pretty_midi

    # plain min/max: this runs per note and numpy's scalar clip is 10x slower
    return pretty_midi.Note(
        int(min(max(vel, 1), 127)), int(min(max(pitch, 0), 127)), float(start), float(max(end, start + 0.03))
    )


def extract_melody(pm) -> list:
    """The top voice as a monophonic note list (pretty_midi Notes, sorted by start).

    The part with the highest mean pitch is taken (the melody of a folk tune, the
    cantus of a polyphonic piece); overlapping notes keep the highest.
    """
    parts = [i for i in pm.instruments if i.notes and not i.is_drum]
    if not parts:
        return []
    top = max(parts, key=lambda i: np.mean([n.pitch for n in i.notes]))
    notes = sorted(top.notes, key=lambda n: (n.start, -n.pitch))
    out = []
    for n in notes:
        if out and n.start < out[-1].end - 1e-6:
            if n.start <= out[-1].start + 1e-6:  # a chord: keep the highest note
                continue
            out[-1] = note(out[-1].velocity, out[-1].pitch, out[-1].start, n.start)
        out.append(note(n.velocity, n.pitch, n.start, n.end))
    return [n for n in out if n.end - n.start > 1e-3]


def pitch_class_profile(notes) -> np.ndarray:
    """Duration-weighted pitch-class histogram, shape [12], sums to 1 (zeros if empty)."""
    h = np.zeros(12)
    for n in notes:
        h[n.pitch % 12] += n.end - n.start
    return h / h.sum() if h.sum() > 0 else h


def estimate_key(notes, signature: int | None = None) -> tuple[int, str]:
    """Krumhansl-Schmuckler key estimate: (tonic pitch class, "major" or "minor").

    ``signature`` is the score's key signature as a MIDI key number (0-11 major,
    12-23 minor); keys with the same scale get a bonus of 0.15 in correlation, so the
    written signature wins close calls (modal folk tunes) but not clear evidence.
    """
    h = pitch_class_profile(notes)
    major_of_sig = None
    if signature is not None:
        major_of_sig = signature % 12 if signature < 12 else (signature - 12 + 3) % 12
    best, key = -np.inf, (0, "major")
    for mode, prof in (("major", _KK_MAJOR), ("minor", _KK_MINOR)):
        for tonic in range(12):
            r = np.corrcoef(h, np.roll(prof, tonic))[0, 1] if h.any() else 0.0
            relative_major = tonic if mode == "major" else (tonic + 3) % 12
            if major_of_sig is not None and relative_major == major_of_sig:
                r += 0.15
            if r > best:
                best, key = r, (tonic, mode)
    return key


def beat_grid(pm, end: float | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Beats, downbeats (seconds) and beats per bar of a score.

    Returns
    -------
    beats : ndarray [n_beats]
    downbeats : ndarray [n_bars]
    meter : int
        Beats per bar of the first time signature (4 when none is given).
    """
    end = pm.get_end_time() if end is None else end
    beats = np.asarray(pm.get_beats(), dtype=float)
    beats = beats[beats < end - 1e-3]
    if len(beats) < 2:
        beats = np.arange(0.0, max(end, 0.5), 0.5)
    downs = np.asarray(pm.get_downbeats(), dtype=float)
    downs = downs[downs < end - 1e-3]
    ts = pm.time_signature_changes
    meter = 4
    if ts:
        num, den = ts[0].numerator, ts[0].denominator
        meter = num // 3 if den == 8 and num % 3 == 0 and num > 3 else num
        meter = max(2, min(meter, 6))
    if len(downs) < 2:
        downs = beats[::meter]
    return beats, downs, meter
