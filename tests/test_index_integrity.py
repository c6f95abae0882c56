"""The catalogue index loses nothing (concurrent adds, failed or killed builds), reports
damage in one line naming the file, and embeds through the one batched path."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from coverhunter.checkpoint import load_model, save_checkpoint
from coverhunter.cli import main
from coverhunter.config import load_config
from coverhunter.dataset import read_dataset
from coverhunter.identification import identify_all as identify
from coverhunter.index import CatalogueError, CatalogueIndex, build_index
from coverhunter.losses import CoverLoss
from coverhunter.model import CoverHunter

from .conftest import SR, melody, write_fine_chroma

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.d_model=32",
    "model.n_layers=1",
    "model.n_heads=2",
    "model.ffn_dim=64",
    "model.embed_dim=16",
    "eval.chunk_s=4.8",
    "eval.hop_s=2.4",
    "eval.batch_size=8",
]


def tiny_model(path: Path) -> Path:
    """An untrained, self-describing checkpoint (weights fixed by the seed)."""
    cfg = load_config(None, TINY)
    torch.manual_seed(0)
    model = CoverHunter(cfg.model)
    save_checkpoint(path, config=cfg, model=model, loss=CoverLoss(cfg.loss, 16, 4), works=[])
    return path


def feature_list(root: Path, name: str, n: int, frames: int = 300, prefix: str = "") -> Path:
    """``name`` listing ``n`` recordings (2 per work) with CQT-like feature files."""
    (root / "feat").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        utt = f"{prefix}{name}_{i}"
        # zlib.crc32, not hash(): str hashes are salted per process, which made every run's data differ
        x = np.random.default_rng(zlib.crc32(utt.encode())).uniform(-80, 0, (frames, 96))
        np.save(root / "feat" / f"{utt}.npy", x.astype(np.float32))
        write_fine_chroma(root / "feat" / f"{utt}.npy", x.astype(np.float32))
        lines.append(
            {
                "utt": utt,
                "wav": f"{utt}.wav",
                "dur_s": frames / 25,
                "song": f"{name}_w{i // 2}",
                "version": str(i % 2),
                "feat": f"feat/{utt}.npy",
            }
        )
    path = root / f"{name}.txt"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "coverhunter", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.fixture()
def setup(tmp_path):
    model = tiny_model(tmp_path / "model.pt")
    return tmp_path, model


# -- two writers at once ---------------------------------------------------------


def test_two_parallel_adds_keep_every_recording(setup):
    tmp, model = setup
    base = feature_list(tmp, "base", 2)
    a, b = feature_list(tmp, "a", 24, 600), feature_list(tmp, "b", 24, 600)
    idx_dir = tmp / "idx"
    assert (
        main(["index", "build", str(idx_dir), "--model", str(model), "--dataset", str(base)], exit=False) == 0
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "coverhunter",
                "index",
                "add",
                str(idx_dir),
                "--model",
                str(model),
                "--dataset",
                str(lst),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for lst in (a, b)
    ]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    idx = CatalogueIndex.load(idx_dir)
    got = sorted(t["track_id"] for t in idx.tracks())
    want = sorted(t.track_id for lst in (base, a, b) for t in read_dataset(lst))
    assert got == want and idx.meta["n_tracks"] == 50
    assert len(idx.vectors()) == idx.meta["n_vectors"]


# -- failed or killed builds ------------------------------------------------

_KILL_DURING_BUILD = """
import os, signal, sys
import coverhunter.index.writes as ix  # the module that embeds the catalogue (index add)
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
for name in ("embed_recordings", "embed_recording"):  # whichever embeds the catalogue
    if hasattr(ix, name):
        setattr(ix, name, die)
