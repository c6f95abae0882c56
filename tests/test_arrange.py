"""Arrangements keep the melody and change the accompaniment; corpus v2 splits and resumes."""

import json
import os
from dataclasses import replace

import numpy as np
import pretty_midi
import pytest

from coverhunter import corpus
from coverhunter.corpus import arrange as arr
from coverhunter.corpus import harmony, score
from coverhunter.corpus import plan as plans


def _tune(meter: int = 4, bars: int = 8, key_number: int = 0) -> pretty_midi.PrettyMIDI:
    """A C-major tune at 120 bpm: arpeggiated tonic / dominant bars."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=120)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(meter, 4, 0.0))
    pm.key_signature_changes.append(pretty_midi.KeySignature(key_number, 0.0))
    inst = pretty_midi.Instrument(0)
    figures = [[60, 64, 67, 64], [67, 71, 74, 71], [65, 69, 72, 69], [67, 65, 64, 62]]
    t = 0.0
    for b in range(bars):
        fig = figures[b % 4]
        for k in range(meter):
            inst.notes.append(pretty_midi.Note(90, fig[k % 4], t, t + 0.5))
            t += 0.5
    inst.notes.append(pretty_midi.Note(90, 60, t, t + 1.0))
    pm.instruments.append(inst)
    return pm


def _plan(rng, **kw) -> plans.ArrangementPlan:
    plan = plans.plan_arrangement(rng)
    return plans.ArrangementPlan(**{**plan.__dict__, **kw})


def test_key_estimate_and_signature():
    pm = _tune()
    mel = score.extract_melody(pm)
    assert score.estimate_key(mel) == (0, "major")
    transposed = [pretty_midi.Note(n.velocity, n.pitch + 5, n.start, n.end) for n in mel]
    assert score.estimate_key(transposed) == (5, "major")


def test_harmonization_fits_the_melody_and_ends_on_the_tonic():
    pm = _tune()
    mel = score.extract_melody(pm)
    beats, downs, meter = score.beat_grid(pm)
    assert meter == 4 and len(downs) >= 8
    plan = _plan(
        np.random.default_rng(0), temperature=0.3, substitution=0.0, seventh_prob=0.0, chords_per_bar=1
    )
    chords = harmony.harmonize(mel, downs, pm.get_end_time(), (0, "major"), plan, np.random.default_rng(0))
    assert chords[0].root == 0 and chords[-1].root == 0
    # bars 2 and 4 of the figure outline G major: a cool harmonisation picks G there
    assert chords[1].root == 7
    for c in chords:  # every chord covers the note on its downbeat
        first = min((n for n in mel if c.start - 1e-6 <= n.start < c.end), key=lambda n: n.start)
        assert first.pitch % 12 in c.pcs or c.quality in ("dom7", "maj7", "min7", "add9")


def test_arrangement_keeps_melody_and_changes_accompaniment():
    pm = _tune()
    mel = score.extract_melody(pm)
    versions = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        plan = _plan(
            rng,
            style=["block", "arpeggio", "pad", "waltz", "strum", "dense"][seed],
            ornament_prob=0.0,
            rhythm_prob=0.0,
            melody_octave=seed % 3 - 1,
            temperature=1.5,
            substitution=2.0,
        )
        parts = arr.arrange_parts(pm, plan, rng)
        melody_part = parts[0]
        shift = 12 * plan.melody_octave
        assert [(round(n.start, 3), n.pitch) for n in melody_part.notes] == [
            (round(n.start, 3), n.pitch + shift) for n in mel
        ]
        assert len(parts) >= 2 and all(p.notes for p in parts)
        acc = sorted((round(n.start, 2), n.pitch) for p in parts[1:] if not p.is_drum for n in p.notes)
        versions.append(acc)
    # no two versions share their accompaniment
    assert len({tuple(v) for v in versions}) == len(versions)


def test_ornaments_and_rhythm_keep_every_source_pitch_near_its_time():
    pm = _tune()
    mel = score.extract_melody(pm)
    rng = np.random.default_rng(3)
    plan = _plan(rng, style="melody_only", ornament_prob=0.5, rhythm_prob=0.5, melody_octave=0)
    notes = arr.arrange_parts(pm, plan, rng)[0].notes
    for n in mel:  # the source note still sounds within a quarter beat of its onset
        assert any(m.pitch == n.pitch and abs(m.start - n.start) <= 0.13 for m in notes)


def test_polyphonic_styles_keep_the_voices():
    pm = _tune()
    low = pretty_midi.Instrument(0)
    low.notes = [pretty_midi.Note(80, n.pitch - 12, n.start, n.end) for n in pm.instruments[0].notes]
    pm.instruments.append(low)
    rng = np.random.default_rng(0)
    for style in plans.POLY_STYLES:
        parts = arr.arrange_parts(pm, _plan(rng, style=style, melody_octave=0), rng)
        pitches = [sorted(n.pitch for n in p.notes) for p in parts[:2]]
        assert pitches[0] == sorted(n.pitch for n in pm.instruments[0].notes)
        assert pitches[1] == sorted(n.pitch for n in low.notes)


def test_perform_transposes_all_but_drums_and_keeps_time_monotonic():
    pm = _tune()
    rng = np.random.default_rng(1)
    plan = _plan(rng, style="block", drums="backbeat")
    parts = arr.arrange_parts(pm, plan, rng)
    vp = corpus.VersionPlan(
        "fluidsynth",
        "x.sf2",
        plan,
        transpose=3,
        tempo=1.2,
        tempo_drift=0.15,
        sections=((0.0, pm.get_end_time()),),
        swing_depth=0.03,
        velocity_scale=1.0,
        reverb=0.0,
        chorus=False,
        tilt_db=0.0,
        snr_db=30.0,
        codec="none",
        gain_db=0.0,
    )
    out = corpus.perform(parts, vp, pm.get_end_time(), rng)
    drums = [i for i in out.instruments if i.is_drum]
    assert drums and {n.pitch for n in drums[0].notes} <= {36, 38, 42}
    mel_src = sorted(n.pitch for n in parts[0].notes)
    assert sorted(n.pitch for n in out.instruments[0].notes) == [p + 3 for p in mel_src]
    starts = [n.start for n in sorted(out.instruments[0].notes, key=lambda n: n.start)]
    assert all(b >= a for a, b in zip(starts, starts[1:]))
    # faster tempo and a drift that speeds up: shorter than the source
    assert out.get_end_time() < pm.get_end_time()
    json.loads(vp.describe())  # the plan is stored as JSON in dataset.txt


def test_test_works_are_a_fixed_twentieth_and_never_in_training():
    pytest.importorskip("music21")
    train = corpus.candidate_pieces(0, "train")
    test = corpus.candidate_pieces(0, "test")
    names_train = {corpus.piece_name(*c) for c in train}
    names_test = {corpus.piece_name(*c) for c in test}
    assert not names_train & names_test
    assert 0.035 < len(test) / (len(test) + len(train)) < 0.065
    assert all(corpus.is_test_work(n) for n in names_test)


def test_test_soundfont_is_never_a_training_soundfont():
    assert corpus.TEST_SOUNDFONT not in corpus.SOUNDFONTS
    assert all(f.name != corpus.TEST_SOUNDFONT for f in corpus.find_soundfonts("train"))
    assert all("musescore" not in f.name.lower() for f in corpus.find_soundfonts("train"))


def test_corpus_resumes_after_a_kill(tmp_path):
    """A work rendered before an interruption is reused, not rendered again."""
    out = tmp_path / "c"
    a = corpus.make_corpus(out, works=2, versions=(2, 3), seed=4, num_workers=1, verbose=False)
    stamps = {t.audio: os.stat(t.audio).st_mtime_ns for t in a}
    (out / "dataset.txt").unlink()  # as if killed before the end
    b = corpus.make_corpus(out, works=2, versions=(2, 3), seed=4, num_workers=1, verbose=False)
    assert [(t.work, t.version) for t in a] == [(t.work, t.version) for t in b]
    for t in b:
        assert os.stat(t.audio).st_mtime_ns == stamps[t.audio]
    assert 2 <= len(a) // 2 <= 3


def test_arrangement_only_corpus_keeps_key_and_tempo(tmp_path):
    tracks = corpus.make_corpus(
        tmp_path / "t",
        works=1,
        versions=3,
        seed=2,
        split="test",
        arrangement_only=True,
        num_workers=1,
        verbose=False,
    )
    plans = [json.loads(t.version) for t in tracks]
    assert all(p["transpose"] == 0 and p["tempo"] == 1.0 for p in plans)
    assert all(p["soundfont"] == corpus.TEST_SOUNDFONT for p in plans)
    assert corpus.is_test_work(tracks[0].work)
    assert len({json.dumps(p["arrangement"]) for p in plans}) == 3
    # make-corpus writes the versions' exact alignment: same structure and tempo, so
    # every moment of one version is played at the same time in the others (and, for a
    # tune short enough to be played twice, once more a repeat later)
    from coverhunter.align import read_alignment

    al = read_alignment(tmp_path / "t" / corpus.ALIGNMENT_FILE)
    assert sum(len(partners) for partners in al.values()) == 6  # 3 versions, ordered pairs
    for partners in al.values():
        for pairs in partners.values():
            assert pairs and all(any(abs(a - b) < 1e-3 for a2, b in pairs if a2 == a) for a, _ in pairs)


def _chord_classes(parts, window):
    """Pitch classes the accompaniment (all but melody and drums) starts in a time window."""
    a, b = window
    return {
        n.pitch % 12 for p in parts[1:] if not p.is_drum for n in p.notes if a - 1e-3 <= n.start < b - 1e-3
    }


def test_harmony_kept_versions_share_the_work_chords_and_change_the_rest():
    pm = _tune(bars=12)
    chords = harmony.work_harmony(pm, np.random.default_rng(11))
    assert chords == harmony.work_harmony(pm, np.random.default_rng(11))  # one draw per work
    kept, new = [], []
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        plan = _plan(
            rng,
            style=["block", "arpeggio", "pad", "melody_only"][seed],
            substitution=2.0,
            temperature=1.5,
            bass="none",
            counter_melody=False,
        )
        k = plans.keep_harmony(plan, rng)
        assert k.harmony == "kept" and k.style != "melody_only"  # a kept version plays chords
        kept.append(arr.arrange_parts(pm, k, np.random.default_rng(seed), work_chords=chords))
        new.append(arr.arrange_parts(pm, replace(k, harmony="new"), np.random.default_rng(seed)))
    for c in chords:
        # every kept version sounds the work's chord (and nothing else) in each chord's window
        for parts in kept:
            sounded = _chord_classes(parts, (c.start, c.end))
            assert sounded and sounded <= set(c.pcs)
    # the re-harmonised versions leave the work's chords somewhere
    assert any(not _chord_classes(parts, (c.start, c.end)) <= set(c.pcs) for parts in new for c in chords)
    # kept versions still differ in texture
    textures = {
        tuple(sorted((round(n.start, 2), n.pitch) for p in parts[1:] for n in p.notes)) for parts in kept
    }
    assert len(textures) == len(kept)
    with pytest.raises(ValueError, match="work_chords"):
        arr.arrange_parts(
            pm,
            kept_plan := plans.keep_harmony(_plan(np.random.default_rng(0)), np.random.default_rng(0)),
            np.random.default_rng(0),
        )
    assert kept_plan.harmony == "kept"


def test_harmony_share_labels_versions_and_zero_keeps_the_old_corpus(tmp_path):
    kept = corpus.make_corpus(
        tmp_path / "k",
        works=1,
        versions=3,
        seed=2,
        split="test",
        harmony_kept=1.0,
        num_workers=1,
        verbose=False,
    )
    assert [corpus.harmony_subset(t) for t in kept] == ["kept"] * 3
    old = corpus.make_corpus(
        tmp_path / "o",
        works=1,
        versions=3,
        seed=2,
        split="test",
        harmony_kept=0.0,
        num_workers=1,
        verbose=False,
    )
    assert {corpus.harmony_subset(t) for t in old} <= {"new", "none"}
    # share 0 draws nothing more: the spec key and every plan are those of before the share
    spec = corpus.CorpusSpec(2, (3, 3), "test", False)
    assert "harmony_kept" not in spec.key()
    assert all(json.loads(t.version)["arrangement"]["harmony"] == "new" for t in old)
    with pytest.raises(ValueError, match="harmony_kept"):
        corpus.make_corpus(tmp_path / "x", works=1, versions=2, harmony_kept=1.5)
