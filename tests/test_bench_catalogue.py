"""benchmarks/bench_catalogue.py: chunk files, metrics and one tiny measurement (no rendering)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from coverhunter.metrics import recall_at

from .conftest import load_benchmark


def _recordings(bc, n_works: int = 4, versions: int = 3, seed: int = 0):
    """Covers as noisy, shifted copies of a work's random chroma and embedding."""
    rng = np.random.default_rng(seed)
    ids, works, embs, chromas = [], [], [], []
    for w in range(n_works):
        base = rng.random((60, 24))
        centre = rng.normal(size=16)
        for v in range(versions):
            c = np.roll(base, 3 * v, axis=0) + 0.1 * rng.random((60, 24))
            chromas.append(np.round(255 * c / c.max()).astype(np.uint8))
            embs.append((centre + 0.3 * rng.normal(size=(1 + v % 2, 16))).astype(np.float32))
            ids.append(f"w{w}_{v}")
            works.append(f"work{w}")
    return bc.Recordings(
        np.asarray(ids),
        np.asarray(works),
        np.full(len(ids), 24.0),
        embs,
        chromas,
        {"model_fingerprint": "x", "chroma_spec": bc.CHROMA_SPEC},
    )


def test_chunk_file_round_trip(tmp_path):
    bc = load_benchmark("bench_catalogue")
    rec = _recordings(bc)
    bc.write_recordings(tmp_path / "chunk_00000.npz", rec)
    back = bc.read_recordings(tmp_path / "chunk_00000.npz")
    assert list(back.track_ids) == list(rec.track_ids) and list(back.works) == list(rec.works)
    assert all(np.array_equal(a, b) for a, b in zip(back.embeddings, rec.embeddings))
    assert all(np.array_equal(a, b) and b.dtype == np.uint8 for a, b in zip(back.chromas, rec.chromas))
    assert back.meta == rec.meta and bc.count_recordings(tmp_path / "chunk_00000.npz") == len(rec)
    assert not list(tmp_path.glob(".*tmp"))


def test_another_models_embeddings_replace_the_stored_ones(tmp_path):
    import pytest

    bc = load_benchmark("bench_catalogue")
    rec = _recordings(bc)
    path = tmp_path / "distractors" / "chunk_00000.npz"
    path.parent.mkdir()
    bc.write_recordings(path, rec)
    assert bc.with_model_embeddings(rec, path, tmp_path, "x") is rec  # the stored model's
    with pytest.raises(SystemExit, match="--embed-only"):
        bc.with_model_embeddings(rec, path, tmp_path, "other")
    cache = bc.embedding_cache(tmp_path, "other")
    cache.mkdir(parents=True)
    new = [e[:1] + 1 for e in rec.embeddings]
    emb, off = bc._ragged(new, np.float32, 16)
    bc.save_npz_atomic(
        cache / path.name, dict(track_ids=rec.track_ids, embeddings=emb, embedding_offsets=off)
    )
    got = bc.with_model_embeddings(rec, path, tmp_path, "other")
    assert got.meta["model_fingerprint"] == "other" and list(got.track_ids) == list(rec.track_ids)
    assert all(np.array_equal(a, b) for a, b in zip(got.embeddings, new))
    assert all(a is b for a, b in zip(got.chromas, rec.chromas))
    bc.save_npz_atomic(
        cache / path.name, dict(track_ids=rec.track_ids[::-1], embeddings=emb, embedding_offsets=off)
    )
    with pytest.raises(SystemExit, match="not those of"):
        bc.with_model_embeddings(rec, path, tmp_path, "other")


