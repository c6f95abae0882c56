"""An index that grows and shrinks in place, on every backend (faiss exact / HNSW /
IVF-PQ in the folder, and a real Qdrant in local mode), written by several processes."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from coverhunter.checkpoint import load_model
from coverhunter.cli import main
from coverhunter.dataset import read_dataset
from coverhunter.embed import EmbeddingCache
from coverhunter.index import CatalogueIndex, build_index, embed_recordings, rank_slice, resolve_rank
from coverhunter.index import faiss_backend as fb
from coverhunter.index.chroma_store import IndexChroma

from .test_index_integrity import ROOT, feature_list, tiny_model

BACKENDS = ["exact", "hnsw", "ivfpq", "qdrant"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny model, 16 catalogue recordings (8 works) and their query embeddings."""
    tmp = tmp_path_factory.mktemp("backends")
    model = tiny_model(tmp / "model.pt")
    lm = load_model(model)
    cat = feature_list(tmp, "cat", 16)
    tracks = read_dataset(cat)
    other = read_dataset(feature_list(tmp, "other", 4))  # recordings not in the catalogue
    # the embeddings are cached once here (the index's real cache), so the tests time the
    # index, not the model
    cache = EmbeddingCache(tmp / "cache", lm.fingerprint, _win(lm))
    queries = embed_recordings(lm, tracks + other, _win(lm), cache=cache)
    return tmp, model, lm, tracks, other, queries, cache


def _win(lm):
    from coverhunter.evaluate import windowing

    return windowing(lm.config)


def _kwargs(backend, where):
    return {"backend": backend, "uri": str(where / "qdrant") if backend == "qdrant" else None}


def answers(idx: CatalogueIndex, queries, top: int = 3) -> list:
    """(work, track, score to 4 places) of every query's best works (the untrained tiny
    model puts many works within 1e-4 of each other, so deeper places can tie)."""
    return [[(m.work, m.track_id, round(m.score, 4)) for m in idx.search(e, s, top)] for e, s in queries]


@pytest.mark.parametrize("backend", BACKENDS)
def test_add_appends_in_place_and_equals_a_rebuild(setup, backend, tmp_path):
    _, _, lm, tracks, _, queries, cache = setup
    whole, _ = build_index(
        tmp_path / "whole",
        lm,
        dataset=_list(tmp_path, "all", tracks),
        **_kwargs(backend, tmp_path),
        cache=cache,
    )
    grown, _ = build_index(
        tmp_path / "grown",
        lm,
        dataset=_list(tmp_path, "half", tracks[:8]),
        **_kwargs(backend, tmp_path),
        cache=cache,
    )
    before = _engine_state(grown)
    assert grown.add(lm, tracks[8:], verbose=False, cache=cache) == []
    grown = CatalogueIndex.load(tmp_path / "grown")
    after = _engine_state(grown)
    assert grown.kind == backend and grown.meta["n_tracks"] == 16
    assert answers(grown, queries) == answers(whole, queries)
    if backend == "ivfpq":  # appended with the quantisers trained at build, not retrained
        np.testing.assert_array_equal(before["centroids"], after["centroids"])
    if backend in ("hnsw", "ivfpq"):
        assert after["ntotal"] == grown.meta["n_vectors"] > before["ntotal"]
    if backend == "qdrant":
        assert after["collection"] == before["collection"]
    if backend in ("hnsw", "ivfpq"):  # searched and grown without loading every vector
        assert grown._vectors is None


def test_row_view_reads_shards_as_one_array():
    from coverhunter.index.search import RowView

    parts = [
        np.arange(i * 12, (i + n) * 12, dtype=np.float32).reshape(n, 12)
        for i, n in ((0, 3), (3, 0), (3, 5), (8, 2))
    ]
    whole = np.concatenate(parts)
    view = RowView(parts, 12)
    assert view.shape == (10, 12) and len(view) == 10
    for a, b in ((0, 10), (2, 7), (3, 3), (8, 10), (9, 50)):
        np.testing.assert_array_equal(view[a:b], whole[a:b])
    rows = np.array([[9, 0, 3], [4, 4, 8]])
    np.testing.assert_array_equal(view[rows], whole[rows])
    with pytest.raises(IndexError):
        view[np.array([10])]


def _list(where, name, tracks):
    path = where / f"{name}.txt"
    path.write_text("".join(json.dumps(t.to_json()) + "\n" for t in tracks))
    return path