from coverhunter.cli import main
main(sys.argv[1:])
"""


def _killed_build(*args: str) -> None:
    r = subprocess.run(
        [sys.executable, "-c", _KILL_DURING_BUILD, "index", "build", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert r.returncode == -9, r.stderr


def test_overwrite_build_that_fails_or_is_killed_keeps_the_old_index(setup):
    tmp, model = setup
    good = feature_list(tmp, "good", 6)
    idx_dir = tmp / "idx"
    assert (
        main(["index", "build", str(idx_dir), "--model", str(model), "--dataset", str(good)], exit=False) == 0
    )
    # a build where every recording fails
    bad = tmp / "bad.txt"
    bad.write_text(
        json.dumps({"utt": "x", "wav": "missing.wav", "dur_s": 1, "song": "w", "version": "0"}) + "\n"
    )
    assert (
        main(
            ["index", "build", str(idx_dir), "--model", str(model), "--dataset", str(bad), "--overwrite"],
            exit=False,
        )
        == 1
    )
    assert CatalogueIndex.load(idx_dir).meta["n_tracks"] == 6
    # a build killed while it embeds
    _killed_build(
        str(idx_dir), "--model", str(model), "--dataset", str(feature_list(tmp, "new", 4)), "--overwrite"
    )
    idx = CatalogueIndex.load(idx_dir)
    assert sorted(t["track_id"] for t in idx.tracks()) == sorted(t.track_id for t in read_dataset(good))
    assert list(tmp.glob(".idx.build-*"))  # the kill's leftover, hidden beside the index
    # and the next build cleans what the kill left
    assert (
        main(
            ["index", "build", str(idx_dir), "--model", str(model), "--dataset", str(good), "--overwrite"],
            exit=False,
        )
        == 0
    )
    assert not [p for p in tmp.iterdir() if p.name.startswith(".idx.") and p.is_dir()]


def test_killed_first_build_leaves_no_empty_index_and_rebuilds(setup, capsys):
    tmp, model = setup
    lst = feature_list(tmp, "cat", 4)
    idx_dir = tmp / "idx"
    _killed_build(str(idx_dir), "--model", str(model), "--dataset", str(lst))
    wav = tmp / "q.wav"
    sf.write(wav, melody(1, 0, 6.0), SR)
    # identify does not answer from a missing/empty index with exit 0
    assert main(["identify", str(wav), "--index", str(idx_dir), "--model", str(model)], exit=False) == 1
    assert "idx" in capsys.readouterr().err
    # a re-build without --overwrite is accepted
    assert (
        main(["index", "build", str(idx_dir), "--model", str(model), "--dataset", str(lst)], exit=False) == 0
    )
    assert CatalogueIndex.load(idx_dir).meta["n_tracks"] == 4


def test_empty_index_is_said_to_be_empty(setup, capsys):
    tmp, model = setup
    lm = load_model(model)
    from coverhunter.evaluate import windowing

    CatalogueIndex.create(tmp / "idx", lm, windowing(lm.config))  # as an old killed build left it
    wav = tmp / "q.wav"
    sf.write(wav, melody(1, 0, 6.0), SR)
    with pytest.raises(CatalogueError, match="empty"):
        identify(CatalogueIndex.load(tmp / "idx"), lm, [wav])
    assert main(["identify", str(wav), "--index", str(tmp / "idx")], exit=False) == 1
    assert "empty" in capsys.readouterr().err
    lst = feature_list(tmp, "cat", 2)
    assert (
        main(["index", "build", str(tmp / "idx"), "--model", str(model), "--dataset", str(lst)], exit=False)
        == 0
    )


# -- damage is one line naming the file --------------------------------------------


@pytest.mark.parametrize(
    "damage", ["meta_without_shards", "truncated_npy", "truncated_jsonl", "meta_not_json"]
)
def test_damaged_index_is_one_line_naming_the_file(setup, damage, capsys):
    tmp, model = setup
    idx_dir = tmp / "idx"
    build_index(idx_dir, load_model(model), dataset=feature_list(tmp, "cat", 4))
    meta = json.loads((idx_dir / "meta.json").read_text())
    shard = meta["shards"][0]
    if damage == "meta_without_shards":
        del meta["shards"]
        (idx_dir / "meta.json").write_text(json.dumps(meta))
        culprit = idx_dir / "meta.json"
    elif damage == "meta_not_json":
        (idx_dir / "meta.json").write_text("{not json")
        culprit = idx_dir / "meta.json"
    elif damage == "truncated_npy":
        p = idx_dir / f"{shard}.npy"
        p.write_bytes(p.read_bytes()[:200])
        culprit = p
    else:
        p = idx_dir / f"{shard}.jsonl"
        p.write_text(p.read_text()[:-40])
        culprit = p
    wav = tmp / "q.wav"
    sf.write(wav, melody(1, 0, 6.0), SR)
    capsys.readouterr()
    assert main(["identify", str(wav), "--index", str(idx_dir), "--model", str(model)], exit=False) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(culprit) in err and "Traceback" not in err


# -- one batched, cached path ------------------------------------------------------


def test_index_embeds_in_batches_through_the_cache(setup, tmp_path):
    tmp, model = setup
    lm = load_model(model)
    calls = []
    lm.model.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    lst = feature_list(tmp, "cat", 8)  # 4 chunks each, batches of 8 chunks
    from coverhunter.embed import EmbeddingCache
    from coverhunter.evaluate import windowing

    cache = EmbeddingCache(tmp / "cache", lm.fingerprint, windowing(lm.config))
    build_index(tmp / "idx", lm, dataset=lst, cache=cache)
    assert sum(calls) == 32 and len(calls) == 4  # chunks of several recordings per batch
    calls.clear()
    build_index(tmp / "idx2", lm, dataset=lst, cache=cache)
    assert calls == []  # every recording from the cache
    a, b = CatalogueIndex.load(tmp / "idx"), CatalogueIndex.load(tmp / "idx2")
    np.testing.assert_array_equal(a.vectors(), b.vectors())
