"""Accuracy on held-out music: classical baselines, the shipped model, and the two-stage search.

    .venv/bin/python benchmarks/bench_accuracy.py [--works 60] [--versions 4 8] [--model PATH]
    .venv/bin/python benchmarks/bench_accuracy.py --tune      # choose the fusion weight (train-type data)
    .venv/bin/python benchmarks/bench_accuracy.py --standin   # tiny demo corpus (not held out)

One run, one table. The test corpus comes from ``coverhunter.corpus.make_corpus(split="test")``:
works reserved for testing (never in any training corpus), rendered with the held-out test
soundfont, its versions re-harmonised (``harmony_kept=0``, the corpus of earlier releases);
the same works with every version keeping the work's harmony (``harmony_kept=1``); and a
corpus with ``arrangement_only=True`` (versions share key, tempo and
structure; only the arrangement and sound differ) shows what each method gets from the
arrangement alone. Features come from ``coverhunter.extract``; every recording is a query
against all others (self excluded); metrics are ``coverhunter.metrics`` (MAP, MR1, HR@1 =
hit rate) with bootstrap 95 % intervals over queries.

Methods (seconds = CPU time on one thread, from CQT features to the distance matrix;
process time, so other jobs on the machine do not inflate it):

- chance: a random distance matrix;
- classical global: chroma -> 2D Fourier magnitude (Bertin-Mahieux & Ellis 2012), Euclidean;
- classical alignment: chroma -> OTI + cross-recurrence + Qmax (Serra et al. 2009), all pairs;
- model: the shipped model's embeddings (``--model``), the evaluator's distance;
- model + re-rank: the model's distances, each query's top ``--k`` re-ordered by
  ``coverhunter.rerank`` (chroma Qmax; and the model's own short-chunk Qmax);
- model + 2DFTM shortlist + chroma Qmax: the two-stage search as ``identify`` runs it:
  the ``--k`` to align are chosen among the embedding's top ``pool`` and the 2D Fourier
  summary's top ``global_pool`` (two vector searches), by the fused embedding and summary
  score (``coverhunter.rerank.cascade_shortlist``);
- the same + expansion: the two-stage search as ``evaluate --rerank`` runs it
  (``coverhunter.reranker.Reranker``, the same code): the best-aligned recording's summary
  neighbours join the shortlist, and its own alignment with each item is added to the
  fusion (``coverhunter.rerank.anchor_expansion``). This row is the one the target is
  checked on. Its shortlist grows with the catalogue beyond ``--grow-after`` recordings
  (``coverhunter.rerank.shortlist_length``); when it did, a row with the shortlist fixed
  at ``--k`` follows. Like the all-pairs baseline, it aligns a pair met from both sides once
  (``Reranker.symmetric``); the per-query cost line counts every alignment a query
  asks for, as one query alone against a catalogue pays them.

``--tune`` renders a small *training-type* corpus (``split="train"``, another seed), and
prints the MAP of each fusion weight there, then of each expansion setting (``--expand``,
``--expansion-weights``); the defaults in ``coverhunter.rerank`` are chosen from those
tables, never from the test corpus. The fusion and expansion tables leave out the works
the model trained on (``--keep-trained-works`` keeps them). ``--tune --tune-chroma``
prints instead the all-pairs alignment's MAP for chroma variants
(``coverhunter.classical.chroma_from_cqt``'s lowest octave and power), which chose
``coverhunter.classical.CHROMA_PARAMS``, and ``--tune --tune-qmax`` the same for
alignment settings (``coverhunter.qmax.QmaxParams``: m, tau, kappa, gap onset and
extension), which chose its defaults. ``--tune --tune-spec SPEC ...`` runs the default
two-stage search with each alignment chroma spec (``coverhunter.chroma.CHROMA_SPEC``
first: the votes search each spec's first fine view); the corpus must hold the specs'
views (``chroma_views`` in its ``hparams.yaml``, then ``extract``: chroma only).
``--tune-data LIST`` tunes on any extracted
dataset list instead (e.g. ``runs/corpus-v2/val-extra/full.txt``: a larger catalogue,
where the first stage misses more).

``--works 300`` measures the same on a catalogue five times larger (1,834 recordings;
about 30 minutes, most of it the all-pairs alignment).

The rendered corpora, their features and the results (``results-w60.json`` for
``--works 60``) live under ``--out`` (default runs/bench_accuracy, git-ignored) and the
corpora are reused.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # every method on one thread: comparable seconds

import argparse  # noqa: E402
import hashlib  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import cached, coarse_view, model_embeddings, reranked, timed  # noqa: E402

from coverhunter import alignment_inputs as AI  # noqa: E402
from coverhunter import classical as C  # noqa: E402
from coverhunter import qmax as Q  # noqa: E402
from coverhunter import rerank as R  # noqa: E402
from coverhunter import reranker as RK  # noqa: E402
from coverhunter.checkpoint import load_model  # noqa: E402
from coverhunter.chroma import CHROMA_SPEC  # noqa: E402
from coverhunter.config import ExtractConfig  # noqa: E402
from coverhunter.dataset import read_dataset  # noqa: E402
from coverhunter.embed import distance_matrix  # noqa: E402
from coverhunter.extract import extract_features  # noqa: E402
from coverhunter.index.recurrence import RecurrenceParams  # noqa: E402
from coverhunter.metrics import evaluate_distances, self_exclusion  # noqa: E402

log = logging.getLogger("bench_accuracy")
# the two-stage search of `evaluate --rerank` and `identify`: shortlist from the embedding's
# top `pool` with the 2D Fourier summary, chroma Qmax, fusion (coverhunter.rerank defaults)
TWO_STAGE = "model + {first} shortlist ({k} of top {pool} + {first} top {gpool}) + chroma Qmax"
EXPANDED = TWO_STAGE + " + expansion ({expand}, weight {ew})"
# the first stage's chroma search (coverhunter.rerank.FIRST_STAGES) as the tables name it
FIRST_NAMES = {"summary": "2DFTM", "recurrence": "recurrence", "both": "recurrence + 2DFTM"}


def first_name(first: str, scanning: bool) -> str:
    """A first stage's name in the tables; ``scanning``: the scan beside its votes."""
    name = FIRST_NAMES[first]
    return name.replace("recurrence", "recurrence + scan") if scanning else name


TARGET_GAIN, TARGET_COST = 0.10, 0.2  # issue 10: >= +10 % MAP over alignment at <= 1/5 of its compute


# ---------------------------------------------------------------------------
# corpora


def has_test_corpus_api() -> bool:
    try:
        from coverhunter.corpus import make_corpus
    except ImportError:
        return False
    return "split" in inspect.signature(make_corpus).parameters


