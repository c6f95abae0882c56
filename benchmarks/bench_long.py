"""Long recordings: whole pieces of 10 minutes and more, the same music from different synthesizers.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_long.py            # 20 pieces x 3 versions, ~1-2 h
    PYTHONPATH=src .venv/bin/python benchmarks/bench_long.py --quick   # 3 pieces x 2 versions of 90 s, ~1 min

One run, one table: every recording a query against all others (self excluded), metrics
from ``coverhunter.metrics`` (MAP, MR1, HR@1 = hit rate) with bootstrap 95 % intervals
over queries, as ``bench_accuracy.py`` reports them.

Corpus (rendered once under ``--out`` and reused; an interrupted run resumes):

- **quartets**: the string quartets of the music21 corpus (``haydn``, ``mozart``,
  ``beethoven``), each work's movements concatenated in order into one piece with
  ``--gap`` seconds between them (a movement whose music21 MIDI pretty_midi rejects,
  some in one work in ten, more in a few works, is left out and named in the
  recording's ``version``);
- **sequences**: pieces of ``palestrina``, ``monteverdi`` and ``josquin`` that the
  project's split reserves for tests (:func:`coverhunter.corpus.is_test_work`: no model
  trained on them), taken in a seeded order and concatenated until the piece lasts
  ``--min-minutes``.

The two kinds alternate; a piece shorter than ``--min-minutes`` is left out, one longer
than ``--max-minutes`` is cut there. Every score goes music21 -> MIDI -> pretty_midi
(and is written by pretty_midi: music21's own MIDI once made fluidsynth render for ever),
then fluidsynth renders it under a timeout and the audio's length is checked against the
MIDI's. The versions of a piece differ only in synthesis (:data:`SYNTHS`): the FluidR3_GM
soundfont, the TimGM6mb soundfont, and (third version) FluidR3_GM with every part on
another General MIDI instrument (:func:`other_program`). The music21 ``bach`` folder,
the MuseScore General soundfonts and game music are never used. ``dataset.txt`` is in the
project's JSON-lines format and features come from ``coverhunter.extract`` (CQT and the
fine chroma, as for every corpus).

Methods:

- each model alone: the shipped model (``--model``) and the earlier defaults from git
  history (``--history``: default v2 of e7f9661, 1,100 works; default v1 of dc55563,
  400 works), written under ``--out/models``; a checkpoint that cannot be written or
  loaded is left out and the reason printed;
- each model + two-stage search: ``evaluate --rerank 50``, the same code: the
  :class:`coverhunter.reranker.Reranker` that ``coverhunter.reranker.build_reranker`` makes
  (first stage: embedding, the model's 2D Fourier summaries, recurrence votes; then
  chroma Qmax, fused, with expansion; symmetric pairs aligned once), run by
  ``Reranker.rerank_block``; the chroma and the recurrence votes, which no model
  changes, are computed once for all models. On a catalogue this small the shortlist of
  50 (and the expansion) covers nearly every recording;
- chroma alignment (Qmax, all pairs): :func:`coverhunter.qmax.alignment_distance_matrix`
  on the index's chroma view (``coverhunter.alignment_inputs.alignment_features``), the reference;
- chance: a random distance matrix.

Costs are CPU seconds of one thread (process time, so other jobs do not inflate them):
extraction seconds per audio minute (``coverhunter.features.cqt`` and
``coverhunter.chroma.audio_chroma`` on the first recording, after a warm-up, as
``extract`` computes them), and per query what one query alone against this catalogue
pays: the model alone embeds it and searches the catalogue's embeddings; the two-stage
search adds its share of the first stage's data (chroma, summary, recurrence votes,
whose search grows with the catalogue's total length) and every alignment it asks for;
all-pairs alignment computes the query's chroma and aligns it with every other recording.

Cost. ``--quick``: about 1 minute from nothing (measured on a 2-core machine busy with
other jobs: music21 parsing 40 s, rendering 3 s, extraction 10 s, the rest 10 s), 30 s
once its scores are parsed. The full run (20 pieces x 3 versions, about 60 recordings
of 10-30 minutes, some 15 hours of audio) was not run while this was written; its cost
is an *estimate* from the quick run and from a 2-piece full-length run (4 recordings of
11-13 minutes): CPU about 1 hour, 1-2 hours of wall time on a busy 2-core machine:
parsing the quartets with music21 ~10 min (several seconds per movement), rendering
and extraction ~10 min (0.25 s each per audio minute), embedding ~3 min (three
models), recurrence votes 10-25 min (exact search over ~135,000 shingles, growing
faster than linearly with the catalogue: 4.5 s for 4 recordings, 38 s for 16), and four
times nearly all 1,770 alignments (the reference and one two-stage search per model,
~0.1 s per pair of 12-minute recordings, growing with the square of the length)
~15-25 min.

Everything lives under ``--out`` (default runs/bench_long, git-ignored): the scores as
pretty_midi MIDI (``scores/``), the corpus (``quick-.../`` or ``long-.../``: ``wav/``,
``dataset.txt``, ``cqt_feat/``), cached distance matrices (``bench-long-*.npz`` in the
corpus folder, keyed by the recordings, the model and the settings) and the results
(``results-quick.json`` or ``results-p20-v3-s0.json``).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # every method on one thread: comparable seconds

import argparse  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

log = logging.getLogger("bench_long")

REPO = Path(__file__).resolve().parents[1]
QUARTET_FOLDERS = ("haydn", "mozart", "beethoven")
NOT_QUARTETS = ("mozart/k545",)  # a piano sonata's exposition, not a quartet
SEQUENCE_FOLDERS = ("palestrina", "monteverdi", "josquin")
SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn", ".abc")  # not .rntxt (analyses, no notes)
RESERVED_FOLDER = "bach"  # reserved for independent evaluation: never read here
MIN_MINUTES, MAX_MINUTES, GAP_S = 10.0, 30.0, 3.0
SAMPLE_RATE = 16000
MAX_CHANNELS = 15  # melodic MIDI channels (channel 10 is the drums')
RENDER_VERSION = 1  # bump when a change to the rendering makes old renders stale
# models of the table: git revisions whose models/default/model.pt was the default then
HISTORY = {
    "b9047e9": "default v3 (b9047e9, CQT, 2,850 works; models/cqt)",
    "e7f9661": "default v2 (e7f9661, 1,100 works)",
    "dc55563": "default v1 (dc55563, 400 works)",
}
ALIGNMENT_ROW = "chroma alignment (Qmax, all pairs)"


class SkipPiece(Exception):
    """A score or piece is unusable (unloadable, too short, or its render failed)."""


@dataclass(frozen=True)
class Synth:
    """How one version is synthesised: fluidsynth with ``soundfont`` (a file name of
    :func:`coverhunter.corpus.find_soundfonts`), the parts' own programs or others."""

    name: str
    soundfont: str
    other_programs: bool = False


