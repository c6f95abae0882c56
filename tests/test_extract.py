import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from coverhunter.dataset import read_dataset
from coverhunter.extract import STATE_FILE, extract_features

from .conftest import SR, make_dataset, melody

ROOT = Path(__file__).resolve().parents[1]
AUG = "aug_speed_mode: [0.8, 1.0, 1.2]\nsplit: {train: 0.5, val: 0.25, test: 0.25, seed: 7}\n"


def test_outputs(tiny_dataset):
    report = extract_features(tiny_dataset, num_workers=2, verbose=False)
    assert report.ok and report.computed == 12 and report.skipped == 0
    full = read_dataset(tiny_dataset / "full.txt", check_features=True)
    assert len(full) == 12
    for t in full:
        feat = np.load(t.feat)
        assert feat.dtype == np.float32 and feat.shape == (t.extra["feat_len"], 96)
        assert feat.shape[0] == int(6.0 * SR) // 640
        assert feat.max() == 0.0
    ids = {t.work: t.extra["song_id"] for t in full}
    assert sorted(ids.values()) == list(range(4))
    assert (tiny_dataset / "song_id.map").read_text().splitlines()[0] == "work0 0"


def test_the_alignments_views_are_stored_whatever_the_config_lists(tmp_path):
    # a data folder whose config lists only the bass view (for a model) still gets the
    # views the two-stage search aligns (CHROMA_SPEC), so evaluate --rerank works on it
    from coverhunter.alignment_inputs import alignment_features
    from coverhunter.chroma import CHROMA_SPEC, chroma_path, fine_views, load_chroma

    data = make_dataset(tmp_path / "d", n_works=2, n_versions=2, seconds=3.0, hparams="chroma_views: [c1]\n")
    assert extract_features(data, num_workers=1, verbose=False).ok
    feat = read_dataset(data / "full.txt", check_features=True)[0].feat
    assert load_chroma(chroma_path(feat), ("c1", *fine_views(CHROMA_SPEC))) is not None
    assert alignment_features(feat).chroma.shape[1] == 12 * (1 + len(fine_views(CHROMA_SPEC)))


def test_new_chroma_views_recompute_the_chroma_only(tmp_path):
    # a release whose alignment reads another chroma view (or a config that asks for
    # another view) finds the CQT files standing: only the chroma is computed again
    from coverhunter.chroma import CHROMA_SPEC, chroma_path, fine_views, load_chroma

    data = make_dataset(
        tmp_path / "d", n_works=4, n_versions=2, seconds=3.0, hparams=AUG + "chroma_views: [c1]\n"
    )
    first = extract_features(data, num_workers=1, verbose=False)
    assert first.ok and first.computed == 8 and first.chroma_only == 0
    feats = sorted((data / "cqt_feat").glob("*.cqt.npy"))
    assert len(feats) > 8  # tempo copies of the training works' recordings
    before = {f: f.stat().st_ino for f in feats}
    (data / "hparams.yaml").write_text(AUG + "chroma_views: [c3]\n")
    r = extract_features(data, num_workers=2, verbose=False)
    assert r.ok and r.computed == 8 and r.chroma_only == 8 and "8 of them only their chroma" in r.summary()
    assert {f: f.stat().st_ino for f in feats} == before  # no CQT file written again
    for t in read_dataset(data / "full.txt", check_features=True):
        if "source_utt" not in t.extra:
            views = load_chroma(chroma_path(t.feat), ("c3", *fine_views(CHROMA_SPEC)))
            assert views is not None and len(views["c3"]) > 0
    assert extract_features(data, num_workers=1, verbose=False).computed == 0  # and now up to date
    lost = chroma_path(next(f for f in feats if not f.name.startswith("sp_")))  # a lost chroma file
    lost.unlink()
    r = extract_features(data, num_workers=1, verbose=False)
    assert r.computed == 1 and r.chroma_only == 1 and lost.is_file()
    # a changed CQT setting still recomputes everything
    (data / "hparams.yaml").write_text(AUG + "chroma_views: [c3]\nfeatures: {fmin: 33.0}\n")
    r = extract_features(data, num_workers=1, verbose=False)
    assert r.computed == 8 and r.chroma_only == 0


