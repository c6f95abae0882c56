"""Two-stage retrieval: shortlist, fusion, re-ordering (``rerank``), evaluation's re-ranker
(``reranker``), the index's stored chroma and ``identify``'s re-ranking, and
``evaluate --rerank``."""

import json
import logging
import warnings
from dataclasses import replace

import numpy as np
import pytest

from coverhunter import alignment_inputs as AI
from coverhunter import classical as C
from coverhunter import qmax as Q
from coverhunter import rerank as R
from coverhunter import reranker as RK
from coverhunter.chroma import CHROMA_SPEC, chroma_path, fine_views, load_chroma, search_view
from coverhunter.cli import main
from coverhunter.extract import extract_features
from coverhunter.index import chroma_format as CF
from coverhunter.index import reranked_search as RS
from coverhunter.index.chroma_store import RECURRENCE_CACHE, IndexChroma
from coverhunter.train import train

from .conftest import make_dataset, make_experiment
from .test_classical import melody as note_walk
from .test_classical import synthetic_cqt


def _align(cqt):
    """The re-ranking maths on the CQT's own chroma (synthetic CQT has no audio for the
    fine chroma)."""
    return AI.alignment_features(cqt, C.CHROMA_PARAMS)


def _tiny_trained(tmp_path, n_versions):
    """A 4-work dataset of 8 s tracks with features, and an experiment trained one epoch."""
    data = make_dataset(
        tmp_path / "data",
        n_works=4,
        n_versions=n_versions,
        seconds=8.0,
        hparams="split: {train: 0.5, val: 0.25, test: 0.25, seed: 0}\n",
    )
    assert extract_features(data, num_workers=1, verbose=False).ok
    exp = make_experiment(tmp_path / "exp", data)
    train(exp, overrides=["optim.max_epochs=1", "data.chunk_frame=[40]"], verbose=False)
    return data, exp


def _random_scores(seed):
    rng = np.random.default_rng(seed)
    return lambda refs: rng.standard_normal(len(refs))


@pytest.mark.parametrize("seed", range(5))
def test_rerank_only_reorders_the_shortlist(seed):
    rng = np.random.default_rng(seed)
    n, k = 40, 8
    d = np.round(rng.uniform(0, 2, n), 1)  # many ties
    exclude = np.zeros(n, bool)
    exclude[rng.choice(n, 3, replace=False)] = True
    cfg = R.RerankConfig(k=k, weight=float(rng.uniform(0.2, 1.0)))
    out = R.rerank_row(d, _random_scores(seed), cfg, exclude)
    sl = R.shortlist(d, k, exclude)
    assert len(sl) == k and not exclude[sl].any()
    assert np.all(d[sl].max() <= d[~exclude & ~np.isin(np.arange(n), sl)])
    order = np.argsort(out, kind="stable")
    # the shortlist comes first, in some order, none dropped ...
    assert set(order[:k]) == set(sl)
    # ... and every other item keeps its embedding order and its ties after it
    rest = order[k:]
    assert np.all(np.diff(d[rest]) >= 0)
    others = np.setdiff1d(np.arange(n), sl)
    np.testing.assert_allclose(out[others] - d[others], out[others[0]] - d[others[0]])
    assert out[order[k - 1]] < out[order[k]]


def test_weight_zero_keeps_embedding_order_and_one_follows_alignment():
    d = np.array([0.5, 0.1, 0.3, 0.2, 0.9])
    align = {0: 0.0, 1: 0.1, 2: 0.9, 3: 0.5, 4: 1.0}
    fn = lambda refs: np.array([align[int(j)] for j in refs])  # noqa: E731
    keep = R.rerank_row(d, fn, R.RerankConfig(k=4, weight=0.0))
    assert list(np.argsort(keep)) == [1, 3, 2, 0, 4]
    follow = R.rerank_row(d, fn, R.RerankConfig(k=4, weight=1.0))
    assert list(np.argsort(follow)) == [2, 3, 1, 0, 4]  # item 4 is outside the shortlist


def test_shortlist_shorter_than_k_and_nan():
    d = np.array([0.3, np.nan, 0.1])
    out = R.rerank_row(
        d, lambda refs: np.zeros(len(refs)), R.RerankConfig(k=10), np.array([False, False, True])
    )
    assert np.isnan(out[1]) and out[0] == 0.0


def _planted_cover(n_distractors: int) -> list:
    """Alignment data of a query, ``n_distractors`` other recordings, then a cover of the
    query (transposed, slower), in that order."""
    rng = np.random.default_rng(0)
    src = note_walk(rng, 80)
    feats = [synthetic_cqt(src, 12, rng)]  # query
    feats += [synthetic_cqt(note_walk(rng, 70), 12, rng) for _ in range(n_distractors)]
    feats.append(synthetic_cqt(src[5:] + 3, 14, rng))  # the cover
    return [_align(f) for f in feats]


def test_reranker_moves_a_planted_cover_up():
    align = _planted_cover(9)
    rk = RK.Reranker(R.RerankConfig(k=8, weight=0.7), query_align=align[:1], ref_align=align[1:])
    d = np.linspace(0.1, 0.9, 10)[None, :]  # the embedding ranks the cover 8th of 10
    d[0, [7, 9]] = d[0, [9, 7]]
    out = rk.rerank_block(d, 0)
    assert int(np.argmin(out[0])) == 9
    assert rk.n_queries == 1 and rk.seconds > 0
    assert "1 queries" in rk.summary()


def _expansion_case():
    """Query 0 vs 12 references: the embedding ranks them 0..11; the alignment with the
    query finds reference 3 (a cover) best; reference 10, another cover, is outside the
    shortlist and weakly aligned with the query, but the nearest summary neighbour of
    reference 3 and strongly aligned with it."""
    d = np.linspace(0.1, 0.9, 12)
    q_align = np.full(12, 0.1)
    q_align[3], q_align[10] = 0.9, 0.3
    pair = np.full((12, 12), 0.1)
    pair[3, 10] = pair[10, 3] = 0.95
    calls = []

    def neighbours(a, n, blocked):
        order = [10, 11, 9] if a == 3 else [11, 9, 10]
        out = [j for j in order if not blocked[j] and j != a][:n]
        calls.append((a, out))
        return np.array(out, np.int64)

    return d, (lambda refs: q_align[refs]), neighbours, (lambda a, refs: pair[a, refs]), calls


def test_expansion_finds_the_anchors_cover():
    d, score, neighbours, anchor, calls = _expansion_case()
    plain = R.RerankConfig(k=4, pool=4, global_pool=0, expand=0, expansion_weight=0.0)
    out = R.rerank_row(d, score, plain, neighbours=neighbours, anchor_scores=anchor)
    assert np.argsort(out)[0] == 3 and np.argsort(out)[10] == 10 and not calls
    cfg = R.RerankConfig(k=4, pool=4, global_pool=0, expand=1, expansion_weight=0.5)
    out = R.rerank_row(d, score, cfg, neighbours=neighbours, anchor_scores=anchor)
    order = np.argsort(out, kind="stable")
    assert calls == [(3, [10])]  # asked for the anchor's nearest, which joined the shortlist
    assert order[:2].tolist() == [3, 10]  # ... and was placed second
    # the rest keep their embedding order after the 5 aligned
    assert order[5:].tolist() == [4, 5, 6, 7, 8, 9, 11]
    # added recordings alone (no anchor weight) or the anchor weight alone
    only_add = R.rerank_row(
        d,
        score,
        R.RerankConfig(k=4, pool=4, global_pool=0, expand=1, expansion_weight=0.0),
        neighbours=neighbours,
    )
    assert set(np.argsort(only_add)[:5]) == {0, 1, 2, 3, 10}


