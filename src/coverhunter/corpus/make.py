"""Offline cover corpus: music21 scores arranged, then rendered by fluidsynth or timidity.

Each source score is one work. Its versions differ the way real covers do, each drawn
first into the version's plan (:mod:`coverhunter.corpus.plan`):

- **arrangement** (:mod:`coverhunter.corpus.arrange`, chords by
  :mod:`coverhunter.corpus.harmony`): the melody kept (octave, ornaments, rhythmic
  displacement, instrument) over a new accompaniment per version: another
  harmonisation, voicing, bass line, pattern (block chords, pads, arpeggios, Alberti,
  waltz, strumming, dense), counter-melody and drums; some versions are the melody
  alone, some bury it; polyphonic sources keep or re-orchestrate their own voices;
- **performance** (:func:`coverhunter.corpus.sound.perform`): key, tempo with a
  drifting tempo map and rubato, structure (a later start, an earlier end, a repeated
  or dropped section, the whole tune played twice), timing and dynamics;
- **sound** (:mod:`coverhunter.corpus.sound`): synthesizer and soundfont, reverb and
  chorus, equalisation, noise, loudness and lossy re-encoding (MP3 or Ogg Vorbis).

This module makes the corpus from them: which works (the source pieces, their split),
each work's versions rendered in worker processes, resumably, and ``dataset.txt`` and
``alignment.jsonl`` written.

Works are split once and for all by a hash of their name: about one in twenty is a
*test work* (:func:`is_test_work`), never rendered into a training corpus, and test
corpora are rendered with a soundfont no training corpus uses
(:data:`~coverhunter.corpus.sound.TEST_SOUNDFONT`). Only the folders in
:data:`FOLDERS` are read; the ``bach`` chorales, the MuseScore General soundfonts and
game music, which ``shared/DATA.md`` reserves for independent evaluation, are never
touched.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from ..dataset import Track, write_dataset
from ..utils import atomic_write_text, file_lock
from .align import corpus_alignment, write_records
from .arrange import arrange_parts
from .harmony import work_harmony
from .plan import keep_harmony, plan_version
from .sound import SAMPLE_RATE, SkipPiece, check_tools, degrade, freepats_programs, perform, render

log = logging.getLogger(__name__)

# music21 corpus folders used for works; the chorales ("bach") are reserved for
# independent evaluation and must never be used here.
FOLDERS = (
    "essenFolksong",
    "oneills1850",
    "ryansMammoth",
    "airdsAirs",
    "miscFolk",
    "palestrina",
    "trecento",
    "monteverdi",
    "josquin",
)
RESERVED_FOLDERS = ("bach",)
TEST_WORK_MODULUS = 20  # one work in 20 is a test work
MIN_SECONDS, MAX_SECONDS = 12.0, 150.0  # source pieces outside this range are skipped
CORPUS_VERSION = 2  # bump when a change to the rendering makes old renders stale
ALIGNMENT_FILE = "alignment.jsonl"  # exact alignment of the versions, for data.align_path
# share of versions that keep the work's chord progression (the common kind of real cover);
# the rest are re-harmonised
HARMONY_KEPT = 0.5


def _name_hash(name: str) -> int:
    """A fixed 64-bit hash of a piece's name (the same on every machine and run)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def is_test_work(name: str) -> bool:
    """True for the works reserved for test corpora (a fixed hash of the work's name)."""
    return _name_hash(name) % TEST_WORK_MODULUS == 0


def candidate_pieces(seed: int, split: str = "all") -> list[tuple[str, int | None]]:
    """Every usable (corpus path, opus number) in a seeded order; reserved folders excluded.

    ``split`` keeps the training works ("train"), the test works ("test") or both ("all").
    """
    from music21 import corpus

    items = set()
    bundle = corpus.corpora.CoreCorpus().metadataBundle
    # iterating the bundle itself takes ~15 s; its entry dict holds the same entries
    entries = getattr(bundle, "_metadataEntries", None)
    for entry in entries.values() if isinstance(entries, dict) else bundle:
        path = str(entry.sourcePath).replace(os.sep, "/")
        folder = path.split("/", 1)[0]
        if folder in FOLDERS and folder not in RESERVED_FOLDERS:
            items.add((path, entry.number))
    if split != "all":
        want = split == "test"
        items = {i for i in items if is_test_work(piece_name(*i)) == want}
    ordered = sorted(items, key=lambda x: (x[0], str(x[1])))
    rng = np.random.default_rng(seed)
    return [ordered[i] for i in rng.permutation(len(ordered))]


