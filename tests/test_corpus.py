"""The demo corpus renderer, and the foundation's end-to-end path: corpus -> features."""

import json
import shutil

import numpy as np
import pytest

from coverhunter import corpus
from coverhunter.corpus import make, sound
from coverhunter.dataset import read_dataset
from coverhunter.extract import extract_features

needs_tools = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or not corpus.find_soundfonts(),
    reason="fluidsynth or a GM soundfont missing (scripts/setup.sh installs them)",
)


def test_reserved_folders_are_never_candidates():
    pytest.importorskip("music21")
    cands = corpus.candidate_pieces(0)
    folders = {p.split("/", 1)[0] for p, _ in cands}
    assert "bach" not in folders and folders <= set(corpus.FOLDERS)
    assert len(cands) > 10000
    assert cands[:20] == corpus.candidate_pieces(0)[:20]
    assert cands[:20] != corpus.candidate_pieces(1)[:20]


@needs_tools
def test_tiny_corpus_end_to_end(tmp_path):
    a = corpus.make_demo_corpus(tmp_path / "a", works=2, versions=2, seed=5, num_workers=2, verbose=False)
    b = corpus.make_demo_corpus(tmp_path / "b", works=2, versions=2, seed=5, num_workers=1, verbose=False)
    assert len(a) == 4 and len({t.work for t in a}) == 2
    assert [(t.work, t.version, t.duration) for t in a] == [(t.work, t.version, t.duration) for t in b]
    import soundfile as sf

    ya, sr = sf.read(a[1].audio)
    yb, _ = sf.read(b[1].audio)
    assert sr == 16000 and np.array_equal(ya, yb)  # same seed, same audio
    assert abs(len(ya) / sr - a[1].duration) < 1e-2 and np.abs(ya).max() > 0.01
    (tmp_path / "a" / "hparams.yaml").write_text("split: {train: 0.5, val: 0.5, test: 0}\n")
    report = extract_features(tmp_path / "a", num_workers=1, verbose=False)
    assert report.ok and report.computed == 4
    full = read_dataset(tmp_path / "a" / "full.txt", check_features=True)
    assert {t.extra["split"] for t in full} == {"train", "val"}
    for t in full:
        assert np.load(t.feat).shape == (t.extra["feat_len"], 96)


def _echo(task):
    import time

    time.sleep(0.05)  # a render takes seconds: the parent sees each result before the next ends
    return task, "rendered"


def test_enough_works_cancels_the_spare_renders():
    # make_corpus asks for a margin of spare pieces; once it has enough usable works
    # the spares not started yet must not be rendered (they would only be deleted)
    seen = []
    out = make._run_isolated(
        list(range(40)), workers=1, fn=_echo, on_done=lambda r: seen.append(r[0]) or len(seen) >= 3
    )
    ran = [r for r in out if r != (None, None)]
    assert ran == [(i, "rendered") for i in range(len(ran))]  # a prefix, in order
    assert 3 <= len(ran) < 10  # at most the pool's few queued calls beyond the third


def _task_in_child(args, out):
    out.put(make._work_task(args))


def test_a_second_renderer_of_a_piece_waits_and_reuses_the_first_ones_work(tmp_path):
    # two make-corpus runs on one folder: the piece's lock is held by "the first" (this
    # test); the second waits, then finds the piece done and renders nothing
    import multiprocessing as mp
    import queue

    import soundfile as sf

    from coverhunter.utils import file_lock

    spec = make.CorpusSpec(seed=5, versions=(2, 2), split="train", arrangement_only=False)
    piece = tmp_path / "wav" / "a_piece"
    piece.mkdir(parents=True)
    args = ("no/such/score.abc", None, spec, piece)  # rendering it would fail: SkipPiece
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    with file_lock(piece / make.RENDER_LOCK):
        child = ctx.Process(target=_task_in_child, args=(args, out))
        child.start()
        with pytest.raises(queue.Empty):
            out.get(timeout=1.0)  # it cannot finish while the lock is held
        rows = []
        for v in range(2):
            sf.write(str(piece / f"v{v}.wav"), np.zeros(1600), 16000)
            rows.append({"wav": f"v{v}.wav", "dur_s": 0.1, "version": f"v{v}"})
        (piece / "done.json").write_text(json.dumps({"spec": spec.key(), "rows": rows}))
    got, skipped = out.get(timeout=120)
    child.join(timeout=60)
    assert skipped is None and [r["wav"] for r in got] == [str(piece / "v0.wav"), str(piece / "v1.wav")]


def test_missing_fluidsynth_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(sound.shutil, "which", lambda name: None)
    with pytest.raises(corpus.CorpusError, match="fluidsynth not found"):
        corpus.make_demo_corpus(tmp_path, works=1, versions=2)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="versions >= 2"):
        corpus.make_demo_corpus(tmp_path, works=2, versions=1)


@needs_tools
def test_demo_runs_every_stage_on_a_small_corpus(tmp_path):
    from coverhunter.demo import run_demo

    s = run_demo(tmp_path / "demo", works=8, versions=3, seed=3, max_epochs=1)
    assert s["works"] == 8 and s["recordings"] == 24 and s["epochs"] == 1
    assert 0 < s["test_trained"]["map"] <= 1 and 0 < s["test_untrained"]["map"] <= 1
    assert len(s["identify_text"]) >= 2  # held-out versions and a stranger, answered
    assert any("truth: not in the catalogue" in t for t in s["identify_text"])
    assert (tmp_path / "demo" / "summary.json").is_file()
    assert (tmp_path / "demo" / "exp" / "checkpoints" / "best.pt").is_file()
    assert (tmp_path / "demo" / "index" / "meta.json").is_file()
    again = run_demo(tmp_path / "demo", works=8, versions=3, seed=3, max_epochs=1)  # resumes
    assert again["corpus_s"] < 1 and again["steps"] == s["steps"]
