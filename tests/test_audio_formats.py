"""Any audio: formats through soundfile and PyAV, rates, channels, blocks, truncated WAVs."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf

from coverhunter.audio import AudioError, check_wav_truncation, iter_audio_blocks, load_audio, peak_normalize
from coverhunter.features import cqt
from coverhunter.stream import recording_cqt, stream_cqt

from .serve_fixtures import SR, encode, tune

av = pytest.importorskip("av", reason="PyAV is in the dev extra")


FORMATS = [
    ("m4a", "aac", 44100),
    ("webm", "libopus", 48000),
    ("mp3", "libmp3lame", 44100),
    ("flac", "flac", 22050),
    ("wav", "pcm_s16le", 8000),
    ("opus", "libopus", 24000),
]


@pytest.mark.parametrize("ext,codec,rate", FORMATS)
def test_every_format_decodes_to_the_same_music(tmp_path, ext, codec, rate):
    """Each format (written by PyAV's encoders, stereo, other rates) gives nearly the CQT of
    the 16 kHz mono original, whole or in blocks."""
    import soxr

    y = tune(3, 6.0)
    path = tmp_path / f"x.{ext}"
    encode(path, soxr.resample(y, SR, rate).astype(np.float32), rate, codec)
    z = load_audio(path)
    assert abs(len(z) - len(y)) < 0.1 * SR  # codecs pad a little
    blocks = np.concatenate(list(iter_audio_blocks(path, block_s=0.7)))
    assert abs(len(blocks) - len(z)) < 0.05 * SR
    base, other = cqt(peak_normalize(y)), recording_cqt(path, block_s=0.7)
    lag = _best_lag(base, other)  # AAC/Opus add an encoder delay
    n = min(len(base), len(other) - lag) - 5
    loud = base[:n] > -40
    assert np.median(np.abs(other[lag : lag + n][loud] - base[:n][loud])) < 1.5, ext


def _best_lag(a: np.ndarray, b: np.ndarray, max_lag: int = 5) -> int:
    n = min(len(a), len(b)) - max_lag
    return int(np.argmin([np.abs(b[k : k + n] - a[:n]).mean() for k in range(max_lag)]))


def test_stream_cqt_equals_whole_cqt_for_any_block_size():
    y = np.concatenate([tune(1, 7.3), tune(2, 5.0)]) * 0.3
    whole = cqt(peak_normalize(y))
    for bs in (7001, 48000, 10**7):
        s = stream_cqt(y[i : i + bs] for i in range(0, len(y), bs))
        assert s.shape == whole.shape
        loud = whole > -80
        assert np.abs(s - whole)[loud].max() < 1e-3
    assert stream_cqt([y[:100]]).shape == (0, 96)


def test_truncated_wav_warns_with_the_file_name(tmp_path, caplog):
    path = tmp_path / "cut.wav"
    sf.write(path, tune(0, 2.0), SR, subtype="PCM_16")
    assert check_wav_truncation(path) is None
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header still announces 2 s
    with caplog.at_level(logging.WARNING, logger="coverhunter.audio"):
        y = load_audio(path)
    assert 0.9 * SR < len(y) < 1.1 * SR
    msg = check_wav_truncation(path)
    assert "cut.wav" in msg and "truncated" in msg and "2.00 s" in msg
    assert any("cut.wav" in r.message and "truncated" in r.message for r in caplog.records)


def test_bad_inputs_name_the_problem(tmp_path):
    empty = tmp_path / "empty.m4a"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty.m4a: empty file"):
        load_audio(empty)
    junk = tmp_path / "junk.webm"
    junk.write_bytes(b"\x1a\x45\xdf\xa3 not really webm" * 10)
    with pytest.raises(AudioError, match="junk.webm.*cannot decode"):
        load_audio(junk)
    with pytest.raises(AudioError, match="junk.webm.*cannot decode"):
        list(iter_audio_blocks(junk))
    long = tmp_path / "long.wav"
    sf.write(long, tune(0, 3.0), SR)
    with pytest.raises(AudioError, match="longer than the limit of 2 s"):
        list(iter_audio_blocks(long, max_seconds=2, block_s=0.5))
