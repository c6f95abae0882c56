"""The notes view: a tone's partials are explained by its fundamental, silence stays
silent, and the view streams as the whole."""

import numpy as np
import pytest

from coverhunter import chroma as CH
from coverhunter import notes as N

from .test_chroma import _tones


def test_templates_put_each_partial_where_its_frequency_falls():
    w = N.note_templates()
    assert w.shape == (N.N_BINS, N.N_NOTES)
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), 1.0)
    col = w[:, 0] / w[0, 0]  # C1: partial 2 an octave up, partial 3 a fifth above that
    assert np.isclose(col[36], N.DECAY)
    pos = 36 * np.log2(3)  # 57.06: shared by bins 57 and 58
    assert col[57] > col[58] > 0 and np.isclose(col[57] + col[58], N.DECAY**2)
    assert not w[: 3 * 40, 40].any()  # nothing below a note's fundamental
    assert int(pos) == 57
    with pytest.raises(ValueError, match="decay"):
        N.note_templates(1.5)


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity of two chroma sequences' frames."""
    n = min(len(a), len(b))
    num = (a[:n] * b[:n]).sum(1)
    return float(np.mean(num / (np.linalg.norm(a[:n], axis=1) * np.linalg.norm(b[:n], axis=1) + 1e-9)))


def test_quiet_chords_under_a_loud_melody_still_count():
    # one harmony, two mixes: the chords alone, and the chords at a seventh of the level
    # under a melody. The folded chroma of the second is the melody's; the notes view
    # still hears the chords
    chords = _tones([(60, 64, 67), (57, 60, 64), (53, 57, 60), (55, 59, 62)] * 2, 1.0)
    melody = _tones([(72,), (76,), (79,), (77,), (76,), (74,), (72,), (71,)], 1.0)
    mix = 0.15 * chords + melody
    sim = {v: _similarity(*(CH.audio_chroma(y, (v,))[v] for y in (chords, mix))) for v in ("c3", "c3nnls")}
    assert sim["c3nnls"] > sim["c3"] + 0.15, sim
    # and a chord is its three notes
    got = CH.audio_chroma(_tones([(60, 64, 67)] * 3, 1.0), ("c3nnls",))["c3nnls"][2:-2].mean(0)
    assert set(np.argsort(got)[-3:]) == {0, 4, 7}


def test_the_batched_solver_finds_scipys_least_squares_notes():
    from scipy.ndimage import uniform_filter1d
    from scipy.optimize import nnls

    y = _tones([(48, 60, 64, 67), (45, 57, 60, 64), (41, 53, 57, 72)], 1.0, harmonics=(1.0, 0.6, 0.4, 0.3))
    x = CH.block_mean(CH.fine_cqt(y), CH.BLOCK)
    got = N.note_activations(x)
    w = N.note_templates()
    white = N.whiten(x)
    mean = uniform_filter1d(x.astype(np.float64), N.WHITEN_BINS, axis=1, mode="nearest")
    np.testing.assert_allclose(
        N._moving_mean(x.astype(np.float64), N.WHITEN_BINS), mean, rtol=1e-6, atol=1e-9
    )
    want = np.stack([nnls(w, f, maxiter=20 * N.N_NOTES)[0] for f in white])
    np.testing.assert_allclose(got, want, atol=0.02 * want.max())
    np.testing.assert_allclose(N.notes_to_chroma(got, 24), N.notes_to_chroma(want, 24), atol=0.01)


def test_silence_and_bad_input():
    x = CH.fine_cqt(np.zeros(3 * 16000, np.float32))
    got = CH.fold(x, CH.VIEWS["c3nnls"])
    assert got.shape == (-(-len(x) // CH.BLOCK), 12) and not got.any()
    with pytest.raises(ValueError, match="spectrum of shape"):
        N.note_activations(np.ones((4, 100)))
    with pytest.raises(ValueError, match="use fold"):
        CH.fold_frames(x, CH.VIEWS["c3nnls"])
    with pytest.raises(ValueError, match="bad chroma view"):
        CH.fold(x, CH.ChromaView(2, 0.7, notes=True))


def test_a_planted_melody_in_another_key_and_tempo_aligns_with_its_source_on_notes():
    rng = np.random.default_rng(3)
    melody = [(int(p),) for p in rng.integers(57, 72, 24)]
    source = CH.audio_chroma(_tones(melody, 0.5), ("c3nnls",))["c3nnls"]
    cover = CH.audio_chroma(_tones([(p + 3,) for (p,) in melody], 0.6), ("c3nnls",))["c3nnls"]
    other = CH.audio_chroma(_tones([(int(p),) for p in rng.integers(57, 72, 24)], 0.5), ("c3nnls",))["c3nnls"]
    from coverhunter import qmax as Q

    f = [Q.AlignmentFeatures.from_chroma(c) for c in (source, cover, other)]
    d = Q.alignment_distance_matrix(f, Q.QmaxParams())
    assert d[0, 1] < d[0, 2]
