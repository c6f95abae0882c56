"""Arrangements: a work's melody kept, a new accompaniment written for each version.

Real covers keep what identifies a composition, the melody and its harmonic outline,
and change the rest: harmony (substitutions, inversions, re-voicing), bass line,
accompaniment pattern, counter-melodies, drums, instruments and register. This module
writes such arrangements from a score (a :class:`pretty_midi.PrettyMIDI` object) with
no audio involved; :mod:`coverhunter.corpus.make` renders them.

Everything here is in the source's time (seconds of the score as written); tempo,
structure and key changes are applied afterwards, to every part at once.

Pipeline of one version::

    melody = extract_melody(pm)                   # the top voice, monophonic
    key = estimate_key(melody)                    # (tonic pitch class, "major"/"minor")
    grid = beat_grid(pm)                          # beats and downbeats
    plan = plan_arrangement(rng, polyphonic=...)  # what this version does
    parts = arrange_parts(pm, plan, rng)          # new instruments, melody first
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .plan import POLY_STYLES, ArrangementPlan, plan_arrangement
from .score import beat_grid, estimate_key, extract_melody, note

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


# --------------------------------------------------------------------------- harmony


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


# --------------------------------------------------------------------------- parts


def _beats_in(beats: np.ndarray, a: float, b: float) -> np.ndarray:
    inside = beats[(beats >= a - 1e-6) & (beats < b - 1e-6)]
    return inside if len(inside) else np.array([a])


def accompaniment(
    chords: list[Chord],
    beats: np.ndarray,
    plan: ArrangementPlan,
    meter: int,
    rng: np.random.Generator,
    velocity: int = 70,
) -> list:
    """Notes of the chord part in the plan's pattern (block, pad, arpeggio, ...)."""
    notes, prev = [], None
    beat_len = float(np.median(np.diff(beats))) if len(beats) > 1 else 0.5
    for c in chords:
        inv = int(rng.integers(1, 3)) if rng.random() < plan.inversion_prob else 0
        v = voice_chord(c, plan.register, inv, prev, spread=plan.style == "dense")
        prev = v
        bs = _beats_in(beats, c.start, c.end)
        style = plan.style
        if style in ("pad", "melody_only", "keep_voices", "reorchestrate"):
            notes += [note(velocity - 10, p, c.start, c.end) for p in v]
        elif style == "block":
            for t in bs:
                notes += [note(velocity, p, t, min(t + 0.9 * beat_len, c.end)) for p in v]
        elif style == "arpeggio":
            seq = v + v[-2:0:-1]
            step = beat_len / 2
            t, k = c.start, 0
            while t < c.end - 1e-3:
                notes.append(note(velocity, seq[k % len(seq)], t, min(t + 1.5 * step, c.end)))
                t, k = t + step, k + 1
        elif style == "alberti":
            order = [v[0], v[-1], v[1 % len(v)], v[-1]]
            step = beat_len / 2
            t, k = c.start, 0
            while t < c.end - 1e-3:
                notes.append(note(velocity - 5, order[k % 4], t, min(t + step, c.end)))
                t, k = t + step, k + 1
        elif style == "waltz":
            for j, t in enumerate(bs):
                if j % meter == 0:
                    notes.append(note(velocity + 5, v[0] - 12, t, min(t + beat_len, c.end)))
                else:
                    notes += [note(velocity - 10, p, t, min(t + 0.6 * beat_len, c.end)) for p in v[1:]]
        elif style == "strum":
            pattern = [0.0, 0.5, 0.75] if rng.random() < 0.5 else [0.0, 0.5]
            for t in bs:
                for off in pattern:
                    s = t + off * beat_len
                    if s >= c.end - 1e-3:
                        continue
                    down = off == 0.0
                    for k, p in enumerate(v if down else v[::-1]):
                        notes.append(
                            note(
                                velocity - (0 if down else 15),
                                p,
                                s + 0.012 * k,
                                min(s + 0.45 * beat_len, c.end),
                            )
                        )
        elif style == "dense":
            step = beat_len / 2
            t = c.start
            while t < c.end - 1e-3:
                notes += [note(velocity + 10, p, t, min(t + step, c.end)) for p in v]
                notes += [note(velocity, p + 12, t, min(t + step, c.end)) for p in v[1:]]
                t += step
    return notes