def piece_name(path: str, number: int | None) -> str:
    return f"{path}#{number}" if number is not None else path


def load_piece(path: str, number: int | None):
    """Parse a music21 corpus piece into a clean pretty_midi object (re-written through MIDI)."""
    import pretty_midi
    from music21 import corpus, midi

    try:
        score = corpus.parse(path, number=number) if number is not None else corpus.parse(path)
        data = midi.translate.streamToMidiFile(score).writestr()
        pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - music21/pretty_midi raise many types
        raise SkipPiece(f"cannot load: {type(e).__name__}: {e}") from e
    pm.instruments = [i for i in pm.instruments if i.notes and not i.is_drum]
    if not pm.instruments:
        raise SkipPiece("no pitched notes")
    end = pm.get_end_time()
    if not MIN_SECONDS <= end <= MAX_SECONDS:
        raise SkipPiece(f"duration {end:.1f} s outside [{MIN_SECONDS}, {MAX_SECONDS}]")
    return pm


def _piece_seed(seed: int, name: str, stream: int = 0) -> np.random.Generator:
    """A piece's random stream: 0 for its versions' plans, others for draws shared by them."""
    key = [seed, _name_hash(name)] + ([stream] if stream else [])
    return np.random.default_rng(key)


@dataclass(frozen=True)
class CorpusSpec:
    """What a corpus is made of; a work rendered under another spec is rendered again."""

    seed: int
    versions: tuple[int, int]  # inclusive range of versions per work
    split: str  # "train" (training works and fonts) or "test"
    arrangement_only: bool  # versions keep key, tempo and structure
    harmony_kept: float = 0.0  # share of versions that play the work's own chords

    def key(self) -> str:
        d = dict(self.__dict__, corpus_version=CORPUS_VERSION)
        if not self.harmony_kept:
            del d["harmony_kept"]  # corpora rendered before the share existed stay valid
        return json.dumps(d, sort_keys=True)


def render_work(path: str, number: int | None, spec: CorpusSpec, out_dir: Path) -> list[dict]:
    """Render one piece's versions into ``out_dir``; raises SkipPiece.

    ``out_dir/done.json`` is written last (atomically) and holds the dataset rows, so
    an interrupted corpus resumes at the first piece without one.
    """
    fonts = check_tools(spec.split)
    timidity = freepats_programs() if spec.split == "train" else frozenset()
    name = piece_name(path, number)
    rng = _piece_seed(spec.seed, name)
    n_versions = int(rng.integers(spec.versions[0], spec.versions[1] + 1))
    pm = load_piece(path, number)
    # the work's own harmony and which versions keep it come from streams of their own,
    # so a corpus without harmony-kept versions is the same as before the share existed
    chords, keeps = None, np.zeros(n_versions, bool)
    if spec.harmony_kept > 0:
        chords = work_harmony(pm, _piece_seed(spec.seed, name, stream=1))
        keep_rng = _piece_seed(spec.seed, name, stream=2)
        keeps = keep_rng.random(n_versions) < spec.harmony_kept
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for v in range(n_versions):
            plan = plan_version(
                pm, rng, fonts, first=(v == 0), timidity=timidity, keep_performance=spec.arrangement_only
            )
            if keeps[v]:
                plan = replace(plan, arrangement=keep_harmony(plan.arrangement, keep_rng))
            parts = arrange_parts(pm, plan.arrangement, rng, work_chords=chords)
            midi = perform(parts, plan, pm.get_end_time(), rng)
            y = degrade(render(midi, plan, Path(tmp)), plan, rng)
            wav = out_dir / f"v{v}.wav"
            _write_wav(wav, y)
            rows.append(
                {"wav": wav.name, "dur_s": round(len(y) / SAMPLE_RATE, 3), "version": plan.describe()}
            )
    atomic_write_text(out_dir / "done.json", json.dumps({"spec": spec.key(), "rows": rows}))
    return [dict(r, wav=str(out_dir / r["wav"])) for r in rows]