def render(
    out: Path,
    *,
    works: int,
    versions,
    seed: int,
    split: str,
    arrangement_only: bool,
    standin: bool,
    workers: int,
    harmony_kept: float | None = None,
) -> list:
    """Rendered (cached) corpus with features; returns its tracks (no tempo copies).
    ``harmony_kept``: the share of versions keeping the work's harmony (None: the corpus
    default, the mix)."""
    if not (out / "dataset.txt").is_file():
        if standin:
            from coverhunter.corpus import make_demo_corpus

            make_demo_corpus(out, works=works, versions=int(versions[0]), seed=seed, num_workers=workers)
        else:
            from coverhunter.corpus import make_corpus

            kw = {} if harmony_kept is None else {"harmony_kept": harmony_kept}
            make_corpus(
                out,
                works=works,
                versions=tuple(versions),
                seed=seed,
                split=split,
                arrangement_only=arrangement_only,
                num_workers=workers,
                **kw,
            )
    rep = extract_features(out, config=ExtractConfig(), num_workers=workers or None, verbose=True)
    if rep.failed:
        log.warning("%s: %d recordings failed extraction (left out)", out, len(rep.failed))
    return [t for t in read_dataset(out / "full.txt", check_features=True) if "source_utt" not in t.extra]


# ---------------------------------------------------------------------------
# methods: each returns (distance matrix, seconds)


def chroma_of(tracks, spec: str = CHROMA_SPEC) -> list:
    return [AI.alignment_features(t.feat, spec) for t in tracks]


def global_distances(align, projection=None) -> np.ndarray:
    """2D Fourier summary distances; ``projection``: the model's fitted summary projection."""
    s = AI.global_summaries(align, projection)
    return C.euclidean_distances(s, s)


def model_distances(lm, tracks, device) -> np.ndarray:
    e = model_embeddings(lm, [t.feat for t in tracks], device)
    return distance_matrix(e, e, lm.config.eval.distance)


def first_stage_glob(
    rr: R.RerankConfig, d_sum: np.ndarray, votes: np.ndarray, scan: np.ndarray | None = None
) -> np.ndarray:
    """The chroma searches' distances the shortlist is chosen with, as ``Reranker`` makes
    them (:func:`coverhunter.rerank.first_stage_searches`; ``scan``: where it scans):
    (n, n_searches, n)."""
    return R.first_stage_searches(rr.first_stage, votes, d_sum, scan)


def shortlist_recall(lists: list, works: list) -> float:
    """Mean over queries (with a cover) of the share of its covers in its shortlist."""
    works = np.asarray(works)
    rec = []
    for q, (sl, *_) in enumerate(lists):
        n = int((works == works[q]).sum()) - 1
        if n:
            rec.append(float((works[sl] == works[q]).sum()) / n)
    return float(np.mean(rec)) if rec else float("nan")


def top_recall(dist: np.ndarray, works: list, k: int) -> float:
    """Recall at ``k`` of a distance matrix, every recording a query against the others:
    what all-pairs alignment puts in its own top ``k`` (the first stage's reference)."""
    d = np.array(dist, np.float64)
    np.fill_diagonal(d, np.inf)
    lists = [(np.argsort(row, kind="stable")[:k], None, None) for row in d]
    return shortlist_recall(lists, works)


def shortlist_scores(
    dist: np.ndarray, glob: np.ndarray | None, score_fn, rr: R.RerankConfig, coarse_fn=None
) -> list:
    """Per query: (shortlist indices, first-stage distances, alignment scores, the
    shortlist's tail); self excluded.

    The shortlist is :func:`coverhunter.rerank.cascade_shortlist` (``glob``: 2D Fourier
    summary distances, None for the plain embedding top k), and the first-stage distances
    what the alignment is fused with (:func:`coverhunter.rerank.first_stage_distances`).
    With ``rr.coarse_keep`` > 0 and ``coarse_fn`` ((q, indices) -> coarse scores), the
    coarse pass (:func:`coverhunter.rerank.coarse_split`) keeps the items aligned in full
    and the rest is the tail, placed after them in the coarse pass's order, as rerank_row
    does; the tail is empty without it."""
    out = []
    rr = R.for_catalogue(rr, dist.shape[1])  # the shortlist length of this catalogue, as rerank_row
    for q in range(len(dist)):
        ex = np.zeros(dist.shape[1], bool)
        ex[q] = True
        sl = R.cascade_shortlist(dist[q], None if glob is None else glob[q], rr, ex)

        def first(items, q=q):
            return R.first_stage_distances(dist[q, items], None if glob is None else glob[q][..., items], rr)

        sl, tail = R.coarse_split(
            sl, first, None if coarse_fn is None else (lambda items, q=q: coarse_fn(q, items)), rr
        )
        out.append((sl, first(sl), score_fn(q, sl), tail))
    return out


def whole_shortlists(lists: list) -> list:
    """``lists`` with each shortlist whole again (the coarse pass's tail appended): what the
    first stage delivered, for its recall."""
    return [(np.concatenate([sl, tail]), None, None) for sl, _, _, tail in lists]


def apply_rerank(dist: np.ndarray, lists: list, weight: float) -> np.ndarray:
    """Re-ordered distance matrix from precomputed shortlist scores (same as rerank_row)."""
    out = np.empty_like(dist)
    for q, (sl, first, sc, tail) in enumerate(lists):
        head = np.concatenate([sl[np.argsort(-R.fuse(first, sc, weight), kind="stable")], tail])
        out[q] = R.reordered_distances(dist[q], head)
    return out


def chunk_scorer(lm, tracks, device, rr: R.RerankConfig):
    chunks, secs = timed(
        RK.chunk_embeddings, lm.model, [t.feat for t in tracks], lm.config, rr, device=device
    )
    return (lambda q, sl: Q.qmax_sequences(chunks[q], [chunks[j] for j in sl], rr.chunk_qmax)), secs


def chroma_scorer(align, rr: R.RerankConfig):
    return lambda q, sl: Q.qmax_scores(align[q], [align[j] for j in sl], rr.qmax)


def coarse_scorer(align, rr: R.RerankConfig, scan: np.ndarray | None = None):
    """The coarse pass's scores, (q, indices) -> coarse Qmax (``Reranker.coarse_scores``),
    on the view of the alignment chroma that recurrence voting searches; ``scan`` (n, n):
    the scan's scores, read instead of aligning, as ``Reranker`` reads them."""
    if scan is not None:
        return lambda q, sl: scan[q, sl]
    view = coarse_view(align)
    coarse = [a.coarse(rr.coarse_block, view) for a in align] if rr.coarse_keep > 0 else []
    return lambda q, sl: Q.qmax_scores(coarse[q], [coarse[j] for j in sl], rr.coarse_qmax)


