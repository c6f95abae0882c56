"""Coarse-to-fine: the aligner, the aligned sampler and the one-command pipeline."""

import json

import numpy as np
import pytest

from coverhunter.align import align_path, chunk_distances, read_alignment
from coverhunter.cli import main
from coverhunter.config import DataConfig
from coverhunter.data import WorkBatchSampler

from .conftest import make_experiment, make_feature_lists


def _versions(order, n=40, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, 16))
    a = base + noise * rng.standard_normal(base.shape)
    b = base[order] + noise * rng.standard_normal((len(order), 16))
    return a, b


@pytest.mark.parametrize(
    "name,order",
    [
        ("offset", list(range(7, 40))),  # b starts 7 chunks later
        ("repeat", list(range(0, 20)) + list(range(12, 20)) + list(range(20, 40))),
        ("drop", list(range(0, 10)) + list(range(22, 40))),
        (
            "repeat+drop+crop",
            list(range(5, 10)) + list(range(16, 26)) + list(range(20, 26)) + list(range(26, 35)),
        ),
    ],
)
def test_aligner_finds_known_correspondences(name, order):
    a, b = _versions(order)
    path = align_path(chunk_distances(a, b))
    present = [k for k in range(40) if k in order]
    correct = sum(order[path[k]] == k for k in present)
    assert correct >= 0.95 * len(present), (name, correct, len(present))


@pytest.mark.parametrize("shape", [(1, 1), (5, 1), (1, 5), (3, 2)])
def test_aligner_handles_tiny_recordings(shape):
    d = np.random.default_rng(0).random(shape)
    path = align_path(d)
    assert path.shape == (shape[0],) and path.min() >= 0 and path.max() < shape[1]


def test_aligner_follows_tempo_changes():
    order = [int(x) for x in np.round(np.arange(0, 40, 0.75))]  # b is slower: chunks repeat
    order = [o for o in order if o < 40]
    a, b = _versions(order)
    path = align_path(chunk_distances(a, b))
    assert sum(order[path[k]] == k for k in range(40)) >= 38
    assert np.all(np.diff(path) >= 0)  # no jump needed for a plain tempo change


def test_aligned_sampler_picks_matching_passages():
    labels = [0, 0, 0, 1, 1, 1]
    alignment = {0: {1: [(100, 300), (200, 400)], 2: [(100, 150), (200, 250)]}, 3: {4: [(50, 60)]}}
    cfg = DataConfig(batch_size=6, m_per_class=3, chunk_frame=(10,))
    s = WorkBatchSampler(labels, cfg, 0, 0, 20, alignment=alignment, aligned_prob=1.0)
    for batch in s:
        by_track = {}
        for i, _, _, _, centre in batch:
            by_track.setdefault(i, []).append(centre)
        if 0 in by_track:  # work 0: anchor 0 at 100 or 200, partners at the matched frames
            c0 = by_track[0][0]
            assert c0 in (100, 200)
            assert by_track[1] == [300 if c0 == 100 else 400]
            assert by_track[2] == [150 if c0 == 100 else 250]
        if 3 in by_track:
            assert by_track[3] == [50] and by_track[4] == [60, 60]  # partner repeated to fill m
    plain = WorkBatchSampler(labels, cfg, 0, 0, 5)
    assert all(c == -1 for b in plain for *_, c in b)  # coarse stage: random crops


def test_one_command_coarse_to_fine(tmp_path):
    data = make_feature_lists(tmp_path / "data", n_works=6, n_versions=3, frames=400)
    exp = make_experiment(tmp_path / "exp", data)
    assert (
        main(
            [
                "coarse-to-fine",
                str(exp),
                "data.chunk_frame=[40]",
                "--coarse-epochs",
                "1",
                "--fine-epochs",
                "1",
            ],
            exit=False,
        )
        == 0
    )
    records = [json.loads(x) for x in (exp / "alignment.jsonl").read_text().splitlines()]
    assert len(records) == 4 * 3 * 2  # 4 training works x 3 versions x 2 partners each
    assert all(r["pairs"] and r["utt_i"] != r["utt_j"] for r in records)
    assert read_alignment(exp / "alignment.jsonl")
    fine = exp / "fine" / "checkpoints" / "last.pt"
    assert fine.is_file() and (exp / "coarse" / "checkpoints" / "best.pt").is_file()
    import torch

    state = torch.load(fine, weights_only=True)
    assert state["config"]["data"]["align_path"].endswith("alignment.jsonl")
    # the plot of one pair
    png = tmp_path / "pair.png"
    assert main(["align", str(exp / "coarse"), str(data / "train.txt"), "--plot", str(png)], exit=False) == 0
    assert png.stat().st_size > 1000
