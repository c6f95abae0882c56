"""The previous evaluation path, frozen: the "before" of ``bench_eval.py`` and the oracle of
``tests/test_speed_paths.py`` (the new path must give identical numbers).

``distance_matrix`` (min over chunk pairs: one scatter per block) and the metrics loop
with torch comparisons, as they were before the evaluation-at-scale rewrite.
"""

from __future__ import annotations

import numpy as np
import torch

from coverhunter.embed import l2_normalise
from coverhunter.metrics import EvalReport, _block_stats, _summarise


def distance_matrix(query: list[np.ndarray], ref: list[np.ndarray], block: int = 4096) -> np.ndarray:
    """Min over chunk pairs of 1 - cos, (n_query, n_ref) float64."""
    qc = torch.from_numpy(l2_normalise(np.concatenate(query).astype(np.float32)))
    rc = torch.from_numpy(l2_normalise(np.concatenate(ref).astype(np.float32)))
    q_len = torch.tensor([len(e) for e in query])
    r_owner = torch.repeat_interleave(torch.arange(len(ref)), torch.tensor([len(e) for e in ref]))
    q_off = np.cumsum([0] + q_len.tolist())
    out = np.empty((len(query), len(ref)), dtype=np.float64)
    qi = 0
    while qi < len(query):
        qj = qi + 1
        while qj < len(query) and q_off[qj + 1] - q_off[qi] <= block:
            qj += 1
        sim = qc[q_off[qi] : q_off[qj]] @ rc.T
        best = torch.full((sim.shape[0], len(ref)), -2.0)
        best.scatter_reduce_(1, r_owner.expand_as(sim), sim, reduce="amax")
        q_owner = torch.repeat_interleave(torch.arange(qj - qi), q_len[qi:qj])
        rec = torch.full((qj - qi, len(ref)), -2.0)
        rec.scatter_reduce_(0, q_owner[:, None].expand_as(best), best, reduce="amax")
        out[qi:qj] = 1.0 - rec.numpy()
        qi = qj
    return out


def relevant_ranks(d: torch.Tensor, rel: torch.Tensor, keep: torch.Tensor, stable: bool) -> torch.Tensor:
    """1-based ranks of each row's relevant items (see ``coverhunter.metrics``), by torch comparisons."""
    b, n = d.shape
    r_max = int(rel.sum(1).max()) if b else 0
    if r_max == 0:
        return torch.full((b, 1), float("inf"), dtype=torch.float64)
    key = torch.where(rel, d, torch.full_like(d, float("inf")))
    _, cand = torch.topk(key, r_max, dim=1, largest=False)
    cand = cand.sort(dim=1).values
    x = key.gather(1, cand)
    by_x = torch.argsort(x, dim=1, stable=True)
    order, x = cand.gather(1, by_x), x.gather(1, by_x)
    valid = torch.isfinite(x)
    ranks = torch.empty((b, r_max), dtype=torch.float64)
    others = d.masked_fill(~keep, float("inf")) if stable else d.masked_fill(~keep | rel, float("inf"))
    step = max(1, int(2e7 // max(1, b * n)))
    idx = torch.arange(n)[None, None, :]
    for k0 in range(0, r_max, step):
        xs = x[:, k0 : k0 + step, None]
        if stable:
            js = order[:, k0 : k0 + step, None]
            before = (others[:, None, :] < xs) | ((others[:, None, :] == xs) & (idx < js))
            ranks[:, k0 : k0 + step] = before.sum(-1) + 1
        else:
            le = (others[:, None, :] <= xs).sum(-1)
            ranks[:, k0 : k0 + step] = le + torch.arange(k0 + 1, k0 + xs.shape[1] + 1)[None, :]
    return torch.where(valid, ranks, torch.full_like(ranks, float("inf")))


def evaluate_distances(
    dist,
    query_labels,
    ref_labels,
    *,
    exclude=None,
    mode: str = "standard",
    topk: int | None = None,
    block: int = 256,
) -> EvalReport:
    """The previous ``coverhunter.metrics.evaluate_distances`` (no bootstrap); ``exclude``:
    None, a bool mask or a callable (start, stop) -> block."""
    ql, rl = np.asarray(query_labels), np.asarray(ref_labels)
    rows = dist if callable(dist) else (lambda a, b: np.asarray(dist, np.float64)[a:b])
    excl = exclude if callable(exclude) or exclude is None else (lambda a, b: exclude[a:b])
    aps, firsts, top10s, hit1s = [], [], [], []
    for s in range(0, len(ql), block):
        e = min(len(ql), s + block)
        d = torch.from_numpy(np.ascontiguousarray(rows(s, e), dtype=np.float64))
        rel = torch.from_numpy(ql[s:e, None] == rl[None, :])
        drop = (
            d < 0
            if mode == "original"
            else (
                torch.from_numpy(np.asarray(excl(s, e), bool)) if excl is not None else torch.zeros_like(rel)
            )
        )
        drop |= torch.isnan(d)
        rel &= ~drop
        ranks = relevant_ranks(d, rel, ~drop, stable=mode == "original")
        ap, first, top10, hit1 = _block_stats(ranks, topk if mode == "original" else None)
        aps.append(ap), firsts.append(first), top10s.append(top10), hit1s.append(hit1)
    ap, first = torch.cat(aps).numpy(), torch.cat(firsts).numpy()
    top10, hit1 = torch.cat(top10s).numpy(), torch.cat(hit1s).numpy()
    has_rel = first > 0
    use = has_rel if mode == "standard" else np.ones_like(has_rel)
    return EvalReport(
        **{
            **_summarise(ap, first, top10, hit1, use, mode),
            "n_without_relevant": int((~has_rel).sum()),
            "per_query_ap": ap.tolist(),
            "per_query_rank1": first.astype(int).tolist(),
        }
    )
