"""Chroma packs: a chroma model sees the same input from a pack as from the CQT files."""

import json

import numpy as np
import pytest
import torch

from coverhunter.cli import main
from coverhunter.config import ModelConfig
from coverhunter.features import pool_frames
from coverhunter.model import CoverHunter
from coverhunter.pack import dequantise, pack_features, quantise, read_pack, unpack_features
from coverhunter.train import train

from .conftest import make_experiment, make_feature_lists


def test_quantisation_error_is_below_a_quarter_db():
    x = np.linspace(-60.0, 0.0, 1001, dtype=np.float32)
    assert np.abs(dequantise(quantise(x)) - x).max() <= 60.0 / 255 / 2 + 1e-5
    assert dequantise(quantise(np.array([-200.0, 5.0]))).tolist() == [-60.0, 0.0]  # clipped


def test_chroma_model_embeds_pack_and_cqt_alike(tmp_path):
    data = make_feature_lists(tmp_path / "data")
    (data / "alignment.jsonl").write_text('{"utt_i": "f_0_0", "utt_j": "f_0_1", "pairs": []}\n')
    report = pack_features(data, tmp_path / "p.npz")
    assert report["recordings"] == 18 and not report["failed"]
    assert report["bytes"] < 0.1 * sum(f.stat().st_size for f in (data / "cqt_feat").iterdir())
    out = unpack_features(tmp_path / "p.npz", tmp_path / "un")
    assert out == {"recordings": 18, "lists": ["train.txt", "val.txt"]}
    assert (tmp_path / "un" / "alignment.jsonl").read_bytes() == (data / "alignment.jsonl").read_bytes()
    line = json.loads((tmp_path / "un" / "train.txt").read_text().splitlines()[0])
    cqt = np.load(data / "cqt_feat" / f"{line['utt']}.cqt.npy")
    chroma = np.load(tmp_path / "un" / line["feat"])
    assert chroma.shape == (len(cqt) // 3 * 3, 12) and line["feat_len"] == len(chroma)

    torch.manual_seed(0)
    model = CoverHunter(
        ModelConfig(
            front_end="chroma", d_model=32, n_layers=1, n_heads=2, ffn_dim=64, embed_dim=16, dropout=0.0
        )
    ).eval()
    a = torch.from_numpy(pool_frames(cqt, 3)).unsqueeze(0)  # what inference feeds
    b = torch.from_numpy(pool_frames(chroma, 3)).unsqueeze(0)  # what training on the pack feeds
    with torch.no_grad():
        ea, eb = model(a), model(b)
    assert torch.nn.functional.cosine_similarity(ea, eb).item() > 0.999
    other = torch.from_numpy(pool_frames(np.load(data / "cqt_feat" / "f_5_0.cqt.npy"), 3))
    with torch.no_grad():
        assert torch.nn.functional.cosine_similarity(ea, model(other.unsqueeze(0))).item() < 0.999


def test_pack_leaves_out_bad_files_and_says_which(tmp_path, capsys):
    data = make_feature_lists(tmp_path / "data")
    (data / "cqt_feat" / "f_1_2.cqt.npy").write_bytes(b"not numpy")
    (data / "cqt_feat" / "f_2_0.cqt.npy").unlink()
    code = main(["pack", str(data), str(tmp_path / "p.npz")], exit=False)
    assert code == 1
    err = capsys.readouterr().err
    assert "2 recording(s) left out" in err and "f_1_2" in err and "f_2_0" in err
    frames, offsets, meta, align = read_pack(tmp_path / "p.npz")
    assert len(offsets) == 17 and align is None
    assert {x["utt"] for x in meta["lists"]["train.txt"]}.isdisjoint({"f_1_2", "f_2_0"})


def test_unpack_refuses_a_file_that_is_not_a_pack(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a coverhunter chroma pack"):
        unpack_features(tmp_path / "x.npz", tmp_path / "out")


def test_training_on_an_unpacked_pack_runs_and_the_model_takes_cqt(tmp_path):
    data = make_feature_lists(tmp_path / "data")
    pack_features(data, tmp_path / "p.npz")
    unpack_features(tmp_path / "p.npz", tmp_path / "un")
    exp = make_experiment(tmp_path / "exp", tmp_path / "un", "")
    r = train(exp, overrides=["model.front_end=chroma"], verbose=False)
    assert r.steps == 6 and r.best_checkpoint is not None
    from coverhunter.checkpoint import load_model

    lm = load_model(exp)
    x = torch.from_numpy(pool_frames(np.load(data / "cqt_feat" / "f_0_0.cqt.npy"), 3))
    with torch.no_grad():
        assert lm.model.eval()(x[None, :60]).shape == (1, 16)
