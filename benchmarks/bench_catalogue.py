"""Catalogue-scale accuracy: the held-out test works among ~20,000 distractor recordings.

    .venv/bin/python benchmarks/bench_catalogue.py --generate-only          # distractors, resumable
    .venv/bin/python benchmarks/bench_catalogue.py --generate-only --workers 2   # two cores
    .venv/bin/python benchmarks/bench_catalogue.py                          # measure on what exists
    .venv/bin/python benchmarks/bench_catalogue.py --quick                  # 300 distractors, minutes
    .venv/bin/python benchmarks/bench_catalogue.py --distractors 5000 --queries 200
    .venv/bin/python benchmarks/bench_catalogue.py --variant hop expand=50,expand_votes=0.5
                                        # one more two-stage row per --variant (RerankConfig fields)
    .venv/bin/python benchmarks/bench_catalogue.py --no-generate --model models/cqt/model.pt
                                        # another model: its embeddings of the catalogue are
                                        # computed once from the stored features (OUT/embeddings/)
    .venv/bin/python benchmarks/bench_catalogue.py --distractor-offset 20088
                                        # the next 20,000 distractors: ones the shipped model
                                        # never trained on (it trained on chunks 0-185, the
                                        # first 20,088)

Catalogue: every recording of the two held-out test corpora of ``bench_accuracy.py`` /
``bench_chroma.py`` (``runs/bench_accuracy/test-w60-v4-8-s0``, re-harmonised versions, and
``test-kept-w60-v4-8-s0``, the same 60 works with every version keeping the work's
harmony; a work is the source piece, so a work's versions in both corpora are covers of
each other) plus ``--distractors`` recordings of *training-split* works
(:func:`coverhunter.corpus.render_work` with ``split="train"``, versions 4-8, half of them
keeping the work's harmony, as ``make_corpus(split="train", harmony_kept=0.5)`` renders
them; the model may have trained on some of these works: acceptable for distractors,
never queries). Queries: the test recordings (or a seeded sample, ``--queries``), each
against the whole catalogue, itself and its *twin* excluded: both corpora render a
version from the same plan (key, tempo, structure, sound), only the accompaniment's
chords differ, so ``test:x`` is not an independent cover of ``kept:x``.

Distractor generation (``--generate-only``; the measurement also generates what it lacks
unless ``--no-generate``) is resumable and incremental. The training works, in the seeded
order of :func:`coverhunter.corpus.candidate_pieces` (frozen in ``pieces.json`` at the
first run), are cut into chunks of :data:`WORKS_PER_CHUNK`: the chunks' works are disjoint
by construction (one work, one chunk, one seed). Each chunk is rendered into a temporary
folder in a child process (a native crash retries the chunk), its features computed as
``coverhunter.extract`` computes them (``features.cqt`` and ``chroma.audio_chroma`` of the
peak-normalised audio; fine views through float16, as ``extract`` stores them), and one
file written atomically, ``distractors/chunk_NNNNN.npz``: per recording its track id,
work, duration, the shipped model's chunk embeddings (``embed.embed_tracks`` with the
evaluator's windowing) and the alignment chroma as the catalogue index stores it
(``index.chroma_format.compact_chroma``: uint8 (T, 24) for the two-view spec
``chroma.CHROMA_SPEC`` of the generation, recorded in the chunk's meta); beside it
``chunk_NNNNN.cqt.npz`` keeps the CQT (float32) and every fine view of
``chroma.VIEWS`` (:func:`fine_views_stored`; chunks written before 4eaea9a only the
spec's), so a new model or a spec of known views needs no re-rendering: a chunk made
with another spec than today's gets its compact chroma computed from them when it is
measured (:func:`with_chroma_spec`, cached under ``chroma/<spec>/``). The wav files
are deleted. A chunk on disk is
skipped, a crashed one redone. The test corpora are extracted with
``coverhunter.extract`` (same settings as ``bench_accuracy.py``, folders shared) once
they are rendered (``bench_chroma.py`` renders them; ``--render-test`` renders them here),
and their search data is kept in ``test/<corpus>.npz``, in the chunk format.

Rows (CPU time of one thread, process time; query features precomputed, the costs of
making them are logged by the generation; memory = what the search holds for the
catalogue):

- first stage alone: the model embedding (``embed.distance_matrix``, the evaluator's
  distance); the 2D Fourier summary projected by the model's ``summary_projection``
  (``alignment_inputs.global_summaries``); recurrence voting
  (:class:`coverhunter.index.recurrence.RecurrenceIndex`, default ``RecurrenceParams``,
  on the stored chroma's fine view, ``chroma.search_view``: columns 12:24; its build time
  is reported, and above ``exact_max`` shingles it is HNSW);
- two-stage: ``reranker.Reranker.rerank_block`` with the default ``RerankConfig``, built as
  ``evaluate --rerank 50`` builds it (``reranker.build_reranker``) but from the stored data:
  the embedding distances, the summaries, and, when the default first stage is
  ``"recurrence"``, the recurrence votes of the row above as ``Reranker.votes``; the
  shortlist grows with the catalogue (``rerank.shortlist_length``); each query alone (no
  pair shared between queries). Its milliseconds add the first-stage searches it needs.
  When the first stage has a choice, a second row runs the other one;
- all-pairs alignment (``qmax.qmax_scores`` of the query against every catalogue
  recording) on ``--align-queries`` seeded queries, with the two-stage MAP on the same
  queries; its cost per query is measured there and holds for every query.

``R@k``: the share of a query's covers in the first stage's top ``k`` (``k`` = the
two-stage shortlist length of this catalogue; ties against covers); for the two-stage
row, in the shortlist it aligns (``rerank.cascade_shortlist``, before expansion).
Results go to ``runs/bench_catalogue/results-d<N>-q<Q>.json``; ``--write-results``
writes ``benchmarks/results/catalogue.md``.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # one thread: comparable milliseconds

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from concurrent.futures.process import BrokenProcessPool  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from coverhunter.chroma import CHROMA_SPEC, fine_views, search_view, spec_views  # noqa: E402
from coverhunter.index.chroma_format import compact_chroma  # noqa: E402

log = logging.getLogger("bench_catalogue")

OUT = Path("runs/bench_catalogue")
TEST_ROOT = Path("runs/bench_accuracy")
MODEL = Path("models/default/model.pt")
# the held-out test corpora, as bench_chroma.py / bench_accuracy.py render them
TEST_CORPORA = {
    "test": ("test-w60-v4-8-s0", dict(works=60, seed=0, split="test", harmony_kept=0.0)),
    "kept": ("test-kept-w60-v4-8-s0", dict(works=60, seed=0, split="test", harmony_kept=1.0)),
}
DISTRACTOR_SEED = 31_000  # order of the training works and every version's plan
WORKS_PER_CHUNK = 25  # ~130 recordings (some works are unusable), 3-6 minutes of one core
VERSIONS = (4, 8)
HARMONY_KEPT = 0.5
# the view recurrence voting searches in the stored chroma (chroma.search_view)
SEARCH = slice(12 * search_view(CHROMA_SPEC), 12 * search_view(CHROMA_SPEC) + 12)
SEARCH_NAME = spec_views(CHROMA_SPEC)[search_view(CHROMA_SPEC)]
QUICK_DISTRACTORS, QUICK_QUERIES, QUICK_ALIGN = 300, 120, 10
TWO_STAGE = "two-stage (evaluate --rerank)"
TARGET_RATIO, TARGET_MS = 0.95, 300.0  # two-stage MAP >= 95 % of all-pairs, < 300 ms a query


# ---------------------------------------------------------------------------
# the stored search data: one file per chunk of recordings


@dataclass
class Recordings:
    """Search data of recordings, as a chunk file holds it.

    Attributes
    ----------
    track_ids, works : np.ndarray of str, shape (n,)
    durations : np.ndarray, shape (n,), seconds
    embeddings : list of np.ndarray, each (n_chunks, E) float32
        The model's chunk embeddings (``embed.embed_tracks``).
    chromas : list of np.ndarray, each (T, 24) uint8
        ``index.chroma_format.compact_chroma`` with the generation's chroma spec.
    meta : dict
        How they were made (model fingerprint, chroma spec, costs).
    """

    track_ids: np.ndarray
    works: np.ndarray
    durations: np.ndarray
    embeddings: list
    chromas: list
    meta: dict

    def __len__(self) -> int:
        return len(self.track_ids)

    def head(self, n: int) -> Recordings:
        return self.part(0, n)

    def part(self, start: int, stop: int) -> Recordings:
        """Recordings ``start`` to ``stop`` (excluded)."""
        return Recordings(
            self.track_ids[start:stop],
            self.works[start:stop],
            self.durations[start:stop],
            self.embeddings[start:stop],
            self.chromas[start:stop],
            self.meta,
        )

    @staticmethod
    def concat(parts: list[Recordings]) -> Recordings:
        if not parts:
            return Recordings(np.zeros(0, str), np.zeros(0, str), np.zeros(0), [], [], {})
        return Recordings(
            np.concatenate([p.track_ids for p in parts]),
            np.concatenate([p.works for p in parts]),
            np.concatenate([p.durations for p in parts]),
            [e for p in parts for e in p.embeddings],
            [c for p in parts for c in p.chromas],
            parts[0].meta,
        )


def _ragged(arrays: list, dtype, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(concatenated rows, offsets (n + 1,)) of a list of 2-D arrays."""
    offsets = np.cumsum([0] + [len(a) for a in arrays]).astype(np.int64)
    data = np.concatenate(arrays).astype(dtype) if arrays else np.zeros((0, width), dtype)
    return data, offsets