def _write_wav(path: Path, y: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".part")
    sf.write(str(tmp), y, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def _done_rows(out_dir: Path, spec: CorpusSpec) -> list[dict] | None:
    """The rows of a piece already rendered under ``spec`` (None when it must be rendered)."""
    try:
        done = json.loads((out_dir / "done.json").read_text())
    except (OSError, ValueError):
        return None
    rows = [dict(r, wav=str(out_dir / r["wav"])) for r in done.get("rows", [])]
    if done.get("spec") != spec.key() or not all(Path(r["wav"]).is_file() for r in rows):
        return None
    return rows


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


RENDER_LOCK = ".render.lock"  # in a piece's folder: one renderer at a time


def _work_task(args):
    path, number, spec, out_dir = args
    rows = _done_rows(out_dir, spec)
    if rows is not None:
        return rows, None
    out_dir.mkdir(parents=True, exist_ok=True)
    # two make-corpus runs on one folder once rendered a piece at the same time, and one
    # died on the other's temporary file: the second now waits, then reuses the piece
    with file_lock(out_dir / RENDER_LOCK):
        rows = _done_rows(out_dir, spec)
        if rows is not None:
            return rows, None
        try:
            return render_work(path, number, spec, out_dir), None
        except SkipPiece as e:
            return None, str(e)


def _run_isolated(tasks: list, workers: int, attempts: int = 3, on_done=None, fn=None) -> list:
    """Run ``fn`` (default ``_work_task``) over ``tasks`` in worker processes, surviving worker crashes.

    A native library can take a worker down (a segfault was seen once in libsndfile);
    the tasks that were in flight are retried in a fresh pool, and a task that is in
    flight at ``attempts`` crashes is skipped with that reason.

    ``on_done(result)`` is called as each task finishes; when it returns True, the
    tasks not started yet are cancelled and get ``(None, None)``. The pool starts
    tasks in order, so the cancelled ones are always the last.
    """
    from concurrent.futures import CancelledError, as_completed
    from concurrent.futures.process import BrokenProcessPool

    results: dict[int, tuple] = {}
    tries = [0] * len(tasks)
    pending = list(range(len(tasks)))
    while pending:
        with ProcessPoolExecutor(max_workers=min(workers, len(pending))) as pool:
            futs = {pool.submit(fn or _work_task, tasks[i]): i for i in pending}
            pending = []
            for fut in as_completed(futs):
                i = futs[fut]
                try:
                    results[i] = fut.result()
                    if on_done is not None and on_done(results[i]):
                        for f in futs:
                            f.cancel()  # only those not started yet
                except CancelledError:
                    results[i] = (None, None)
                except BrokenProcessPool:
                    tries[i] += 1
                    if tries[i] >= attempts:
                        results[i] = (None, f"worker process crashed {attempts} times")
                    else:
                        pending.append(i)
        if pending:
            log.warning("a render worker crashed; retrying %d piece(s)", len(pending))
    return [results[i] for i in range(len(tasks))]


def make_corpus(
    out_dir: str | Path,
    *,
    works: int = 60,
    versions: int | tuple[int, int] = 4,
    seed: int = 0,
    split: str = "train",
    arrangement_only: bool = False,
    harmony_kept: float = HARMONY_KEPT,
    num_workers: int = 0,
    verbose: bool = True,
) -> list[Track]:
    """Render a cover corpus and write ``OUT_DIR/dataset.txt``.

    Parameters
    ----------
    out_dir : path
        Gets ``wav/<piece>/v<k>.wav``, ``dataset.txt``, ``alignment.jsonl`` and
        ``skipped.jsonl`` (the unusable source pieces and why).
    works : int
        Number of works (source pieces).
    versions : int or (int, int)
        Versions per work, or an inclusive range drawn per work.
    seed : int
        Same seed, same corpus (piece choice and every version's plan).
    split : {"train", "test"}
        "train" draws from the training works and renders with the training
        soundfonts and timidity; "test" draws only from the test works
        (:func:`is_test_work`) and renders with
        :data:`~coverhunter.corpus.sound.TEST_SOUNDFONT`.
    arrangement_only : bool
        Versions keep key, tempo and structure: they differ in arrangement and sound.
    num_workers : int
        Processes; 0 = one per core.

    Returns
    -------
    list of Track
        The dataset lines written. ``OUT_DIR/alignment.jsonl`` gets the exact chunk
        alignment between the versions of each work (:mod:`coverhunter.corpus.align`;
        the trainer's ``data.align_path``). The run is resumable: pieces rendered by an
        interrupted run under the same settings are reused, and known-unusable pieces
        are not tried again.
    """
    from tqdm import tqdm

    vmin, vmax = (versions, versions) if isinstance(versions, int) else tuple(versions)
    if works < 1 or vmin < 2 or vmax < vmin:
        raise ValueError(f"need works >= 1 and versions >= 2, got {works}, {versions}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not 0.0 <= harmony_kept <= 1.0:
        raise ValueError(f"harmony_kept is a share in [0, 1], got {harmony_kept}")
    check_tools(split)
    spec = CorpusSpec(seed, (int(vmin), int(vmax)), split, bool(arrangement_only), float(harmony_kept))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    skip_log = out_dir / "skipped.jsonl"
    known_bad = _read_skips(skip_log, spec)
    cands = [c for c in candidate_pieces(seed, split) if piece_name(*c) not in known_bad]
    workers = num_workers or os.cpu_count() or 1
    chosen: list[tuple[str, list[dict]]] = []
    skipped: list[str] = []
    pos = 0
    bar = tqdm(
        total=works,
        desc=f"render {split}",
        unit="work",
        disable=not verbose,
        mininterval=1.0 if verbose else 30.0,
    )
    while len(chosen) < works and pos < len(cands):
        need = works - len(chosen)
        batch = cands[pos : pos + need + max(2, need // 10)]
        pos += len(batch)
        tasks = [(p, n, spec, out_dir / "wav" / _safe(piece_name(p, n))) for p, n in batch]
        done = [0]

        def progress(result, done=done, need=need) -> bool:
            if result[0] is not None and done[0] < need:  # a usable work rendered
                done[0] += 1
                bar.update()
            elif result[0] is None:
                bar.set_postfix(skipped=len(skipped) + 1, refresh=False)
            return done[0] >= need  # enough: the spare pieces of this batch are not rendered

        for task, (rows, why) in zip(tasks, _run_isolated(tasks, workers, on_done=progress)):
            name = piece_name(task[0], task[1])
            if rows is None and why is None:
                continue  # cancelled: never started, not needed
            if rows is None:
                log.debug("skipped %s: %s", name, why)
                skipped.append(_reason_kind(why))
                with open(skip_log, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"piece": name, "why": why, "spec": spec.key()}) + "\n")
            elif len(chosen) < works:
                chosen.append((name, rows))
            else:  # rendered ahead but not needed
                shutil.rmtree(task[-1], ignore_errors=True)
    bar.close()
    if skipped:
        from collections import Counter

        log.info(
            "skipped %d unusable source piece(s) (listed in %s): %s",
            len(skipped),
            skip_log,
            "; ".join(f"{n}x {r}" for r, n in Counter(skipped).most_common()),
        )
    if len(chosen) < works:
        log.warning("only %d usable pieces found for %d works", len(chosen), works)
    prefix = "test" if split == "test" else "demo"
    tracks = []
    for w, (name, rows) in enumerate(chosen):
        for v, row in enumerate(rows):
            tracks.append(Track(f"{prefix}_{w:05d}_{v}", row["wav"], row["dur_s"], name, row["version"]))
    write_dataset(tracks, out_dir / "dataset.txt")
    records, bad = corpus_alignment(tracks)
    for line in bad:
        log.warning("%s: no alignment for %s", out_dir, line)
    write_records(records, out_dir / ALIGNMENT_FILE)
    return tracks


def _reason_kind(why: str) -> str:
    """A skip reason with its numbers as N ("duration 9.8 s outside [12.0, 150.0]" ->
    "duration N s outside [N, N]"), so the summary counts kinds, not values."""
    import re

    return re.sub(r"\d+(\.\d+)?", "N", why.split(":")[0])


def _read_skips(path: Path, spec: CorpusSpec) -> set[str]:
    if not path.is_file():
        return set()
    bad = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if d.get("spec") == spec.key() and not str(d.get("why", "")).startswith("worker"):
            bad.add(d["piece"])
    return bad


def make_demo_corpus(
    out_dir: str | Path,
    *,
    works: int = 60,
    versions: int = 4,
    seed: int = 0,
    num_workers: int = 0,
    verbose: bool = True,
) -> list[Track]:
    """The demo's corpus: :func:`make_corpus` on training works, ``versions`` per work."""
    return make_corpus(
        out_dir,
        works=works,
        versions=versions,
        seed=seed,
        split="train",
        num_workers=num_workers,
        verbose=verbose,
    )


def harmony_subset(track: Track) -> str:
    """The kind of cover a corpus recording is: "kept" (the work's own chords), "new"
    (re-harmonised) or "none" (melody only, or a track without a corpus plan)."""
    try:
        arrangement = json.loads(track.version)["arrangement"]
    except (TypeError, ValueError, KeyError):
        return "none"
    if arrangement.get("style") == "melody_only":
        return "none"
    return arrangement.get("harmony", "new")
