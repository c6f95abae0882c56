"""Recurrence-vote settings at catalogue scale, chosen on a training-type catalogue.

    .venv/bin/python benchmarks/bench_votes_tune.py --distractors 20000 \
        --variant nb200 neighbours=200 --variant band32 band=32

The catalogue is the distractors of ``bench_catalogue.py`` alone (recordings of
*training-split* works; never the test corpora), as in ``bench_catalogue_tune.py``; each of
``--queries`` seeded distractors is a query against all of them (itself excluded). One
recurrence index (default ``RecurrenceParams``, the c3 view) is built, and each query
searches it once with ``--search-neighbours`` neighbours (HNSW ``ef_search`` as many), at
its tempo rates (``--query-rates``) with every ``--query-stride``-th shingle.
Every row then scores *those same neighbour lists* with the default settings or a
``--variant NAME FIELD=VALUE[,FIELD=VALUE]`` of the voting fields
(:data:`VOTING_FIELDS`; ``neighbours`` up to the searched count), so rows differ only in
how the votes are counted, never in the search.

Columns: MAP and recall at K of the votes alone; the first stage's shortlist recall at K
(the votes fused with the shipped model's embedding and its projected 2D Fourier summary
as the two-stage search fuses them, ``coverhunter.rerank.cascade_shortlist``), K the
two-stage shortlist at this catalogue size; milliseconds of one thread per query to score
the lists. The search itself (index build, ms per query) is logged once.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # one thread: comparable milliseconds

import argparse  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import bench_catalogue as B  # noqa: E402
import numpy as np  # noqa: E402
from common import add_search_arguments, parse_variant, search_params  # noqa: E402

from coverhunter import rerank as R  # noqa: E402
from coverhunter.classical import chroma_from_uint8  # noqa: E402
from coverhunter.index.recurrence import RecurrenceIndex, RecurrenceParams  # noqa: E402
from coverhunter.metrics import evaluate_distances, recall_at  # noqa: E402

log = logging.getLogger("bench_votes_tune")

# the RecurrenceParams fields a row may change: how the neighbour lists are counted
VOTING_FIELDS = (
    "neighbours",
    "band",
    "slopes",
    "vote",
    "hub_power",
    "one_vote",
    "length_power",
    "key_groups",
)


def check_variant(name: str, p: RecurrenceParams, searched: int, base=RecurrenceParams()) -> None:
    """A variant of the search settings ``base`` may only change the voting, with no more
    neighbours than were searched."""
    changed = [f for f in base.__dataclass_fields__ if getattr(p, f) != getattr(base, f)]
    bad = [f for f in changed if f not in VOTING_FIELDS]
    if bad:
        raise SystemExit(f"--variant {name}: {bad} change the search, not the voting ({VOTING_FIELDS})")
    if p.neighbours > searched:
        raise SystemExit(f"--variant {name}: neighbours {p.neighbours} > --search-neighbours {searched}")


def neighbour_lists(
    cat, queries: np.ndarray, exclude: np.ndarray, searched: int, base: RecurrenceParams = RecurrenceParams()
) -> tuple[RecurrenceIndex, list]:
    """The catalogue's recurrence index (settings ``base``) and each query's searches, one
    per tempo rate (``RecurrenceIndex.rate_searches``): (similarities, shingle ids,
    frames, rolls) with ``searched`` neighbours."""
    c3 = [chroma_from_uint8(c)[:, B.SEARCH] for c in cat.chromas]
    idx = RecurrenceIndex(base)
    t0 = time.process_time()
    idx.add(np.arange(len(cat)), c3)
    idx.hub_counts()  # with the default neighbours, as an index keeps it
    log.info("recurrence index of %d shingles built in %.0f s", idx.n_shingles, time.process_time() - t0)
    default = idx.params
    idx.params = replace(default, neighbours=searched, ef_search=max(searched, default.ef_search))
    lists = []
    t0 = time.process_time()
    for r, q in enumerate(queries):  # one search per tempo rate of the query
        lists.append(idx.rate_searches(c3[q], B.excluded_range(exclude[r], idx.starts, q)))
    log.info(
        "%d neighbours: %.1f ms a query", searched, (time.process_time() - t0) / max(len(queries), 1) * 1e3
    )
    idx.params = default
    return idx, lists


def score_rows(idx, lists, variants, works, queries, exclude, d_embed, d_sum) -> list[dict]:
    """One row per (name, RecurrenceParams): votes-alone MAP and R@K, the fused first
    stage's shortlist recall at K, scoring ms a query."""
    n = len(works)
    k = R.shortlist_length(R.RerankConfig(), n)
    fixed = R.for_catalogue(R.RerankConfig(), n)
    qworks = works[queries]
    rows = []
    for name, p in variants:
        t0 = time.process_time()
        votes = np.stack([_best_rate(idx, searches, p) for searches in lists])
        ms = (time.process_time() - t0) / max(len(queries), 1) * 1e3
        votes[exclude] = 0
        glob = R.first_stage_searches("both", votes, d_sum)
        lists_k = [R.cascade_shortlist(d_embed[r], glob[r], fixed, exclude[r]) for r in range(len(queries))]
        rows.append(
            {
                "name": name,
                "map": evaluate_distances(-votes, qworks, works, exclude=exclude).map,
                "recall": recall_at(-votes, qworks, works, k, exclude),
                "shortlist_recall": B.shortlist_recall(lists_k, qworks, works, exclude),
                "ms": ms,
                "k": k,
            }
        )
        log.info("%s: %s", name, rows[-1])
    return rows


