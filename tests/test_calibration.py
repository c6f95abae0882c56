"""Score calibration (coverhunter.index.calibration) against simulated scores with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coverhunter.index import fit_calibration, p_impostor, probability_same


def _gauss(x, mu, sd):
    return np.exp(-0.5 * ((x - mu) / sd) ** 2)


@pytest.mark.parametrize("prior", [0.01, 0.2])
def test_probability_follows_bayes_with_the_base_rate(prior):
    """Same-work scores N(0.7, 0.1), different-work N(0.3, 0.1), a share ``prior`` of
    same-work pairs: P(same | x) is known in closed form."""
    rng = np.random.default_rng(0)
    n = 200_000
    same = rng.random(n) < prior
    scores = np.where(same, rng.normal(0.7, 0.1, n), rng.normal(0.3, 0.1, n))
    cal = fit_calibration(scores, same)
    assert cal["prior"] == pytest.approx(prior, rel=0.05)
    for x in (0.3, 0.45, 0.5, 0.55, 0.7):
        fs, fd = _gauss(x, 0.7, 0.1), _gauss(x, 0.3, 0.1)
        truth = prior * fs / (prior * fs + (1 - prior) * fd)
        assert probability_same(cal, x) == pytest.approx(truth, abs=0.02), x


def test_uninformative_scores_give_the_base_rate():
    """Scores that say nothing: P(same | score) is the 1 % base rate, not ~0.5."""
    rng = np.random.default_rng(1)
    n = 100_000
    same = rng.random(n) < 0.01
    scores = rng.normal(0.4, 0.1, n)
    cal = fit_calibration(scores, same)
    for x in (0.3, 0.4, 0.5):
        assert probability_same(cal, x) == pytest.approx(0.01, abs=0.004)


def test_explicit_prior():
    rng = np.random.default_rng(2)
    same = np.r_[np.ones(5000, bool), np.zeros(5000, bool)]
    scores = np.where(same, rng.normal(0.7, 0.1, 10000), rng.normal(0.3, 0.1, 10000))
    cal = fit_calibration(scores, same, prior=0.001)
    # at the midpoint the likelihood ratio is 1, so the answer is the prior itself
    assert probability_same(cal, 0.5) == pytest.approx(0.001, rel=0.25)
    with pytest.raises(ValueError):
        fit_calibration(scores, same, prior=1.0)


def test_p_values_are_uniform_for_queries_with_no_cover():
    """A catalogue of 50 works x 4 tracks; a query that covers none of them. A work's score
    is its best track's, so the best wrong work is the best of 200 wrong tracks. Its
    p-value must be uniform: P(p <= alpha) = alpha."""
    rng = np.random.default_rng(3)
    n_diff = 400_000  # the empirical tail must resolve P(S >= s) ~ alpha / 200
    cal = fit_calibration(
        np.r_[rng.normal(0.8, 0.05, 100), rng.normal(0.3, 0.1, n_diff)],
        np.r_[np.ones(100, bool), np.zeros(n_diff, bool)],
        max_keep=n_diff,
    )
    n_works, per_work, n_queries = 50, 4, 4000
    track_scores = rng.normal(0.3, 0.1, (n_queries, n_works, per_work))
    best = track_scores.max(axis=2).max(axis=1)  # best work = best of its tracks
    p = np.array([p_impostor(cal, s, n_works * per_work) for s in best])
    for alpha in (0.01, 0.05, 0.2, 0.5):
        assert np.mean(p <= alpha) == pytest.approx(alpha, abs=max(0.01, 0.25 * alpha)), alpha
    # counting works instead of tracks (the old rule) declares far too many matches
    p_works = np.array([p_impostor(cal, s, n_works) for s in best])
    assert np.mean(p_works <= 0.05) > 0.15


def test_p_value_of_a_perfect_score_and_monotone():
    cal = {"different": sorted(np.random.default_rng(4).normal(0.3, 0.1, 1000).tolist())}
    assert p_impostor(cal, 2.0, 10) < 0.01
    ps = [p_impostor(cal, s, 100) for s in np.linspace(0, 1, 11)]
    assert all(a >= b for a, b in zip(ps, ps[1:])) and math.isclose(ps[0], 1.0)


def _works_of_melodies(n_works: int, versions: int, seed: int = 3):
    """Chroma of ``versions`` takes of each of ``n_works`` random melodies (each take
    transposed and at its own tempo), with their work labels."""
    from coverhunter.classical import chroma_from_cqt
    from coverhunter.qmax import AlignmentFeatures

    from .test_classical import melody, synthetic_cqt

    rng = np.random.default_rng(seed)
    feats, labels = [], []
    for w in range(n_works):
        source = melody(rng, 60)
        for _ in range(versions):
            cqt = synthetic_cqt(source + int(rng.integers(0, 12)), float(rng.uniform(10, 15)), rng)
            feats.append(AlignmentFeatures.from_chroma(chroma_from_cqt(cqt)))
            labels.append(f"work{w}")
    return feats, labels


def test_alignment_pairs_scores_every_pair_and_covers_score_higher():
    from coverhunter.index.calibration import alignment_pairs

    feats, labels = _works_of_melodies(4, 2)
    scores, same, n_used = alignment_pairs(feats, labels)
    assert n_used == 8 and scores.shape == same.shape == (28,)
    assert same.sum() == 4  # one pair per work
    assert scores[same].min() > scores[~same].max()  # planted versions align, strangers do not
    cal = fit_calibration(scores, same)
    assert p_impostor(cal, scores[same].min(), 10) < p_impostor(cal, scores[~same].max(), 10)


def test_alignment_pairs_draws_whole_works_above_the_limit():
    from coverhunter.index.calibration import alignment_pairs

    feats, labels = _works_of_melodies(5, 3)
    scores, same, n_used = alignment_pairs(feats, labels, max_recordings=5)
    # works are drawn whole until the limit is reached: 2 works of 3 takes
    assert n_used == 6 and len(scores) == 15 and same.sum() == 6
    again = alignment_pairs(feats, labels, max_recordings=5)
    np.testing.assert_array_equal(scores, again[0])  # seeded


def test_alignment_pairs_takes_each_recordings_nearest_strangers_by_the_first_stage():
    from coverhunter.index.calibration import alignment_pairs

    feats, labels = _works_of_melodies(4, 3)  # 12 recordings; 9 of other works for each
    n = len(labels)
    # a first stage that finds recording (i + 3) % 12 nearest among the others, then the rest
    first = np.abs(((np.arange(n)[None, :] - np.arange(n)[:, None]) % n) - 3).astype(float)
    np.fill_diagonal(first, np.nan)
    scores, same, n_used = alignment_pairs(feats, labels, first, fraction=0.1, min_strangers=1)
    # all 12 same-work pairs; each recording's one nearest stranger (round(0.9) = 1): the
    # pairs (i, i + 3) around the circle, 12 of them, none counted twice
    assert n_used == 12 and same.sum() == 12 and (~same).sum() == 12
    everything = alignment_pairs(feats, labels)[0]
    assert len(everything) == n * (n - 1) // 2  # without a first stage: every pair
    # a set this small (9 strangers each, fewer than MIN_STRANGERS) aligns every pair anyway
    assert len(alignment_pairs(feats, labels, first)[0]) == n * (n - 1) // 2


def test_alignment_pairs_align_each_query_with_the_candidates_as_stored():
    """A search aligns a query's fresh chroma with the catalogue's uint8-stored chroma; a
    calibration given the stored side (``candidates``) scores exactly those pairs."""
    from coverhunter.index.calibration import alignment_pairs
    from coverhunter.index.chroma_format import as_stored
    from coverhunter.qmax import qmax_scores

    feats, labels = _works_of_melodies(3, 2)
    stored = [as_stored(f) for f in feats]
    assert all(s.chroma.shape == f.chroma.shape for s, f in zip(stored, feats))
    assert max(np.abs(s.chroma - f.chroma).max() for s, f in zip(stored, feats)) <= 1 / 510 + 1e-6
    scores, same, _ = alignment_pairs(feats, labels, candidates=stored)
    expect = np.concatenate(
        [qmax_scores(feats[i], [stored[j] for j in range(i + 1, len(feats))]) for i in range(len(feats) - 1)]
    )
    np.testing.assert_array_equal(scores, expect)
    np.testing.assert_array_equal(
        same, np.array([labels[i] == labels[j] for i in range(6) for j in range(i + 1, 6)])
    )
    with pytest.raises(ValueError, match="5 candidate features for 6 recordings"):
        alignment_pairs(feats, labels, candidates=stored[:5])


def test_fitted_tail_resolves_small_p_values_of_a_small_calibration():
    """5,000 different-work scores cannot count a tail of 0.01 / 300; the fitted
    exponential tail can. Scores with an exponential upper tail (Gumbel): the best of 300
    wrong tracks gets p <= alpha about alpha of the time; without the tail, never at 0.01."""
    rng = np.random.default_rng(7)
    n_diff, n_tracks, n_queries = 5000, 300, 4000
    cal = fit_calibration(
        np.r_[rng.normal(0.9, 0.05, 100), rng.gumbel(0.3, 0.05, n_diff)],
        np.r_[np.ones(100, bool), np.zeros(n_diff, bool)],
    )
    assert cal["tail"] is not None and cal["tail"]["share"] == pytest.approx(500 / n_diff)
    best = rng.gumbel(0.3, 0.05, (n_queries, n_tracks)).max(axis=1)
    p = np.array([p_impostor(cal, s, n_tracks) for s in best])
    for alpha in (0.01, 0.05, 0.2):
        assert np.mean(p <= alpha) == pytest.approx(alpha, abs=max(0.006, 0.35 * alpha)), alpha
    counted = {k: v for k, v in cal.items() if k != "tail"}  # a calibration without the fit
    assert np.mean(np.array([p_impostor(counted, s, n_tracks) for s in best]) <= 0.01) == 0.0
    ps = [p_impostor(cal, s, n_tracks) for s in np.linspace(0, 2, 41)]
    assert all(a >= b for a, b in zip(ps, ps[1:]))  # still monotone across the switch


def test_p_value_monotone_where_the_tail_takes_over_a_subsampled_calibration():
    """More different-work scores than are kept (20,000): the counted part uses the kept
    subsample, the tail the whole set; the p-value must not rise across the threshold
    (here the subsample counts a little under the tail's share at the threshold)."""
    n_diff = 50_000
    r = np.random.default_rng(0)
    cal = fit_calibration(
        np.r_[r.normal(0.9, 0.05, 50), r.gumbel(0.3, 0.05, n_diff)],
        np.r_[np.ones(50, bool), np.zeros(n_diff, bool)],
    )
    u = cal["tail"]["threshold"]
    grid = np.r_[np.linspace(u - 0.02, u + 0.02, 81), u - 1e-9, u, u + 1e-9]
    ps = [p_impostor(cal, s, 100) for s in np.sort(grid)]
    assert all(a >= b - 1e-12 for a, b in zip(ps, ps[1:]))


def test_a_list_of_scores_gets_each_score_s_p_value_and_probability():
    """identify calibrates its whole list of matches at once (the calibration's stored
    scores read once): the same numbers as one score at a time, on both sides of the
    fitted tail's threshold; the list's matches keep everything else."""
    from dataclasses import replace

    from coverhunter.index.calibrate import with_calibrations
    from coverhunter.index.calibration import p_impostors
    from coverhunter.index.results import Match

    r = np.random.default_rng(1)
    cal = fit_calibration(
        np.r_[r.normal(0.9, 0.05, 50), r.normal(0.3, 0.1, 5_000)],
        np.r_[np.ones(50, bool), np.zeros(5_000, bool)],
    )
    scores = [0.0, 0.3, cal["tail"]["threshold"], cal["tail"]["threshold"] + 0.05, 0.95, 2.0]
    assert p_impostors(cal, scores, 40) == [p_impostor(cal, s, 40) for s in scores]
    assert p_impostors(cal, [], 40) == []
    matches = [Match(f"w{i}", f"t{i}", s, 1.5, 2.5) for i, s in enumerate(scores)]
    one_by_one = [
        replace(m, probability=probability_same(cal, m.score), p_value=p_impostor(cal, m.score, 40))
        for m in matches
    ]
    assert with_calibrations(matches, cal, scores, 40) == one_by_one
    assert one_by_one[1].query_offset_s == 1.5 and one_by_one[1].p_value == p_impostor(cal, 0.3, 40)
