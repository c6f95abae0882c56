import numpy as np
import pytest
import torch

from coverhunter.config import DataConfig, SpecAugConfig
from coverhunter.data import ChunkDataset, WorkBatchSampler, augment_batch, collate
from coverhunter.features import pool_frames


def _feats(tmp_path, n=4, frames=200):
    paths = []
    for i in range(n):
        x = np.random.default_rng(i).uniform(-80, 0, (frames, 96)).astype(np.float32)
        p = tmp_path / f"{i}.npy"
        np.save(p, x)
        paths.append(str(p))
    return paths


def test_chunk_is_a_pooled_slice_and_padding(tmp_path, monkeypatch):
    paths = _feats(tmp_path, 1, 200)
    ds = ChunkDataset(paths, [7], mean_size=3)
    calls = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda p, **kw: calls.append(kw) or real_load(p, **kw))
    x, y = ds[(0, 20, 1.0, 123, -1)]
    assert calls == [{"mmap_mode": "r"}]  # memory-mapped: only the chunk is read
    assert x.shape == (20, 96) and x.dtype == torch.float32 and y == 7
    full = real_load(paths[0])
    start = int(np.random.default_rng(123).integers(0, 200 - 60 + 1))
    np.testing.assert_allclose(x.numpy(), pool_frames(full[start : start + 60], 3), atol=1e-5)
    long, _ = ds[(0, 100, 1.0, 1, -1)]  # 300 raw frames from a 200-frame file: padded
    assert long.shape == (100, 96)
    assert torch.all(long[67:] == -100)
    fast, _ = ds[(0, 20, 1.2, 5, -1)]  # tempo 1.2: 72 raw frames squeezed into 60
    assert fast.shape == (20, 96)


def _labels(n_works=6, per=3):
    return [w for w in range(n_works) for _ in range(per)]


def test_sampler_batches_m_versions_per_work():
    cfg = DataConfig(batch_size=6, m_per_class=2, chunk_frame=(10, 20, 30))
    s = WorkBatchSampler(_labels(), cfg, seed=1, epoch=0, steps=9)
    batches = list(s)
    assert len(batches) == 9 and all(len(b) == 6 for b in batches)
    labels = _labels()
    for b in batches:
        works = [labels[i] for i, *_ in b]
        assert sorted(set(works)) == sorted(set(works)) and len(set(works)) == 3
        assert all(works.count(w) == 2 for w in set(works))
        assert len({n for _, n, _, _, _ in b}) == 1  # one chunk length per batch
    lengths = [b[0][1] for b in batches]
    assert sorted(lengths[:3]) == [10, 20, 30]  # every length once per round
    assert list(WorkBatchSampler(_labels(), cfg, 1, 0, 9)) == batches  # deterministic
    assert list(WorkBatchSampler(_labels(), cfg, 1, 1, 9)) != batches  # new epoch, new batches


def test_sampler_rank_slices_cover_the_global_batch():
    cfg = DataConfig(batch_size=4, m_per_class=2)
    ranks = [list(WorkBatchSampler(_labels(8), cfg, 3, 0, 5, rank=r, world_size=2)) for r in (0, 1)]
    labels = _labels(8)
    for b0, b1 in zip(*ranks):
        w0, w1 = {labels[i] for i, *_ in b0}, {labels[i] for i, *_ in b1}
        assert len(b0) == len(b1) == 4 and not (w0 & w1)  # whole works per rank


def test_sampler_errors():
    with pytest.raises(ValueError, match="multiple of m_per_class"):
        WorkBatchSampler(_labels(), DataConfig(batch_size=5, m_per_class=2), 0, 0, 1)
    with pytest.raises(ValueError, match="needs 8 works"):
        WorkBatchSampler(_labels(4), DataConfig(batch_size=16, m_per_class=2), 0, 0, 1)
    # a work with fewer tracks than m repeats them
    b = next(iter(WorkBatchSampler([0, 1, 1, 1], DataConfig(batch_size=4, m_per_class=2), 0, 0, 1)))
    assert sum(1 for i, *_ in b if i == 0) == 2


def test_augment_shift_and_erase():
    x = torch.arange(96, dtype=torch.float32).repeat(2, 10, 1) - 100  # (2, 10, 96)
    none = SpecAugConfig(roll_prob=0, erase_prob=0)
    assert torch.equal(augment_batch(x, none, torch.Generator().manual_seed(0)), x)
    roll = SpecAugConfig(roll_prob=1, roll_max=3, erase_prob=0)
    y = augment_batch(x, roll, torch.Generator().manual_seed(0))
    src, floor = x[0, 0], x[0].min()
    for i in range(2):
        expected = []  # every transposition by 1..3 bins, vacated bins at the chunk minimum
        for s in (1, 2, 3):
            expected.append(torch.cat([floor.repeat(s), src[:-s]]))
            expected.append(torch.cat([src[s:], floor.repeat(s)]))
        assert any(torch.equal(y[i, 0], e) for e in expected)
        assert torch.equal(y[i, 0], y[i, 9])  # the same shift for every frame
    erase = SpecAugConfig(roll_prob=0, erase_prob=1, erase_num=1, erase_time=0.5, erase_freq=0.1)
    z = augment_batch(torch.zeros(64, 10, 96), erase, torch.Generator().manual_seed(1))
    changed = (z != 0).sum(dim=(1, 2))
    assert torch.all(changed == 5 * 9)  # every rectangle lands whole, even at the edges
    assert torch.all(z <= 0) and torch.all(z >= -80)


def test_collate():
    x, y = collate([(torch.zeros(3, 96), 1), (torch.ones(3, 96), 2)])
    assert x.shape == (2, 3, 96) and y.tolist() == [1, 2]