def _split(data: np.ndarray, offsets: np.ndarray) -> list:
    return [data[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def save_npz_atomic(path: Path, arrays: dict) -> None:
    """``np.savez`` to a temporary name beside ``path``, then ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_recordings(path: Path, rec: Recordings) -> None:
    """One chunk file (see :class:`Recordings`), written atomically."""
    emb, emb_off = _ragged(rec.embeddings, np.float32, rec.embeddings[0].shape[1] if len(rec) else 128)
    chroma, chroma_off = _ragged(rec.chromas, np.uint8, 24)
    save_npz_atomic(
        path,
        dict(
            track_ids=np.asarray(rec.track_ids, str),
            works=np.asarray(rec.works, str),
            durations=np.asarray(rec.durations, np.float32),
            embeddings=emb,
            embedding_offsets=emb_off,
            chroma=chroma,
            chroma_offsets=chroma_off,
            meta=np.str_(json.dumps(rec.meta)),
        ),
    )


def read_recordings(path: Path) -> Recordings:
    """Inverse of :func:`write_recordings`."""
    with np.load(path, allow_pickle=False) as z:
        return Recordings(
            z["track_ids"],
            z["works"],
            z["durations"].astype(np.float64),
            _split(z["embeddings"], z["embedding_offsets"]),
            _split(z["chroma"], z["chroma_offsets"]),
            json.loads(str(z["meta"])),
        )


def read_meta(path: Path) -> dict:
    """The meta of a file of :func:`write_recordings`, without reading its arrays."""
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["meta"]))


def count_recordings(path: Path) -> int:
    with np.load(path, allow_pickle=False) as z:
        return len(z["track_ids"])


# ---------------------------------------------------------------------------
# per-recording features, as extract / evaluate / the catalogue index make them


def fine_as_stored(fine: dict) -> dict:
    """Fine chroma views through float16 and back, as ``extract`` stores and reads them."""
    return {v: np.asarray(c, np.float16).astype(np.float32) for v, c in fine.items()}


def fine_views_stored() -> tuple[str, ...]:
    """What a distractor chunk keeps: the fine views ``extract`` writes beside a CQT with
    its default config (:func:`coverhunter.extract.stored_views`), then every other view
    of :data:`coverhunter.chroma.VIEWS` (a few kB a recording), so that a chroma spec
    with another view needs no rendering again (the audio is not kept)."""
    from coverhunter.chroma import VIEWS
    from coverhunter.config import ExtractConfig
    from coverhunter.extract import stored_views

    return tuple(dict.fromkeys((*stored_views(ExtractConfig()), *VIEWS)))


def audio_features(wav: Path) -> tuple[np.ndarray, dict]:
    """(CQT (frames, 96) float32, fine views) of one recording, as ``extract`` computes them."""
    from coverhunter.audio import load_audio, peak_normalize
    from coverhunter.chroma import audio_chroma
    from coverhunter.config import FeatureConfig
    from coverhunter.features import cqt

    cfg = FeatureConfig()
    y = peak_normalize(load_audio(wav, cfg.sample_rate))
    return np.asarray(cqt(y, cfg), np.float32), fine_as_stored(audio_chroma(y, fine_views_stored()))


def model_embeddings(lm, feats: list) -> list[np.ndarray]:
    """The model's chunk embeddings (n_chunks, E) of its input arrays (CQT or stacked fine
    chroma views, :mod:`coverhunter.inputs`) or CQT files, as ``evaluate``."""
    from common import model_embeddings as embed

    return embed(lm, feats)


# ---------------------------------------------------------------------------
# distractors: chunks of training works, rendered and reduced in a child process


def chunk_path(folder: Path, k: int) -> Path:
    return folder / f"chunk_{k:05d}.npz"


def distractor_pieces(folder: Path, seed: int = DISTRACTOR_SEED) -> list[tuple[str, int | None]]:
    """The training works in their seeded order, frozen in ``folder/pieces.json`` at the
    first call (so a chunk's works never change under a resumed run)."""
    path = folder / "pieces.json"
    if path.is_file():
        return [tuple(p) for p in json.loads(path.read_text())["pieces"]]
    from coverhunter.corpus import candidate_pieces

    pieces = candidate_pieces(seed, "train")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"seed": seed, "split": "train", "pieces": pieces}))
    os.replace(tmp, path)
    log.info("%d training works, in the order of seed %d (%s)", len(pieces), seed, path)
    return pieces


@dataclass(frozen=True)
class ChunkJob:
    """One chunk to make: its index, works and where things go."""

    index: int
    pieces: tuple
    folder: Path
    model: Path
    seed: int = DISTRACTOR_SEED
    parent: int = 0  # pid of the generating process: an orphaned worker stops


def _render_piece(job: ChunkJob, piece: tuple, workdir: Path) -> list[dict] | str:
    """A piece's rendered rows, or why it was skipped."""
    from coverhunter.corpus import CorpusSpec, SkipPiece, render_work

    spec = CorpusSpec(job.seed, VERSIONS, "train", False, HARMONY_KEPT)
    try:
        return render_work(piece[0], piece[1], spec, workdir)
    except SkipPiece as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - a bad score is one distractor work fewer
        return f"{type(e).__name__}: {e}"


def reduce_recordings(lm, wavs: list[Path], secs: dict) -> list[tuple]:
    """(CQT, fine views, model embeddings, compact chroma) of each recording; the wall
    seconds of the features and of the embedding are added to ``secs``."""
    from coverhunter.inputs import model_input, stack_views

    t0 = time.perf_counter()
    feats = [audio_features(w) for w in wavs]
    t1 = time.perf_counter()
    inp = model_input(lm.config)
    embs = model_embeddings(lm, [f if inp.reads_cqt else stack_views(fine, inp.views) for f, fine in feats])
    t2 = time.perf_counter()
    chromas = [compact_chroma(f, fine) for f, fine in feats]
    secs["features_s"] += (t1 - t0) + (time.perf_counter() - t2)
    secs["embed_s"] += t2 - t1
    return [(f, fine, e, c) for (f, fine), e, c in zip(feats, embs, chromas)]


def write_chunk(job: ChunkJob, recs: list[tuple], meta: dict) -> None:
    """The chunk's raw features (``.cqt.npz``), then its search data (``.npz``, whose
    presence says the chunk is done); ``recs``: (track id, work, duration, CQT, fine
    views, embeddings, compact chroma) per recording."""
    ids = np.asarray([r[0] for r in recs], str)
    raw = {"track_ids": ids}
    raw["cqt"], raw["cqt_offsets"] = _ragged([r[3] for r in recs], np.float32, 96)
    for view in fine_views_stored():
        raw[view], raw[f"{view}_offsets"] = _ragged([r[4][view] for r in recs], np.float16, 12)
    save_npz_atomic(chunk_path(job.folder, job.index).with_suffix(".cqt.npz"), raw)
    write_recordings(
        chunk_path(job.folder, job.index),
        Recordings(
            ids,
            np.asarray([r[1] for r in recs], str),
            np.asarray([r[2] for r in recs], np.float64),
            [r[5] for r in recs],
            [r[6] for r in recs],
            meta,
        ),
    )


