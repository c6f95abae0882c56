"""The HTTP service: identify, catalogue reads, writes with a token, limits, bad input."""

from __future__ import annotations

import io
import shutil
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi", reason="the serve extra is in the dev extra")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from coverhunter.checkpoint import load_model  # noqa: E402
from coverhunter.identification import identify_all as identify  # noqa: E402
from coverhunter.index import CatalogueIndex  # noqa: E402
from coverhunter.serve import ServeConfig, create_app  # noqa: E402
from coverhunter.serve.engine import Engine  # noqa: E402

from .serve_fixtures import DEFAULT_MODEL, SR, encode, live_server, medley, shared_catalogue, tune  # noqa: E402


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    _, index_dir = shared_catalogue(tmp_path_factory)
    eng = Engine(ServeConfig(index=index_dir, device="cpu"))
    yield eng
    eng.close()


def client(engine, **kw) -> TestClient:
    return TestClient(create_app(replace(engine.cfg, **kw), engine))


def wav_bytes(y: np.ndarray, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, SR, format=fmt)
    return buf.getvalue()


def test_identify_m4a_gives_identify_json(engine, tmp_path):
    path = tmp_path / "query.m4a"
    encode(path, tune(2, 25.0, take=1), SR, "aac")
    with client(engine) as c:
        r = c.post("/identify?alignment=true", files={"file": ("query.m4a", path.read_bytes(), "audio/mp4")})
        assert r.status_code == 200, r.text
        body = r.json()
    assert {"query", "verdict", "error", "matches", "duration_s"} <= set(body)
    assert body["query"] == "query.m4a" and body["error"] is None
    assert body["matches"][0]["work"] == "work2"
    assert set(body["matches"][0]) == {
        "work",
        "track_id",
        "score",
        "query_offset_s",
        "ref_offset_s",
        "probability",
        "p_value",
        "alignment",
    }
    ref = identify(engine.index, load_model(DEFAULT_MODEL), [path])[0]  # in-process, same file
    got = {m["work"]: m["score"] for m in body["matches"]}
    assert got.keys() == {m.work for m in ref.matches}  # the same works, nearly the same scores
    assert all(abs(got[m.work] - m.score) < 2e-3 for m in ref.matches)
    a = body["alignment"]
    assert a["track_id"] == "work2.wav" and len(a["similarity"]) == len(a["query_starts"])
    assert len(a["similarity"][0]) == len(a["ref_starts"])
    assert body["catalogue_audio"]["work2.wav"] == "/tracks/work2.wav/audio"


def test_rerank_per_request_and_as_the_service_default(engine, tmp_path):
    path = tmp_path / "query.wav"
    sf.write(path, tune(3, 25.0, take=2), SR)
    lm = load_model(DEFAULT_MODEL)
    with client(engine) as c:
        assert c.get("/health").json()["search"] == {
            "rerank": 5,
            "rerank_grow_after": 450,
            "rerank_versions": 3,
        }
        bodies = {
            k: c.post("/identify", params=p, files={"file": ("q.wav", path.read_bytes(), "audio/wav")})
            for k, p in (
                ("on", {}),
                ("off", {"rerank": 0}),
                ("one", {"rerank_versions": 1}),
                ("bad", {"rerank": -1}),
                ("bad_v", {"rerank_versions": 0}),
            )
        }
    assert bodies["bad"].status_code == 422 and "rerank" in bodies["bad"].text
    assert bodies["bad_v"].status_code == 422 and "rerank_versions" in bodies["bad_v"].text
    for key, rerank, versions in (("on", None, None), ("off", 0, None), ("one", None, 1)):
        body = bodies[key].json()  # as identify does it in-process
        assert body["search"]["rerank"] == (0 if rerank == 0 else 5)
        assert body["search"]["rerank_versions"] == (None if rerank == 0 else versions or 3)
        ref = identify(engine.index, lm, [path], rerank=rerank, rerank_versions=versions)[0]
        assert [m["work"] for m in body["matches"]] == [m.work for m in ref.matches]
        assert all(abs(m["score"] - r.score) < 2e-3 for m, r in zip(body["matches"], ref.matches))
    off = Engine(replace(engine.cfg, rerank=0))  # the service's default, from `serve --rerank 0`
    try:
        with client(off) as c:
            assert c.get("/health").json()["search"]["rerank"] == 0
            r = c.post("/identify", files={"file": ("q.wav", path.read_bytes(), "audio/wav")}).json()
            assert r["search"]["rerank"] == 0 and r["matches"] == bodies["off"].json()["matches"]
            r = c.post(
                "/identify", params={"rerank": 3}, files={"file": ("q.wav", path.read_bytes(), "audio/wav")}
            ).json()
            assert r["search"]["rerank"] == 3
    finally:
        off.close()
    with pytest.raises(ValueError, match="rerank-grow-after must be >= 0"):
        ServeConfig(index=engine.cfg.index, rerank_grow_after=-1)
    with pytest.raises(ValueError, match="rerank-versions must be >= 1"):
        ServeConfig(index=engine.cfg.index, rerank_versions=0)


def test_segments_through_the_api(engine):
    with client(engine) as c:
        r = c.post(
            "/identify",
            params={"segments": "true"},
            files={"file": ("medley.flac", wav_bytes(medley((3, 0, 4)), "FLAC"), "audio/flac")},
        )
    assert r.status_code == 200, r.text
    assert [s["work"] for s in r.json()["segments"]] == ["work3", "work0", "work4"]