# ---------------------------------------------------------------------------
# one corpus -> rows of the table


def metrics(dist: np.ndarray, works: list, n_boot: int) -> dict:
    rep = evaluate_distances(dist, works, works, exclude=self_exclusion(len(works)), bootstrap=n_boot)
    return {
        "map": rep.map,
        "mr1": rep.mr1,
        "hr1": rep.hit_rate,
        "n_queries": rep.n_queries,
        "ci": {"map": rep.ci.get("map"), "mr1": rep.ci.get("mr1"), "hr1": rep.ci.get("hit_rate")},
    }


def pools_name(first: str, rr: R.RerankConfig, n: int) -> dict:
    """What a two-stage row's name says of its first stage in a catalogue of ``n``
    recordings: the shortlist length and each search's candidates, as
    :func:`coverhunter.rerank.for_catalogue` grows them."""
    grown = R.for_catalogue(rr, n)
    return dict(
        first=first_name(first, R.scans(rr, n)),
        k=grown.k,
        pool=max(grown.k, grown.pool),
        gpool=grown.global_pool,
    )


def run_corpus(
    tracks,
    lm,
    device,
    k: int,
    weight: float,
    n_boot: int,
    grow_after: int = R.DEFAULT_GROW_AFTER,
    cache_dir: Path | None = None,
    scan_below: int = R.DEFAULT_SCAN_BELOW,
) -> dict:
    """Every row of one test set's table. ``cache_dir``: where the all-pairs alignment and
    the recurrence votes are kept (the corpus folder), keyed by the tracks and settings;
    ``scan_below``: ``RerankConfig.scan_below`` of the two-stage rows (a catalogue of at
    most that many recordings is scanned beside the votes: their names say "scan")."""
    works = [t.work for t in tracks]
    rows = {}
    rng = np.random.default_rng(0)
    rows["chance"] = (rng.random((len(tracks), len(tracks))), 0.0)
    align, t_chroma = timed(chroma_of, tracks)
    d_glob, t_glob = timed(global_distances, align)
    rows["classical global (2DFTM)"] = (d_glob, t_chroma + t_glob)

    # "compiled recursion": results kept by the numpy recursion (same scores) carry its seconds;
    # each cache is keyed by what it depends on (the votes' settings do not change the alignment)
    def cache_key(*settings) -> str:
        ids = [t.track_id for t in tracks]
        return hashlib.sha256(json.dumps([ids, CHROMA_SPEC, *settings]).encode()).hexdigest()[:16]

    d, t = cached(
        None if cache_dir is None else cache_dir / "bench-qmax-all-pairs.npz",
        cache_key(repr(Q.QmaxParams()), "compiled recursion"),
        lambda: Q.alignment_distance_matrix(align, Q.QmaxParams(), verbose=True),
    )
    rows["classical alignment (Qmax, all pairs)"] = (d, t_chroma + t)
    d_align = d
    t_align, t_pairs = t_chroma + t, t
    d_model, t_model = timed(model_distances, lm, tracks, device)
    rows["model"] = (d_model, t_model)
    plain = R.RerankConfig(k=k, weight=weight, pool=k, grow_after=0)  # the model's top k, always
    lists, t = timed(shortlist_scores, d_model, None, chroma_scorer(align, plain), plain)
    d, t2 = timed(apply_rerank, d_model, lists, weight)
    rows[f"model + re-rank top {k} (chroma Qmax)"] = (d, t_model + t_chroma + t + t2)
    summaries, t_sum = timed(AI.global_summaries, align, lm.summary_projection)  # as identify does
    d_sum = C.euclidean_distances(summaries, summaries)
    votes, t_votes = cached(
        None if cache_dir is None else cache_dir / "bench-recurrence-votes.npz",
        cache_key(repr(RecurrenceParams())),
        lambda: RK.recurrence_votes(align, None, CHROMA_SPEC, True),
    )
    # a catalogue this small also scanned (rerank.scans): every pair aligned coarsely once
    scanning = R.scans(R.RerankConfig(k=k, grow_after=grow_after, scan_below=scan_below), len(tracks))
    scan, t_scan = None, 0.0
    if scanning:
        base = R.RerankConfig()
        scan, t_scan = cached(
            None if cache_dir is None else cache_dir / "bench-scan.npz",
            cache_key(repr(base.coarse_qmax), base.coarse_block, "scan"),
            lambda: RK.coarse_scan(align, None, base, coarse_view(align)),
        )
    recall = {}
    # the two-stage search with each first stage; the default one last (its cost is reported)
    for first in sorted(R.FIRST_STAGES, key=lambda f: f == R.DEFAULT_FIRST_STAGE):
        rr = R.RerankConfig(
            k=k, weight=weight, grow_after=grow_after, first_stage=first, scan_below=scan_below
        )
        grown = R.for_catalogue(rr, len(tracks))  # this catalogue's shortlist and coarse cut
        k_used = grown.k
        on = R.scans(rr, len(tracks))
        glob = first_stage_glob(rr, d_sum, votes, scan if on else None)
        t_glob = t_sum + ((t_votes + (t_scan if on else 0.0)) if first in ("recurrence", "both") else 0.0)
        name = pools_name(first, rr, len(tracks))
        coarse = coarse_scorer(align, rr, scan if on else None)
        lists, t = timed(shortlist_scores, d_model, glob, chroma_scorer(align, rr), rr, coarse)
        first_key = name["first"] if on else first  # a scanned stage's key is its name
        recall[first_key] = shortlist_recall(whole_shortlists(lists), works)
        recall["alignment"] = top_recall(d_align, works, k_used)
        k_full = R.coarse_count(grown, k_used)
        if k_full < k_used:  # what the full alignment gets: the coarse pass's best share
            recall[f"{first_key}, after the coarse pass"] = shortlist_recall(lists, works)
            recall[f"alignment at {k_full}"] = top_recall(d_align, works, k_full)
        d, t2 = timed(apply_rerank, d_model, lists, weight)
        rows[TWO_STAGE.format(**name) + ", no expansion (identify)"] = (
            d,
            t_model + t_chroma + t_glob + t + t2,
        )
        (d, rk), t = timed(reranked, d_model, align, summaries, rr, votes, scan if on else None)
        rows[EXPANDED.format(**name, expand=rr.expand, ew=rr.expansion_weight)] = (
            d,
            t_model + t_chroma + t_glob + t,
        )
        t_rerank = t_glob + t
        # one query alone shares no pairs: its re-ranking costs every alignment it asks for
        t_rerank_alone = t_glob + t * rk.n_pairs / max(1, rk.n_computed)
        if on:  # the same for the scan: each pair was aligned once, a query alone aligns all
            t_rerank_alone += t_scan
        if k_used != k:  # the catalogue grew the shortlist: what a fixed k would give
            fixed = R.RerankConfig(k=k, weight=weight, grow_after=0, first_stage=first, scan_below=scan_below)
            (d, _), t = timed(reranked, d_model, align, summaries, fixed, votes, scan if on else None)
            rows[
                EXPANDED.format(
                    **pools_name(first, fixed, len(tracks)), expand=rr.expand, ew=rr.expansion_weight
                )
                + ", shortlist not grown"
            ] = (d, t_model + t_chroma + t_glob + t)
    scorer, t_emb = chunk_scorer(lm, tracks, device, plain)
    lists, t = timed(shortlist_scores, d_model, None, scorer, plain)
    d, t2 = timed(apply_rerank, d_model, lists, weight)
    rows[f"model + re-rank top {k} (short-chunk Qmax)"] = (d, t_model + t_emb + t + t2)
    n = len(tracks)
    out = {
        "n_tracks": n,
        "n_works": len(set(works)),
        "rows": {},
        "k_used": k_used,
        "shortlist_recall": recall,
        "recurrence_seconds_per_query": t_votes / n,
        "scanned": scanning,
        "scan_seconds_per_query": t_scan / n,
        "rerank_seconds_per_query": t_rerank / n,
        "alignments_per_query": rk.n_pairs / n,
        "alignments_computed_per_query": rk.n_computed / n,
        "alignment_seconds_per_query": t_align / n,
        # per query: what does not grow with the catalogue, and what each reference adds
        "two_stage_fixed_seconds": (t_model + t_chroma + t_rerank_alone) / n,
        "alignment_fixed_seconds": t_chroma / n,
        "alignment_seconds_per_reference": t_pairs / (n * max(1, n - 1)),
    }
    for name, (dist, secs) in rows.items():
        out["rows"][name] = {**metrics(dist, works, n_boot), "seconds": secs}
    return out


