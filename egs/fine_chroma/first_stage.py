"""Each arm as a first stage: MAP and recall@K of the model alone, beside the 2D Fourier
summary (raw and projected) and the recurrence votes, and the two-stage search's shortlist
recall when the model's embedding is fused into it.

    python egs/fine_chroma/first_stage.py runs/fine_chroma/test/full.txt \
        models/default runs/fine_chroma/fine_chroma/best_projected.pt [MODEL ...]

Every recording of the list is a query against all the others (self excluded). Rows:

- ``model alone``: the model's embedding distances (``evaluate``'s path: the model's own
  input, CQT or fine chroma, and windowing);
- ``2D Fourier summary``: Euclidean distances of the alignment chroma's summaries
  (``alignment_inputs.global_summaries``, as the two-stage search computes them), raw and
  projected by each model file's fitted projection (``coverhunter fit-summary``);
- ``recurrence votes``: :func:`coverhunter.reranker.recurrence_votes` (default
  ``RecurrenceParams``);
- ``shortlist``: the ``K`` recordings the two-stage search would align
  (:func:`coverhunter.rerank.cascade_shortlist` with the default ``RerankConfig`` and
  first stage ``"both"``): the model's embedding fused with the votes and its projected
  summary (or the raw one when the file has none).

``R@K``: the mean share of a query's covers in its top ``K`` (``--k``, default 50; ties
broken against the covers).
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from coverhunter import rerank as R
from coverhunter.alignment_inputs import alignment_features, global_summaries
from coverhunter.checkpoint import load_model
from coverhunter.classical import euclidean_distances
from coverhunter.dataset import read_dataset
from coverhunter.evaluate import evaluate_tracks
from coverhunter.metrics import evaluate_distances, recall_at, self_exclusion
from coverhunter.reranker import features_chroma, recurrence_votes


def shortlist_recall(d_model, glob, works: np.ndarray, cfg: R.RerankConfig) -> float:
    """Mean share of each query's covers in the two-stage search's shortlist."""
    out = []
    for i in range(len(works)):
        rel = works == works[i]
        rel[i] = False
        if not rel.any():
            continue
        ex = np.zeros(len(works), bool)
        ex[i] = True
        sl = R.cascade_shortlist(d_model[i], glob[i], cfg, ex)
        out.append(rel[sl].sum() / rel.sum())
    return float(np.mean(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("test_list")
    ap.add_argument("models", nargs="+", help="model folders or files (checkpoints)")
    ap.add_argument("--k", type=int, default=50)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tracks = read_dataset(args.test_list, check_features=True)
    works = np.array([t.work for t in tracks])
    k = args.k
    excl = self_exclusion(len(tracks))
    align = [alignment_features(t.feat) for t in tracks]
    votes = recurrence_votes(align, None, features_chroma([t.feat for t in tracks]))
    raw = global_summaries(align)
    d_raw = euclidean_distances(raw, raw)
    cfg = R.for_catalogue(R.RerankConfig(k=k, first_stage="both"), len(tracks))

    def row(name: str, dist: np.ndarray) -> str:
        m = evaluate_distances(dist, works, works, exclude=excl).map
        return f"| {name} | {m:.3f} | {recall_at(dist, works, works, k, self_exclusion(len(works))):.3f} |"

    print(f"{len(tracks)} recordings of {len(set(works))} works, every one a query; K = {k}\n")
    print(f"| first stage | MAP | R@{k} |\n|---|---|---|")
    print(row("2D Fourier summary, raw", d_raw))
    print(row("recurrence votes", -votes))
    fused = []
    for path in args.models:
        lm = load_model(path)
        _, d_model = evaluate_tracks(lm.model, tracks, None, lm.config, return_dist=True)
        print(row(f"model alone: {path}", d_model))
        d_sum = d_raw
        if lm.summary_projection is not None:
            s = global_summaries(align, lm.summary_projection)
            d_sum = euclidean_distances(s, s)
            print(row(f"2D Fourier summary projected by {path}", d_sum))
        glob = R.first_stage_searches("both", votes, d_sum)
        fused.append((path, lm.summary_projection is not None, shortlist_recall(d_model, glob, works, cfg)))
    print(f"\n| two-stage shortlist (first stage both, {cfg.k} aligned) | summary | shortlist recall |")
    print("|---|---|---|")
    for path, projected, rec in fused:
        print(f"| embedding of {path} | {'projected' if projected else 'raw'} | {rec:.3f} |")


if __name__ == "__main__":
    main()