def test_catalogue_reads_health_and_docs(engine):
    with client(engine) as c:
        h = c.get("/health").json()
        assert h["status"] == "ok" and h["tracks"] == 5 and h["works"] == 5 and not h["writes"]
        assert h["calibrated"] and h["calibrated_alignment"]  # the catalogue stores chroma
        works = c.get("/works").json()
        assert works["n_works"] == 5 and works["works"][0] == {"work": "work0", "tracks": ["work0.wav"]}
        t = c.get("/tracks/work1.wav").json()
        assert t["work"] == "work1" and t["audio_url"] == "/tracks/work1.wav/audio"
        audio = c.get("/tracks/work1.wav/audio")
        assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
        assert c.get("/tracks/nope").status_code == 404
        assert "no track 'nope'" in c.get("/tracks/nope/audio").json()["detail"]
        spec = c.get("/openapi.json").json()
        assert {"/identify", "/works", "/tracks/{track_id}", "/health"} <= set(spec["paths"])
        assert "/tracks" not in spec["paths"]  # no token: no write endpoint at all
        assert c.get("/docs").status_code == 200
        assert "coverhunter" in c.get("/").text
        assert c.post("/tracks", files={"file": ("a.wav", b"x", "audio/wav")}).status_code in (404, 405)


@pytest.mark.parametrize(
    "name,data,ctype,status,words",
    [
        ("notes.txt", b"hello", "text/plain", 415, "expected an audio file"),
        ("fake.wav", b"this is not audio" * 50, "audio/wav", 422, "fake.wav: cannot decode"),
        ("empty.mp3", b"", "audio/mpeg", 422, "empty upload"),
        ("cut.wav", None, "audio/wav", 422, "too short"),
    ],
)
def test_bad_input_gets_4xx_naming_the_problem(engine, name, data, ctype, status, words):
    if data is None:
        data = wav_bytes(np.zeros(100, np.float32))  # less than one frame
    with client(engine) as c:
        r = c.post("/identify", files={"file": (name, data, ctype)})
        assert r.status_code == status and words in r.json()["detail"], r.text
        assert c.post("/identify").status_code == 422  # no file part: FastAPI names the field
        assert c.get("/health").status_code == 200  # still serving


def test_limits_size_duration_and_decode_time(engine):
    ten_s = wav_bytes(tune(1, 10.0))
    with client(engine, max_upload_mb=0.1) as c:
        r = c.post("/identify", files={"file": ("big.wav", ten_s, "audio/wav")})
        assert r.status_code == 413 and "limit is 0.1 MB" in r.json()["detail"]
    with client(engine, max_duration_s=5.0) as c:
        r = c.post("/identify", files={"file": ("long.wav", ten_s, "audio/wav")})
        assert r.status_code == 413 and "long.wav: longer than the limit of 5 s" in r.json()["detail"]
    with client(engine, decode_timeout_s=0.001) as c:
        r = c.post("/identify", files={"file": ("slow.wav", ten_s, "audio/wav")})
        assert r.status_code == 422 and "decoding took longer" in r.json()["detail"]


def test_token_protects_reads_and_writes(engine, tmp_path):
    shutil.copytree(engine.cfg.index, tmp_path / "index")  # its own catalogue to write to
    own = Engine(ServeConfig(index=tmp_path / "index", device="cpu"))
    auth = {"Authorization": "Bearer s3cret"}
    with client(own, token="s3cret", open_reads=False) as c:
        assert c.get("/works").status_code == 401
        assert c.get("/works", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/works", headers=auth).status_code == 200
        assert c.get("/health").status_code == 200  # liveness stays open
        new = wav_bytes(tune(7, 30.0))
        form = {"work": "work7", "track_id": "w7"}
        assert c.post("/tracks", data=form, files={"file": ("w7.wav", new, "audio/wav")}).status_code == 401
        r = c.post("/tracks", data=form, files={"file": ("w7.wav", new, "audio/wav")}, headers=auth)
        assert r.status_code == 201, r.text
        assert r.json()["work"] == "work7" and r.json()["audio_url"] == "/tracks/w7/audio"
        bad = c.post(
            "/tracks",
            data={"work": "x", "track_id": "../../etc"},
            headers=auth,
            files={"file": ("x.wav", new, "audio/wav")},
        )
        assert bad.status_code == 422 and "track_id" in bad.json()["detail"]
        again = c.post("/tracks", data=form, files={"file": ("w7.wav", new, "audio/wav")}, headers=auth)
        assert again.status_code == 409
        q = c.post(
            "/identify",
            headers=auth,
            files={"file": ("q.wav", wav_bytes(tune(7, 20.0, take=1)), "audio/wav")},
        )
        assert q.json()["matches"][0]["work"] == "work7"
    own.close()
    assert CatalogueIndex.load(tmp_path / "index").meta["n_tracks"] == 6  # on disk too


def test_full_queue_answers_503_with_retry_after(engine, monkeypatch):
    gate = threading.Event()
    real = engine.decode

    def slow_decode(*args):
        gate.wait(30)
        return real(*args)

    monkeypatch.setattr(engine, "decode", slow_decode)
    cfg = replace(engine.cfg, queue_size=1)
    body = wav_bytes(tune(1, 8.0))
    with live_server(create_app(cfg, engine)) as url:
        first: dict = {}

        def send():
            first["r"] = httpx.post(
                f"{url}/identify", files={"file": ("a.wav", body, "audio/wav")}, timeout=60
            )

        t = threading.Thread(target=send)
        t.start()
        time.sleep(0.5)
        while httpx.get(f"{url}/health").status_code != 200:
            time.sleep(0.1)
        r = httpx.post(f"{url}/identify", files={"file": ("b.wav", body, "audio/wav")}, timeout=60)
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
        assert "busy" in r.json()["detail"]
        gate.set()
        t.join(60)
        assert first["r"].status_code == 200
        again = httpx.post(f"{url}/identify", files={"file": ("c.wav", body, "audio/wav")}, timeout=60)
        assert again.status_code == 200  # the queue drained
