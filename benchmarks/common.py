"""What the benchmark scripts share. A script run as ``python benchmarks/<name>.py`` has
``benchmarks/`` on its path, so ``from common import ...`` finds this file (the tests'
``load_benchmark`` puts it there too)."""

from __future__ import annotations

import numpy as np

from coverhunter import rerank as R
from coverhunter import reranker as RK


def reranked(
    dist: np.ndarray, align, summaries: np.ndarray, rr: R.RerankConfig, votes: np.ndarray | None = None
) -> tuple:
    """Every recording a query against the others, re-ranked by ``evaluate --rerank``'s
    code (``coverhunter.reranker.Reranker``, symmetric pairs aligned once, as the all-pairs
    baseline aligns each pair once) from precomputed chroma, summaries and recurrence
    votes (first stage ``"recurrence"``): (re-ranked distances, the Reranker with its
    counts)."""
    rk = RK.Reranker(
        rr,
        query_align=align,
        ref_align=align,
        query_summary=summaries,
        ref_summary=summaries,
        votes=votes,
        symmetric=True,
    )
    return rk.rerank_block(dist, 0, exclude=np.eye(len(dist), dtype=bool)), rk
