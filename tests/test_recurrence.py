"""Recurrence-voting first stage (coverhunter.index.recurrence) on small generated chroma."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from coverhunter.index.recurrence import (
    RecurrenceIndex,
    RecurrenceParams,
    band_scores,
    canonical_shift,
    roll_shingles,
    shingles,
)


def melody_chroma(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """Random chroma with some musical structure: held notes over held chords, (T, 12)."""
    x = np.zeros((n_frames, 12), np.float32)
    t = 0
    chord_root = rng.integers(12)
    while t < n_frames:
        hold = int(rng.integers(2, 7))
        if rng.random() < 0.3:
            chord_root = rng.integers(12)
        note = (chord_root + rng.choice([0, 2, 4, 5, 7, 9, 11])) % 12
        x[t : t + hold, note] += 1.0
        x[t : t + hold, [chord_root, (chord_root + 4) % 12, (chord_root + 7) % 12]] += 0.4
        t += hold
    x += 0.15 * rng.random(x.shape).astype(np.float32)
    return x / x.max(1, keepdims=True)


def partial_cover(rng: np.random.Generator, x: np.ndarray, share=0.4, shift=3, stretch=1.1) -> np.ndarray:
    """A ``share`` excerpt of ``x``, transposed by ``shift`` and slowed by ``stretch``, noisy."""
    n = int(len(x) * share)
    start = int(rng.integers(0, len(x) - n))
    part = x[start : start + n]
    pos = np.arange(0, n - 1, 1.0 / stretch)  # stretched time axis, linear interpolation
    lo = np.floor(pos).astype(int)
    frac = (pos - lo)[:, None]
    y = (1 - frac) * part[lo] + frac * part[np.minimum(lo + 1, n - 1)]
    y = np.roll(y, shift, axis=1) + 0.1 * rng.random(y.shape)
    return (y / y.max(1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def catalogue():
    rng = np.random.default_rng(7)
    chromas = [melody_chroma(rng, int(rng.integers(60, 140))) for _ in range(1000)]
    return rng, chromas


@pytest.fixture(scope="module")
def index(catalogue):
    _, chromas = catalogue
    idx = RecurrenceIndex(RecurrenceParams(hub_probes=3000))  # the shipped settings, fewer probes
    idx.add(np.arange(len(chromas)), chromas)
    return idx


def test_planted_partial_cover_in_top10(catalogue, index):
    rng, chromas = catalogue
    for target in (3, 500, 998):
        query = partial_cover(rng, chromas[target])
        ids, scores = index.search(query, k=10)
        assert target in ids.tolist(), (target, ids, scores)
        assert np.all(np.diff(scores) <= 0)


def test_all_transpositions_and_slopes_find_the_cover(catalogue):
    rng, chromas = catalogue
    idx = RecurrenceIndex(
        RecurrenceParams(
            transpositions="all",
            slopes=(0.9, 1.0, 1.1),
            stride=2,
            vote="margin",
            hub_power=0.5,
            hub_probes=2000,
        )
    )
    idx.add(np.arange(200), chromas[:200])
    query = partial_cover(rng, chromas[42], shift=5)
    ids, _ = idx.search(query, k=10)
    assert 42 in ids.tolist()


def test_hnsw_beyond_exact_max(catalogue):
    rng, chromas = catalogue
    idx = RecurrenceIndex(RecurrenceParams(exact_max=5000, float16=True, hub_probes=1000, centre="shingle"))
    idx.add(np.arange(100), chromas[:100])
    assert idx.memory_report()["kind"] == "hnsw"
    ids, _ = idx.search(partial_cover(rng, chromas[10]), k=10)
    assert 10 in ids.tolist()


def test_save_load_round_trip(tmp_path, catalogue):
    rng, chromas = catalogue
    idx = RecurrenceIndex(RecurrenceParams(hub_power=0.5, hub_probes=2000, slopes=(0.95, 1.05)))
    idx.add([f"t{i}" for i in range(150)], chromas[:150])
    query = partial_cover(rng, chromas[7])
    before = idx.search(query, k=20)
    idx.save(tmp_path / "rec")
    again = RecurrenceIndex.load(tmp_path / "rec")
    after = again.search(query, k=20)
    assert again.params == idx.params
    assert before[0].tolist() == after[0].tolist()
    np.testing.assert_allclose(before[1], after[1])
    assert not list((tmp_path / "rec").glob(".*tmp"))  # no temporary left behind
    rep = again.memory_report()
    assert rep["recordings"] == 150 and rep["total_bytes"] > rep["shingles"] * again.params.dim * 4


def test_query_stride_searches_every_other_shingle(catalogue, index):
    rng, chromas = catalogue
    query = partial_cover(rng, chromas[500])
    vecs, frames, rolls = index.query_vectors(query)
    every = RecurrenceIndex(replace(index.params, query_stride=1))
    every.index, every.starts, every.rolls, every.hubness = (
        index.index,
        index.starts,
        index.rolls,
        index.hubness,
    )
    every.track_ids = index.track_ids
    v1, f1, _ = every.query_vectors(query)
    stride = index.params.query_stride
    keys = index.params.query_keys
    assert len(vecs) == keys * len(range(0, len(v1) // keys, stride))
    assert set(np.unique(frames) % stride) == {0}  # each vector keeps its own frame
    assert 500 in every.search(query, k=10)[0].tolist()


def test_a_coarser_stride_searches_fewer_shingles_and_still_finds_the_cover(catalogue, index):
    """``scores(stride=...)``: a cheaper search with every n-th query shingle."""
    _, chromas = catalogue
    query = partial_cover(np.random.default_rng(11), chromas[500], share=0.8)  # 30 of 30 seeds found
    default, _, _ = index.query_vectors(query)
    stride = 2 * index.params.query_stride
    coarse, frames, _ = index.query_vectors(query, stride=stride)
    assert len(coarse) < len(default)
    assert set(np.unique(frames) % stride) == {0}
    assert int(np.argmax(index.scores(query, stride=stride))) == 500
    np.testing.assert_array_equal(index.scores(query, stride=index.params.query_stride), index.scores(query))
    with pytest.raises(ValueError, match="stride"):
        index.scores(query, stride=0)


def test_a_query_searched_at_several_tempo_rates_scores_its_best_rate(catalogue, index):
    """``query_rates``: the query's chroma resampled in time, each rate searched and voted
    on its own; a recording scores its best rate."""
    from coverhunter.index.recurrence_maths import resample_time

    _, chromas = catalogue
    x = chromas[500]
    assert np.array_equal(resample_time(x, 1.0), x)
    fast = resample_time(x, 2.0)
    assert abs(len(fast) - len(x) / 2) <= 1 and np.allclose(fast.max(axis=1), 1.0)
    np.testing.assert_allclose(fast[1], x[2], atol=1e-6)  # on a frame: that frame, renormalised
    query = partial_cover(np.random.default_rng(5), x, share=0.8, stretch=1.3)
    rates = index.params.query_rates
    assert len(rates) > 1 and 1.0 in rates
    each = [index.scores(query, rates=(r,)) for r in rates]
    both = index.scores(query)
    np.testing.assert_allclose(both, np.max(each, axis=0))
    assert int(np.argmax(both)) == 500
    with pytest.raises(ValueError, match="query_rates"):
        RecurrenceParams(query_rates=(1.0, 0.0))


def test_an_index_saved_before_query_stride_loads_with_the_default(tmp_path, catalogue):
    _, chromas = catalogue
    idx = RecurrenceIndex(RecurrenceParams(hub_probes=500, query_stride=1))
    idx.add(np.arange(30), chromas[:30])
    idx.save(tmp_path / "rec")
    params = json.loads((tmp_path / "rec" / "params.json").read_text())
    del params["query_stride"]
    (tmp_path / "rec" / "params.json").write_text(json.dumps(params))
    again = RecurrenceIndex.load(tmp_path / "rec")
    assert again.params.query_stride == RecurrenceParams().query_stride
    assert again.search(chromas[4], k=3)[0][0] == 4


def test_exclude_leaves_the_query_out(catalogue, index):
    _, chromas = catalogue
    ids, _ = index.search(chromas[5], k=5)
    assert ids[0] == 5
    ids, _ = index.search(chromas[5], k=5, exclude=5)
    assert 5 not in ids.tolist()


def test_error_paths(tmp_path, catalogue):
    _, chromas = catalogue
    idx = RecurrenceIndex()
    with pytest.raises(ValueError, match="empty"):
        idx.search(chromas[0], k=5)
    with pytest.raises(ValueError, match="track ids"):
        idx.add([1, 2], chromas[:1])
    idx.add([1, 2], chromas[:2])
    ids, scores = idx.search(chromas[0][:3], k=5)  # shorter than one 7-frame shingle
    assert len(ids) == 0 and len(scores) == 0
    with pytest.raises(ValueError, match="shape"):
        idx.search(np.zeros((50, 11), np.float32), k=5)
    with pytest.raises(ValueError, match="k must"):
        idx.search(chromas[0], k=0)
    with pytest.raises(ValueError):
        RecurrenceParams(vote="nope")
    with pytest.raises(ValueError):
        RecurrenceParams(slopes=())
    with pytest.raises(FileNotFoundError):
        RecurrenceIndex.load(tmp_path / "nothing")


def test_pure_functions():
    rng = np.random.default_rng(0)
    x = shingles(rng.random((20, 12)), m=3)
    assert x.shape == (18, 36)
    assert shingles(rng.random((2, 12)), m=3).shape == (0, 36)
    k = canonical_shift(x)
    canon = roll_shingles(x, k)
    assert np.all(canonical_shift(canon) == 0)
    # a transposed shingle has the same canonical form
    moved = roll_shingles(x, 5)
    np.testing.assert_allclose(roll_shingles(moved, canonical_shift(moved)), canon)
    # votes along one diagonal beat as many scattered ones
    track = np.array([0] * 5 + [1] * 5)
    q = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4], float)
    c = np.array([10, 11, 12, 13, 14, 3, 40, 17, 90, 0], float)
    s = band_scores(2, track, q, c, np.ones(10), np.zeros(10, np.int64), (1.0,), 3)
    assert s[0] == 5 and s[1] < 5


def _band_scores_reference(n_tracks, track, q_frame, c_frame, weight, group, slopes, band, one_vote=False):
    """The numpy band scoring that ``band_scores``'s compiled pass replaced (one ``np.unique``
    of the band keys per ratio and grid), kept as its reference."""
    best = np.zeros(n_tracks)
    if len(track) == 0:
        return best
    n_groups = int(group.max()) + 1
    qf = q_frame.astype(np.int64)
    n_q = int(qf.max()) + 1
    for s in slopes:
        offset = q_frame - s * c_frame
        for shift in (0.0, 0.5):
            b = np.floor(offset / band + shift).astype(np.int64)
            b -= b.min()
            n_b = int(b.max()) + 1
            key = (track.astype(np.int64) * n_groups + group) * n_b + b
            w = weight
            if one_vote:  # the best vote of each (query shingle, band)
                sub = key * n_q + qf
                order = np.lexsort((-w, sub))
                first = np.ones(len(sub), bool)
                first[1:] = sub[order][1:] != sub[order][:-1]
                key, w = key[order][first], w[order][first]
            uniq, inv = np.unique(key, return_inverse=True)
            total = np.bincount(inv, weights=w)
            np.maximum.at(best, uniq // (n_groups * n_b), total)
    return best


@pytest.mark.parametrize("one_vote", [True, False])
def test_band_scores_match_the_numpy_reference(one_vote):
    rng = np.random.default_rng(3)
    slopes = RecurrenceParams().slopes
    for trial in range(20):
        v, n_tracks = int(rng.integers(1, 3000)), int(rng.integers(1, 200))
        track = rng.integers(0, n_tracks, v)
        q = (rng.integers(0, 30, v) * 4).astype(np.float64)
        c = rng.integers(0, 400, v).astype(np.float64)
        w = rng.random(v) if trial % 2 else np.round(rng.random(v), 1)  # with ties
        g = rng.integers(0, 12, v)
        got = band_scores(n_tracks, track, q, c, w, g, slopes, 16, one_vote)
        want = _band_scores_reference(n_tracks, track, q, c, w, g, slopes, 16, one_vote)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert band_scores(5, *(np.zeros(0),) * 5, slopes, 16).tolist() == [0.0] * 5


def test_vote_matrix_leaves_each_query_out_of_its_own_search(catalogue):
    from coverhunter.index.recurrence import vote_matrix

    rng, chromas = catalogue
    refs = chromas[:40]
    queries = [partial_cover(rng, refs[5]), partial_cover(rng, refs[17])]
    votes = vote_matrix(queries, refs, RecurrenceParams(hub_probes=500))
    assert votes.shape == (2, 40) and votes.dtype == np.float32
    assert int(np.argmax(votes[0])) == 5 and int(np.argmax(votes[1])) == 17
    # all-vs-all: the planted cover finds its source, and nobody votes for itself
    pool = refs + [partial_cover(rng, refs[5])]
    sym = vote_matrix(pool, None, RecurrenceParams(hub_probes=500))
    assert sym.shape == (41, 41) and np.all(np.diag(sym) == 0)
    assert int(np.argmax(sym[40])) == 5
    # the same scores as one index's search
    idx = RecurrenceIndex(RecurrenceParams(hub_probes=500))
    idx.add(np.arange(40), refs)
    ids, scores = idx.search(queries[0], k=3)
    np.testing.assert_allclose(votes[0][ids], scores, rtol=1e-6)
    assert vote_matrix([], refs).shape == (0, 40)
