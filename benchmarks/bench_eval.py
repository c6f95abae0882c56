"""Evaluation at scale: a 20,000 x 20,000 self-query from embeddings, previous vs current path.

    .venv/bin/python benchmarks/bench_eval.py [--n 20000] [--chunks 2] [--threads 2]

Random 128-d chunk embeddings (``--chunks`` per recording, or 1 to 2 x ``--chunks`` with
``--varied``; works of 4 recordings) go through the path of ``coverhunter evaluate``:
min-over-chunk-pairs distances to the references (prepared once) and the standard metrics
(MAP, MR1, top-10), in blocks of queries. The previous implementation
(``benchmarks/eval_reference.py``, frozen) runs on the same data in the same run; the
table gives both times, their ratio and whether every per-query number is identical.
"""

from __future__ import annotations

import argparse
import logging
import resource
import time

import eval_reference as before
import numpy as np
import torch

from coverhunter.embed import distances_to
from coverhunter.metrics import evaluate_distances, self_exclusion

log = logging.getLogger("bench_eval")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def embeddings(n: int, chunks: int, varied: bool) -> tuple[list[np.ndarray], np.ndarray]:
    """n recordings (n_chunks, 128) float32 around one centre per work of 4, and their labels."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) // 4
    centres = rng.standard_normal((n // 4 + 1, 128)).astype(np.float32)
    counts = rng.integers(1, 2 * chunks + 1, n) if varied else np.full(n, chunks)
    return [
        centres[labels[i]] + rng.standard_normal((counts[i], 128)).astype(np.float32) for i in range(n)
    ], labels


def run_previous(embs, labels, block: int):
    n = len(embs)
    return before.evaluate_distances(
        lambda a, b: before.distance_matrix(embs[a:b], embs),
        labels,
        labels,
        exclude=self_exclusion(n),
        block=block,
    )


def run_current(embs, labels, block: int):
    to_refs = distances_to(embs, "min")  # as coverhunter.evaluate does: references prepared once
    return evaluate_distances(
        lambda a, b: to_refs(embs[a:b]), labels, labels, exclude=self_exclusion(len(embs)), block=block
    )


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--chunks", type=int, default=2)
    ap.add_argument("--varied", action="store_true", help="1 to 2 x --chunks chunks per recording")
    ap.add_argument("--block", type=int, default=1024, help="queries per block")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(a.threads)
    embs, labels = embeddings(a.n, a.chunks, a.varied)
    new, t_new = timed(run_current, embs, labels, a.block)
    m_new = peak_mb()
    old, t_old = timed(run_previous, embs, labels, a.block)
    same = (
        old.per_query_ap == new.per_query_ap
        and old.per_query_rank1 == new.per_query_rank1
        and (old.map, old.mr1, old.top10, old.hit_rate) == (new.map, new.mr1, new.top10, new.hit_rate)
    )
    chunks = f"{a.chunks}" if not a.varied else f"1-{2 * a.chunks}"
    log.info(
        "\n%s x %s self-query, %s chunks per recording, %d thread(s)\n",
        f"{a.n:,}",
        f"{a.n:,}",
        chunks,
        a.threads,
    )
    log.info("| path | seconds | time vs previous | MAP | MR1 | top-10 |\n|---|---|---|---|---|---|")
    for name, rep, t in (
        ("previous (scatter max, torch counting)", old, t_old),
        ("current (grouped max, ranks from label groups)", new, t_new),
    ):
        log.info("| %s | %.1f | %.2f | %.4f | %.2f | %.4f |", name, t, t / t_old, rep.map, rep.mr1, rep.top10)
    log.info(
        "\nper-query AP and first ranks identical: %s; peak resident memory %.0f MB "
        "(after the current path: %.0f MB)",
        same,
        peak_mb(),
        m_new,
    )


if __name__ == "__main__":
    main()
