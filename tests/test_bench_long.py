"""benchmarks/bench_long.py: the parts that run fast and offline (no music21, no rendering)."""

from __future__ import annotations

import json

import numpy as np
import pretty_midi
import pytest

from .conftest import load_benchmark

B = load_benchmark("bench_long")


def tune(seconds: float, program: int = 40, pitch: int = 60):
    """A made-up score: one part of one-second notes lasting ``seconds``."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    inst = pretty_midi.Instrument(program=program)
    inst.notes = [pretty_midi.Note(80, pitch + i % 12, float(i), float(i) + 1.0) for i in range(int(seconds))]
    pm.instruments.append(inst)
    return pm


def loader(lengths: dict):
    """item -> a score of ``lengths[item]`` seconds; None: the item does not load."""

    def load(item):
        if lengths[item] is None:
            raise B.SkipPiece(f"{item}: cannot load")
        return tune(lengths[item])

    return load


def test_quartet_groups_concatenate_movements_in_order_and_never_read_other_folders():
    paths = [
        "beethoven/opus59no1/movement10.mxl",
        "beethoven/opus59no1/movement2.mxl",
        "beethoven/opus18no1/movement1.krn",
        "beethoven/opus18no1/movement1.mxl",
        "beethoven/opus132.mxl",
        "mozart/k545/movement1_exposition.mxl",
        "bach/bwv66.6.mxl",
        "palestrina/Agnus_01.krn",
        "monteverdi/madrigal.3.1.rntxt",
    ]
    assert B.quartet_groups(paths) == [
        ("beethoven/opus132", ("beethoven/opus132.mxl",)),
        ("beethoven/opus18no1", ("beethoven/opus18no1/movement1.mxl",)),  # .mxl over .krn
        ("beethoven/opus59no1", ("beethoven/opus59no1/movement2.mxl", "beethoven/opus59no1/movement10.mxl")),
    ]


def test_sequence_pool_keeps_the_order_and_only_scores_of_its_folders():
    cands = [
        ("monteverdi/madrigal.3.1.mxl", None),
        ("bach/bwv66.6.mxl", None),
        ("essenFolksong/han1.abc", 3),
        ("monteverdi/madrigal.3.1.rntxt", None),
        ("josquin/milleRegrets.abc", 2),
        ("palestrina/Agnus_01.krn", None),
    ]
    assert B.sequence_pool(cands) == [
        "monteverdi/madrigal.3.1.mxl",
        "josquin/milleRegrets.abc#2",
        "palestrina/Agnus_01.krn",
    ]
    assert B.seeded_order(list(range(10)), 3) == B.seeded_order(list(range(10)), 3)
    assert B.interleave([1, 2, 3], ["a"]) == [1, "a", 2, 3]


def test_selection_alternates_kinds_skips_unloadable_scores_and_keeps_long_pieces_only(caplog):
    quartets = [("q/short", ("q/short/m1",)), ("q/a", ("q/a/m1", "q/a/m2", "q/a/m3")), ("q/b", ("q/b/m1",))]
    pool = ["s1", "s2", "bad", "s3", "s4", "s5"]
    lengths = {
        "q/short/m1": 50,
        "q/a/m1": 40,
        "q/a/m2": None,
        "q/a/m3": 30,
        "q/b/m1": 200,
        "s1": 30,
        "s2": 20,
        "bad": None,
        "s3": 15,
        "s4": 40,
        "s5": 5,
    }
    got = B.select_pieces(quartets, pool, loader(lengths), 5, min_s=60, max_s=120, gap_s=2.0)
    pieces = [p for p, _ in got]
    # q/short is too short; the last sequence (s4, s5: 47 s) too: the sources run out at 3
    assert [p.name for p in pieces] == ["q/a", "sequence 01: s1", "q/b"]
    assert "only 3 pieces of 5" in caplog.text
    a, s1, b = pieces
    assert a.items == ("q/a/m1", "q/a/m3") and a.skipped == ("q/a/m2",) and not a.cut
    assert a.seconds == pytest.approx(40 + 2 + 30)  # movements played in order, a gap between
    assert got[0][1].get_end_time() == pytest.approx(a.seconds)
    assert s1.items == ("s1", "s2", "s3") and s1.skipped == ("bad",)  # stops once >= min_s
    assert s1.seconds == pytest.approx(30 + 2 + 20 + 2 + 15)
    assert b.cut and b.seconds == pytest.approx(120)  # cut at max_s
    # quick mode: a quartet loads only the movements it needs
    seen = []
    load = loader(lengths)
    got = B.select_pieces(
        quartets[1:], pool, lambda i: seen.append(i) or load(i), 1, min_s=30, max_s=30, quartet_stop_s=30
    )
    assert seen == ["q/a/m1"] and got[0][0].seconds == pytest.approx(30) and got[0][0].cut


def test_concatenation_merges_parts_by_program_and_cut_ends_held_notes():
    m1 = tune(10, program=40)
    m1.instruments.append(tune(4, program=42, pitch=40).instruments[0])
    m2 = tune(5, program=40)
    pm = B.concatenate([m1, m2], gap_s=3.0)
    assert [i.program for i in pm.instruments] == [40, 42]
    assert pm.get_end_time() == pytest.approx(10 + 3 + 5)
    assert min(n.start for n in pm.instruments[0].notes if n.start > 9.5) == pytest.approx(13.0)
    short = B.cut(pm, 4.5)
    assert short.get_end_time() == pytest.approx(4.5)
    assert [len(i.notes) for i in short.instruments] == [5, 4]  # notes from 0, 1, .. 4 s
    other = B.with_programs(pm, True)
    assert [i.program for i in other.instruments] == [73, 70] and pm.instruments[0].program == 40


def test_render_length_check_names_the_file():
    B.check_render_length(601.5, 600.0, "x.wav")
    with pytest.raises(B.SkipPiece, match="x.wav: render is 900 s for 600 s"):
        B.check_render_length(900.0, 600.0, "x.wav")
    with pytest.raises(B.SkipPiece, match="x.wav: render is 300 s, shorter"):
        B.check_render_length(300.0, 600.0, "x.wav")


def test_dataset_rows_and_render_key(tmp_path):
    from coverhunter.dataset import read_dataset, write_dataset

    piece = B.Piece("beethoven/opus59no1", "quartet", ("m1", "m3"), ("m2",), 700.0)
    folder = tmp_path / "wav" / "p"
    rows = [
        {"wav": f"v{v}.wav", "dur_s": 701.0, "version": B.version_text(piece, s)}
        for v, s in enumerate(B.SYNTHS)
    ]
    tracks = B.dataset_rows([piece], [rows], [folder])
    write_dataset(tracks, tmp_path / "dataset.txt")
    back = read_dataset(tmp_path / "dataset.txt")
    assert [t.track_id for t in back] == ["long_000_0", "long_000_1", "long_000_2"]
    assert {t.work for t in back} == {"beethoven/opus59no1"} and back[0].extra["split"] == "test"
    assert json.loads((tmp_path / "dataset.txt").read_text().splitlines()[0])["wav"] == "wav/p/v0.wav"
    v = [json.loads(t.version) for t in back]
    assert [x["soundfont"] for x in v] == ["FluidR3_GM.sf2", "TimGM6mb.sf2", "FluidR3_GM.sf2"]
    assert [x["programs"] for x in v] == ["source", "source", "other"] and v[0]["skipped"] == ["m2"]
    assert B.render_key(B.SYNTHS[:2], piece) != B.render_key(B.SYNTHS, piece)


def test_results_are_cached_under_their_key(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"dist": np.arange(4.0).reshape(2, 2), "seconds": 1.5}

    a = B.cached(tmp_path / "c.npz", "k1", compute)
    b = B.cached(tmp_path / "c.npz", "k1", compute)
    assert len(calls) == 1 and np.array_equal(a["dist"], b["dist"]) and b["seconds"] == 1.5
    B.cached(tmp_path / "c.npz", "k2", compute)
    assert len(calls) == 2


def test_table_has_every_row_and_the_costs():
    works = ["a", "a", "b", "b"]
    d = np.array([[0, 1, 5, 5], [1, 0, 5, 5], [5, 5, 0, 1], [5, 5, 1, 0]], float)
    row = {**B.metrics(d, works, 10), "ms_per_query": 1234.5}
    assert row["map"] == 1.0
    res = {
        "corpus": {
            "title": "t",
            "n_tracks": 4,
            "n_works": 2,
            "minutes_min": 10.0,
            "minutes_max": 12.5,
            "hours": 0.8,
        },
        "rows": {"m alone": row, B.ALIGNMENT_ROW: row},
        "extract_s_per_audio_min": 2.25,
        "left_out": {"default v1": "ValueError: bad"},
    }
    text = B.format_table(res)
    assert "| m alone | 1.000 [1.000, 1.000] | 1.00 [1.00, 1.00] | 1.000 [1.000, 1.000] | 1,234 |" in text
    assert "4 recordings of 2 works, 10.0-12.5 min each" in text and "2.25 CPU s per audio minute" in text
    assert "left out default v1: ValueError: bad" in text
