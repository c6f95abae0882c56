"""Cost of one chroma alignment (Qmax), and of its recursion, against the numpy baseline.

    .venv/bin/python benchmarks/bench_alignment.py                     # generated chroma
    .venv/bin/python benchmarks/bench_alignment.py --data runs/bench_accuracy/test-w60-v4-8-s0
    .venv/bin/python benchmarks/bench_alignment.py --quick             # a smoke run

Compares, in the same run and on the same pairs, :func:`coverhunter.qmax.qmax_batch`
(the compiled recursion) with the row-vectorised numpy recursion it replaced (kept below
as the baseline), checks that both give the same scores, and times the whole alignment
(:func:`coverhunter.qmax.qmax_scores`: transposition, delay embedding,
cross-recurrence, recursion) of one query against many candidates. One thread; the
printed ratios are measured in this run, the milliseconds depend on the machine.

``--data`` takes a folder written by ``coverhunter extract`` (its ``cqt_feat/*.chroma.npz``,
view ``c3``); without it, chroma is generated (a random walk of 12 bins at 2.5 frames per
second, 30-90 s per recording).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # one thread: comparable seconds

import argparse  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from coverhunter import qmax as Q  # noqa: E402

log = logging.getLogger("bench_alignment")


def numpy_qmax_batch(crp: np.ndarray, gap_onset: float, gap_extension: float) -> np.ndarray:
    """The row-vectorised numpy recursion that ``qmax_batch`` used before (the baseline)."""
    k, n, m = crp.shape
    q1 = np.zeros((k, m + 2), np.float32)
    q2 = np.zeros((k, m + 2), np.float32)
    g1 = np.full((k, m + 2), gap_extension, np.float32)
    g2 = np.full((k, m + 2), gap_extension, np.float32)
    best = np.zeros(k, np.float32)
    for i in range(n):
        r = crp[:, i, :]
        a, b, c = q1[:, 1:-1], q2[:, 1:-1], q1[:, :-2]
        hit = np.maximum(np.maximum(a, b), c) + 1.0
        miss = np.maximum(np.maximum(a - g1[:, 1:-1], b - g2[:, 1:-1]), c - g1[:, :-2])
        row = np.where(r, hit, np.maximum(miss, 0.0))
        np.maximum(best, row.max(axis=1), out=best)
        q2, q1 = q1, q2
        q1[:, 2:] = row
        g2, g1 = g1, g2
        g1[:, 2:] = np.where(r, gap_onset, gap_extension)
    return best


def previous_qmax_scores(query, cands, params) -> np.ndarray:
    """``qmax_scores`` as it was: the numpy recursion, one transposition at a time."""
    kernel, shifts = Q.qmax_batch, Q.optimal_transpositions
    Q.qmax_batch = lambda crp, go, ge, lengths=None: numpy_qmax_batch(crp, go, ge)
    Q.optimal_transpositions = lambda a, bs: [Q.optimal_transposition(a, b) for b in bs]
    try:
        return Q.qmax_scores(query, cands, params)
    finally:
        Q.qmax_batch, Q.optimal_transpositions = kernel, shifts


def generated_chroma(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` random-walk chroma sequences (T, 12), T of 75-225 frames (30-90 s)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = int(rng.integers(75, 226))
        walk = np.abs(np.cumsum(rng.normal(size=(t, 12)), axis=0)) + rng.random((t, 12))
        out.append((walk / walk.max(1, keepdims=True)).astype(np.float32))
    return out


def corpus_chroma(folder: Path, n: int) -> list[np.ndarray]:
    files = sorted((folder / "cqt_feat").glob("*.chroma.npz"))[:n]
    if not files:
        raise SystemExit(f"{folder}: no cqt_feat/*.chroma.npz (run 'coverhunter extract' on it)")
    return [np.load(f)["c3"].astype(np.float32) for f in files]


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, help="extracted corpus folder (default: generated chroma)")
    ap.add_argument("--pairs", type=int, default=300, help="candidates per query (default 300)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats, best kept (default 5)")
    ap.add_argument("--quick", action="store_true", help="40 pairs, 2 repeats")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.quick:
        args.pairs, args.repeats = 40, 2
    chroma = corpus_chroma(args.data, args.pairs + 1) if args.data else generated_chroma(args.pairs + 1)
    p = Q.QmaxParams()
    feats = [Q.AlignmentFeatures.from_chroma(c) for c in chroma]
    query, cands = feats[0], feats[1:]
    x = Q.delay_embed(query.chroma, p.m, p.tau)
    ys = [Q.delay_embed(c.chroma, p.m, p.tau) for c in cands]
    m_max = max(len(y) for y in ys)
    crp = np.zeros((len(ys), len(x), m_max), bool)
    for b, y in enumerate(ys):
        crp[b, :, : len(y)] = Q.cross_recurrence(x, y, p.kappa)
    lengths = np.array([len(y) for y in ys])

    Q.qmax_batch(crp[:2], p.gap_onset, p.gap_extension)  # compile (or load numba's cache)
    got = Q.qmax_batch(crp, p.gap_onset, p.gap_extension, lengths)
    want = numpy_qmax_batch(crp, p.gap_onset, p.gap_extension)
    if not np.array_equal(got, want):
        raise SystemExit(f"compiled and numpy recursions differ: max |d| {np.abs(got - want).max()}")
    if not np.array_equal(Q.qmax_scores(query, cands, p), previous_qmax_scores(query, cands, p)):
        raise SystemExit("qmax_scores differs from its previous implementation")
    t_numpy = best_of(lambda: numpy_qmax_batch(crp, p.gap_onset, p.gap_extension), args.repeats)
    t_kernel = best_of(lambda: Q.qmax_batch(crp, p.gap_onset, p.gap_extension, lengths), args.repeats)
    t_whole = best_of(lambda: Q.qmax_scores(query, cands, p), args.repeats)
    t_before = best_of(lambda: previous_qmax_scores(query, cands, p), args.repeats)
    t_cr = best_of(lambda: [Q.cross_recurrence(x, y, p.kappa) for y in ys], args.repeats)
    n = len(ys)
    frames = f"{len(x)} x {np.mean(lengths):.0f} (mean)"
    print(
        f"\n{n} pairs of {frames} delay-embedded frames, "
        f"{'corpus ' + str(args.data) if args.data else 'generated chroma'}; scores identical\n"
    )
    print("| step | ms per pair | ratio to the numpy recursion |")
    print("|---|---|---|")
    print(f"| recursion, numpy (baseline) | {t_numpy / n * 1e3:.3f} | 1.00 |")
    print(f"| recursion, compiled | {t_kernel / n * 1e3:.3f} | {t_kernel / t_numpy:.3f} |")
    print(f"| cross-recurrence plot | {t_cr / n * 1e3:.3f} | {t_cr / t_numpy:.3f} |")
    print(
        f"| whole alignment (qmax_scores), compiled recursion | {t_whole / n * 1e3:.3f} | "
        f"{t_whole / t_numpy:.3f} |"
    )
    print(
        f"| whole alignment as before (numpy recursion, transpositions one by one) | "
        f"{t_before / n * 1e3:.3f} | {t_before / t_numpy:.3f} |"
    )
    print(f"\nwhole alignment: {t_before / t_whole:.2f} x faster than before")


if __name__ == "__main__":
    main()
