"""The fine chroma: tuned, folded by librosa, and a planted cover aligns with its source."""

import warnings

import numpy as np
import pytest

from coverhunter import chroma as CH
from coverhunter import qmax as Q

SR = 16000


def _tones(
    notes, seconds_per_note: float, cents: float = 0.0, harmonics=(1.0, 0.5, 0.25), sr: int = SR
) -> np.ndarray:
    """Harmonic tones for MIDI ``notes`` (a list of chords: tuples of pitches), detuned by
    ``cents``."""
    n = int(seconds_per_note * sr)
    t = np.arange(n) / sr
    env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
    out = []
    for chord in notes:
        y = np.zeros(n)
        for p in chord:
            f = 440.0 * 2 ** ((p - 69 + cents / 100) / 12)
            y += sum(a * np.sin(2 * np.pi * f * (h + 1) * t) for h, a in enumerate(harmonics))
        out.append(y * env)
    y = np.concatenate(out)
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def test_shape_frame_rate_and_silence():
    y = _tones([(60,)], 3.3)
    views = CH.audio_chroma(y, ("c3", "c1"))
    frames = -(-(1 + len(y) // CH.HOP_LENGTH) // CH.BLOCK)
    assert views["c3"].shape == views["c1"].shape == (frames, 12)
    assert views["c3"].dtype == np.float32 and np.isclose(views["c3"].max(1), 1).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        silent = CH.audio_chroma(np.zeros(SR * 2, np.float32))["c3"]
    assert not silent.any()
    with pytest.raises(ValueError, match="unknown chroma view"):
        CH.audio_chroma(y, ("c9",))
    with pytest.raises(ValueError, match="mono"):
        CH.fine_cqt(np.zeros((2, 100), np.float32))


@pytest.mark.parametrize("cents", [0.0, 45.0, -40.0])
def test_a_detuned_chord_keeps_its_pitch_classes(cents):
    # C major spread over three octaves, up to 45 cents off concert pitch: the tuning
    # estimate puts its energy on C, E and G
    y = _tones([(48, 64, 67, 72)] * 4, 1.0, cents=cents)
    prof = CH.audio_chroma(y, ("c3",))["c3"].mean(0)
    assert set(np.argsort(prof)[-3:]) == {0, 4, 7}


def test_the_bass_view_hears_the_bass():
    y = _tones([(33,), (33,)], 1.0, harmonics=(1.0,))  # A1, 55 Hz: below C3
    views = CH.audio_chroma(y, ("c3", "c1"))
    assert int(np.argmax(views["c1"].mean(0))) == 9
    assert views["c3"].mean(0)[9] < 0.5 * views["c1"].mean(0)[9] or not views["c3"].any()


def test_the_compressed_view_lets_a_quiet_part_count_more():
    # a loud C4 and an E4 at a tenth of its amplitude: "c3p07" folds magnitudes raised to
    # 0.7, so E's share beside C grows (about 0.1 ** 0.7 = 0.2 against 0.1)
    t = np.arange(3 * SR) / SR
    y = (0.5 * np.sin(2 * np.pi * 261.63 * t) + 0.05 * np.sin(2 * np.pi * 329.63 * t)).astype(np.float32)
    views = CH.audio_chroma(y, ("c3", "c3p07"))
    plain, compressed = views["c3"].mean(0), views["c3p07"].mean(0)
    assert int(np.argmax(plain)) == int(np.argmax(compressed)) == 0
    assert compressed[4] / compressed[0] > 1.5 * plain[4] / plain[0], (plain, compressed)


def test_planted_melody_in_another_key_tempo_and_tuning_aligns_with_its_source():
    rng = np.random.default_rng(3)
    source_notes = [(int(p),) for p in rng.integers(60, 76, 40)]
    source = _tones(source_notes, 0.5)
    # the cover: 3 semitones up, 20 % slower, 30 cents sharp, another timbre
    cover = _tones([(p + 3,) for (p,) in source_notes], 0.6, cents=30, harmonics=(1.0, 0.1, 0.4))
    strangers = [_tones([(int(p),) for p in rng.integers(60, 76, 40)], 0.5) for _ in range(5)]
    feats = [Q.AlignmentFeatures.from_chroma(CH.audio_chroma(y)["c3"]) for y in [source, cover, *strangers]]
    scores = Q.qmax_scores(feats[0], feats[1:])
    assert scores[0] > scores[1:].max() + 0.1, scores


def test_the_first_stage_searches_the_c3_view_of_any_spec():
    from coverhunter.chroma import search_view, view_of

    assert search_view("cqt|c3") == 1
    assert search_view("c3") == 0 and search_view("c1|c3") == 1
    assert search_view("cqt|c1") == 1  # no c3: the first fine view
    assert search_view("cqt") == 0
    assert search_view((1, 1.5)) == 0  # an old index's CQT chroma parameters
    x = np.arange(24 * 3, dtype=np.float32).reshape(3, 24)
    np.testing.assert_array_equal(view_of(x, 1), x[:, 12:])
    with pytest.raises(ValueError, match="no view 2"):
        view_of(x, 2)


def test_the_cens_view_is_librosas_cens_of_the_same_cqt():
    import librosa

    y = _tones([(60, 64, 67), (62, 65, 69)] * 3, 1.0)
    x = CH.fine_cqt(y)
    want = librosa.feature.chroma_cens(
        C=x[:, 2 * CH.BINS_PER_OCTAVE :].T,
        bins_per_octave=CH.BINS_PER_OCTAVE,
        fmin=librosa.note_to_hz("C3"),
        win_len_smooth=CH.VIEWS["c3cens"].cens,
    ).T
    np.testing.assert_allclose(CH.fold(x, CH.VIEWS["c3cens"]), CH.blocked(want), atol=1e-5)
    got = CH.audio_chroma(y, ("c3cens",))["c3cens"]
    assert set(np.argsort(got[:4].mean(0))[-3:]) == {0, 4, 7}  # C major first
    with pytest.raises(ValueError, match="bad chroma view"):
        CH.fold(x, CH.ChromaView(2, 0.7, cens=11))  # CENS compresses on its own


def test_a_streamed_recording_has_the_chroma_of_the_whole():
    # fed in blocks and analysed stretch by stretch (past the first minute, whose tuning
    # it keeps), every view, CENS's smoothing across frames included, is the whole's
    rng = np.random.default_rng(5)
    y = _tones([(int(p), int(p) + 4) for p in rng.integers(55, 72, 80)], 0.9)  # 72 s
    views = ("c3", "c3p07", "c3cens", "c3nnls")
    whole = CH.audio_chroma(y, views)
    stream = CH.ChromaStream(views, stretch_s=7.0)
    for i in range(0, len(y), 5 * SR + 123):
        stream.feed(y[i : i + 5 * SR + 123])
    got = stream.finish()
    for v in views:
        assert got[v].shape == whole[v].shape, v
        np.testing.assert_allclose(got[v], whole[v], atol=0.02, err_msg=v)
