"""End-to-end embedding speed, audio files -> chunk embeddings, previous path vs fast path.

    .venv/bin/python benchmarks/bench_embed.py [--data runs/bench_accuracy/test-w60-v4-8-s0]
        [--model models/cqt/model.pt] [--workers 2] [--limit N]

One run, one table, on the held-out test corpus of ``bench_accuracy.py`` (its rendered
wavs are reused; run that benchmark first). Every path starts from the audio files, so
decoding is included, and the paths run one after the other on the same worker processes
(``--workers``, created before timing, each on one thread):

- previous: ``coverhunter extract`` then ``evaluate``: the workers decode and compute the
  float64 CQT, then :func:`coverhunter.embed.embed_tracks` embeds in the main process
  with ``--workers`` threads (batches of the model's ``eval.batch_size``);
- fast float32 / fast bfloat16: each worker runs :func:`coverhunter.embed.embed_audio_files`
  (float32 CQT, windows pooled once, small batches, inference mode) on a share of the files.

Columns: audio seconds per wall second; audio seconds per CPU second of all processes
(times the worker count: the rate on that many idle cores, as other jobs on the machine
slow the wall clock); time vs the previous path; cosine of every chunk embedding with the
previous path's (min / mean); MAP and MR1 of every recording queried against all others.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from coverhunter.audio import load_audio, peak_normalize
from coverhunter.checkpoint import load_model
from coverhunter.dataset import read_dataset
from coverhunter.embed import distance_matrix, embed_audio_files, embed_tracks
from coverhunter.evaluate import windowing
from coverhunter.features import cqt
from coverhunter.metrics import evaluate_distances, self_exclusion

log = logging.getLogger("bench_embed")
_MODEL = {}  # the worker's model, loaded once by _init


def _init(model_path: str) -> None:
    torch.set_num_threads(1)
    _MODEL["lm"] = load_model(model_path, "cpu")
    _MODEL["lm"].model.eval()


def _previous_features(paths: list[str]) -> tuple[list[np.ndarray], float]:
    """Worker: what extraction computes (decode, peak-normalise, float64 CQT); CPU seconds."""
    t0 = time.process_time()
    cfg = _MODEL["lm"].config.features
    return [cqt(peak_normalize(load_audio(p, cfg.sample_rate)), cfg) for p in paths], time.process_time() - t0


def _fast_embeddings(paths: list[str], precision: str) -> tuple[list[np.ndarray], float]:
    """Worker: embed_audio_files on a share of the files; CPU seconds."""
    t0 = time.process_time()
    lm = _MODEL["lm"]
    out = embed_audio_files(lm.model, paths, windowing(lm.config), lm.config.features, precision=precision)
    return [e for e, _ in out], time.process_time() - t0


def shares(paths: list[str], n: int) -> list[list[str]]:
    """Tasks of about ``n`` files each, longest first (the workers stay busy to the end)."""
    paths = sorted(paths, key=lambda p: -os.path.getsize(p))
    return [paths[i : i + n] for i in range(0, len(paths), n)]


def run_previous(pool, lm, paths, workers: int):
    t0, c0 = time.perf_counter(), time.process_time()
    tasks = shares(paths, 4)
    feats, cpu = {}, 0.0
    for task, (fs, secs) in zip(tasks, pool.map(_previous_features, tasks)):
        feats.update(zip(task, fs))
        cpu += secs
    torch.set_num_threads(workers)
    emb = embed_tracks(
        lm.model, [feats[p] for p in paths], windowing(lm.config), batch_size=lm.config.eval.batch_size
    )
    torch.set_num_threads(1)
    return [e for e, _ in emb], time.perf_counter() - t0, cpu + time.process_time() - c0


def run_fast(pool, paths, precision: str):
    t0, c0 = time.perf_counter(), time.process_time()
    tasks = shares(paths, 8)
    embs, cpu = {}, 0.0
    for task, (es, secs) in zip(tasks, pool.map(_fast_embeddings, tasks, [precision] * len(tasks))):
        embs.update(zip(task, es))
        cpu += secs
    return [embs[p] for p in paths], time.perf_counter() - t0, cpu + time.process_time() - c0


def agreement(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, float]:
    """Min and mean cosine between matching chunk embeddings."""
    x, y = np.concatenate(a), np.concatenate(b)
    cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return float(cos.min()), float(cos.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("runs/bench_accuracy/test-w60-v4-8-s0"))
    ap.add_argument(
        "--model",
        type=Path,
        default=Path("models/cqt/model.pt"),
        help="a CQT model (the fast path computes the CQT)",
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="first N recordings only (0 = all)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tracks = read_dataset(a.data / "dataset.txt")[: a.limit or None]
    paths, works = [str(t.audio) for t in tracks], [t.work for t in tracks]
    seconds = sum(t.duration for t in tracks)
    _init(str(a.model))
    torch.set_num_threads(1)
    lm = _MODEL["lm"]
    with ProcessPoolExecutor(a.workers, initializer=_init, initargs=(str(a.model),)) as pool:
        list(pool.map(_fast_embeddings, [paths[:1]] * a.workers, ["float32"] * a.workers))  # warm up
        rows = {
            "previous (float64 CQT, then embed_tracks)": run_previous(pool, lm, paths, a.workers),
            "fast, float32 model (embed_audio_files)": run_fast(pool, paths, "float32"),
            "fast, bfloat16 model (embed_audio_files)": run_fast(pool, paths, "bfloat16"),
        }
    base_emb, base_t, _ = rows["previous (float64 CQT, then embed_tracks)"]
    log.info(
        "\n%d recordings of %d works, %.0f s of audio, %d worker(s); model %s (front end %s)\n",
        len(paths),
        len(set(works)),
        seconds,
        a.workers,
        a.model,
        getattr(lm.config.model, "front_end", "cqt"),
    )
    log.info(
        "| path | audio-s/s | audio-s per CPU-s x %d | time vs previous | cosine min / mean | MAP | MR1 |",
        a.workers,
    )
    log.info("|---|---|---|---|---|---|---|")
    for name, (emb, wall, cpu) in rows.items():
        rep = evaluate_distances(
            distance_matrix(emb, emb, lm.config.eval.distance),
            works,
            works,
            exclude=self_exclusion(len(works)),
        )
        lo, mean = agreement(base_emb, emb)
        log.info(
            "| %s | %.0f | %.0f | %.2f | %.5f / %.6f | %.4f | %.2f |",
            name,
            seconds / wall,
            a.workers * seconds / cpu,
            wall / base_t,
            lo,
            mean,
            rep.map,
            rep.mr1,
        )


if __name__ == "__main__":
    main()
