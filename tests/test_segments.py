"""Long recordings and medleys (which work where), and batch identify of a folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from coverhunter.checkpoint import load_model
from coverhunter.cli import main
from coverhunter.identification import IdentifyOptions, identify, identify_all
from coverhunter.index import CatalogueIndex
from coverhunter.segments import viterbi_path

from .serve_fixtures import DEFAULT_MODEL, SR, medley, shared_catalogue, tune


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    return shared_catalogue(tmp_path_factory)


def test_viterbi_ignores_one_odd_chunk_and_follows_real_changes():
    S = np.full((12, 3), 0.5)
    S[:5, 0], S[5:, 1] = 0.9, 0.9
    S[2, 2] = 0.95  # one odd chunk
    assert viterbi_path(S, 0.2).tolist() == [0] * 5 + [1] * 7
    assert viterbi_path(S, 0.0)[2] == 2


def test_medley_of_three_works_gives_three_segments(catalogue, tmp_path):
    _, index_dir = catalogue
    path = tmp_path / "medley.flac"
    sf.write(path, medley((1, 4, 2)), SR)
    idx, lm = CatalogueIndex.load(index_dir), load_model(DEFAULT_MODEL)
    r = identify(idx, lm, path, IdentifyOptions(segments=True), block_s=7.0)
    segs = r.segments
    assert [s.work for s in segs] == ["work1", "work4", "work2"], segs
    assert segs[0].start_s == 0 and segs[-1].end_s == pytest.approx(135, abs=0.1)
    for s, true_end in zip(segs[:2], (45, 90)):
        assert abs(s.end_s - true_end) < 8  # boundaries within a quarter-chunk or so
    assert all(s.start_s <= s.query_offset_s < s.end_s for s in segs)
    assert len(r.matches) == 5  # the whole recording's answer, as without segments
    assert r.matches == identify(idx, lm, path, block_s=7.0).matches


def test_block_size_of_the_decoding_does_not_change_the_answer(catalogue, tmp_path):
    _, index_dir = catalogue
    path = tmp_path / "q.wav"
    sf.write(path, tune(3, 50.0, noise=0.01), SR)
    idx, lm = CatalogueIndex.load(index_dir), load_model(DEFAULT_MODEL)
    (ref,) = identify_all(idx, lm, [path])
    got = identify(idx, lm, path, block_s=3.0)
    scores = {m.work: m.score for m in got.matches}
    assert scores.keys() == {m.work for m in ref.matches}  # near-ties may swap places
    assert all(abs(scores[m.work] - m.score) < 2e-3 for m in ref.matches)
    assert got.matches[0].work == "work3" and got.duration_s == pytest.approx(50, abs=0.1)


def test_cli_segments_json(catalogue, tmp_path, capsys):
    _, index_dir = catalogue
    path = tmp_path / "m.wav"
    sf.write(path, medley((0, 3, 1)), SR)
    assert main(["identify", str(path), "--index", str(index_dir), "--segments", "--json"], exit=False) == 0
    out = json.loads(capsys.readouterr().out)
    assert [s["work"] for s in out[0]["segments"]] == ["work0", "work3", "work1"]


def test_batch_folder_is_resumable_and_reports_failures(catalogue, tmp_path, capsys):
    _, index_dir = catalogue
    folder = tmp_path / "in"
    (folder / "a" / "deep").mkdir(parents=True)
    sf.write(folder / "a" / "one.wav", tune(1, 20.0), SR)
    sf.write(folder / "a" / "deep" / "two.flac", tune(2, 20.0), SR)
    (folder / "broken.mp3").write_bytes(b"not audio at all" * 100)
    out = tmp_path / "results.jsonl"
    args = ["identify", str(folder), "--recursive", "--index", str(index_dir), "--output", str(out)]
    assert main(args, exit=False) == 1  # one file failed, the rest answered
    assert "broken.mp3" in capsys.readouterr().err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 3
    by_name = {x["path"].rsplit("/", 1)[1]: x for x in lines}
    assert by_name["one.wav"]["matches"][0]["work"] == "work1"
    assert by_name["two.flac"]["matches"][0]["work"] == "work2"
    assert "cannot decode" in by_name["broken.mp3"]["error"]
    # a kill while writing leaves half a line: dropped; answered files are not redone
    out.write_text(out.read_text() + '{"path": "half')
    (folder / "broken.mp3").unlink()
    sf.write(folder / "three.wav", tune(0, 20.0), SR)
    assert main(args, exit=False) == 0
    lines2 = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines2) == 4 and lines2[-1]["path"].endswith("three.wav")
    assert lines2[-1]["matches"][0]["work"] == "work0"
    # without --recursive only the folder's own files
    assert main(["identify", str(folder), "--index", str(index_dir), "--output", str(out)], exit=False) == 0
    assert len(out.read_text().splitlines()) == 4


def test_identify_shortlist_growth_can_be_fixed_or_forced(catalogue, tmp_path, capsys, monkeypatch):
    import coverhunter.index.reranked_search as RS

    _, index_dir = catalogue
    path = tmp_path / "q.wav"
    sf.write(path, tune(3, 30.0, noise=0.01), SR)
    aligned, qmax = [], RS.qmax_scores  # the real alignment, counted
    monkeypatch.setattr(RS, "qmax_scores", lambda q, refs, *a: aligned.append(len(refs)) or qmax(q, refs, *a))
    # never grow: 2 aligned; grow from 1 recording on: ceil(2 sqrt(5)) -> all 5 works
    for grow, want in (("0", 2), ("1", 5)):
        assert (
            main(
                [
                    "identify",
                    str(path),
                    "--index",
                    str(index_dir),
                    "--json",
                    "--rerank",
                    "2",
                    "--rerank-grow-after",
                    grow,
                ],
                exit=False,
            )
            == 0
        )
        assert json.loads(capsys.readouterr().out)[0]["matches"][0]["work"] == "work3"
        assert aligned.pop() == want and not aligned
    assert (
        main(["identify", str(path), "--index", str(index_dir), "--rerank-grow-after", "-1"], exit=False) != 0
    )
    assert "grow_after must be >= 0" in capsys.readouterr().err
    # one recording aligned per work (this catalogue holds one of each): the same answer
    assert (
        main(
            [
                "identify",
                str(path),
                "--index",
                str(index_dir),
                "--json",
                "--rerank",
                "2",
                "--rerank-grow-after",
                "0",
                "--rerank-versions",
                "1",
            ],
            exit=False,
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)[0]["matches"][0]["work"] == "work3"
    assert aligned.pop() == 2 and not aligned
    with pytest.raises(SystemExit):
        main(["identify", str(path), "--index", str(index_dir), "--rerank-versions", "0"], exit=False)
    assert "expected a whole number >= 1, got 0" in capsys.readouterr().err
