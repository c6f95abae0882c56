"""The sound of a version: its arranged parts performed, rendered and degraded to audio.

- :func:`perform`: the parts played as the version's plan says (sections in order,
  transposed, a drifting tempo map with rubato, timing and dynamics): a new MIDI score;
- :func:`render`: that score rendered by fluidsynth (a training soundfont, or the test
  one) or by timidity with the freepats patches, under a timeout and a length check;
- :func:`degrade`: equalisation, noise, loudness and lossy re-encoding (MP3 or Ogg
  Vorbis).

The synthesizers and soundfonts a corpus may use: :func:`find_soundfonts` (the training
ones, or :data:`TEST_SOUNDFONT` for test corpora; the MuseScore General soundfonts are
never used), :func:`freepats_programs`, :func:`check_tools`. :class:`SkipPiece` is how
every stage of the corpus says a piece is unusable.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from .plan import VersionPlan

SAMPLE_RATE = 16000
RESERVED_SOUNDFONTS = ("MuseScore_General",)  # any file whose name contains these
SOUNDFONT_DIRS = ("/usr/share/sounds/sf2", "/usr/share/sounds/sf3", "/usr/share/soundfonts")
# soundfonts of training corpora (Debian: fluid-soundfont-gm, fluidr3mono-gm-soundfont,
# timgm6mb-soundfont, opl3-soundfont), whichever are installed. (fluid-soundfont-gs's
# FluidR3_GS.sf2 holds only GS variation banks: alone it renders silence.)
SOUNDFONTS = ("FluidR3_GM.sf2", "FluidR3Mono_GM.sf3", "TimGM6mb.sf2", "OPL-3_FM_128M.sf2")
# the soundfont of test corpora only (Debian: csound-soundfont); never in training
TEST_SOUNDFONT = "sf_GMbank.sf2"
# timidity with the freepats patches (Debian: timidity, freepats): a second synthesizer
FREEPATS_CFG = "/etc/timidity/freepats.cfg"


class CorpusError(RuntimeError):
    """The corpus cannot be made (a tool or soundfont is missing)."""


class SkipPiece(Exception):
    """A source piece is unusable (unloadable, empty, too short or too long, or its render failed)."""


def _allowed_font(p: Path) -> bool:
    return not any(r.lower() in p.name.lower() for r in RESERVED_SOUNDFONTS)


def find_soundfonts(split: str = "train") -> list[Path]:
    """Installed soundfonts of a split: the training ones, or the test one."""
    names = (TEST_SOUNDFONT,) if split == "test" else SOUNDFONTS
    found = []
    for name in names:
        for d in SOUNDFONT_DIRS:
            p = Path(d) / name
            if p.is_file() and _allowed_font(p):
                found.append(p)
                break
    if split != "test" and not any(f.name == "TimGM6mb.sf2" for f in found):
        try:  # pretty_midi bundles TimGM6mb
            import pretty_midi

            p = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
            if p.is_file():
                found.append(p)
        except ImportError:
            pass
    return found


@functools.lru_cache(maxsize=1)
def freepats_programs() -> frozenset[int]:
    """General MIDI programs the freepats set has (empty when timidity or freepats is missing)."""
    cfg = Path(FREEPATS_CFG)
    if shutil.which("timidity") is None or not cfg.is_file():
        return frozenset()
    progs, in_bank = set(), False
    for line in cfg.read_text(errors="replace").splitlines():
        s = line.split("#", 1)[0].strip()
        if s.startswith("bank"):
            in_bank = s.split()[1:2] == ["0"]
        elif s.startswith("drumset"):
            in_bank = False
        elif in_bank and s[:1].isdigit():
            progs.add(int(s.split()[0]))
    return frozenset(progs)


def check_tools(split: str = "train") -> list[Path]:
    """Raise CorpusError unless fluidsynth, music21, pretty_midi and a soundfont exist."""
    if shutil.which("fluidsynth") is None:
        raise CorpusError("fluidsynth not found: install it (Debian: apt-get install fluidsynth)")
    try:
        import music21  # noqa: F401
        import pretty_midi  # noqa: F401
    except ImportError as e:
        raise CorpusError(f"{e.name} is missing: pip install 'coverhunter[demo]'") from e
    fonts = find_soundfonts(split)
    if not fonts:
        pkg = "csound-soundfont" if split == "test" else "fluid-soundfont-gm"
        raise CorpusError(f"no {split} soundfont found: apt-get install {pkg}")
    return fonts


def perform(parts: list, plan: VersionPlan, length: float, rng: np.random.Generator):
    """Play arranged parts: sections in order, transposed, re-timed, with expressive timing.

    Parameters
    ----------
    parts : list of pretty_midi.Instrument
        The arrangement, in source time.
    length : float
        Source length in seconds (the span of the tempo drift).

    Returns
    -------
    pretty_midi.PrettyMIDI
        Drum parts are not transposed. The tempo follows ``plan.tempo`` with a linear
        drift over the performance and a slow, monotonic rubato.
    """
    import pretty_midi

    out = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    period = float(rng.uniform(2.0, 6.0))
    phase = float(rng.uniform(0, 2 * np.pi))
    total = max(sum(b - a for a, b in plan.sections), 1e-3)
    depth = min(plan.swing_depth, 0.9 * period / (2 * np.pi))

    def warp(t: float) -> float:
        # d(warp)/dt = (1 + drift * t / total) / tempo + rubato > 0 for |drift| < 1
        drift = 0.5 * plan.tempo_drift * t * t / total
        return (t + drift + depth * np.sin(2 * np.pi * t / period + phase)) / plan.tempo

    for inst in parts:
        new = pretty_midi.Instrument(program=inst.program, is_drum=inst.is_drum)
        offset = 0.0
        for a, b in plan.sections:
            for note in inst.notes:
                if not a <= note.start < b:
                    continue
                s = offset + note.start - a + float(rng.normal(0, 0.008))
                e = offset + min(note.end, b) - a
                pitch = note.pitch if inst.is_drum else int(np.clip(note.pitch + plan.transpose, 12, 115))
                vel = int(np.clip(note.velocity * plan.velocity_scale + rng.normal(0, 6), 20, 127))
                ws, we = warp(max(0.0, s)), warp(max(e, s + 0.05))
                new.notes.append(pretty_midi.Note(vel, pitch, ws, we))
            offset += b - a
        if new.notes:
            out.instruments.append(new)
    return out


def synthesise(
    pm,
    mid: Path,
    wav: Path,
    *,
    renderer: str = "fluidsynth",
    soundfont: str | Path = "",
    sample_rate: int = SAMPLE_RATE,
    reverb: float = 0.0,
    chorus: bool = False,
    timeout_factor: float = 2.0,
) -> float:
    """Write ``pm`` (a pretty_midi score) to ``mid`` and render it into ``wav``.

    ``renderer`` "fluidsynth" plays ``soundfont`` at gain 0.5, with a reverb of room size
    ``reverb`` when above 0 and chorus when ``chorus``; "timidity" plays the freepats
    patches (:data:`FREEPATS_CFG`) at 70 % amplification. ``wav`` is the synthesizer's
    own WAV at ``sample_rate`` (fluidsynth's is stereo); the caller reads it and checks
    its length.

    The synthesizer runs under a timeout of 60 s plus ``timeout_factor`` times the
    MIDI's length; :class:`SkipPiece` when it runs past it, fails or writes no audio.

    Returns
    -------
    float
        The MIDI's length in seconds (``pm.get_end_time()``).
    """
    pm.write(str(mid))
    expected = pm.get_end_time()
    if renderer == "timidity":
        cmd = [
            "timidity",
            "-c",
            FREEPATS_CFG,
            "-Ow",
            "-s",
            str(sample_rate),
            "-A",
            "70",
            "-o",
            str(wav),
            str(mid),
        ]
    else:
        # dynamic sample loading reads only the samples the piece plays: 2-4x faster
        # start-up with large soundfonts (4x with the compressed .sf3), same audio
        cmd = [
            "fluidsynth",
            "-ni",
            "-q",
            "-g",
            "0.5",
            "-r",
            str(sample_rate),
            "-F",
            str(wav),
            "-o",
            "synth.dynamic-sample-loading=1",
            "-o",
            f"synth.reverb.active={int(reverb > 0)}",
            "-o",
            f"synth.reverb.room-size={reverb}",
            "-o",
            f"synth.chorus.active={int(chorus)}",
            str(soundfont),
            str(mid),
        ]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=60 + timeout_factor * expected)
    except subprocess.TimeoutExpired as e:
        raise SkipPiece(f"{cmd[0]} ran past its {e.timeout:.0f} s timeout") from e
    except subprocess.CalledProcessError as e:
        raise SkipPiece(f"{cmd[0]} failed: {e.stderr.decode(errors='replace')[-300:]}") from e
    if not wav.is_file():
        raise SkipPiece(f"{cmd[0]} wrote no audio")
    return expected


def render(pm, plan: VersionPlan, workdir: Path) -> np.ndarray:
    """Render with fluidsynth or timidity (under a timeout and a length check), mono float32."""
    wav = workdir / "v.wav"
    expected = synthesise(
        pm,
        workdir / "v.mid",
        wav,
        renderer=plan.renderer,
        soundfont=plan.soundfont,
        reverb=plan.reverb,
        chorus=plan.chorus,
    )
    info = sf.info(str(wav))
    if info.duration > expected + 15:
        raise SkipPiece(f"render is {info.duration:.0f} s for {expected:.0f} s of MIDI")
    y, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    if sr != SAMPLE_RATE:
        import soxr

        y = soxr.resample(y, sr, SAMPLE_RATE).astype(np.float32)
    return y


def degrade(y: np.ndarray, plan: VersionPlan, rng: np.random.Generator) -> np.ndarray:
    """Audio-side differences: spectral tilt, noise, loudness, lossy re-encoding."""
    from scipy.signal import butter, sosfilt

    peak = np.abs(y).max()
    if peak < 1e-6:
        raise SkipPiece("render is silent")
    y = y / peak
    sos = butter(1, 1000, "lowpass" if plan.tilt_db < 0 else "highpass", fs=SAMPLE_RATE, output="sos")
    y = y + (10 ** (abs(plan.tilt_db) / 20) - 1) * sosfilt(sos, y)
    noise = rng.standard_normal(len(y)).astype(np.float32)
    y = y + noise * np.sqrt(np.mean(y**2) / 10 ** (plan.snr_db / 10))
    y = (y / np.abs(y).max() * 0.9 * 10 ** (plan.gain_db / 20)).astype(np.float32)
    if plan.codec != "none":
        fmt, sub = ("MP3", "MPEG_LAYER_III") if plan.codec == "mp3" else ("OGG", "VORBIS")
        buf = io.BytesIO()
        # write in blocks: libsndfile's encoders put each write's samples on the stack,
        # and a whole long piece in one call overflowed it (segfault)
        with sf.SoundFile(buf, "w", SAMPLE_RATE, 1, format=fmt, subtype=sub) as f:
            for i in range(0, len(y), 16384):
                f.write(y[i : i + 16384])
        buf.seek(0)
        y, _ = sf.read(buf, dtype="float32")
    return np.clip(y, -1, 1).astype(np.float32)
