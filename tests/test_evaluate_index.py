"""Evaluation command, embedding cache, catalogue index, calibration and identify."""

import json
import logging
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from coverhunter.checkpoint import load_model
from coverhunter.chroma import CHROMA_SPEC
from coverhunter.cli import main
from coverhunter.dataset import read_dataset
from coverhunter.embed import EmbeddingCache, Windowing
from coverhunter.evaluate import run_evaluation
from coverhunter.extract import extract_features
from coverhunter.identification import identify_all as identify
from coverhunter.index import (
    CatalogueError,
    CatalogueIndex,
    build_index,
    p_impostor,
    probability_same,
)
from coverhunter.train import train

from .conftest import SR, make_dataset, make_experiment, melody

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny corpus of synthetic recordings, its features and a model trained one epoch."""
    root = tmp_path_factory.mktemp("corpus")
    data = make_dataset(
        root / "data",
        n_works=6,
        n_versions=3,
        seconds=6.0,
        hparams="split: {train: 0.5, val: 0.25, test: 0.25, seed: 0}\n",
    )
    assert extract_features(data, num_workers=1, verbose=False).ok
    exp = make_experiment(root / "exp", data, "")
    train(exp, overrides=["optim.max_epochs=1", "data.chunk_frame=[40]"], verbose=False)
    return data, exp


def test_evaluate_writes_json_and_reuses_cache(trained, tmp_path):
    data, exp = trained
    out = tmp_path / "m.json"
    rep = run_evaluation(exp, data / "full.txt", data / "full.txt", output=out, bootstrap=50)
    saved = json.loads(out.read_text())
    assert saved["map"] == rep.map and len(saved["per_query_ap"]) == 18 and "ci" in saved
    assert 0 < rep.map <= 1 and rep.n_queries == 18
    assert not (exp / "embed_cache").exists()  # caches live in the user's cache folder
    fp = load_model(exp).fingerprint
    cache = [p for p in Path(os.environ["COVERHUNTER_CACHE"]).iterdir() if p.name.startswith(fp)]
    assert len(cache) == 1
    again = run_evaluation(exp, data / "full.txt", data / "full.txt")
    assert again.map == rep.map  # identical from the cache
    orig = run_evaluation(exp, data / "full.txt", mode="original")
    assert orig.mode == "original"


def test_cache_is_keyed_by_model_content(trained, tmp_path):
    data, exp = trained
    win_cache = EmbeddingCache(tmp_path, "aaaa", Windowing(10, 5))
    feat = read_dataset(data / "full.txt")[0].feat
    win_cache.put(feat, np.ones((2, 4), np.float32), [0, 5])
    assert win_cache.get(feat)[1] == [0, 5]
    other = EmbeddingCache(tmp_path, "bbbb", Windowing(10, 5))
    assert other.get(feat) is None  # another model never sees these embeddings


def test_seed_eval_command_with_query_in_ref(trained, tmp_path):
    data, exp = trained
    q = read_dataset(data / "full.txt")[:3]
    (tmp_path / "q.txt").write_text("".join(json.dumps({**t.to_json()}) + "\n" for t in q))
    (tmp_path / "qir.txt").write_text(json.dumps({"query_in_ref": [[0, 0], [1, 1], [2, 2]]}) + "\n")
    out = tmp_path / "res.json"
    cmd = [
        sys.executable,
        "-m",
        "tools.eval_testset",
        str(exp),
        str(tmp_path / "q.txt"),
        str(data / "full.txt"),
        "-query_in_ref_path",
        str(tmp_path / "qir.txt"),
        "--output",
        str(out),
    ]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "MAP" in p.stdout and "MR1" in p.stdout
    res = json.loads(out.read_text())
    assert res["n_queries"] == 3 and "rerank" not in res  # the model alone, as the original
    p = subprocess.run(cmd + ["--rerank", "4"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["n_queries"] == 3 and res["rerank"]["k"] == 4  # the two-stage search


def test_index_build_search_add_reload_calibrate(trained, tmp_path, caplog):
    data, exp = trained
    lm = load_model(exp)
    full = read_dataset(data / "full.txt")
    first, rest = (
        [t for t in full if t.track_id.endswith("_0")],
        [t for t in full if not t.track_id.endswith("_0")],
    )
    (tmp_path / "first.txt").write_text("".join(json.dumps(t.to_json()) + "\n" for t in first))
    idx, failed = build_index(tmp_path / "idx", lm, dataset=tmp_path / "first.txt")
    assert not failed and idx.meta["n_tracks"] == 6
    assert idx.add(lm, first) == [(t.track_id, "already in the index") for t in first]
    failed = idx.add(lm, rest)  # append without rebuilding
    assert not failed
    again = CatalogueIndex.load(tmp_path / "idx")
    assert again.meta["n_tracks"] == 18 and len(again.tracks()) == 18
    assert again.vectors().shape[0] == again.meta["n_vectors"]
    res = identify(again, lm, [full[1]], top=3)[0]
    assert len(res.matches) == 3 and res.matches[0].score >= res.matches[1].score
    assert res.matches[0].probability is None  # not calibrated yet
    exact = again.search_vectors(np.eye(16, dtype=np.float32)[:2], 5, approximate=False)
    approx = again.search_vectors(np.eye(16, dtype=np.float32)[:2], 5, approximate=True)
    assert (exact[1][:, 0] == approx[1][:, 0]).all()  # HNSW agrees on a tiny index
    cal = again.calibrate(lm, full)
    assert cal["n_same"] == 18 and cal["n_different"] == 18 * 17 // 2 - 18
    res = identify(CatalogueIndex.load(tmp_path / "idx"), lm, [full[1]], top=2)[0]
    assert 0 <= res.matches[0].probability <= 1 and 0 <= res.matches[0].p_value <= 1
    assert res.verdict in ("match", "no cover in the catalogue")
    # the index stores chroma, so alignment scores were fitted too: every same-work pair, and
    # each recording with its nearest strangers (all 15 in a set this small)
    assert cal["alignment"]["n_same"] == 18 and cal["alignment"]["n_different"] == 18 * 17 // 2 - 18
    # and every aligned match takes its probability and p-value from its alignment score
    loaded = CatalogueIndex.load(tmp_path / "idx")
    res = identify(loaded, lm, [full[1]], top=10)[0]
    aligned = [m for m in res.matches if m.alignment is not None]
    assert aligned and len(res.matches) == 6  # all six works listed, so all aligned ones seen
    # every work is aligned through its three recordings: the competitors of the p-value
    assert all(len(loaded.work_tracks(m.work)) == 3 for m in aligned)
    for m in aligned:
        assert m.probability == pytest.approx(probability_same(cal["alignment"], m.alignment))
        assert m.p_value == pytest.approx(p_impostor(cal["alignment"], m.alignment, 3 * len(aligned)))
    one = identify(loaded, lm, [full[1]], top=10, rerank_versions=1)[0]
    assert all(
        b.alignment >= a.alignment
        for a in one.matches
        for b in res.matches  # a work's best
        if a.work == b.work and a.alignment is not None
    )
    off = identify(CatalogueIndex.load(tmp_path / "idx"), lm, [full[1]], top=10, rerank=0)[0]
    assert all(m.alignment is None for m in off.matches)  # the embedding's own calibration
    assert all(m.p_value == pytest.approx(p_impostor(cal, m.score, 18)) for m in off.matches)
    # the alignment settings are recorded; a calibration fitted with others is not used
    from coverhunter.rerank import RerankConfig

    assert cal["alignment"]["qmax"] == asdict(RerankConfig().qmax)
    stale = CatalogueIndex.load(tmp_path / "idx")
    stale.meta["calibration"]["alignment"]["qmax"] = {**cal["alignment"]["qmax"], "m": 99}
    with caplog.at_level(logging.WARNING):
        assert stale.alignment_calibration is None and stale.alignment_calibration is None
    assert sum("other alignment settings" in r.message for r in caplog.records) == 1  # said once
    res = identify(stale, lm, [full[1]], top=10)[0]
    assert all(m.p_value == pytest.approx(p_impostor(cal, m.score, 18)) for m in res.matches)
    # and the chroma: one fitted before the fine chroma (no record: the CQT's alone) is not
    # used on an index of the fine chroma
    assert cal["alignment"]["chroma"] == CHROMA_SPEC
    assert CatalogueIndex.load(tmp_path / "idx").alignment_calibration is not None
    before = CatalogueIndex.load(tmp_path / "idx")
    del before.meta["calibration"]["alignment"]["chroma"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert before.alignment_calibration is None
    assert "chroma" in caplog.text and "index calibrate" in caplog.text


def test_identify_cli_on_audio_with_bad_files(trained, tmp_path, capsys):
    data, exp = trained
    idx_dir = tmp_path / "idx"
    assert (
        main(
            [
                "index",
                "build",
                str(idx_dir),
                "--model",
                str(exp),
                "--dataset",
                str(data / "full.txt"),
                "--calibrate",
                str(data / "full.txt"),
            ],
            exit=False,
        )
        == 0
    )
    meta_before = (idx_dir / "meta.json").read_text()
    good = tmp_path / "query.wav"
    sf.write(good, melody(2, 5, 6.0), SR)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), SR)
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"not audio at all")
    code = main(
        ["identify", str(good), str(empty), str(junk), "--index", str(idx_dir), "--top", "3", "--json"],
        exit=False,
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 1  # some queries failed
    assert out[0]["error"] is None and len(out[0]["matches"]) == 3
    assert out[0]["matches"][0]["work"].startswith("work")
    assert "no samples" in out[1]["error"] and "cannot decode" in out[2]["error"]
    # a bad recording in an add is reported and leaves the index intact
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / "broken.wav").write_bytes(b"xx")
    assert (
        main(["index", "add", str(idx_dir), "--model", str(exp), "--audio-dir", str(bad_dir)], exit=False)
        == 1
    )
    assert (idx_dir / "meta.json").read_text() == meta_before
    assert CatalogueIndex.load(idx_dir).meta["n_tracks"] == 18


def test_index_refuses_another_model_and_damage(trained, tmp_path):
    data, exp = trained
    lm = load_model(exp)
    idx, _ = build_index(tmp_path / "idx", lm, dataset=data / "test.txt")
    other = make_experiment(tmp_path / "other", data, "")
    train(other, overrides=["optim.max_epochs=1", "data.chunk_frame=[40]", "optim.seed=9"], verbose=False)
    with pytest.raises(CatalogueError, match="built with model"):
        identify(idx, load_model(other), [read_dataset(data / "test.txt")[0]])
    with pytest.raises(CatalogueError, match="exists already"):
        build_index(tmp_path / "idx", lm, dataset=data / "test.txt")
    (tmp_path / "idx" / idx.meta["shards"][0]).with_suffix(".npy").unlink()
    with pytest.raises(CatalogueError, match="missing"):
        CatalogueIndex.load(tmp_path / "idx")
    with pytest.raises(CatalogueError, match="not an index"):
        CatalogueIndex.load(tmp_path / "nothing")