def _engine_state(idx: CatalogueIndex) -> dict:
    if idx.kind == "qdrant":
        return {"collection": idx.meta["engine"]["collection"]}
    ann = fb.load_ann(idx.root / idx.meta.get("ann_file", fb.ANN_FILE))
    if ann is None:
        return {}
    import faiss

    out = {"ntotal": ann.ntotal}
    if fb.kind_of(ann) == "ivfpq":
        out["centroids"] = faiss.vector_to_array(ann.pq.centroids)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_remove_replace_and_compact(setup, backend, tmp_path):
    _, _, lm, tracks, other, queries, cache = setup
    idx, _ = build_index(
        tmp_path / "idx",
        lm,
        dataset=_list(tmp_path, "all", tracks),
        **_kwargs(backend, tmp_path),
        cache=cache,
    )
    gone = [tracks[0].track_id, tracks[5].track_id]
    assert idx.remove(gone + ["no_such_track"]) == ["no_such_track"]
    idx = CatalogueIndex.load(tmp_path / "idx")
    assert idx.meta["n_tracks"] == 14
    found = {m[1] for a in answers(idx, queries, top=8) for m in a}
    assert not found & set(gone) and len(found) > 4

    # a new recording under an old track id replaces it: its own features find it, the
    # old ones no longer reach an identical chunk of that id (a self-match scores 1 within
    # 1e-6; the untrained tiny model puts strangers' chunks as close as 0.9991)
    new = dataclasses.replace(other[0], track_id=tracks[2].track_id, work=tracks[2].work)
    assert idx.add(lm, [new], verbose=False, cache=cache) == [(new.track_id, "already in the index")]
    assert idx.add(lm, [new], verbose=False, replace=True, cache=cache) == []
    idx = CatalogueIndex.load(tmp_path / "idx")
    assert idx.meta["n_tracks"] == 14 and sum(t["track_id"] == new.track_id for t in idx.tracks()) == 1
    emb_new, starts_new = queries[16]
    best = idx.search(emb_new, starts_new, 1)[0]
    assert best.track_id == new.track_id and best.score > 0.99999
    old_best = [m for m in idx.search(*queries[2], 16) if m.track_id == new.track_id]
    assert all(m.score < 0.99999 for m in old_best)

    before = answers(idx, queries)
    reader = CatalogueIndex.load(tmp_path / "idx")  # loaded before the compaction
    idx.compact()
    idx = CatalogueIndex.load(tmp_path / "idx")
    assert idx.meta["removed_rows"] == [] and len(idx.vectors()) == idx.meta["n_vectors"]
    assert sum(len(t["starts"]) for t in idx.tracks()) == idx.meta["n_vectors"]
    assert answers(idx, queries) == before == answers(reader, queries)
    assert IndexChroma.of(reader).get(tracks[3].track_id) is not None  # its files are kept
    assert IndexChroma.of(reader).has(tracks[3].track_id) and not IndexChroma.of(reader).has("no-such-track")
    # the next compaction deletes what the previous one replaced
    first = set(idx.meta["stale"]["shards"])
    idx.remove([tracks[4].track_id])
    CatalogueIndex.load(tmp_path / "idx").compact()
    on_disk = {p.name.split(".")[0] for p in (tmp_path / "idx").iterdir()}
    assert first and not first & on_disk


def test_qdrant_build_from_the_command_line(setup, tmp_path):
    _, model, _, tracks, _, _, _ = setup
    lst = _list(tmp_path, "all", tracks)
    args = [
        "index",
        "build",
        str(tmp_path / "idx"),
        "--model",
        str(model),
        "--dataset",
        str(lst),
        "--backend",
        "qdrant",
        "--uri",
        str(tmp_path / "q"),
    ]
    assert main(args, exit=False) == 0
    first = CatalogueIndex.load(tmp_path / "idx").meta["engine"]["collection"]
    assert main(args + ["--overwrite"], exit=False) == 0  # a new collection; the old one goes
    idx = CatalogueIndex.load(tmp_path / "idx")
    store = idx._store()
    assert idx.meta["engine"]["collection"] != first
    assert not store.client.collection_exists(first)
    assert main(["index", "remove", str(tmp_path / "idx"), tracks[0].track_id], exit=False) == 0
    assert CatalogueIndex.load(tmp_path / "idx").meta["n_tracks"] == 15