def fmt_ci(v, ci, digits=3) -> str:
    return f"{v:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else f"{v:.{digits}f}"


def recall_name(key: str) -> str:
    """How the table names a ``shortlist_recall`` entry of :func:`run_corpus`."""
    first, _, after = key.partition(", ")
    if first == "alignment":
        return "all-pairs alignment (its own top k)"
    if first.startswith("alignment at "):
        return f"all-pairs alignment (its own top {first.split()[-1]})"
    return FIRST_NAMES.get(first, first) + (f", {after}" if after else "")


def print_table(title: str, res: dict, k: int) -> None:
    print(
        f"\n{title}: {res['n_tracks']} recordings of {res['n_works']} works, every recording "
        "a query against all others\n"
    )
    print("| method | MAP [95 % CI] | MR1 [95 % CI] | HR@1 [95 % CI] | seconds |")
    print("|---|---|---|---|---|")
    for name, r in res["rows"].items():
        print(
            f"| {name} | {fmt_ci(r['map'], r['ci']['map'])} | {fmt_ci(r['mr1'], r['ci']['mr1'], 2)} | "
            f"{fmt_ci(r['hr1'], r['ci']['hr1'])} | {r['seconds']:.1f} |"
        )
    rows = res["rows"]
    al = rows["classical alignment (Qmax, all pairs)"]
    default_first = first_name(R.DEFAULT_FIRST_STAGE, bool(res.get("scanned")))
    default = TWO_STAGE.split("(")[0].format(first=default_first)
    two = rows[next(n for n in rows if n.startswith(default) and "+ expansion" in n)]
    gain = two["map"] / max(al["map"], 1e-12) - 1
    cost = two["seconds"] / max(al["seconds"], 1e-12)
    ok = "met" if gain >= TARGET_GAIN and cost <= TARGET_COST else "NOT met"
    recall = res.get("shortlist_recall", {})
    if recall:
        print(
            "\nfirst-stage recall (share of a query's covers in the shortlist of "
            f"{res['k_used']}, before expansion): "
            + ", ".join(f"{recall_name(f)} {v:.3f}" for f, v in recall.items())
            + f"; recurrence voting {res['recurrence_seconds_per_query'] * 1e3:.0f} ms per query"
            + (
                f", the scan {res['scan_seconds_per_query'] * 1e3:.0f} ms per query (each pair aligned once)"
                if res.get("scanned")
                else ""
            )
        )
    print(
        f"\ntwo-stage vs classical alignment ({default_first} first stage): "
        f"MAP {gain:+.1%} (target >= +{TARGET_GAIN:.0%}), "
        f"compute x{cost:.2f} (target <= {TARGET_COST}): {ok}. Re-ranking "
        f"{res['rerank_seconds_per_query'] * 1e3:.1f} ms per query ({res['alignments_per_query']:.0f} "
        f"alignments asked, {res['alignments_computed_per_query']:.0f} computed: the others were "
        f"shared by symmetric pairs); all-pairs alignment "
        f"{res['alignment_seconds_per_query'] * 1e3:.1f} ms per query."
    )
    fixed, a_fixed, per_ref = (
        res["two_stage_fixed_seconds"],
        res["alignment_fixed_seconds"],
        res["alignment_seconds_per_reference"],
    )
    n_star = (fixed / TARGET_COST - a_fixed) / max(per_ref, 1e-12)
    print(
        f"Per query, with this catalogue's shortlist of {k}, the two-stage search costs "
        f"{fixed * 1e3:.0f} ms (embedding the query, searching this catalogue's embeddings, "
        f"re-ranking {k} with expansion), all-pairs alignment {a_fixed * 1e3:.1f} ms + "
        f"{per_ref * 1e3:.2f} ms per catalogue recording: at that cost the two-stage search "
        f"costs <= {TARGET_COST} of the alignment's from about {n_star:,.0f} recordings on "
        "(beyond --grow-after recordings the shortlist, and that cost, grow as the square "
        "root of the catalogue)."
    )


# ---------------------------------------------------------------------------
# --tune: fusion weight on training-type data


def unseen(tracks, trained_works) -> list:
    """The recordings of works not in ``trained_works`` (a checkpoint's training works).

    A training-type corpus draws its works from the same split as the model's training
    data, so some of them can be works the model and its summary projection learned; the
    first stage finds those better than new music, and a table tuned on them would favour
    a short shortlist. The alignment-only tables need no such care.
    """
    trained = set(trained_works)
    kept = [t for t in tracks if t.work not in trained]
    works = {t.work for t in tracks}
    if works & trained:
        log.warning(
            "%d of the tuning corpus's %d works are among the model's training works: "
            "their %d recordings are left out (--keep-trained-works keeps them)",
            len(works & trained),
            len(works),
            len(tracks) - len(kept),
        )
    return kept


