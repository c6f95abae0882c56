"""Passage-contrastive training: tempo ratios, the passage sampler, InfoNCE and its queue."""

import json

import numpy as np
import pytest
import torch

from coverhunter.align import read_alignment
from coverhunter.config import DataConfig, LossConfig, SpecAugConfig
from coverhunter.corpus.align import Performance, corpus_alignment, write_records
from coverhunter.data import ChunkDataset
from coverhunter.dataset import Track
from coverhunter.passages import PassageBatchSampler, PassageLoss, info_nce, local_tempo_ratios

FPS = 2.5  # chroma frames per second


def test_local_tempo_ratio_follows_the_slope_and_ignores_jumps():
    pairs = [(t, 1.25 * t + 3) for t in range(0, 20, 2)] + [(20, 1.0), (22, 3.5), (24, 6.0)]
    r = local_tempo_ratios(pairs)
    assert r[:7] == pytest.approx(1.25)
    assert r[-2] == pytest.approx(1.25)  # after the jump, on its own stretch
    assert r[9] == pytest.approx(1.25)  # before the jump: the narrow neighbourhood fits
    assert local_tempo_ratios([(5, 7)])[0] == 1.0  # a lone pair: unknown


def _tiny_corpus(n_works=6, seconds=40.0, seed=0):
    """Versions of random 'scores' (chroma sequences) played with the corpus's plans, and the
    exact alignment make-corpus would write for them."""
    rng = np.random.default_rng(seed)
    tracks, inputs = [], []
    for w in range(n_works):
        # a new random chord every 2 s (5 frames), so a passage is recognisable at any tempo
        score = np.repeat(rng.random((int(seconds / 2) + 1, 12)), 5, axis=0).astype(np.float32)
        plans = [
            {"tempo": 1.0, "tempo_drift": 0.0, "sections": [[0, seconds]]},
            {"tempo": 1.25, "tempo_drift": 0.05, "sections": [[8, seconds], [0, 8]]},
            {"tempo": 0.8, "tempo_drift": -0.05, "sections": [[0, 20], [0, 20]]},
        ]
        for v, plan in enumerate(plans):
            perf = Performance(plan)
            duration = float(perf.warp(perf.total))
            t = np.arange(int(duration * FPS)) / FPS
            s = perf.score_time(t)
            frames = score[np.clip(np.nan_to_num(s * FPS).astype(int), 0, len(score) - 1)]
            inputs.append(frames)
            tracks.append(Track(f"w{w}v{v}", f"w{w}v{v}.wav", duration, f"work{w}", json.dumps(plan)))
    return tracks, inputs


def _alignment_frames(tracks, tmp_path):
    records, skipped = corpus_alignment(tracks)
    assert not skipped
    write_records(records, tmp_path / "alignment.jsonl")
    index = {t.track_id: i for i, t in enumerate(tracks)}
    return {
        index[a]: {
            index[b]: [(round(x * FPS), round(y * FPS)) for x, y in pairs] for b, pairs in partners.items()
        }
        for a, partners in read_alignment(tmp_path / "alignment.jsonl").items()
    }


def _sampler(labels, alignment, batch_size=6, steps=5, stretch=0.0, epoch=0):
    cfg = DataConfig(
        chunk_frame=(20, 15),
        mean_size=1,
        batch_size=batch_size,
        spec_augment=SpecAugConfig(stretch_prob=1.0 if stretch else 0.0, stretch_range=stretch),
    )
    return PassageBatchSampler(labels, alignment, cfg, seed=3, epoch=epoch, steps=steps)


def test_passage_sampler_returns_the_same_music_in_two_versions(tmp_path):
    tracks, inputs = _tiny_corpus()
    labels = [int(t.work[4:]) for t in tracks]
    alignment = _alignment_frames(tracks, tmp_path)
    sampler = _sampler(labels, alignment, steps=8)
    data = ChunkDataset(
        [str(i) for i in range(len(inputs))],
        labels,
        mean_size=1,
        load=lambda p: inputs[int(p)],
        pad_value=0.0,
    )
    batches = list(sampler)
    assert len(batches) == 8 and all(len(b) == 6 for b in batches)
    same, other = [], []
    for batch in batches:
        works = [labels[r[0]] for r in batch]
        assert works[0::2] == works[1::2] and len(set(works[0::2])) == 3  # pairs of 3 works
        assert all(a[0] != b[0] for a, b in zip(batch[0::2], batch[1::2]))  # two versions
        assert all(a[2] == 1.0 for a in batch[0::2])  # no stretch asked: the anchor as it is...
        tempo = {0: 1.0, 1: 1.25, 2: 0.8}  # ...the partner at the tempo ratio of its version
        for a, b in zip(batch[0::2], batch[1::2]):
            # up to the plans' tempo drift (5 %) and centres rounded to whole frames
            assert b[2] == pytest.approx(tempo[a[0] % 3] / tempo[b[0] % 3], rel=0.2)
        x = np.stack([data[r][0].numpy() for r in batch])  # (6, T, 12)
        for k in range(0, 6, 2):
            same.append(np.abs(x[k] - x[k + 1]).mean())
            other.append(np.abs(x[k] - x[(k + 2) % 6]).mean())
    # random chords differ by 1/3 on average: aligned passages far less
    assert np.mean(same) < 0.1 and np.mean(other) > 0.3
    stretched = list(_sampler(labels, alignment, steps=8, stretch=0.1))
    assert stretched == list(_sampler(labels, alignment, steps=8, stretch=0.1))  # seeded
    assert stretched != list(_sampler(labels, alignment, steps=8, stretch=0.1, epoch=1))


