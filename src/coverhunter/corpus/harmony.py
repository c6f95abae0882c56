"""Harmony: the chords a version plays under a work's melody, and their voicings.

:func:`harmonize` chooses a chord per harmonic window among the key's diatonic chords
and the substitutions a plan allows (:data:`QUALITIES`), so that it fits the melody;
:func:`voice_chord` puts a chord's pitches near a register, close to the previous
voicing; :func:`work_harmony` draws the one harmonisation of a work that its
harmony-kept versions share. Source time, no audio; the parts playing these chords
are written by :mod:`~coverhunter.corpus.arrange`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .plan import ArrangementPlan, plan_arrangement
from .score import beat_grid, estimate_key, extract_melody

# chord qualities as pitch-class intervals above the root
QUALITIES = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "dim": (0, 3, 6),
    "sus4": (0, 5, 7),
    "dom7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10),
    "add9": (0, 4, 7, 14),
}
# diatonic triads: (scale-degree root in semitones above the tonic, quality, prior weight)
_DIATONIC = {
    "major": [
        (0, "maj", 3.0),
        (2, "min", 1.2),
        (4, "min", 0.6),
        (5, "maj", 2.2),
        (7, "maj", 2.6),
        (9, "min", 1.4),
        (11, "dim", 0.3),
    ],
    "minor": [
        (0, "min", 3.0),
        (2, "dim", 0.4),
        (3, "maj", 1.2),
        (5, "min", 2.0),
        (7, "maj", 2.4),
        (7, "min", 0.8),
        (8, "maj", 1.4),
        (10, "maj", 1.2),
    ],
}
# substitutions a version may add: (root, quality, weight), relative to the tonic
_SUBSTITUTES = {
    "major": [
        (2, "dom7", 0.8),
        (9, "dom7", 0.6),
        (4, "dom7", 0.5),
        (5, "min", 0.6),
        (10, "maj", 0.6),
        (8, "maj", 0.4),
        (7, "dom7", 1.2),
        (0, "maj7", 0.8),
        (2, "min7", 0.8),
        (7, "sus4", 0.5),
        (0, "add9", 0.5),
    ],
    "minor": [
        (7, "dom7", 1.2),
        (5, "maj", 0.5),
        (0, "maj", 0.3),
        (10, "dom7", 0.6),
        (3, "maj7", 0.6),
        (5, "min7", 0.6),
        (1, "maj", 0.3),
    ],
}


@dataclass(frozen=True)
class Chord:
    """One chord of a harmonisation, in source time (seconds)."""

    start: float
    end: float
    root: int  # pitch class 0-11
    quality: str  # key of QUALITIES

    @property
    def pcs(self) -> tuple[int, ...]:
        return tuple((self.root + i) % 12 for i in QUALITIES[self.quality])


def _candidates(key: tuple[int, str], substitution: float) -> list[tuple[int, str, float]]:
    tonic, mode = key
    cands = [((tonic + r) % 12, q, w) for r, q, w in _DIATONIC[mode]]
    if substitution > 0:
        cands += [((tonic + r) % 12, q, w * substitution) for r, q, w in _SUBSTITUTES[mode]]
    return cands


def harmonize(
    melody,
    downbeats: np.ndarray,
    end: float,
    key: tuple[int, str],
    plan: ArrangementPlan,
    rng: np.random.Generator,
) -> list[Chord]:
    """Choose a chord per harmonic window so that it fits the melody.

    Each window (a bar, or half a bar) scores every candidate chord by the melody time
    it covers (notes on the window's start count double), a penalty for clashing
    notes, a prior on common functions and a bonus for root motion by a fourth or
    fifth; a chord is then drawn from the softmax of the scores at the plan's
    temperature, so versions harmonise the same tune differently. The first and the
    last window are the tonic.
    """
    bounds = list(downbeats) + [end]
    windows = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if plan.chords_per_bar == 2 and b - a > 1.0:
            windows += [(a, (a + b) / 2), ((a + b) / 2, b)]
        else:
            windows.append((a, b))
    if not windows:
        return []
    if windows[0][0] > 0:
        windows.insert(0, (0.0, windows[0][0]))
    cands = _candidates(key, plan.substitution)
    tonic_q = "maj" if key[1] == "major" else "min"
    chords: list[Chord] = []
    prev_root = None
    for w, (a, b) in enumerate(windows):
        weight = np.zeros(12)
        for n in melody:
            overlap = min(n.end, b) - max(n.start, a)
            if overlap > 0:
                weight[n.pitch % 12] += overlap * (2.0 if abs(n.start - a) < 0.05 else 1.0)
        total = weight.sum() + 1e-9
        if w in (0, len(windows) - 1):
            chords.append(Chord(a, b, key[0], tonic_q))
            prev_root = key[0]
            continue
        scores = []
        for root, q, prior in cands:
            pcs = {(root + i) % 12 for i in QUALITIES[q]}
            fit = sum(weight[p] for p in pcs) / total
            clash = sum(weight[p] for p in range(12) if p not in pcs) / total
            motion = 0.0
            if prev_root is not None:
                step = (root - prev_root) % 12
                motion = 0.3 if step in (5, 7) else (-0.2 if step == 0 else 0.0)
            scores.append(3.0 * fit - 2.0 * clash + 0.3 * np.log(prior) + motion)
        s = np.array(scores) / max(plan.temperature, 1e-3)
        p = np.exp(s - s.max())
        root, q, _ = cands[int(rng.choice(len(cands), p=p / p.sum()))]
        if plan.seventh_prob and q in ("maj", "min") and rng.random() < plan.seventh_prob:
            q = {"maj": str(rng.choice(["maj7", "add9", "dom7"])), "min": "min7"}[q]
        chords.append(Chord(a, b, root, q))
        prev_root = root
    return chords


def voice_chord(
    chord: Chord, register: int, inversion: int, prev: list[int] | None, spread: bool = False
) -> list[int]:
    """MIDI pitches of a chord near ``register``, close to the previous voicing.

    ``inversion`` 0/1/2 puts the root, third or fifth lowest; ``spread`` opens the
    voicing by an octave between the lowest note and the rest.
    """
    pcs = list(chord.pcs)
    pcs = pcs[inversion % len(pcs) :] + pcs[: inversion % len(pcs)]
    base = register - 6 + ((pcs[0] - (register - 6)) % 12)
    pitches = [base]
    for pc in pcs[1:]:
        p = pitches[-1] + ((pc - pitches[-1]) % 12 or 12)
        pitches.append(p)
    if spread:
        pitches = [pitches[0] - 12] + pitches[1:]
    if prev:  # move the whole voicing an octave if that is closer to the previous one
        best = min((-12, 0, 12), key=lambda o: abs(np.mean(pitches) + o - np.mean(prev)))
        if abs(np.mean(pitches) + best - register) <= 9:
            pitches = [p + best for p in pitches]
    return [int(np.clip(p, 28, 96)) for p in pitches]


def work_harmony(pm, rng: np.random.Generator) -> list[Chord]:
    """One harmonisation of a work's melody, drawn once per work (source time).

    Every version with ``harmony="kept"`` plays these chords, so those versions share
    the work's chord progression as most real covers do; ``rng`` should be the work's
    own stream (the same for all its versions).
    """
    end = pm.get_end_time()
    melody = extract_melody(pm)
    sig = pm.key_signature_changes[0].key_number if pm.key_signature_changes else None
    key = estimate_key(melody, sig)
    _, downs, meter = beat_grid(pm, end)
    plan = plan_arrangement(rng, meter=meter)
    return harmonize(melody, downs, end, key, plan, rng)
