"""Which chroma holds on every kind of cover: all-pairs alignment MAP per chroma view and fusion.

    .venv/bin/python benchmarks/bench_chroma.py                  # test subsets + tune corpora
    .venv/bin/python benchmarks/bench_chroma.py --corpora tune1000 tune1001   # tuning only
    .venv/bin/python benchmarks/bench_chroma.py --quick          # 6 works, a smoke run

Corpora (``coverhunter.corpus.make_corpus``, rendered once under ``--out`` and reused):

- ``test``: the held-out test works, re-harmonised versions (``harmony_kept=0``; the
  367-recording corpus of ``bench_accuracy.py``);
- ``kept``: the same works, every version keeping the work's chord progression
  (``harmony_kept=1``), re-voiced and re-orchestrated;
- ``arr``: arrangement only (30 works: key, tempo and structure kept);
- ``tune1000``, ``tune1001``: training-type corpora of the mix (``harmony_kept=0.5``),
  where choices are made; their rows also split the queries by kind (kept / new).

Chroma views, each block-averaged to 2.5 frames per second and max-normalised: ``today``
(:func:`coverhunter.classical.chroma_from_cqt` on the model's CQT) and the views of
:mod:`coverhunter.chroma` (36 bins per octave, tuning estimated, folded by librosa: ``c3``
from C3, ``c1`` from C1, ``c3p15`` and ``c3p07`` from C3 at power 1.5 and 0.7, ``c3cens``
librosa's CENS chroma from C3: energy shares quantised on a log scale, smoothed over 11
CQT frames, unit length; ``c3nnls`` notes transcribed by NNLS from the whitened CQT
(:mod:`coverhunter.notes`), folded from C3). Every
recording is a query against all others; the alignment is
:func:`coverhunter.qmax.alignment_distance_matrix` with the default
:class:`~coverhunter.qmax.QmaxParams`. A fusion ``a+b`` is the mean of the views' Qmax
scores, each z-scored per query (:func:`coverhunter.rerank.zscore`); ``(raw mean)``: the
plain mean of the scores, which a calibration can read as one score. A stack ``a|b`` is
what an index stores (:func:`coverhunter.qmax.stack_views`): the views side by side,
aligned view by view (each with its own transposition) and averaged
(:func:`coverhunter.qmax.qmax_scores`).
``R@50``: the share of a query's covers that all-pairs alignment ranks in its top 50.
Costs are CPU seconds of one thread (process time): chroma per recording-minute, and
alignment per 1,000 pairs.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # one thread: comparable seconds

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from coverhunter import chroma as CH  # noqa: E402
from coverhunter import classical as C  # noqa: E402
from coverhunter import qmax as Q  # noqa: E402
from coverhunter.audio import load_audio, peak_normalize  # noqa: E402
from coverhunter.corpus import harmony_subset, make_corpus  # noqa: E402
from coverhunter.dataset import read_dataset  # noqa: E402
from coverhunter.features import cqt  # noqa: E402
from coverhunter.metrics import evaluate_distances, recall_at, self_exclusion  # noqa: E402
from coverhunter.rerank import zscore  # noqa: E402

log = logging.getLogger("bench_chroma")

CORPORA = {
    "test": ("test-w60-v4-8-s0", dict(works=60, seed=0, split="test", harmony_kept=0.0)),
    "kept": ("test-kept-w60-v4-8-s0", dict(works=60, seed=0, split="test", harmony_kept=1.0)),
    "arr": (
        "test-arr-w30-v4-8-s0",
        dict(works=30, seed=0, split="test", arrangement_only=True, harmony_kept=0.0),
    ),
    "tune1000": ("tune-mix-w60-s1000", dict(works=60, seed=1000, split="train", harmony_kept=0.5)),
    "tune1001": ("tune-mix-w60-s1001", dict(works=60, seed=1001, split="train", harmony_kept=0.5)),
}
QUICK = {"quick": ("quick-mix-w6-s7", dict(works=6, seed=7, split="train", harmony_kept=0.5))}
VIEWS = ("today", "c3", "c1", "c3p15", "c3p07", "c3cens", "c3nnls")
FUSIONS = ("today+c3", "c3+c1", "today+c1", "today+c3+c1", "today+c3p07")
STACKS = (
    "today|c3",
    "today|c3p07",
    "today|c3cens",
    "today|c3nnls",
    "today|c3cens|c3nnls",
)  # stacked, as an index stores them


def corpus_tracks(out: Path, kw: dict, workers: int) -> list:
    """The corpus's tracks, rendered first when needed."""
    if not (out / "dataset.txt").is_file():
        make_corpus(out, versions=(4, 8), num_workers=workers, verbose=True, **kw)
    return read_dataset(out / "dataset.txt")


