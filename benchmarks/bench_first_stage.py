"""First stage of the two-stage search: which shortlist finds what chroma alignment finds.

    .venv/bin/python benchmarks/bench_first_stage.py            # every corpus, pooled, JSON
    .venv/bin/python benchmarks/bench_first_stage.py --quick    # 25 works of one corpus, < 1 min
    .venv/bin/python benchmarks/bench_first_stage.py --corpora tune1000 tune1001 --view today

Every recording of a corpus is a query against all the others (itself excluded). Rows:

- ``summary``: the raw 2D Fourier summary (:func:`coverhunter.classical.fourier_summary`),
  Euclidean distance;
- ``alignment``: all-pairs chroma alignment (``1 - alignment_distance_matrix``, the
  reference: what the second stage would find if it could see everything), cached in
  ``<corpus>/qmax-<view>.npy``; its cost is one query against the whole catalogue;
- ``rec-*``: :class:`coverhunter.index.recurrence.RecurrenceIndex` variants (below).

Columns: recall@50 and @100 (mean over queries of the share of its covers ranked in the
top K; ties broken against the covers, recordings without a vote rank last), MAP of the
ranking alone, milliseconds of one thread per query (CPU time of the search: query
features, faiss, voting; not the chroma), index memory in MB (summary: the float32
vectors; recurrence: :meth:`RecurrenceIndex.memory_report`).

``pooled``: every corpus's recordings in one catalogue (works prefixed with the corpus
name: distinct works across corpora), each recording a query against all; no alignment
row (all pairs of ~1,800 recordings is what the first stage exists to avoid). Its ~210k
shingles pass ``exact_max``: the default becomes HNSW (M 32, efSearch 128), which took
0.68 s a query there (100 neighbours of 234 query vectors, the query's own recording
left out by an id filter): slower than the exact scan at this size, so the pooled row
runs ``rec-default-exact`` unless ``--variants`` says otherwise.

Variants sharing the search settings (m, stride, transpositions, float16, index kind)
share one faiss search at the largest neighbour count; each variant's voting runs on
its first ``neighbours``, and its cost is the shared search plus its own voting.

Chroma: ``<corpus>/chroma-views.npz`` (benchmarks/bench_chroma.py), view ``c3`` unless
``--view``. Design choices were made on the tune corpora only (``tune1000``,
``tune1001``); the test corpora are reported, never tuned on.

What was tried (recall@50 on tune1000, c3; the alignment finds 0.67, the summary 0.36):

- 12 transpositions per query shingle, plain counts over all offsets, 10 neighbours
  0.40; best 2.4 s band, 30 neighbours 0.41 (0.42 with rank votes); 0.6 s a query;
- key-normalised shingles, one search: 0.36 (counts) / 0.38 (rank votes), 0.06 s a query;
  the match's transposition as a vote group changed nothing yet (hubs drowned it);
- hubness weights (1 + h/E)^-p: p 0.5 0.39, p 1 0.42 (counts), p 2 0.43; with 100
  neighbours 0.45; rank or margin votes then lose to counts (0.40 / 0.37);
- centring each frame of a shingle (correlation instead of cosine) +0.01-0.02; centring
  the whole shingle the same;
- wider bands (16 frames) over tempo ratios 0.8-1.25: 0.47; one vote per query shingle
  and band 0.49; 200 neighbours 0.50;
- longer context: m 10 0.51-0.53, m 14 0.53-0.55, m 20 no better, at 1.5-4 times the
  cost; the same span sampled every second frame (m 7, tau 2): 0.55 at the cost of m 7;
  tau 3 or 4 worse (0.52 / 0.50);
- two query keys (the query shingle rolled to its two strongest pitch classes) 0.57,
  three 0.58 on tune1000 (0.51 / 0.53 on tune1001) at 2 and 3 times the search;
- dividing by the catalogue recording's length^0.5: +0.006 / 0, not kept;
- late fusion with the summary (per-query z-scores, weight 0.5-0.9 on the recurrence):
  -0.01 to +0.004 on both tune corpora, not kept;
- stride 2 (half the memory): -0.02; float16 in an exact faiss index: same recall, 10
  times slower (faiss decodes every code in the scan), so float16 only with HNSW.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # one thread: comparable milliseconds

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from coverhunter import classical as C  # noqa: E402
from coverhunter import qmax as Q  # noqa: E402
from coverhunter.dataset import read_dataset  # noqa: E402
from coverhunter.index.recurrence import RecurrenceIndex, RecurrenceParams  # noqa: E402
from coverhunter.metrics import evaluate_distances, recall_at, self_exclusion  # noqa: E402

log = logging.getLogger("bench_first_stage")

CORPORA = {
    "tune1000": "tune-mix-w60-s1000",
    "tune1001": "tune-mix-w60-s1001",
    "test": "test-w60-v4-8-s0",
    "kept": "test-kept-w60-v4-8-s0",
    "arr": "test-arr-w30-v4-8-s0",
}
R = RecurrenceParams
S5 = (0.8, 0.9, 1.0, 1.1, 1.25)
FAST = dict(
    m=7, tau=2, centre="frame", neighbours=100, vote="count", hub_power=1.0, one_vote=True, band=16, slopes=S5
)
# the first tries (12 transpositions: 10 neighbours and a plain vote count over all offsets,
# i.e. one band wider than any recording; then best-band counting, 30 neighbours, 2.4 s
# bands), the first key-normalised index, then the tuned settings: the shipped default
# (query_keys=2), its one-search form, and its cheaper-memory forms
VARIANTS = {
    "rec-naive": R(neighbours=10, transpositions="all", vote="count", band=1_000_000),
    "rec-band": R(neighbours=30, transpositions="all", vote="count", band=6),
    "rec-canon-first": R(
        m=7,
        tau=1,
        neighbours=30,
        vote="count",
        band=6,
        query_keys=1,
        hub_power=0.0,
        one_vote=False,
        centre="none",
        slopes=(1.0,),
    ),
    "rec-q1": R(**FAST, query_keys=1),
    "rec-default": R(),
    "rec-q3": R(query_keys=3),
    "rec-stride2": R(stride=2),
    "rec-f16": R(float16=True),
    "rec-default-exact": R(exact_max=10**9),  # the default on an exact index at any size
}
# the 12-transposition variants cost ~0.6 s a query, q3 1.6 times the default, and float16
# an exact index 10 times (faiss decodes the scalar quantiser in its brute-force scan; in
# HNSW, the pool's index, it only halves the memory): asked for by name only
DEFAULT_VARIANTS = ("rec-canon-first", "rec-q1", "rec-default", "rec-stride2")
QUICK_VARIANTS = ("rec-canon-first", "rec-default")
POOLED_VARIANTS = ("rec-default-exact",)
KS = (50, 100)


# ---------------------------------------------------------------------------
# data


def load_corpus(root: Path, folder: str, view: str) -> tuple[list[np.ndarray], np.ndarray] | None:
    """(chromas, works) of a corpus, or None while its chroma is not computed yet."""
    path = root / folder / "chroma-views.npz"
    if not path.is_file():
        log.warning("%s: no chroma yet (%s), skipped", folder, path)
        return None
    tracks = read_dataset(root / folder / "dataset.txt")
    with np.load(path, allow_pickle=False) as z:
        chromas = [z[f"{view}/{i}"] for i in range(len(tracks))]
    return chromas, np.array([t.work for t in tracks])


# ---------------------------------------------------------------------------
# metrics


def metrics(score: np.ndarray, works: np.ndarray) -> dict:
    """recall@K and MAP of a score matrix (n, n), larger = closer."""
    dist = -np.asarray(score, np.float64)
    out = {
        f"r{k}": v for k, v in recall_at(dist, works, works, tuple(KS), self_exclusion(len(works))).items()
    }
    out["map"] = float(evaluate_distances(dist, works, works, exclude=self_exclusion(len(works))).map)
    return out


# ---------------------------------------------------------------------------
# baselines


def summary_scores(chromas) -> tuple[np.ndarray, float, float]:
    """Negative Euclidean distances of 2D Fourier summaries (n, n), ms per query, MB."""
    t0 = time.process_time()
    v = np.stack([C.fourier_summary(c) for c in chromas])
    feat = time.process_time() - t0
    index = faiss.IndexFlatL2(v.shape[1])
    index.add(v)
    t0 = time.process_time()
    d2, ids = index.search(v, len(v))
    search = time.process_time() - t0
    score = np.empty((len(v), len(v)))
    np.put_along_axis(score, ids, -np.sqrt(np.maximum(d2, 0)), axis=1)
    return score, (feat + search) / len(v) * 1000, v.nbytes / 1e6


def alignment_scores(chromas, cache: Path | None, compute: bool) -> tuple[np.ndarray, float] | None:
    """All-pairs alignment score matrix (cached), and ms of one query against all."""
    feats = [Q.AlignmentFeatures.from_chroma(c) for c in chromas]
    if cache is not None and cache.is_file():
        score = np.load(cache)
    elif compute:
        log.info("all-pairs alignment of %d recordings (cached in %s)", len(feats), cache)
        score = 1.0 - Q.alignment_distance_matrix(feats, Q.QmaxParams(), verbose=True)
        if cache is not None:
            tmp = cache.with_name(cache.name + ".tmp.npy")
            np.save(tmp, score)
            os.replace(tmp, cache)
    else:
        return None
    t0 = time.process_time()
    for q in range(2):
        Q.qmax_scores(feats[q], feats)
    return score, (time.process_time() - t0) / 2 * 1000


# ---------------------------------------------------------------------------
# recurrence variants


def search_key(p: RecurrenceParams) -> tuple:
    """Settings that change the faiss search (variants with the same key share it)."""
    return (
        p.m,
        p.tau,
        p.stride,
        p.transpositions,
        p.query_keys,
        p.centre,
        p.float16,
        p.exact_max,
        p.hnsw_m,
        p.ef_search,
    )


def recurrence_scores(chromas, variants: dict[str, RecurrenceParams]) -> dict[str, tuple]:
    """Score matrices (n, n) of recurrence variants: {name: (score, ms per query, MB, memory)}."""
    n = len(chromas)
    groups: dict[tuple, list[str]] = {}
    for name, p in variants.items():
        groups.setdefault(search_key(p), []).append(name)
    out = {}
    for names in groups.values():
        widest = max((variants[v] for v in names), key=lambda p: p.neighbours)
        index = RecurrenceIndex(widest)
        t0 = time.process_time()
        index.add(np.arange(n), chromas)
        build = time.process_time() - t0
        mem = index.memory_report()
        t_search, cached = 0.0, []
        for i, c in enumerate(chromas):  # every recording a query, its own shingles left out
            t0 = time.process_time()
            vecs, frames, tr = index.query_vectors(c)
            sims, ids = index.neighbours(vecs, (int(index.starts[i]), int(index.starts[i + 1])))
            t_search += time.process_time() - t0
            cached.append((sims, ids, frames, tr))
        for name in names:
            p = variants[name]
            if p.hub_power and index.hubness is None:
                t0 = time.process_time()
                index.hub_counts()
                build += time.process_time() - t0
            score = np.zeros((n, n))
            t0 = time.process_time()
            for i, (sims, ids, frames, tr) in enumerate(cached):
                score[i] = index.scores_from_neighbours(sims, ids, frames, tr, p)
            t_vote = time.process_time() - t0
            ms = (t_search + t_vote) / n * 1000
            out[name] = (score, ms, mem["total_bytes"] / 1e6, {**mem, "build_s": build})
            log.info(
                "%s: %.1f ms/query (search %.1f), %.1f MB",
                name,
                ms,
                t_search / n * 1000,
                mem["total_bytes"] / 1e6,
            )
    return out


# ---------------------------------------------------------------------------
# one catalogue


def run_catalogue(name: str, chromas, works, variants, cache: Path | None, align: bool) -> dict:
    rows = {}
    score, ms, mb = summary_scores(chromas)
    rows["summary"] = {**metrics(score, works), "ms": ms, "mb": mb}
    if align:
        a = alignment_scores(chromas, cache, compute=True)
        if a is not None:
            rows["alignment"] = {**metrics(a[0], works), "ms": a[1], "mb": float("nan")}
    for v, (score, ms, mb, mem) in recurrence_scores(chromas, variants).items():
        rows[v] = {
            **metrics(score, works),
            "ms": ms,
            "mb": mb,
            "memory": mem,
            "params": dataclasses.asdict(variants[v]),
        }
    res = {
        "n": len(chromas),
        "works": int(len(set(works))),
        "frames": int(sum(len(c) for c in chromas)),
        "rows": rows,
    }
    print_table(name, res)
    return res


def print_table(name: str, res: dict) -> None:
    print(f"\n{name}: {res['n']} recordings, {res['works']} works, {res['frames']} chroma frames\n")
    print("| method | R@50 | R@100 | MAP | ms/query | index MB |")
    print("|---|---|---|---|---|---|")
    for m, r in res["rows"].items():
        mb = "-" if not np.isfinite(r["mb"]) else f"{r['mb']:.1f}"
        print(
            f"| {m} | {r['r50']:.3f} | {r['r100']:.3f} | {r['map']:.3f} | {r['ms']:.1f} | {mb} |", flush=True
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    ap.add_argument(
        "--view", default="c3", help="chroma view of chroma-views.npz (c3, today, c1, c3p15, c3p07)"
    )
    ap.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS))
    ap.add_argument("--quick", action="store_true", help="25 works of the first corpus, two variants")
    ap.add_argument("--no-pooled", action="store_true", help="leave out the all-corpora catalogue")
    ap.add_argument("--only-pooled", action="store_true", help="the all-corpora catalogue alone")
    ap.add_argument("--root", type=Path, default=Path("runs/bench_accuracy"))
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default <root>/first-stage.json)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    faiss.omp_set_num_threads(1)
    names = a.variants or list(QUICK_VARIANTS if a.quick else DEFAULT_VARIANTS)
    variants = {v: VARIANTS[v] for v in names}
    results = {"view": a.view, "corpora": {}}
    out = a.out or a.root / ("first-stage-quick.json" if a.quick else "first-stage.json")
    pool_c, pool_w = [], []
    for key in a.corpora:
        data = load_corpus(a.root, CORPORA[key], a.view)
        if data is None:
            continue
        chromas, works = data
        if a.quick:
            keep = np.isin(works, sorted(set(works))[:25])
            chromas, works = [c for c, k in zip(chromas, keep) if k], works[keep]
            results["corpora"][key] = run_catalogue(
                f"{key} (quick: 25 works)", chromas, works, variants, None, align=False
            )
            break
        if not a.only_pooled:
            cache = a.root / CORPORA[key] / f"qmax-{a.view}.npy"
            results["corpora"][key] = run_catalogue(key, chromas, works, variants, cache, align=True)
            write_json(out, results)  # after every catalogue: a long run keeps what it measured
        pool_c += chromas
        pool_w += [f"{key}:{w}" for w in works]
    if len(set(pool_w)) > 1 and not a.no_pooled and not a.quick:
        pooled = {v: VARIANTS[v] for v in (a.variants or POOLED_VARIANTS)}
        results["pooled"] = run_catalogue(
            "pooled (all corpora, one catalogue)", pool_c, np.array(pool_w), pooled, None, align=False
        )
    write_json(out, results)
    log.info("wrote %s", out)


def write_json(out: Path, results: dict) -> None:
    """``results`` to ``out`` through a temporary name (never a half-written file)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=float))
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
