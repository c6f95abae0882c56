import json

import numpy as np
import pytest
import torch

from coverhunter.checkpoint import find_checkpoint, load_model, save_checkpoint
from coverhunter.config import Config, LossConfig, ModelConfig
from coverhunter.losses import CoverLoss, focal_loss, hard_triplet_loss, pairwise_distances
from coverhunter.model import CoverHunter, convert_original_state

from .conftest import reference_dir


def _original_model_dir(tmp_path):
    """The fixture checkpoint in the original's layout: pt_model/g_* + config/hparams.yaml."""
    ref = reference_dir()
    d = tmp_path / "orig"
    (d / "pt_model").mkdir(parents=True)
    (d / "config").mkdir()
    (d / "pt_model" / "g_00000000").write_bytes((ref / "checkpoints" / "g_00000000").read_bytes())
    (d / "config" / "hparams.yaml").write_text((ref / "config" / "hparams.yaml").read_text())
    return d


@pytest.mark.parametrize("layout", ["checkpoints", "pt_model"])
def test_original_checkpoint_embedding_parity(tmp_path, layout):
    ref = reference_dir()
    path = ref if layout == "checkpoints" else _original_model_dir(tmp_path)
    lm = load_model(path)
    assert lm.config.model.n_classes == 50 and lm.config.model.n_layers == 6
    for case in ("tone", "batch"):
        x = torch.from_numpy(np.load(ref / f"embed_input_{case}.npy"))
        with torch.no_grad():
            out = lm.model(x).numpy()
        np.testing.assert_allclose(out, np.load(ref / f"embed_output_{case}.npy"), atol=1e-5, rtol=0)


def test_original_training_loss_parity():
    ref = reference_dir()
    lm = load_model(ref)
    loss = CoverLoss(lm.config.loss, 128, 50)
    loss.load_state_dict({k: v for k, v in lm.heads.items() if not k.startswith("center.")})
    model = lm.model.train()
    for m in model.modules():  # the fixture's setting: BN in train mode, dropout off
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    loss.train()
    emb = model(torch.from_numpy(np.load(ref / "embed_input_batch.npy")))
    out = loss(emb, torch.tensor([0, 0, 1]))
    exp = json.loads((ref / "loss_expected.json").read_text())
    np.testing.assert_allclose(out.total.item(), exp["loss"], rtol=1e-5)
    np.testing.assert_allclose(out.ce, exp["ce_loss"], rtol=1e-5)
    np.testing.assert_allclose(out.triplet, exp["tri_loss"], rtol=1e-5)
    np.testing.assert_allclose(emb.detach().numpy(), np.load(ref / "loss_train_embed.npy"), atol=1e-5)
    np.testing.assert_allclose(out.logits.detach().numpy(), np.load(ref / "loss_train_logits.npy"), atol=1e-4)


def test_sizes_come_from_config():
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, ffn_dim=48, embed_dim=24, input_dim=96)
    m = CoverHunter(cfg).eval()
    assert len(m.blocks) == 2 and m(torch.randn(3, 50, 96)).shape == (3, 24)
    with pytest.raises(ValueError, match="divisible"):
        CoverHunter(ModelConfig(d_model=30, n_heads=4))


def test_batch_equals_single_items():
    m = CoverHunter(ModelConfig(d_model=32, n_layers=2, n_heads=2, ffn_dim=64)).eval()
    x = torch.randn(4, 60, 96) * 20 - 40
    with torch.no_grad():
        full = m(x)
        single = torch.cat([m(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(full, single, atol=1e-5, rtol=1e-5)


def test_unknown_original_key_is_an_error():
    with pytest.raises(ValueError, match="unrecognised key"):
        convert_original_state({"_something_new.weight": torch.zeros(1)})


def test_own_checkpoint_is_self_describing(tmp_path):
    cfg = Config(model=ModelConfig(d_model=32, n_layers=1, n_heads=2, ffn_dim=32, embed_dim=8))
    m = CoverHunter(cfg.model)
    loss = CoverLoss(cfg.loss, 8, 3)
    save_checkpoint(
        tmp_path / "checkpoints" / "best.pt", config=cfg, model=m, loss=loss, works=["a", "b", "c"]
    )
    assert find_checkpoint(tmp_path).name == "best.pt"
    lm = load_model(tmp_path)
    assert lm.config == cfg and lm.works == ["a", "b", "c"]
    x = torch.randn(2, 40, 96)
    with torch.no_grad():
        torch.testing.assert_close(lm.model(x), m.eval()(x))
    other = load_model(tmp_path)
    assert other.fingerprint == lm.fingerprint
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="bad.pt"):
        load_model(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nowhere")


def test_focal_loss_and_triplet_behaviour():
    logits = torch.tensor([[10.0, 0.0], [0.0, 10.0]])
    assert focal_loss(logits, torch.tensor([0, 1])) < 1e-6  # confident and right
    assert focal_loss(logits, torch.tensor([1, 0])) > 5  # confident and wrong
    # gamma = 0 is cross entropy
    z = torch.randn(5, 7)
    y = torch.randint(0, 7, (5,))
    torch.testing.assert_close(
        focal_loss(z, y, 0.0), torch.nn.functional.cross_entropy(z, y), atol=1e-6, rtol=1e-6
    )
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [5.0, 0.0], [5.0, 1.0]])
    d = pairwise_distances(x)
    assert d[0, 0] == 0 and torch.isclose(d[0, 1], torch.tensor(1.0))
    # well separated works: zero loss with margin 0.3; swapped labels: positive loss
    assert hard_triplet_loss(x, torch.tensor([0, 0, 1, 1])) == 0
    assert hard_triplet_loss(x, torch.tensor([0, 1, 0, 1])) > 1
    center = CoverLoss(LossConfig(center_weight=0.5), 2, 2)
    assert center(x, torch.tensor([0, 0, 1, 1])).center > 0


def test_chroma_front_end_ignores_octaves_and_follows_transposition():
    from coverhunter.model import fold_chroma

    g = torch.Generator().manual_seed(0)
    x = torch.full((1, 40, 96), -100.0)
    x[0, :, 24:60] = torch.rand(40, 36, generator=g) * -60  # content in octaves 2-4 only
    up_octave = torch.roll(x, 12, dims=2)
    up_semitone = torch.roll(x, 1, dims=2)
    c = fold_chroma(x)
    assert c.shape == (1, 40, 12) and float(c.max()) == 0.0 and float(c.min()) >= -60.0
    torch.testing.assert_close(fold_chroma(up_octave), c)
    torch.testing.assert_close(fold_chroma(up_semitone), torch.roll(c, 1, dims=2))
    # louder input, same chroma: each frame is relative to its strongest class
    torch.testing.assert_close(fold_chroma(x + 20 * (x > -100)), c, atol=1e-3, rtol=0)


def test_chroma_model_embeds_octave_shifted_input_alike():
    torch.manual_seed(0)
    m = CoverHunter(ModelConfig(front_end="chroma", n_layers=2)).eval()
    x = torch.full((2, 60, 96), -100.0)
    x[:, :, 24:60] = torch.rand(2, 60, 36) * -60
    with torch.no_grad():
        torch.testing.assert_close(m(torch.roll(x, 12, dims=2)), m(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="front_end"):
        ModelConfig(front_end="mfcc")