@pytest.mark.parametrize("seed", range(4))
def test_expansion_never_drops_or_adds_an_excluded_item(seed):
    rng = np.random.default_rng(seed)
    n, k, extra = 50, 6, 5
    d = rng.uniform(0, 2, n)
    d[rng.choice(n, 2, replace=False)] = np.nan
    exclude = np.zeros(n, bool)
    exclude[rng.choice(n, 4, replace=False)] = True
    perm = rng.permutation(n)
    added = []

    def neighbours(a, m, blocked):
        out = [int(j) for j in perm if not blocked[j] and j != a][:m]
        added.extend(out)
        return np.array(out, np.int64)

    cfg = R.RerankConfig(
        k=k, pool=k, global_pool=0, expand=extra, expansion_weight=float(rng.uniform(0.1, 2))
    )
    out = R.rerank_row(
        d,
        _random_scores(seed),
        cfg,
        exclude,
        neighbours=neighbours,
        anchor_scores=lambda a, refs: rng.uniform(0, 1, len(refs)),
    )
    sl = R.shortlist(d, k, exclude)
    head = set(sl) | set(added)
    assert len(head) == k + extra and not exclude[list(head)].any() and not np.isnan(d[list(head)]).any()
    order = np.argsort(out, kind="stable")
    assert set(order[: k + extra]) == head
    assert np.array_equal(np.isnan(out), np.isnan(d))  # the same entries, re-ordered
    rest = [j for j in order[k + extra :] if not np.isnan(d[j])]
    assert np.all(np.diff(d[rest]) >= 0)


@pytest.mark.parametrize("seed", range(3))
def test_expansion_top_aligns_only_the_best_items_with_the_anchor(seed):
    rng = np.random.default_rng(seed)
    n, k = 40, 12
    d = rng.uniform(0, 2, n)
    q_align = rng.uniform(0, 1, n)
    pair = rng.uniform(0, 1, (n, n))
    asked = []

    def anchor(a, refs):
        asked.append(np.asarray(refs).tolist())
        return pair[a, refs]

    def run(top):
        asked.clear()
        cfg = R.RerankConfig(k=k, pool=k, global_pool=0, expand=0, expansion_weight=0.5, expansion_top=top)
        return R.rerank_row(d, lambda refs: q_align[refs], cfg, anchor_scores=anchor), list(asked)

    every, every_asked = run(0)
    assert len(every_asked[0]) == k - 1
    same, _ = run(k)  # at least the whole shortlist: the same as every item
    np.testing.assert_array_equal(same, every)
    top, top_asked = run(4)
    assert len(top_asked[0]) == 4
    # the four asked are the best fused items after the anchor (the plain re-ranking's order)
    plain = R.rerank_row(
        d,
        lambda refs: q_align[refs],
        R.RerankConfig(k=k, pool=k, global_pool=0, expand=0, expansion_weight=0.0),
    )
    assert set(top_asked[0]) == set(np.argsort(plain, kind="stable")[1:5].tolist())
    assert set(np.argsort(top)[:k]) == set(np.argsort(every)[:k])  # the same shortlist, re-ordered
    with pytest.raises(ValueError, match="expansion_top"):
        R.RerankConfig(expansion_top=-1)


def test_anchor_expansion():
    fused = np.array([2.0, 0.5, 0.4, 0.0])
    np.testing.assert_array_equal(R.anchor_expansion(fused, 0, np.array([0.1, 0.9, 0.5]), 0.0), fused)
    out = R.anchor_expansion(fused, 0, np.array([0.1, 0.9, 0.5]), 1.0)
    # item 2 resembles the anchor most: up; item 1 least: below item 3
    assert np.argsort(-out).tolist() == [0, 2, 3, 1]
    z = R.zscore(np.array([0.1, 0.9, 0.5]))
    assert out[0] == pytest.approx(2.0 + z.max())  # the anchor gets the best z, not its own match
    np.testing.assert_allclose(R.anchor_expansion(fused[:2], 1, np.array([0.3]), 1.0), fused[:2])


def test_zscore_of_constant_and_empty_scores_is_zero_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert R.zscore(np.array([])).shape == (0,)
        np.testing.assert_array_equal(R.zscore(np.array([0.3, 0.3])), [0.0, 0.0])
        assert R.fuse(np.array([]), np.array([]), 0.7).shape == (0,)


