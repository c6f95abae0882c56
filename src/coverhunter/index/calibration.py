"""Score calibration: P(same work | score) and the impostor p-value of a catalogue match."""

from __future__ import annotations

import math

import numpy as np

# recordings of a calibration set whose pairs are all aligned (chroma Qmax) for the
# alignment part of a calibration: 400 give 79,800 pairs, about half a minute on one core
ALIGNMENT_MAX_RECORDINGS = 400

# Assumptions, stated once (they are what the numbers mean):
# - Scores are track-pair scores: the best chunk pair of two recordings (cosine). A
#   catalogue work's score is the best over its tracks, so the best wrong work of a
#   query is the best of all the wrong *tracks*, not of the wrong works.
# - Wrong-track scores of one query are independent draws from the different-work
#   distribution measured on the calibration set (labelled recordings like the
#   catalogue's, not the catalogue itself).
# - P(same work | score) is for one pair drawn like the calibration pairs: its base rate
#   (prior) is the share of same-work pairs among them unless given explicitly.


def _fit_logistic(x: np.ndarray, y: np.ndarray, iters: int = 50) -> tuple[float, float]:
    """log f_same(x) / f_diff(x) ~ a + b x: logistic regression with both classes weighted
    equally, which estimates the log likelihood ratio (no base rate in it)."""
    w = np.where(y == 1, 0.5 / max(1, y.sum()), 0.5 / max(1, (1 - y).sum()))
    a, b = 0.0, 0.0
    X = np.stack([np.ones_like(x), x], 1)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(a + b * x)))
        g = X.T @ (w * (p - y))
        h = (X * (w * p * (1 - p))[:, None]).T @ X + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    return float(a), float(b)


def fit_calibration(scores: np.ndarray, same: np.ndarray, max_keep: int = 20000,
                    prior: float | None = None) -> dict:
    """Score distributions of same-work and different-work pairs, and P(same | score).

    Parameters
    ----------
    scores : np.ndarray, shape (n_pairs,)
        Track-pair scores (cosine of the best chunk pair) of a labelled set.
    same : np.ndarray of bool, shape (n_pairs,)
        Whether each pair is two versions of one work.
    prior : float, optional
        Base rate P(same work) of the pairs the probability is for; default: the share
        of same-work pairs in ``same``.

    Returns
    -------
    dict
        ``same`` / ``different`` (sorted scores, subsampled to ``max_keep``),
        ``logistic`` [a, b] with log LR = a + b * score, ``prior``, the pair counts.
    """
    scores, same = np.asarray(scores, float), np.asarray(same, bool)
    if same.sum() < 2 or (~same).sum() < 2:
        raise ValueError("calibration needs at least 2 same-work and 2 different-work pairs")
    if prior is None:
        prior = float(same.mean())
    if not 0 < prior < 1:
        raise ValueError(f"prior must be in (0, 1), got {prior}")
    rng = np.random.default_rng(0)

    def keep(v):
        v = np.sort(v)
        return v if len(v) <= max_keep else np.sort(rng.choice(v, max_keep, replace=False))

    a, b = _fit_logistic(scores, same.astype(float))
    return {"same": keep(scores[same]).tolist(), "different": keep(scores[~same]).tolist(),
            "logistic": [a, b], "prior": prior, "n_same": int(same.sum()),
            "n_different": int((~same).sum())}


def probability_same(cal: dict, score: float) -> float:
    """P(same work | score) = sigmoid(log LR(score) + logit(prior)) (Bayes' rule)."""
    prior = cal.get("prior")
    if prior is None:  # calibrations written before the prior was stored
        prior = cal["n_same"] / (cal["n_same"] + cal["n_different"])
    a, b = cal["logistic"]
    z = a + b * score + math.log(prior / (1 - prior))
    return 1 / (1 + math.exp(-z)) if z > -700 else 0.0


def p_impostor(cal: dict, score: float, n_tracks: int) -> float:
    """Chance that the best of ``n_tracks`` wrong tracks scores >= ``score``.

    With ``t`` the different-work tail P(S >= score) (empirical, with a half count so it
    is never 0), independence gives 1 - (1 - t) ** n_tracks. A query that performs no
    catalogue work has every catalogue track as a wrong track. The empirical tail
    resolves t down to about 1 / len(cal["different"]): p-values smaller than about
    n_tracks / len(cal["different"]) are not resolved (they come out larger, i.e.
    conservative), so calibrate on enough different-work pairs for the catalogue's size.
    """
    diff = np.asarray(cal["different"])
    tail = (len(diff) - np.searchsorted(diff, score, side="left") + 0.5) / (len(diff) + 1)
    return float(1 - (1 - min(1.0, tail)) ** max(1, n_tracks))


def alignment_pairs(feats: list, labels, max_recordings: int = ALIGNMENT_MAX_RECORDINGS,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """Chroma alignment scores of all pairs of a labelled set, for :func:`fit_calibration`.

    Parameters
    ----------
    feats : list of coverhunter.classical.AlignmentFeatures
    labels : sequence, shape (n,)
        Work of each recording.
    max_recordings : int
        Above this many recordings, whole works are drawn (seeded) until it is reached, so
        the same-work pairs stay.

    Returns
    -------
    scores : np.ndarray, shape (n_pairs,)
        ``Qmax / sqrt(N M)`` of each pair (the re-ranking's score, default settings).
    same : np.ndarray of bool, shape (n_pairs,)
    n_used : int
        Recordings aligned.
    """
    from ..classical import alignment_distance_matrix

    labels = np.asarray(labels)
    keep = np.arange(len(labels))
    if len(labels) > max_recordings:
        works = np.unique(labels)
        chosen, n = [], 0
        for w in works[np.random.default_rng(seed).permutation(len(works))]:
            if n >= max_recordings:
                break
            members = np.flatnonzero(labels == w)
            chosen.append(members)
            n += len(members)
        keep = np.sort(np.concatenate(chosen))
    score = 1.0 - alignment_distance_matrix([feats[i] for i in keep])
    iu = np.triu_indices(len(keep), 1)
    lab = labels[keep]
    return score[iu], lab[iu[0]] == lab[iu[1]], len(keep)


__all__ = ["fit_calibration", "probability_same", "p_impostor", "alignment_pairs",
           "ALIGNMENT_MAX_RECORDINGS"]
