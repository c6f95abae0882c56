"""Whole recordings -> chunk embeddings -> recording distances.

One batched, cached path (:func:`embed_tracks`) serves evaluation, alignment, the index,
calibration and identify.

A recording of ``n`` CQT frames is covered by windows of ``chunk`` frames every ``hop``
frames, the last one aligned to the end so the tail is always embedded::

    frames  |------------------------------------------|
    windows |=========|
                 |=========|
                      |=========|
                               |=========|   <- last window ends at the last frame

A recording shorter than one window gives one window padded with -100 dB, as in the
original. Two recordings are as far apart as their closest pair of chunks
(``distance="min"``, the original's rule: min over pairs of 1 - cos), or as the cosine
distance of their mean chunk embeddings (``distance="mean"``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .config import EvalConfig, FeatureConfig
from .features import PAD_DB, pool_frames

log = logging.getLogger(__name__)


def chunk_starts(n_frames: int, chunk: int, hop: int) -> list[int]:
    """Start frames of windows covering [0, n_frames), the last one ending at the end."""
    if chunk < 1 or hop < 1:
        raise ValueError(f"chunk and hop must be >= 1 frame, got {chunk}, {hop}")
    if n_frames <= chunk:
        return [0]
    starts = list(range(0, n_frames - chunk + 1, hop))
    if starts[-1] + chunk < n_frames:
        starts.append(n_frames - chunk)
    return starts


def cut_chunk(
    feat: np.ndarray, start: int, length: int, mean_size: int, pad_value: float = PAD_DB
) -> np.ndarray:
    """Raw frames [start, start+length), padded with ``pad_value`` (default -100 dB, the
    CQT's silence), then mean-pooled (float32)."""
    x = np.asarray(feat[start : start + length], dtype=np.float32)
    if len(x) < length:
        x = np.concatenate(
            [
                x,
                np.full(
                    (length - len(x), x.shape[1] if x.ndim == 2 else feat.shape[1]), pad_value, np.float32
                ),
            ]
        )
    return pool_frames(x, mean_size)


@dataclass(frozen=True)
class Windowing:
    """Chunk window and hop in raw frames, and the pooling factor."""

    chunk: int
    hop: int
    mean_size: int = 3
    # what fills a window past the end of a recording (the input's silence)
    pad_value: float = PAD_DB

    @classmethod
    def from_config(
        cls, cfg: EvalConfig, frames_per_second: float, mean_size: int, pad_value: float = PAD_DB
    ) -> Windowing:
        """Windows of ``cfg.chunk_s`` every ``cfg.hop_s`` seconds (any config with those fields)."""
        return cls(
            max(1, round(cfg.chunk_s * frames_per_second)),
            max(1, round(cfg.hop_s * frames_per_second)),
            mean_size,
            pad_value,
        )

    def key(self) -> str:
        pad = "" if self.pad_value == PAD_DB else f"p{self.pad_value:g}"
        return f"c{self.chunk}h{self.hop}m{self.mean_size}{pad}"


def track_chunks(feat: np.ndarray, win: Windowing) -> tuple[np.ndarray, list[int]]:
    """All windows of one recording and their start frames.

    The windows overlap, so the ``mean_size``-frame means are computed once, for every
    start frame, and each window takes every ``mean_size``-th of them: the same values
    as :func:`cut_chunk` window by window.

    Parameters
    ----------
    feat : np.ndarray, shape (frames, n_bins)

    Returns
    -------
    np.ndarray, shape (n_chunks, chunk // mean_size, n_bins), float32; list of start frames
    """
    starts = chunk_starts(len(feat), win.chunk, win.hop)
    x = np.asarray(feat, dtype=np.float32)
    if len(x) < win.chunk:  # one window, padded as the original does
        x = np.concatenate([x, np.full((win.chunk - len(x), x.shape[1]), win.pad_value, np.float32)])
    m, n = win.mean_size, len(x) - win.mean_size + 1
    total = x[:n].copy()
    for k in range(1, m):  # the order of pool_frames' sum
        total += x[k : k + n]
    means = total / m  # (frames - m + 1, n_bins): mean of frames t .. t + m - 1
    return means[np.asarray(starts)[:, None] + m * np.arange(win.chunk // m)], starts


PRECISIONS = ("float32", "bfloat16")


def embed_chunks(
    model: torch.nn.Module,
    chunks: np.ndarray,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    precision: str = "float32",
) -> np.ndarray:
    """Embeddings of pooled chunks, model in eval mode.

    Parameters
    ----------
    chunks : np.ndarray, shape (n, T, F)
    precision : "float32" or "bfloat16"
        bfloat16 runs the matrix products under autocast (about 2x faster on CPUs with
        bfloat16 instructions; embeddings within cosine 0.9999 of float32's).

    Returns
    -------
    np.ndarray, shape (n, E), float32
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    cast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if precision == "bfloat16"
        else contextlib.nullcontext()
    )
    out = []
    with torch.inference_mode(), cast:
        for i in range(0, len(chunks), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(chunks[i : i + batch_size])).to(device)
            out.append(model(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.cfg.embed_dim), np.float32)


CACHE_ENV = "COVERHUNTER_CACHE"


def default_cache_dir() -> Path:
    """Where embedding caches live: ``$COVERHUNTER_CACHE``, else
    ``$XDG_CACHE_HOME/coverhunter``, else ``~/.cache/coverhunter`` (never a model folder)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "coverhunter"


class EmbeddingCache:
    """Chunk embeddings on disk, keyed by model content, windowing and feature file content.

    An entry is found again only for the same model weights (their content hash), the
    same windows and a feature file with the same bytes: a retrained model, other
    windows or a changed feature file never reuse an old entry, while a moved or copied
    feature file (same content) does. Entries live in ``FOLDER/<model>-<windows>/``.
    """

    def __init__(self, folder: Path | None, model_fingerprint: str, win: Windowing):
        folder = default_cache_dir() if folder is None else Path(folder)
        self.dir = folder / f"{model_fingerprint}-{win.key()}"

    @staticmethod
    def _feature_key(path: Path) -> str:
        from .utils import sha256_file

        return sha256_file(path)[:40]

    def get(self, feat_path: Path):
        try:
            p = self.dir / f"{self._feature_key(feat_path)}.npz"
        except OSError:
            return None  # an unreadable feature file is reported when it is embedded
        if not p.is_file():
            return None
        try:
            with np.load(p) as z:
                return z["emb"], z["starts"].tolist()
        except (OSError, ValueError, KeyError, EOFError):
            return None  # a damaged entry is recomputed

    def put(self, feat_path: Path, emb: np.ndarray, starts: list[int]) -> None:
        import io

        from .utils import atomic_write_bytes

        buf = io.BytesIO()
        np.savez(buf, emb=emb, starts=np.asarray(starts))
        try:
            atomic_write_bytes(self.dir / f"{self._feature_key(feat_path)}.npz", buf.getvalue())
        except OSError as e:  # a read-only or full cache never stops the work
            log.warning("embedding cache %s: not written (%s)", self.dir, e)


def embed_tracks(
    model: torch.nn.Module,
    feats: list,
    win: Windowing,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    cache: EmbeddingCache | None = None,
    verbose: bool = False,
    desc: str = "embed",
    precision: str = "float32",
    load=None,
) -> list[tuple[np.ndarray, list[int]]]:
    """Chunk embeddings of many recordings.

    Parameters
    ----------
    feats : list of path or np.ndarray
        CQT files (``.npy``, [frames, bins]) or arrays.
    precision : "float32" or "bfloat16"
        See :func:`embed_chunks`.
    load : callable, optional
        Item of ``feats`` -> input array (frames, bins); default: arrays as they are,
        paths with ``np.load``. A "fine_chroma" model needs one
        (:meth:`coverhunter.inputs.ModelInput.loader`): without it, ValueError.

    Returns
    -------
    list of (np.ndarray (n_chunks, E), list of start frames)
    """
    if load is None and getattr(getattr(model, "cfg", None), "front_end", "cqt") == "fine_chroma":
        raise ValueError(
            "this model reads fine chroma (model.front_end='fine_chroma'), but was "
            "handed CQT features: its caller cannot feed it yet"
        )
    results: list = [None] * len(feats)
    todo = []
    for i, f in enumerate(feats):
        hit = cache.get(f) if cache is not None and not isinstance(f, np.ndarray) else None
        if hit is not None:
            results[i] = hit
        else:
            todo.append(i)
    # group chunks of several recordings into full batches
    pending_chunks, owners = [], []

    def flush():
        if not pending_chunks:
            return
        emb = embed_chunks(model, np.concatenate(pending_chunks), device, batch_size, precision)
        pos = 0
        for i, starts in owners:
            results[i] = (emb[pos : pos + len(starts)], starts)
            pos += len(starts)
            if cache is not None and not isinstance(feats[i], np.ndarray):
                cache.put(feats[i], *results[i])
        pending_chunks.clear(), owners.clear()

    for i in tqdm(todo, desc=desc, unit="track", disable=not verbose or not todo):
        f = feats[i]
        feat = load(f) if load else f if isinstance(f, np.ndarray) else np.load(f, mmap_mode="r")
        chunks, starts = track_chunks(feat, win)
        pending_chunks.append(chunks)
        owners.append((i, starts))
        if sum(len(c) for c in pending_chunks) >= 4 * batch_size:
            flush()
    flush()
    return results


def embed_audio_files(
    model: torch.nn.Module,
    audio: list,
    win: Windowing,
    features: FeatureConfig,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    precision: str = "float32",
    verbose: bool = False,
) -> list[tuple[np.ndarray, list[int]]]:
    """Chunk embeddings straight from audio: decode -> float32 CQT -> windows -> model.

    No feature file is written: the fast path for embedding a catalogue. The CQT is
    :func:`coverhunter.features.cqt` with ``fast=True`` (float32 arithmetic).

    Parameters
    ----------
    audio : list of path or np.ndarray
        Audio files (any format :func:`coverhunter.audio.load_audio` reads), or mono
        float32 arrays at ``features.sample_rate``.
    batch_size : int
        Chunks per forward pass (small batches keep the convolutions in cache on a CPU).

    Returns
    -------
    list of (np.ndarray (n_chunks, E), list of start frames), as :func:`embed_tracks`.
    """
    from .audio import load_audio, peak_normalize
    from .features import cqt

    def features_of(item) -> np.ndarray:
        y = item if isinstance(item, np.ndarray) else load_audio(item, features.sample_rate)
        return cqt(peak_normalize(y), features, fast=True)

    return embed_tracks(
        model,
        audio,
        win,
        device=device,
        batch_size=batch_size,
        verbose=verbose,
        desc="embed audio",
        precision=precision,
        load=features_of,
    )


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _by_count(lengths: np.ndarray) -> list[tuple[np.ndarray, int, np.ndarray]]:
    """Recordings grouped by chunk count: (recording indices, count, their chunk rows)."""
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return [
        (idx, int(c), (offsets[idx, None] + np.arange(c)).ravel())
        for c in np.unique(lengths)
        if c > 0
        for idx in [np.flatnonzero(lengths == c)]
    ]


def _max_by_count(sim: torch.Tensor, lengths: np.ndarray) -> torch.Tensor:
    """Best row of each recording, (sum(lengths), R) -> (len(lengths), R); -2 for none."""
    groups = _by_count(lengths)
    if len(groups) == 1 and len(groups[0][0]) == len(lengths):  # one count: a reshape
        return sim.view(len(lengths), groups[0][1], -1).amax(1)
    out = torch.full((len(lengths), sim.shape[1]), -2.0)
    for idx, c, rows in groups:
        out[torch.from_numpy(idx)] = sim[torch.from_numpy(rows)].view(len(idx), c, -1).amax(1)
    return out


class MinChunkDistance:
    """Min over chunk pairs of 1 - cos to a fixed list of references, prepared once.

    The reference chunks are stored grouped by their recording's chunk count, and within a
    group chunk-major (every reference's first chunk, then every second chunk, ...), so the
    best chunk of every reference is a reshape and a max over contiguous rows,
    (rows, count, n) -> (rows, n), instead of a scatter or a strided reduction; the queries
    of a block are reduced the same way. Each similarity is the same float32 dot product
    as before; only the order of the references and the size of the blocks differ.

    Parameters
    ----------
    ref : list of np.ndarray, each (n_chunks, E)
    """

    def __init__(self, ref: list[np.ndarray]):
        lengths = np.array([len(e) for e in ref], dtype=np.int64)
        chunks = l2_normalise(np.concatenate(ref).astype(np.float32))
        groups = _by_count(lengths)
        self.n_ref = len(ref)
        self.counts = [(len(idx), c) for idx, c, _ in groups]  # (references, chunks each)
        chunk_major = [rows.reshape(len(idx), c).T.ravel() for idx, c, rows in groups]
        self.chunks = torch.from_numpy(chunks[np.concatenate(chunk_major)])
        order = np.concatenate([idx for idx, _, _ in groups])  # reference of each column
        self.cols = slice(None) if np.array_equal(order, np.arange(len(ref))) else order

    def __call__(self, query: list[np.ndarray], block: int = 128) -> np.ndarray:
        """Distances (len(query), n_ref) float64, about ``block`` query chunks at a time.

        Small blocks keep each similarity block (block x reference chunks, float32) in
        cache for the max that follows: the 20,000 x 20,000 evaluation of
        ``benchmarks/bench_eval.py`` took 10.0 s with 128 (an earlier run with 4,096: 11.0 s)."""
        lengths = np.array([len(e) for e in query], dtype=np.int64)
        out = np.full((len(query), self.n_ref), 3.0)  # no chunks: similarity -2
        if not len(query) or not lengths.sum():
            return out
        qc = torch.from_numpy(l2_normalise(np.concatenate(query).astype(np.float32)))
        q_off = np.concatenate([[0], np.cumsum(lengths)])
        qi = 0
        while qi < len(query):
            qj = qi + 1
            while qj < len(query) and q_off[qj + 1] - q_off[qi] <= block:
                qj += 1
            sim = qc[q_off[qi] : q_off[qj]] @ self.chunks.T  # (query chunks, reference chunks)
            parts = sim.split([n * c for n, c in self.counts], dim=1)
            best = [g.view(len(sim), c, n).amax(1) for g, (n, c) in zip(parts, self.counts)]
            best = _max_by_count(best[0] if len(best) == 1 else torch.cat(best, dim=1), lengths[qi:qj])
            out[qi:qj, self.cols] = 1.0 - best.numpy()
            qi = qj
        return out


def _mean_embeddings(recs: list[np.ndarray]) -> np.ndarray:
    """(n, E) float32: the L2-normalised mean of each recording's normalised chunks."""
    return l2_normalise(np.stack([l2_normalise(e).mean(0) for e in recs]).astype(np.float32))


def distances_to(ref: list[np.ndarray], mode: str = "min"):
    """``query -> distance_matrix(query, ref, mode)`` with the references prepared once
    (for many blocks of queries against the same references)."""
    if mode not in ("min", "mean"):
        raise ValueError(f"distance must be 'min' or 'mean', got {mode!r}")
    if mode == "min":
        return MinChunkDistance(ref)
    r = _mean_embeddings(ref)
    return lambda query: (1.0 - _mean_embeddings(query) @ r.T).astype(np.float64)


def distance_matrix(query: list[np.ndarray], ref: list[np.ndarray], mode: str = "min") -> np.ndarray:
    """Recording distances (n_query, n_ref) from per-recording chunk embeddings.

    ``mode="min"``: min over chunk pairs of 1 - cos (float32 arithmetic, as the original);
    ``mode="mean"``: 1 - cos of the L2-normalised mean of each recording's normalised chunks.
    """
    return distances_to(ref, mode)(query)