def test_a_chunk_of_an_older_chroma_spec_gets_todays_from_its_stored_views(tmp_path):
    import pytest

    from coverhunter.index.chroma_format import compact_chroma

    bc = load_benchmark("bench_catalogue")
    rng = np.random.default_rng(0)
    rec = _recordings(bc, 2, 2)
    rec.meta["chroma_spec"] = "cqt|c3"  # made before the spec changed
    path = tmp_path / "distractors" / "chunk_00000.npz"
    path.parent.mkdir()
    bc.write_recordings(path, rec)
    cqts = [rng.random((200 + 40 * i, 96)).astype(np.float32) for i in range(len(rec))]
    fine = {
        v: [rng.random((len(c) // 2, 12)).astype(np.float16) for c in cqts] for v in bc.fine_views_stored()
    }
    raw = {"track_ids": rec.track_ids}
    raw["cqt"], raw["cqt_offsets"] = bc._ragged(cqts, np.float32, 96)
    for v, arrays in fine.items():
        raw[v], raw[f"{v}_offsets"] = bc._ragged(arrays, np.float16, 12)
    bc.save_npz_atomic(path.with_suffix(".cqt.npz"), raw)

    got = bc.with_chroma_spec(rec, path, tmp_path)
    views = bc.fine_views(bc.CHROMA_SPEC)
    want = [compact_chroma(c, {v: fine[v][i].astype(np.float32) for v in views}) for i, c in enumerate(cqts)]
    assert got.meta["chroma_spec"] == bc.CHROMA_SPEC and list(got.track_ids) == list(rec.track_ids)
    assert all(np.array_equal(a, b) for a, b in zip(got.chromas, want))
    assert all(a is b for a, b in zip(got.embeddings, rec.embeddings))
    # the chunk made again (other features, same ids): its chroma is computed again
    cqts = [c[::-1].copy() for c in cqts]
    raw["cqt"], raw["cqt_offsets"] = bc._ragged(cqts, np.float32, 96)
    bc.save_npz_atomic(path.with_suffix(".cqt.npz"), raw)
    before, want = (
        want,
        [compact_chroma(c, {v: fine[v][i].astype(np.float32) for v in views}) for i, c in enumerate(cqts)],
    )
    assert not all(np.array_equal(a, b) for a, b in zip(before, want))
    again = bc.with_chroma_spec(rec, path, tmp_path).chromas
    assert all(np.array_equal(a, b) for a, b in zip(again, want))
    path.with_suffix(".cqt.npz").unlink()  # computed once: the cache answers now
    assert all(np.array_equal(a, b) for a, b in zip(bc.with_chroma_spec(rec, path, tmp_path).chromas, want))
    assert bc.with_chroma_spec(got, path, tmp_path) is got  # already today's spec

    # a chunk stored before the spec's fine view was: a clear error naming it
    old = tmp_path / "distractors" / "chunk_00001.npz"
    bc.write_recordings(old, rec)
    bc.save_npz_atomic(
        old.with_suffix(".cqt.npz"), {k: a for k, a in raw.items() if not k.startswith(views[0])}
    )
    with pytest.raises(SystemExit, match=f"chunk_00001.npz: written before view.*{views[0]}"):
        bc.with_chroma_spec(rec, old, tmp_path)


def test_distractors_from_an_offset(tmp_path):
    bc = load_benchmark("bench_catalogue")
    (tmp_path / "test").mkdir()
    for name in bc.TEST_CORPORA:
        bc.write_recordings(bc.test_file(tmp_path / "test", name), _recordings(bc, 2, 2))
    chunks = [_recordings(bc, 1, 3, seed=k) for k in range(3)]  # 3 recordings a chunk
    (tmp_path / "distractors").mkdir()
    for k, rec in enumerate(chunks):
        rec.track_ids = np.asarray([f"c{k}_{i}" for i in range(3)])
        bc.write_recordings(bc.chunk_path(tmp_path / "distractors", k), rec)
    paths, skip = bc.distractor_chunks(tmp_path / "distractors", 4, offset=2)
    assert [p.name for p in paths] == ["chunk_00000.npz", "chunk_00001.npz"] and skip == 2
    _, dis = bc.load_catalogue(tmp_path, 4, offset=2)
    assert list(dis.track_ids) == ["c0_2", "c1_0", "c1_1", "c1_2"]
    _, first = bc.load_catalogue(tmp_path, 4)
    assert list(first.track_ids) == ["c0_0", "c0_1", "c0_2", "c1_0"]
    _, past = bc.load_catalogue(tmp_path, 5, offset=6)  # fewer on disk than asked: those
    assert list(past.track_ids) == ["c2_0", "c2_1", "c2_2"]


def test_recall_breaks_ties_against_covers_and_sample_is_seeded():
    bc = load_benchmark("bench_catalogue")
    works = np.array(["a", "a", "b", "b"])
    dist = np.array([[0.0, 1.0, 1.0, 1.0]])  # the cover ties with two others
    ex = bc.self_mask(np.array([0]), 4)
    assert recall_at(dist, works[:1], works, 1, ex) == 0.0
    assert recall_at(dist, works[:1], works, (1, 3), ex) == {1: 0.0, 3: 1.0}
    ids = np.array(["test:a_0", "test:a_1", "kept:a_0", "dis_0"])
    assert bc.query_exclusion(ids, np.array([0, 3])).tolist() == [
        [True, False, True, False],
        [False, False, False, True],
    ]
    assert np.array_equal(bc.query_sample(10, 4, 1), bc.query_sample(10, 4, 1))
    assert len(bc.query_sample(10, 0, 1)) == 10
    ratio, lo, hi = bc.map_ratio_ci([0.5, 1.0], [0.5, 1.0])
    assert ratio == 1.0 and lo == hi == 1.0


def test_tiny_measurement_has_every_row():
    bc = load_benchmark("bench_catalogue")
    tests, dis = _recordings(bc, 3), _recordings(bc, 3, seed=1)
    dis.works = np.asarray([f"d{w}" for w in dis.works])
    cat = bc.make_catalogue(tests, dis)
    lm = SimpleNamespace(
        config=SimpleNamespace(eval=SimpleNamespace(distance="min")), summary_projection=None
    )
    queries = bc.query_sample(cat.n_test, 0, 0)
    from common import parse_variant

    hop = parse_variant("hop", "expand=4,expand_votes=0.5")
    res = bc.measure(cat, queries, bc.query_sample(len(queries), 4, 1), lm, [hop])
    rows = res["rows"]
    # one two-stage row per first stage (the default's, then each other one), and the variant
    n_stages = {"summary": 1, "recurrence": 2, "both": 3}[bc.default_first_stage()]
    assert len(rows) == 6 + n_stages and res["k"] == 50
    assert rows[f"{bc.TWO_STAGE}, hop"]["first_stage"] == bc.default_first_stage()
    assert all(0.0 <= r["map"] <= 1.0 and r["ms"] >= 0 for r in rows.values())
    assert rows["all-pairs alignment, 4 sampled queries"]["map"] > 0.9  # shifted copies align
    res.update(
        command="x",
        commit="y",
        n_catalogue=len(cat),
        n_test=cat.n_test,
        n_test_works=3,
        n_distractors=len(dis),
        n_distractor_works=3,
        n_queries=len(queries),
    )
    res["summary"] = bc.summarise(res)
    assert "| two-stage (evaluate --rerank) |" in bc.format_table(res)


def test_tune_catalogue_is_the_distractors_and_variants_are_checked(tmp_path):
    import pytest

    from coverhunter.checkpoint import load_model

    bc = load_benchmark("bench_catalogue")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    tune = load_benchmark("bench_catalogue_tune")
    dis = _recordings(bc, 3, seed=1)
    model = Path(__file__).resolve().parents[1] / bc.MODEL
    lm = load_model(model)  # the chunks hold its embeddings: none to compute
    dis.meta = {"model_fingerprint": lm.fingerprint, "chroma_spec": bc.CHROMA_SPEC}
    (tmp_path / "distractors").mkdir()
    bc.write_recordings(bc.chunk_path(tmp_path / "distractors", 0), dis.head(5))
    bc.write_recordings(bc.chunk_path(tmp_path / "distractors", 1), bc.Recordings.concat([dis]).head(9))
    cat, got = bc.distractor_catalogue(tmp_path, 7, model)
    assert len(cat) == 7 and cat.n_test == 0 and len(cat.align) == 7 and got.fingerprint == lm.fingerprint
    later, _ = bc.distractor_catalogue(tmp_path, 7, model, offset=3)
    assert list(later.track_ids) == list(dis.track_ids[3:5]) + list(dis.track_ids[:5])
    name, rr = tune.parse_variant("top", "expansion_top=7,grow_after=0")
    assert name == "top" and rr.expansion_top == 7 and rr.grow_after == 0
    with pytest.raises(SystemExit, match="not FIELD=VALUE"):
        tune.parse_variant("bad", "no_such_field=1")
    with pytest.raises(SystemExit, match="no distractors"):
        bc.distractor_catalogue(tmp_path / "empty", 3, model)


def test_two_stage_search_reports_the_shortlist_and_what_the_coarse_pass_leaves_to_the_full_alignment():
    from dataclasses import replace

    from coverhunter import rerank as R

    bc = load_benchmark("bench_catalogue")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    tune = load_benchmark("bench_catalogue_tune")
    dis = _recordings(bc, 2, seed=1)
    dis.works = np.asarray([f"d{w}" for w in dis.works])
    cat = bc.make_catalogue(_recordings(bc, 3), dis)  # 9 test recordings, then 6 distractors
    queries = np.array([0, 4])
    exclude = bc.self_mask(queries, len(cat))
    covers = [np.array([1, 2]), np.array([3, 5])]
    d_embed = np.ones((2, len(cat)))
    for r, c in enumerate(covers):  # the first stage ranks four strangers above the covers
        d_embed[r, c] = 0.5
        d_embed[r, 9:13] = [0.1, 0.2, 0.3, 0.4]
    votes = -d_embed  # the recurrence votes agree with the embedding (larger = closer)
    summ = np.zeros((len(cat), 4), np.float32)
    rr = R.RerankConfig(
        k=6,
        pool=6,
        global_pool=6,
        grow_after=0,
        coarse_keep=0.5,
        coarse_min=1,
        expand=0,
        expansion_weight=0.0,
        first_stage="recurrence",
    )
    _, info, lists = bc.two_stage_search(cat, queries, d_embed, summ, votes, exclude, rr)
    for sl, kept, c in zip(lists, info["aligned"], covers):
        assert len(sl) == 6 and set(c) <= set(sl.tolist()) and len(kept) == 3
        assert set(c) <= set(kept.tolist())  # the covers align best, coarsely too
        assert set(kept.tolist()) <= set(sl.tolist())
    assert info["coarse_per_query"] == 6 and info["alignments_per_query"] == 3
    _, whole, lists = bc.two_stage_search(
        cat, queries, d_embed, summ, votes, exclude, replace(rr, coarse_keep=0.0)
    )
    assert all(np.array_equal(a, b) for a, b in zip(whole["aligned"], lists))
    own = tune.own_top(np.tile(np.arange(len(cat), dtype=float), (2, 1)), exclude, 2)
    assert [o.tolist() for o in own] == [[1, 2], [0, 1]]  # the query itself left out


def test_votes_tune_scores_one_search_with_each_voting_variant():
    import pytest

    bc = load_benchmark("bench_catalogue")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    vt = load_benchmark("bench_votes_tune")
    from coverhunter.index.recurrence import RecurrenceParams

    rec = _recordings(bc, 4, 3, seed=2)
    align = [None] * len(rec.works)
    cat = bc.Catalogue(rec.works, rec.track_ids, rec.embeddings, rec.chromas, align, 0)
    queries = np.arange(len(cat))
    exclude = bc.self_mask(queries, len(cat))
    works = np.asarray(cat.works)
    idx, lists = vt.neighbour_lists(cat, queries, exclude, 20)
    assert idx.params == RecurrenceParams() and len(lists) == len(queries)
    assert all(ids.shape[1] <= 20 for searches in lists for _, ids, _, _ in searches)
    variants = [
        ("default", RecurrenceParams()),
        vt.parse_variant("few", "neighbours=5,band=32", RecurrenceParams()),
    ]
    zeros = np.zeros((len(queries), len(cat)))
    rows = vt.score_rows(idx, lists, variants, works, queries, exclude, zeros, zeros)
    assert [r["name"] for r in rows] == ["default", "few"]
    assert rows[0]["map"] > 0.9  # shifted copies of one chroma vote for each other
    assert all(0 <= r["shortlist_recall"] <= 1 and r["ms"] >= 0 for r in rows)
    assert "| few |" in vt.format_rows(rows)
    _, slopes = vt.parse_variant("s", "slopes=0.9:1.0:1.1,one_vote=false", RecurrenceParams())
    assert slopes.slopes == (0.9, 1.0, 1.1) and slopes.one_vote is False
    with pytest.raises(SystemExit, match="change the search"):
        vt.check_variant("m", RecurrenceParams(m=5), 20)
    one_rate = RecurrenceParams(query_rates=(1.0,))  # the search asked for: variants keep it
    vt.check_variant("b", RecurrenceParams(query_rates=(1.0,), band=32), 200, one_rate)
    with pytest.raises(SystemExit, match="change the search"):
        vt.check_variant("r", RecurrenceParams(band=32), 200, one_rate)
    with pytest.raises(SystemExit, match="> --search-neighbours"):
        vt.check_variant("nb", RecurrenceParams(neighbours=50), 20)
    with pytest.raises(SystemExit, match="is not a bool"):
        vt.parse_variant("b", "one_vote=yes", RecurrenceParams())
    import argparse

    from common import add_search_arguments, search_params

    ap = argparse.ArgumentParser()
    add_search_arguments(ap)
    assert search_params(ap.parse_args([])) == RecurrenceParams()
    asked = search_params(ap.parse_args(["--query-rates", "1", "--query-stride", "2"]))
    assert asked == RecurrenceParams(query_rates=(1.0,), query_stride=2)
