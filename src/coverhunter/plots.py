"""Pictures of an evaluation: the embedding map coloured by work, and distance histograms."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise RuntimeError("plots need matplotlib: pip install 'coverhunter[plots]'") from e
    return plt


def distance_histogram(dist: np.ndarray, q_labels, r_labels, exclude: np.ndarray | None, path: Path) -> Path:
    """Histograms of same-work and different-work distances (one PNG)."""
    plt = _pyplot()
    same = np.asarray(q_labels)[:, None] == np.asarray(r_labels)[None, :]
    keep = ~exclude if exclude is not None else np.ones_like(same)
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(dist[keep].min(), dist[keep].max(), 60)
    ax.hist(dist[keep & ~same], bins=bins, density=True, alpha=0.6, label="different work")
    ax.hist(dist[keep & same], bins=bins, density=True, alpha=0.6, label="same work")
    ax.set_xlabel("distance (1 - cosine, best chunk pair)")
    ax.set_ylabel("density")
    ax.legend()
    ax.set_title("Same-work vs different-work distances")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def embedding_map(embeddings: np.ndarray, labels, path: Path, seed: int = 0) -> Path:
    """t-SNE of recording embeddings (one point per recording), coloured by work."""
    plt = _pyplot()
    try:
        from sklearn.manifold import TSNE
    except ImportError as e:
        raise RuntimeError("the embedding map needs scikit-learn: pip install 'coverhunter[plots]'") from e
    from .embed import l2_normalise

    x = l2_normalise(embeddings)
    perplexity = float(max(2, min(30, (len(x) - 1) // 3)))
    xy = TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine"
    ).fit_transform(x)
    works = sorted(set(labels))
    colour = {w: i for i, w in enumerate(works)}
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.scatter(xy[:, 0], xy[:, 1], c=[colour[w] for w in labels], cmap="tab20", s=18)
    if len(works) <= 40:  # label each work once, at its centroid
        for w in works:
            m = xy[np.asarray(labels) == w].mean(0)
            ax.annotate(str(w)[:18], m, fontsize=6, alpha=0.7)
    ax.set_title(f"t-SNE of {len(x)} recordings, {len(works)} works")
    ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(folder: Path, queries, refs, dist, pooled: np.ndarray, tracks) -> list[Path]:
    """Both plots of an evaluation into ``folder``.

    Parameters
    ----------
    queries, refs : list of Track
        ``refs`` None: the queries against themselves (each excluded from its own row).
    dist : np.ndarray, shape (len(queries), len(refs or queries))
    pooled : np.ndarray, shape (len(tracks), embed_dim)
        Each recording's mean chunk embedding, as the evaluation computed it.
    tracks : list of Track
        The recordings of ``pooled``, in its order.
    """
    from .metrics import self_exclusion

    folder.mkdir(parents=True, exist_ok=True)
    refs_ = queries if refs is None else refs
    exclude = self_exclusion(len(queries))(0, len(queries)) if refs is None else None
    out = [
        distance_histogram(
            dist, [t.work for t in queries], [t.work for t in refs_], exclude, folder / "distances.png"
        )
    ]
    out.append(embedding_map(pooled, [t.work for t in tracks], folder / "embedding_map.png"))
    log.info("plots written to %s", folder)
    return out
