"""The fast paths give the numbers of the paths they replace.

Evaluation: distances and metrics against the previous implementation, frozen in
``benchmarks/eval_reference.py`` (identical metrics on random data with ties, NaN,
infinities and exclusions).
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from coverhunter.embed import MinChunkDistance, distance_matrix, distances_to
from coverhunter.metrics import evaluate_distances, self_exclusion

_REF = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_reference.py"


def _previous():
    spec = importlib.util.spec_from_file_location("eval_reference", _REF)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _recordings(rng, n, max_chunks, dim=128, min_chunks=1):
    return [rng.standard_normal((rng.integers(min_chunks, max_chunks + 1), dim)).astype(np.float32)
            for _ in range(n)]


@pytest.mark.parametrize("seed", [0, 1])
def test_min_chunk_distance_matches_previous(seed):
    rng = np.random.default_rng(seed)
    q, r = _recordings(rng, 70, 5), _recordings(rng, 90, 6)
    old = _previous().distance_matrix(q, r, block=64)
    new = MinChunkDistance(r)(q, block=64)
    np.testing.assert_allclose(new, old, atol=1e-6)  # the same float32 products
    np.testing.assert_array_equal(distance_matrix(q, r), distances_to(r)(q))


def test_recordings_without_chunks_are_far():
    rng = np.random.default_rng(3)
    q = _recordings(rng, 5, 3, dim=8, min_chunks=0) + [np.zeros((0, 8), np.float32)]
    r = _recordings(rng, 4, 3, dim=8) + [np.zeros((0, 8), np.float32)]
    d = distance_matrix(q, r)
    assert d.shape == (6, 5) and np.all(d[-1] == 3.0) and np.all(d[:, -1] == 3.0)
    np.testing.assert_allclose(d, _previous().distance_matrix(q, r), atol=1e-6)


def _random_case(seed):
    rng = np.random.default_rng(seed)
    nq, nr = 37, 53
    q, r = rng.integers(0, 6, nq), rng.integers(0, 6, nr)
    d = np.round(rng.random((nq, nr)) * 4) / 4  # many ties
    d[rng.random((nq, nr)) < 0.05] = np.nan
    d[0, :4], d[1, :2] = np.inf, -np.inf
    return d, q, r, rng.random((nq, nr)) < 0.1


def _same_report(a, b):
    assert a.per_query_ap == b.per_query_ap and a.per_query_rank1 == b.per_query_rank1
    assert (a.map, a.top10, a.hit_rate, a.n_queries, a.n_without_relevant) == (
        b.map, b.top10, b.hit_rate, b.n_queries, b.n_without_relevant)
    assert a.mr1 == b.mr1 or (np.isnan(a.mr1) and np.isnan(b.mr1))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("block", [1, 5, 64])
def test_metrics_identical_to_previous(seed, block):
    d, q, r, drop = _random_case(seed)
    prev = _previous()
    _same_report(evaluate_distances(d, q, r, exclude=drop, block=block),
                 prev.evaluate_distances(d, q, r, exclude=drop, block=block))
    dneg = np.where(drop, -1.0, d)
    _same_report(evaluate_distances(dneg, q, r, mode="original", topk=5, block=block),
                 prev.evaluate_distances(dneg, q, r, mode="original", topk=5, block=block))


def test_self_query_metrics_identical_to_previous():
    rng = np.random.default_rng(5)
    embs = _recordings(rng, 60, 4, dim=16)
    labels = np.arange(60) // 4
    d = distance_matrix(embs, embs)
    _same_report(evaluate_distances(d, labels, labels, block=16),
                 _previous().evaluate_distances(d, labels, labels, exclude=self_exclusion(60), block=16))


def test_user_mask_is_not_modified():
    d, q, r, drop = _random_case(0)
    kept = drop.copy()
    evaluate_distances(d, q, r, exclude=drop)
    np.testing.assert_array_equal(drop, kept)
