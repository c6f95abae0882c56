"""The "fine_chroma" front end: its input, key-shift augmentation, training, checkpoints,
evaluation, the catalogue index and identify, and clear errors where its input is missing."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from coverhunter.checkpoint import load_model
from coverhunter.chroma import chroma_path, load_chroma
from coverhunter.config import Config, SpecAugConfig, load_config
from coverhunter.data import augment_chroma_batch
from coverhunter.embed import embed_tracks
from coverhunter.evaluate import run_evaluation, windowing
from coverhunter.identification import Recording, embed_query, identify
from coverhunter.index import build_index
from coverhunter.inputs import MissingInputError, input_of_path, model_input
from coverhunter.model import CoverHunter
from coverhunter.train import train

from .conftest import make_experiment, make_feature_lists
from .serve_fixtures import SR, tune

ROOT = Path(__file__).resolve().parents[1]
FINE = ["model.front_end=fine_chroma", "data.mean_size=1", "data.chunk_frame=[10, 8]"]
FRAMES = 300  # CQT frames of make_feature_lists' recordings: 30 chroma frames each


def test_fine_chroma_input_is_the_stored_views_side_by_side(tmp_path):
    data = make_feature_lists(tmp_path, n_works=2, n_versions=1, val_works=0)
    feat = data / "cqt_feat" / "f_0_0.cqt.npy"
    cfg = load_config(None, FINE)
    inp = model_input(cfg)
    assert inp.source(str(feat)) == chroma_path(feat) and inp.frames_per_second == 2.5
    x = inp.load(inp.source(str(feat)))
    views = load_chroma(chroma_path(feat), ("c3", "c1"))
    assert x.shape == (FRAMES // 10, 24)
    assert np.array_equal(x[:, :12], views["c3"]) and np.array_equal(x[:, 12:], views["c1"])
    assert CoverHunter(cfg.model).eval()(torch.from_numpy(x[None])).shape == (1, 128)
    one = load_config(None, [*FINE, "model.chroma_views=['c3']"])
    assert input_of_path(feat, one).shape == (FRAMES // 10, 12)
    # the default is untouched: the CQT file itself, 25 frames/s, padded with -100 dB
    cqt = model_input(Config())
    assert cqt.reads_cqt and cqt.source(str(feat)) == str(feat) and cqt.frames_per_second == 25
    assert cqt.pad_value == -100.0 and windowing(Config()).key() == "c3375h3375m3"
    with pytest.raises(ValueError, match="unknown view"):
        model_input(load_config(None, [*FINE, "model.chroma_views=['c9']"]))


def test_key_shift_rotates_every_view_by_the_same_pitch_classes():
    x = torch.rand(16, 10, 24, generator=torch.Generator().manual_seed(0))
    cfg = SpecAugConfig(roll_prob=1.0, erase_prob=0.0)
    y = augment_chroma_batch(x, cfg, torch.Generator().manual_seed(1))
    seen = set()
    for i in range(16):
        views = x[i].view(10, 2, 12)
        shift = [s for s in range(1, 12) if torch.equal(y[i], torch.roll(views, s, dims=-1).reshape(10, 24))]
        assert len(shift) == 1  # a transposition by 1..11 classes, the same for both views
        seen.add(shift[0])
    assert len(seen) > 3
    off = SpecAugConfig(roll_prob=0.0, erase_prob=0.0)
    assert torch.equal(augment_chroma_batch(x, off, torch.Generator()), x)
    erased = augment_chroma_batch(x, SpecAugConfig(roll_prob=0.0, erase_prob=1.0), torch.Generator())
    assert (erased == 0).any() and ((erased == x) | (erased == 0)).all()


def test_fifths_key_makes_the_embedding_the_same_in_every_key():
    x = torch.rand(4, 20, 24, generator=torch.Generator().manual_seed(2))
    for key, same in (("fifths", True), ("none", False)):
        cfg = load_config(
            None,
            [
                *FINE,
                f"model.chroma_key={key}",
                "model.d_model=32",
                "model.n_layers=1",
                "model.n_heads=2",
                "model.ffn_dim=32",
            ],
        )
        model = CoverHunter(cfg.model).eval()
        for s in (1, 5, 7):
            up = torch.roll(x.view(4, 20, 2, 12), s, dims=-1).reshape(4, 20, 24)
            assert torch.allclose(model(x), model(up), atol=1e-5) == same, (key, s)


def _rolls(w: int, v: int) -> int:
    """make_feature_lists' time shift of version v of work w (its first random draw)."""
    return int(np.random.default_rng(100 * w + v).integers(0, FRAMES))


