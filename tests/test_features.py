import numpy as np
import pytest
import soundfile as sf

from coverhunter.audio import AudioError, load_audio, peak_normalize
from coverhunter.config import FeatureConfig
from coverhunter.features import cqt, pool_frames, stretch_frames

from .conftest import SR, melody, reference_dir


def _tone():
    ref = reference_dir()
    y = peak_normalize(load_audio(ref / "tone.wav"))
    return ref, y


def test_cqt_parity_float64():
    ref, y = _tone()
    out = cqt(y, FeatureConfig(precision="float64"))
    expected = np.load(ref / "tone.cqt.npy")
    assert out.dtype == np.float64 and out.shape == expected.shape == (301, 96)
    assert np.abs(out - expected).max() < 1e-6


def test_cqt_parity_float32_default():
    ref, y = _tone()
    out = cqt(y)
    assert out.dtype == np.float32
    assert np.abs(out.astype(np.float64) - np.load(ref / "tone.cqt.npy")).max() < 1e-3


def test_pooled_parity():
    ref, y = _tone()
    pooled = pool_frames(cqt(y, FeatureConfig(precision="float64")), 3)
    expected = np.load(ref / "tone.cqt_pooled.npy")
    assert pooled.shape == (100, 96)
    assert np.abs(pooled - expected).max() < 1e-6


def test_cqt_is_db_relative_to_max():
    out = cqt(melody(0, 0, 3.0))
    assert out.max() == 0.0 and out.shape == (3 * SR // 640, 96)


def test_cqt_short_input_gives_no_frames():
    assert cqt(np.zeros(100, np.float32)).shape == (0, 96)


def test_bad_precision():
    with pytest.raises(ValueError, match="precision"):
        cqt(melody(0, 0, 1.0), FeatureConfig(precision="float16"))


@pytest.mark.parametrize(
    "fmt,sub,ext", [("FLAC", "PCM_16", "flac"), ("OGG", "VORBIS", "ogg"), ("MP3", "MPEG_LAYER_III", "mp3")]
)
def test_formats_rates_and_channels_agree(tmp_path, fmt, sub, ext):
    """Stereo 44.1 kHz in any format gives nearly the CQT of the 16 kHz mono original."""
    import soxr

    y = melody(1, 0, 4.0)
    base = cqt(peak_normalize(y))
    y44 = soxr.resample(y, SR, 44100)
    path = tmp_path / f"x.{ext}"
    sf.write(path, np.stack([y44, y44], 1), 44100, format=fmt, subtype=sub)
    z = load_audio(path)
    assert abs(len(z) - len(y)) < 2000  # codecs may pad a little
    other = cqt(peak_normalize(z))
    n = min(len(base), len(other)) - 5
    loud = base[:n] > -40  # compare where there is signal
    assert np.median(np.abs(other[:n][loud] - base[:n][loud])) < 1.0


def test_load_audio_errors(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio")
    with pytest.raises(AudioError, match="bad.wav.*cannot decode"):
        load_audio(bad)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), SR)
    with pytest.raises(AudioError, match="no samples"):
        load_audio(empty)


def test_pool_frames_drops_partial_group():
    x = np.arange(7 * 2, dtype=float).reshape(7, 2)
    p = pool_frames(x, 3)
    assert p.shape == (2, 2)
    assert np.allclose(p[0], x[:3].mean(0)) and np.allclose(p[1], x[3:6].mean(0))


def test_stretch_frames():
    x = np.random.default_rng(0).normal(size=(100, 96)).astype(np.float32)
    assert stretch_frames(x, 1.25).shape == (80, 96)
    assert stretch_frames(x, 0.8).shape == (125, 96)
    assert stretch_frames(x, 1.25).dtype == np.float32
    assert np.array_equal(stretch_frames(x, 2.0)[:10], x[:20:2])
    with pytest.raises(ValueError):
        stretch_frames(x, 0)
