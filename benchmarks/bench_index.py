"""Catalogue search engines at scale: build, +1 % add vs rebuild, latency, recall, bytes.

    .venv/bin/python benchmarks/bench_index.py                  # 10^6 vectors, ~10 min on 2 cores
    .venv/bin/python benchmarks/bench_index.py --sizes 100000   # a quick look

Two kinds of 128-d unit vectors stand in for chunk embeddings: "clustered" (recordings
of 10 chunks around a centre, as a catalogue of real recordings) and "random"
(isotropic, the worst case for any approximate index: a query's 2nd..10th neighbours
are barely closer than the rest). Each engine is driven through the functions
``index add`` uses (``coverhunter.index.faiss_backend``): build = train (IVF-PQ) + add
every vector + write the file; add = read the file, append 1 % more vectors, write it
back, i.e. what ``index add`` does instead of a rebuild. "rebuild / add" divides the
build time of the n vectors by that add (a rebuild of n + 1 % would take a little
longer, so the ratio is a lower bound). Queries are single chunk vectors near a
catalogue chunk, top 10; IVF-PQ re-scores its 40-row shortlist with the float vectors
(as the index does), and recall@10 is the overlap with exact search in the same run.
Bytes per vector: the engine's file (HNSW: floats + graph; IVF-PQ: 32 B codes + 8 B
id + lists); the float vectors the index keeps for re-scoring add 512 B on disk.

HNSW builds about 4,000 vectors/s on 2 idle cores (10^6: ~5 min per kind of data), so
by default it is measured at ``--hnsw-size`` vectors (100,000) and its row says so;
``--hnsw-size 1000000`` measures it at 10^6. ``--sizes 10000000`` (5 GB of vectors,
about 8 GB resident, ~15 min for both kinds of data with exact and ivfpq) runs 10^7. Qdrant's local mode is
a brute-force test engine, so it is not timed here: a Qdrant server's numbers are its
own (HNSW, quantisation) and depend on the cluster.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("bench_index")


BLOCK = 1 << 20  # rows generated at a time: no float64 or whole-array temporaries at 10^7


def unit(n: int, d: int, seed: int) -> np.ndarray:
    """(n, d) float32 random unit vectors, made block by block (deterministic per seed)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), np.float32)
    for i in range(0, n, BLOCK):
        x = rng.standard_normal((min(BLOCK, n - i), d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[i : i + len(x)] = x
    return out


def clustered(n: int, d: int, seed: int, per: int = 10, spread: float = 0.6) -> np.ndarray:
    """Recordings of ``per`` chunks around a centre: (n, d) float32 unit vectors."""
    centres = unit(n // per + 1, d, seed)
    out = unit(n, d, seed + 1)
    for i in range(0, n, BLOCK):
        x = out[i : i + BLOCK]
        x *= spread
        x += centres[np.arange(i, i + len(x)) // per]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return out


def queries_near(base: np.ndarray, n_queries: int, seed: int = 1) -> np.ndarray:
    """Query vectors a little off random catalogue chunks, (n_queries, dim)."""
    rows = np.random.default_rng(seed).integers(0, len(base), n_queries)
    q = base[rows] + 0.05 * unit(n_queries, base.shape[1], seed + 1)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def exact_top10(base: np.ndarray, q: np.ndarray) -> np.ndarray:
    tb = torch.from_numpy(base)
    return np.concatenate(
        [
            torch.topk(torch.from_numpy(q[i : i + 50]) @ tb.T, 10, dim=1).indices.numpy()
            for i in range(0, len(q), 50)
        ]
    )


def latencies(fn, queries: np.ndarray) -> np.ndarray:
    """Milliseconds per single-vector query."""
    out = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q[None])
        out.append(time.perf_counter() - t0)
    return np.array(out) * 1000


def recall_at_10(truth: np.ndarray, got: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, got)]))


def bench_exact(base: np.ndarray, q: np.ndarray) -> dict:
    from coverhunter.index.search import exact_search

    lat = latencies(lambda x: exact_search(x, base, None, 10), q[:50])
    return dict(
        backend="exact",
        n=len(base),
        build=0.0,
        add=0.0,
        ratio=None,
        p50=np.median(lat),
        p99=np.percentile(lat, 99),
        recall=1.0,
        bpv=base.shape[1] * 4,
    )


