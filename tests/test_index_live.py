"""A served catalogue changed, damaged or swapped under its readers, paths written
from one folder and read from another, and ``serve``'s start-up errors."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi", reason="the serve extra is in the dev extra")
import httpx  # noqa: E402

from coverhunter.serve import ServeConfig, create_app  # noqa: E402
from coverhunter.serve.engine import Engine  # noqa: E402

from .serve_fixtures import DEFAULT_MODEL, SR, live_server, shared_catalogue, tune  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    """``coverhunter ARGS`` in a process of its own (this checkout's code, via PYTHONPATH)."""
    return subprocess.run(
        [sys.executable, "-m", "coverhunter", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def run(*args) -> subprocess.CompletedProcess:
    """``coverhunter ARGS`` in this process (the command line's own code and exit status,
    without a new interpreter's start-up): for the checks of what a command says."""
    from coverhunter.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([str(a) for a in args], exit=False)
    return subprocess.CompletedProcess(args, code, "", err.getvalue())


def wav_bytes(y: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, SR, format="WAV")
    return buf.getvalue()


@pytest.fixture()
def catalogue(tmp_path_factory, tmp_path) -> Path:
    """A copy of the session's catalogue (5 works, calibrated, with chroma) to change."""
    _, index_dir = shared_catalogue(tmp_path_factory)
    shutil.copytree(index_dir, tmp_path / "cat")
    return tmp_path / "cat"


def identify(url: str, y: np.ndarray) -> dict:
    r = httpx.post(f"{url}/identify", files={"file": ("q.wav", wav_bytes(y), "audio/wav")}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


# -- the catalogue changes under a running server ---------------------------------------


def test_server_follows_command_line_changes_and_keeps_reranking(catalogue, tmp_path):
    eng = Engine(ServeConfig(index=catalogue, device="cpu"))
    query = tune(3, 25.0, take=2)  # work3 stays in the catalogue
    try:
        with live_server(create_app(eng.cfg, eng)) as url:
            before = identify(url, query)
            assert before["verdict"] == "match" and before["search"]["rerank"] > 0
            # two compactions: the second deletes the shard files the server read at start
            for track in ("work0.wav", "work1.wav"):
                r = cli("index", "remove", catalogue, track, "--compact")
                assert r.returncode == 0, r.stderr
            after = identify(url, query)
            assert after["catalogue_generation"] > before["catalogue_generation"]
            assert after["verdict"] == "match" and after["search"]["rerank"] > 0
            assert after["matches"][0]["work"] == "work3" and after["matches"][0]["alignment"] is not None
            assert not {"work0", "work1"} & {m["work"] for m in after["matches"]}
            health = httpx.get(f"{url}/health", timeout=60).json()
            assert health["tracks"] == 3 and health["generation"] == after["catalogue_generation"]
            # a recording added from the command line is searched without a write by the server
            new = tmp_path / "new"
            new.mkdir()
            sf.write(new / "work7.wav", tune(7, 30.0), SR, subtype="PCM_16")
            r = cli("index", "add", catalogue, "--model", DEFAULT_MODEL, "--audio-dir", new)
            assert r.returncode == 0, r.stderr
            assert httpx.get(f"{url}/tracks/work7.wav", timeout=60).status_code == 200
            found = identify(url, tune(7, 20.0, take=1))
            assert found["matches"][0]["work"] == "work7" and found["search"]["rerank"] > 0
    finally:
        eng.close()


def test_batch_identify_follows_the_index_changed_during_it(catalogue, tmp_path, monkeypatch):
    from coverhunter import identification as module

    real, answers = module.identify, []

    def answer_then_change(*args, **kw):
        answers.append(real(*args, **kw))
        if len(answers) == 1:  # meanwhile another process compacts twice
            for track in ("work0.wav", "work1.wav"):
                r = cli("index", "remove", catalogue, track, "--compact")
                assert r.returncode == 0, r.stderr
        return answers[-1]

    monkeypatch.setattr(module, "identify", answer_then_change)
    folder = tmp_path / "queries"
    folder.mkdir()
    sf.write(folder / "a.wav", tune(3, 20.0, take=2), SR)
    sf.write(folder / "b.wav", tune(4, 20.0, take=2), SR)
    r = run("identify", folder, "--index", catalogue, "--json")
    assert r.returncode == 0, r.stderr
    best = answers[1].matches[0]
    assert best.work == "work4" and best.alignment is not None  # still re-ranked


# -- damaged chroma and shard files ------------------------------------------------------


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncated" else b"\x17garbage" * 999)


def _one_line_naming(r: subprocess.CompletedProcess, path: Path) -> str:
    assert r.returncode == 1, r.stderr
    err = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr and err[-1].startswith("coverhunter: error: "), r.stderr
    assert str(path) in err[-1] and "index repair" in err[-1]
    return err[-1]


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_damaged_chroma_is_named_reported_and_repaired(catalogue, tmp_path, how):
    chroma = catalogue / "shard_00000.chroma.npz"
    _damage(chroma, how)
    query = tune(2, 20.0, take=1)
    eng = Engine(ServeConfig(index=catalogue, device="cpu"))  # starts, and says what is wrong
    try:
        with live_server(create_app(eng.cfg, eng)) as url:
            h = httpx.get(f"{url}/health", timeout=60)
            assert h.status_code == 503 and h.json()["status"] == "damaged"
            assert str(chroma) in h.json()["problem"]
            r = httpx.post(
                f"{url}/identify", files={"file": ("q.wav", wav_bytes(query), "audio/wav")}, timeout=120
            )
            assert r.status_code == 503 and str(chroma) in r.json()["detail"]
            q = tmp_path / "q.wav"
            sf.write(q, query, SR)
            _one_line_naming(run("identify", q, "--index", catalogue), chroma)
            if how == "truncated":  # `index add` on it returned 0 without noticing
                new = tmp_path / "new"
                new.mkdir()
                sf.write(new / "work7.wav", tune(7, 20.0), SR, subtype="PCM_16")
                _one_line_naming(
                    run("index", "add", catalogue, "--model", DEFAULT_MODEL, "--audio-dir", new), chroma
                )
            r = cli("index", "repair", catalogue)
            assert r.returncode == 0, r.stderr
            assert httpx.get(f"{url}/health", timeout=60).json()["status"] == "ok"  # the server reloaded
            answer = identify(url, query)
            assert answer["matches"][0]["work"] == "work2" and answer["search"]["rerank"] > 0
            assert answer["matches"][0]["alignment"] is not None
    finally:
        eng.close()


def test_damaged_vectors_are_recomputed_from_the_audio(catalogue, tmp_path):
    from coverhunter.index import CatalogueIndex

    npy = catalogue / "shard_00000.npy"
    before = np.load(npy)
    _damage(npy, "truncated")
    q = tmp_path / "q.wav"
    sf.write(q, tune(2, 20.0, take=1), SR)
    _one_line_naming(run("identify", q, "--index", catalogue), npy)
    r = run("index", "repair", catalogue)
    assert r.returncode == 0, r.stderr
    idx = CatalogueIndex.load(catalogue)
    assert idx.meta["n_tracks"] == 5 and np.allclose(idx.vectors(), before, atol=1e-3)


def test_garbage_track_list_is_named_and_its_recordings_dropped(catalogue, tmp_path):
    from coverhunter.index import CatalogueIndex

    jsonl = catalogue / "shard_00000.jsonl"
    _damage(jsonl, "garbage")
    q = tmp_path / "q.wav"
    sf.write(q, tune(2, 20.0, take=1), SR)
    _one_line_naming(run("identify", q, "--index", catalogue), jsonl)
    r = run("index", "repair", catalogue)
    assert r.returncode == 1 and "shard_00000: its list of recordings was unreadable" in r.stderr
    assert CatalogueIndex.load(catalogue).meta["n_tracks"] == 0  # opens again; add them anew


# -- a build killed between the renames of its swap -------------------------------------

# runs `coverhunter ARGS` with the index folder module's renames counted: SIGKILL before
# rename number KILL_AT (the swap's renames are the only ones made through that module)
_KILL_IN_SWAP = """
import os, signal, sys
import coverhunter.index.folder as fs

class CountingOs:
    calls = 0
    def __getattr__(self, name):
        return getattr(os, name)
    def replace(self, a, b):
        CountingOs.calls += 1
        if CountingOs.calls == int(os.environ["KILL_AT"]):
            os.kill(os.getpid(), signal.SIGKILL)
        return os.replace(a, b)

fs.os = CountingOs()
from coverhunter.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("kill_at", [2, 3])
def test_build_killed_inside_its_swap_is_finished_by_the_next_command(tmp_path, kill_at):
    import os

    from coverhunter.index import CatalogueIndex

    from .test_index_integrity import feature_list, tiny_model

    model = tiny_model(tmp_path / "model.pt")
    idx = tmp_path / "idx"
    old, new = feature_list(tmp_path, "old", 2), feature_list(tmp_path, "new", 4)
    assert run("index", "build", idx, "--model", model, "--dataset", old).returncode == 0
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            _KILL_IN_SWAP,
            "index",
            "build",
            str(idx),
            "--model",
            str(model),
            "--dataset",
            str(new),
            "--overwrite",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "KILL_AT": str(kill_at)},
        timeout=300,
    )
    assert r.returncode == -9, r.stderr  # killed inside the swap
    assert any(p.name.startswith(".idx.") for p in tmp_path.iterdir())  # left unfinished
    r = cli("index", "compact", idx)  # any command that opens the index
    assert r.returncode == 0, r.stderr
    got = sorted(t["track_id"] for t in CatalogueIndex.load(idx).tracks())
    assert got == [f"new_{i}" for i in range(4)]  # the build's index, complete
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".idx.") and p.is_dir()]


def test_index_moved_aside_by_an_older_swap_is_put_back(tmp_path):
    from coverhunter.index import CatalogueIndex

    from .test_index_integrity import feature_list, tiny_model

    model = tiny_model(tmp_path / "model.pt")
    idx = tmp_path / "idx"
    assert (
        run("index", "build", idx, "--model", model, "--dataset", feature_list(tmp_path, "old", 2)).returncode
        == 0
    )
    idx.rename(tmp_path / ".idx.old-12345")  # where the older swap left it when killed
    assert CatalogueIndex.load(idx).meta["n_tracks"] == 2


# -- paths written from one folder, read from another -----------------------------------


def test_upload_to_a_relative_index_is_served_from_any_folder(catalogue, tmp_path, monkeypatch):
    monkeypatch.chdir(catalogue.parent)  # `coverhunter serve --index cat` started here
    eng = Engine(ServeConfig(index=Path(catalogue.name), device="cpu", token="T"))
    auth = {"Authorization": "Bearer T"}
    try:
        with live_server(create_app(eng.cfg, eng)) as url:
            r = httpx.post(
                f"{url}/tracks",
                data={"work": "work7", "track_id": "w7"},
                headers=auth,
                files={"file": ("w7.wav", wav_bytes(tune(7, 20.0)), "audio/wav")},
                timeout=120,
            )
            assert r.status_code == 201, r.text
            assert httpx.get(f"{url}/tracks/w7/audio", timeout=60).status_code == 200
    finally:
        eng.close()
    monkeypatch.chdir(tmp_path.parent)  # the same index, served from elsewhere
    other = Engine(ServeConfig(index=catalogue, device="cpu"))
    try:
        assert other.audio_path("w7") == (catalogue / "uploads" / "w7.wav").resolve()
    finally:
        other.close()
    # once the track is removed and compacted away, its upload goes too
    assert sorted(p.name for p in (catalogue / "uploads").iterdir()) == [
        "w7.chroma.npz",
        "w7.cqt.npy",
        "w7.wav",
    ]
    r = cli("index", "remove", catalogue, "w7", "--compact")
    assert r.returncode == 0, r.stderr
    assert not list((catalogue / "uploads").iterdir())


def test_relative_audio_dir_and_model_work_from_another_folder(tmp_path, monkeypatch):
    from coverhunter.index import CatalogueIndex

    from .test_index_integrity import tiny_model

    work = tmp_path / "work"
    (work / "audio").mkdir(parents=True)
    (work / "more").mkdir()
    for w in range(2):
        sf.write(work / "audio" / f"w{w}.wav", tune(w, 12.0), SR, subtype="PCM_16")
    sf.write(work / "more" / "w2.wav", tune(2, 12.0), SR, subtype="PCM_16")
    tiny_model(work / "model.pt")
    monkeypatch.chdir(work)  # written with paths relative to this folder
    r = run("index", "build", "cat", "--model", "model.pt", "--audio-dir", "audio")
    assert r.returncode == 0, r.stderr
    r = run("index", "add", "cat", "--model", "model.pt", "--audio-dir", "more")
    assert r.returncode == 0, r.stderr
    monkeypatch.chdir(ROOT)
    q = tmp_path / "q.wav"
    sf.write(q, tune(1, 10.0, take=1), SR)
    r = cli("identify", q, "--index", work / "cat", "--json", cwd=tmp_path)  # no --model
    assert r.returncode == 0, r.stderr
    idx = CatalogueIndex.load(work / "cat")
    assert Path(idx.meta["model"]) == (work / "model.pt").resolve()
    assert all(Path(t["audio"]).is_absolute() and Path(t["audio"]).is_file() for t in idx.tracks())


# -- serve's start-up errors ------------------------------------------------------------


@pytest.mark.parametrize("problem", ["no index", "damaged meta.json", "no model"])
def test_serve_start_up_errors_are_one_line_and_exit_1(catalogue, problem):
    import json

    meta = catalogue / "meta.json"
    if problem == "no index":
        shutil.rmtree(catalogue)
        words = "not an index"
    elif problem == "damaged meta.json":
        meta.write_text('{"format": "coverhunter-index/1", ')
        words = "meta.json: damaged"
    else:
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "model": "/nowhere/model.pt"}))
        words = "/nowhere/model.pt"
    # one case as its own process (the exit status a user sees), the others in this one
    r = (
        cli("serve", "--index", catalogue, "--port", "0", timeout=120)
        if problem == "no model"
        else run("serve", "--index", catalogue, "--port", "0")
    )
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("coverhunter: error: ") and words in last, r.stderr


# -- more damage named, an empty folder, no unsafe advice -------------------------------


def test_non_utf8_track_list_names_its_file(catalogue, tmp_path):
    jsonl = catalogue / "shard_00000.jsonl"
    jsonl.write_bytes(b"\xff\xfe\x00\x81garbage" * 50)
    q = tmp_path / "q.wav"
    sf.write(q, tune(2, 10.0, take=1), SR)
    assert "not UTF-8" in _one_line_naming(run("identify", q, "--index", catalogue), jsonl)


def test_identify_on_a_folder_without_audio_says_so(catalogue, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here")
    r = run("identify", empty, "--index", catalogue)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith(
        f"coverhunter: error: no audio files in {empty}"
    ), r.stderr


def test_damaged_checkpoint_message_never_suggests_an_unsafe_load(catalogue, tmp_path):
    import torch

    from coverhunter.checkpoint import load_model

    bad = tmp_path / "model.pt"
    bad.write_bytes(b"garbage" * 100)  # torch's message for it advises weights_only=False
    foreign = tmp_path / "foreign.pt"
    torch.save({"x": Path("/x")}, foreign)  # a Python object a safe load refuses
    for path in (bad, foreign):
        with pytest.raises(ValueError) as e:
            load_model(path)
        msg = str(e.value)
        assert msg.startswith(f"{path}: damaged or not a checkpoint") and "\n" not in msg
        assert "weights_only" not in msg and "likely succeed" not in msg
    q = tmp_path / "q.wav"
    sf.write(q, tune(2, 10.0, take=1), SR)
    r = run("identify", q, "--index", catalogue, "--model", bad)
    assert r.returncode == 1 and "weights_only" not in r.stderr and "Traceback" not in r.stderr
