"""Classical baselines: chroma, OTI, 2D Fourier magnitude, cross-recurrence and Qmax."""

import numpy as np
import pytest

from coverhunter import classical as C
from coverhunter import qmax as Q


def synthetic_cqt(bins: np.ndarray, frames_per_note: float, rng, n_bins: int = 96) -> np.ndarray:
    """A CQT in dB re. max: one note per step (fundamental, octave, fifth above), noise floor."""
    n = int(round(len(bins) * frames_per_note))
    idx = np.minimum((np.arange(n) / frames_per_note).astype(int), len(bins) - 1)
    mag = rng.uniform(0, 0.02, (n, n_bins))
    for h, amp in ((0, 1.0), (12, 0.5), (19, 0.3)):
        b = np.clip(bins[idx] + h, 0, n_bins - 1)
        mag[np.arange(n), b] += amp
    db = 20 * np.log10(mag + 1e-9)
    return (db - db.max()).astype(np.float32)


def melody(rng, n_notes: int = 60) -> np.ndarray:
    """Random pitch-class walk in bins 36..59 with a few repeats (a tonal-ish melody)."""
    steps = rng.choice([-5, -3, -2, -1, 0, 1, 2, 3, 4, 5, 7], n_notes)
    return 36 + (np.cumsum(steps) % 24)


def test_chroma_folds_octaves_and_normalises():
    rng = np.random.default_rng(0)
    cqt = synthetic_cqt(np.array([40] * 10), 10, rng)  # bin 40 -> pitch class 4
    ch = C.chroma_from_cqt(cqt, block=10)
    assert ch.shape == (10, 12) and ch.dtype == np.float32
    assert np.all(ch.argmax(1) == 4)
    np.testing.assert_allclose(ch.max(1), 1.0, rtol=1e-6)
    # a trailing partial block is kept, and silence stays zero
    silent = np.full((25, 96), -100.0, np.float32)
    ch2 = C.chroma_from_cqt(silent, block=10)
    assert ch2.shape == (3, 12) and not ch2.any()


def test_uint8_round_trip():
    ch = np.random.default_rng(1).uniform(0, 1, (30, 12)).astype(np.float32)
    back = C.chroma_from_uint8(C.chroma_to_uint8(ch))
    assert np.abs(back - ch).max() <= 1 / 510 + 1e-6


@pytest.mark.parametrize("shift", [0, 3, 7, 11])
def test_oti_recovers_transposition(shift):
    rng = np.random.default_rng(shift)
    ch = C.chroma_from_cqt(synthetic_cqt(melody(rng), 10, rng))
    transposed = np.roll(ch, shift, axis=1)
    k = Q.optimal_transposition(Q.global_profile(ch), Q.global_profile(transposed))
    assert k == (-shift) % 12
    np.testing.assert_allclose(np.roll(transposed, k, axis=1), ch)


def test_2dftm_invariant_to_pitch_and_time_shift():
    rng = np.random.default_rng(2)
    ch = C.chroma_from_cqt(synthetic_cqt(melody(rng, 80), 12, rng))
    # one patch: exactly invariant to circular shifts in pitch and time
    p = ch[:75].T.astype(np.float64)
    ref = C.patch_2dftm(p)
    np.testing.assert_allclose(C.patch_2dftm(np.roll(p, 5, axis=0)), ref, atol=1e-9)
    np.testing.assert_allclose(C.patch_2dftm(np.roll(p, 17, axis=1)), ref, atol=1e-9)
    # whole recording: exactly invariant to transposition
    s = C.fourier_summary(ch)
    np.testing.assert_allclose(C.fourier_summary(np.roll(ch, 4, axis=1)), s, atol=1e-6)
    # a delayed copy (4 s of silence first) stays far closer than another melody
    long = C.chroma_from_cqt(synthetic_cqt(melody(rng, 200), 12, rng))
    s = C.fourier_summary(long)
    delayed = np.concatenate([np.zeros((10, 12), np.float32), long])
    other = C.chroma_from_cqt(synthetic_cqt(melody(np.random.default_rng(3), 200), 12, rng))
    d_delay = np.linalg.norm(C.fourier_summary(delayed) - s)
    d_other = np.linalg.norm(C.fourier_summary(other) - s)
    assert d_delay < 0.25 * d_other


