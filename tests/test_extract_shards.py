"""Feature extraction split by rank across processes gives the same
features and lists as one process, resumes per slice, and refuses a bad rank."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from coverhunter.extract import FEAT_DIR, extract_features
from coverhunter.shard import resolve_rank

from .conftest import make_dataset

ROOT = Path(__file__).resolve().parents[1]
AUG = "aug_speed_mode: [0.8, 1.0]\nsplit: {train: 0.5, val: 0.25, test: 0.25, seed: 3}\n"
LISTS = ("full.txt", "train.txt", "val.txt", "test.txt", "song_id.map")


def _proc(args, env=None):
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def _features(data: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((data / FEAT_DIR).glob("*.npy"))}


def _lists(data: Path) -> dict[str, list[str]]:
    return {n: (data / n).read_text().splitlines() for n in LISTS}


def _data(root: Path) -> Path:
    return make_dataset(root, n_works=4, n_versions=2, seconds=3.0, hparams=AUG)


def test_two_ranks_at_once_equal_one_process(tmp_path):
    one = _data(tmp_path / "one")
    assert extract_features(one, num_workers=1, verbose=False).ok
    two = _data(tmp_path / "two")
    procs = [
        _proc(
            ["-m", "coverhunter", "extract", str(two), "--workers", "1", "--rank", "0", "--world-size", "2"]
        ),
        _proc(
            ["-m", "tools.extract_csi_features", str(two), "--workers", "1"],
            env={"RANK": "1", "WORLD_SIZE": "2"},
        ),
    ]  # torchrun's way
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert "4 computed" in err, err  # 8 recordings, 4 per rank
    assert _features(two) == _features(one)  # same names, same bytes
    assert len(_features(one)) > 8  # tempo copies included
    assert _lists(two) == _lists(one)  # written by the last rank, once every slice is done
    again = extract_features(two, num_workers=1, verbose=False, rank=1, world_size=2)
    assert again.computed == 0 and again.skipped == 4 and again.lists_written
    assert _lists(two) == _lists(one)


def test_a_lone_slice_leaves_the_lists_to_a_plain_run(tmp_path):
    data = _data(tmp_path / "d")
    first = extract_features(data, num_workers=1, verbose=False, rank=0, world_size=2)
    assert first.computed == 4 and not first.lists_written and first.waiting == 4
    assert not any((data / n).exists() for n in LISTS)
    assert "lists not written yet" in first.summary()
    rest = extract_features(data, num_workers=1, verbose=False)  # finds rank 0's work done
    assert rest.computed == 4 and rest.skipped == 4 and rest.lists_written
    assert len((data / "full.txt").read_text().splitlines()) > 8


def test_a_bad_rank_is_a_one_line_error(tmp_path):
    data = _data(tmp_path / "d")
    for args, env in ((["--rank", "2", "--world-size", "2"], None), ([], {"RANK": "-1", "WORLD_SIZE": "2"})):
        p = _proc(["-m", "coverhunter", "extract", str(data), *args], env=env)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 1 and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1 and "need 0 <= rank < world size" in err, err
    with pytest.raises(ValueError, match=r"\$RANK='x' is not an integer"):
        resolve_rank(None, None, {"RANK": "x", "WORLD_SIZE": "2"})
    assert not (data / FEAT_DIR).exists()
