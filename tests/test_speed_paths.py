"""The fast paths give the numbers of the paths they replace.

Embedding: windows pooled once equal window-by-window pooling; the float32 CQT is within
the documented tolerance of the float64 one; embedding audio directly (float32 CQT, and
bfloat16 products) agrees with extract-then-embed, for both model front ends.
Evaluation: distances and metrics against the previous implementation, frozen in
``benchmarks/eval_reference.py`` (identical metrics on random data with ties, NaN,
infinities and exclusions).
"""

import numpy as np
import pytest
import soundfile as sf
import torch

from coverhunter.audio import peak_normalize
from coverhunter.config import FeatureConfig, ModelConfig
from coverhunter.embed import (
    MinChunkDistance,
    Windowing,
    chunk_starts,
    cut_chunk,
    distance_matrix,
    distances_to,
    embed_audio_files,
    embed_chunks,
    embed_tracks,
    track_chunks,
)
from coverhunter.features import cqt
from coverhunter.metrics import evaluate_distances, self_exclusion
from coverhunter.model import CoverHunter

from .conftest import SR, load_benchmark, melody

# the chroma front end where this version of the model has it
FRONT_ENDS = ["cqt", "chroma"]
WIN = Windowing(chunk=150, hop=75, mean_size=3)  # 6 s windows every 3 s


@pytest.mark.parametrize("n_frames", [0, 40, 149, 150, 151, 400, 1001])
@pytest.mark.parametrize("win", [WIN, Windowing(10, 3, 2), Windowing(7, 4, 1)])
def test_windows_pooled_once_equal_window_by_window(n_frames, win):
    feat = (np.random.default_rng(n_frames).standard_normal((n_frames, 96)) * 30 - 50).astype(np.float32)
    chunks, starts = track_chunks(feat, win)
    assert starts == chunk_starts(n_frames, win.chunk, win.hop)
    expected = np.stack([cut_chunk(feat, s, win.chunk, win.mean_size) for s in starts])
    assert chunks.dtype == np.float32
    np.testing.assert_array_equal(chunks, expected)


def test_fast_cqt_within_tolerance_of_float64():
    y = peak_normalize(melody(2, 1, 8.0))
    ref = cqt(y, FeatureConfig(precision="float64"))
    fast = cqt(y, fast=True)
    assert fast.dtype == np.float32 and fast.shape == ref.shape and fast.max() == 0.0
    diff = np.abs(fast - ref)
    assert diff[ref > -60].max() < 0.01 and diff[ref > -100].max() < 0.1
    assert cqt(np.zeros(100, np.float32), fast=True).shape == (0, 96)


def _model(front_end: str) -> CoverHunter:
    torch.manual_seed(0)
    return CoverHunter(
        ModelConfig(d_model=32, n_layers=2, n_heads=2, ffn_dim=64, embed_dim=16, front_end=front_end)
    ).eval()


def _cosines(a, b) -> np.ndarray:
    x, y = np.concatenate(a), np.concatenate(b)
    return (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_embed_audio_agrees_with_extract_then_embed(tmp_path, front_end):
    model = _model(front_end)
    paths = []
    for i, seconds in enumerate([4.0, 7.0, 10.0]):  # one window, and several overlapping
        paths.append(tmp_path / f"r{i}.wav")
        sf.write(paths[-1], melody(i, 0, seconds), SR, subtype="PCM_16")
    from coverhunter.audio import load_audio

    feats = [cqt(peak_normalize(load_audio(p)), FeatureConfig(precision="float64")) for p in paths]
    before = embed_tracks(model, feats, WIN, batch_size=64)
    for precision, min_cos in (("float32", 0.9999), ("bfloat16", 0.99)):
        after = embed_audio_files(model, paths, WIN, FeatureConfig(), precision=precision, batch_size=2)
        assert [s for _, s in after] == [s for _, s in before]
        assert _cosines([e for e, _ in after], [e for e, _ in before]).min() > min_cos
    arrays = embed_audio_files(model, [load_audio(p) for p in paths], WIN, FeatureConfig())
    np.testing.assert_array_equal(
        np.concatenate([e for e, _ in arrays]),
        np.concatenate([e for e, _ in embed_audio_files(model, paths, WIN, FeatureConfig())]),
    )


def test_embed_chunks_precision_is_checked():
    with pytest.raises(ValueError, match="precision"):
        embed_chunks(_model("cqt"), np.zeros((1, 50, 96), np.float32), precision="int4")


def _previous():
    return load_benchmark("eval_reference")


def _recordings(rng, n, max_chunks, dim=128, min_chunks=1):
    return [
        rng.standard_normal((rng.integers(min_chunks, max_chunks + 1), dim)).astype(np.float32)
        for _ in range(n)
    ]


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
        b.map,
        b.top10,
        b.hit_rate,
        b.n_queries,
        b.n_without_relevant,
    )
    assert a.mr1 == b.mr1 or (np.isnan(a.mr1) and np.isnan(b.mr1))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("block", [1, 5, 64])
def test_metrics_identical_to_previous(seed, block):
    d, q, r, drop = _random_case(seed)
    prev = _previous()
    _same_report(
        evaluate_distances(d, q, r, exclude=drop, block=block),
        prev.evaluate_distances(d, q, r, exclude=drop, block=block),
    )
    dneg = np.where(drop, -1.0, d)
    _same_report(
        evaluate_distances(dneg, q, r, mode="original", topk=5, block=block),
        prev.evaluate_distances(dneg, q, r, mode="original", topk=5, block=block),
    )


def test_self_query_metrics_identical_to_previous():
    rng = np.random.default_rng(5)
    embs = _recordings(rng, 60, 4, dim=16)
    labels = np.arange(60) // 4
    d = distance_matrix(embs, embs)
    _same_report(
        evaluate_distances(d, labels, labels, block=16),
        _previous().evaluate_distances(d, labels, labels, exclude=self_exclusion(60), block=16),
    )


def test_user_mask_is_not_modified():
    d, q, r, drop = _random_case(0)
    kept = drop.copy()
    evaluate_distances(d, q, r, exclude=drop)
    np.testing.assert_array_equal(drop, kept)
