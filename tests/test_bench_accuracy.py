"""benchmarks/bench_accuracy.py: the tuning corpus leaves out the works the model trained on, long
results are cached under their key, and the two-stage rows expand as evaluate does."""

from __future__ import annotations

import logging

from coverhunter.dataset import Track

from .conftest import load_benchmark


def test_tuning_leaves_out_the_models_training_works(caplog):
    tracks = [
        Track(track_id=f"{w}_{v}", audio=f"{w}_{v}.wav", duration=30.0, work=w, version=str(v))
        for w in ("a", "b", "c")
        for v in range(2)
    ]
    unseen = load_benchmark("bench_accuracy").unseen
    with caplog.at_level(logging.WARNING):
        kept = unseen(tracks, ["b", "z"])
    assert [t.track_id for t in kept] == ["a_0", "a_1", "c_0", "c_1"]
    assert "1 of the tuning corpus's 3 works" in caplog.text and "2 recordings" in caplog.text
    caplog.clear()
    assert unseen(tracks, []) == tracks and not caplog.text


def test_long_results_are_kept_and_reused_under_their_key(tmp_path):
    import numpy as np

    cached = load_benchmark("bench_accuracy").cached
    calls = []

    def compute():
        calls.append(1)
        return np.arange(6.0).reshape(2, 3)

    path = tmp_path / "d.npz"
    a, _ = cached(path, "k1", compute)
    b, _ = cached(path, "k1", compute)  # a later run: read back
    assert len(calls) == 1 and np.array_equal(a, b)
    cached(path, "k2", compute)  # other tracks or settings: computed again
    assert len(calls) == 2
    assert cached(None, "k1", compute)[0].shape == (2, 3) and len(calls) == 3


def test_the_benchmarks_expand_through_the_anchors_votes_as_evaluate_does():
    """``common.reranked`` (every two-stage row of bench_accuracy and bench_long) gives the
    anchor its own row of the vote matrix, as ``build_reranker`` does for ``evaluate
    --rerank``; it once expanded by the summary alone."""
    import numpy as np

    from coverhunter import alignment_inputs as AI
    from coverhunter import rerank as R

    from .test_rerank import _planted_cover

    load_benchmark("bench_accuracy")  # puts benchmarks/ on the path
    from common import reranked

    align = _planted_cover(9)
    n = len(align)
    rng = np.random.default_rng(0)
    votes = rng.integers(0, 5, (n, n)).astype(np.float64)
    np.fill_diagonal(votes, 0.0)
    dist = rng.random((n, n))
    summaries = AI.global_summaries(align, None)
    rr = R.RerankConfig(k=4, grow_after=0, expand=2)
    _, rk = reranked(dist, align, summaries, rr, votes)
    assert rk.anchor_votes is not None and np.array_equal(rk.anchor_votes(3), votes[3])
    assert reranked(dist, align, summaries, rr)[1].anchor_votes is None  # no votes: by the summary
    assert (
        reranked(dist, align, summaries, R.RerankConfig(k=4, expand_votes=0.0), votes)[1].anchor_votes is None
    )


def test_a_tune_point_finds_the_cover_its_first_stage_votes_for():
    """``two_stage_point`` (the rows of ``--tune-scan`` and ``--tune-spec``): a planted cover
    that the embedding ranks last reaches a shortlist of 2 when the votes find it, and is
    then ranked first; with votes for another recording it is missed."""
    import numpy as np

    from coverhunter import alignment_inputs as AI
    from coverhunter import classical as C
    from coverhunter import rerank as R

    from .test_rerank import _planted_cover

    ba = load_benchmark("bench_accuracy")
    align = _planted_cover(9)
    n = len(align)
    works = ["song"] + [f"other{i}" for i in range(n - 2)] + ["song"]
    d_model = np.abs(np.subtract.outer(np.arange(n), np.arange(n))).astype(np.float64) / n
    d_model[0, -1] = d_model[-1, 0] = 2.0  # the embedding: the cover last
    summaries = AI.global_summaries(align, None)
    d_sum = C.euclidean_distances(summaries, summaries)
    rr = R.RerankConfig(k=2, pool=2, global_pool=2, grow_after=0, expand=0, first_stage="recurrence")
    votes = np.zeros((n, n))
    votes[0, -1] = votes[-1, 0] = 50.0
    found, rk = ba.two_stage_point(d_model, align, summaries, d_sum, votes, None, rr, works)
    assert found["recall"] == 1.0 and found["map_no_expansion"] == 1.0 and rk.n_queries == n
    votes = np.zeros((n, n))
    votes[0, 5] = votes[-1, 5] = 50.0
    missed, _ = ba.two_stage_point(d_model, align, summaries, d_sum, votes, None, rr, works)
    assert missed["recall"] < 1.0 and missed["map_no_expansion"] < 1.0