def tune(
    lm,
    tracks,
    device,
    k: int,
    expand=(0, 10, 25, 40),
    expansion_weights=(0.0, 0.25, 0.5, 1.0),
    expansion_only: bool = False,
    grow_after: int = R.DEFAULT_GROW_AFTER,
) -> dict:
    works = [t.work for t in tracks]
    d_model = model_distances(lm, tracks, device)
    align = chroma_of(tracks)
    summaries = AI.global_summaries(align, lm.summary_projection)
    if expansion_only:
        return {
            "expansion": tune_expansion(
                d_model,
                align,
                summaries,
                works,
                k,
                expand,
                expansion_weights,
                grow_after,
                RK.recurrence_votes(align, None, CHROMA_SPEC, True),
            )
        }
    plain = R.RerankConfig(k=k, pool=k, grow_after=0)
    rr = R.RerankConfig(k=k, grow_after=grow_after)
    no_union = R.RerankConfig(k=k, global_pool=0, global_weight=0.5, grow_after=grow_after)
    d_glob = C.euclidean_distances(summaries, summaries)
    lists = {
        "chroma": shortlist_scores(d_model, None, chroma_scorer(align, plain), plain),
        f"chroma, 2DFTM shortlist of top {rr.pool} (no summary candidates)": shortlist_scores(
            d_model, d_glob, chroma_scorer(align, no_union), no_union
        ),
        f"chroma, 2DFTM shortlist of top {rr.pool} + 2DFTM top {rr.global_pool}": shortlist_scores(
            d_model, d_glob, chroma_scorer(align, rr), rr
        ),
        "short-chunk": shortlist_scores(d_model, None, chunk_scorer(lm, tracks, device, plain)[0], plain),
    }
    weights = np.round(np.arange(0, 1.01, 0.1), 2)
    res = {
        src: {float(w): metrics(apply_rerank(d_model, ls, w), works, 0)["map"] for w in weights}
        for src, ls in lists.items()
    }
    print(
        f"\nfusion weight on a training-type corpus ({len(tracks)} recordings, "
        f"{len(set(works))} works), MAP, top {k}, no expansion:\n"
    )
    print("| weight | " + " | ".join(res) + " |")
    print("|---" * (len(res) + 1) + "|")
    for w in weights:
        print(f"| {w:.1f} | " + " | ".join(f"{res[s][float(w)]:.3f}" for s in res) + " |")
    res["expansion"] = tune_expansion(
        d_model,
        align,
        summaries,
        works,
        k,
        expand,
        expansion_weights,
        grow_after,
        RK.recurrence_votes(align, None, CHROMA_SPEC, True),
    )
    return res


def tune_first_stage(
    lm, tracks, device, k: int, global_weights=(0.5, 0.7, 0.85, 1.0), grow_after: int = R.DEFAULT_GROW_AFTER
) -> dict:
    """Each first stage (2D Fourier summary, recurrence voting) at each weight of its
    chroma search against the embedding (``global_weight``): the shortlist's recall and
    the MAP of the two-stage search with expansion (defaults otherwise)."""
    works = [t.work for t in tracks]
    d_model = model_distances(lm, tracks, device)
    align = chroma_of(tracks)
    summaries = AI.global_summaries(align, lm.summary_projection)
    d_sum = C.euclidean_distances(summaries, summaries)
    votes = RK.recurrence_votes(align, None, CHROMA_SPEC, True)
    res = {}
    print(
        f"\nfirst stage on a training-type corpus ({len(tracks)} recordings, {len(set(works))} works): "
        "shortlist recall / MAP with expansion; columns: weight of the chroma search against "
        "the embedding\n"
    )
    print("| first stage | " + " | ".join(f"{w:g}" for w in global_weights) + " |")
    print("|---" * (len(global_weights) + 1) + "|")
    for first in R.FIRST_STAGES:
        row = {}
        for w in global_weights:
            rr = R.RerankConfig(k=k, global_weight=w, grow_after=grow_after, first_stage=first)
            glob = first_stage_glob(rr, d_sum, votes)
            lists = shortlist_scores(d_model, glob, lambda q, sl: np.zeros(len(sl)), rr)
            d, _ = reranked(d_model, align, summaries, rr, votes)
            recall = shortlist_recall(whole_shortlists(lists), works)
            row[float(w)] = {"recall": recall, "map": metrics(d, works, 0)["map"]}
        res[first] = row
        print(
            f"| {FIRST_NAMES[first]} | "
            + " | ".join(f"{v['recall']:.3f} / {v['map']:.3f}" for v in row.values())
            + " |",
            flush=True,
        )
    return res


def two_stage_point(
    d_model, align, summaries, d_sum, votes, scan, rr: R.RerankConfig, works
) -> tuple[dict, object]:
    """One setting ``rr`` of the two-stage search on a tune corpus, its first stage's
    inputs given (summary distances ``d_sum``, ``votes``, ``scan`` or None): the fused
    shortlist's recall (whole, and of the part aligned in full after the coarse pass), the
    MAP with expansion as ``rr`` says and without (as ``identify`` searches); and the
    re-ranker that ran with expansion (its alignment counts)."""
    glob = first_stage_glob(rr, d_sum, votes, scan)
    coarse = coarse_scorer(align, rr, scan)
    lists = shortlist_scores(d_model, glob, lambda q, sl: np.zeros(len(sl)), rr, coarse)
    d, rk = reranked(d_model, align, summaries, rr, votes, scan)
    plain = replace(rr, expand=0, expansion_weight=0.0)
    d_plain, _ = reranked(d_model, align, summaries, plain, votes, scan)
    return {
        "recall": shortlist_recall(whole_shortlists(lists), works),
        "recall_full": shortlist_recall(lists, works),
        "map": metrics(d, works, 0)["map"],
        "map_no_expansion": metrics(d_plain, works, 0)["map"],
    }, rk