def test_passage_sampler_needs_enough_aligned_works(tmp_path):
    tracks, _ = _tiny_corpus(n_works=2)
    alignment = _alignment_frames(tracks, tmp_path)
    with pytest.raises(ValueError, match="needs 3 works"):
        _sampler([int(t.work[4:]) for t in tracks], alignment, batch_size=6)
    with pytest.raises(ValueError, match="even"):
        _sampler([int(t.work[4:]) for t in tracks], alignment, batch_size=3)


def test_info_nce_is_low_for_matched_pairs_and_high_for_shuffled_ones():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 32, generator=g)
    b = a + 0.1 * torch.randn(16, 32, generator=g)  # the same passages, slightly changed
    labels = torch.arange(16).repeat_interleave(2)
    matched = torch.stack([a, b], 1).reshape(32, 32)
    shuffled = torch.stack([a, b[torch.randperm(16, generator=g)]], 1).reshape(32, 32)
    lo, top1 = info_nce(matched, labels, 0.1)
    hi, top1_shuffled = info_nce(shuffled, labels, 0.1)
    assert lo < 0.1 and top1 == 1.0
    assert hi > np.log(31) - 1 and top1_shuffled < 0.2  # no better than chance (log 31 = 3.4)


def test_info_nce_never_counts_the_same_work_as_a_negative():
    z = torch.tensor([[1.0, 0.0], [0.9, 0.1], [1.0, 0.0], [0.0, 1.0]])
    far = info_nce(z, torch.tensor([0, 0, 1, 1]), 0.1)[0]
    # items 0 and 2 are identical; once they are one work, item 2 is no longer a negative
    near = info_nce(z, torch.tensor([0, 0, 0, 0]), 0.1)[0]
    assert near < far
    labels = torch.tensor([0, 0, 1, 1])
    queue = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05], [0.2, 1.0]]), dim=1)
    empty = info_nce(z, labels, 0.1, queue=queue, queue_labels=torch.tensor([-1, -1]))[0]
    assert empty == pytest.approx(far.item())  # empty slots are skipped
    # queued passages of a row's own work are skipped, those of other works are negatives
    own = info_nce(z, labels, 0.1, queue=queue[:1], queue_labels=torch.tensor([0]))[0]
    z_own_rows = info_nce(z[:2], labels[:2], 0.1)[0]  # rows 0, 1 alone: no other negative
    assert info_nce(z[:2], labels[:2], 0.1, queue=queue[:1], queue_labels=torch.tensor([0]))[0] == z_own_rows
    assert info_nce(z, labels, 0.1, queue=queue, queue_labels=torch.tensor([5, 5]))[0] > own > far


def test_passage_loss_queues_momentum_keys_in_a_ring_buffer_kept_in_the_state():
    encoder = torch.nn.Linear(3, 4)
    loss = PassageLoss(LossConfig(objective="passage", queue_size=6, momentum=0.5), 4, encoder)
    x = torch.randn(4, 3)
    out = loss(encoder(x), torch.tensor([0, 0, 1, 1]), x)
    assert set(out.extra) == {"nce", "pair_top1"} and out.extra["nce"] == out.total.item()
    keys = torch.nn.functional.normalize(encoder(x), dim=1)  # the copy still equals the encoder
    assert torch.allclose(loss.queue[:4], keys.detach())
    loss(encoder(x), torch.tensor([2, 2, 3, 3]), x)
    # 4 + 4 passages in 6 slots: the second batch wraps around over the oldest
    assert loss.queue_labels.tolist() == [3, 3, 1, 1, 2, 2] and int(loss.queue_next) == 2
    state = loss.state_dict()
    assert {"queue", "queue_labels", "queue_next", "key_encoder.weight"} <= set(state)
    loss.eval()
    loss(encoder(x), torch.tensor([7, 7, 8, 8]), x)  # evaluation leaves the queue alone
    assert int(loss.queue_next) == 2
    # the momentum update: halfway (m = 0.5) towards the encoder's new weights
    before = loss.key_encoder.weight.clone()
    with torch.no_grad():
        encoder.weight.add_(1.0)
    loss.update_keys(encoder)
    assert torch.allclose(loss.key_encoder.weight, 0.5 * before + 0.5 * encoder.weight)
    with pytest.raises(ValueError, match="needs the encoder"):
        PassageLoss(LossConfig(objective="passage", queue_size=6), 4)