def bench_engine(kind: str, every: np.ndarray, m: int, q: np.ndarray, truth, folder: Path) -> dict:
    """Build over ``every[:m]``, add the rest (+1 %), then latency and recall@10 of one faiss
    kind, through the index's code; the float vectors are never copied whole."""
    from coverhunter.index import faiss_backend as fb
    from coverhunter.index.search import clean_shortlist

    path = folder / f"{kind}.faiss"
    t0 = time.perf_counter()
    base, extra = every[:m], every[m:]
    fb.save_ann(fb.build_ann(kind, base), path)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    ann = fb.load_ann(path)
    fb.append(ann, extra)
    fb.save_ann(ann, path)
    add = time.perf_counter() - t0
    full = every
    rescore = full if kind == "ivfpq" else None

    def search(x):
        sims, rows = fb.search_ann(ann, x, 10)
        return clean_shortlist(x, sims, rows, 10, dead=None, n_rows=len(full), vectors=rescore)[1]

    got = np.concatenate([search(q[i : i + 50]) for i in range(0, len(q), 50)])
    lat = latencies(search, q)
    return dict(
        backend=kind,
        n=len(base),
        build=build,
        add=add,
        ratio=build / add,
        p50=np.median(lat),
        p99=np.percentile(lat, 99),
        recall=recall_at_10(truth, got),
        bpv=path.stat().st_size / ann.ntotal,
    )


def bench_size(kind_of_data: str, n: int, backends: list[str], hnsw_size: int, n_queries: int) -> list[dict]:
    make = clustered if kind_of_data == "clustered" else unit
    out = []
    data = None  # (m, vectors, queries, truth), shared by the backends of one size
    for backend in backends:
        m = min(n, hnsw_size) if backend == "hnsw" else n
        if data is None or data[0] != m:
            data = None  # free the previous size's vectors before making the next
            every = make(m + m // 100, 128, 0)  # the catalogue and its +1 % growth
            q = queries_near(every, n_queries)
            data = (m, every, q, exact_top10(every, q))
            del every
        _, every, q, truth = data
        with tempfile.TemporaryDirectory() as tmp:
            r = (
                bench_exact(every, q)
                if backend == "exact"
                else bench_engine(backend, every, m, q, truth, Path(tmp))
            )
        out.append({**r, "n": m, "data": kind_of_data})
        log.info("%s %s %d done (peak RSS %.1f GB)", kind_of_data, backend, m, peak_rss_gb())
    return out


def peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def row(r: dict) -> str:
    ratio = "-" if r["ratio"] is None else f"{r['ratio']:.0f}x"
    return (
        f"| {r['data']} | {r['backend']} | {r['n']:,} | {r['build']:.1f} | {r['add']:.2f} | "
        f"{ratio} | {r['p50']:.2f} / {r['p99']:.2f} | {r['recall']:.3f} | {r['bpv']:.0f} |"
    )


def identify_time(model: str, minutes: float = 4.0) -> float:
    import soundfile as sf

    from coverhunter import identify
    from coverhunter.checkpoint import load_model
    from coverhunter.embed import Windowing
    from coverhunter.index import CatalogueIndex

    lm = load_model(model)
    cfg = lm.config
    win = Windowing.from_config(cfg.eval, cfg.features.frames_per_second, cfg.data.mean_size)
    with tempfile.TemporaryDirectory() as tmp:
        sr = 16000
        t = np.arange(int(minutes * 60 * sr)) / sr
        y = (0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * np.sin(t)))).astype(np.float32)
        wav = Path(tmp) / "q.wav"
        sf.write(wav, y, sr)
        idx = CatalogueIndex.create(Path(tmp) / "idx", lm, win, "exact")
        from coverhunter.dataset import Track

        idx.add(lm, [Track("ref", str(wav), 0.0, "w")], verbose=False)
        t0 = time.perf_counter()
        identify(idx, lm, [wav], top=10)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--kinds", nargs="+", default=["clustered", "random"], choices=["clustered", "random"])
    ap.add_argument(
        "--backends", nargs="+", default=["exact", "ivfpq", "hnsw"], choices=["exact", "hnsw", "ivfpq"]
    )
    ap.add_argument(
        "--hnsw-size",
        type=int,
        default=100_000,
        help="HNSW is measured at min(size, this) vectors (its build is slow)",
    )
    ap.add_argument("--model", default=None, help="model for the end-to-end identify timing")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"\n{torch.get_num_threads()} thread(s); 128-d unit vectors; single-vector queries, top 10\n")
    print(
        "| data | backend | vectors | build (s) | add +1 % (s) | rebuild / add | p50 / p99 (ms) "
        "| recall@10 | bytes/vector |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n in a.sizes:
        for kind in a.kinds:
            for r in bench_size(kind, n, a.backends, a.hnsw_size, a.queries):
                print(row(r), flush=True)
    print(f"\npeak resident memory of this run: {peak_rss_gb():.1f} GB")
    if a.model:
        print(f"\nidentify, 4-minute recording (CQT + embed + search): {identify_time(a.model):.2f} s")


if __name__ == "__main__":
    main()
