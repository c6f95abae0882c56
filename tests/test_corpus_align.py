"""Exact alignment of corpus versions from their plans (coverhunter.corpus.align)."""

import json

import numpy as np
import pytest

from coverhunter.corpus.align import Performance, corpus_alignment, pair_centres, write_corpus_alignment
from coverhunter.dataset import Track, write_dataset


def plan(sections, tempo=1.0, drift=0.0):
    return {"tempo": tempo, "tempo_drift": drift, "sections": sections}


def test_score_time_inverts_the_tempo_map_with_drift():
    p = Performance(plan([[0, 10], [10, 30]], tempo=1.25, drift=0.12))
    s = np.array([0.5, 4.0, 12.0, 29.0])
    tau = np.array([p.audio_times(x)[0] for x in s])
    assert np.all(np.diff(tau) > 0)
    np.testing.assert_allclose(p.score_time(tau), s, atol=0.01)
    assert np.isnan(p.score_time(np.array([1e3]))[0])  # past the end


def test_repeat_gives_two_matches_and_a_drop_none():
    src = Performance(plan([[0, 10], [10, 20], [20, 30]]))
    repeat = Performance(plan([[0, 10], [10, 20], [10, 20], [20, 30]]))
    drop = Performance(plan([[0, 10], [20, 30]]))
    assert repeat.audio_times(15.0) == [15.0, 25.0]
    assert drop.audio_times(15.0) == []
    pairs = dict((a, []) for a, _ in pair_centres(src, drop, 30.0, 2.0))
    assert 15.0 not in pairs and 5.0 in pairs and 25.0 in pairs
    # the dropped middle of src has no partner; its last section moves 10 s earlier
    assert [b for a, b in pair_centres(src, drop, 30.0, 2.0) if a == 25.0] == [15.0]


def test_tempo_scales_the_partner_times():
    a = Performance(plan([[0, 40]]))
    b = Performance(plan([[0, 40]], tempo=2.0))  # twice as fast
    for ta, tb in pair_centres(a, b, 40.0, 4.0):
        assert tb == pytest.approx(ta / 2, abs=1e-3)


def test_corpus_alignment_pairs_versions_of_each_work(tmp_path):
    tracks = [
        Track(f"t{i}", f"{i}.wav", 30.0, w, json.dumps(plan([[0, 30]], tempo=1 + 0.1 * i)))
        for i, w in enumerate(["a", "a", "a", "b", "b"])
    ]
    tracks.append(Track("bad", "x.wav", 30.0, "b", "not a plan"))
    records, skipped = corpus_alignment(tracks)
    assert {(r["utt_i"], r["utt_j"]) for r in records} == {
        ("t0", "t1"),
        ("t0", "t2"),
        ("t1", "t0"),
        ("t1", "t2"),
        ("t2", "t0"),
        ("t2", "t1"),
        ("t3", "t4"),
        ("t4", "t3"),
    }
    assert len(skipped) == 1 and skipped[0].startswith("bad:")
    # the file reads back in coverhunter.align's format: centres in seconds
    from coverhunter.align import read_alignment

    write_dataset(tracks, tmp_path / "d.txt")
    write_corpus_alignment(tmp_path / "d.txt", tmp_path / "al.jsonl")
    back = read_alignment(tmp_path / "al.jsonl")
    t0, t1 = back["t0"]["t1"][3]
    assert t1 == pytest.approx(t0 / 1.1, abs=0.01)


def test_no_pairs_is_a_clear_error(tmp_path):
    write_dataset([Track("t0", "0.wav", 30.0, "a", json.dumps(plan([[0, 30]])))], tmp_path / "d.txt")
    with pytest.raises(ValueError, match="no two versions"):
        write_corpus_alignment(tmp_path / "d.txt", tmp_path / "al.jsonl")
