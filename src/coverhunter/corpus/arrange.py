"""Arrangements: a work's melody kept, a new accompaniment written for each version.

Real covers keep what identifies a composition, the melody and its harmonic outline,
and change the rest: harmony (substitutions, inversions, re-voicing), bass line,
accompaniment pattern, counter-melodies, drums, instruments and register. This module
writes the parts of such arrangements (block chords, pads, arpeggios, bass lines,
counter-melody, drums, the melody's variations) from a score (a
:class:`pretty_midi.PrettyMIDI` object) with no audio involved;
:mod:`coverhunter.corpus.sound` plays and renders them.

Everything here is in the source's time (seconds of the score as written); tempo,
structure and key changes are applied afterwards, to every part at once.

Pipeline of one version (the first three steps are :mod:`~coverhunter.corpus.score`'s,
the fourth :mod:`~coverhunter.corpus.plan`'s; :func:`arrange_parts` takes its chords
from :mod:`~coverhunter.corpus.harmony`)::

    melody = extract_melody(pm)                   # the top voice, monophonic
    key = estimate_key(melody)                    # (tonic pitch class, "major"/"minor")
    grid = beat_grid(pm)                          # beats and downbeats
    plan = plan_arrangement(rng, polyphonic=...)  # what this version does
    parts = arrange_parts(pm, plan, rng)          # new instruments, melody first
"""

from __future__ import annotations

import numpy as np

from .harmony import QUALITIES, Chord, harmonize, voice_chord
from .plan import POLY_STYLES, ArrangementPlan
from .score import beat_grid, estimate_key, extract_melody, note


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


def arrange_parts(
    pm, plan: ArrangementPlan, rng: np.random.Generator, work_chords: list[Chord] | None = None
) -> list:
    """A version's instruments (pretty_midi Instruments, melody first), in source time.

    ``keep_voices`` keeps every source part on the plan's programs; ``reorchestrate``
    keeps them and doubles the lowest an octave down; every other style keeps only
    the melody and writes a new accompaniment: over a new harmonisation, or over
    ``work_chords`` (:func:`~coverhunter.corpus.harmony.work_harmony`) when the plan
    keeps the work's harmony.
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
