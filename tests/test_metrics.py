import json
import time

import numpy as np
import pytest

from coverhunter.embed import chunk_starts, distance_matrix
from coverhunter.metrics import evaluate_distances, pairs_exclusion, self_exclusion

from .conftest import reference_dir


def _case(name):
    ref = reference_dir()
    exp = json.loads((ref / "metrics_expected.json").read_text())[name]
    labels = np.load(ref / "metrics_labels.npy")
    files = {
        "self": ("metrics_dist.npy", None, None),
        "query_ref": ("metrics_qr_dist.npy", "metrics_qr_query_labels.npy", None),
        "edge": ("metrics_edge_dist.npy", "metrics_edge_query_labels.npy", "metrics_edge_ref_labels.npy"),
    }[name]
    dist = np.load(ref / files[0])
    q = np.load(ref / files[1]) if files[1] else labels
    r = np.load(ref / files[2]) if files[2] else labels
    return dist, q, r, exp


@pytest.mark.parametrize("name", ["self", "query_ref", "edge"])
def test_original_mode_matches_reference_exactly(name):
    dist, q, r, exp = _case(name)
    rep = evaluate_distances(dist, q, r, mode="original", topk=10000)
    assert rep.map == pytest.approx(exp["map"], abs=1e-12)
    assert rep.top10 == pytest.approx(exp["top10"], abs=1e-12)
    assert rep.mr1 == pytest.approx(exp["rank1"], abs=1e-12)
    assert rep.hit_rate == pytest.approx(exp["hit_rate"], abs=1e-12)
    np.testing.assert_allclose(rep.per_query_ap, exp["per_query_ap"], atol=1e-12)
    assert rep.per_query_rank1 == exp["per_query_rank1"]


def test_chunk_distance_matrix_and_metrics_match_reference():
    ref = reference_dir()
    exp = json.loads((ref / "metrics_expected.json").read_text())["chunk_embed_dist"]
    emb = np.load(ref / "evaldist_chunk_embeds.npy")
    groups = [emb[[i for i, u in enumerate(exp["chunk_utts"]) if u == rec]] for rec in exp["recordings"]]
    dist = distance_matrix(groups, groups)
    expected = np.load(ref / "evaldist_expected_dist.npy")
    off = ~np.eye(6, dtype=bool)
    np.testing.assert_allclose(dist[off], expected[off], atol=1e-6)
    np.fill_diagonal(dist, -1)
    rep = evaluate_distances(dist, exp["labels"], exp["labels"], mode="original", topk=10000)
    assert rep.map == pytest.approx(exp["map"], abs=1e-12) and rep.per_query_rank1 == exp["per_query_rank1"]


def test_standard_definitions_fix_the_quirks():
    dist, q, r, _ = _case("edge")
    exclude = dist < 0
    exclude[3, 4] = False  # -1e-9 is a real (rounding) distance, not an exclusion
    rep = evaluate_distances(dist, q, r, exclude=exclude)
    assert rep.n_without_relevant == 1 and rep.n_queries == 5  # query 4 left out of the means
    assert rep.per_query_rank1[4] == 0
    assert rep.mr1 == pytest.approx(np.mean([x for x in rep.per_query_rank1 if x > 0]))


def test_hand_computed_ap_and_pessimistic_ties():
    # query 0 (work A): refs ranked B, A, B, A -> AP = (1/2 + 2/4) / 2
    dist = np.array([[0.1, 0.2, 0.3, 0.4]])
    rep = evaluate_distances(dist, ["A"], ["B", "A", "B", "A"])
    assert rep.map == pytest.approx(0.5) and rep.mr1 == 2 and rep.hit_rate == 0
    assert rep.top10 == pytest.approx(0.2)
    # constant distances: no credit from the reference order
    flat = np.zeros((1, 4))
    worst = evaluate_distances(flat, ["A"], ["A", "A", "B", "B"])
    assert worst.map == pytest.approx((1 / 3 + 2 / 4) / 2) and worst.mr1 == 3
    orig = evaluate_distances(flat, ["A"], ["A", "A", "B", "B"], mode="original")
    assert orig.map == 1.0  # the original's stable sort rewards list order


def test_exclusion_masks_and_errors():
    dist = np.array([[0.0, 0.5], [0.5, 0.0]])
    rep = evaluate_distances(dist, ["A", "A"], ["A", "A"], exclude=self_exclusion(2))
    assert rep.map == 1.0 and rep.mr1 == 1
    m = pairs_exclusion((2, 3), [(0, 1), (1, 2)])
    assert m.sum() == 2 and m[0, 1] and m[1, 2]
    with pytest.raises(ValueError, match="outside"):
        pairs_exclusion((2, 3), [(5, 0)])
    with pytest.raises(ValueError, match="does not match"):
        evaluate_distances(np.zeros((2, 3)), ["a"], ["b", "c", "d"])
    with pytest.raises(ValueError, match="mode"):
        evaluate_distances(dist, ["A", "A"], ["A", "A"], mode="fancy")


def test_bootstrap_interval_contains_the_estimate():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(20), 3)
    d = rng.random((60, 60)) + (labels[:, None] != labels[None, :]) * 0.3
    rep = evaluate_distances(d, labels, labels, exclude=self_exclusion(60), bootstrap=200)
    lo, hi = rep.ci["map"]
    assert lo < rep.map < hi