def _child_model(path: Path):
    """The model in a child process: one thread, no gradients."""
    import torch

    from coverhunter.checkpoint import load_model

    _child_logging()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    return load_model(path, "cpu")


def make_chunk(job: ChunkJob) -> dict:
    """Render, reduce and write one chunk (runs in a child process); returns its costs."""
    from coverhunter.corpus import piece_name

    lm = _child_model(job.model)
    tmp = job.folder / f"tmp_chunk_{job.index:05d}"
    shutil.rmtree(tmp, ignore_errors=True)  # a crashed attempt's leftovers
    recs, skipped = [], []
    secs = {"render_s": 0.0, "features_s": 0.0, "embed_s": 0.0}
    for j, piece in enumerate(job.pieces):
        if job.parent and os.getppid() != job.parent:
            shutil.rmtree(tmp, ignore_errors=True)
            raise SystemExit(f"chunk {job.index}: the generating process is gone")
        t0 = time.perf_counter()
        rows = _render_piece(job, piece, tmp / f"w{j:02d}")
        secs["render_s"] += time.perf_counter() - t0
        if isinstance(rows, str):
            skipped.append({"piece": piece_name(*piece), "why": rows})
            continue
        reduced = reduce_recordings(lm, [Path(r["wav"]) for r in rows], secs)
        recs += [
            (f"dis_{job.index:05d}_{j:02d}_{v}", piece_name(*piece), r["dur_s"], *x)
            for v, (r, x) in enumerate(zip(rows, reduced))
        ]
        shutil.rmtree(tmp / f"w{j:02d}", ignore_errors=True)  # the wav files
    shutil.rmtree(tmp, ignore_errors=True)
    costs = {
        "recordings": len(recs),
        "works": len(job.pieces) - len(skipped),
        "skipped": skipped,
        "audio_s": float(sum(r[2] for r in recs)),
        **secs,
    }
    write_chunk(
        job,
        recs,
        {
            "model_fingerprint": lm.fingerprint,
            "chroma_spec": CHROMA_SPEC,
            "seed": job.seed,
            "versions": VERSIONS,
            "harmony_kept": HARMONY_KEPT,
            "costs": costs,
        },
    )
    return costs