def test_summary_of_a_long_recording_takes_a_bounded_number_of_patches():
    rng = np.random.default_rng(4)
    ch = C.chroma_from_cqt(synthetic_cqt(melody(rng, 400), 12, rng))  # 480 chroma frames
    everything = dict(max_patches=10**9)
    # up to max_patches windows: exactly the median over all of them
    np.testing.assert_array_equal(
        C.fourier_summary(ch, patch=75), C.fourier_summary(ch, patch=75, **everything)
    )
    # beyond: every n-th window, close to the full median, at a fraction of the cost
    few = C.fourier_summary(ch, patch=75, max_patches=40)
    np.testing.assert_array_equal(few, C.fourier_summary(ch, patch=75, hop=-(-(480 - 75 + 1) // 40)))
    assert float(few @ C.fourier_summary(ch, patch=75, **everything)) > 0.99
    # the multi-scale summary is its parts, each of unit length
    ms = C.multiscale_summary(ch, (75, 300))
    assert ms.shape == (C.summary_size((75, 300)),) == (12 * 38 + 12 * 151,)
    np.testing.assert_array_equal(ms[:456], C.fourier_summary(ch, patch=75))
    assert np.linalg.norm(ms[456:]) == pytest.approx(1.0, abs=1e-5)


def test_qmax_known_values():
    # a clean diagonal of length 5 gives Qmax 5; an empty plot gives 0
    assert Q.qmax_pair(np.eye(5, dtype=bool)) == 5
    assert Q.qmax_pair(np.zeros((4, 6), bool)) == 0
    # a diagonal broken by one missing cell: a gap onset of 5 costs more than the 3 cells
    # before it, so the path restarts (Qmax 3); an onset of 2 leaves 1, then 3 more cells;
    # an onset of 0.5 bridges it: 3 - 0.5 + 3
    r = np.zeros((7, 7), bool)
    r[[0, 1, 2, 4, 5, 6], [0, 1, 2, 4, 5, 6]] = True
    assert Q.qmax_pair(r, gap_onset=5.0) == 3
    assert Q.qmax_pair(r, gap_onset=2.0) == 4
    assert Q.qmax_pair(r, gap_onset=0.5) == 5.5
    # a path with a tempo change (steps of (2, 1)) is followed without penalty
    r = np.zeros((20, 10), bool)
    r[np.arange(0, 20, 2), np.arange(10)] = True
    assert Q.qmax_pair(r) == 10


def test_qmax_batch_matches_single_pairs():
    rng = np.random.default_rng(4)
    crps = rng.random((5, 30, 40)) < 0.15
    batch = Q.qmax_batch(crps)
    single = [Q.qmax_pair(c) for c in crps]
    np.testing.assert_allclose(batch, single)
    # padding with False never changes the result
    padded = np.zeros((5, 50, 60), bool)
    padded[:, :30, :40] = crps
    np.testing.assert_allclose(Q.qmax_batch(padded), batch)


def _qmax_by_definition(r: np.ndarray, onset: float, ext: float) -> float:
    """Serra et al. (2009)'s recursion written out cell by cell, as the paper states it."""
    n, m = r.shape
    q = np.zeros((n, m))

    def at(i, j):
        return q[i, j] if i >= 0 and j >= 0 else 0.0

    def gap(i, j):
        return onset if i >= 0 and j >= 0 and r[i, j] else ext

    for i in range(n):
        for j in range(m):
            prev = [(i - 1, j - 1), (i - 2, j - 1), (i - 1, j - 2)]
            if r[i, j]:
                q[i, j] = max(at(a, b) for a, b in prev) + 1
            else:
                q[i, j] = max([0.0] + [at(a, b) - gap(a, b) for a, b in prev])
    return float(q.max())


def test_qmax_batch_is_the_published_recursion():
    rng = np.random.default_rng(11)
    for onset, ext in [(2.0, 0.5), (1.0, 0.25), (0.7, 0.3)]:
        crps = rng.random((6, 17, 23)) < rng.uniform(0.05, 0.5)
        crps[0] |= np.eye(17, 23, k=2, dtype=bool)  # a long diagonal with noise around it
        lengths = np.array([23, 23, 20, 9, 1, 23])
        for c, n_cols in zip(crps, lengths):
            c[:, n_cols:] = False
        want = [_qmax_by_definition(c, onset, ext) for c in crps]
        np.testing.assert_allclose(Q.qmax_batch(crps, onset, ext), want, rtol=1e-6)
        np.testing.assert_allclose(Q.qmax_batch(crps, onset, ext, lengths), want, rtol=1e-6)


def test_optimal_transpositions_match_one_by_one():
    rng = np.random.default_rng(2)
    a, bs = rng.random(12), rng.random((9, 12))
    want = [Q.optimal_transposition(a, b) for b in bs]
    np.testing.assert_array_equal(Q.optimal_transpositions(a, bs), want)
    assert Q.optimal_transpositions(a, np.zeros((0, 12))).shape == (0,)


def _stretch(ch: np.ndarray, rate: float) -> np.ndarray:
    pos = np.arange(int(len(ch) / rate)) * rate
    return ch[np.minimum(pos.astype(int), len(ch) - 1)]


@pytest.mark.parametrize("chroma", [C.CHROMA_PARAMS, C.LEGACY_CHROMA_PARAMS])
def test_qmax_finds_planted_transposed_time_stretched_match(chroma):
    rng = np.random.default_rng(5)
    kw = dict(lowest_octave=chroma[0], power=chroma[1])
    source = melody(rng, 80)
    query = C.chroma_from_cqt(synthetic_cqt(source, 12, rng), **kw)
    # the cover: 5 semitones up, 25 % slower, starts 10 notes later, with noise
    cover = C.chroma_from_cqt(synthetic_cqt(source[10:] + 5, 15, rng), **kw)
    distractors = [
        C.chroma_from_cqt(synthetic_cqt(melody(rng, int(rng.integers(50, 90))), 12, rng), **kw)
        for _ in range(12)
    ]
    cands = distractors[:6] + [_stretch(cover, 1.0)] + distractors[6:]
    feats = [Q.AlignmentFeatures.from_chroma(c) for c in cands]
    scores = Q.qmax_scores(Q.AlignmentFeatures.from_chroma(query), feats)
    assert scores.shape == (13,)
    assert int(np.argmax(scores)) == 6
    # clearly ahead of the best distractor (x 1.2996 with the default chroma here)
    assert scores[6] > 1.25 * np.sort(scores)[-2]
    # the all-pairs matrix agrees with the one-query scores, and is symmetric
    d = Q.alignment_distance_matrix([Q.AlignmentFeatures.from_chroma(query)] + feats)
    np.testing.assert_allclose(1 - d[0, 1:], scores, atol=1e-6)
    np.testing.assert_allclose(d, d.T, atol=1e-6)


def test_small_batches_give_same_scores():
    rng = np.random.default_rng(6)
    feats = [
        Q.AlignmentFeatures.from_chroma(
            C.chroma_from_cqt(synthetic_cqt(melody(rng, int(rng.integers(20, 60))), 10, rng))
        )
        for _ in range(6)
    ]
    a = Q.qmax_scores(feats[0], feats[1:])
    b = Q.qmax_scores(feats[0], feats[1:], max_cells=1)  # one pair per batch
    np.testing.assert_allclose(a, b)


def test_chroma_leaves_out_the_bass_octaves_and_weighs_the_strongest_line():
    rng = np.random.default_rng(0)
    # a bass note (bin 14, octave 1: pitch class 2) under a quieter melody note (bin 40: 4)
    mag = rng.uniform(0, 0.01, (20, 96))
    mag[:, 14], mag[:, 40], mag[:, 45] = 1.0, 0.5, 0.3  # 45: a quieter accompaniment note (9)
    cqt = (20 * np.log10(mag / mag.max())).astype(np.float32)
    all_octaves = C.chroma_from_cqt(cqt, lowest_octave=0, power=1.0)
    assert np.all(all_octaves.argmax(1) == 2)  # the bass dominates a chroma of every octave
    ch = C.chroma_from_cqt(cqt)  # the default leaves out C1-B2
    assert C.CHROMA_PARAMS == (2, 1.5) and np.all(ch.argmax(1) == 4) and ch[:, 2].max() < 0.1
    # power 1.5 widens the gap between the melody and the quieter note: 0.3 / 0.5 -> ~0.46
    np.testing.assert_allclose(ch[:, 9], (0.3 / 0.5) ** 1.5, atol=0.02)
    np.testing.assert_allclose(C.chroma_from_cqt(cqt, power=1.0)[:, 9], 0.6, atol=0.02)
    with pytest.raises(ValueError, match="lowest_octave"):
        C.chroma_from_cqt(cqt, lowest_octave=8)
    with pytest.raises(ValueError, match="power"):
        C.chroma_from_cqt(cqt, power=0.0)


def test_projection_records_its_chroma():
    rng = np.random.default_rng(0)
    proj = C.SummaryProjection.fit(rng.random((30, 456)).astype(np.float32), dims=3)
    assert proj.chroma == C.CHROMA_PARAMS
    assert C.SummaryProjection.from_state(proj.to_state()).chroma == C.CHROMA_PARAMS
    old = {k: v for k, v in proj.to_state().items() if k != "chroma"}  # written before it existed
    assert C.SummaryProjection.from_state(old).chroma == C.LEGACY_CHROMA_PARAMS
