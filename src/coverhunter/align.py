"""Chunk alignment between the versions of each work (the coarse stage of coarse-to-fine).

With a trained (coarse) model, every version of a training work is embedded in short
overlapping chunks. For each ordered pair of versions (i, j) of the same work, the chunk
distance matrix D (1 - cos, shape n_i x n_j) is searched for a path that gives every
chunk of i its corresponding chunk of j:

    cost(path) = sum_a D[a, j(a)] + jump * #{a : j(a) - j(a-1) not in {0, 1, 2}}

Steps of 0, 1 or 2 chunks follow the music at tempo ratios up to 2; any other step (a
jump back for a repeated section, forward for a dropped one) pays ``jump``. The Viterbi
recursion is O(n_i * n_j) per pair, and pairs are only formed inside a work, so the whole
alignment is linear in the number of recordings for a bounded number of versions per
work. A match is kept only when it is among the closest ``keep_quantile`` of its row
(a passage the other version lacks gets no confident match).

The output is JSON lines, one per ordered pair:
``{"utt_i", "utt_j", "work", "chunk_s", "hop_s", "pairs": [[t_i, t_j, d], ...],
"shift_s_i_to_j": median(t_i - t_j)}`` (times in seconds, chunk starts).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .checkpoint import LoadedModel
from .dataset import Track
from .embed import Windowing, embed_tracks, l2_normalise
from .inputs import model_input
from .utils import atomic_write_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlignConfig:
    """Windows used for alignment and the path penalties."""

    chunk_s: float = 6.0  # short chunks locate passages finely
    hop_s: float = 1.5
    jump: float = 0.15  # cost of a jump, in units of 1 - cos
    # a match is kept only if it is among this share of its row's closest chunks: a
    # passage that the other version lacks still gets a path entry, but not a good one
    keep_quantile: float = 0.2


def align_path(dist: np.ndarray, jump: float = 0.15) -> np.ndarray:
    """Best piecewise-monotonic path through a chunk distance matrix.

    Parameters
    ----------
    dist : np.ndarray, shape (n_i, n_j)

    Returns
    -------
    np.ndarray, shape (n_i,), int
        j(a): the chunk of j matched to chunk a of i.
    """
    n_i, n_j = dist.shape
    cost = dist[0].astype(np.float64).copy()
    back = np.zeros((n_i, n_j), dtype=np.int64)
    idx = np.arange(n_j)
    for a in range(1, n_i):
        # continue from j, j-1 or j-2 (steps 0, 1, 2) for free
        cands = np.stack([cost, np.r_[np.inf, cost[:-1]][:n_j], np.r_[np.inf, np.inf, cost[:-2]][:n_j]])
        step = np.argmin(cands, axis=0)
        cont = cands[step, idx]
        best_any = int(np.argmin(cost))  # or jump from anywhere
        use_jump = cost[best_any] + jump < cont
        back[a] = np.where(use_jump, best_any, idx - step)
        cost = np.where(use_jump, cost[best_any] + jump, cont) + dist[a]
    path = np.empty(n_i, dtype=np.int64)
    path[-1] = int(np.argmin(cost))
    for a in range(n_i - 1, 0, -1):
        path[a - 1] = back[a, path[a]]
    return path


def chunk_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 1.0 - l2_normalise(a) @ l2_normalise(b).T


def align_tracks(
    lm: LoadedModel,
    tracks: list[Track],
    cfg: AlignConfig | None = None,
    *,
    device="cpu",
    verbose: bool = True,
) -> list[dict]:
    """Alignment records for every ordered pair of versions of each work in ``tracks``."""
    cfg = cfg or AlignConfig()
    inp = model_input(lm.config)  # the CQT, or the fine chroma beside it
    fps = inp.frames_per_second
    win = Windowing.from_config(cfg, fps, lm.config.data.mean_size, inp.pad_value)
    by_work: dict[str, list[int]] = {}
    for i, t in enumerate(tracks):
        by_work.setdefault(t.work, []).append(i)
    embs = embed_tracks(
        lm.model,
        [inp.source(t.feat) for t in tracks],
        win,
        device=device,
        batch_size=lm.config.eval.batch_size,
        verbose=verbose,
        desc="embed",
        load=inp.loader(),
    )
    records = []
    works = [w for w, ids in by_work.items() if len(ids) > 1]
    for w in tqdm(works, desc="align", unit="work", disable=not verbose):
        for i in by_work[w]:
            for j in by_work[w]:
                if i == j:
                    continue
                (ei, si), (ej, sj) = embs[i], embs[j]
                d = chunk_distances(ei, ej)
                path = align_path(d, cfg.jump)
                limit = np.quantile(d, cfg.keep_quantile, axis=1)
                pairs = [
                    [round(si[a] / fps, 3), round(sj[b] / fps, 3), round(float(d[a, b]), 4)]
                    for a, b in enumerate(path)
                    if d[a, b] <= limit[a]
                ]
                shift = float(np.median([p[0] - p[1] for p in pairs])) if pairs else 0.0
                records.append(
                    {
                        "utt_i": tracks[i].track_id,
                        "utt_j": tracks[j].track_id,
                        "work": w,
                        "chunk_s": cfg.chunk_s,
                        "hop_s": cfg.hop_s,
                        "pairs": pairs,
                        "shift_s_i_to_j": round(shift, 3),
                    }
                )
    return records


def write_alignment(records: list[dict], path: str | Path) -> None:
    atomic_write_text(Path(path), "".join(json.dumps(r) + "\n" for r in records))


def read_alignment(path: str | Path) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """utt_i -> utt_j -> [(centre_i, centre_j), ...]: matched chunk centres in seconds."""
    path = Path(path)
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            half = float(r["chunk_s"]) / 2
            out.setdefault(r["utt_i"], {})[r["utt_j"]] = [
                (float(a) + half, float(b) + half) for a, b, *_ in r["pairs"]
            ]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path} line {n}: not an alignment record ({e})") from e
    return out


def plot_alignment(
    lm: LoadedModel, a: Track, b: Track, path: str | Path, cfg: AlignConfig | None = None
) -> Path:
    """PNG of the chunk distance matrix of two recordings with the path found through it."""
    from .plots import _pyplot

    cfg = cfg or AlignConfig()
    inp = model_input(lm.config)
    fps = inp.frames_per_second
    win = Windowing.from_config(cfg, fps, lm.config.data.mean_size, inp.pad_value)
    (ea, sa), (eb, sb) = embed_tracks(
        lm.model, [inp.source(a.feat), inp.source(b.feat)], win, load=inp.loader()
    )
    d = chunk_distances(ea, eb)
    p = align_path(d, cfg.jump)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 6))
    extent = [sb[0] / fps, sb[-1] / fps, sa[-1] / fps, sa[0] / fps]
    im = ax.imshow(d, cmap="magma_r", aspect="auto", extent=extent)
    ax.plot(np.asarray(sb)[p] / fps, np.asarray(sa) / fps, "c.-", lw=1, ms=3, label="alignment path")
    ax.set_xlabel(f"{b.track_id}: chunk start (s)")
    ax.set_ylabel(f"{a.track_id}: chunk start (s)")
    ax.set_title(f"{a.work}: chunk distances (1 - cos)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def run_alignment(
    model: str | Path,
    data_path: str | Path,
    output: str | Path,
    *,
    cfg: AlignConfig | None = None,
    device=None,
    verbose: bool = True,
) -> list[dict]:
    """Align every work of a list (with features) using a trained model; write the file."""
    from .checkpoint import load_model
    from .dataset import read_dataset
    from .utils import resolve_device

    dev = resolve_device(device)
    lm = load_model(model, dev)
    tracks = read_dataset(data_path, check_features=True)
    records = align_tracks(lm, tracks, cfg, device=dev, verbose=verbose)
    write_alignment(records, output)
    n_pairs = sum(len(r["pairs"]) for r in records)
    log.info(
        "aligned %d version pairs (%d chunk matches) of %d works -> %s",
        len(records),
        n_pairs,
        len({r["work"] for r in records}),
        output,
    )
    return records