def write_alignment(data: Path, n_works: int = 4, n_versions: int = 3) -> Path:
    """The exact alignment of make_feature_lists' versions (time-rolled copies of a work),
    in the corpus format, one matched moment a second."""
    lines = []
    for w in range(n_works):
        for v in range(n_versions):
            for u in range(n_versions):
                if u != v:
                    pairs = [
                        [t / 25, ((t - _rolls(w, v) + _rolls(w, u)) % FRAMES) / 25]
                        for t in range(12, FRAMES, 25)
                    ]
                    lines.append(
                        {
                            "utt_i": f"f_{w}_{v}",
                            "utt_j": f"f_{w}_{u}",
                            "work": f"work{w}",
                            "chunk_s": 0.0,
                            "pairs": pairs,
                        }
                    )
    path = data / "alignment.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def test_passage_model_on_fine_chroma_trains_reloads_embeds_and_evaluates(tmp_path):
    data = make_feature_lists(tmp_path / "data")
    align = write_alignment(data)
    exp = make_experiment(tmp_path / "exp", data)
    r = train(
        exp,
        overrides=[*FINE, f"data.align_path='{align}'", "loss.objective=passage", "loss.queue_size=8"],
        verbose=False,
    )
    assert r.steps == 6 and "train_nce" in r.history[0] and "train_ce" not in r.history[0]
    assert 0.0 <= r.history[-1]["val_map"] <= 1.0
    lm = load_model(exp)
    assert lm.config.model.front_end == "fine_chroma"  # self-describing: which input it reads
    assert lm.config.model.chroma_views == ("c3", "c1") and "queue" in lm.heads
    state = torch.load(exp / "checkpoints" / "last.pt", weights_only=True)
    assert state["config"]["model"]["chroma_views"] == ["c3", "c1"]
    # embed one feature file as evaluation does: 30 chroma frames, 4.8 s windows every 2.4 s
    feat = data / "cqt_feat" / "f_5_0.cqt.npy"
    inp = model_input(lm.config)
    ((emb, starts),) = embed_tracks(lm.model, [inp.source(feat)], windowing(lm.config), load=inp.loader())
    assert emb.shape == (4, 16) and starts == [0, 6, 12, 18]
    x = torch.from_numpy(input_of_path(feat, lm.config)[6:18][None])
    assert np.allclose(emb[1], lm.model(x)[0].detach().numpy(), atol=1e-5)
    report = run_evaluation(exp, data / "val.txt")
    assert report.n_queries == 6 and 0.0 < report.map <= 1.0
    # the short-chunk re-ranking reads the chroma too (windows of 8 s = 20 chroma frames)
    both = run_evaluation(exp, data / "val.txt", rerank=4, rerank_source="both")
    assert both.n_queries == 6 and 0.0 < both.map <= 1.0


def test_passage_training_with_a_queue_resumes_exactly(tmp_path):
    data = make_feature_lists(tmp_path / "data")
    sets = [
        *FINE,
        f"data.align_path='{write_alignment(data)}'",
        "loss.objective=passage",
        "loss.queue_size=8",
        "data.val_path=''",
    ]
    straight = make_experiment(tmp_path / "a", data)
    train(straight, overrides=sets, verbose=False)
    split = make_experiment(tmp_path / "b", data)
    train(split, overrides=sets, max_epochs=1, verbose=False)  # "interrupted"
    train(split, overrides=sets, verbose=False)  # resumes at epoch 1: queue, key encoder, RNG
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(split / "checkpoints" / "last.pt", weights_only=True)
    for part in ("model", "loss"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)


