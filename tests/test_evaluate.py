"""Evaluation says when there is nothing to evaluate and never writes NaN; self-queries
exclude themselves by default; index files respect the umask."""

from __future__ import annotations

import json
import os

import numpy as np

from coverhunter.checkpoint import load_model
from coverhunter.cli import main
from coverhunter.index import build_index
from coverhunter.metrics import evaluate_distances, self_exclusion

from .test_index_integrity import feature_list, tiny_model


def test_evaluate_with_no_usable_query_fails_and_writes_nothing(tmp_path, capsys):
    model = tiny_model(tmp_path / "model.pt")
    lst = feature_list(tmp_path, "solo", 4)
    lines = [json.loads(x) for x in lst.read_text().splitlines()]
    lst.write_text("".join(json.dumps({**x, "song": x["utt"]}) + "\n" for x in lines))  # 1 per work
    out = tmp_path / "m.json"
    assert main(["evaluate", str(model), str(lst), "--output", str(out), "--json"], exit=False) == 1
    assert "no query has a relevant reference" in capsys.readouterr().err
    assert not out.exists()


def test_report_dict_is_valid_json_without_queries():
    rep = evaluate_distances(np.zeros((2, 2)), ["a", "b"], ["c", "d"])
    assert rep.n_queries == 0
    json.dumps(rep.to_dict(per_query=True), allow_nan=False)  # no NaN anywhere


def test_self_query_excludes_itself_by_default():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(100), 2)
    x = rng.normal(size=(200, 8))
    dist = 1 - np.corrcoef(x)  # random, with zero on the diagonal
    auto = evaluate_distances(dist, labels, labels)
    explicit = evaluate_distances(dist, labels, labels, exclude=self_exclusion(200))
    assert auto.map == explicit.map and auto.map < 0.2  # random ranking, not 0.55
    kept = evaluate_distances(dist, labels, labels, exclude=None)  # asked for: no exclusion
    assert kept.map > 0.5
    other = evaluate_distances(dist[:, :150], labels, labels[:150])  # not the same list
    assert other.hit_rate == 1.0  # nothing excluded: each query finds itself first


def test_index_files_respect_the_umask(tmp_path):
    model = tiny_model(tmp_path / "model.pt")
    old = os.umask(0o022)
    try:
        build_index(tmp_path / "idx", load_model(model), dataset=feature_list(tmp_path, "c", 2))
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "idx").iterdir()]
    assert files and all(p.stat().st_mode & 0o777 == 0o644 for p in files)


def test_evaluate_writes_both_plots_from_its_own_embeddings(tmp_path):
    model = tiny_model(tmp_path / "model.pt")
    lst = feature_list(tmp_path, "plotted", 8)
    plots = tmp_path / "plots"
    assert main(["evaluate", str(model), str(lst), "--plots", str(plots)], exit=False) == 0
    for name in ("distances.png", "embedding_map.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_stage_without_a_summary_projection_says_how_to_fit_one(tmp_path, caplog):
    model = tiny_model(tmp_path / "model.pt")
    assert load_model(model).summary_projection is None
    lst = feature_list(tmp_path, "noproj", 8)
    with caplog.at_level("WARNING"):
        assert main(["evaluate", str(model), str(lst), "--rerank", "4"], exit=False) == 0
    assert "no 2D Fourier summary projection" in caplog.text and "fit-summary" in caplog.text
