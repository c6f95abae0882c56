"""Synthetic tunes and a small catalogue index made with the shipped default model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "default" / "model.pt"
SR = 16000


def tune(work: int, seconds: float = 30.0, sr: int = SR, noise: float = 0.003, take: int = 0) -> np.ndarray:
    """A melody with rhythm over chords and a bass line, distinct per work (float32 mono at ``sr``), over
    a noise floor that differs per ``take`` (as two recordings of one performance)."""
    rng = np.random.default_rng(work)
    notes = rng.integers(45, 76, size=16)
    durs = rng.choice([0.25, 0.5, 0.5, 1.0], size=16)
    bass = rng.integers(33, 45, size=4)
    roots = rng.integers(48, 60, size=4)  # a chord under every four notes, major or minor
    thirds = rng.choice([3, 4], size=4)
    out = np.zeros(int(seconds * sr))
    t, i = 0.0, 0
    while t < seconds:
        d = durs[i % 16] * 0.8
        n0, n1 = int(t * sr), min(len(out), int((t + d) * sr))
        tt = np.arange(n1 - n0) / sr
        f = 440 * 2 ** ((notes[i % 16] - 69) / 12)
        fb = 440 * 2 ** ((bass[(i // 4) % 4] - 69) / 12)
        out[n0:n1] += np.exp(-3 * tt) * sum(0.6**k * np.sin(2 * np.pi * f * (k + 1) * tt) for k in range(5))
        out[n0:n1] += 0.5 * sum(0.5**k * np.sin(2 * np.pi * fb * (k + 1) * tt) for k in range(3))
        c = (i // 4) % 4
        for p in (roots[c], roots[c] + thirds[c], roots[c] + 7):
            out[n0:n1] += 0.2 * sum(
                0.4**k * np.sin(2 * np.pi * 440 * 2 ** ((p - 69) / 12) * (k + 1) * tt) for k in range(2)
            )
        t, i = t + d, i + 1
    out = 0.5 * out / np.abs(out).max()
    if noise:
        out = out + noise * np.random.default_rng(10_000 + 100 * take + work).standard_normal(len(out))
    return out.astype(np.float32)


def make_catalogue(root: Path, n_works: int = 5, seconds: float = 30.0) -> tuple[Path, Path]:
    """Audio folder (one file per work) and an index of it built with the default model."""
    from coverhunter.checkpoint import load_model
    from coverhunter.index import build_index

    audio = root / "catalogue"
    audio.mkdir(parents=True, exist_ok=True)
    for w in range(n_works):
        sf.write(audio / f"work{w}.wav", tune(w, seconds), SR, subtype="PCM_16")
    calib = root / "calibration"
    calib.mkdir(exist_ok=True)
    lines = []
    for w in range(n_works):  # other takes of every work, labelled
        for take in range(3, 9):
            sf.write(calib / f"w{w}_{take}.wav", tune(w, 15.0, take=take), SR, subtype="PCM_16")
            lines.append(
                {
                    "utt": f"w{w}_{take}",
                    "wav": f"w{w}_{take}.wav",
                    "dur_s": 15.0,
                    "song": f"work{w}",
                    "version": str(take),
                }
            )
    (calib / "dataset.txt").write_text("".join(json.dumps(x) + "\n" for x in lines))
    lm = load_model(DEFAULT_MODEL)
    build_index(root / "index", lm, folder=audio, calibrate_with=calib / "dataset.txt")
    return audio, root / "index"


_BUILT: dict[str, tuple[Path, Path]] = {}


def shared_catalogue(tmp_path_factory) -> tuple[Path, Path]:
    """One catalogue per test session, whichever test module asks first."""
    if "cat" not in _BUILT:
        _BUILT["cat"] = make_catalogue(tmp_path_factory.mktemp("serve_catalogue"))
    return _BUILT["cat"]


def medley(works=(1, 4, 2), seconds: float = 45.0) -> np.ndarray:
    """Other takes of catalogue works, one after the other."""
    return np.concatenate([tune(w, seconds, take=1) for w in works])


def live_server(app):
    """A context manager: ``app`` served by uvicorn on a free loopback port, in a thread."""
    import contextlib
    import threading
    import time

    import uvicorn

    @contextlib.contextmanager
    def run():
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        t0 = time.monotonic()
        while not server.started:
            if not thread.is_alive() or time.monotonic() - t0 > 60:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(30)

    return run()


def encode(path, y: np.ndarray, sr: int, codec: str, channels: int = 2) -> None:
    """Write ``y`` (mono float32) with PyAV's encoders (any container), duplicated to ``channels``."""
    import av

    layout = "stereo" if channels == 2 else "mono"
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=sr, layout=layout)
        fmt = s.codec_context.format.name if s.codec_context.format else "fltp"
        frame_n = s.codec_context.frame_size or 1024
        x = np.stack([y] * channels).astype(np.float32)
        for i in range(0, x.shape[1], frame_n):
            part = x[:, i : i + frame_n]
            if fmt == "s16":
                frame = av.AudioFrame.from_ndarray(
                    (part.T.reshape(1, -1) * 32767).astype(np.int16), format="s16", layout=layout
                )
            elif fmt == "flt":
                frame = av.AudioFrame.from_ndarray(part.T.reshape(1, -1).copy(), format="flt", layout=layout)
            else:
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format="fltp", layout=layout)
            frame.sample_rate = sr
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
