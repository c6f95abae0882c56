"""benchmarks/bench_accuracy.py's tuning corpus leaves out the works the model trained on."""

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