SYNTHS = (
    Synth("FluidR3_GM", "FluidR3_GM.sf2"),
    Synth("TimGM6mb", "TimGM6mb.sf2"),
    Synth("FluidR3_GM, other instruments", "FluidR3_GM.sf2", other_programs=True),
)


@dataclass(frozen=True)
class Piece:
    """One work of the corpus: source scores played in order.

    ``items``: the scores played (music21 corpus paths, ``path#number`` for one piece of
    a collection); ``skipped``: those that did not load; ``seconds``: the length of the
    concatenated MIDI after any cut.
    """

    name: str
    kind: str  # "quartet" or "sequence"
    items: tuple[str, ...]
    skipped: tuple[str, ...]
    seconds: float
    cut: bool = False


# ---------------------------------------------------------------------------
# sources: which scores make which piece (pure)


def quartet_groups(paths: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """Multi-movement works of :data:`QUARTET_FOLDERS` from corpus-relative paths.

    Parameters
    ----------
    paths : list of str
        music21 corpus paths (``"beethoven/opus59no1/movement1.mxl"``).

    Returns
    -------
    list of (work name, movement paths in playing order)
        Sorted by name. The movements of a folder (``movementN``) make one work, a single
        file (``"beethoven/opus132.mxl"``) one work; where a movement exists in several
        formats the first of :data:`SCORE_SUFFIXES` is kept.
    """
    works: dict[str, dict[str, str]] = {}
    for p in paths:
        p = p.replace(os.sep, "/")
        stem, suffix = os.path.splitext(p)
        parts = stem.split("/")
        if parts[0] not in QUARTET_FOLDERS or suffix not in SCORE_SUFFIXES:
            continue
        if any(p.startswith(n + "/") or stem == n for n in NOT_QUARTETS):
            continue
        work = "/".join(parts[:-1]) if len(parts) > 2 else stem
        movement = parts[-1] if len(parts) > 2 else ""
        have = works.setdefault(work, {}).get(movement)
        if have is None or SCORE_SUFFIXES.index(suffix) < SCORE_SUFFIXES.index(os.path.splitext(have)[1]):
            works[work][movement] = p
    return [(w, tuple(m[k] for k in sorted(m, key=_natural_key))) for w, m in sorted(works.items())]


def _natural_key(s: str) -> list:
    """``movement10`` after ``movement2``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def sequence_pool(candidates: list[tuple[str, int | None]]) -> list[str]:
    """The scores sequences are made of, in the candidates' (seeded) order.

    Parameters
    ----------
    candidates : list of (corpus path, number or None)
        :func:`coverhunter.corpus.candidate_pieces` of the test split.

    Returns
    -------
    list of str
        ``piece_name``-style items (``path`` or ``path#number``) of :data:`SEQUENCE_FOLDERS`
        in score formats (no roman-numeral analyses).
    """
    out = []
    for path, number in candidates:
        path = str(path).replace(os.sep, "/")
        if path.split("/", 1)[0] in SEQUENCE_FOLDERS and os.path.splitext(path)[1] in SCORE_SUFFIXES:
            out.append(path if number is None else f"{path}#{number}")
    return out


def seeded_order(items: list, seed: int) -> list:
    """``items`` in a fixed random order of ``seed`` (the same on every machine)."""
    rng = np.random.default_rng(seed)
    return [items[i] for i in rng.permutation(len(items))]


def interleave(first: list, second: list) -> list:
    """``first[0], second[0], first[1], ...``; the longer list's tail at the end."""
    out = []
    for i in range(max(len(first), len(second))):
        out += first[i : i + 1] + second[i : i + 1]
    return out


# ---------------------------------------------------------------------------
# MIDI: concatenation, cut, programs (pure, on pretty_midi objects)


def concatenate(pms: list, gap_s: float = GAP_S):
    """One performance of several MIDI objects, in order, ``gap_s`` seconds apart.

    Parameters
    ----------
    pms : list of pretty_midi.PrettyMIDI

    Returns
    -------
    pretty_midi.PrettyMIDI
        The notes only (no control changes or pitch bends), one instrument per
        (program, is_drum) so that the parts fit MIDI's channels; times in seconds.
    """
    import pretty_midi

    out = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    merged: dict[tuple[int, bool], pretty_midi.Instrument] = {}
    offset = 0.0
    for pm in pms:
        for inst in pm.instruments:
            key = (int(inst.program), bool(inst.is_drum))
            if key not in merged:
                merged[key] = pretty_midi.Instrument(program=key[0], is_drum=key[1], name=inst.name)
            merged[key].notes += [
                pretty_midi.Note(n.velocity, n.pitch, n.start + offset, n.end + offset) for n in inst.notes
            ]
        offset += pm.get_end_time() + gap_s
    out.instruments = [merged[k] for k in sorted(merged)]
    for inst in out.instruments:
        inst.notes.sort(key=lambda n: (n.start, n.pitch))
    return out


def cut(pm, seconds: float):
    """``pm`` with only its first ``seconds``: later notes dropped, held ones ended there."""
    import pretty_midi

    out = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    for inst in pm.instruments:
        notes = [
            pretty_midi.Note(n.velocity, n.pitch, n.start, min(n.end, seconds))
            for n in inst.notes
            if n.start < seconds - 0.05
        ]
        if notes:
            new = pretty_midi.Instrument(program=inst.program, is_drum=inst.is_drum, name=inst.name)
            new.notes = notes
            out.instruments.append(new)
    return out


# General MIDI families -> another instrument: strings to winds, voices and keyboards to
# organ and strings, everything else to piano
_OTHER = {
    **{p: 19 for p in range(8)},  # pianos -> church organ
    40: 73,
    41: 71,
    42: 70,
    43: 58,  # violin, viola, cello, contrabass -> flute, clarinet, bassoon, tuba
    44: 68,
    45: 46,
    46: 0,
    47: 0,  # tremolo -> oboe, pizzicato -> harp
    48: 19,
    49: 19,
    50: 52,
    51: 52,  # string ensembles -> organ, choir
    52: 48,
    53: 48,
    54: 48,
    55: 48,
}  # voices -> string ensemble


def other_program(program: int) -> int:
    """The General MIDI program a part plays in the "other instruments" version."""
    return _OTHER.get(int(program), 0)


def with_programs(pm, other: bool):
    """``pm`` itself, or a copy with every melodic part on :func:`other_program`."""
    import copy

    if not other:
        return pm
    out = copy.deepcopy(pm)
    for inst in out.instruments:
        if not inst.is_drum:
            inst.program = other_program(inst.program)
    return out


def check_render_length(seconds: float, expected: float, path: str) -> None:
    """Raise SkipPiece unless a render of ``seconds`` fits MIDI of ``expected`` seconds
    (a release tail of up to 15 s; nothing missing)."""
    if seconds > expected + 15.0:
        raise SkipPiece(f"{path}: render is {seconds:.0f} s for {expected:.0f} s of MIDI")
    if seconds < expected - 1.0:
        raise SkipPiece(f"{path}: render is {seconds:.0f} s, shorter than its {expected:.0f} s of MIDI")


# ---------------------------------------------------------------------------
# scores -> pieces


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def load_score(item: str, cache_dir: Path):
    """A music21 corpus score as pretty_midi (pitched parts only), cached in ``cache_dir``.

    The score goes through music21's MIDI writer, is read by pretty_midi and written back
    by it (``<item>.mid``); a score that does not load leaves ``<item>.skip`` with the
    reason, so it is not tried again.

    Raises
    ------
    SkipPiece
        It does not load (about one quartet movement in ten: music21 writes a MIDI file
        pretty_midi calls corrupt), or holds no pitched notes.
    """
    import pretty_midi

    base = cache_dir / safe_name(item)
    mid, skip = Path(f"{base}.mid"), Path(f"{base}.skip")
    if skip.is_file():
        raise SkipPiece(skip.read_text(encoding="utf-8").strip())
    if mid.is_file():
        return pretty_midi.PrettyMIDI(str(mid))
    if item.split("/", 1)[0] == RESERVED_FOLDER:
        raise ValueError(f"{item}: the {RESERVED_FOLDER!r} folder is reserved for independent evaluation")
    from music21 import corpus, midi

    path, _, number = item.partition("#")
    try:
        score = corpus.parse(path, number=int(number)) if number else corpus.parse(path)
        pm = pretty_midi.PrettyMIDI(io.BytesIO(midi.translate.streamToMidiFile(score).writestr()))
        pm.instruments = [i for i in pm.instruments if i.notes and not i.is_drum]
        if not pm.instruments:
            raise SkipPiece("no pitched notes")
    except Exception as e:  # noqa: BLE001 - music21 and pretty_midi raise many types
        why = f"{item}: cannot load: {type(e).__name__}: {str(e)[:200]}"
        cache_dir.mkdir(parents=True, exist_ok=True)
        skip.write_text(why + "\n", encoding="utf-8")
        raise SkipPiece(why) from e
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{base}.part.mid")
    pm.write(str(tmp))
    os.replace(tmp, mid)
    return pretty_midi.PrettyMIDI(str(mid))  # as written: what every later run reads


def _warm_one(args) -> None:
    try:
        load_score(*args)
    except SkipPiece:
        pass  # recorded in the cache; selection reads it there


def warm_scores(items: list[str], cache_dir: Path, workers: int) -> None:
    """Fill the score cache of :func:`load_score` for ``items`` in ``workers`` processes
    (music21 takes seconds to minutes per quartet movement)."""
    todo = [
        i
        for i in items
        if not any(Path(f"{cache_dir / safe_name(i)}{x}").is_file() for x in (".mid", ".skip"))
    ]
    if todo:
        t0 = time.perf_counter()
        with ProcessPoolExecutor(workers) as ex:
            list(ex.map(_warm_one, [(i, cache_dir) for i in todo]))
        log.info("parsed %d scores in %.0f s", len(todo), time.perf_counter() - t0)


def assemble(items, load, stop_s: float | None = None) -> tuple[list[str], list[str], list]:
    """The loadable scores of ``items`` in order, until their total reaches ``stop_s``.

    Parameters
    ----------
    items : iterable of str
        Scores to try in order (consumed only as far as needed).
    load : callable
        item -> pretty_midi.PrettyMIDI, raising SkipPiece for an unusable score.
    stop_s : float, optional
        Stop once the scores (without gaps) last this long; None: every item.

    Returns
    -------
    (used items, skipped items, their MIDI objects)
    """
    used, skipped, pms, total = [], [], [], 0.0
    for item in items:
        try:
            pm = load(item)
        except SkipPiece as e:
            log.info("left out %s", e)
            skipped.append(item)
            continue
        used.append(item)
        pms.append(pm)
        total += pm.get_end_time()
        if stop_s is not None and total >= stop_s:
            break  # checked after taking an item: an iterator loses no item to the check
    return used, skipped, pms


def make_piece(name: str, kind: str, used, skipped, pms, *, min_s: float, max_s: float, gap_s: float = GAP_S):
    """(Piece, MIDI) of the scores played in order, cut at ``max_s``; None when shorter
    than ``min_s`` (or nothing loaded)."""
    if not pms:
        return None
    pm = concatenate(pms, gap_s)
    end = pm.get_end_time()
    if end < min_s:
        log.info("left out %s: %.1f min, shorter than %.1f", name, end / 60, min_s / 60)
        return None
    if len({i.program for i in pm.instruments if not i.is_drum}) > MAX_CHANNELS:
        log.info("left out %s: more programs than MIDI channels", name)
        return None
    was_cut = bool(end > max_s)
    if was_cut:
        pm = cut(pm, max_s)
    return Piece(name, kind, tuple(used), tuple(skipped), round(float(pm.get_end_time()), 3), was_cut), pm


def select_pieces(
    quartets: list[tuple[str, tuple[str, ...]]],
    pool: list[str],
    load,
    n: int,
    *,
    min_s: float,
    max_s: float,
    gap_s: float = GAP_S,
    quartet_stop_s: float | None = None,
) -> list[tuple[Piece, object]]:
    """The corpus's pieces: quartets and sequences alternately, ``n`` in all.

    Parameters
    ----------
    quartets : list of (work name, movements)
        In the order to try them (:func:`quartet_groups`, seeded).
    pool : list of str
        Scores sequences are made of, in order (:func:`sequence_pool`); each sequence
        takes the next ones until it lasts ``min_s``.
    load : callable
        item -> pretty_midi.PrettyMIDI (:func:`load_score`), SkipPiece when unusable.
    n : int
        Pieces wanted; fewer when the sources run out.
    min_s, max_s : float
        Shortest piece kept; longer pieces are cut at ``max_s``.
    quartet_stop_s : float, optional
        Stop adding a quartet's movements once they last this long (None: the whole work).

    Returns
    -------
    list of (Piece, pretty_midi.PrettyMIDI)
        Deterministic for the same sources, order and loader.
    """
    q_iter, pool_iter = iter(quartets), iter(pool)
    chosen: list = []
    n_seq = 0

    def next_quartet():
        for name, movements in q_iter:
            got = make_piece(
                name,
                "quartet",
                *assemble(movements, load, quartet_stop_s),
                min_s=min_s,
                max_s=max_s,
                gap_s=gap_s,
            )
            if got is not None:
                return got
        return None

    def next_sequence():
        nonlocal n_seq
        while True:
            used, skipped, pms = assemble(pool_iter, load, min_s)
            if not pms:
                return None
            name = f"sequence {n_seq + 1:02d}: {used[0]}"
            got = make_piece(name, "sequence", used, skipped, pms, min_s=min_s, max_s=max_s, gap_s=gap_s)
            if got is not None:
                n_seq += 1
                return got
            # the pool ran out before the piece was long enough

    kinds = [next_quartet, next_sequence]
    done = [False, False]
    turn = 0
    while len(chosen) < n and not all(done):
        if not done[turn]:
            got = kinds[turn]()
            if got is None:
                done[turn] = True
            else:
                chosen.append(got)
        turn = 1 - turn
    if len(chosen) < n:
        log.warning("only %d pieces of %d: the sources ran out", len(chosen), n)
    return chosen


# ---------------------------------------------------------------------------
# rendering


def find_soundfont(name: str) -> Path:
    """The installed soundfont file ``name`` among the project's training soundfonts."""
    from coverhunter.corpus import find_soundfonts

    for p in find_soundfonts("train"):
        if p.name == name:
            return p
    raise FileNotFoundError(
        f"soundfont {name} not found (coverhunter.corpus.find_soundfonts): "
        "apt-get install fluid-soundfont-gm / timgm6mb-soundfont"
    )


def render_midi(pm, soundfont: Path, wav: Path, workdir: Path) -> float:
    """Render ``pm`` with fluidsynth into ``wav`` (mono 16-bit, 16 kHz, peak at -1 dB).

    The MIDI is written by pretty_midi and rendered by the corpus's synthesiser
    (:func:`coverhunter.corpus.sound.synthesise`: fluidsynth, no reverb, no chorus) under
    a timeout, and the audio's length is checked against the MIDI's end time
    (:func:`check_render_length`).

    Returns
    -------
    float
        The recording's length in seconds.
    """
    import soundfile as sf

    from coverhunter.corpus.sound import SkipPiece as RenderFailed
    from coverhunter.corpus.sound import synthesise

    mid, raw = workdir / f"{wav.stem}.mid", workdir / f"{wav.stem}.raw.wav"
    try:  # fluidsynth -F renders far faster than real time: 60 s + the MIDI's length
        expected = synthesise(pm, mid, raw, soundfont=soundfont, sample_rate=SAMPLE_RATE, timeout_factor=1.0)
    except RenderFailed as e:
        raise SkipPiece(f"{wav}: {e}") from e
    check_render_length(sf.info(str(raw)).duration, expected, str(wav))
    y, sr = sf.read(str(raw), dtype="float32", always_2d=True)
    raw.unlink()
    if sr != SAMPLE_RATE:
        raise SkipPiece(f"{wav}: fluidsynth wrote {sr} Hz, not {SAMPLE_RATE}")
    y = y.mean(axis=1)
    peak = float(np.abs(y).max(initial=0.0))
    if peak < 1e-6:
        raise SkipPiece(f"{wav}: render is silent")
    tmp = wav.with_name(wav.name + ".part")
    sf.write(str(tmp), (y / peak * 0.89).astype(np.float32), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(tmp, wav)
    return len(y) / SAMPLE_RATE


def render_key(synths, piece: Piece) -> str:
    """What a piece's renders depend on: a render under another key is made again."""
    return json.dumps(
        {"render": RENDER_VERSION, "synths": [asdict(s) for s in synths], "piece": asdict(piece)},
        sort_keys=True,
    )


def version_text(piece: Piece, synth: Synth) -> str:
    """The dataset's ``version`` of one recording: its synthesis and the scores played."""
    return json.dumps(
        {
            "synth": synth.name,
            "soundfont": synth.soundfont,
            "programs": "other" if synth.other_programs else "source",
            "kind": piece.kind,
            "items": list(piece.items),
            "skipped": list(piece.skipped),
            "minutes": round(piece.seconds / 60, 2),
            "cut": piece.cut,
        }
    )


def render_piece(task) -> tuple[list[dict] | None, str | None]:
    """Render one piece's versions into its folder; (rows, None), or (None, why).

    ``task``: (Piece, synths, piece folder). The folder's ``piece.mid`` is the
    concatenated MIDI; ``done.json`` (written last) holds the rows and the render key,
    so a piece already rendered under the same key is not rendered again.
    """
    import pretty_midi

    piece, synths, folder = task
    key = render_key(synths, piece)
    done = folder / "done.json"
    try:
        old = json.loads(done.read_text(encoding="utf-8"))
        if old.get("key") == key and all((folder / r["wav"]).is_file() for r in old["rows"]):
            return old["rows"], None
    except (OSError, ValueError, KeyError):
        pass
    pm = pretty_midi.PrettyMIDI(str(folder / "piece.mid"))
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for v, synth in enumerate(synths):
                wav = folder / f"v{v}.wav"
                secs = render_midi(
                    with_programs(pm, synth.other_programs), find_soundfont(synth.soundfont), wav, Path(tmp)
                )
                rows.append({"wav": wav.name, "dur_s": round(secs, 3), "version": version_text(piece, synth)})
    except SkipPiece as e:
        return None, str(e)
    tmp = done.with_name("done.json.part")
    tmp.write_text(json.dumps({"key": key, "rows": rows}), encoding="utf-8")
    os.replace(tmp, done)
    return rows, None


def dataset_rows(pieces: list[Piece], rows: list[list[dict]], folders: list[Path], prefix: str = "long"):
    """Dataset lines (``coverhunter.dataset.Track``) of the rendered pieces: utt
    ``{prefix}_{piece:03d}_{version}``, the piece's name as the work, every line in the
    test split (the whole corpus is queries and references)."""
    from coverhunter.dataset import Track

    out = []
    for w, (piece, rs, folder) in enumerate(zip(pieces, rows, folders)):
        for v, r in enumerate(rs):
            out.append(
                Track(
                    f"{prefix}_{w:03d}_{v}",
                    str(folder / r["wav"]),
                    r["dur_s"],
                    piece.name,
                    r["version"],
                    {"split": "test"},
                )
            )
    return out


def build_corpus(
    out: Path,
    scores: Path,
    *,
    n: int,
    synths,
    seed: int,
    min_s: float,
    max_s: float,
    gap_s: float,
    quick_s: float | None,
    workers: int,
) -> Path:
    """Select, render and extract the corpus in ``out``; returns its ``full.txt``.

    ``quick_s``: a smoke corpus, each piece its first ``quick_s`` seconds (a quartet loads
    only the movements it needs).
    """
    from music21 import corpus as m21

    from coverhunter.config import ExtractConfig
    from coverhunter.corpus import candidate_pieces
    from coverhunter.dataset import write_dataset
    from coverhunter.extract import extract_features

    for s in synths:  # a missing soundfont or fluidsynth: say so before any work
        find_soundfont(s.soundfont)
    if shutil.which("fluidsynth") is None:
        raise FileNotFoundError("fluidsynth not found: apt-get install fluidsynth")
    t0 = time.perf_counter()
    rel = [str(Path(p)).replace(os.sep, "/").split("/corpus/", 1)[-1] for p in m21.getCorePaths()]
    quartets = seeded_order(quartet_groups(rel), seed)
    pool = sequence_pool(candidate_pieces(seed, split="test"))
    log.info("%d quartets, %d test-split scores for sequences", len(quartets), len(pool))
    if quick_s is None and workers > 1:  # whole quartets: parse the likely ones side by side first
        warm_scores([m for _, ms in quartets[:n] for m in ms], scores, workers)
    chosen = select_pieces(
        quartets,
        pool,
        lambda item: load_score(item, scores),
        n,
        min_s=quick_s or min_s,
        max_s=quick_s or max_s,
        gap_s=gap_s,
        quartet_stop_s=quick_s,
    )
    log.info(
        "selected %d pieces (%.1f h of music per version) in %.0f s",
        len(chosen),
        sum(p.seconds for p, _ in chosen) / 3600,
        time.perf_counter() - t0,
    )
    folders = []
    for piece, pm in chosen:
        folder = out / "wav" / safe_name(piece.name)[:80]
        folder.mkdir(parents=True, exist_ok=True)
        pm.write(str(folder / "piece.mid"))  # what render_piece renders (its key: the Piece)
        folders.append(folder)
    tasks = [(p, tuple(synths), f) for (p, _), f in zip(chosen, folders)]
    t0 = time.perf_counter()
    if workers <= 1:
        results = [render_piece(t) for t in tasks]
    else:
        with ProcessPoolExecutor(workers) as pool_ex:
            results = list(pool_ex.map(render_piece, tasks))
    kept = [(p, rows, f) for (p, _, f), (rows, _) in zip(tasks, results) if rows is not None]
    for (p, _, _), (_, why) in zip(tasks, results):
        if why:
            log.warning("left out %s: %s", p.name, why)
    log.info("rendered %d pieces in %.0f s", len(kept), time.perf_counter() - t0)
    tracks = dataset_rows([p for p, _, _ in kept], [r for _, r, _ in kept], [f for _, _, f in kept])
    write_dataset(tracks, out / "dataset.txt")
    (out / "pieces.json").write_text(json.dumps([asdict(p) for p, _, _ in kept], indent=1), encoding="utf-8")
    rep = extract_features(out, config=ExtractConfig(), num_workers=max(1, workers), verbose=False)
    if rep.failed:
        log.warning("%s: %d recordings failed extraction (left out)", out, len(rep.failed))
    return out / "full.txt"


# ---------------------------------------------------------------------------
# models


def history_model(rev: str, folder: Path) -> Path:
    """``models/default/model.pt`` as of git revision ``rev``, written to ``folder``."""
    path = folder / f"default-{rev}.pt"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        got = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{rev}:models/default/model.pt"],
            capture_output=True,
            timeout=120,
            check=False,
        )
        if got.returncode != 0:
            raise ValueError(
                f"git show {rev}:models/default/model.pt failed: "
                f"{got.stderr.decode(errors='replace').strip()[:200]}"
            )
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(got.stdout)
        os.replace(tmp, path)
    return path


def file_key(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def load_models(shipped: Path, revs: list[str], folder: Path, device: str) -> tuple[dict, dict]:
    """({label: (LoadedModel, checkpoint key)}, {label: why it was left out})."""
    from coverhunter.checkpoint import load_model

    models, left_out = {}, {}
    wanted = {f"shipped ({shipped})": lambda: shipped}
    wanted.update({HISTORY.get(r, f"default of {r}"): (lambda r=r: history_model(r, folder)) for r in revs})
    for label, where in wanted.items():
        try:
            path = where()
            models[label] = (load_model(path, device), file_key(path))
        except Exception as e:  # noqa: BLE001 - any failure leaves the model out, with its reason
            left_out[label] = f"{type(e).__name__}: {e}"
            log.warning("left out %s: %s", label, left_out[label])
    return models, left_out


# ---------------------------------------------------------------------------
# methods


def timed(fn, *args, **kw):
    t0 = time.process_time()
    out = fn(*args, **kw)
    return out, time.process_time() - t0


def cached(path: Path, key: str, compute) -> dict:
    """``compute()`` (a dict of arrays and numbers), kept in ``path`` (``.npz``) under ``key``
    so a stopped run does not compute it again; a file of another key is recomputed."""
    if path.is_file():
        with np.load(path) as z:
            if str(z["key"]) == key:
                log.info("%s: reused", path.name)
                return {k: z[k] if z[k].ndim else z[k].item() for k in z.files if k != "key"}
    value = compute()
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, key=key, **value)
    os.replace(tmp, path)
    return value


def tracks_key(tracks) -> list:
    return [[t.track_id, t.extra.get("feat_len")] for t in tracks]


def model_alone(lm, tracks, device: str) -> dict:
    """Embedding distances (n, n) as ``evaluate`` computes them, and the CPU seconds."""
    from common import model_embeddings

    from coverhunter.embed import distance_matrix

    def run():
        e = model_embeddings(lm, [t.feat for t in tracks], device)
        return distance_matrix(e, e, lm.config.eval.distance)

    dist, secs = timed(run)
    return {"dist": dist, "seconds": secs}


def chroma_data(tracks) -> tuple[list, str, float]:
    """The recordings' alignment chroma as ``evaluate --rerank`` reads it
    (:func:`coverhunter.reranker.features_chroma`,
    :func:`coverhunter.alignment_inputs.alignment_features`): (one ``AlignmentFeatures`` per
    recording, the chroma spec, CPU seconds)."""
    from coverhunter import alignment_inputs as AI
    from coverhunter import reranker as RK

    spec = RK.features_chroma([t.feat for t in tracks])
    align, secs = timed(lambda: [AI.alignment_features(t.feat, spec) for t in tracks])
    return align, spec, secs


def recurrence_votes(align: list, spec) -> dict:
    """The first stage's recurrence votes, all against all: (n, n), and the CPU seconds."""
    from coverhunter import reranker as RK

    votes, secs = timed(RK.recurrence_votes, align, None, spec)
    return {"votes": votes, "seconds": secs}


def two_stage(lm, align: list, votes: np.ndarray, d_model: np.ndarray, k: int) -> dict:
    """``evaluate --rerank k``: the model's distances (n, n) re-ranked by the
    :class:`coverhunter.reranker.Reranker` that :func:`coverhunter.reranker.build_reranker`
    makes (chroma Qmax, the model's 2D Fourier summaries for the shortlist and the
    expansion, recurrence votes; every symmetric pair aligned once), from chroma and votes
    computed once for every model. Returns the distances, the seconds of the summaries
    and of the re-ranking, and the alignments asked for and computed."""
    from common import reranked

    from coverhunter import alignment_inputs as AI
    from coverhunter import rerank as R

    rr = R.RerankConfig(k=k, source="chroma")
    summaries, t_sum = timed(AI.global_summaries, align, lm.summary_projection)
    (dist, rk), t_rerank = timed(reranked, d_model, align, summaries, rr, votes)
    return {
        "dist": dist,
        "summary_seconds": t_sum,
        "rerank_seconds": t_rerank,
        "n_pairs": rk.n_pairs,
        "n_computed": rk.n_computed,
        "k_used": rk.k_used,
    }


def all_pairs_alignment(align: list) -> dict:
    """All-pairs chroma Qmax distances (n, n) and the seconds of the alignments."""
    from coverhunter import qmax as Q

    dist, t_pairs = timed(Q.alignment_distance_matrix, align, Q.QmaxParams())
    return {"dist": dist, "pair_seconds": t_pairs}


def extraction_cost(track) -> float:
    """CPU seconds per audio minute of ``extract``'s work on one recording: its CQT and its
    fine chroma views (:func:`coverhunter.features.cqt`, :func:`coverhunter.chroma.audio_chroma`),
    after a 10-second warm-up."""
    import torch

    from coverhunter.audio import load_audio, peak_normalize
    from coverhunter.chroma import audio_chroma
    from coverhunter.config import ExtractConfig
    from coverhunter.features import cqt

    cfg = ExtractConfig()
    torch.set_num_threads(1)
    y = peak_normalize(load_audio(track.audio, cfg.features.sample_rate))
    warm = y[: 10 * cfg.features.sample_rate]  # compiled kernels and caches: not per-minute costs
    cqt(warm, cfg.features), audio_chroma(warm, cfg.chroma_views)
    t0 = time.process_time()
    y = peak_normalize(load_audio(track.audio, cfg.features.sample_rate))
    cqt(y, cfg.features)
    audio_chroma(y, cfg.chroma_views)
    return (time.process_time() - t0) / (len(y) / cfg.features.sample_rate / 60)


def metrics(dist: np.ndarray, works: list, n_boot: int) -> dict:
    from coverhunter.metrics import evaluate_distances, self_exclusion

    rep = evaluate_distances(dist, works, works, exclude=self_exclusion(len(works)), bootstrap=n_boot)
    return {
        "map": rep.map,
        "mr1": rep.mr1,
        "hr1": rep.hit_rate,
        "n_queries": rep.n_queries,
        "ci": {"map": rep.ci.get("map"), "mr1": rep.ci.get("mr1"), "hr1": rep.ci.get("hit_rate")},
    }


def evaluate_corpus(tracks, models: dict, *, k: int, n_boot: int, device: str, cache_dir: Path) -> dict:
    """Every row of the table ({name: metrics and ``ms_per_query``}) and the two-stage
    searches' alignment counts. Distances are kept in ``cache_dir`` (``bench-long-*.npz``),
    keyed by the recordings, the model and the settings."""
    from coverhunter import qmax as Q
    from coverhunter.index.recurrence import RecurrenceParams

    works = [t.work for t in tracks]
    n = len(tracks)
    align, spec, t_chroma = chroma_data(tracks)

    def key(*parts) -> str:
        return hashlib.sha256(json.dumps([tracks_key(tracks), spec, *map(repr, parts)]).encode()).hexdigest()[
            :16
        ]

    al = cached(
        cache_dir / "bench-long-qmax-all-pairs.npz", key(Q.QmaxParams()), lambda: all_pairs_alignment(align)
    )
    votes = cached(
        cache_dir / "bench-long-recurrence-votes.npz",
        key(RecurrenceParams()),
        lambda: recurrence_votes(align, spec),
    )
    rows: dict = {}
    costs: dict = {}
    for label, (lm, mkey) in models.items():
        alone = cached(
            cache_dir / f"bench-long-model-{mkey}.npz",
            key(mkey),
            lambda lm=lm: model_alone(lm, tracks, device),
        )
        two = cached(
            cache_dir / f"bench-long-two-stage-{mkey}-k{k}.npz",
            key(mkey, k, Q.QmaxParams(), RecurrenceParams()),
            lambda lm=lm, d=alone["dist"]: two_stage(lm, align, votes["votes"], d, k),
        )
        per_model = alone["seconds"] / n
        # one query alone shares no pairs: it pays every alignment it asks for
        per_rerank = two["rerank_seconds"] * two["n_pairs"] / max(1, two["n_computed"]) / n
        first = (t_chroma + votes["seconds"] + two["summary_seconds"]) / n
        rows[f"{label} alone"] = {**metrics(alone["dist"], works, n_boot), "ms_per_query": per_model * 1e3}
        rows[f"{label} + two-stage (evaluate --rerank {k})"] = {
            **metrics(two["dist"], works, n_boot),
            "ms_per_query": (per_model + first + per_rerank) * 1e3,
        }
        costs[label] = {"alignments_per_query": two["n_pairs"] / n, "k_used": int(two["k_used"])}
    # a query alone aligns with each of the n - 1 others: 2 / n of the n (n - 1) / 2 pairs
    rows[ALIGNMENT_ROW] = {
        **metrics(al["dist"], works, n_boot),
        "ms_per_query": (t_chroma + 2 * al["pair_seconds"]) / n * 1e3,
    }
    rng = np.random.default_rng(0)
    rows["chance"] = {**metrics(rng.random((n, n)), works, n_boot), "ms_per_query": 0.0}
    return {
        "rows": rows,
        "two_stage": costs,
        "seconds": {
            "chroma": t_chroma,
            "recurrence_votes": votes["seconds"],
            "all_pairs_alignment": al["pair_seconds"],
        },
    }


# ---------------------------------------------------------------------------
# the table


def fmt_ci(v: float, ci, digits: int = 3) -> str:
    return f"{v:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else f"{v:.{digits}f}"


def format_table(res: dict) -> str:
    """The markdown table of a result dict (as ``results-*.json`` holds it)."""
    c = res["corpus"]
    lines = [
        (
            f"\n{c['title']}: {c['n_tracks']} recordings of {c['n_works']} works, "
            f"{c['minutes_min']:.1f}-{c['minutes_max']:.1f} min each ({c['hours']:.1f} h), every "
            "recording a query against all others\n"
        ),
        "| method | MAP [95 % CI] | MR1 [95 % CI] | HR@1 [95 % CI] | ms per query |",
        "|---|---|---|---|---|",
    ]
    for name, r in res["rows"].items():
        lines.append(
            f"| {name} | {fmt_ci(r['map'], r['ci']['map'])} | {fmt_ci(r['mr1'], r['ci']['mr1'], 2)} "
            f"| {fmt_ci(r['hr1'], r['ci']['hr1'])} | {r['ms_per_query']:,.0f} |"
        )
    lines.append(
        f"\nextraction (CQT + fine chroma): {res['extract_s_per_audio_min']:.2f} CPU s per audio "
        "minute; ms per query: CPU of one thread, one query alone against this catalogue."
    )
    asked = {round(x["alignments_per_query"]) for x in res.get("two_stage", {}).values()}
    if asked:
        lines.append(
            f"two-stage: {'/'.join(map(str, sorted(asked)))} alignments per query "
            f"(shortlist of {res['k']} and expansion) among {c['n_tracks'] - 1} others."
        )
    for label, why in res.get("left_out", {}).items():
        lines.append(f"left out {label}: {why}")
    return "\n".join(lines)


def corpus_summary(title: str, tracks) -> dict:
    mins = [t.duration / 60 for t in tracks]
    return {
        "title": title,
        "n_tracks": len(tracks),
        "n_works": len({t.work for t in tracks}),
        "minutes_min": min(mins),
        "minutes_max": max(mins),
        "hours": sum(mins) / 60,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pieces", type=int, default=20, help="pieces (works) of the corpus (default 20)")
    ap.add_argument(
        "--versions",
        type=int,
        choices=[2, 3],
        default=3,
        help="versions per piece: FluidR3_GM, TimGM6mb (and FluidR3_GM with other instruments)",
    )
    ap.add_argument("--seed", type=int, default=0, help="order of the quartets and of the sequences' scores")
    ap.add_argument("--min-minutes", type=float, default=MIN_MINUTES, help="shortest piece (default 10)")
    ap.add_argument(
        "--max-minutes",
        type=float,
        default=MAX_MINUTES,
        help="longer pieces are cut here (default 30; alignment cost grows as its square)",
    )
    ap.add_argument("--gap", type=float, default=GAP_S, help="seconds between movements (default 3)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 3 pieces x 2 versions, each the first --quick-seconds",
    )
    ap.add_argument("--quick-seconds", type=float, default=90.0)
    ap.add_argument("--model", type=Path, default=Path("models/default/model.pt"))
    ap.add_argument(
        "--history",
        nargs="*",
        default=list(HISTORY),
        metavar="REV",
        help="git revisions whose models/default/model.pt join the table (default: "
        + ", ".join(HISTORY)
        + ")",
    )
    ap.add_argument(
        "--k", type=int, default=50, help="shortlist of the two-stage search (evaluate --rerank K)"
    )
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=0, help="rendering/extraction processes (0 = all cores)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_long"))
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from coverhunter.dataset import read_dataset

    torch.set_grad_enabled(False)
    torch.set_num_threads(1)
    if a.quick:
        a.pieces, a.versions = 3, 2
    quick_s = a.quick_seconds if a.quick else None
    synths = SYNTHS[: a.versions]
    if a.quick:
        name = f"quick-p{a.pieces}-v{a.versions}-s{a.seed}-c{a.quick_seconds:g}"
        title = (
            f"quick smoke corpus ({a.pieces} pieces x {a.versions} versions, the first "
            f"{a.quick_seconds:g} s of each: NOT long recordings)"
        )
    else:
        name = f"long-p{a.pieces}-v{a.versions}-s{a.seed}"
        title = (
            f"long recordings ({a.pieces} pieces of >= {a.min_minutes:g} min x {a.versions} "
            f"synthesizers, seed {a.seed})"
        )
    folder = a.out / name
    folder.mkdir(parents=True, exist_ok=True)
    full = build_corpus(
        folder,
        a.out / "scores",
        n=a.pieces,
        synths=synths,
        seed=a.seed,
        min_s=a.min_minutes * 60,
        max_s=a.max_minutes * 60,
        gap_s=a.gap,
        quick_s=quick_s,
        workers=a.workers or os.cpu_count() or 1,
    )
    tracks = [t for t in read_dataset(full, check_features=True) if "source_utt" not in t.extra]
    models, left_out = load_models(a.model, a.history, a.out / "models", a.device)
    cost_file = folder / "bench-long-extract-cost.json"
    if cost_file.is_file() and json.loads(cost_file.read_text())["utt"] == tracks[0].track_id:
        extract_cost = json.loads(cost_file.read_text())["s_per_audio_min"]
    else:
        extract_cost = extraction_cost(tracks[0])
        cost_file.write_text(json.dumps({"utt": tracks[0].track_id, "s_per_audio_min": extract_cost}))
    res = {
        "corpus": corpus_summary(title, tracks),
        "settings": {k: str(v) for k, v in vars(a).items()},
        "k": a.k,
        "extract_s_per_audio_min": extract_cost,
        "models": {label: key for label, (_, key) in models.items()},
        "left_out": left_out,
        **evaluate_corpus(tracks, models, k=a.k, n_boot=a.bootstrap, device=a.device, cache_dir=folder),
    }
    print(format_table(res))
    out = a.out / ("results-quick.json" if a.quick else f"results-p{a.pieces}-v{a.versions}-s{a.seed}.json")
    out.write_text(json.dumps(res, indent=1))
    log.info("results in %s", out)


if __name__ == "__main__":
    main()