def chroma_views(tracks, cache: Path) -> tuple[dict[str, list[np.ndarray]], dict[str, float]]:
    """Every view's chroma of every track (cached in ``cache``), and CPU seconds per
    recording-minute of each way to compute them."""
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        if all(f"{v}/0" in z.files for v in VIEWS):  # else written before a view was added
            views = {v: [z[f"{v}/{i}"] for i in range(len(tracks))] for v in VIEWS}
            return views, json.loads(str(z["costs"]))
    views = {v: [] for v in VIEWS}
    fine_names = [v for v in VIEWS if v != "today"]
    secs = {"today": 0.0, "fine CQT": 0.0, **{v: 0.0 for v in fine_names}}
    minutes = 0.0
    for t in tracks:
        y = peak_normalize(load_audio(t.audio))
        minutes += len(y) / 16000 / 60
        t0 = time.process_time()
        views["today"].append(C.chroma_from_cqt(cqt(y)))
        t1 = time.process_time()
        c = CH.fine_cqt(y)  # what CH.audio_chroma does, each view timed apart
        secs["fine CQT"] += time.process_time() - t1
        secs["today"] += t1 - t0
        for v in fine_names:
            t2 = time.process_time()
            views[v].append(CH.fold(c, CH.VIEWS[v]))
            secs[v] += time.process_time() - t2
    secs["fine (all views)"] = secs["fine CQT"] + sum(secs[v] for v in fine_names)
    costs = {k: s / minutes for k, s in secs.items()}
    np.savez(
        cache, costs=json.dumps(costs), **{f"{v}/{i}": c for v, cs in views.items() for i, c in enumerate(cs)}
    )
    return views, costs


def qmax_scores(chromas: list[np.ndarray], cache: Path | None = None) -> tuple[np.ndarray, float]:
    """All-pairs Qmax score matrix (n, n) and CPU seconds per 1,000 pairs (cached in
    ``cache``, keyed by the alignment settings)."""
    if cache is not None and cache.is_file():
        z = np.load(cache)
        return z["score"], float(z["seconds"])
    feats = [Q.AlignmentFeatures.from_chroma(c) for c in chromas]
    t0 = time.process_time()
    score = 1.0 - Q.alignment_distance_matrix(feats, Q.QmaxParams())
    n = len(feats)
    seconds = (time.process_time() - t0) / (n * (n - 1) / 2) * 1000
    if cache is not None:
        np.savez(cache, score=score, seconds=seconds)
    return score, seconds


def cache_name(folder: Path, view: str) -> Path:
    """Where a view's all-pairs scores are kept: named by the view and the alignment settings."""
    key = hashlib.sha1(repr(Q.QmaxParams()).encode()).hexdigest()[:8]
    return folder / f"bench-chroma-qmax-{view.replace('|', '_')}-{key}.npz"


def fused(scores: list[np.ndarray]) -> np.ndarray:
    """Mean of per-query z-scored score matrices (self-matches left out of the z-score)."""
    out = np.zeros_like(scores[0])
    for s in scores:
        z = np.empty_like(s)
        for i in range(len(s)):
            others = np.delete(np.arange(len(s)), i)
            z[i, others] = zscore(s[i, others])
            z[i, i] = np.inf
        out += z / len(scores)
    return out


