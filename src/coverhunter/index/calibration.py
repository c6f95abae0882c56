"""Score calibration: P(same work | score) and the impostor p-value of a catalogue match."""

from __future__ import annotations

import math

import numpy as np

# Assumptions, stated once (they are what the numbers mean):
# - Scores are track-pair scores: the best chunk pair of two recordings (cosine). A
#   catalogue work's score is the best over its tracks, so the best wrong work of a
#   query is the best of all the wrong *tracks*, not of the wrong works.
# - Wrong-track scores of one query are independent draws from the different-work
#   distribution measured on the calibration set (labelled recordings like the
#   catalogue's, not the catalogue itself); beyond the top of that distribution its tail
#   is exponential (fit_tail).
# - P(same work | score) is for one pair drawn like the calibration pairs: its base rate
#   (prior) is the share of same-work pairs among them unless given explicitly.
# - The alignment part of a calibration (CatalogueIndex.calibrate) scores pairs by chroma
#   alignment instead; its wrong pairs are each recording's strangers nearest by the
#   search's first stage, the kind a re-ranked search aligns, and every alignment made
#   for a query counts as a wrong-track draw. Its base rate is the embedding part's (all
#   pairs), so that both give P(same work) on the same footing. In a catalogue far larger
#   than the calibration set, the search aligns a smaller and more similar share of it
#   than the calibration's tenth, and these p-values are then optimistic.

# recordings of a calibration set that are aligned for the alignment part of a calibration
# (whole works drawn above it), and the share of the other works' recordings each is aligned
# with: its nearest by the search's first stage, as a search's shortlist holds the
# recordings most like the query (1,000 recordings: about 100,000 alignments, a minute)
ALIGNMENT_MAX_RECORDINGS = 1000
SELECTED_FRACTION = 0.1
# ... and at least this many (all of them in a small set), so that a small calibration set
# still gives enough different-work scores to fit a tail to
MIN_STRANGERS = 20


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


def fit_calibration(
    scores: np.ndarray, same: np.ndarray, max_keep: int = 20000, prior: float | None = None
) -> dict:
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
    return {
        "same": keep(scores[same]).tolist(),
        "different": keep(scores[~same]).tolist(),
        "logistic": [a, b],
        "prior": prior,
        "n_same": int(same.sum()),
        "n_different": int((~same).sum()),
        "tail": fit_tail(scores[~same]),
    }


