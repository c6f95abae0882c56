"""Nearest chunk rows: exact search, and the clean-up of an approximate engine's shortlist.

Rows of removed recordings (tombstones) and rows a writer appended after the reader
loaded ``meta.json`` never come out: they become -1 with similarity -inf.
"""

from __future__ import annotations

import numpy as np
import torch


class RowView:
    """Several (memory-mapped) ``(n_i, dim)`` arrays read as one ``(sum n_i, dim)`` array.

    Only the rows asked for are read: ``view[a:b]`` copies that range, ``view[rows]``
    (an int array of any shape) gathers those rows, so re-scoring a shortlist or building
    an index block by block never holds the whole catalogue in memory (10^7 chunk vectors
    are 5 GB of float32).
    """

    def __init__(self, parts: list[np.ndarray], dim: int):
        self.parts = list(parts)
        self.offsets = np.concatenate([[0], np.cumsum([len(p) for p in self.parts])]).astype(np.int64)
        self.shape = (int(self.offsets[-1]), int(dim))
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise IndexError("RowView slices take no step")
            out = []
            for part, first in zip(self.parts, self.offsets[:-1]):
                a, b = max(start, first), min(stop, first + len(part))
                if a < b:
                    out.append(np.asarray(part[a - first : b - first], np.float32))
            return np.concatenate(out) if out else np.zeros((0, self.shape[1]), np.float32)
        rows = np.asarray(key, np.int64)
        flat = rows.ravel()
        if len(flat) and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"rows outside 0..{len(self) - 1}")
        which = np.searchsorted(self.offsets, flat, side="right") - 1
        out = np.empty((len(flat), self.shape[1]), np.float32)
        for p in np.unique(which):
            sel = which == p
            out[sel] = self.parts[p][flat[sel] - self.offsets[p]]
        return out.reshape(*rows.shape, self.shape[1])


def exact_search(
    q: np.ndarray, vectors: np.ndarray, dead: np.ndarray | None, k: int
) -> tuple[np.ndarray, np.ndarray]:
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
    sims = (
        torch.from_numpy(np.ascontiguousarray(q, np.float32))
        @ torch.from_numpy(np.asarray(vectors, np.float32)).T
    )
    if dead is not None and dead.any():
        sims[:, torch.from_numpy(dead)] = -torch.inf
    top = torch.topk(sims, k, dim=1)
    rows = top.indices.numpy().astype(np.int64)
    vals = top.values.numpy()
    rows[~np.isfinite(vals)] = -1
    return vals, rows


def fetch_size(k: int, dead: np.ndarray) -> int:
    """Rows to ask an approximate engine for, to keep ``k`` live ones: past the tombstones
    a query may meet (a replaced track's old rows are near-duplicates of its new ones),
    at most ``8 k`` of them and never more rows than there are.

    Parameters
    ----------
    k : int
        Live rows wanted.
    dead : np.ndarray of bool, shape (n_rows,)
        Tombstoned rows.
    """
    return min(len(dead), k + min(int(dead.sum()), 8 * k))


def clean_shortlist(
    q: np.ndarray,
    sims: np.ndarray,
    rows: np.ndarray,
    k: int,
    *,
    dead: np.ndarray | None,
    n_rows: int,
    vectors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
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
        sims = np.einsum(
            "md,msd->ms",
            np.asarray(q, np.float32),
            np.asarray(vectors[safe.ravel()], np.float32).reshape(*safe.shape, -1),
        )
    sims = np.where(valid, sims, -np.inf).astype(np.float32)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    out_sims = np.take_along_axis(sims, order, 1)
    out_rows = np.where(np.isfinite(out_sims), np.take_along_axis(rows, order, 1), -1)
    return out_sims, out_rows