def test_reranker_neighbours():
    summ = np.array([[0.0, 0.0], [1.0, 0.0], [0.2, 0.0], [5.0, 0.0], [0.1, 0.0]])
    rk = RK.Reranker(R.RerankConfig(), ref_summary=summ)
    blocked = np.zeros(5, bool)
    assert rk.neighbours(0, 3, blocked).tolist() == [4, 2, 1]  # nearest first, not itself
    blocked[4] = True
    assert rk.neighbours(0, 10, blocked).tolist() == [2, 1, 3]
    assert RK.Reranker(R.RerankConfig()).neighbours(0, 3, blocked).size == 0  # no summaries
    # expand_votes: that share from the anchor's own votes (voted ones only), then the summary
    votes = np.array(
        [[0.0, 0.0, 0.0, 9.0, 1.0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    )
    hop = RK.Reranker(R.RerankConfig(expand_votes=0.5), ref_summary=summ, anchor_votes=lambda ri: votes[ri])
    assert hop.neighbours(0, 4, np.zeros(5, bool)).tolist() == [3, 4, 2, 1]
    assert hop.neighbours(0, 2, blocked).tolist() == [3, 2]  # 4 blocked: not voted in
    full = RK.Reranker(R.RerankConfig(expand_votes=1.0), ref_summary=summ, anchor_votes=lambda ri: votes[ri])
    assert full.neighbours(0, 3, np.zeros(5, bool)).tolist() == [3, 4, 2]  # two voted, the summary fills
    assert RK.Reranker(R.RerankConfig(expand_votes=1.0), ref_summary=summ).neighbours(
        0, 2, blocked
    ).tolist() == [2, 1]
    with pytest.raises(ValueError, match="expand_votes"):
        R.RerankConfig(expand_votes=1.5)


def test_anchor_vote_rows_find_the_anchors_other_version():
    """A reference's votes, from an all-vs-all matrix or searched in the references,
    point to the other version of its work and never to itself (a searched anchor
    searches at its own tempo only: the matrix here too)."""
    from coverhunter.index.recurrence import RecurrenceParams, vote_matrix

    align = _planted_cover(9)  # 0 and 10 are versions of one tune
    searched = RK.anchor_vote_rows(align, "cqt")
    own_tempo = replace(RecurrenceParams(), query_rates=(1.0,))
    rows = vote_matrix([AI.recurrence_chroma(a, "cqt") for a in align], params=own_tempo)
    given = RK.anchor_vote_rows(align, "cqt", rows)
    for ri, other in ((0, 10), (10, 0)):
        a, b = searched(ri), given(ri)
        assert a[ri] == 0 and b[ri] == 0
        assert int(np.argmax(a)) == int(np.argmax(b)) == other
        np.testing.assert_allclose(a, b, rtol=1e-5)
    assert searched(3) is searched(3)  # searched once
    coarse = RK.anchor_vote_rows(align, "cqt", stride=4)  # every 4th shingle: cheaper
    assert int(np.argmax(coarse(0))) == 10 and coarse(0)[0] == 0
    with pytest.raises(ValueError, match="expand_votes_stride"):
        R.RerankConfig(expand_votes_stride=0)


def test_query_votes_and_anchor_votes_share_one_reference_index():
    """Queries against references: one recurrence index of the references serves the
    queries' votes and the anchors' searches, with the same votes as building each."""
    align = _planted_cover(9)
    queries, refs = align[:1], align[1:]  # the cover is the last reference
    index = RK.reference_index(refs, "cqt")
    shared = RK.recurrence_votes(queries, refs, "cqt", index=index)
    np.testing.assert_allclose(shared, RK.recurrence_votes(queries, refs, "cqt"))
    assert int(np.argmax(shared[0])) == len(refs) - 1
    own = RK.anchor_vote_rows(refs, "cqt")
    np.testing.assert_allclose(
        RK.anchor_vote_rows(refs, "cqt", index=index)(len(refs) - 1), own(len(refs) - 1)
    )
    with pytest.raises(ValueError, match="recurrence index of 10 recordings for 9"):
        RK.recurrence_votes(queries, refs[:-1], "cqt", index=index)


@pytest.mark.parametrize("source", ["chroma", "both"])
def test_symmetric_reranker_reuses_pairs_and_ranks_the_same(source):
    """All-vs-all: aligning each pair once gives exactly the one-sided result."""
    rng = np.random.default_rng(3)
    srcs = [note_walk(rng, 40) for _ in range(4)]
    feats = [synthetic_cqt(srcs[i % 4] + (i // 4), 10 + i % 3, rng) for i in range(10)]
    align = [_align(f) for f in feats]
    chunks = [rng.normal(size=(int(rng.integers(3, 7)), 8)).astype(np.float32) for _ in feats]
    d = rng.random((10, 10))
    eye = np.eye(10, dtype=bool)
    cfg = R.RerankConfig(k=4, weight=0.6, source=source, expand=0)
    kw = dict(query_align=align, ref_align=align, query_chunks=chunks, ref_chunks=chunks)
    one, sym = RK.Reranker(cfg, **kw), RK.Reranker(cfg, symmetric=True, **kw)
    np.testing.assert_allclose(sym.rerank_block(d, 0, eye), one.rerank_block(d, 0, eye))
    assert sym.n_pairs == one.n_pairs == one.n_computed > 0
    assert sym.n_computed < sym.n_pairs  # some shortlists hold each other
    assert "computed" in sym.summary()
    assert sym.scores(0, np.zeros(0, np.int64)).shape == (0,)  # nothing to align


def test_shortlist_grows_with_the_catalogue():
    cfg = R.RerankConfig(k=50, grow_after=450, widen_after=0)
    assert [R.shortlist_length(cfg, n) for n in (10, 450, 451, 1800, 45_000)] == [50, 50, 51, 100, 500]
    assert R.shortlist_length(R.RerankConfig(k=50, grow_after=0), 10**6) == 50
    fixed = R.for_catalogue(cfg, 1800)
    assert (fixed.k, fixed.grow_after) == (100, 0) and R.for_catalogue(fixed, 10**6) == fixed
    # the chroma searches' candidates grow in the same ratio: 100 of each at k 50 -> 200
    assert (fixed.global_pool, R.for_catalogue(cfg, 400).global_pool) == (200, 100)
    # rerank_row aligns the grown shortlist: 8 references beyond 2 recordings -> k 2 * sqrt(4)
    asked = []
    d = np.linspace(0.1, 0.9, 8)
    R.rerank_row(
        d,
        lambda refs: asked.append(len(refs)) or np.zeros(len(refs)),
        R.RerankConfig(k=2, pool=2, global_pool=0, expand=0, grow_after=2),
    )
    assert asked == [4]


def test_the_coarse_pass_widens_beyond_widen_after_with_as_many_aligned_in_full():
    cfg = R.RerankConfig(k=50, grow_after=450, widen_after=5000, widen=2.0, coarse_keep=0.4, coarse_min=50)
    small, large = R.for_catalogue(cfg, 5000), R.for_catalogue(cfg, 45_000)
    assert (small.k, small.coarse_keep) == (167, 0.4)  # not beyond: the grown shortlist alone
    assert (large.k, large.coarse_keep, large.global_pool) == (1000, 0.2, 1000)  # pools as unwidened
    assert R.coarse_count(large, large.k) == R.coarse_count(replace(cfg, widen_after=0), 500) == 200
    assert R.shortlist_length(cfg, 45_000) == 1000 and R.for_catalogue(large, 10**6) == large
    # nothing widens without a growing shortlist or a coarse pass
    for off in (replace(cfg, grow_after=0), replace(cfg, coarse_keep=0.0), replace(cfg, widen=1.0)):
        assert not R.widens(off, 45_000)
    assert R.shortlist_length(replace(cfg, coarse_keep=0.0), 45_000) == 500
    with pytest.raises(ValueError, match="widen"):
        R.RerankConfig(widen=0.5)


def test_config_is_checked():
    with pytest.raises(ValueError):
        R.RerankConfig(source="lyrics")
    with pytest.raises(ValueError):
        R.RerankConfig(weight=1.5)
    with pytest.raises(ValueError):
        R.RerankConfig(expand=-1)
    with pytest.raises(ValueError):
        R.RerankConfig(grow_after=-1)
    with pytest.raises(ValueError):
        RK.Reranker(R.RerankConfig(source="embedding")).scores(0, np.arange(2))


def test_evaluate_rerank_end_to_end(tmp_path, caplog):
    data, exp = _tiny_trained(tmp_path, n_versions=3)
    full = data / "full.txt"
    base, rr, both = tmp_path / "base.json", tmp_path / "rr.json", tmp_path / "both.json"
    with caplog.at_level(logging.INFO, logger="coverhunter"):
        assert main(["evaluate", str(exp), str(full), "--output", str(base)], exit=False) == 0
    assert "the model alone" in caplog.text and "--rerank 50" in caplog.text  # says what it left out
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="coverhunter"):
        assert (
            main(
                [
                    "evaluate",
                    str(exp),
                    str(full),
                    "--rerank",
                    "5",
                    "--rerank-expand",
                    "0",
                    "--rerank-scan-below",
                    "100",
                    "--output",
                    str(rr),
                ],
                exit=False,
            )
            == 0
        )
    assert "the model alone" not in caplog.text
    assert (
        main(
            [
                "evaluate",
                str(exp),
                str(full),
                "--rerank",
                "4",
                "--rerank-source",
                "both",
                "--rerank-weight",
                "0.3",
                "--rerank-first-stage",
                "summary",
                "--rerank-expand-votes",
                "0.25",
                "--rerank-coarse-keep",
                "0.5",
                "--rerank-widen-after",
                "0",
                "--output",
                str(both),
            ],
            exit=False,
        )
        == 0
    )
    b, r, x = (json.loads(p.read_text()) for p in (base, rr, both))
    assert b["n_queries"] == r["n_queries"] == x["n_queries"] == 12
    assert "rerank" not in b
    assert r["rerank"]["k"] == 5 and r["rerank"]["source"] == "chroma" and r["rerank"]["expand"] == 0
    assert r["rerank"]["first_stage"] == R.DEFAULT_FIRST_STAGE and x["rerank"]["first_stage"] == "summary"
    assert x["rerank"]["weight"] == 0.3 and x["rerank"]["seconds_per_query"] > 0
    assert x["rerank"]["expand_votes"] == 0.25 and r["rerank"]["expand_votes"] == R.DEFAULT_EXPAND_VOTES
    assert x["rerank"]["coarse_keep"] == 0.5 and r["rerank"]["coarse_keep"] == R.DEFAULT_COARSE_KEEP
    assert x["rerank"]["widen_after"] == 0 and r["rerank"]["widen_after"] == R.DEFAULT_WIDEN_AFTER
    # 12 recordings, scan_below 100: the scan joins the votes; the summary first stage
    # never scans
    assert r["rerank"]["scan_below"] == 100 and r["rerank"]["scanned"] and not x["rerank"]["scanned"]
    # a shortlist of 4 or 5 is far below coarse_min: no coarse pass
    assert x["rerank"]["coarse_alignments_per_query"] == r["rerank"]["coarse_alignments_per_query"] == 0
    # without expansion, re-ranking changes ranks only within the top 5: a first hit beyond
    # 5 stays where it was
    for rb, rr_ in zip(b["per_query_rank1"], r["per_query_rank1"]):
        assert (rr_ <= 5) if rb <= 5 else (rr_ == rb)
    assert r["rerank"]["alignments_per_query"] == 5 + 4  # the shortlist, then the anchor with the 4 others
    # with it (the default), the anchor's neighbours join: 4 + 7 aligned with the query, the
    # anchor with the 10 others (11 references per query)
    assert x["rerank"]["expand"] == R.DEFAULT_EXPAND
    assert x["rerank"]["k_used"] == 4  # 12 recordings: far below grow_after, k as given
    assert x["rerank"]["alignments_per_query"] == 11 + 10
    # all-vs-all: a pair met from both sides is aligned once
    assert x["rerank"]["alignments_computed_per_query"] < x["rerank"]["alignments_per_query"]


def _cover_among_strangers(ids: list, n_stored: int):
    """A query, the stored alignment data of strangers ``d0 .. d{n_stored - 1}`` and of
    its "cover", and a search's matches of ``ids`` in that order (others: no chroma)."""
    from coverhunter.index import Match

    rng = np.random.default_rng(1)
    src = note_walk(rng, 60)
    query = _align(synthetic_cqt(src, 12, rng))
    store = {f"d{i}": _align(synthetic_cqt(note_walk(rng, 60), 12, rng)) for i in range(n_stored)}
    store["cover"] = _align(synthetic_cqt(src + 2, 13, rng))
    return query, store, [Match(f"w_{t}", t, 0.9 - 0.01 * i, 0.0, 0.0) for i, t in enumerate(ids)]


def test_rerank_matches_reorders_head_and_keeps_tail():
    from coverhunter.index import Match

    ids = ["d0", "d1", "d2", "d3", "cover", "d4", "missing", "tail"]
    query, store, matches = _cover_among_strangers(ids, 5)
    out = RS.rerank_matches(matches, query, store.get, R.RerankConfig(k=7, weight=0.8, global_weight=0.0))
    assert sorted(m.track_id for m in out) == sorted(ids)  # nothing dropped
    assert out[0].track_id == "cover" and out[-1].track_id == "tail"
    # without stored chroma nothing moves
    assert RS.rerank_matches(matches, query, lambda t: None, R.RerankConfig(k=7)) == matches
    # a shortlist of 3 from a pool of 8: the 2D Fourier summary pulls in the cover, which
    # the embedding ranked 5th; the candidates left out follow in their embedding order
    out = RS.rerank_matches(matches, query, store.get, R.RerankConfig(k=3, pool=8, weight=0.8))
    assert sorted(m.track_id for m in out) == sorted(ids) and out[0].track_id == "cover"
    rest = [m.track_id for m in out[3:]]
    assert rest == [t for t in ids if t in rest]
    plain = RS.rerank_matches(matches, query, store.get, R.RerankConfig(k=3, pool=3, weight=0.8))
    assert "cover" not in [m.track_id for m in plain[:3]]
    # a candidate from the summary search (outside the embedding's pool of 3) is aligned
    # too; one of a work already among the candidates is ignored
    far = [Match("w_cover", "cover", 0.5, 0.0, 0.0), Match("w_d0", "d0", 0.1, 0.0, 0.0)]
    head = [m for m in matches if m.track_id != "cover"]
    out = RS.rerank_matches(head, query, store.get, R.RerankConfig(k=3, pool=3, weight=0.8), extra=far)
    assert out[0].track_id == "cover" and sorted(m.track_id for m in out) == sorted(ids)


def test_rerank_matches_makes_only_the_shortlisted_candidates_alignment_data():
    query, store, matches = _cover_among_strangers(
        ["d0", "d1", "d2", "d3", "cover", "d4", "missing", "d5", "d6"], 7
    )
    summaries = {t: C.fourier_summary(a.chroma) for t, a in store.items()}
    made = []

    def lookup(t):
        made.append(t)
        return store.get(t)

    cfg = R.RerankConfig(k=3, pool=9, weight=0.8)
    eager = RS.rerank_matches(matches, query, store.get, cfg, summaries.get)
    lazy = RS.rerank_matches(matches, query, lookup, cfg, summaries.get, available=store.__contains__)
    assert lazy == eager and lazy[0].track_id == "cover"
    assert len(made) == 3 and set(made) == {m.track_id for m in lazy[:3]}  # the shortlist alone


def test_coarse_cut_keeps_the_best_share_and_orders_the_rest():
    first = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])  # first-stage distances
    coarse = np.array([0.0, 0.9, 0.1, 0.8, 0.2, 0.7])
    cfg = R.RerankConfig(coarse_keep=0.5, coarse_min=1, weight=1.0)  # the coarse score alone decides
    kept, dropped = R.coarse_cut(first, coarse, cfg)
    assert kept.tolist() == [1, 3, 5] and dropped.tolist() == [4, 2, 0]
    # at weight 0 the first stage decides; a share never keeps fewer than one item
    kept, dropped = R.coarse_cut(first, coarse, replace(cfg, weight=0.0, coarse_keep=0.01))
    assert kept.tolist() == [0] and dropped.tolist() == [1, 2, 3, 4, 5]
    # never fewer than coarse_min in full, never more than the shortlist; 0 = no coarse pass
    assert R.coarse_count(replace(cfg, coarse_min=4), 6) == 4 and R.coarse_count(cfg, 6) == 3
    assert R.coarse_count(R.RerankConfig(), 40) == 40 and R.coarse_count(R.RerankConfig(), 340) == 136
    assert R.coarse_count(replace(cfg, coarse_keep=0.0), 340) == 340
    with pytest.raises(ValueError, match="coarse_keep"):
        R.RerankConfig(coarse_keep=1.5)
    with pytest.raises(ValueError, match="coarse_min"):
        R.RerankConfig(coarse_min=0)
    with pytest.raises(ValueError, match="coarse_block"):
        R.RerankConfig(coarse_block=0)


def test_coarse_split_cuts_reference_indices_and_asks_nothing_where_it_keeps_all():
    items = np.array([40, 41, 42, 43, 44, 45])
    first, coarse = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), np.array([0.0, 0.9, 0.1, 0.8, 0.2, 0.7])
    cfg = R.RerankConfig(coarse_keep=0.5, coarse_min=1, weight=1.0)
    asked = []

    def first_fn(it):
        asked.append(it.tolist())
        return first[it - 40]

    kept, dropped = R.coarse_split(items, first_fn, lambda it: coarse[it - 40], cfg)
    assert kept.tolist() == [41, 43, 45] and dropped.tolist() == [44, 42, 40] and asked == [items.tolist()]

    def never(it):
        raise AssertionError("the pass keeps all: nothing to score")

    for keeps_all, fn in (
        (replace(cfg, coarse_min=6), never),
        (replace(cfg, coarse_keep=0.0), never),
        (cfg, None),
    ):
        kept, dropped = R.coarse_split(items, never, fn, keeps_all)
        assert kept.tolist() == items.tolist() and len(dropped) == 0


def test_coarse_features_average_frames_of_one_view():
    rng = np.random.default_rng(0)
    x = rng.random((9, 24)).astype(np.float32)
    a = Q.AlignmentFeatures.from_chroma(x)
    c = a.coarse(2, view=1)
    assert c.chroma.shape == (5, 12) and c.profile.shape == (1, 12)
    np.testing.assert_allclose(c.chroma[0], x[:2, 12:].mean(0), rtol=1e-6)
    np.testing.assert_allclose(c.chroma[-1], x[8, 12:], rtol=1e-6)  # the partial last block
    assert a.coarse(1).chroma.shape == (9, 24)  # every view, every frame
    with pytest.raises(ValueError, match="view 2"):
        a.coarse(2, view=2)


def test_coarse_pass_aligns_in_full_only_what_it_keeps():
    n, k = 30, 10
    d = np.linspace(0.0, 1.0, n)
    coarse = np.zeros(n)
    coarse[[9, 7, 5, 3, 1]] = [5.0, 4.0, 3.0, 2.0, 1.0]  # the coarse pass likes these
    full_calls = []

    def full(refs):
        full_calls.append(sorted(int(j) for j in refs))
        return -np.asarray(refs, np.float64)  # the full alignment prefers the lowest index

    cfg = R.RerankConfig(k=k, weight=1.0, coarse_keep=0.5, coarse_min=2)
    out = R.rerank_row(d, full, cfg, coarse_fn=lambda refs: coarse[refs])
    assert full_calls == [[1, 3, 5, 7, 9]]  # half the shortlist, the coarse pass's best
    order = np.argsort(out, kind="stable")
    assert order[:5].tolist() == [1, 3, 5, 7, 9]  # aligned in full, by the full score
    # then the rest of the shortlist in the coarse pass's order, then the others unchanged
    assert order[5:10].tolist() == [0, 2, 4, 6, 8] and order[10:].tolist() == list(range(10, n))
    # without a coarse function (a caller that cannot align coarsely) all k are aligned,
    # and a shortlist no longer than coarse_min has no coarse pass
    for kw, fn in (
        ({}, None),
        ({"coarse_min": k}, lambda refs: pytest.fail("coarse pass at k <= coarse_min")),
    ):
        full_calls.clear()
        R.rerank_row(d, full, replace(cfg, **kw), coarse_fn=fn)
        assert full_calls == [list(range(k))]


def test_coarse_pass_keeps_a_planted_cover_and_counts_its_alignments():
    align = _planted_cover(9)
    cfg = R.RerankConfig(k=10, weight=0.7, coarse_keep=0.3, coarse_min=1, expand=0, expansion_weight=0.0)
    rk = RK.Reranker(cfg, query_align=align[:1], ref_align=align[1:])
    d = np.linspace(0.1, 0.9, 10)[None, :]  # the embedding ranks the cover 8th of 10
    d[0, [7, 9]] = d[0, [9, 7]]
    out = rk.rerank_block(d, 0)
    assert int(np.argmin(out[0])) == 9
    assert rk.n_coarse == 10 and rk.n_pairs == 3  # 10 coarse alignments, the best 3 in full
    assert "after 10 coarse ones" in rk.summary()
    # identify's re-ranking: the cover is kept by the coarse pass and comes first
    from coverhunter.index import Match

    store = {f"t{j}": a for j, a in enumerate(align[1:])}
    matches = [Match(f"w{j}", f"t{j}", 1.0 - d[0, j], 0.0, 0.0) for j in np.argsort(d[0])]
    seen = []
    out = RS.rerank_matches(
        matches,
        align[0],
        store.get,
        replace(cfg, global_weight=0.0),
        calibrate=lambda ms, n: seen.append(n) or ms,
    )
    assert out[0].track_id == "t9" and seen == [3]
    assert sorted(m.track_id for m in out) == sorted(store)  # nothing dropped
    assert sum(m.alignment is not None for m in out) == 3  # only those aligned in full carry a score


def test_coarse_pass_keeps_a_planted_cover_among_many_strangers():
    """At half the frame rate the coarse alignment still tells a transposed, slower cover
    from 150 strangers: it is among the 20 of 100 shortlisted items aligned in full, and
    comes first."""
    align = _planted_cover(150)
    n = len(align) - 1
    d = np.linspace(0.1, 0.9, n)[None, :]
    d[0, [89, n - 1]] = d[0, [n - 1, 89]]  # the embedding ranks the cover 90th
    cfg = R.RerankConfig(k=100, coarse_keep=0.2, coarse_min=1, expand=0, expansion_weight=0.0, grow_after=0)
    rk = RK.Reranker(cfg, query_align=align[:1], ref_align=align[1:])
    out = rk.rerank_block(d, 0)
    assert int(np.argmin(out[0])) == n - 1
    assert rk.n_coarse == 100 and rk.n_pairs == 20


def test_scans_only_small_catalogues_where_votes_would_search():
    cfg = R.RerankConfig(scan_below=2000)
    assert R.scans(cfg, 2000) and R.scans(cfg, 10) and not R.scans(cfg, 2001) and not R.scans(cfg, 0)
    assert not R.scans(replace(cfg, first_stage="summary"), 100)  # the summary alone: no scan
    assert not R.scans(replace(cfg, global_weight=0.0), 100)  # no chroma search at all
    assert R.scans(replace(cfg, first_stage="recurrence"), 100)
    assert not R.scans(R.RerankConfig(scan_below=0), 1)  # 0 = never
    assert R.for_catalogue(cfg, 1500).scan_below == 2000  # fixing the length keeps it
    with pytest.raises(ValueError, match="scan_below"):
        R.RerankConfig(scan_below=-1)


def test_the_scan_is_a_chroma_search_of_its_own_beside_the_votes_and_the_summary():
    """Stacked as a third search (minus its scores: smaller = closer); its best candidates
    join the shortlist, which the votes and the summary alone never propose."""
    n = 40
    votes, summ, scan = np.zeros(n), np.linspace(0.0, 1.0, n), np.zeros(n)
    votes[:5] = 10.0
    scan[n - 1] = 1.0  # only the scan finds the last one; the embedding ranks it last too
    votes[n - 1], summ[n - 1] = 10.0, 0.5  # the votes agree once they see it
    glob = R.first_stage_searches("both", votes, summ, scan)
    assert glob.shape == (3, n)
    np.testing.assert_array_equal(glob[0], -votes)
    np.testing.assert_array_equal(glob[1], summ)
    np.testing.assert_array_equal(glob[2], -scan)
    assert R.first_stage_searches("recurrence", votes, summ, scan).shape == (2, n)  # votes and scan
    d = np.linspace(0.1, 0.9, n)
    cfg = R.RerankConfig(k=6, pool=6, global_pool=3, grow_after=0)
    assert n - 1 in R.cascade_shortlist(d, glob, cfg)
    assert n - 1 not in R.cascade_shortlist(d, R.first_stage_searches("both", votes, summ), cfg)
    # batched as the Reranker stacks them: (queries, searches, references)
    assert R.first_stage_searches("both", votes[None], summ[None], scan[None]).shape == (1, 3, n)


def test_the_scan_finds_a_cover_the_embedding_misses_and_the_coarse_pass_reuses_it():
    """A transposed, slower cover that the embedding ranks last of 151: the scan (each
    recording aligned coarsely) proposes it, the coarse pass reads its scores instead of
    aligning again, and the cover comes first; without the scan (no votes, no summaries)
    the shortlist never holds it."""
    align = _planted_cover(150)
    n = len(align) - 1
    cfg = R.RerankConfig(
        k=60, pool=60, global_pool=60, coarse_keep=0.25, coarse_min=1, expand=0, expansion_weight=0.0,
        grow_after=0, scan_below=1000,
    )  # fmt: skip
    scan = RK.coarse_scan(align[:1], align[1:], cfg, None)
    assert scan.shape == (1, n) and int(np.argmax(scan[0])) == n - 1
    # all-vs-all: each pair once, the same scores from either side, a recording's own 0
    both = RK.coarse_scan(align[:20], None, cfg, None)
    np.testing.assert_allclose(both, both.T)
    assert np.all(np.diag(both) == 0)
    np.testing.assert_allclose(both[0, 1:19], scan[0, :18])
    d = np.linspace(0.1, 0.9, n)[None, :]  # the embedding ranks the cover last
    rk = RK.Reranker(cfg, query_align=align[:1], ref_align=align[1:], scan=scan)
    out = rk.rerank_block(d, 0)
    assert int(np.argmin(out[0])) == n - 1
    assert rk.n_coarse == 0 and rk.n_pairs == 15  # the scan's scores cut 60 to 15, no coarse alignment
    plain = RK.Reranker(cfg, query_align=align[:1], ref_align=align[1:])
    assert int(np.argmin(plain.rerank_block(d, 0)[0])) != n - 1


def test_rerank_matches_aligns_other_versions_of_a_shortlisted_work():
    """A work whose found recording is a stranger's twin but whose other recording is the
    query's cover: aligning that version too brings the work first, with the cover's score."""
    from coverhunter.index import Match

    rng = np.random.default_rng(2)
    src = note_walk(rng, 60)
    query = _align(synthetic_cqt(src, 12, rng))
    store = {f"d{i}": _align(synthetic_cqt(note_walk(rng, 60), 12, rng)) for i in range(5)}
    store["cover"] = _align(synthetic_cqt(src + 2, 13, rng))
    cfg = R.RerankConfig(k=4, weight=1.0, global_weight=0.0)
    # w2's found recording is the stranger that aligns worst with the query
    by_score = np.argsort(Q.qmax_scores(query, [store[f"d{i}"] for i in range(5)], cfg.qmax))
    names = [f"d{i}" for i in by_score]  # worst first
    store = {**{f"s{r}": store[n] for r, n in enumerate(names)}, "cover": store["cover"]}
    works = {"w0": ["s2"], "w1": ["s3"], "w2": ["s0", "s1", "cover"], "w4": ["s4"]}
    matches = [
        Match(w, tid, 0.9 - 0.01 * i, 0.0, 0.0)
        for i, (w, tid) in enumerate([("w0", "s2"), ("w1", "s3"), ("w2", "s0"), ("w4", "s4")])
    ]
    seen = []

    def calibrate(ms, n):
        seen.append(n)
        return ms

    one = RS.rerank_matches(
        matches, query, store.get, replace(cfg, versions=1), versions=works.get, calibrate=calibrate
    )
    three = RS.rerank_matches(
        matches, query, store.get, replace(cfg, versions=3), versions=works.get, calibrate=calibrate
    )
    assert seen == [4, 6]  # alignments made: one per work, then all three of w2's
    assert one[0].work != "w2" and three[0].work == "w2"
    assert three[0].track_id == "s0"  # the recording the search found, with its work's best score
    cover_score = Q.qmax_scores(query, [store["cover"]], cfg.qmax)[0]
    assert three[0].alignment == pytest.approx(cover_score)
    assert sorted(m.work for m in three) == sorted(m.work for m in matches)  # nothing dropped
    # versions are picked nearest to the query by summary when both summaries are known
    summ = {t: np.array([float(i)]) for i, t in enumerate(["s0", "s1", "cover"])}
    assert RS.version_choice(matches[2], works.get, 2, summ.get, np.array([2.0])) == ["s0", "cover"]
    assert RS.version_choice(matches[2], works.get, 2) == ["s0", "s1"]  # else catalogue order
    assert RS.version_choice(matches[2], works.get, 1) == ["s0"]
    with pytest.raises(ValueError, match="versions"):
        R.RerankConfig(versions=0)


def _v0_catalogue(tmp_path, lm, tracks):
    """An index of the first version ("v0") of every work, loaded back from disk."""
    from coverhunter.index import CatalogueIndex, build_index

    cat = tmp_path / "cat.txt"
    cat.write_text("".join(json.dumps(t.to_json()) + "\n" for t in tracks if t.version == "v0"))
    _, failed = build_index(tmp_path / "index", lm, dataset=cat)
    assert not failed
    return CatalogueIndex.load(tmp_path / "index")


def test_index_stores_chroma_and_identify_reranks(tmp_path, caplog):
    from coverhunter import identify
    from coverhunter.checkpoint import load_model
    from coverhunter.dataset import read_dataset

    data, exp = _tiny_trained(tmp_path, n_versions=2)
    lm = load_model(exp)
    full = read_dataset(data / "full.txt")
    idx = _v0_catalogue(tmp_path, lm, full)
    stored = IndexChroma.of(idx)
    assert stored.available()
    one = full[0]
    got = stored.get(one.track_id)
    want = AI.alignment_features(one.feat)
    assert got.chroma.shape == want.chroma.shape
    assert np.abs(got.chroma - want.chroma).max() <= 1 / 510 + 1e-6
    queries = [t for t in full if t.version == "v1"]
    plain = identify(idx, lm, queries, top=4, rerank=0)
    ranked = identify(idx, lm, queries, top=4)  # re-ranks by default
    for p, r in zip(plain, ranked):
        assert sorted(m.work for m in p.matches) == sorted(m.work for m in r.matches)
    # the first stage's recurrence index: built when first needed (the first search, or
    # the index commands' prepare_recurrence, which finds it built), kept beside the shards
    # for the next reader, rebuilt when a shard's chroma changes (end of this test)
    IndexChroma.of(idx).prepare_recurrence()
    cache = tmp_path / "index" / RECURRENCE_CACHE
    key = (cache / "key").read_text()
    caplog.set_level(logging.INFO, logger="coverhunter.index.chroma_store")
    caplog.clear()
    rec = IndexChroma.of(idx).recurrence()
    assert "recurrence index of" not in caplog.text  # read back, not built
    # other search settings (query stride and rates, voting) search the same cached index;
    # a setting of what it holds (shingle length) builds another
    fast = replace(rec.params, query_stride=8, query_rates=(1.0,), vote="rank", ef_search=50)
    again = IndexChroma.of(idx).recurrence(fast)
    assert "recurrence index of" not in caplog.text and again.params == fast
    assert (cache / "key").read_text() == key
    if again.index.__class__.__name__.startswith("IndexHNSW"):
        assert again.index.hnsw.efSearch == 50
    with pytest.raises(ValueError, match=r"other settings \(m\)"):
        again.searched_with(replace(fast, m=5))
    catalogue_ids = {t.track_id for t in full if t.version == "v0"}
    assert set(rec.track_ids.tolist()) == catalogue_ids and rec.n_shingles > 0
    fine0 = load_chroma(chroma_path(queries[0].feat), fine_views(CHROMA_SPEC))
    reader = IndexChroma.of(idx)  # a new reader: the index from the cache, the works from the shards
    votes = reader.work_votes(reader.query_features(queries[0].feat, fine0))
    assert votes and all(t in catalogue_ids and v > 0 for t, v in votes.values())
    # the scan of a small catalogue: every stored recording aligned coarsely with the
    # query, per work its best; identify's search with it re-ranks the same works
    q0 = reader.query_features(queries[0].feat, fine0)
    view = search_view(reader.params)
    scanned = reader.scan(q0, 2, view, Q.QmaxParams(m=4))
    assert set(scanned) == catalogue_ids and all(np.isfinite(v) for v in scanned.values())
    per_work = reader.per_work(scanned.items())
    assert {t for t, _ in per_work.values()} <= catalogue_ids
    assert all(
        v == max(s for t, s in scanned.items() if reader._work[t] == w) for w, (_, v) in per_work.items()
    )
    from coverhunter.index import embed_recordings as _embed

    ((emb0, starts0),) = _embed(lm, [queries[0]], idx.windowing)
    cfg = R.identify_config()
    searched = {
        below: RS.search_reranked(idx, emb0, starts0, 4, q0, reader, replace(cfg, scan_below=below))
        for below in (0, 1000)
    }
    assert sorted(m.work for m in searched[0]) == sorted(m.work for m in searched[1000])
    assert searched[1000][0].alignment is not None and reader._coarse is not None  # it scanned
    # the reader takes each catalogue summary once from the stored ones (float16), equal
    # to the one from its chroma; a projection of other patch lengths reads its own columns
    first_view = AI.summary_chroma(got.chroma)  # the summary reads the CQT's chroma
    np.testing.assert_allclose(stored.summary(one.track_id), C.fourier_summary(first_view), atol=1e-3)
    for patches in ((300,), (75, 300), (150,)):
        proj = C.SummaryProjection(
            np.zeros(C.summary_size(patches), np.float32),
            np.eye(3, C.summary_size(patches), dtype=np.float32),
            np.ones(3, np.float32),
            patches,
        )
        other = IndexChroma.of(idx, proj)
        want = proj(C.multiscale_summary(first_view, patches))[0]
        np.testing.assert_allclose(other.summary(one.track_id), want, atol=1e-3)
        assert (other._stored_summaries != {}) == (patches != (150,))  # 150: not stored, computed
    assert stored.summary(one.track_id) is stored.summary(one.track_id)
    assert stored.summary("no such track") is None
    # a decoded recording (the service's source) answers as its Track does
    from coverhunter.identification import IdentifyOptions, Recording
    from coverhunter.identification import identify as identify_one
    from coverhunter.index import embed_recordings

    q = queries[0]
    ((emb, starts),) = embed_recordings(lm, [q], idx.windowing)
    fine = load_chroma(chroma_path(q.feat), fine_views(CHROMA_SPEC))
    served = identify_one(idx, lm, Recording(q.track_id, np.load(q.feat), fine), IdentifyOptions(top=4))
    assert served.to_dict() == ranked[0].to_dict()
    # a shard written before summaries were stored: they are computed from its chroma
    shard = idx.meta["shards"][0]
    npz = tmp_path / "index" / f"{shard}{CF.CHROMA_SUFFIX}"
    with np.load(npz) as z:
        stored_summary, data, offsets = z["summary"], z["data"], z["offsets"]
    np.savez(str(npz)[:-4], data=data, offsets=offsets)
    old = IndexChroma.of(idx)
    ids, mat = old.summaries()
    assert len(ids) == len(stored_summary)
    np.testing.assert_allclose(
        mat, stored_summary[:, AI.summary_columns(C.SUMMARY_PATCHES, (75,))], atol=1e-3
    )
    # and one written with the plain summary alone (no summary_patches) is read as such
    np.savez(str(npz)[:-4], data=data, offsets=offsets, summary=mat)
    assert np.array_equal(IndexChroma.of(idx).summaries()[1], mat)
    caplog.clear()
    assert IndexChroma.of(idx).recurrence().n_shingles == rec.n_shingles
    assert "recurrence index of" in caplog.text and (cache / "key").read_text() != key  # rebuilt
    # the summary search and the exact scores of the recordings it finds
    near = stored.nearest(stored.query_summary(AI.alignment_features(q.feat)), 3)
    assert len(near) == 3 and set(near) <= {t.track_id for t in full if t.version == "v0"}
    scored = idx.score_tracks(emb, starts, near + ["no such track"])
    by_work = {m.work: m for m in idx.search(emb, starts, 50, approximate=False)}
    assert len(scored) == 3
    for m in scored:
        assert m.score == pytest.approx(by_work[m.work].score, abs=1e-6)


def test_alignment_is_fused_with_the_first_stage_score():
    from coverhunter.rerank import RerankConfig, first_stage_distances, rerank_row

    emb = np.array([0.1, 0.2, 0.3, 0.4])
    glob = np.array([1.0, 1.0, 1.0, 0.0])  # the summary puts reference 3 far ahead
    align = lambda refs: np.array([0.0, 0.0, 1.0, 1.0])[refs]  # noqa: E731  # 2 and 3 align equally
    cfg = RerankConfig(k=4, pool=4, global_pool=0, global_weight=0.5, weight=0.8)
    # without summaries the embedding breaks the tie between 2 and 3; with them, the summary
    assert np.argsort(rerank_row(emb, align, cfg))[:2].tolist() == [2, 3]
    assert np.argsort(rerank_row(emb, align, cfg, None, glob))[:2].tolist() == [3, 2]
    np.testing.assert_array_equal(first_stage_distances(emb, None, cfg), emb)
    np.testing.assert_array_equal(first_stage_distances(emb, glob, RerankConfig(global_weight=0.0)), emb)


def test_cascade_shortlist_lets_the_global_summary_pull_in_a_near_miss():
    from coverhunter.rerank import RerankConfig, cascade_shortlist, rerank_row

    emb = np.linspace(0.1, 1.0, 10)  # embedding order 0, 1, ..., 9
    glob = np.full(10, 1.0)
    glob[4] = 0.0  # reference 4 is far the closest by the global summary
    plain = RerankConfig(k=3, pool=3, global_pool=0)
    assert list(cascade_shortlist(emb, glob, plain)) == [0, 1, 2]
    # the summary's own nearest join the candidates, beyond the embedding's pool
    glob2 = np.full(10, 1.0)
    glob2[8] = 0.0
    assert 8 in cascade_shortlist(emb, glob2, RerankConfig(k=3, pool=3, global_pool=1))
    assert 8 not in cascade_shortlist(emb, glob2, RerankConfig(k=3, pool=6, global_pool=0))
    assert list(cascade_shortlist(emb, glob, RerankConfig(k=3, pool=6, global_weight=0.0))) == [0, 1, 2]
    wide = RerankConfig(k=3, pool=6, global_weight=0.5)
    sl = cascade_shortlist(emb, glob, wide)
    assert 4 in sl and len(sl) == 3
    ex = np.zeros(10, bool)
    ex[4] = True  # an excluded reference never enters, whatever its summary
    assert 4 not in cascade_shortlist(emb, glob, wide, ex)
    # nothing is dropped: every reference keeps a distance, the shortlist comes first
    row = rerank_row(emb, lambda refs: -np.asarray(refs, float), wide, None, glob)
    assert np.isfinite(row).all() and set(np.argsort(row)[:3]) == set(sl.tolist())
    assert len(np.unique(row)) == 10


def test_discriminant_projection_keeps_what_tells_works_apart():
    from coverhunter.classical import SummaryProjection

    # 40 works x 4 versions in 12 dims: the work sits on axis 0 with a small spread, while
    # axes 1-3 carry a large spread that has nothing to do with the work (timbre, loudness)
    rng = np.random.default_rng(0)
    works = np.repeat(np.arange(40), 4)
    s = rng.normal(0, 0.05, (160, 12))
    s[:, 0] += np.linspace(0, 1, 40)[works]
    s[:, 1:4] += rng.normal(0, 3.0, (160, 3))
    lda = SummaryProjection.fit_discriminant(s, works, dims=1, pca_dims=12, patches=(1,))  # 12 values
    pca = SummaryProjection.fit(s, dims=1, patches=(1,))
    assert abs(lda.components[0, 0]) > 0.9 * np.linalg.norm(lda.components[0])  # axis 0 found
    lda_out, pca_out = lda.transform(s)[:, 0], pca.transform(s)[:, 0]
    within = lambda x: np.mean([x[works == w].std() for w in range(40)]) / x.std()  # noqa: E731

    assert within(lda_out) < 0.2 and within(pca_out) > 0.8  # ideal axis 0: 0.15
    with pytest.raises(ValueError, match="1 <= dims <= 3"):
        SummaryProjection.fit_discriminant(s[:16], works[:16], dims=4, patches=(1,))
    with pytest.raises(ValueError, match="at least 2 works"):
        SummaryProjection.fit_discriminant(s[:5], works[:5], dims=1, patches=(1,))
    with pytest.raises(ValueError, match=r"patches \(75, 300\) have 2268 values"):
        SummaryProjection.fit_discriminant(s, works)


def test_summary_projection_is_fitted_stored_and_used(tmp_path):
    from coverhunter.checkpoint import load_model
    from coverhunter.classical import SummaryProjection

    rng = np.random.default_rng(0)
    s = rng.random((60, 456)).astype(np.float32)  # plain (75,) summaries
    proj = SummaryProjection.fit(s, dims=5)
    out = proj(s[:4])
    assert out.shape == (4, 5) and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # whitened: over the fitting set every kept direction has the same spread
    p = (s - proj.mean) @ proj.components.T / proj.scale
    np.testing.assert_allclose(p.std(0) / p.std(0).mean(), 1.0, atol=1e-4)
    with pytest.raises(ValueError, match="needs more than 5"):
        SummaryProjection.fit(s[:5], dims=5)
    # the command stores it in the model file; loading and exporting keep it, the
    # weights' fingerprint (which keys caches and indexes) does not change
    data, exp = _tiny_trained(tmp_path, n_versions=3)
    from coverhunter.checkpoint import export_model

    model = export_model(exp, tmp_path / "m.pt")
    before = load_model(model)
    assert before.summary_projection is None
    assert (
        main(
            ["fit-summary", str(model), str(data / "full.txt"), "--method", "pca", "--dims", "4"], exit=False
        )
        == 0
    )
    assert len(load_model(model).summary_projection.scale) == 4
    # the default is the discriminant from the list's work labels: 4 works give at most 3 axes
    assert main(["fit-summary", str(model), str(data / "full.txt"), "--dims", "4"], exit=False) == 1
    assert main(["fit-summary", str(model), str(data / "full.txt"), "--dims", "3"], exit=False) == 0
    after = load_model(model)
    assert after.fingerprint == before.fingerprint and len(after.summary_projection.scale) == 3
    again = load_model(export_model(model, tmp_path / "again.pt"))
    np.testing.assert_array_equal(again.summary_projection.components, after.summary_projection.components)
    # the index's stored summaries are projected like the query's
    from coverhunter.dataset import read_dataset

    chroma = AI.alignment_features(read_dataset(data / "full.txt")[0].feat)
    store = IndexChroma(tmp_path, [], after.summary_projection)
    assert store.query_summary(chroma).shape == (3,)
    # identify with a projected model: the index's summaries are projected as the query's
    from coverhunter import identify

    tracks = read_dataset(data / "full.txt")
    idx = _v0_catalogue(tmp_path, after, tracks)
    ids, mat = IndexChroma.of(idx, after.summary_projection).summaries()
    assert mat.shape == (len(ids), 3)
    res = identify(idx, after, [t for t in tracks if t.version == "v1"][:2], top=3)
    assert all(r.error is None and len(r.matches) == 3 for r in res)


def test_query_chroma_is_made_as_the_index_made_its_own(tmp_path, caplog):
    """An index records its chroma parameters; a query is aligned with chroma made the same
    way, also against an index written before the chroma had parameters; shards that
    disagree with the others are left out of re-ranking, with a warning."""
    import logging

    from coverhunter import identify
    from coverhunter.checkpoint import load_model
    from coverhunter.dataset import read_dataset
    from coverhunter.index import CatalogueIndex

    data, exp = _tiny_trained(tmp_path, n_versions=2)
    lm = load_model(exp)
    full = read_dataset(data / "full.txt")
    idx = _v0_catalogue(tmp_path, lm, full)
    q = full[1].feat
    stored = IndexChroma.of(idx)
    assert stored.params == CHROMA_SPEC and stored.fine_views == fine_views(CHROMA_SPEC)
    np.testing.assert_array_equal(stored.query_features(q).chroma, AI.alignment_features(q).chroma)
    assert stored.query_features(q).chroma.shape[1] == 24  # the CQT's chroma and the fine one
    # the same index as the version before the fine chroma wrote it: the CQT's chroma with
    # its recorded parameters; and before that, no parameters: all octaves at power 1
    (shard,) = idx.meta["shards"]
    npz = tmp_path / "index" / f"{shard}{CF.CHROMA_SUFFIX}"
    for params, recorded in ((C.CHROMA_PARAMS, True), (C.LEGACY_CHROMA_PARAMS, False)):
        legacy = [
            C.chroma_to_uint8(C.chroma_from_cqt(np.load(t.feat), lowest_octave=params[0], power=params[1]))
            for t in full
            if t.version == "v0"
        ]
        with np.load(npz) as z:
            members = {k: z[k] for k in z.files if k not in ("chroma_params", "chroma_spec")}
        members["data"] = np.concatenate(legacy)
        if recorded:
            members["chroma_params"] = np.asarray(params, np.float64)
        np.savez(str(npz)[:-4], **members)
        old = IndexChroma.of(idx)
        assert old.params == params and old.fine_views == ()
        np.testing.assert_array_equal(
            old.query_features(np.load(q)).chroma,
            C.chroma_from_cqt(np.load(q), lowest_octave=params[0], power=params[1]),
        )
    assert old.get(full[0].track_id) is not None
    assert old.query_features(q).chroma.shape != stored.query_features(q).chroma.shape
    queries = [t for t in full if t.version == "v1"]
    assert all(r.error is None and r.matches for r in identify(idx, lm, queries, top=3))
    # extended by this version: the new shard is written with the index's own chroma, so
    # every recording stays re-ranked (no shard left out, no warning)
    CatalogueIndex.load(tmp_path / "index").add(lm, queries[:2])
    grown = IndexChroma.of(CatalogueIndex.load(tmp_path / "index"))
    with caplog.at_level(logging.WARNING, logger="coverhunter.index.chroma_store"):
        assert grown.params == C.LEGACY_CHROMA_PARAMS
    assert "other chroma parameters" not in caplog.text
    assert grown.get(full[0].track_id) is not None and grown.get(queries[0].track_id) is not None


def test_adding_to_and_compacting_an_index_keep_its_chroma(tmp_path, caplog):
    """An index written with another chroma spec than today's (here "cqt|c3") keeps it
    when recordings are added and when it is compacted: one chroma, all re-ranked."""
    import logging

    from coverhunter.checkpoint import load_model
    from coverhunter.dataset import read_dataset
    from coverhunter.index import CatalogueIndex

    data, exp = _tiny_trained(tmp_path, n_versions=2)
    lm = load_model(exp)
    full = read_dataset(data / "full.txt")
    idx = _v0_catalogue(tmp_path, lm, full)
    (shard,) = idx.meta["shards"]
    npz = tmp_path / "index" / f"{shard}{CF.CHROMA_SUFFIX}"
    old = [
        CF.compact_chroma(t.feat, load_chroma(chroma_path(t.feat), ("c3",)), "cqt|c3")
        for t in full
        if t.version == "v0"
    ]
    with np.load(npz) as z:
        members = {k: z[k] for k in z.files if k not in ("chroma_spec", "data")}
    np.savez(str(npz)[:-4], **members, data=np.concatenate(old), chroma_spec=np.str_("cqt|c3"))
    queries = [t for t in full if t.version == "v1"]
    CatalogueIndex.load(tmp_path / "index").add(lm, queries[:2])
    idx = CatalogueIndex.load(tmp_path / "index")
    with caplog.at_level(logging.WARNING, logger="coverhunter.index.chroma_store"):
        grown = IndexChroma.of(idx)
        assert grown.params == "cqt|c3" and grown.fine_views == ("c3",)
        assert all(grown.get(t.track_id) is not None for t in full if t.version == "v0" or t in queries[:2])
    assert "other chroma parameters" not in caplog.text
    q = queries[0]
    want = CF.compact_chroma(q.feat, load_chroma(chroma_path(q.feat), ("c3",)), "cqt|c3")
    np.testing.assert_allclose(grown.get(q.track_id).chroma, C.chroma_from_uint8(want))
    idx.remove([full[0].track_id])
    idx.compact()
    idx = CatalogueIndex.load(tmp_path / "index")
    compacted = IndexChroma.of(idx)
    assert len(idx.meta["shards"]) == 1 and compacted.params == "cqt|c3"
    np.testing.assert_allclose(compacted.get(q.track_id).chroma, C.chroma_from_uint8(want))


def test_features_without_fine_chroma_align_the_cqt_chroma_and_say_so(tmp_path, caplog):
    from coverhunter.chroma import chroma_path

    from .conftest import make_feature_lists

    data = make_feature_lists(tmp_path / "d", n_works=2, n_versions=2)
    feats = sorted(str(p) for p in (data / "cqt_feat").glob("*.cqt.npy"))
    assert RK.features_chroma(feats) == CHROMA_SPEC
    assert AI.alignment_features(feats[0]).chroma.shape[1] == 24
    chroma_path(feats[1]).unlink()  # as extracted before the fine chroma existed
    with caplog.at_level(logging.WARNING, logger="coverhunter.reranker"):
        assert RK.features_chroma(feats) == C.CHROMA_PARAMS
    assert "no fine chroma" in caplog.text and "extract" in caplog.text
    with pytest.raises(ValueError, match="run extract again"):
        AI.alignment_features(feats[1])


@pytest.mark.parametrize("first_stage", ["recurrence", "summary"])
def test_recurrence_votes_bring_a_cover_the_embedding_and_summary_miss(first_stage):
    align = _planted_cover(11)
    cfg = R.RerankConfig(k=3, pool=3, global_pool=3, expand=0, first_stage=first_stage)
    far = np.arange(12, dtype=np.float64)[:, None]  # summary distances: the cover is farthest
    rk = RK.Reranker(
        cfg, query_align=align[:1], ref_align=align[1:], query_summary=np.zeros((1, 1)), ref_summary=far
    )
    rk.votes = RK.recurrence_votes(align[:1], align[1:], "cqt")
    assert int(np.argmax(rk.votes[0])) == 11  # recurrence voting finds the cover
    d = np.linspace(0.1, 0.9, 12)[None, :]  # the embedding ranks it last
    out = rk.rerank_block(d, 0)
    rank = int(np.argsort(out[0], kind="stable").tolist().index(11))
    assert (rank == 0) if first_stage == "recurrence" else (rank >= 3)


def test_two_chroma_searches_each_propose_candidates_and_share_the_score():
    d = np.linspace(0.1, 0.9, 10)  # the embedding ranks the references 0..9
    votes = np.zeros(10)
    votes[8] = 5.0  # recurrence voting finds 8
    summ = np.full(10, 2.0)
    summ[9] = 0.1  # the summary finds 9
    cfg = R.RerankConfig(k=3, pool=1, global_pool=1, global_weight=0.9)
    both = np.stack([-votes, summ])
    sl = R.cascade_shortlist(d, both, cfg).tolist()  # among the embedding's top k (0, 1, 2), 8 and 9
    assert 8 in sl and 9 in sl
    one = R.cascade_shortlist(d, -votes, cfg).tolist()  # one search: its candidates alone
    assert 8 in one and 9 not in one
    # one search given as (1, n) or (n,) scores the same
    np.testing.assert_allclose(R.chroma_search_score(summ[None]), R.chroma_search_score(summ))
    np.testing.assert_allclose(
        R.first_stage_distances(d, both, cfg), -R.fuse(d, (R.zscore(votes) + R.zscore(-summ)) / 2, 0.9)
    )