def _best_rate(idx, searches: list, p: RecurrenceParams) -> np.ndarray:
    scores = [idx.scores_from_neighbours(s, i, f, r, p) for s, i, f, r in searches]
    return np.max(scores, axis=0) if scores else np.zeros(len(idx))


def format_rows(rows: list[dict]) -> str:
    k = rows[0]["k"] if rows else 0
    out = [
        f"| votes | MAP | R@{k} | first stage's shortlist recall at {k} | ms / query (scoring) |",
        "|---|---|---|---|---|",
    ]
    out += [
        f"| {r['name']} | {r['map']:.4f} | {r['recall']:.4f} | {r['shortlist_recall']:.4f} | {r['ms']:.1f} |"
        for r in rows
    ]
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--distractors", type=int, default=20000)
    ap.add_argument(
        "--distractor-offset", type=int, default=0, metavar="N", help="the distractors from the (N+1)-th on"
    )
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--search-neighbours", type=int, default=200, metavar="N")
    add_search_arguments(ap)
    ap.add_argument("--model", type=Path, default=B.MODEL)
    ap.add_argument("--out", type=Path, default=B.OUT)
    ap.add_argument("--variant", nargs=2, action="append", default=[], metavar=("NAME", "FIELD=VALUE"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    base = search_params(args)  # the search: default, or the rates and stride asked for
    variants = [("default", base)]
    variants += [parse_variant(n, t, base) for n, t in args.variant]
    for name, p in variants:
        check_variant(name, p, args.search_neighbours, base)

    cat, lm = B.distractor_catalogue(args.out, args.distractors, args.model, args.distractor_offset)
    queries = B.query_sample(len(cat), args.queries, args.seed)
    exclude = B.self_mask(queries, len(cat))
    works = np.asarray(cat.works)
    d_embed, _ = B.embedding_search(cat, queries, lm.config.eval.distance)
    d_sum, _, _ = B.summary_search(cat, queries, lm.summary_projection)
    idx, lists = neighbour_lists(cat, queries, exclude, args.search_neighbours, base)
    rows = score_rows(idx, lists, variants, works, queries, exclude, d_embed, d_sum)
    print(
        f"training-type catalogue: {len(cat)} distractor recordings of {len(set(cat.works))} works; "
        f"{len(queries)} queries (self excluded); each searched once with {args.search_neighbours} "
        f"neighbours, query stride {base.query_stride}, tempo rates {base.query_rates}\n\n"
        f"{format_rows(rows)}"
    )


if __name__ == "__main__":
    main()
