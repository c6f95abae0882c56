"""A version's plan: everything that makes one version of a work differ from the others,
drawn from a random stream before a note is written.

- :class:`ArrangementPlan` (:func:`plan_arrangement`): the arrangement's style, harmonic
  rhythm and chord choices, bass line, counter-melody, drums, melody treatment and
  instruments, drawn from the vocabulary below (:data:`STYLES`, :data:`BASS_LINES`,
  :data:`DRUMS`, the General MIDI program groups); :func:`keep_harmony` makes it a plan
  that plays the work's own chords;
- :class:`VersionPlan` (:func:`plan_version`): that arrangement, the performance (key,
  tempo map, structure, timing, dynamics) and the sound (synthesizer, soundfont,
  effects, noise, codec); stored as JSON in the dataset's ``version``.

:mod:`~coverhunter.corpus.arrange` writes the parts a plan asks for and
:mod:`~coverhunter.corpus.sound` plays and renders them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .score import beat_grid

PLAY_TWICE_BELOW = 30.0  # tunes shorter than this are played twice, as folk players do

STYLES = ("melody_only", "block", "pad", "arpeggio", "alberti", "waltz", "strum", "dense")
POLY_STYLES = ("keep_voices", "reorchestrate")
BASS_LINES = ("none", "root", "root_fifth", "walking", "pedal")
DRUMS = ("none", "straight", "backbeat", "shuffle", "brush")

# General MIDI program groups
MELODY_PROGRAMS = (
    0,
    4,
    6,
    11,
    19,
    21,
    22,
    24,
    25,
    26,
    40,
    41,
    42,
    56,
    57,
    60,
    64,
    65,
    66,
    68,
    69,
    71,
    72,
    73,
    74,
    75,
    78,
    79,
    80,
    81,
    104,
    105,
    109,
)
CHORD_PROGRAMS = (
    0,
    1,
    2,
    4,
    5,
    6,
    16,
    17,
    19,
    24,
    25,
    26,
    27,
    46,
    48,
    49,
    50,
    52,
    61,
    88,
    89,
    90,
    91,
    94,
    95,
)
BASS_PROGRAMS = (32, 33, 34, 35, 36, 37, 38, 39, 42, 43, 58, 70)
COUNTER_PROGRAMS = (40, 41, 42, 60, 68, 70, 71, 73, 11, 12, 13, 46)


@dataclass(frozen=True)
class ArrangementPlan:
    """What one version's arrangement does (stored, as JSON, in the dataset's ``version``)."""

    style: str  # one of STYLES or POLY_STYLES
    chords_per_bar: int  # harmonic rhythm: 1 or 2 (bars of one beat group each)
    substitution: float  # weight of the substitute chords (0 = diatonic only)
    temperature: float  # randomness of the chord choice
    seventh_prob: float  # chance a chord gains its seventh / added tone
    inversion_prob: float  # chance a chord is voiced over its 3rd or 5th
    bass: str  # one of BASS_LINES
    counter_melody: bool
    drums: str  # one of DRUMS
    melody_octave: int  # -1, 0 or +1 octave
    ornament_prob: float  # chance a melody note is ornamented
    rhythm_prob: float  # chance a melody note is displaced (anticipation, swing)
    melody_level: float  # melody velocity relative to the accompaniment (< 1 buries it)
    register: int  # centre MIDI pitch of the accompaniment voicings
    programs: tuple[int, int, int, int]  # melody, chords, bass, counter-melody
    # "new": this version harmonises the melody afresh; "kept": it plays the work's own
    # chord progression (harmony.work_harmony, shared by all such versions of a work)
    harmony: str = "new"

    def describe(self) -> dict:
        d = asdict(self)
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in d.items()}


def plan_arrangement(
    rng: np.random.Generator,
    polyphonic: bool = False,
    meter: int = 4,
    programs: tuple[int, ...] | None = None,
) -> ArrangementPlan:
    """Draw one version's arrangement.

    Parameters
    ----------
    rng : numpy Generator
    polyphonic : bool
        The source has several voices: some versions keep or re-orchestrate them.
    meter : int
        Beats per bar of the source (3 favours waltz patterns).
    programs : tuple of int, optional
        General MIDI programs the renderer has; others are never chosen.
    """
    styles = list(STYLES) + (list(POLY_STYLES) * 2 if polyphonic else [])
    weights = np.array([0.7 if s == "melody_only" else 1.0 for s in styles])
    if meter != 3:
        weights[styles.index("waltz")] = 0.3
    style = str(rng.choice(styles, p=weights / weights.sum()))
    plain = style in ("melody_only", "keep_voices")

    def pick(group):
        allowed = [p for p in group if programs is None or p in programs]
        return int(rng.choice(allowed or list(programs or group)))

    return ArrangementPlan(
        style=style,
        chords_per_bar=int(rng.choice([1, 1, 2])),
        substitution=float(rng.choice([0.0, 0.5, 1.0, 2.0])),
        temperature=float(rng.uniform(0.3, 1.5)),
        seventh_prob=float(rng.choice([0.0, 0.2, 0.6])),
        inversion_prob=float(rng.uniform(0.0, 0.6)),
        bass="none" if plain else str(rng.choice(BASS_LINES, p=[0.2, 0.3, 0.25, 0.15, 0.1])),
        counter_melody=bool(not plain and rng.random() < 0.3),
        drums="none" if plain else str(rng.choice(DRUMS, p=[0.5, 0.15, 0.15, 0.1, 0.1])),
        melody_octave=int(rng.choice([-1, 0, 0, 0, 1])),
        ornament_prob=float(rng.choice([0.0, 0.0, 0.1, 0.25])),
        rhythm_prob=float(rng.choice([0.0, 0.0, 0.15, 0.3])),
        melody_level=float(rng.choice([1.0, 1.0, 0.8, 0.55]) if not plain else 1.0),
        register=int(rng.integers(50, 62)),
        programs=(pick(MELODY_PROGRAMS), pick(CHORD_PROGRAMS), pick(BASS_PROGRAMS), pick(COUNTER_PROGRAMS)),
    )


def keep_harmony(plan: ArrangementPlan, rng: np.random.Generator) -> ArrangementPlan:
    """The plan of a version that plays the work's own chords (``harmony="kept"``).

    Such a cover keeps the chord progression and changes everything else (voicing,
    texture, bass line, drums, instruments). A plan drawn as melody only gets an
    accompaniment style from ``rng`` instead, since a version without chords keeps no
    harmony; the polyphonic styles keep the source's own voices, its harmony.
    """
    style = plan.style
    if style == "melody_only":
        style = str(rng.choice([s for s in STYLES if s != "melody_only"]))
    return replace(plan, style=style, harmony="kept")


@dataclass(frozen=True)
class VersionPlan:
    """Everything that makes one version differ from the others (stored in ``version``)."""

    renderer: str  # "fluidsynth" or "timidity"
    soundfont: str  # fluidsynth's soundfont ("" for timidity)
    arrangement: ArrangementPlan
    transpose: int
    tempo: float
    tempo_drift: float  # relative tempo change from start to end
    sections: tuple[tuple[float, float], ...]  # source-time spans, in playing order
    swing_depth: float
    velocity_scale: float
    reverb: float
    chorus: bool
    tilt_db: float
    snr_db: float
    codec: str
    gain_db: float

    def describe(self) -> str:
        d = {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}
        d["soundfont"] = Path(self.soundfont).name
        d["sections"] = [[round(a, 2), round(b, 2)] for a, b in self.sections]
        d["arrangement"] = self.arrangement.describe()
        return json.dumps(d)


def _sections(pm, rng: np.random.Generator, keep_whole: bool) -> tuple[tuple[float, float], ...]:
    """Cut the piece at downbeats into 4-8 sections, then crop, repeat or drop some.

    Tunes shorter than :data:`PLAY_TWICE_BELOW` are played twice (before the edit).
    """
    end = pm.get_end_time()
    beats = [b for b in pm.get_downbeats() if 0 < b < end - 1.0]
    n_sec = int(rng.integers(4, 9))
    if len(beats) >= n_sec - 1:
        cuts = [beats[int(round(i * len(beats) / n_sec))] for i in range(1, n_sec)]
    else:
        cuts = list(np.linspace(0, end, n_sec + 1)[1:-1])
    bounds = [0.0] + sorted(set(float(c) for c in cuts)) + [end]
    secs = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b - a > 0.5]
    if end < PLAY_TWICE_BELOW:
        secs = secs + secs
    if keep_whole or len(secs) < 3:
        return tuple(secs)
    op = rng.choice(["crop", "repeat", "drop", "late_start"])
    if op == "crop":
        secs = secs[int(rng.integers(0, 2)) : len(secs) - int(rng.integers(0, 2))]
    elif op == "repeat":
        i = int(rng.integers(0, len(secs)))
        secs = secs[: i + 1] + [secs[i]] + secs[i + 1 :]
    elif op == "drop":
        secs.pop(int(rng.integers(1, len(secs) - 1)))
    else:  # start somewhere in the first section
        a, b = secs[0]
        secs[0] = (a + float(rng.uniform(0.3, 0.8)) * (b - a), b)
    return tuple(secs)


def plan_version(
    pm,
    rng: np.random.Generator,
    fonts: list[Path],
    first: bool,
    timidity: frozenset[int] = frozenset(),
    keep_performance: bool = False,
) -> VersionPlan:
    """Draw the differences of one version.

    Parameters
    ----------
    pm : pretty_midi.PrettyMIDI
        The source score.
    fonts : list of Path
        Soundfonts fluidsynth may use.
    first : bool
        The first version keeps the source's key, tempo and whole structure.
    timidity : frozenset of int
        Programs of timidity's patch set; when not empty, one version in five is
        rendered by timidity with those programs only.
    keep_performance : bool
        Every version keeps key, tempo and structure: versions differ only in
        arrangement and sound.
    """
    use_timidity = bool(timidity) and rng.random() < 0.2
    polyphonic = sum(1 for i in pm.instruments if len(i.notes) > 4) > 1
    meter = beat_grid(pm)[2]
    arrangement = plan_arrangement(
        rng, polyphonic=polyphonic, meter=meter, programs=timidity if use_timidity else None
    )
    same = first or keep_performance
    return VersionPlan(
        renderer="timidity" if use_timidity else "fluidsynth",
        soundfont="" if use_timidity else str(fonts[int(rng.integers(len(fonts)))]),
        arrangement=arrangement,
        transpose=0 if same else int(rng.integers(-5, 7)),
        tempo=1.0 if same else float(rng.uniform(0.75, 1.3)),
        tempo_drift=0.0 if same else float(rng.uniform(-0.15, 0.15)),
        sections=_sections(pm, rng, keep_whole=same),
        swing_depth=float(rng.uniform(0.0, 0.04)),
        velocity_scale=float(rng.uniform(0.6, 1.2)),
        reverb=float(rng.choice([0.0, 0.3, 0.6, 0.9])),
        chorus=bool(rng.random() < 0.3),
        tilt_db=float(rng.uniform(-6, 6)),
        snr_db=float(rng.uniform(15, 45)),
        codec=str(rng.choice(["none", "mp3", "ogg"])),
        gain_db=float(rng.uniform(-12, 0)),
    )