def bass_line(
    chords: list[Chord],
    beats: np.ndarray,
    kind: str,
    key: tuple[int, str],
    rng: np.random.Generator,
    velocity: int = 80,
) -> list:
    """Bass notes under the chords: root, root-fifth, walking or a tonic pedal."""
    if kind == "none":
        return []
    notes = []
    low = 36
    for i, c in enumerate(chords):
        root = low + (c.root - low) % 12
        if kind == "pedal":
            notes.append(note(velocity - 10, low + (key[0] - low) % 12, c.start, c.end))
        elif kind == "root":
            notes.append(note(velocity, root, c.start, c.end))
        else:
            bs = _beats_in(beats, c.start, c.end)
            nxt = chords[i + 1].root if i + 1 < len(chords) else c.root
            target = low + (nxt - low) % 12
            for j, t in enumerate(bs):
                end = bs[j + 1] if j + 1 < len(bs) else c.end
                if kind == "root_fifth":
                    p = root if j % 2 == 0 else root + 7
                elif j == 0:
                    p = root
                elif j == len(bs) - 1:  # walking: approach the next root by step
                    p = target + int(rng.choice([-1, 1, -2, 2]))
                else:
                    p = root + int(rng.choice(QUALITIES[c.quality][:3]))
                notes.append(note(velocity, p, t, end - 0.02))
    return notes


def counter_melody(
    chords: list[Chord], melody, register: int, rng: np.random.Generator, velocity: int = 60
) -> list:
    """A slow line of chord tones, moving mostly against the melody's direction."""
    notes, prev = [], register
    for c in chords:
        inside = [n.pitch for n in melody if c.start <= n.start < c.end]
        mel_dir = np.sign(inside[-1] - inside[0]) if len(inside) > 1 else 0
        options = [register - 12 + ((pc - register) % 12) + o for pc in c.pcs for o in (0, 12)]
        options = [p for p in options if abs(p - register) <= 9] or [prev]
        want = prev - 2 * mel_dir
        p = min(options, key=lambda x: abs(x - want) + 0.1 * rng.random())
        half = (c.start + c.end) / 2
        if c.end - c.start > 1.5 and rng.random() < 0.5:
            p2 = min(options, key=lambda x: abs(x - p - rng.choice([-3, 3])))
            notes += [note(velocity, p, c.start, half), note(velocity, p2, half, c.end)]
        else:
            notes.append(note(velocity, p, c.start, c.end))
        prev = p
    return notes