def evaluate(score: np.ndarray, works: np.ndarray, subsets: np.ndarray | None) -> dict:
    """MAP over all queries (and over each kind's queries when ``subsets`` is given), R@50."""
    dist = -score.astype(np.float64)
    np.fill_diagonal(dist, 0.0)
    res = {
        "map": evaluate_distances(dist, works, works, exclude=self_exclusion(len(works))).map,
        "r50": recall_at(dist, works, works, 50, self_exclusion(len(works))),
    }
    if subsets is not None:
        for kind in ("kept", "new"):
            q = np.flatnonzero(subsets == kind)
            if len(q):
                res[f"map_{kind}"] = evaluate_distances(
                    dist[q], works[q], works, exclude=_row_self(q, len(works))
                ).map
    return res


def _row_self(rows: np.ndarray, n: int) -> np.ndarray:
    """Boolean (len(rows), n): each query row's own column."""
    m = np.zeros((len(rows), n), bool)
    m[np.arange(len(rows)), rows] = True
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    ap.add_argument("--quick", action="store_true", help="one 6-work mix corpus: a smoke run")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_accuracy"))
    ap.add_argument("--workers", type=int, default=0, help="rendering processes (0 = all cores)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    corpora = QUICK if a.quick else {k: CORPORA[k] for k in a.corpora}
    results = {}
    for name, (folder, kw) in corpora.items():
        tracks = corpus_tracks(a.out / folder, kw, a.workers)
        works = np.array([t.work for t in tracks])
        kinds = np.array([harmony_subset(t) for t in tracks])
        mixed = len(set(kinds) - {"none"}) > 1
        views, costs = chroma_views(tracks, a.out / folder / "chroma-views.npz")
        scores, align_cost = {}, {}
        for v in VIEWS:
            scores[v], align_cost[v] = qmax_scores(views[v], cache_name(a.out / folder, v))
            log.info("%s: %s aligned", name, v)
        for st in STACKS:
            scores[st], align_cost[st] = qmax_scores(
                [Q.stack_views([views[v][i] for v in st.split("|")]) for i in range(len(tracks))],
                cache_name(a.out / folder, st),
            )
            log.info("%s: %s aligned", name, st)
        rows = {v: evaluate(scores[v], works, kinds if mixed else None) for v in (*VIEWS, *STACKS)}
        for f in FUSIONS:
            parts = [scores[v] for v in f.split("+")]
            rows[f] = evaluate(fused(parts), works, kinds if mixed else None)
            rows[f + " (raw mean)"] = evaluate(np.mean(parts, axis=0), works, kinds if mixed else None)
        results[name] = {
            "n": len(tracks),
            "kinds": {k: int((kinds == k).sum()) for k in set(kinds)},
            "rows": rows,
            "chroma_s_per_min": costs,
            "align_s_per_1000_pairs": align_cost,
        }
        print_table(name, results[name])
    a.out.mkdir(parents=True, exist_ok=True)
    out = a.out / ("chroma-quick.json" if a.quick else "chroma.json")
    old = json.loads(out.read_text()) if out.is_file() else {}
    out.write_text(json.dumps({**old, **results}, indent=1))  # other corpora's results stay


def print_table(name: str, res: dict) -> None:
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(res["kinds"].items()))
    print(f"\n{name}: {res['n']} recordings ({kinds}); all-pairs Qmax\n")
    sub = [k for k in ("map_kept", "map_new") if k in next(iter(res["rows"].values()))]
    print("| chroma | MAP | R@50 |" + "".join(f" {k} |" for k in sub))
    print("|---|---|---|" + "---|" * len(sub))
    for v, r in res["rows"].items():
        print(f"| {v} | {r['map']:.3f} | {r['r50']:.3f} |" + "".join(f" {r[k]:.3f} |" for k in sub))
    print(
        "\ncosts (CPU s, one thread): chroma per recording-minute "
        + ", ".join(f"{k} {v:.3f}" for k, v in res["chroma_s_per_min"].items())
        + "; alignment per 1,000 pairs "
        + ", ".join(f"{k} {v:.2f}" for k, v in res["align_s_per_1000_pairs"].items()),
        flush=True,
    )


if __name__ == "__main__":
    main()