def tune_scan(lm, tracks, device, k: int, limits=(0, 5000), grow_after: int = R.DEFAULT_GROW_AFTER) -> dict:
    """The first stage with and without the scan (``RerankConfig.scan_below`` at each of
    ``limits``; 0 = no scan, the recurrence votes and the summary alone; else the scan
    beside them where the corpus is no larger): the fused shortlist's recall (before and after
    the coarse pass), the MAP of the two-stage search with expansion (defaults otherwise)
    and without (as ``identify`` searches), the alignments a query asks for (with
    expansion) and the first stage's CPU milliseconds a query (votes, and the scan where
    it scans: one query's share of the all-vs-all computation, each pair once)."""
    works = [t.work for t in tracks]
    n = len(tracks)
    d_model = model_distances(lm, tracks, device)
    align = chroma_of(tracks)
    summaries = AI.global_summaries(align, lm.summary_projection)
    d_sum = C.euclidean_distances(summaries, summaries)
    votes, t_votes = timed(RK.recurrence_votes, align, None, CHROMA_SPEC, True)
    scan, t_scan = timed(RK.coarse_scan, align, None, R.RerankConfig(), coarse_view(align))
    k_used = R.shortlist_length(R.RerankConfig(k=k, grow_after=grow_after), n)
    print(
        f"\nthe scan on a training-type corpus ({n} recordings, {len(set(works))} works, shortlist "
        f"{k_used}): shortlist recall (whole / aligned in full), MAP with expansion\n"
    )
    print(
        "| scan_below | scans | recall | MAP | MAP, no expansion | alignments (coarse) / query | "
        "first stage ms / query |"
    )
    print("|---|---|---|---|---|---|---|")
    res = {}
    for limit in limits:
        rr = R.RerankConfig(k=k, grow_after=grow_after, scan_below=limit)
        on = R.scans(rr, n)
        point, rk = two_stage_point(d_model, align, summaries, d_sum, votes, scan if on else None, rr, works)
        q = max(1, rk.n_queries)
        r = res[int(limit)] = {
            "scans": on,
            **point,
            "alignments": rk.n_pairs / q,
            "coarse": rk.n_coarse / q,
            "first_stage_ms": 1e3 * (t_votes + (t_scan if on else 0.0)) / n,
        }
        print(
            f"| {limit} | {'yes' if on else 'no'} | {r['recall']:.4f} / {r['recall_full']:.4f} | "
            f"{r['map']:.4f} | {r['map_no_expansion']:.4f} | {r['alignments']:.0f} ({r['coarse']:.0f}) | "
            f"{r['first_stage_ms']:.1f} |",
            flush=True,
        )
    print(f"\nall-pairs alignment's own top {k_used}: see the tune table of this corpus")
    return res


def tune_spec(lm, tracks, device, k: int, specs=(), grow_after: int = R.DEFAULT_GROW_AFTER) -> dict:
    """The default two-stage search with each alignment chroma spec (the shipped one
    first): the fused shortlist's recall, the MAP with expansion and without (as
    ``identify`` searches), and the all-pairs alignment's MAP on the same chroma (up to
    1,500 recordings). The summary reads each spec's first view; the votes its search view."""
    works = [t.work for t in tracks]
    n = len(tracks)
    d_model = model_distances(lm, tracks, device)
    rr = R.RerankConfig(k=k, grow_after=grow_after)
    print(f"\nalignment chroma on a training-type corpus ({n} recordings, {len(set(works))} works)\n")
    print("| chroma spec | recall | MAP | MAP, no expansion | all-pairs MAP |")
    print("|---|---|---|---|---|")
    res = {}
    for spec in dict.fromkeys((CHROMA_SPEC, *specs)):
        align = chroma_of(tracks, spec)
        summaries = AI.global_summaries(align, lm.summary_projection)
        d_sum = C.euclidean_distances(summaries, summaries)
        votes = RK.recurrence_votes(align, None, spec, True)
        scan = RK.coarse_scan(align, None, rr, coarse_view(align)) if R.scans(rr, n) else None
        point, _ = two_stage_point(d_model, align, summaries, d_sum, votes, scan, rr, works)
        small = n <= 1500  # all pairs of a larger corpus take long
        all_pairs = metrics(Q.alignment_distance_matrix(align), works, 0)["map"] if small else float("nan")
        r = res[spec] = {**point, "all_pairs_map": all_pairs}
        print(
            f"| {spec} | {r['recall']:.4f} | {r['map']:.4f} | {r['map_no_expansion']:.4f} | "
            f"{all_pairs:.4f} |",
            flush=True,
        )
    return res


def tune_coarse(
    lm, tracks, device, k: int, shares=(0.0, 0.5, 0.4, 0.3), grow_after: int = R.DEFAULT_GROW_AFTER
) -> dict:
    """The coarse pass (``RerankConfig.coarse_keep``) at each share of the shortlist aligned
    in full, without its floor (``coarse_min`` 1, so that a small catalogue's shortlist is
    cut too): MAP of the two-stage search with expansion (defaults otherwise), and the
    alignments per query (full, coarse) a single query asks for."""
    works = [t.work for t in tracks]
    d_model = model_distances(lm, tracks, device)
    align = chroma_of(tracks)
    summaries = AI.global_summaries(align, lm.summary_projection)
    votes = RK.recurrence_votes(align, None, CHROMA_SPEC, True)
    k_used = R.shortlist_length(R.RerankConfig(k=k, grow_after=grow_after), len(tracks))
    print(
        f"\ncoarse pass on a training-type corpus ({len(tracks)} recordings, {len(set(works))} works, "
        f"shortlist {k_used}): MAP with expansion, alignments per query (full + coarse)\n"
    )
    print("| share aligned in full | MAP | alignments | coarse alignments |")
    print("|---|---|---|---|")
    res = {}
    for share in shares:
        rr = R.RerankConfig(k=k, grow_after=grow_after, coarse_keep=share, coarse_min=1)
        d, rk = reranked(d_model, align, summaries, rr, votes)
        n = max(1, rk.n_queries)
        res[float(share)] = {
            "map": metrics(d, works, 0)["map"],
            "alignments": rk.n_pairs / n,
            "coarse": rk.n_coarse / n,
        }
        r = res[float(share)]
        print(f"| {share:g} | {r['map']:.4f} | {r['alignments']:.0f} | {r['coarse']:.0f} |", flush=True)
    return res


def tune_expansion(
    d_model,
    align,
    summaries,
    works,
    k: int,
    expand,
    expansion_weights,
    grow_after: int = R.DEFAULT_GROW_AFTER,
    votes: np.ndarray | None = None,
) -> dict:
    """MAP of each expansion setting (recordings added x anchor weight), the shortlist and
    fusion at the defaults; alignments per query in the last column."""
    res = {}
    k_used = R.shortlist_length(R.RerankConfig(k=k, grow_after=grow_after), len(d_model))
    print(
        f"\nexpansion, MAP (top {k_used}, fusion weight {R.DEFAULT_WEIGHT}); rows: recordings "
        "added from the anchor's summary neighbours, columns: weight of the anchor's alignment\n"
    )
    print("| added | " + " | ".join(f"{w:g}" for w in expansion_weights) + " | alignments per query |")
    print("|---" * (len(expansion_weights) + 2) + "|")
    for n in expand:
        row = {}
        for w in expansion_weights:
            cfg = R.RerankConfig(k=k, expand=n, expansion_weight=w, grow_after=grow_after)
            d, rk = reranked(d_model, align, summaries, cfg, votes)
            row[float(w)] = metrics(d, works, 0)["map"]
        res[int(n)] = row
        print(
            f"| {n} | "
            + " | ".join(f"{row[float(w)]:.3f}" for w in expansion_weights)
            + f" | {rk.n_pairs / max(1, rk.n_queries):.0f} |",
            flush=True,
        )
    return res