def test_classify_objective_trains_on_fine_chroma_too(tmp_path):
    data = make_feature_lists(tmp_path / "data")
    exp = make_experiment(tmp_path / "exp", data)
    r = train(exp, overrides=FINE, max_epochs=1, verbose=False)
    assert r.steps == 3 and {"train_ce", "train_triplet"} <= set(r.history[0])
    # a fine-chroma model reads the chroma files alone: lists whose CQT files are gone
    # (from_catalogue.py's) train and validate
    for cqt in (data / "cqt_feat").glob("*.cqt.npy"):
        cqt.unlink()
    again = train(make_experiment(tmp_path / "exp2", data), overrides=FINE, max_epochs=1, verbose=False)
    assert again.steps == 3 and 0.0 <= again.history[0]["val_map"] <= 1.0


def test_missing_input_and_unsupported_paths_raise_clear_errors(tmp_path):
    data = make_feature_lists(tmp_path / "data")
    exp = make_experiment(tmp_path / "exp", data)
    with pytest.raises(ValueError, match="needs data.align_path"):
        train(exp, overrides=[*FINE, "loss.objective=passage"], verbose=False)
    train(exp, overrides=FINE, max_epochs=1, verbose=False)
    lm = load_model(exp)
    # a recording whose analysis lacks the views the model reads: one line naming it
    with pytest.raises(MissingInputError, match=r"q\.wav: chroma view\(s\) \['c1'\] missing"):
        embed_query(
            lm, Recording("q.wav", np.zeros((50, 96)), {"c3": np.zeros((5, 12))}), windowing(lm.config)
        )
    with pytest.raises(ValueError, match="fine chroma"):  # the backstop of every other path
        embed_tracks(lm.model, [data / "cqt_feat" / "f_0_0.cqt.npy"], windowing(lm.config))
    missing = chroma_path(data / "cqt_feat" / "f_5_1.cqt.npy")  # a validation recording's
    missing.unlink()
    with pytest.raises(MissingInputError, match=rf"{missing.name}.*chroma view"):
        run_evaluation(exp, data / "val.txt")
    chroma_path(data / "cqt_feat" / "f_0_1.cqt.npy").unlink()  # a training recording's
    with pytest.raises(ValueError, match="no stored fine chroma.*f_0_1"):
        train(make_experiment(tmp_path / "exp2", data), overrides=FINE, verbose=False)


def test_a_fine_chroma_model_indexes_audio_and_identifies_a_cover(tmp_path):
    import soundfile as sf

    data = make_feature_lists(tmp_path / "data")
    exp = make_experiment(tmp_path / "exp", data)
    train(exp, overrides=FINE, max_epochs=1, verbose=False)
    lm = load_model(exp)
    audio = tmp_path / "audio"
    audio.mkdir()
    for w in range(3):
        sf.write(audio / f"work{w}.wav", tune(w, 20.0), SR, subtype="PCM_16")
    idx, failed = build_index(tmp_path / "idx", lm, folder=audio)
    assert not failed and idx.meta["n_tracks"] == 3
    # windows in the model's input: 2.5 chroma frames a second, silence = 0
    assert idx.windowing == windowing(lm.config) and idx.windowing.pad_value == 0.0
    sf.write(tmp_path / "take.wav", tune(1, 20.0, take=2), SR, subtype="PCM_16")
    res = identify(idx, lm, tmp_path / "take.wav")
    assert res.error is None and res.duration_s == pytest.approx(20.0, abs=0.1)
    assert res.matches[0].work == "work1" and res.matches[0].alignment is not None
    # the query's windows are the index's: they start every eval.hop_s seconds
    hop, q = lm.config.eval.hop_s, res.matches[0].query_offset_s
    assert q == pytest.approx(round(q / hop) * hop, abs=1e-3)


