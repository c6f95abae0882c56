"""One identify path: the same recording gives the same JSON through the Python API, the
command line, batch mode (a folder to ``--output``) and the service; one verdict rule."""

from __future__ import annotations

import importlib
import json
from dataclasses import replace

import pytest
import soundfile as sf

import coverhunter as ch
from coverhunter.checkpoint import load_model
from coverhunter.cli import main
from coverhunter.identification import IdentifyOptions, identify, verdict
from coverhunter.index import CatalogueIndex

from .serve_fixtures import DEFAULT_MODEL, SR, shared_catalogue, tune

SERVICE_KEYS = {"search", "catalogue_generation", "catalogue_audio"}  # what only the service adds
BATCH_KEYS = {"path", "size", "mtime_ns"}  # what only a line of --output adds


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    return shared_catalogue(tmp_path_factory)


def _cli_json(capsys, *args) -> list[dict]:
    assert main(["identify", *map(str, args), "--json"], exit=False) == 0
    return json.loads(capsys.readouterr().out)


def _batch_lines(folder, index_dir, out, *flags) -> list[dict]:
    assert (
        main(["identify", str(folder), "--index", str(index_dir), "--output", str(out), *flags], exit=False)
        == 0
    )
    return [json.loads(x) for x in out.read_text().splitlines()]


def test_the_same_recording_gives_the_same_json_on_every_surface(catalogue, tmp_path, capsys):
    pytest.importorskip("fastapi", reason="the serve extra is in the dev extra")
    from fastapi.testclient import TestClient

    from coverhunter.serve import ServeConfig, create_app
    from coverhunter.serve.engine import Engine

    _, index_dir = catalogue
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / "q.wav"
    sf.write(path, tune(2, 40.0, take=1), SR)
    idx, lm = CatalogueIndex.load(index_dir), load_model(DEFAULT_MODEL)
    engine = Engine(ServeConfig(index=index_dir, device="cpu"))
    try:
        with TestClient(create_app(engine.cfg, engine)) as client:
            # each surface's way of saying "top 3, one recording aligned per work, segments"
            cases = [
                (IdentifyOptions(), [], {}),
                (
                    IdentifyOptions(top=3, rerank_versions=1, segments=True),
                    ["--top", "3", "--rerank-versions", "1", "--segments"],
                    {"top": 3, "rerank_versions": 1, "segments": "true"},
                ),
            ]
            for n, (options, flags, params) in enumerate(cases):
                python = identify(idx, lm, path, options).to_dict()
                (listed,) = ch.identify(idx, lm, [path], options)  # the list form, as before
                (cli,) = _cli_json(capsys, path, "--index", index_dir, *flags)
                (line,) = _batch_lines(folder, index_dir, tmp_path / f"out{n}.jsonl", *flags)
                r = client.post(
                    "/identify", params=params, files={"file": ("q.wav", path.read_bytes(), "audio/wav")}
                )
                assert r.status_code == 200, r.text
                served = r.json()

                assert python["error"] is None and python["matches"][0]["work"] == "work2"
                assert ("segments" in python) == bool(options.segments)
                assert len(python["matches"]) == min(options.top, 5) and "duration_s" in python
                assert listed.to_dict() == python
                assert cli == python
                assert BATCH_KEYS <= set(line) and line["path"] == str(path.resolve())
                assert {k: v for k, v in line.items() if k not in BATCH_KEYS} == python
                assert SERVICE_KEYS <= set(served) and served["query"] == "q.wav"  # the upload's name
                assert {k: v for k, v in served.items() if k not in SERVICE_KEYS} == {
                    **python,
                    "query": "q.wav",
                }
                assert served["search"]["rerank_versions"] == (options.rerank_versions or 3)
    finally:
        engine.close()


def test_an_unreadable_file_is_the_same_error_answer_on_every_command_line_surface(
    catalogue, tmp_path, capsys
):
    _, index_dir = catalogue
    folder = tmp_path / "in"
    folder.mkdir()
    bad = folder / "broken.wav"
    bad.write_bytes(b"not audio at all" * 10)
    idx, lm = CatalogueIndex.load(index_dir), load_model(DEFAULT_MODEL)
    python = identify(idx, lm, bad).to_dict()
    assert python["verdict"] == "error" and python["matches"] == [] and "duration_s" not in python
    assert "broken.wav" in python["error"]
    assert main(["identify", str(bad), "--index", str(index_dir), "--json"], exit=False) == 1
    assert json.loads(capsys.readouterr().out) == [python]
    out = tmp_path / "out.jsonl"
    assert main(["identify", str(folder), "--index", str(index_dir), "--output", str(out)], exit=False) == 1
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert {k: v for k, v in line.items() if k not in BATCH_KEYS} == python


def test_one_verdict_rule():
    assert verdict(None, 0.01) == ""  # not calibrated: no verdict
    assert verdict(0.01, 0.01) == "match" and verdict(0.0, 0.0) == "match"
    assert verdict(0.0100001, 0.01) == "no cover in the catalogue"


def test_options_are_checked_and_overridden_by_what_is_given():
    base = IdentifyOptions(top=7, rerank=20)
    assert base.but(top=None, rerank=0, segments=None) == replace(base, rerank=0)
    for bad in ({"rerank": -1}, {"rerank_grow_after": -1}, {"rerank_versions": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            IdentifyOptions(**bad)
    with pytest.raises(TypeError, match="unknown option"):
        ch.identify(None, None, [], cache=object())  # a setting identify does not have


def test_coverhunter_identify_is_the_list_form_whatever_was_imported_first():
    """``coverhunter.identify(index, lm, paths)`` keeps its list form, also once the
    module :mod:`coverhunter.identification` is imported."""
    module = importlib.import_module("coverhunter.identification")
    assert ch.identify is module.identify_all and ch.IdentifyOptions is IdentifyOptions
    assert module.identify is identify