def tune_chroma(tracks, variants) -> dict:
    """MAP of all-pairs chroma alignment for each chroma (lowest octave, power), and of the
    raw 2D Fourier summary, on a training-type corpus."""
    works = [t.work for t in tracks]
    cqts = [np.load(t.feat) for t in tracks]
    res = {}
    print(f"\nchroma (lowest CQT octave kept, power of the magnitudes), {len(tracks)} recordings, MAP\n")
    print("| lowest octave | power | alignment (Qmax, all pairs) | global (2DFTM) |")
    print("|---|---|---|---|")
    for lowest, power in variants:
        align = [
            Q.AlignmentFeatures.from_chroma(C.chroma_from_cqt(c, lowest_octave=lowest, power=power))
            for c in cqts
        ]
        qmax = metrics(Q.alignment_distance_matrix(align, Q.QmaxParams()), works, 0)["map"]
        glob = metrics(global_distances(align), works, 0)["map"]
        res[f"{lowest},{power:g}"] = {"alignment": qmax, "global": glob}
        print(f"| {lowest} | {power:g} | {qmax:.3f} | {glob:.3f} |", flush=True)
    return res


def tune_qmax(tracks, variants) -> dict:
    """MAP of all-pairs chroma alignment for each alignment setting
    (:class:`coverhunter.qmax.QmaxParams`) on a training-type corpus, with the seconds
    each takes (one thread)."""
    works = [t.work for t in tracks]
    align = chroma_of(tracks)
    res = {}
    print(
        f"\nalignment settings (embedding m, delay tau, neighbours kappa, gap onset, gap extension), "
        f"{len(tracks)} recordings\n"
    )
    print("| m | tau | kappa | gap onset | gap extension | MAP | HR@1 | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for p in variants:
        d, secs = timed(Q.alignment_distance_matrix, align, p)
        m = metrics(d, works, 0)
        res[qmax_name(p)] = {"map": m["map"], "hr1": m["hr1"], "seconds": secs}
        print(
            f"| {p.m} | {p.tau} | {p.kappa:g} | {p.gap_onset:g} | {p.gap_extension:g} | {m['map']:.3f} "
            f"| {m['hr1']:.3f} | {secs:.1f} |",
            flush=True,
        )
    return res


def qmax_name(p: Q.QmaxParams) -> str:
    return f"{p.m},{p.tau},{p.kappa:g},{p.gap_onset:g},{p.gap_extension:g}"


def qmax_variant(text: str) -> Q.QmaxParams:
    """'M,TAU,KAPPA,ONSET,EXTENSION' -> QmaxParams."""
    try:
        m, tau, kappa, onset, ext = text.split(",")
        return Q.QmaxParams(
            m=int(m), tau=int(tau), kappa=float(kappa), gap_onset=float(onset), gap_extension=float(ext)
        )
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected M,TAU,KAPPA,ONSET,EXTENSION, got {text!r}") from None


def chroma_variant(text: str) -> tuple:
    lowest, power = text.split(",")
    return int(lowest), float(power)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--works", type=int, default=60, help="test works (default 60)")
    ap.add_argument("--arrangement-works", type=int, default=30, help="works of the arrangement-only set")
    ap.add_argument(
        "--sets",
        nargs="+",
        choices=["test", "kept", "arr"],
        default=["test", "kept", "arr"],
        help="test sets to measure: re-harmonised, harmony kept, arrangement only (default all)",
    )
    ap.add_argument("--versions", type=int, nargs=2, default=[4, 8], metavar=("MIN", "MAX"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, default=Path("models/default/model.pt"))
    ap.add_argument("--k", type=int, default=R.DEFAULT_K, help="shortlist length")
    ap.add_argument(
        "--grow-after",
        type=int,
        default=R.DEFAULT_GROW_AFTER,
        metavar="N",
        help="catalogue size beyond which the shortlist grows as k * sqrt(size / N) "
        "(0 = always k; coverhunter.rerank.shortlist_length)",
    )
    ap.add_argument("--weight", type=float, default=R.DEFAULT_WEIGHT, help="fusion weight")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=0, help="rendering/extraction processes (0 = all cores)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_accuracy"))
    ap.add_argument(
        "--tune", action="store_true", help="sweep the fusion weight and the expansion on training-type data"
    )
    ap.add_argument(
        "--tune-data",
        type=Path,
        default=None,
        metavar="LIST",
        help="with --tune: an extracted dataset list to tune on instead of the rendered corpus",
    )
    ap.add_argument(
        "--expand",
        type=int,
        nargs="+",
        default=[0, 10, 25, 40],
        help="with --tune: recordings added from the anchor's neighbours",
    )
    ap.add_argument(
        "--expansion-weights",
        type=float,
        nargs="+",
        default=[0.0, 0.25, 0.5, 1.0],
        help="with --tune: weights of the anchor's alignment",
    )
    ap.add_argument(
        "--tune-first-stage",
        type=float,
        nargs="*",
        default=None,
        metavar="WEIGHT",
        help="with --tune: only the first-stage table, at these weights of the chroma "
        "search against the embedding (default 0.5 0.7 0.85 1)",
    )
    ap.add_argument(
        "--tune-coarse",
        type=float,
        nargs="*",
        default=None,
        metavar="SHARE",
        help="with --tune: only the coarse-pass table, for these shares of the shortlist "
        "aligned in full (RerankConfig.coarse_keep, without the coarse_min floor; 0 = no "
        "coarse pass; default 0 0.5 0.4 0.3)",
    )
    ap.add_argument(
        "--scan-below",
        type=int,
        default=R.DEFAULT_SCAN_BELOW,
        metavar="N",
        help="the two-stage rows scan a catalogue of at most N recordings beside the "
        "votes (RerankConfig.scan_below; default coverhunter.rerank's, 0 = never)",
    )
    ap.add_argument(
        "--tune-scan",
        type=int,
        nargs="*",
        default=None,
        metavar="N",
        help="with --tune: only the scan's table, the first stage at each of these "
        "RerankConfig.scan_below (0 = no scan; default 0 5000)",
    )
    ap.add_argument(
        "--tune-spec",
        nargs="*",
        default=None,
        metavar="SPEC",
        help="with --tune: only the chroma spec table, the default two-stage search with the "
        "shipped spec and each SPEC (e.g. cqt|c3cens)",
    )
    ap.add_argument(
        "--expansion-only",
        action="store_true",
        help="with --tune: only the expansion table (skip the fusion-weight sweep)",
    )
    ap.add_argument(
        "--tune-chroma",
        type=chroma_variant,
        nargs="*",
        default=None,
        metavar="OCTAVE,POWER",
        help="with --tune: only the chroma table, for these (lowest octave, power) "
        "(none given: a default set)",
    )
    ap.add_argument(
        "--tune-qmax",
        type=qmax_variant,
        nargs="*",
        default=None,
        metavar="M,TAU,KAPPA,ONSET,EXTENSION",
        help="with --tune: only the alignment-settings table, for these QmaxParams "
        "(none given: the default and its neighbours)",
    )
    ap.add_argument(
        "--keep-trained-works",
        action="store_true",
        help="with --tune: keep works the model (and its summary projection) trained on; "
        "by default they are left out of the fusion and expansion tables",
    )
    ap.add_argument(
        "--standin",
        action="store_true",
        help="tiny demo corpus (12 works x 4, seed 7): NOT held-out material, for development",
    )
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)
    lm = load_model(a.model, a.device)
    standin = a.standin or not has_test_corpus_api()
    if standin and not a.standin:
        log.warning("coverhunter.corpus.make_corpus(split=...) is not available: using the stand-in")
    kw = dict(versions=a.versions, standin=standin, workers=a.workers)
    if a.tune:
        if a.tune_data is not None:
            tracks = [
                t for t in read_dataset(a.tune_data, check_features=True) if "source_utt" not in t.extra
            ]
            name = f"tune-{a.tune_data.parent.name}.json"
        else:
            tracks = render(
                a.out / f"tune-train-w{a.works}-s{a.seed + 1000}",
                works=a.works,
                seed=a.seed + 1000,
                split="train",
                arrangement_only=False,
                **kw,
            )
            name = "tune.json"
        if a.tune_chroma is not None:
            variants = a.tune_chroma or [
                (0, 1.0),
                (1, 1.0),
                (2, 1.0),
                (3, 1.0),
                (0, 0.5),
                (2, 0.5),
                (0, 2.0),
                (2, 2.0),
                (2, 1.5),
                (1, 1.5),
            ]
            res = tune_chroma(tracks, variants)
            name = name.replace("tune", "tune-chroma", 1)
        elif a.tune_qmax is not None:
            base = Q.QmaxParams()
            variants = a.tune_qmax or [base] + [
                replace(base, **{k: v})
                for k, vs in (
                    ("m", (5, 15, 20)),
                    ("tau", (2,)),
                    ("kappa", (0.1, 0.2, 0.25)),
                    ("gap_onset", (1.0, 3.0, 5.0)),
                    ("gap_extension", (0.25, 1.0)),
                )
                for v in vs
            ]
            res = tune_qmax(tracks, variants)
            name = name.replace("tune", "tune-qmax", 1)
        else:
            if not a.keep_trained_works:
                tracks = unseen(tracks, lm.works)
            # the one-setting sweeps: (table, its default values, the output's name)
            sweeps = {
                "tune_coarse": (tune_coarse, (0.0, 0.5, 0.4, 0.3), "tune-coarse"),
                "tune_first_stage": (tune_first_stage, (0.5, 0.7, 0.85, 1.0), "tune-first-stage"),
                "tune_scan": (tune_scan, (0, 5000), "tune-scan"),
                "tune_spec": (tune_spec, (), "tune-spec"),
            }
            sweep = next((k for k in sweeps if getattr(a, k) is not None), None)
            if sweep is not None:
                fn, default, tag = sweeps[sweep]
                res = fn(lm, tracks, a.device, a.k, tuple(getattr(a, sweep)) or default, a.grow_after)
                name = name.replace("tune", tag, 1)
            else:
                res = tune(
                    lm, tracks, a.device, a.k, a.expand, a.expansion_weights, a.expansion_only, a.grow_after
                )
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / name).write_text(json.dumps(res, indent=1))
        return
    if standin:
        sets = {
            "STAND-IN: demo corpus, 12 works x 4 versions, seed 7 (training soundfonts; "
            "NOT held-out works)": render(
                a.out / "standin",
                works=12,
                seed=7,
                split="train",
                arrangement_only=False,
                **{**kw, "versions": [4, 4]},
            )
        }
    else:
        v = f"{a.versions[0]}-{a.versions[1]}"
        sets = {}
        if "test" in a.sets:
            sets[
                f"held-out test works, test soundfont, re-harmonised ({a.works} works x {v} versions, "
                f"seed {a.seed})"
            ] = render(
                a.out / f"test-w{a.works}-v{v}-s{a.seed}",
                works=a.works,
                seed=a.seed,
                split="test",
                arrangement_only=False,
                harmony_kept=0.0,
                **kw,
            )
        if "kept" in a.sets:
            sets[
                f"the same works, every version keeping the work's harmony ({a.works} works x {v} "
                f"versions, seed {a.seed})"
            ] = render(
                a.out / f"test-kept-w{a.works}-v{v}-s{a.seed}",
                works=a.works,
                seed=a.seed,
                split="test",
                arrangement_only=False,
                harmony_kept=1.0,
                **kw,
            )
        if "arr" in a.sets:
            sets[
                f"arrangement only: same key, tempo and structure ({a.arrangement_works} works, "
                f"seed {a.seed})"
            ] = render(
                a.out / f"test-arr-w{a.arrangement_works}-v{v}-s{a.seed}",
                works=a.arrangement_works,
                seed=a.seed,
                split="test",
                arrangement_only=True,
                harmony_kept=0.0,
                **kw,
            )
    results = {"model": str(a.model), "k": a.k, "grow_after": a.grow_after, "weight": a.weight, "sets": {}}
    for title, tracks in sets.items():
        res = run_corpus(
            tracks,
            lm,
            a.device,
            a.k,
            a.weight,
            a.bootstrap,
            a.grow_after,
            cache_dir=Path(tracks[0].feat).parent.parent if tracks else None,
            scan_below=a.scan_below,
        )
        results["sets"][title] = res
    print(f"\nmodel {a.model}; re-rank: top {a.k}, fusion weight {a.weight} (chosen on training-type data)")
    for title, res in results["sets"].items():
        print_table(title, res, res["k_used"])
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"results-w{a.works}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
