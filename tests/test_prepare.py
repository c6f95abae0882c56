"""Dataset converters on small fake trees that mimic the published layouts."""

import json

import numpy as np
import pytest
import soundfile as sf

from coverhunter.cli import main
from coverhunter.dataset import read_dataset
from coverhunter.extract import extract_features
from coverhunter.prepare import prepare_covers80, prepare_datacos, prepare_shs100k

from .conftest import SR, melody

ODD = ["Don't Stop", "Rock & Roll", "Café Olé", 'say "hi"']


def _mp3(path, work=0, version=0, seconds=2.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, melody(work, version, seconds), SR, format="MP3", subtype="MPEG_LAYER_III")


def _covers80_tree(root):
    songs = {}
    for si, song in enumerate(ODD):
        names = [f"artist {v}+album & co+0{v}-{song}" for v in range(2 + (si == 0))]
        for vi, n in enumerate(names):
            _mp3(root / "covers32k" / song / f"{n}.mp3", si, vi)
        songs[song] = names
    (root / "list1.list").write_text("".join(f"{s}/{n[0]}\n" for s, n in songs.items()))
    (root / "list2.list").write_text(
        "".join(f"{s}/{n[1]}\n" for s, n in songs.items()) + "Missing Song/nobody+nothing+01-x\n"
    )
    (root / "covers32k" / ODD[1] / "broken.mp3").write_bytes(b"not an mp3")
    return songs


def test_covers80(tmp_path):
    _covers80_tree(tmp_path / "archive")
    data = tmp_path / "data"
    r = prepare_covers80(tmp_path / "archive", data)
    assert r.written == {"dataset.txt": 9, "query.txt": 4, "ref.txt": 4}
    assert r.missing == ["list2.list line 5: Missing Song/nobody+nothing+01-x"]
    assert any("broken.mp3" in p for p in r.problems)
    tracks = read_dataset(data / "dataset.txt", check_audio=True)
    assert {t.work for t in tracks} == set(ODD)
    assert tracks[0].track_id == "cover80_00000000_0_0" and tracks[0].duration == pytest.approx(2.0, abs=0.1)
    q, ref = read_dataset(data / "query.txt"), read_dataset(data / "ref.txt")
    assert [t.work for t in q] == [t.work for t in ref]
    assert "missing:" in (data / "missing.txt").read_text()
    # extraction: Covers80 is a test set, every work lands in test
    assert extract_features(data, num_workers=1, verbose=False).ok
    assert len(read_dataset(data / "test.txt")) == 9


def test_covers80_missing_tree(tmp_path):
    with pytest.raises(FileNotFoundError, match="covers32k"):
        prepare_covers80(tmp_path, tmp_path / "data")


def _shs_tree(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "SHS100K-TRAIN").write_text("1\t0\n1\t1\n2\t0\n2\t1\n")
    (lists / "SHS100K-VAL").write_text("3\t0\n3\t1\nbad line\n")
    (lists / "SHS100K-TEST").write_text("4\t0\n4\t1\n4\t2\n1\t0\n")  # 1_0 duplicated, 4_2 missing
    (lists / "list").write_text("1\t0\tYesterday\tThe Beatles\thttps://youtu.be/x\tTrue\n")
    audio = tmp_path / "audio"
    for s, v in [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1), (4, 0), (4, 1)]:
        _mp3(audio / ("sub dir" if s == 2 else "") / f"{s}_{v}.mp3", s, v)
    return lists, audio


def test_shs100k(tmp_path):
    lists, audio = _shs_tree(tmp_path)
    data = tmp_path / "data"
    r = prepare_shs100k(lists, audio, data)
    assert r.written == {"dataset.txt": 8, "train.list.txt": 4, "val.list.txt": 2, "test.list.txt": 2}
    assert r.missing == ["SHS100K-TEST: 4_2"]
    assert any("duplicate id 1_0" in p for p in r.problems)
    assert any("bad line" in p for p in r.problems)
    tracks = {t.track_id: t for t in read_dataset(data / "dataset.txt", check_audio=True)}
    assert tracks["1_0"].version == "Yesterday - The Beatles" and tracks["1_0"].extra["split"] == "train"
    # extraction keeps the published split instead of drawing one
    extract_features(data, num_workers=1, verbose=False)
    assert {t.work for t in read_dataset(data / "val.txt")} == {"3"}
    assert {t.work for t in read_dataset(data / "test.txt")} == {"4"}


def test_datacos(tmp_path):
    meta = {
        "W_1": {"P_1": {"perf_title": "Yesterday", "perf_artist": "A & B"}, "P_2": {}},
        "W_2": {"P_3": {}, "P_4": {}, "P_9": {}},  # P_9 has no audio
        "W_3": {"P_5": {}},
    }  # a noise work of one performance
    mpath = tmp_path / "da-tacos_benchmark_subset_metadata.json"
    mpath.write_text(json.dumps(meta))
    audio = tmp_path / "audio"
    for i, p in enumerate(["P_1", "P_2", "P_3", "P_4", "P_5"]):
        _mp3(audio / f"W_{i}" / f"{p}.mp3", i, 0)
    data = tmp_path / "data"
    r = prepare_datacos(mpath, audio, data)
    assert r.written == {"dataset.txt": 5, "query.txt": 4, "ref.txt": 5}
    assert r.missing == ["W_2/P_9"]
    pairs = json.loads((data / "query_in_ref.txt").read_text())["query_in_ref"]
    q, ref = read_dataset(data / "query.txt"), read_dataset(data / "ref.txt")
    assert all(q[a].track_id == ref[b].track_id for a, b in pairs) and len(pairs) == 4
    assert q[0].version == "Yesterday - A & B"
    with pytest.raises(ValueError, match="not a Da-TACOS"):
        prepare_datacos(tmp_path / "none.json", audio, data)


def test_prepare_cli(tmp_path, capsys):
    _covers80_tree(tmp_path / "archive")
    assert main(["prepare", "covers80", str(tmp_path / "archive"), str(tmp_path / "d")], exit=False) == 0
    assert "missing.txt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["prepare", "covers80", str(tmp_path / "nowhere"), str(tmp_path / "d2")])
    assert e.value.code == 1


def test_prepared_lists_take_features_from_full_txt(tmp_path):
    from coverhunter.evaluate import read_eval_list

    _covers80_tree(tmp_path / "archive")
    data = tmp_path / "data"
    prepare_covers80(tmp_path / "archive", data)
    with pytest.raises(ValueError, match="coverhunter extract"):
        read_eval_list(data / "query.txt")
    extract_features(data, num_workers=1, verbose=False)
    q = read_eval_list(data / "query.txt")
    assert len(q) == 4 and all(np.load(t.feat).shape[1] == 96 for t in q)