def fit_tail(different: np.ndarray) -> dict | None:
    """Exponential model of the different-work scores' upper tail (peaks over threshold).

    The ``k - 1`` scores above the threshold ``u`` (the k-th highest; ``k`` a tenth of the
    scores, at most 1,000) exceed it by amounts taken as exponential with mean ``beta``
    (its maximum-likelihood estimate), so ``P(S >= s) = share * exp(-(s - u) / beta)``
    beyond ``u``, with ``share = k / n``. :func:`p_impostor` uses it beyond ``u``, where
    few calibration scores are as high and a catalogue of many recordings needs tail
    probabilities far below 1 / n.

    Returns
    -------
    dict ``{"threshold": u, "beta": beta, "share": share}``, or None with fewer than 200
    scores or no spread among the highest.
    """
    x = np.sort(np.asarray(different, np.float64))[::-1]
    if len(x) < 200:
        return None
    k = int(min(1000, len(x) // 10))
    u = x[k - 1]
    beta = float(np.mean(x[: k - 1] - u))
    if not beta > 0:
        return None
    return {"threshold": float(u), "beta": beta, "share": k / len(x)}


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
    catalogue work has every catalogue track as a wrong track. ``t`` is counted
    among the calibration's different-work scores up to the threshold of its fitted tail
    (:func:`fit_tail`), and taken from that exponential tail beyond it, so that the small
    p-values a large catalogue needs are resolved: counting alone resolves ``t`` only down
    to about 1 / len(cal["different"]), and a score above every calibration score would
    get that count's floor, an optimistic p-value. Calibrations written before the tail
    fit are counted throughout: recalibrate.
    """
    return p_impostors(cal, [score], n_tracks)[0]


def p_impostors(cal: dict, scores, n_tracks: int) -> list[float]:
    """:func:`p_impostor` of each of ``scores`` (a sequence of floats), the calibration's
    different-work scores read once: a search calibrates its whole list of matches, and
    converting a calibration's 20,000 stored scores per match cost identify about a
    tenth of a second a query on an 821-recording index (cProfile)."""
    model = cal.get("tail")
    diff = None
    out = []
    for score in scores:
        if model and score > model["threshold"]:  # beyond the threshold: the fitted exponential tail
            tail = model["share"] * math.exp(-(score - model["threshold"]) / model["beta"])
        else:
            diff = np.asarray(cal["different"]) if diff is None else diff
            tail = (len(diff) - np.searchsorted(diff, score, side="left") + 0.5) / (len(diff) + 1)
            if model:  # never below the tail's own share: the kept scores are a subsample
                tail = max(tail, model["share"])
        # 1 - (1 - t) ** n, exactly
        out.append(1.0 if tail >= 1.0 else float(-math.expm1(max(1, n_tracks) * math.log1p(-tail))))
    return out


def alignment_pairs(
    feats: list,
    labels,
    first_stage: np.ndarray | None = None,
    fraction: float = SELECTED_FRACTION,
    min_strangers: int = MIN_STRANGERS,
    max_recordings: int = ALIGNMENT_MAX_RECORDINGS,
    seed: int = 0,
    candidates: list | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Chroma alignment scores of a labelled set's pairs, for :func:`fit_calibration`.

    Every same-work pair is aligned. Of the different-work pairs, with ``first_stage``
    each recording is aligned with the ``fraction`` of the other works' recordings nearest
    to it by those distances (at least ``min_strangers``, or all): the strangers a re-ranked search aligns are
    the ones its first stage found most like the query, and they align better than
    strangers drawn at random, so a p-value fitted on random pairs would be optimistic.
    Without ``first_stage``, every pair is aligned.

    Parameters
    ----------
    feats : list of coverhunter.qmax.AlignmentFeatures
    labels : sequence, shape (n,)
        Work of each recording.
    first_stage : np.ndarray, shape (n, n), optional
        The search's first-stage distances between the recordings (smaller = closer;
        :func:`coverhunter.rerank.first_stage_matrix`).
    fraction : float
        Share of the other works' recordings each recording is aligned with.
    min_strangers : int
        The fewest of them (all when there are fewer).
    max_recordings : int
        Above this many recordings, whole works are drawn (seeded) until it is reached, so
        the same-work pairs stay.
    candidates : list of coverhunter.qmax.AlignmentFeatures, optional
        The same recordings as a catalogue stores them (:func:`coverhunter.index.chroma_format.as_stored`):
        each pair aligns ``feats[i]`` (the query side) with ``candidates[j]``, as a search
        aligns a query's fresh chroma with the catalogue's stored chroma. Default: ``feats``.

    Returns
    -------
    scores : np.ndarray, shape (n_pairs,)
        ``Qmax / sqrt(N M)`` of each pair (the re-ranking's score, default settings); a
        pair chosen from both sides counts once.
    same : np.ndarray of bool, shape (n_pairs,)
    n_used : int
        Recordings aligned.
    """
    from ..qmax import qmax_scores

    labels = np.asarray(labels)
    if candidates is None:
        candidates = feats
    elif len(candidates) != len(feats):
        raise ValueError(f"{len(candidates)} candidate features for {len(feats)} recordings")
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
    lab = labels[keep]
    n = len(keep)
    near = None if first_stage is None else np.asarray(first_stage, np.float64)[np.ix_(keep, keep)]
    pairs: dict[int, set] = {i: set() for i in range(n)}  # i -> partners j > i
    for i in range(n):
        other = np.flatnonzero(lab != lab[i])
        if near is not None and len(other):
            row = near[i, other]
            m = max(1, min(min_strangers, len(other)), int(round(fraction * len(other))))
            other = other[np.argsort(row, kind="stable")[:m]]
        for j in np.concatenate([np.flatnonzero(lab == lab[i]), other]):
            if j != i:
                pairs[min(i, j)].add(max(i, j))
    scores, same = [], []
    for i in range(n):
        js = sorted(pairs[i])
        if js:
            scores.append(qmax_scores(feats[keep[i]], [candidates[keep[j]] for j in js]))
            same.append(lab[js] == lab[i])
    if not scores:
        return np.zeros(0), np.zeros(0, bool), n
    return np.concatenate(scores), np.concatenate(same), n


__all__ = [
    "fit_calibration",
    "fit_tail",
    "probability_same",
    "p_impostor",
    "p_impostors",
    "alignment_pairs",
    "ALIGNMENT_MAX_RECORDINGS",
    "SELECTED_FRACTION",
    "MIN_STRANGERS",
]
