"""The two-stage search's settings at catalogue scale, chosen on a training-type catalogue.

    .venv/bin/python benchmarks/bench_catalogue_tune.py --distractors 5000 \
        --variant top100 expansion_top=100 --variant top50 expansion_top=50

The catalogue is the distractors of ``bench_catalogue.py`` alone (recordings of
*training-split* works, made by ``bench_catalogue.py --generate-only``; never the test
corpora), each of ``--queries`` seeded distractors a query against all of them (itself
excluded): the place to choose a setting that only shows at scale (how far the shortlist
grows, how many items the anchor re-scores) without looking at the test works.

Rows: the default ``RerankConfig`` and each ``--variant NAME FIELD=VALUE[,FIELD=VALUE]``
(fields of :class:`coverhunter.rerank.RerankConfig`), each run as ``bench_catalogue.py``
runs the two-stage search (``two_stage_search``: ``--model``'s embedding (another model's
than the stored one computed once, ``bench_catalogue.py --model``), its projected 2D
Fourier summary, the default recurrence votes, each query alone); MAP over
all queries, and over every fifth query beside all-pairs alignment of those
(``alignment_search``); the first stage's recall (the mean share of a query's covers in
its shortlist, and among the items the coarse pass leaves to the full alignment, over
every fifth query: the all-pairs row gives the alignment's own top of those two lengths
for the default settings); alignments and CPU milliseconds of one thread per query. The
recurrence votes and the all-pairs scores are kept under ``--out`` (``tune-*.npz``, keyed
by the catalogue, the queries and the votes' or alignment's settings) and reused by a later
run with the same ones.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # one thread: comparable milliseconds

import argparse  # noqa: E402
import hashlib  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import bench_catalogue as B  # noqa: E402
import numpy as np  # noqa: E402
from common import cached, parse_variant  # noqa: E402

from coverhunter import rerank as R  # noqa: E402
from coverhunter.index.recurrence import RecurrenceParams  # noqa: E402
from coverhunter.metrics import evaluate_distances  # noqa: E402
from coverhunter.qmax import QmaxParams  # noqa: E402
from coverhunter.reranker import reference_index  # noqa: E402

log = logging.getLogger("bench_catalogue_tune")


def own_top(dist: np.ndarray, exclude: np.ndarray, k: int) -> list:
    """Each row's ``k`` nearest items, the excluded ones left out (all-pairs alignment's
    own shortlist of that length)."""
    return [R.shortlist(row, k, ex) for row, ex in zip(dist, exclude)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--distractors", type=int, default=5000)
    ap.add_argument(
        "--distractor-offset", type=int, default=0, metavar="N", help="the distractors from the (N+1)-th on"
    )
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, default=B.MODEL)
    ap.add_argument("--out", type=Path, default=B.OUT)
    ap.add_argument("--variant", nargs=2, action="append", default=[], metavar=("NAME", "FIELD=VALUE"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    variants = [("default", R.RerankConfig())] + [parse_variant(n, t) for n, t in args.variant]
    cat, lm = B.distractor_catalogue(args.out, args.distractors, args.model, args.distractor_offset)
    n = len(cat)
    queries = B.query_sample(n, args.queries, args.seed)
    exclude = B.self_mask(queries, n)
    works = np.asarray(cat.works)
    d_embed, _ = B.embedding_search(cat, queries, lm.config.eval.distance)
    _, summ, _ = B.summary_search(cat, queries, lm.summary_projection)
    tag = f"d{n}-q{len(queries)}-s{args.seed}"

    def key(*parts) -> str:  # the catalogue, the queries and the settings a cache holds
        return hashlib.sha256(repr([cat.track_ids.tolist(), *parts]).encode()).hexdigest()[:16]

    votes, _ = cached(
        args.out / f"tune-votes-{tag}.npz",
        key(queries.tolist(), repr(RecurrenceParams())),
        lambda: -B.recurrence_search(cat, queries, exclude)[0],
    )
    sub = np.arange(0, len(queries), 5)
    d_align, _ = cached(
        args.out / f"tune-allpairs-{tag}.npz",
        key(queries[sub].tolist(), repr(QmaxParams())),
        lambda: B.alignment_search(cat, queries[sub])[0],
    )

    def map_of(dist, rows) -> float:
        return evaluate_distances(dist, works[queries[rows]], works, exclude=exclude[rows]).map

    def recall_of(lists, rows) -> float:  # lists: one per query row in ``rows``
        return B.shortlist_recall(lists, works[queries[rows]], works, exclude[rows])

    grown = R.for_catalogue(R.RerankConfig(), n)  # the default shortlist and coarse cut here
    k_default, k_full = grown.k, R.coarse_count(grown, grown.k)
    print(
        f"training-type catalogue: {n} distractor recordings of {len(set(cat.works))} works; "
        f"{len(queries)} queries (self excluded); shortlist {k_default}, {k_full} of it aligned in full\n"
    )
    print(
        f"| two-stage | MAP | MAP, {len(sub)} queries | recall: shortlist / aligned in full | "
        f"the same, {len(sub)} queries | alignments / query (coarse) | ms / query |"
    )
    print("|---|---|---|---|---|---|---|")
    own = [recall_of(own_top(d_align, exclude[sub], k), sub) for k in (k_default, k_full)]
    print(
        f"| all-pairs alignment (its own top {k_default} / {k_full}) | | {map_of(d_align, sub):.4f} | | "
        f"{own[0]:.4f} / {own[1]:.4f} | {n - 1} | |"
    )
    rec_index = []  # the catalogue's recurrence index for the anchors' votes, built once
    for name, rr in variants:
        if rr.expand > 0 and rr.expand_votes > 0 and not rec_index:
            rec_index.append(reference_index(cat.align, "cqt|c3"))
        index = rec_index[0] if rec_index else None
        dist, info, lists = B.two_stage_search(cat, queries, d_embed, summ, votes, exclude, rr, index)
        full = info["aligned"]
        every = np.arange(len(queries))
        coarse = f" ({info['coarse_per_query']:.0f})" if info["coarse_per_query"] else ""
        print(
            f"| {name} | {map_of(dist, every):.4f} | {map_of(dist[sub], sub):.4f} | "
            f"{recall_of(lists, every):.4f} / {recall_of(full, every):.4f} | "
            f"{recall_of([lists[r] for r in sub], sub):.4f} / {recall_of([full[r] for r in sub], sub):.4f} | "
            f"{info['alignments_per_query']:.0f}{coarse} | {info['ms']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