def test_auto_backend_follows_the_size():
    assert fb.choose_kind("auto", 1_000) == "exact"
    assert fb.choose_kind("auto", fb.EXACT_MAX) == "hnsw"
    assert fb.choose_kind("auto", fb.HNSW_MAX) == "ivfpq"
    assert fb.choose_kind("hnsw", 10) == "hnsw"
    with pytest.raises(ValueError, match="qdrant"):
        fb.choose_kind("qdrant", 10)
    assert fb.ivf_lists(1_000_000) == 1024 and fb.ivf_lists(100) == 2


def test_rank_slices_cover_the_input_once():
    items = list(range(11))
    slices = [rank_slice(items, r, 3) for r in range(3)]
    assert sorted(sum(slices, [])) == items
    assert resolve_rank(None, None, {"RANK": "1", "WORLD_SIZE": "2"}) == (1, 2)
    assert resolve_rank(0, 2, {"RANK": "1", "WORLD_SIZE": "2"}) == (0, 2)
    assert resolve_rank(None, None, {}) == (0, 1)
    with pytest.raises(ValueError, match="rank 2 of world size 2"):
        resolve_rank(2, 2, {})


def _cli_proc(*args, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "coverhunter", *args],
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


def test_sharded_build_by_two_processes_equals_one(setup, tmp_path):
    _, model, lm, tracks, _, queries, cache = setup
    lst = _list(tmp_path, "all", tracks)
    one, _ = build_index(tmp_path / "one", lm, dataset=lst, cache=cache)
    two = tmp_path / "two"
    procs = [
        _cli_proc(
            "index",
            "build",
            str(two),
            "--model",
            str(model),
            "--dataset",
            str(lst),
            "--rank",
            "0",
            "--world-size",
            "2",
        ),
        _cli_proc(
            "index",
            "build",
            str(two),
            "--model",
            str(model),
            "--dataset",
            str(lst),
            env={"RANK": "1", "WORLD_SIZE": "2"},
        ),
    ]  # torchrun's way
    for p in procs:
        assert p.communicate(timeout=300) and p.returncode == 0, p.stderr
    idx = CatalogueIndex.load(two)
    assert sorted(t["track_id"] for t in idx.tracks()) == sorted(t.track_id for t in tracks)
    # every work's score for every query (all works: the untrained tiny model puts works
    # within 1e-4 of each other, and two processes' float noise may swap such a tie at a cut)
    for e, st in queries:
        got, want = ({m.work: m.score for m in x.search(e, st, 100)} for x in (idx, one))
        assert got.keys() == want.keys() and all(abs(got[w] - want[w]) < 1e-4 for w in want)
    # re-running a slice resumes it: nothing is added twice
    assert (
        main(
            [
                "index",
                "build",
                str(two),
                "--model",
                str(model),
                "--dataset",
                str(lst),
                "--rank",
                "1",
                "--world-size",
                "2",
            ],
            exit=False,
        )
        == 0
    )
    assert CatalogueIndex.load(two).meta["n_vectors"] == idx.meta["n_vectors"]


def test_concurrent_add_remove_and_readers(setup, tmp_path):
    """Two writer processes (an add and a remove) at once, while this process keeps
    loading and searching: every load is whole, and both writes land."""
    _, model, lm, tracks, _, queries, cache = setup
    base = _list(tmp_path, "base", tracks[:8])
    more = _list(tmp_path, "more", tracks[8:])
    root = tmp_path / "idx"
    build_index(root, lm, dataset=base, backend="hnsw", cache=cache)
    gone = [t.track_id for t in tracks[:3]]
    procs = [
        _cli_proc("index", "add", str(root), "--model", str(model), "--dataset", str(more)),
        _cli_proc("index", "remove", str(root), *gone),
    ]
    loads = 0
    while any(p.poll() is None for p in procs) or loads == 0:
        idx = CatalogueIndex.load(root)  # raises on a half-written index
        assert len(idx.tracks()) == idx.meta["n_tracks"]
        assert all(m.track_id in {t["track_id"] for t in idx.tracks()} for m in idx.search(*queries[9], 5))
        loads += 1
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    idx = CatalogueIndex.load(root)
    assert sorted(t["track_id"] for t in idx.tracks()) == sorted(
        t.track_id for t in tracks if t.track_id not in gone
    )
    ann = fb.load_ann(root / idx.meta.get("ann_file", fb.ANN_FILE))
    assert ann.ntotal == idx.meta["n_vectors"]