def test_split_by_work_and_copies_never_cross(tmp_path):
    data = make_dataset(tmp_path / "d", n_works=8, n_versions=3, seconds=3.0, hparams=AUG)
    extract_features(data, num_workers=1, verbose=False)
    full = read_dataset(data / "full.txt")
    split_of_work = {}
    for t in full:  # every line of a work, copies included, is in one split
        assert split_of_work.setdefault(t.work, t.extra["split"]) == t.extra["split"]
    per_split = {s: {t.track_id for t in read_dataset(data / f"{s}.txt")} for s in ("train", "val", "test")}
    works = {s: {t.work for t in read_dataset(data / f"{s}.txt")} for s in per_split}
    assert not (works["train"] & works["val"]) and not (works["train"] & works["test"])
    assert not (works["val"] & works["test"])
    assert sum(len(v) for v in per_split.values()) == len(full)
    originals = {t.track_id for t in read_dataset(data / "dataset.txt")}
    for t in full:
        if "source_utt" in t.extra:  # a tempo copy: train only, next to its original
            assert t.extra["split"] == "train"
            assert t.extra["source_utt"] in per_split["train"]
            assert t.track_id.startswith(("sp_0.8-", "sp_1.2-"))
    # every original is kept, exactly once
    assert originals == {t.track_id for t in full if "source_utt" not in t.extra}
    n_train = sum(1 for t in full if t.extra["split"] == "train" and "source_utt" not in t.extra)
    assert sum(1 for t in full if "source_utt" in t.extra) == 2 * n_train
    copy = next(t for t in full if t.track_id.startswith("sp_0.8-"))
    orig = next(t for t in full if t.track_id == copy.extra["source_utt"])
    assert copy.extra["feat_len"] == round(orig.extra["feat_len"] / 0.8)


def test_resumable_and_stale_detection(tiny_dataset):
    extract_features(tiny_dataset, num_workers=1, verbose=False)
    again = extract_features(tiny_dataset, num_workers=1, verbose=False)
    assert again.computed == 0 and again.skipped == 12
    # changed audio is redone, and so is a deleted feature file
    sf.write(tiny_dataset / "wav" / "t_01_1.wav", melody(1, 1, 4.0), SR)
    feat = tiny_dataset / "cqt_feat" / "t_02_0.cqt.npy"
    feat.unlink()
    r = extract_features(tiny_dataset, num_workers=1, verbose=False)
    assert r.computed == 2 and r.skipped == 10 and feat.is_file()
    full = {t.track_id: t for t in read_dataset(tiny_dataset / "full.txt")}
    assert full["t_01_1"].extra["feat_len"] == 4 * SR // 640
    # a corrupt state file of an earlier run is not a crash: everything is redone
    (tiny_dataset / "cqt_feat" / STATE_FILE).write_text("{garbage")
    assert extract_features(tiny_dataset, num_workers=1, verbose=False).computed == 12
    # a changed config makes the features stale
    (tiny_dataset / "hparams.yaml").write_text("aug_speed_mode: [1.0, 1.1]\n")
    r = extract_features(tiny_dataset, num_workers=1, verbose=False)
    assert r.computed > 0 and r.copies > 0
    assert not list((tiny_dataset / "cqt_feat").glob(".*.tmp"))  # no partial files left


def test_bad_recordings_are_reported_and_the_rest_goes_on(tiny_dataset):
    (tiny_dataset / "wav" / "t_00_1.wav").write_bytes(b"garbage")
    (tiny_dataset / "wav" / "t_03_2.wav").unlink()
    r = extract_features(tiny_dataset, num_workers=2, verbose=False)
    failed = dict(r.failed)
    assert set(failed) == {"t_00_1", "t_03_2"}
    assert "t_00_1.wav" in failed["t_00_1"] and "cannot decode" in failed["t_00_1"]
    assert "not found" in failed["t_03_2"]
    assert len(read_dataset(tiny_dataset / "full.txt")) == 10


def test_seed_command_and_exit_status(tiny_dataset):
    cmd = [sys.executable, "-m", "tools.extract_csi_features", str(tiny_dataset), "--workers", "1"]
    ok = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "12 computed" in ok.stderr
    (tiny_dataset / "wav" / "t_00_0.wav").write_bytes(b"junk")
    bad = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "1 recording(s) failed" in bad.stderr and "t_00_0" in bad.stderr
    # malformed dataset.txt: a clear error naming the file, no traceback
    (tiny_dataset / "dataset.txt").write_text('{"utt": 1}\n')
    err = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert err.returncode == 1 and "dataset.txt" in err.stderr and "Traceback" not in err.stderr
    json.loads((tiny_dataset / "cqt_feat" / STATE_FILE).read_text())