def drum_part(beats: np.ndarray, end: float, meter: int, kind: str, rng: np.random.Generator) -> list:
    """A General MIDI drum pattern on the beat grid (kick 36, snare 38, hats 42)."""
    if kind == "none" or len(beats) == 0:
        return []
    beat_len = float(np.median(np.diff(beats))) if len(beats) > 1 else 0.5
    notes = []
    for j, t in enumerate(beats):
        pos = j % meter
        if kind == "brush":
            notes.append(note(45, 38 if pos % 2 else 42, t, t + 0.1))
            continue
        if pos == 0 or (kind == "straight" and pos == meter // 2):
            notes.append(note(95, 36, t, t + 0.1))
        if kind in ("backbeat", "shuffle") and pos % 2 == 1:
            notes.append(note(90, 38, t, t + 0.1))
        subs = [0.0, 2 / 3] if kind == "shuffle" else [0.0, 0.5]
        for s in subs:
            if t + s * beat_len < end:
                notes.append(
                    note(60 + int(rng.integers(-8, 8)), 42, t + s * beat_len, t + s * beat_len + 0.05)
                )
    return notes


def vary_melody(
    melody,
    key: tuple[int, str],
    plan: ArrangementPlan,
    beats: np.ndarray,
    rng: np.random.Generator,
    velocity: float,
) -> list:
    """The melody as this version plays it: octave, ornaments, rhythmic displacement.

    Every source note keeps its pitch (plus the version's octave) and its position up
    to a fraction of a beat; ornaments only add short notes inside a note's time.
    """
    beat_len = float(np.median(np.diff(beats))) if len(beats) > 1 else 0.5
    scale = {
        (key[0] + i) % 12 for i in ((0, 2, 4, 5, 7, 9, 11) if key[1] == "major" else (0, 2, 3, 5, 7, 8, 10))
    }
    out = []
    shift = 12 * plan.melody_octave
    for i, n in enumerate(melody):
        start, end = n.start, n.end
        vel = velocity * (0.9 + 0.2 * rng.random())
        if plan.rhythm_prob and rng.random() < plan.rhythm_prob and i > 0:
            if rng.random() < 0.5:  # anticipation: come in early, shortening the note before
                start = max(out[-1].start + 0.05, start - beat_len / 4)
                out[-1] = note(out[-1].velocity, out[-1].pitch, out[-1].start, start)
            else:  # a late, "laid back" entry
                start = min(start + beat_len / 6, end - 0.05)
        pitch = n.pitch + shift
        nxt = melody[i + 1] if i + 1 < len(melody) else None
        dur = end - start
        if plan.ornament_prob and dur > beat_len * 0.9 and rng.random() < plan.ornament_prob:
            kind = rng.choice(["passing", "neighbour", "turn"])
            if kind == "passing" and nxt is not None and 3 <= abs(nxt.pitch - n.pitch) <= 4:
                mid = start + dur * 0.5
                step = np.sign(nxt.pitch - n.pitch)
                passing = pitch + step * (1 if (n.pitch + step) % 12 in scale else 2)
                passing = pitch + step * 2 if (pitch + step * 2) % 12 in scale else passing
                out += [note(vel, pitch, start, mid), note(vel * 0.9, passing, mid, end)]
                continue
            if kind == "neighbour":
                q = start + dur * 0.25
                up = pitch + (1 if (pitch + 1) % 12 in scale else 2)
                out += [
                    note(vel, pitch, start, q),
                    note(vel * 0.85, up, q, q + dur * 0.2),
                    note(vel, pitch, q + dur * 0.2, end),
                ]
                continue
            if kind == "turn":
                g = min(0.08, dur / 6)
                up = pitch + (1 if (pitch + 1) % 12 in scale else 2)
                out += [note(vel * 0.8, up, start, start + g), note(vel, pitch, start + g, end)]
                continue
        out.append(note(vel, pitch, start, end))
    return out


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


def arrange_parts(
    pm, plan: ArrangementPlan, rng: np.random.Generator, work_chords: list[Chord] | None = None
) -> list:
    """A version's instruments (pretty_midi Instruments, melody first), in source time.

    ``keep_voices`` keeps every source part on the plan's programs; ``reorchestrate``
    keeps them and doubles the lowest an octave down; every other style keeps only
    the melody and writes a new accompaniment: over a new harmonisation, or over
    ``work_chords`` (:func:`work_harmony`) when the plan keeps the work's harmony.
    """
    import pretty_midi

    end = pm.get_end_time()
    melody = extract_melody(pm)
    sig = pm.key_signature_changes[0].key_number if pm.key_signature_changes else None
    key = estimate_key(melody, sig)
    beats, downs, meter = beat_grid(pm, end)
    base_vel = 80.0
    mel_vel = base_vel * plan.melody_level
    mel_prog, chord_prog, bass_prog, counter_prog = plan.programs
    parts = []

    def part(program, notes, drum=False):
        inst = pretty_midi.Instrument(program=program, is_drum=drum)
        inst.notes = sorted(notes, key=lambda n: (n.start, n.pitch))
        if inst.notes:
            parts.append(inst)

    if plan.style in POLY_STYLES:
        src = sorted(
            (i for i in pm.instruments if i.notes and not i.is_drum),
            key=lambda i: -np.mean([n.pitch for n in i.notes]),
        )
        progs = [mel_prog, chord_prog, counter_prog, bass_prog]
        for k, inst in enumerate(src):
            shift = 12 * plan.melody_octave if k == 0 else 0
            part(
                progs[min(k, 3)] if plan.style == "reorchestrate" else progs[k % 2],
                [
                    note(n.velocity * (plan.melody_level if k else 1.0), n.pitch + shift, n.start, n.end)
                    for n in inst.notes
                ],
            )
        if plan.style == "reorchestrate":
            low = src[-1]
            part(
                bass_prog,
                [note(n.velocity, n.pitch - 12, n.start, n.end) for n in low.notes if n.pitch - 12 >= 28],
            )
            part(0, drum_part(beats, end, meter, plan.drums, rng), drum=True)
        return parts

    part(mel_prog, vary_melody(melody, key, plan, beats, rng, mel_vel))
    if plan.style == "melody_only":
        return parts
    if plan.harmony == "kept":
        if work_chords is None:
            raise ValueError("a plan that keeps the work's harmony needs work_chords")
        chords = list(work_chords)
    else:
        chords = harmonize(melody, downs, end, key, plan, rng)
    acc_vel = int(base_vel * (0.85 if plan.melody_level >= 1 else 1.0))
    part(chord_prog, accompaniment(chords, beats, plan, meter, rng, velocity=acc_vel))
    part(bass_prog, bass_line(chords, beats, plan.bass, key, rng))
    if plan.counter_melody:
        part(counter_prog, counter_melody(chords, melody, plan.register + 7, rng))
    part(0, drum_part(beats, end, meter, plan.drums, rng), drum=True)
    return parts