@pytest.mark.parametrize("backend", ["hnsw", "ivfpq"])
def test_a_lagging_engine_file_is_searched_exactly_and_caught_up(setup, backend, tmp_path):
    """An add killed between its commit and writing the faiss file leaves the file behind
    meta.json: searches cover the missing rows exactly, and the next add appends them."""
    _, _, lm, tracks, _, queries, cache = setup
    whole, _ = build_index(
        tmp_path / "whole", lm, dataset=_list(tmp_path, "all", tracks), backend=backend, cache=cache
    )
    root = tmp_path / "idx"
    idx, _ = build_index(root, lm, dataset=_list(tmp_path, "half", tracks[:8]), backend=backend, cache=cache)
    early = (root / fb.ANN_FILE).read_bytes()
    idx.add(lm, tracks[8:15], verbose=False, cache=cache)
    (root / fb.ANN_FILE).write_bytes(early)  # as a kill before the write would leave it
    lagging = CatalogueIndex.load(root)
    assert answers(lagging, queries[:15]) == answers(CatalogueIndex.load(root), queries[:15])
    lagging.add(lm, tracks[15:], verbose=False, cache=cache)
    idx = CatalogueIndex.load(root)
    assert fb.load_ann(root / fb.ANN_FILE).ntotal == idx.meta["n_vectors"]
    assert answers(idx, queries) == answers(whole, queries)


def test_recurrence_index_grows_with_added_shards_and_rebuilds_otherwise(setup, tmp_path, caplog):
    """``index add`` appends a shard: the cached recurrence index gains its recordings
    (equal to a full build), while a replaced recording or a cache without manifest
    rebuilds it."""
    import logging

    from coverhunter.index.chroma_store import MANIFEST_FILE, RECURRENCE_CACHE
    from coverhunter.index.recurrence import RecurrenceParams

    _, _, lm, tracks, other, _, cache = setup
    idx, _ = build_index(tmp_path / "idx", lm, dataset=_list(tmp_path, "half", tracks[:8]), cache=cache)
    IndexChroma.of(idx).prepare_recurrence()
    assert idx.add(lm, tracks[8:12], verbose=False, cache=cache) == []
    assert idx.add(lm, tracks[12:], verbose=False, cache=cache) == []  # two new shards
    caplog.set_level(logging.INFO, logger="coverhunter.index.chroma_store")
    caplog.clear()
    reader = IndexChroma.of(CatalogueIndex.load(tmp_path / "idx"))
    rec = reader.recurrence()
    assert "8 recordings added to the recurrence index" in caplog.text and "built in" not in caplog.text
    full = reader._built_recurrence(RecurrenceParams())
    assert rec.track_ids.tolist() == full.track_ids.tolist() == [t.track_id for t in tracks]
    assert np.array_equal(rec.starts, full.starts) and np.array_equal(rec.rolls, full.rolls)
    np.testing.assert_array_equal(
        rec.index.reconstruct_n(0, rec.n_shingles), full.index.reconstruct_n(0, full.n_shingles)
    )
    np.testing.assert_array_equal(rec.hub_counts(), full.hub_counts())
    caplog.clear()
    IndexChroma.of(CatalogueIndex.load(tmp_path / "idx")).recurrence()
    assert "recurrence index" not in caplog.text  # read back as it is

    # a new recording under an old track id: its old shingles must go, so it is rebuilt
    new = dataclasses.replace(other[0], track_id=tracks[2].track_id, work=tracks[2].work)
    assert idx.add(lm, [new], verbose=False, replace=True, cache=cache) == []
    caplog.clear()
    rec = IndexChroma.of(CatalogueIndex.load(tmp_path / "idx")).recurrence()
    assert "built in" in caplog.text and len(rec) == 16
    # a cache written before manifests existed is rebuilt, not grown
    (tmp_path / "idx" / RECURRENCE_CACHE / MANIFEST_FILE).unlink()
    assert idx.add(lm, other[1:2], verbose=False, cache=cache) == []
    caplog.clear()
    rec = IndexChroma.of(CatalogueIndex.load(tmp_path / "idx")).recurrence()
    assert "built in" in caplog.text and "added to the recurrence" not in caplog.text and len(rec) == 17
