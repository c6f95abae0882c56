"""Extraction keeps its work across kills and path spellings, writes usable paths, and
never lets a real recording collide with a tempo copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coverhunter.dataset import DatasetError, read_dataset
from coverhunter.extract import FEAT_DIR, extract_features

from .conftest import make_dataset

ROOT = Path(__file__).resolve().parents[1]


def test_a_recording_named_like_a_tempo_copy_is_refused(tmp_path):
    data = make_dataset(
        tmp_path / "data",
        n_works=2,
        n_versions=2,
        hparams="aug_speed_mode: [0.9, 1.0]\nsplit: {train: 1, val: 0, test: 0}\n",
    )
    with open(data / "dataset.txt", "a") as fh:  # a real recording called like x's 0.9 copy
        fh.write(
            json.dumps(
                {
                    "utt": "sp_0.9-t_00_0",
                    "wav": "wav/t_01_1.wav",
                    "dur_s": 6.0,
                    "song": "work1",
                    "version": "x",
                }
            )
            + "\n"
        )
    with pytest.raises(DatasetError, match="tempo copy"):
        extract_features(data, num_workers=1, verbose=False)
    assert not (data / "full.txt").exists()


def test_audio_outside_the_data_folder_gets_usable_paths(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "data", n_works=2, n_versions=2)
    (tmp_path / "data" / "wav").rename(tmp_path / "audio")
    lines = [json.loads(x) for x in (data / "dataset.txt").read_text().splitlines()]
    (data / "dataset.txt").write_text(
        "".join(json.dumps({**x, "wav": "../audio/" + Path(x["wav"]).name}) + "\n" for x in lines)
    )
    monkeypatch.chdir(tmp_path)
    assert extract_features(Path("data"), num_workers=1, verbose=False).ok
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    tracks = read_dataset(tmp_path / "data" / "full.txt", check_audio=True, check_features=True)
    assert len(tracks) == 4 and all(Path(t.audio).is_absolute() for t in tracks)


def test_spelling_of_the_data_folder_does_not_matter(tiny_dataset, monkeypatch):
    assert extract_features(tiny_dataset.resolve(), num_workers=1, verbose=False).computed == 12
    monkeypatch.chdir(tiny_dataset)
    again = extract_features(Path("."), num_workers=1, verbose=False)
    assert again.computed == 0 and again.skipped == 12


def test_truncated_feature_file_is_not_up_to_date(tiny_dataset):
    extract_features(tiny_dataset, num_workers=1, verbose=False)
    feat = read_dataset(tiny_dataset / "full.txt")[3].feat
    Path(feat).write_bytes(Path(feat).read_bytes()[:-1000])  # cut by hand
    again = extract_features(tiny_dataset, num_workers=1, verbose=False)
    assert again.computed == 1 and again.skipped == 11
    assert np.load(feat).shape[1] == 96


_KILL_AFTER_FOUR = """
import os, signal, sys
import coverhunter.extract as ex
real, n = ex._extract_one, [0]
def one(*a, **k):
    n[0] += 1
    if n[0] == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
ex._extract_one = one
ex.extract_features(sys.argv[1], num_workers=1, verbose=False)
"""


def _extract_killed_after_four(data: Path, step: str = "_extract_one") -> None:
    """An extract run of ``data`` killed (SIGKILL) as it starts its 5th ``step``."""
    script = _KILL_AFTER_FOUR.replace("_extract_one", step)
    r = subprocess.run(
        [sys.executable, "-c", script, str(data)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == -9, r.stderr


def test_kill_keeps_the_progress_of_every_finished_recording(tiny_dataset):
    _extract_killed_after_four(tiny_dataset)
    again = extract_features(tiny_dataset, num_workers=1, verbose=False)
    assert again.skipped == 4 and again.computed == 8 and again.ok


def test_a_killed_chroma_refresh_keeps_every_cqt_and_its_finished_chroma(tiny_dataset):
    extract_features(tiny_dataset, num_workers=1, verbose=False)
    cqts = sorted((tiny_dataset / FEAT_DIR).glob("*.cqt.npy"))
    inodes = {f: f.stat().st_ino for f in cqts}
    (tiny_dataset / "hparams.yaml").write_text("chroma_views: [c3]\n")  # another view due
    _extract_killed_after_four(tiny_dataset, "_extract_chroma")
    again = extract_features(tiny_dataset, num_workers=1, verbose=False)
    assert again.ok and again.skipped == 4 and again.computed == 8 and again.chroma_only == 8
    assert {f: f.stat().st_ino for f in cqts} == inodes  # no CQT was written again


def test_outputs_respect_the_umask_and_leftovers_are_removed(tiny_dataset):
    dead = 2**22 + 12345  # above the default pid_max: no such process
    left = [tiny_dataset / f".full.txt.{dead}.abcd.tmp", tiny_dataset / FEAT_DIR / f".x.npy.{dead}.ab.tmp"]
    left[1].parent.mkdir()
    for p in left:
        p.write_text("half")
    old = os.umask(0o022)
    try:
        extract_features(tiny_dataset, num_workers=1, verbose=False)
    finally:
        os.umask(old)
    assert not any(p.exists() for p in left)
    feat = Path(read_dataset(tiny_dataset / "full.txt")[0].feat)
    for p in (feat, tiny_dataset / "full.txt", tiny_dataset / "train.txt"):
        assert p.stat().st_mode & 0o777 == 0o644, p