def test_large_evaluation_is_fast_and_blockwise():
    n = 3000
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 600, n)
    d = rng.random((n, n))
    t0 = time.perf_counter()
    rep = evaluate_distances(d, labels, labels, exclude=self_exclusion(n), block=256)
    assert time.perf_counter() - t0 < 30
    small = evaluate_distances(d[:300, :], labels[:300], labels, exclude=self_exclusion(n)(0, 300))
    assert rep.per_query_ap[:300] == pytest.approx(small.per_query_ap)
    # distances asked for by blocks (never the whole matrix) give the same report
    calls = []
    lazy = evaluate_distances(
        lambda a, b: calls.append((a, b)) or d[a:b], labels, labels, exclude=self_exclusion(n), block=1000
    )
    assert calls == [(0, 1000), (1000, 2000), (2000, 3000)]
    assert lazy.per_query_ap == pytest.approx(rep.per_query_ap) and lazy.map == pytest.approx(rep.map)


def test_chunk_windows_cover_the_tail():
    assert chunk_starts(10, 4, 3) == [0, 3, 6]
    assert chunk_starts(11, 4, 4) == [0, 4, 7]  # the last window ends at frame 11
    assert chunk_starts(3, 4, 2) == [0]
    with pytest.raises(ValueError):
        chunk_starts(10, 0, 1)


def test_mean_distance_mode():
    a = [np.array([[1.0, 0.0]]), np.array([[0.0, 1.0], [1.0, 0.0]])]
    d = distance_matrix(a, a, "mean")
    assert d[0, 0] == pytest.approx(0.0, abs=1e-6) and 0 < d[0, 1] < 1
    assert distance_matrix(a, a, "min")[0, 1] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        distance_matrix(a, a, "max")


def _reference_ap(d, q, r, drop, pessimistic):
    """Brute force: sort each row (ties: irrelevant first, or reference order)."""
    aps, firsts = [], []
    for i in range(len(q)):
        items = [(d[i, j], (r[j] == q[i]) if pessimistic else 0, j) for j in range(len(r)) if not drop[i, j]]
        items.sort()
        rel = [r[j] == q[i] for _, _, j in items]
        hits = np.cumsum(rel)
        ranks = [k + 1 for k, x in enumerate(rel) if x]
        aps.append(np.mean([hits[k - 1] / k for k in ranks]) if ranks else 0.0)
        firsts.append(ranks[0] if ranks else 0)
    return aps, firsts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranks_by_counting_equal_a_full_sort(seed):
    rng = np.random.default_rng(seed)
    q, r = rng.integers(0, 5, 40), rng.integers(0, 5, 60)
    d = np.round(rng.random((40, 60)) * 4) / 4  # many ties
    drop = rng.random((40, 60)) < 0.1
    std = evaluate_distances(d, q, r, exclude=drop, block=7)
    ap, first = _reference_ap(d, q, r, drop, pessimistic=True)
    np.testing.assert_allclose(std.per_query_ap, ap, atol=1e-12)
    assert std.per_query_rank1 == first
    dneg = np.where(drop, -1.0, d)
    orig = evaluate_distances(dneg, q, r, mode="original", block=9)
    ap, first = _reference_ap(d, q, r, drop, pessimistic=False)
    np.testing.assert_allclose(orig.per_query_ap, ap, atol=1e-12)
    assert orig.per_query_rank1 == first


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_label_group_path_equals_the_mask_path(dtype):
    """Self-exclusion and no exclusion take a path without (b, n) masks; an explicit mask
    of the same pairs takes the general one: every per-query number must agree, with
    ties, NaNs, infinities and string labels."""
    from coverhunter.metrics import self_exclusion

    rng = np.random.default_rng(3)
    n = 300
    labels = np.array([f"w{i}" for i in rng.integers(0, 40, n)])
    d = np.round(rng.random((n, n)), 2).astype(dtype)  # many ties
    d[rng.random((n, n)) < 0.01] = np.nan
    d[rng.random((n, n)) < 0.01] = np.inf
    mask = np.eye(n, dtype=bool)
    for fast, slow in ((self_exclusion(n), mask), (None, np.zeros((n, n), bool))):
        a = evaluate_distances(d, labels, labels, exclude=fast, block=64)
        b = evaluate_distances(d, labels, labels, exclude=slow, block=64)
        assert a.per_query_ap == b.per_query_ap and a.per_query_rank1 == b.per_query_rank1
        assert (a.map, a.mr1, a.top10, a.hit_rate, a.n_queries) == (
            b.map,
            b.mr1,
            b.top10,
            b.hit_rate,
            b.n_queries,
        )


def test_recall_at_excludes_self_counts_ties_against_covers_and_nan_as_far():
    from coverhunter.metrics import recall_at, self_exclusion

    labels = np.array(["a", "a", "a", "b", "c"])
    d = np.array(
        [
            [0.0, 0.5, np.nan, 0.5, 0.9],  # cover 1 ties with "b"; cover 2 unknown (far)
            [0.5, 0.0, 0.1, 0.7, 0.8],
            [0.3, 0.3, 0.0, 0.2, 0.1],
            [0.5, 0.5, 0.5, 0.0, 0.5],  # no cover: left out
            [0.1, 0.2, 0.3, 0.4, 0.0],  # no cover: left out
        ]
    )
    got = recall_at(d, labels, labels, (1, 2, 4, 10), self_exclusion(5))
    # query 0: [b, a1 | c, a2]; query 1: [a2, a0, ...]; query 2: [c, b, a0, a1]
    assert got == {1: (0 + 0.5 + 0) / 3, 2: (0.5 + 1 + 0) / 3, 4: 1.0, 10: 1.0}
    mask = np.eye(5, dtype=bool)
    assert recall_at(d, labels, labels, 2, mask) == got[2]
    # without exclusion each query's own entry is one of its covers, at distance 0
    assert recall_at(d, labels, labels, 1) == (3 * (1 / 3) + 1 + 1) / 5
    assert np.isnan(recall_at(d[3:], labels[3:], labels, 5, mask[3:]))
