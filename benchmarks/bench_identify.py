"""What a catalogue owner gets: ``identify``'s answers on held-out music, through a real index.

    .venv/bin/python benchmarks/bench_identify.py [--works 300] [--model PATH]

``benchmarks/bench_accuracy.py`` ranks recordings against recordings, as ``evaluate`` does.
This benchmark asks the catalogue question instead: *which work does this recording
perform, if any?* It uses the same held-out test corpus (test works, test soundfont;
``bench_accuracy.render``, cached under ``runs/bench_accuracy``) and splits it by work
(seeded): two thirds of the works are **in the catalogue** (all their versions but two),
the other third are **unknown**. Two versions of every work are queries. The catalogue is
built with ``coverhunter.index.build_index`` (the code behind ``coverhunter index build``)
and calibrated on a labelled training-type set (``--calibrate-with``; by default the
``--tune`` corpus of ``bench_accuracy``, split "train", seed 1000: never the test corpus),
then every query goes through ``coverhunter.identify``.

One row per search: ``identify --rerank 0`` (the embedding alone); the default two-stage
search, whose verdict comes from the top match's alignment score; with
``--versions-aligned V...``, the two-stage search aligning V recordings per shortlisted work
(default 1: as before versions were aligned); and the default search's answers judged again,
at the other ``--false-alarm`` rates and with the verdict made from the embedding score (as
before the calibration had an alignment part). Columns:

- known queries (their work is in the catalogue): HR@1 (top work right), MRR over the
  works listed (``--top``), R@10;
- the verdict at ``--false-alarm`` (``identify``'s ``match`` / ``no cover in the
  catalogue``): detections (known queries answered ``match`` with the right work), wrong
  matches (known queries answered ``match`` with a wrong work), false alarms (unknown
  queries answered ``match``);
- AUC: how well the top match's p-value separates known from unknown queries (0.5 =
  not at all), whatever the threshold;
- ms per query (process time, one thread: embedding, search, re-ranking).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_accuracy import render  # noqa: E402

from coverhunter import identify  # noqa: E402
from coverhunter.checkpoint import load_model  # noqa: E402
from coverhunter.dataset import read_dataset, write_dataset  # noqa: E402
from coverhunter.index import build_index, p_impostor  # noqa: E402
from coverhunter.utils import atomic_write_text  # noqa: E402

log = logging.getLogger("bench_identify")
QUERIES_PER_WORK = 2


def split_catalogue(tracks: list, known_fraction: float, seed: int) -> tuple[list, list, set]:
    """Catalogue tracks, query tracks and the set of known works.

    Works are shuffled (``seed``); the first ``known_fraction`` are in the catalogue. Of
    every work, the first :data:`QUERIES_PER_WORK` versions (by track order) are queries;
    a known work's other versions form its catalogue entries.
    """
    works = sorted({t.work for t in tracks})
    order = np.random.default_rng(seed).permutation(len(works))
    known = {works[i] for i in order[: int(round(known_fraction * len(works)))]}
    seen: dict = {}
    catalogue, queries = [], []
    for t in tracks:
        n = seen.get(t.work, 0)
        seen[t.work] = n + 1
        if n < QUERIES_PER_WORK:
            queries.append(t)
        elif t.work in known:
            catalogue.append(t)
    return catalogue, queries, known


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half (Mann-Whitney)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def score_answers(results: list, queries: list, known: set, p_value=None, false_alarm: float = 0.01) -> dict:
    """Metrics of ``identify``'s answers (QueryResult per query, in query order).

    ``p_value``: a function of a query's top Match giving the p-value its verdict is made
    from (default: the answer's own, i.e. ``identify``'s verdict).
    """
    rr, hit1, r10, detect, wrong, false_alarm_ = [], [], [], [], [], []
    evidence_known, evidence_unknown = [], []
    for r, q in zip(results, queries):
        works = [m.work for m in r.matches]
        if p_value is None:
            top_p = r.matches[0].p_value if r.matches and r.matches[0].p_value is not None else 1.0
            said_match = r.verdict == "match"
        else:
            top_p = p_value(r.matches[0]) if r.matches else 1.0
            said_match = top_p <= false_alarm
        evidence = -np.log10(max(top_p, 1e-300))
        if q.work in known:
            rank = works.index(q.work) + 1 if q.work in works else None
            rr.append(1.0 / rank if rank else 0.0)
            hit1.append(rank == 1)
            r10.append(rank is not None and rank <= 10)
            detect.append(said_match and rank == 1)
            wrong.append(said_match and rank != 1)
            evidence_known.append(evidence)
        else:
            false_alarm_.append(said_match)
            evidence_unknown.append(evidence)
    return {
        "known": len(rr),
        "unknown": len(false_alarm_),
        "hr1": float(np.mean(hit1)),
        "mrr": float(np.mean(rr)),
        "r10": float(np.mean(r10)),
        "detections": float(np.mean(detect)),
        "wrong_matches": float(np.mean(wrong)),
        "false_alarms": float(np.mean(false_alarm_)) if false_alarm_ else float("nan"),
        "auc": auc(np.array(evidence_known), np.array(evidence_unknown)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--works", type=int, default=300, help="test works (default 300: 1,834 recordings)")
    ap.add_argument("--versions", type=int, nargs=2, default=[4, 8], metavar=("MIN", "MAX"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, default=Path("models/default/model.pt"))
    ap.add_argument(
        "--calibrate-with",
        type=Path,
        default=None,
        metavar="LIST",
        help="labelled training-type list (default: bench_accuracy's --tune corpus)",
    )
    ap.add_argument("--known-fraction", type=float, default=2 / 3)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument(
        "--false-alarm",
        type=float,
        nargs="+",
        default=[0.01, 0.05],
        help="false alarm rates: identify's verdict at the first; the default "
        "search's answers are also judged at the others",
    )
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_identify"))
    ap.add_argument(
        "--corpora",
        type=Path,
        default=Path("runs/bench_accuracy"),
        help="where bench_accuracy keeps its rendered corpora",
    )
    ap.add_argument(
        "--versions-aligned",
        type=int,
        nargs="*",
        default=[1],
        metavar="V",
        help="also run the two-stage search aligning V recordings per shortlisted "
        "work (identify's rerank_versions; default: 1, the search before "
        "versions were aligned)",
    )
    ap.add_argument(
        "--corpus",
        type=Path,
        default=None,
        metavar="LIST",
        help="split this extracted list instead of the test corpus (to tune on "
        "training-type data, e.g. runs/corpus-v2/val-extra/full.txt)",
    )
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)

    span = f"{a.versions[0]}-{a.versions[1]}"
    if a.corpus is None:
        tracks = render(
            a.corpora / f"test-w{a.works}-v{span}-s{a.seed}",
            works=a.works,
            versions=a.versions,
            seed=a.seed,
            split="test",
            arrangement_only=False,
            standin=False,
            workers=a.workers,
        )
        tag = f"w{a.works}-s{a.seed}"
    else:
        tracks = [t for t in read_dataset(a.corpus, check_features=True) if "source_utt" not in t.extra]
        tag = f"{a.corpus.parent.name}-{a.corpus.stem}-s{a.seed}"
    if a.calibrate_with is None:
        cal_tracks = render(
            a.corpora / f"tune-train-w60-s{a.seed + 1000}",
            works=60,
            versions=a.versions,
            seed=a.seed + 1000,
            split="train",
            arrangement_only=False,
            standin=False,
            workers=a.workers,
        )
    else:
        cal_tracks = read_dataset(a.calibrate_with, check_features=True)
    catalogue, queries, known = split_catalogue(tracks, a.known_fraction, a.seed)
    work_dir = a.out / tag
    work_dir.mkdir(parents=True, exist_ok=True)
    lm = load_model(a.model)
    t0 = time.time()
    write_dataset(catalogue, work_dir / "catalogue.txt")
    idx, failed = build_index(work_dir / "index", lm, dataset=work_dir / "catalogue.txt", overwrite=True)
    if failed:
        log.warning("%d catalogue recordings failed (left out), e.g. %s", len(failed), failed[0])
    idx.calibrate(lm, cal_tracks)
    log.info(
        "index of %d recordings (%d works) built and calibrated on %d recordings in %.0f s",
        idx.meta["n_tracks"],
        len(known),
        len(cal_tracks),
        time.time() - t0,
    )

    rows = {}
    cal, n_tracks = idx.meta["calibration"], idx.meta["n_tracks"]
    searches = [
        ("embedding search (identify --rerank 0)", 0, None),
        ("two-stage search (identify default)", None, None),
    ]
    searches += [
        (f"two-stage search, {v} recording{'s' if v > 1 else ''} aligned per work", None, v)
        for v in a.versions_aligned
    ]
    for name, rerank, versions in searches:
        t = time.process_time()
        res = identify(
            idx, lm, queries, top=a.top, false_alarm=a.false_alarm[0], rerank=rerank, rerank_versions=versions
        )
        ms = 1000 * (time.process_time() - t) / len(queries)
        rows[name] = {**score_answers(res, queries, known), "ms_per_query": ms}
        log.info("%s: %s", name, rows[name])
        if rerank is None and versions is None:
            for alpha in a.false_alarm[1:]:  # the same answers, judged at another rate
                rows[f"{name}, verdict at false alarm {alpha}"] = {
                    **score_answers(
                        res, queries, known, lambda m: 1.0 if m.p_value is None else m.p_value, alpha
                    ),
                    "ms_per_query": ms,
                }
            # the same answers, with the verdict made as before alignment calibration
            rows[name + ", verdict from the embedding score"] = {
                **score_answers(
                    res, queries, known, lambda m: p_impostor(cal, m.score, n_tracks), a.false_alarm[0]
                ),
                "ms_per_query": ms,
            }

    n_known = rows[next(iter(rows))]["known"]
    n_unknown = rows[next(iter(rows))]["unknown"]
    corpus = "held-out works (test soundfont)" if a.corpus is None else f"works of {a.corpus}"
    n_out = len({t.work for t in tracks}) - len(known)
    print(
        f"\nmodel {a.model}; catalogue: {idx.meta['n_tracks']} recordings of {len(known)} {corpus}; "
        f"queries: {n_known} of catalogue works, {n_unknown} of {n_out} works not in it; calibrated "
        f"on {len(cal_tracks)} training-type recordings; verdict at false alarm {a.false_alarm[0]}\n"
    )
    print(
        "| search | HR@1 | MRR | R@10 | detections | wrong matches | false alarms | AUC (p-value) "
        "| ms / query |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['hr1']:.3f} | {r['mrr']:.3f} | {r['r10']:.3f} | {r['detections']:.3f} | "
            f"{r['wrong_matches']:.3f} | {r['false_alarms']:.3f} | {r['auc']:.3f} | "
            f"{r['ms_per_query']:.0f} |"
        )
    atomic_write_text(work_dir / "results.json", json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