def _child_logging() -> None:
    """A spawned child logs as the parent does (basicConfig: nothing if configured)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)


def run_isolated(fn, job, attempts: int = 3):
    """``fn(job)`` in a child process, retried when a native crash kills it; None after
    ``attempts`` crashes."""
    import multiprocessing

    # spawned, not forked: a child shares no open file (the generation lock) with its parent
    ctx = multiprocessing.get_context("spawn")
    for attempt in range(attempts):
        try:
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                return pool.submit(fn, job).result()
        except BrokenProcessPool:
            log.warning(
                "chunk %s: worker crashed (attempt %d of %d)",
                getattr(job, "index", "?"),
                attempt + 1,
                attempts,
            )
    return None


def _eta(seconds: float) -> str:
    h, m = divmod(int(seconds // 60), 60)
    return f"{h} h {m:02d} min"


def generation_lock(folder: Path):
    """An open file holding an exclusive lock on ``folder/.generate.lock``, or None when
    another process generates (one generation at a time: one core)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    fh = open(folder / ".generate.lock", "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


def generate(
    folder: Path, n_target: int, model: Path, test_root: Path, render_test: bool, workers: int = 1
) -> int:
    """Make chunks in order until they hold ``n_target`` distractors, ``workers`` chunks at
    a time (each in its own child process, one thread each); the test corpora's search data
    is prepared first (and retried between chunks while they are rendering elsewhere).
    Returns the distractors on disk; generates nothing while another process does (see
    :func:`generation_lock`)."""
    lock = generation_lock(folder)
    if lock is None:
        log.warning("another process is generating distractors (%s): using what is on disk", folder)
        return 0
    with lock:
        return _generate(folder, n_target, model, test_root, render_test, max(1, workers))


def _log_chunk(k: int, costs: dict, per: float, have: int, n_target: int, running: int) -> None:
    log.info(
        "chunk %d: %d recordings of %d works (%d skipped), %.1f min of audio; wall s per "
        "recording: render %.2f, features %.2f, embed %.2f; all (%d at a time) %.2f. %d of %d "
        "distractors; ETA %s",
        k,
        costs["recordings"],
        costs["works"],
        len(costs["skipped"]),
        costs["audio_s"] / 60,
        costs["render_s"] / max(1, costs["recordings"]),
        costs["features_s"] / max(1, costs["recordings"]),
        costs["embed_s"] / max(1, costs["recordings"]),
        running,
        per,
        have,
        n_target,
        _eta(per * max(0, n_target - have)),
    )


def _generate(
    folder: Path, n_target: int, model: Path, test_root: Path, render_test: bool, workers: int
) -> int:
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    pieces = distractor_pieces(folder)
    n_chunks = -(-len(pieces) // WORKS_PER_CHUNK)
    have, made, k, t_start = 0, 0, 0, time.perf_counter()
    per_chunk = 6 * WORKS_PER_CHUNK  # expected recordings of a running chunk (versions 4-8)
    running: dict = {}
    with ThreadPoolExecutor(max_workers=workers) as threads:
        while True:
            # schedule: skip chunks on disk, start others while the target is not covered
            while len(running) < workers and k < n_chunks and have + per_chunk * len(running) < n_target:
                if chunk_path(folder, k).is_file():
                    have += count_recordings(chunk_path(folder, k))
                    k += 1
                    continue
                prepare_test_corpora(test_root, folder.parent / "test", model, render_test)
                job = ChunkJob(
                    k,
                    tuple(pieces[k * WORKS_PER_CHUNK : (k + 1) * WORKS_PER_CHUNK]),
                    folder,
                    model,
                    parent=os.getpid(),
                )
                running[threads.submit(run_isolated, make_chunk, job)] = k
                k += 1
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                idx, costs = running.pop(fut), fut.result()
                if costs is None:
                    log.error("chunk %d crashed 3 times: left out (a later run tries it again)", idx)
                    continue
                made += costs["recordings"]
                have += costs["recordings"]
                per = (time.perf_counter() - t_start) / max(1, made)
                _log_chunk(idx, costs, per, have, n_target, workers)
    prepare_test_corpora(test_root, folder.parent / "test", model, render_test)
    if have < n_target:
        log.warning("only %d distractors: the training works ran out", have)
    return have


# ---------------------------------------------------------------------------
# the test corpora: rendered elsewhere (or with --render-test), extracted here


def test_file(folder: Path, name: str) -> Path:
    return folder / f"{name}.npz"


def prepare_test_corpora(root: Path, folder: Path, model: Path, render: bool) -> None:
    """Each test corpus's search data in ``folder/<name>.npz``, once its rendering is done
    (``dataset.txt`` written): features by ``coverhunter.extract`` (one process), then
    embeddings and compact chroma. A corpus still rendering is left for a later call; one
    whose search data holds another chroma spec than :data:`CHROMA_SPEC` is made again
    (``extract`` computes only the chroma it lacks)."""
    for name, (sub, kw) in TEST_CORPORA.items():
        out = test_file(folder, name)
        if out.is_file() and read_meta(out).get("chroma_spec") == CHROMA_SPEC:
            continue
        data = root / sub
        if not (data / "dataset.txt").is_file():
            if not render:
                log.info("test corpus %s not rendered yet (%s): later", name, data)
                continue
            from coverhunter.corpus import make_corpus

            make_corpus(data, versions=VERSIONS, num_workers=1, verbose=False, **kw)
        folder.mkdir(parents=True, exist_ok=True)
        run_isolated(_prepare_test_corpus, (data, out, model))


def _prepare_test_corpus(args) -> None:
    """Extract one test corpus (``extract_features``, default settings, one process) and
    write its search data (child process)."""
    from coverhunter.config import ExtractConfig
    from coverhunter.dataset import read_dataset
    from coverhunter.extract import extract_features

    data, out, model = args
    lm = _child_model(model)
    rep = extract_features(data, config=ExtractConfig(), num_workers=1, verbose=False)
    if rep.failed:
        log.warning("%s: %d recordings failed extraction (left out)", data, len(rep.failed))
    tracks = [t for t in read_dataset(data / "full.txt", check_features=True) if "source_utt" not in t.extra]
    t0 = time.process_time()
    embs = model_embeddings(lm, [t.feat for t in tracks])
    t_embed = time.process_time() - t0
    chromas = [compact_chroma(t.feat) for t in tracks]
    meta = {
        "model_fingerprint": lm.fingerprint,
        "chroma_spec": CHROMA_SPEC,
        "corpus": str(data),
        "costs": {"embed_cpu_s": t_embed, "recordings": len(tracks)},
    }
    write_recordings(
        out,
        Recordings(
            np.asarray([t.track_id for t in tracks], str),
            np.asarray([t.work for t in tracks], str),
            np.asarray([t.duration for t in tracks], np.float64),
            embs,
            chromas,
            meta,
        ),
    )
    log.info("%s: search data of %d recordings in %s", data, len(tracks), out)


def distractor_chunks(folder: Path, n: int, offset: int = 0) -> tuple[list[Path], int]:
    """The chunk files on disk that hold distractors ``offset`` to ``offset + n`` (in the
    chunks' order), and where ``offset`` falls in the first of them."""
    paths, have, k, skip = [], 0, 0, 0
    while have < offset + n and chunk_path(folder, k).is_file():
        count = count_recordings(chunk_path(folder, k))
        if have + count > offset:
            if not paths:
                skip = offset - have
            paths.append(chunk_path(folder, k))
        have += count
        k += 1
    return paths, skip


# ---------------------------------------------------------------------------
# another model's embeddings of the same recordings (--model other than the one stored)


def embedding_cache(out: Path, fingerprint: str) -> Path:
    """Folder of one model's embeddings of the catalogue, a file per search-data file."""
    return out / "embeddings" / fingerprint[:16]


def _model_inputs_of_chunk(path: Path, inp) -> list:
    """The model inputs of a distractor chunk's recordings, from its ``.cqt.npz``."""
    from coverhunter.inputs import stack_views

    with np.load(path.with_suffix(".cqt.npz"), allow_pickle=False) as z:
        if inp.reads_cqt:
            return _split(z["cqt"], z["cqt_offsets"])
        views = {v: _split(z[v], z[f"{v}_offsets"]) for v in inp.views}
    n = len(next(iter(views.values())))
    return [stack_views({v: views[v][i] for v in inp.views}, inp.views) for i in range(n)]


def _model_inputs_of_test(out: Path, test_root: Path, name: str, inp) -> list:
    """The model inputs of a test corpus's recordings, in its search-data file's order."""
    from coverhunter.dataset import read_dataset

    ids = read_recordings(test_file(out / "test", name)).track_ids
    tracks = {t.track_id: t for t in read_dataset(test_root / TEST_CORPORA[name][0] / "full.txt")}
    return [np.asarray(inp.load(inp.source(tracks[str(t)].feat)), np.float32) for t in ids]


def ensure_embeddings(out: Path, model: Path, n_distractors: int, test_root: Path, offset: int = 0) -> None:
    """Embed every search-data file (test corpora, the distractor chunks that hold
    ``n_distractors`` from the ``offset``-th on) whose stored embeddings are not
    ``model``'s, from the features kept beside it, into :func:`embedding_cache`; resumable
    (a file on disk is skipped), each file written atomically. Costs the model's embedding
    of every recording once."""
    import torch

    from coverhunter.checkpoint import load_model
    from coverhunter.inputs import model_input

    lm = load_model(model, "cpu")
    inp = model_input(lm.config)
    cache = embedding_cache(out, lm.fingerprint)
    files = [(test_file(out / "test", n), n) for n in TEST_CORPORA]
    files += [(p, None) for p in distractor_chunks(out / "distractors", n_distractors, offset)[0]]
    todo = [
        (f, name)
        for f, name in files
        if f.is_file()
        and not (cache / f.name).is_file()
        and read_meta(f)["model_fingerprint"] != lm.fingerprint
    ]
    if not todo:
        return
    cache.mkdir(parents=True, exist_ok=True)
    log.info("embedding %d search-data files with %s into %s", len(todo), model, cache)
    t0 = time.process_time()
    with torch.no_grad():  # no global switch: a caller (a test) may train afterwards
        _embed_files(out, test_root, todo, lm, inp, cache, t0)


def _embed_files(out: Path, test_root: Path, todo: list, lm, inp, cache: Path, t0: float) -> None:
    """:func:`ensure_embeddings`' work: each (file, test corpus name or None) of ``todo``."""
    for i, (f, name) in enumerate(todo):
        x = _model_inputs_of_test(out, test_root, name, inp) if name else _model_inputs_of_chunk(f, inp)
        embs = model_embeddings(lm, x)
        emb, off = _ragged(embs, np.float32, embs[0].shape[1] if embs else 128)
        ids = read_recordings(f).track_ids
        save_npz_atomic(cache / f.name, dict(track_ids=ids, embeddings=emb, embedding_offsets=off))
        done = time.process_time() - t0
        log.info(
            "%s: %d recordings embedded; ETA %s", f.name, len(ids), _eta(done / (i + 1) * (len(todo) - i - 1))
        )


def with_model_embeddings(rec: Recordings, path: Path, out: Path, fingerprint: str) -> Recordings:
    """``rec`` (read from ``path``) with the embeddings of the model ``fingerprint``: its
    own when they are that model's, else those of :func:`embedding_cache`."""
    if rec.meta["model_fingerprint"] == fingerprint:
        return rec
    cached = embedding_cache(out, fingerprint) / path.name
    if not cached.is_file():
        raise SystemExit(
            f"{path}: no embeddings of model {fingerprint[:16]} ({cached}): run with --embed-only"
        )
    with np.load(cached, allow_pickle=False) as z:
        if not np.array_equal(z["track_ids"], rec.track_ids):
            raise SystemExit(f"{cached}: its recordings are not those of {path}: delete it and re-embed")
        embs = _split(z["embeddings"], z["embedding_offsets"])
    return Recordings(
        rec.track_ids,
        rec.works,
        rec.durations,
        embs,
        rec.chromas,
        {**rec.meta, "model_fingerprint": fingerprint},
    )


# ---------------------------------------------------------------------------
# another chroma spec of the same recordings (a chunk made before CHROMA_SPEC changed)


def chroma_cache(out: Path, spec: str) -> Path:
    return out / "chroma" / spec.replace("|", "+")


def with_chroma_spec(rec: Recordings, path: Path, out: Path, spec: str = CHROMA_SPEC) -> Recordings:
    """``rec`` (read from the chunk ``path``) with its compact chroma made with ``spec``:
    its own when it was, else computed once from the chunk's CQT and fine views
    (``chunk_NNNNN.cqt.npz``) and kept in :func:`chroma_cache`, computed again when that
    file changed since (a chunk made again). SystemExit naming the chunk when it lacks a
    view of ``spec`` (written before that view was stored)."""
    if rec.meta.get("chroma_spec") == spec:
        return rec
    cached = chroma_cache(out, spec) / path.name
    raw = path.with_suffix(".cqt.npz")
    st = raw.stat() if raw.is_file() else None
    stamp = f"{st.st_size}:{st.st_mtime_ns}" if st is not None else None
    if cached.is_file() and stamp is not None:
        with np.load(cached, allow_pickle=False) as z:
            if str(z["source"]) != stamp:
                cached.unlink()
    if not cached.is_file():
        if stamp is None:
            raise SystemExit(
                f"{path}: chroma of spec {rec.meta.get('chroma_spec')!r}, and no {raw.name} to remake it"
            )
        with np.load(raw, allow_pickle=False) as z:
            lacking = [v for v in fine_views(spec) if v not in z.files]
            if lacking:
                raise SystemExit(
                    f"{path}: written before view(s) {lacking} were stored: delete it and "
                    f"{raw.name}, then --generate-only renders it again"
                )
            if not np.array_equal(z["track_ids"], rec.track_ids):
                raise SystemExit(f"{raw}: its recordings are not those of {path}")
            cqts = _split(z["cqt"], z["cqt_offsets"])
            fine = {v: _split(z[v], z[f"{v}_offsets"]) for v in fine_views(spec)}
        chromas = [
            compact_chroma(c, {v: fine[v][i].astype(np.float32) for v in fine}, spec)
            for i, c in enumerate(cqts)
        ]
        data, offsets = _ragged(chromas, np.uint8, 12 * len(spec_views(spec)))
        cached.parent.mkdir(parents=True, exist_ok=True)
        save_npz_atomic(
            cached, dict(track_ids=rec.track_ids, chroma=data, chroma_offsets=offsets, source=np.str_(stamp))
        )
    with np.load(cached, allow_pickle=False) as z:
        if not np.array_equal(z["track_ids"], rec.track_ids):
            raise SystemExit(f"{cached}: its recordings are not those of {path}: delete it")
        chromas = _split(z["chroma"], z["chroma_offsets"])
    return Recordings(
        rec.track_ids, rec.works, rec.durations, rec.embeddings, chromas, {**rec.meta, "chroma_spec": spec}
    )


# ---------------------------------------------------------------------------
# the catalogue


def load_catalogue(
    out: Path, n_distractors: int, fingerprint: str | None = None, offset: int = 0
) -> tuple[Recordings, Recordings]:
    """(test recordings, ``n_distractors`` distractors from the ``offset``-th on) from the
    files on disk; test track ids are prefixed with their corpus (the corpora number their
    tracks alike); with ``fingerprint``, that model's embeddings
    (:func:`with_model_embeddings`)."""

    def read(path: Path) -> Recordings:
        r = read_recordings(path)
        return r if fingerprint is None else with_model_embeddings(r, path, out, fingerprint)

    tests = []
    for name in TEST_CORPORA:
        path = test_file(out / "test", name)
        if not path.is_file():
            log.warning("test corpus %s has no search data yet (%s): left out", name, path)
            continue
        r = read(path)
        r.track_ids = np.asarray([f"{name}:{t}" for t in r.track_ids], str)
        tests.append(r)
    if not tests:
        raise SystemExit("no test corpus ready: run with --generate-only first (it extracts them)")
    test = Recordings.concat(tests)
    # twins side by side (test:x, kept:x), so one id range leaves both out of a search
    order = np.lexsort((test.track_ids, [str(t).split(":", 1)[1] for t in test.track_ids]))
    test = Recordings(
        test.track_ids[order],
        test.works[order],
        test.durations[order],
        [test.embeddings[i] for i in order],
        [test.chromas[i] for i in order],
        test.meta,
    )
    paths, skip = distractor_chunks(out / "distractors", n_distractors, offset)
    parts = [with_chroma_spec(read(p), p, out) for p in paths]
    dis = Recordings.concat(parts).part(skip, skip + n_distractors)
    prints = {r.meta["model_fingerprint"] for r in [*tests, *parts]}
    if len(prints) > 1:
        raise SystemExit(
            f"embeddings of different models on disk ({sorted(prints)}): re-make the "
            "stale chunks (the .cqt.npz files hold their CQT)"
        )
    if len(dis) < n_distractors:
        log.warning("only %d of %d distractors on disk: measuring with those", len(dis), n_distractors)
    return test, dis


def distractor_catalogue(out: Path, n: int, model: Path, offset: int = 0) -> tuple[Catalogue, object]:
    """The distractors alone as a catalogue, with ``model``'s embeddings (computed first
    where the stored ones are another model's, :func:`ensure_embeddings`): the
    training-type catalogue of ``bench_catalogue_tune.py`` and ``bench_votes_tune.py``.
    Returns (the catalogue, the loaded model)."""
    from coverhunter.checkpoint import load_model
    from coverhunter.classical import chroma_from_uint8
    from coverhunter.qmax import AlignmentFeatures

    paths, skip = distractor_chunks(out / "distractors", n, offset)
    if not paths:
        raise SystemExit(f"no distractors in {out / 'distractors'}: run bench_catalogue.py --generate-only")
    ensure_embeddings(out, model, n, TEST_ROOT, offset)
    lm = load_model(model, "cpu")
    parts = [
        with_chroma_spec(with_model_embeddings(read_recordings(p), p, out, lm.fingerprint), p, out)
        for p in paths
    ]
    dis = Recordings.concat(parts).part(skip, skip + n)
    align = [AlignmentFeatures.from_chroma(chroma_from_uint8(c)) for c in dis.chromas]
    return Catalogue(dis.works, dis.track_ids, dis.embeddings, dis.chromas, align, 0), lm


def query_sample(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted seeded sample of ``size`` of ``range(n)`` (all when ``size`` is 0 or >= n)."""
    if size <= 0 or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def self_mask(queries: np.ndarray, n: int) -> np.ndarray:
    """(len(queries), n) bool: each query's own catalogue entry."""
    m = np.zeros((len(queries), n), bool)
    m[np.arange(len(queries)), queries] = True
    return m


def query_exclusion(track_ids: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(len(queries), n) bool: each query's own entry and its twin.

    The two test corpora render each version from the same plan (same seed and work:
    key, tempo, structure, instruments and sound), one re-harmonised, the other keeping
    the work's harmony, so ``test:x`` and ``kept:x`` differ only in the accompaniment's
    chords (a melody-only version not at all): a twin, not an independent cover, is left
    out of its query's ranking as the query itself is.
    """
    base = np.asarray([str(t).split(":", 1)[1] if ":" in str(t) else "" for t in track_ids])
    m = self_mask(queries, len(track_ids))
    for r, q in enumerate(queries):
        if base[q]:
            m[r] |= base == base[q]
    return m


# ---------------------------------------------------------------------------
# metrics


def shortlist_recall(
    lists: list[np.ndarray], qworks: np.ndarray, works: np.ndarray, exclude: np.ndarray
) -> float:
    """Mean share of each query's covers among its shortlisted indices."""
    shares = []
    for i, sl in enumerate(lists):
        rel = (works == qworks[i]) & ~exclude[i]
        if rel.any():
            shares.append(rel[np.asarray(sl, np.int64)].sum() / rel.sum())
    return float(np.mean(shares)) if shares else float("nan")


def ranking_metrics(
    dist: np.ndarray, qworks: np.ndarray, works: np.ndarray, exclude: np.ndarray, k: int
) -> dict:
    """MAP (pessimistic ties), MR1, HR@1 and R@k of a distance matrix (n_queries, n)."""
    from coverhunter.metrics import evaluate_distances, recall_at

    rep = evaluate_distances(dist, qworks, works, exclude=exclude)
    return {
        "map": rep.map,
        "mr1": rep.mr1,
        "hr1": rep.hit_rate,
        "recall": recall_at(dist, qworks, works, k, exclude),
        "ap": [float(a) for a in rep.per_query_ap],
    }


def map_by_corpus(ap: list, corpus: np.ndarray) -> dict:
    """MAP of the queries of each test corpus (the queries with covers)."""
    ap, corpus = np.asarray(ap, np.float64), np.asarray(corpus)
    return {
        c: float(ap[corpus == c].mean())
        for c in sorted(set(corpus.tolist()))
        if len(ap) == len(corpus) and (corpus == c).any()
    }


def map_ratio_ci(ap_a, ap_b, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """MAP(a) / MAP(b) over the same queries, and its paired bootstrap 95 % interval."""
    a, b = np.asarray(ap_a, np.float64), np.asarray(ap_b, np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (n_boot, len(a)))
    ratios = a[idx].mean(1) / np.maximum(b[idx].mean(1), 1e-12)
    return float(a.mean() / max(b.mean(), 1e-12)), *np.percentile(ratios, [2.5, 97.5]).tolist()


# ---------------------------------------------------------------------------
# the methods: each returns distances (n_queries, n) and its costs


@dataclass
class Catalogue:
    """Everything the searches read: the stored data of every catalogue recording."""

    works: np.ndarray  # (n,)
    track_ids: np.ndarray  # (n,): "<corpus>:<track>" for test recordings
    embeddings: list  # (n_chunks, E) float32 each
    chromas: list  # (T, 24) uint8 each
    align: list  # qmax.AlignmentFeatures of the stored chroma
    n_test: int  # the first n_test recordings are the test corpora's

    def __len__(self) -> int:
        return len(self.works)


def make_catalogue(tests: Recordings, dis: Recordings) -> Catalogue:
    from coverhunter.classical import chroma_from_uint8
    from coverhunter.qmax import AlignmentFeatures

    both = Recordings.concat([tests, dis])
    align = [AlignmentFeatures.from_chroma(chroma_from_uint8(c)) for c in both.chromas]
    return Catalogue(both.works, both.track_ids, both.embeddings, both.chromas, align, len(tests))


def embedding_search(cat: Catalogue, queries: np.ndarray, mode: str) -> tuple[np.ndarray, dict]:
    """The model's distances (``embed.distances_to``, the evaluator's), build and search costs."""
    from coverhunter.embed import distances_to

    t0 = time.process_time()
    search = distances_to(cat.embeddings, mode)
    build = time.process_time() - t0
    t0 = time.process_time()
    dist = search([cat.embeddings[q] for q in queries])
    secs = time.process_time() - t0
    mb = sum(e.nbytes for e in cat.embeddings) / 1e6
    return dist, {"ms": secs / len(queries) * 1e3, "build_s": build, "mb": mb}


def summary_search(cat: Catalogue, queries: np.ndarray, projection) -> tuple[np.ndarray, np.ndarray, dict]:
    """Projected 2D Fourier summaries (``alignment_inputs.global_summaries``): (distances, the
    catalogue's summaries, costs); the summaries of every recording are the build."""
    from coverhunter import alignment_inputs as AI
    from coverhunter.classical import euclidean_distances

    t0 = time.process_time()
    summ = AI.global_summaries(cat.align, projection)
    build = time.process_time() - t0
    t0 = time.process_time()
    dist = euclidean_distances(summ[queries], summ)
    secs = time.process_time() - t0
    return (
        dist,
        summ,
        {
            "ms": secs / len(queries) * 1e3,
            "build_s": build,
            "mb": summ.astype(np.float32).nbytes / 1e6,
            "summary_ms_per_recording": build / len(cat) * 1e3,
        },
    )


def excluded_range(exclude_row: np.ndarray, starts: np.ndarray, q: int) -> tuple[int, int]:
    """The shingle ids a query's search leaves out: those of its excluded recordings when
    they are side by side (itself and its twin), else its own."""
    idx = np.flatnonzero(exclude_row)
    lo, hi = (idx.min(), idx.max()) if idx.max() - idx.min() + 1 == len(idx) else (q, q)
    return int(starts[lo]), int(starts[hi + 1])


def recurrence_search(
    cat: Catalogue, queries: np.ndarray, exclude: np.ndarray, params=None
) -> tuple[np.ndarray, dict, object]:
    """Recurrence voting on the search view (default ``RecurrenceParams``): scores as distances
    (minus the votes), build (shingles, faiss, hubness) and search costs, and the index
    (catalogue positions as track ids). A query's
    search leaves out its own shingles (and its twin's, :func:`excluded_range`), as
    ``recurrence.vote_matrix`` leaves out the query's."""
    from coverhunter.classical import chroma_from_uint8
    from coverhunter.index.recurrence import RecurrenceIndex, RecurrenceParams

    c3 = [chroma_from_uint8(c)[:, SEARCH] for c in cat.chromas]
    idx = RecurrenceIndex(RecurrenceParams() if params is None else params)
    t0 = time.process_time()
    idx.add(np.arange(len(cat)), c3)
    t_add = time.process_time() - t0
    idx.hub_counts()
    build = time.process_time() - t0
    mem = idx.memory_report()
    log.info(
        "recurrence index: %d shingles (%s), built in %.0f s (add %.0f s), %.0f MB",
        mem["shingles"],
        mem["kind"],
        build,
        t_add,
        mem["total_bytes"] / 1e6,
    )
    dist = np.zeros((len(queries), len(cat)))
    t0 = time.process_time()
    for r, q in enumerate(queries):
        dist[r] = -idx.scores_in(c3[q], excluded_range(exclude[r], idx.starts, q))
    secs = time.process_time() - t0
    return (
        dist,
        {
            "ms": secs / len(queries) * 1e3,
            "build_s": build,
            "mb": mem["total_bytes"] / 1e6,
            "kind": mem["kind"],
            "shingles": mem["shingles"],
        },
        idx,
    )


def default_first_stage() -> str:
    """The two-stage search's default chroma first stage: ``RerankConfig().first_stage``
    ("both", "recurrence" or "summary"), "summary" before that field existed."""
    from coverhunter import rerank as R

    return getattr(R.RerankConfig(), "first_stage", "summary")


def two_stage_config(first_stage: str | None = None):
    """The default ``RerankConfig``, with another first stage when one is given."""
    from dataclasses import replace

    from coverhunter import rerank as R

    rr = R.RerankConfig()
    if first_stage is None or first_stage == default_first_stage():
        return rr
    return replace(rr, first_stage=first_stage)


def two_stage_search(
    cat: Catalogue,
    queries: np.ndarray,
    d_embed: np.ndarray,
    summ: np.ndarray,
    votes: np.ndarray | None,
    exclude: np.ndarray,
    rr,
    rec_index=None,
) -> tuple[np.ndarray, dict, list]:
    """``evaluate --rerank``'s two-stage search (``reranker.Reranker`` built as
    ``reranker.build_reranker`` builds it, from the stored data) of each query alone.

    ``votes``: the queries' recurrence votes (n_queries, n), given to the Reranker when
    ``rr.first_stage`` is "recurrence" (the summaries then only find the anchor's
    neighbours); ``rec_index``: the catalogue's recurrence index (:func:`recurrence_search`),
    searched for the anchors' votes when ``rr.expand_votes`` > 0 (else built here, untimed).
    Returns the re-ranked distances, the re-ranking's costs (``"aligned"``: each query's
    items the full alignment got, the coarse pass's best share of its shortlist, before
    expansion) and each query's shortlist (``Reranker.traces``).
    """
    from common import coarse_view

    from coverhunter import reranker as RK

    _check_reranker_fields()
    rk = RK.Reranker(
        rr,
        query_align=[cat.align[q] for q in queries],
        ref_align=cat.align,
        query_summary=summ[queries],
        ref_summary=summ,
        symmetric=False,
    )
    rk.coarse_view = coarse_view(cat.align)  # the stored chroma's search view, as evaluate's
    recurrence = getattr(rr, "first_stage", "summary") in ("recurrence", "both")
    if recurrence:
        rk.votes = votes
    if rr.expand > 0 and getattr(rr, "expand_votes", 0.0) > 0:
        # the anchors' own votes: the catalogue's recurrence index built here, untimed (an
        # index keeps it); each anchor's search is timed with the query it serves
        stride = getattr(rr, "expand_votes_stride", None)
        rk.anchor_votes = RK.anchor_vote_rows(cat.align, CHROMA_SPEC, index=rec_index, stride=stride)
        rk.anchor_votes(0)
    rk.traces = []  # what the first stage passed on, for its recall
    t0 = time.process_time()
    dist = rk.rerank_block(d_embed, 0, exclude=exclude)
    secs = time.process_time() - t0
    return (
        dist,
        {
            "ms": secs / len(queries) * 1e3,
            "k": rk.k_used,
            "alignments_per_query": rk.n_pairs / len(queries),
            "coarse_per_query": getattr(rk, "n_coarse", 0) / len(queries),
            "config": repr(rr),
            "aligned": [t["aligned"] for t in rk.traces],
        },
        [t["shortlist"] for t in rk.traces],
    )


KNOWN_RERANKER_FIELDS = {
    "cfg",
    "query_align",
    "ref_align",
    "query_chunks",
    "ref_chunks",
    "query_summary",
    "ref_summary",
    "votes",
    "anchor_votes",
    "coarse_view",
    "symmetric",
    "seconds",
    "n_queries",
    "n_pairs",
    "n_computed",
    "n_coarse",
    "k_used",
    "traces",
    "_checked",
    "_coarse",
    "_pairs",
}


def _check_reranker_fields() -> None:
    """Say when ``Reranker`` has data this benchmark does not give it (a first stage added
    since it was written): the row then measures the Reranker without it."""
    from dataclasses import fields

    from coverhunter import reranker as RK

    new = sorted({f.name for f in fields(RK.Reranker)} - KNOWN_RERANKER_FIELDS)
    if new:
        log.warning(
            "reranker.Reranker has fields this benchmark does not fill: %s; the two-stage row "
            "runs without them (teach two_stage_search to build them)",
            new,
        )


def alignment_search(cat: Catalogue, queries: np.ndarray) -> tuple[np.ndarray, dict]:
    """All-pairs chroma alignment (``qmax.qmax_scores``, default ``QmaxParams``) of
    each query against every catalogue recording: scores as distances, cost."""
    from coverhunter.qmax import QmaxParams, qmax_scores

    dist = np.zeros((len(queries), len(cat)))
    t0 = time.process_time()
    for r, q in enumerate(queries):
        dist[r] = -qmax_scores(cat.align[q], cat.align, QmaxParams())
        log.info(
            "all-pairs alignment: query %d of %d, %.1f s a query so far",
            r + 1,
            len(queries),
            (time.process_time() - t0) / (r + 1),
        )
    secs = time.process_time() - t0
    return dist, {"ms": secs / len(queries) * 1e3, "mb": sum(c.nbytes for c in cat.chromas) / 1e6}


# ---------------------------------------------------------------------------
# one measurement -> rows


def measure(
    cat: Catalogue, queries: np.ndarray, align_queries: np.ndarray, lm, variants=(), rec_params=None
) -> dict:
    """Every row of the table (see the module docstring); ``align_queries`` index ``queries``;
    ``variants``: (name, RerankConfig) pairs, a two-stage row each (``--variant``);
    ``rec_params``: the recurrence votes' settings (default ``RecurrenceParams()``)."""
    from coverhunter import rerank as R

    n = len(cat)
    k = R.shortlist_length(R.RerankConfig(), n)
    qworks = cat.works[queries]
    ex = query_exclusion(cat.track_ids, queries)
    rows = {}

    corpus = np.asarray([str(t).split(":")[0] for t in cat.track_ids[queries]])

    def row(name, dist, costs, sub=None):
        q = np.arange(len(queries)) if sub is None else sub
        rows[name] = {**ranking_metrics(dist[q], qworks[q], cat.works, ex[q], k), **costs}
        rows[name]["map_by_corpus"] = map_by_corpus(rows[name]["ap"], corpus[q])
        log.info(
            "%s: MAP %.3f, R@%d %.3f, %.1f ms per query",
            name,
            rows[name]["map"],
            k,
            rows[name]["recall"],
            costs["ms"],
        )

    d_emb, c = embedding_search(cat, queries, lm.config.eval.distance)
    row("first stage: model embedding", d_emb, c)
    d_sum, summ, c = summary_search(cat, queries, lm.summary_projection)
    row("first stage: 2D Fourier summary (projected)", d_sum, c)
    del d_sum
    d_rec, c, rec_index = recurrence_search(cat, queries, ex, rec_params)
    row(f"first stage: recurrence voting ({SEARCH_NAME})", d_rec, c)
    first = default_first_stage()
    stages = [first] + [f for f in ("recurrence", "summary") if f != first and first != "summary"]
    runs = [
        (TWO_STAGE + ("" if s == first else f", first stage {s}"), s, two_stage_config(s)) for s in stages
    ]
    runs += [(f"{TWO_STAGE}, {name}", rr.first_stage, rr) for name, rr in variants]
    two = {}
    for name, stage, rr in runs:  # the default first, then the other first stages and variants
        d, c, lists = two_stage_search(cat, queries, d_emb, summ, -d_rec, ex, rr, rec_index)
        aligned = c.pop("aligned")
        # the searches before the re-ranking; and what the catalogue keeps for them:
        # embeddings, summaries, uint8 chroma (and the recurrence index)
        before = ["model embedding"] + (
            [f"recurrence voting ({SEARCH_NAME})"] if stage in ("recurrence", "both") else []
        )
        c["rerank_ms"] = c["ms"]
        c["ms"] += sum(rows[f"first stage: {m}"]["ms"] for m in before)
        c["mb"] = (
            sum(rows[f"first stage: {m}"]["mb"] for m in (*before, "2D Fourier summary (projected)"))
            + sum(x.nbytes for x in cat.chromas) / 1e6
        )
        c["first_stage"] = stage
        row(name, d, c)
        rows[name]["recall"] = shortlist_recall(lists, qworks, cat.works, ex)
        rows[name]["recall_aligned"] = shortlist_recall(aligned, qworks, cat.works, ex)
        two.setdefault(stage, (d, c, lists))
    del d_rec, rec_index
    d_two, c, lists = two[first]
    sub = align_queries
    name = f"two-stage, {len(sub)} sampled queries"
    row(name, d_two, c, sub)
    rows[name]["recall"] = shortlist_recall([lists[i] for i in sub], qworks[sub], cat.works, ex[sub])
    d_al, c = alignment_search(cat, queries[sub])
    name = f"all-pairs alignment, {len(sub)} sampled queries"
    rows[name] = {**ranking_metrics(d_al, qworks[sub], cat.works, ex[sub], k), **c}
    rows[name]["map_by_corpus"] = map_by_corpus(rows[name]["ap"], corpus[sub])
    return {"rows": rows, "k": k}


def summarise(res: dict) -> dict:
    """The target check: two-stage MAP over all-pairs MAP on the sampled queries (paired
    bootstrap interval) and the two-stage milliseconds per query."""
    rows = res["rows"]
    two = next(v for n, v in rows.items() if n.startswith("two-stage,"))
    al = next(v for n, v in rows.items() if n.startswith("all-pairs"))
    ratio, lo, hi = map_ratio_ci(two["ap"], al["ap"])
    ms = rows[TWO_STAGE]["ms"]
    return {
        "map_ratio": ratio,
        "map_ratio_ci": [lo, hi],
        "two_stage_ms": ms,
        "met": bool(ratio >= TARGET_RATIO and ms < TARGET_MS),
        "alignment_cpu_hours_all_queries": al["ms"] * res["n_queries"] / 3.6e6,
    }


def generation_costs(folder: Path) -> dict:
    """Wall seconds per distractor recording of each generation step, over the chunks on
    disk (niced, beside other jobs: an upper bound on one core's cost)."""
    tot = {"recordings": 0, "render_s": 0.0, "features_s": 0.0, "embed_s": 0.0, "audio_s": 0.0}
    for path in sorted(folder.glob("chunk_?????.npz")):
        costs = read_meta(path)["costs"]
        for key in tot:
            tot[key] += costs[key]
    n = max(1, tot["recordings"])
    return {
        "chunks_recordings": tot["recordings"],
        "mean_duration_s": tot["audio_s"] / n,
        **{f"{k[:-2]}_s_per_recording": tot[k] / n for k in ("render_s", "features_s", "embed_s")},
    }


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], capture_output=True, text=True, check=True
        ).stdout.strip()
        return out + (" (src modified)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def format_table(res: dict) -> str:
    """The markdown table (and the target line) of one measurement."""
    k = res["k"]
    lines = [
        f"`{res['command']}` at commit {res['commit']}",
        "",
        f"catalogue: {res['n_catalogue']:,} recordings ({res['n_test']} test recordings of "
        f"{res['n_test_works']} works + {res['n_distractors']:,} distractors"
        + (f" from the {res['distractor_offset'] + 1:,}th" if res.get("distractor_offset") else "")
        + f" of {res['n_distractor_works']:,} training works); {res['n_queries']} queries (test "
        f"recordings; self and twin excluded); two-stage shortlist {k}",
        "",
        f"| method | MAP | MR1 | HR@1 | R@{k} | ms / query | MB | build s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res["rows"].items():
        build = f"{r['build_s']:.0f}" if "build_s" in r else ""
        if "kind" in r:
            build += f" ({r['kind']}, {r['shingles']:,} shingles)"
        mb = f"{r['mb']:.0f}" if "mb" in r else ""
        lines.append(
            f"| {name} | {r['map']:.3f} | {r['mr1']:.1f} | {r['hr1']:.3f} | {r['recall']:.3f} | "
            f"{r['ms']:.1f} | {mb} | {build} |"
        )
    s = res["summary"]
    lines += [
        "",
        f"two-stage MAP / all-pairs MAP on the sampled queries: {s['map_ratio']:.3f} "
        f"[{s['map_ratio_ci'][0]:.3f}, {s['map_ratio_ci'][1]:.3f}] (target >= {TARGET_RATIO}: "
        f"{'met' if s['map_ratio'] >= TARGET_RATIO else 'NOT met'}); two-stage "
        f"{s['two_stage_ms']:.0f} ms per query (target < {TARGET_MS:.0f}: "
        f"{'met' if s['two_stage_ms'] < TARGET_MS else 'NOT met'}). All-pairs alignment of all "
        f"{res['n_queries']} queries: {_eta(s['alignment_cpu_hours_all_queries'] * 3600)} of CPU "
        "(extrapolated from the sampled queries; the two-stage rows ran them all).",
    ]
    two = res["rows"][TWO_STAGE]
    lines += [
        "",
        f"Two-stage cost per query: first-stage searches {two['ms'] - two['rerank_ms']:.0f} ms, "
        f"re-ranking {two['rerank_ms']:.0f} ms ({two['alignments_per_query']:.0f} alignments"
        + (f" after {two['coarse_per_query']:.0f} coarse ones" if two.get("coarse_per_query") else "")
        + f", first stage {two['first_stage']}, shortlist {two['k']}); R@{k} of the two-stage rows: "
        "share of covers in the shortlist (before the coarse pass and the expansion).",
    ]
    g = res.get("generation")
    if g:
        lines += [
            "",
            f"Query features (not in ms / query), wall seconds per recording measured while "
            f"making the distractors (mean {g['mean_duration_s']:.0f} s of audio): CQT and fine chroma "
            f"{g['features_s_per_recording']:.2f}, model embedding {g['embed_s_per_recording']:.2f} "
            f"(rendering {g['render_s_per_recording']:.2f}).",
        ]
    return "\n".join(lines)


def measure_main(a, folder: Path) -> None:
    """Load, measure, print the table, write the JSON (and the results page)."""
    import torch

    # every module the measurement uses, loaded now: a run lasts half an hour, and a module
    # first imported later would be read from a working tree edited in the meantime
    import coverhunter.index.recurrence  # noqa: F401
    import coverhunter.reranker  # noqa: F401
    from coverhunter.checkpoint import load_model

    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    lm = load_model(a.model, "cpu")
    tests, dis = load_catalogue(a.out, a.distractors, lm.fingerprint, a.distractor_offset)
    cat = make_catalogue(tests, dis)
    queries = query_sample(cat.n_test, a.queries, a.seed)
    sub = query_sample(len(queries), a.align_queries, a.seed + 1)
    log.info(
        "catalogue %d recordings (%d test, %d distractors), %d queries, %d aligned against all",
        len(cat),
        cat.n_test,
        len(dis),
        len(queries),
        len(sub),
    )
    from common import parse_variant, search_params

    variants = [parse_variant(name, text) for name, text in a.variant]
    res = measure(cat, queries, sub, lm, variants, search_params(a))
    res.update(
        command=".venv/bin/python " + " ".join(sys.argv),
        commit=git_commit(),
        n_catalogue=len(cat),
        n_test=cat.n_test,
        n_test_works=len(set(tests.works)),
        n_distractors=len(dis),
        distractor_offset=a.distractor_offset,
        n_distractor_works=len(set(dis.works)),
        n_queries=len(queries),
    )
    res["summary"] = summarise(res)
    res["generation"] = generation_costs(folder)
    table = format_table(res)
    print(table, flush=True)
    offset = f"-o{a.distractor_offset}" if a.distractor_offset else ""
    out = a.out / f"results-d{len(dis)}{offset}-q{len(queries)}.json"
    # per-query AP kept (rounded), with the sampled queries' positions, so that any row's
    # ratio to all-pairs alignment on them can be computed later (map_ratio_ci)
    rows = {n: {**r, "ap": [round(x, 5) for x in r["ap"]]} for n, r in res["rows"].items()}
    out.write_text(json.dumps({**res, "rows": rows, "align_queries": [int(i) for i in sub]}))
    log.info("results in %s", out)
    if a.write_results:
        write_results_page(RESULTS_PAGE, table, len(dis))


RESULTS_PAGE = Path("benchmarks/results/catalogue.md")
PAGE_HEAD = """# Catalogue-scale accuracy (benchmarks/bench_catalogue.py)

The held-out test corpora among distractor recordings of training works; every run
appends a section (the catalogue grows as the distractor generation goes on). Machine:
2 cores, 24 GB RAM, no GPU, shared with other jobs (the distractor generation among
them); milliseconds are CPU time of one thread (process time), so the sharing changes
them little.
"""


def write_results_page(path: Path, table: str, n_distractors: int) -> None:
    """Append this run's table to the results page (its head written once)."""
    old = path.read_text() if path.is_file() else PAGE_HEAD
    day = time.strftime("%Y-%m-%d")
    path.write_text(f"{old.rstrip()}\n\n## {day}: {n_distractors:,} distractors\n\n{table}\n")


# ---------------------------------------------------------------------------
# command line


def get_parser() -> argparse.ArgumentParser:
    from common import add_search_arguments

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--distractors", type=int, default=20_000, help="distractor recordings (default 20,000)")
    ap.add_argument(
        "--distractor-offset",
        type=int,
        default=0,
        metavar="N",
        help="measure with the distractors from the (N+1)-th on (default 0; e.g. 20088: "
        "distractors the shipped model, trained on the first 20,088, never saw; generation makes "
        "N + --distractors of them)",
    )
    ap.add_argument(
        "--queries", type=int, default=0, help="seeded sample of test recordings as queries (0 = all)"
    )
    ap.add_argument(
        "--align-queries",
        type=int,
        default=30,
        help="queries of the all-pairs alignment row (seeded sample of the queries)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_DISTRACTORS} distractors, {QUICK_QUERIES} queries, "
        f"{QUICK_ALIGN} aligned against all: minutes",
    )
    ap.add_argument("--generate-only", action="store_true", help="make the distractors, measure nothing")
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="distractor chunks made at a time, one core each (default 1: leaves a core free)",
    )
    ap.add_argument(
        "--no-generate", action="store_true", help="measure on the distractors on disk, make none"
    )
    ap.add_argument(
        "--render-test",
        action="store_true",
        help="render the test corpora here when they are missing (normally bench_chroma.py's)",
    )
    ap.add_argument(
        "--variant",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "FIELD=VALUE"),
        help="one more two-stage row: the default RerankConfig with FIELD=VALUE[,FIELD=VALUE] "
        "(chosen on the distractors alone with bench_catalogue_tune.py)",
    )
    add_search_arguments(ap)
    ap.add_argument(
        "--model",
        type=Path,
        default=MODEL,
        help="the model of the embedding rows and of the summary projection (default: the "
        "shipped one; another model's embeddings are computed once from the stored features "
        "into OUT/embeddings/)",
    )
    ap.add_argument(
        "--embed-only",
        action="store_true",
        help="compute --model's embeddings of the catalogue, measure nothing",
    )
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--test-root", type=Path, default=TEST_ROOT)
    ap.add_argument("--seed", type=int, default=0, help="query samples")
    ap.add_argument(
        "--write-results", action="store_true", help="write benchmarks/results/catalogue.md with the table"
    )
    return ap


def main() -> None:
    a = get_parser().parse_args()
    _child_logging()
    if a.quick:
        a.distractors, a.queries, a.align_queries = QUICK_DISTRACTORS, QUICK_QUERIES, QUICK_ALIGN
    folder = a.out / "distractors"
    if not a.no_generate:
        generate(folder, a.distractor_offset + a.distractors, a.model, a.test_root, a.render_test, a.workers)
    if a.generate_only:
        return
    ensure_embeddings(a.out, a.model, a.distractors, a.test_root, a.distractor_offset)
    if a.embed_only:
        return
    measure_main(a, folder)


if __name__ == "__main__":
    main()