def test_recipe_configs_parse_and_the_small_network_is_5_to_10x_smaller():
    conf = ROOT / "egs" / "fine_chroma" / "conf"
    names = sorted(p.stem for p in conf.glob("*.yaml"))
    assert {"control", "fine_chroma", "passage", "passage_small"} <= set(names)
    cfgs = {n: load_config(conf / f"{n}.yaml") for n in names}
    assert cfgs["control"].model.front_end == "cqt" and cfgs["control"].loss.objective == "classify"
    assert cfgs["passage"].loss.objective == "passage" and cfgs["passage"].model.front_end == "fine_chroma"
    n_params = {n: sum(p.numel() for p in CoverHunter(c.model).parameters()) for n, c in cfgs.items()}
    assert 5 <= n_params["control"] / n_params["passage_small"] <= 10
    budgets = {c.optim.time_budget_s for c in cfgs.values()}
    assert len(budgets) == 1 and budgets.pop() > 0  # equal CPU time for every arm
    assert {c.optim.budget_clock for c in cfgs.values()} == {"cpu"}


def test_training_corpus_from_the_catalogue_distractors(tmp_path):
    """egs/fine_chroma/from_catalogue.py: the distractor chunks' stored views become a
    dataset the fine-chroma front end reads; validation works stay out; a rerun is the same."""
    import subprocess
    import sys

    from coverhunter.dataset import read_dataset

    from .conftest import load_benchmark

    bc = load_benchmark("bench_catalogue")
    rng = np.random.default_rng(0)
    dis = tmp_path / "distractors"
    dis.mkdir()
    views = {}
    for k, works in enumerate((["w0", "w0", "val_w"], ["w1", "w1"])):
        ids = np.asarray([f"dis_{k}_{i}" for i in range(len(works))])
        fine = {
            v: [rng.random((20 + i, 12)).astype(np.float16) for i in range(len(works))] for v in ("c3", "c1")
        }
        views.update({t: {v: fine[v][i] for v in fine} for i, t in enumerate(ids)})
        raw = {"track_ids": ids}
        for v, arrays in fine.items():
            raw[v], raw[f"{v}_offsets"] = bc._ragged(arrays, np.float16, 12)
        bc.save_npz_atomic(bc.chunk_path(dis, k).with_suffix(".cqt.npz"), raw)
        rec = bc.Recordings(
            ids,
            np.asarray(works),
            np.full(len(ids), 8.0),
            [np.zeros((1, 4), np.float32)] * len(ids),
            [np.zeros((20, 24), np.uint8)] * len(ids),
            {},
        )
        bc.write_recordings(bc.chunk_path(dis, k), rec)
    bc.save_npz_atomic(
        bc.chunk_path(dis, 2).with_suffix(".cqt.npz"), {"track_ids": np.asarray(["x"])}
    )  # unfinished
    ref = tmp_path / "ref"
    ref.mkdir()
    for name, work in (("train", "r0"), ("val", "val_w")):
        row = {
            "utt": f"{name}0",
            "wav": "a.wav",
            "dur_s": 8.0,
            "song": work,
            "version": "0",
            "feat": "f.cqt.npy",
        }
        (ref / f"{name}.txt").write_text(json.dumps(row) + "\n")
    out = tmp_path / "big"
    cmd = [
        sys.executable,
        str(ROOT / "egs" / "fine_chroma" / "from_catalogue.py"),
        str(dis),
        str(ref),
        str(out),
    ]
    for _ in range(2):  # the second run finds the files written and writes the same lists
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        train_rows = read_dataset(out / "train.txt")
        assert [t.track_id for t in train_rows] == ["train0", "dis_0_0", "dis_0_1", "dis_1_0", "dis_1_1"]
        assert [t.work for t in read_dataset(out / "val.txt")] == ["val_w"]
    inp = model_input(Config().model.__class__(front_end="fine_chroma", chroma_views=["c3", "c1"]))
    for t in train_rows[1:]:
        want = np.concatenate([views[t.track_id]["c3"], views[t.track_id]["c1"]], axis=1).astype(np.float32)
        np.testing.assert_array_equal(inp.load(inp.source(t.feat)), want)
    assert not (out / "cqt_feat" / "dis_0_2.chroma.npz").exists()  # a validation work's recording
    bad = subprocess.run(
        cmd[:2] + [str(tmp_path / "none"), str(ref), str(out)], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "no finished chunk" in bad.stderr
