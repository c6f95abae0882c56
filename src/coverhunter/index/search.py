"""Nearest chunk rows: exact search, and the clean-up of an approximate engine's shortlist.

Rows of removed recordings (tombstones) and rows a writer appended after the reader
loaded ``meta.json`` never come out: they become -1 with similarity -inf.
"""

from __future__ import annotations

import numpy as np
import torch


def exact_search(q: np.ndarray, vectors: np.ndarray, dead: np.ndarray | None,
                 k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` rows by inner product.

    Parameters
    ----------
    q : np.ndarray, shape (m, dim)
    vectors : np.ndarray, shape (n, dim)
    dead : np.ndarray of bool, shape (n,), or None
        Rows that must not be returned.

    Returns
    -------
    (np.ndarray (m, k) float32, np.ndarray (m, k) int64)
        Similarities and rows, best first.
    """
    sims = torch.from_numpy(np.ascontiguousarray(q, np.float32)) @ torch.from_numpy(
        np.asarray(vectors, np.float32)).T
    if dead is not None and dead.any():
        sims[:, torch.from_numpy(dead)] = -torch.inf
    top = torch.topk(sims, k, dim=1)
    rows = top.indices.numpy().astype(np.int64)
    vals = top.values.numpy()
    rows[~np.isfinite(vals)] = -1
    return vals, rows


def clean_shortlist(q: np.ndarray, sims: np.ndarray, rows: np.ndarray, k: int, *,
                    dead: np.ndarray | None, n_rows: int,
                    vectors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` valid rows of an engine's shortlist, re-scored exactly when ``vectors`` is given.

    Parameters
    ----------
    q : np.ndarray, shape (m, dim)
        Query chunk vectors.
    sims, rows : np.ndarray, shape (m, s)
        The engine's similarities and rows (-1 = none), s >= k.
    dead : np.ndarray of bool, shape (n_rows,), or None
        Tombstoned rows.
    n_rows : int
        Rows the reader knows of; larger rows were added after it loaded.
    vectors : np.ndarray, shape (n_rows, dim), optional
        Float vectors: the similarities are recomputed from them (compressed codes
        such as IVF-PQ's only approximate them).

    Returns
    -------
    (np.ndarray (m, k) float32, np.ndarray (m, k) int64)
    """
    rows = np.asarray(rows, np.int64)
    valid = (rows >= 0) & (rows < n_rows)
    safe = np.where(valid, rows, 0)
    if dead is not None:
        valid &= ~dead[safe]
    if vectors is not None:
        sims = np.einsum("md,msd->ms", np.asarray(q, np.float32),
                         np.asarray(vectors[safe.ravel()], np.float32).reshape(*safe.shape, -1))
    sims = np.where(valid, sims, -np.inf).astype(np.float32)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    out_sims = np.take_along_axis(sims, order, 1)
    out_rows = np.where(np.isfinite(out_sims), np.take_along_axis(rows, order, 1), -1)
    return out_sims, out_rows
