import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from coverhunter.checkpoint import load_model
from coverhunter.train import train
from coverhunter.trainer import lr_at

from .conftest import make_experiment, make_feature_lists

ROOT = Path(__file__).resolve().parents[1]


def _params(path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state["model"], state


def test_train_writes_self_describing_checkpoints(tmp_path):
    data = make_feature_lists(tmp_path / "data")
    exp = make_experiment(tmp_path / "exp", data)
    r = train(exp, verbose=False)
    assert r.epochs_run == 2 and r.steps == 6 and r.monitor == "val_map"
    _, state = _params(exp / "checkpoints" / "last.pt")
    assert {"config", "model", "loss", "optimizer", "step", "epoch", "rng", "works"} <= set(state)
    assert state["step"] == 6 and state["epoch"] == 2 and len(state["works"]) == 4
    hist = json.loads((exp / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [0, 1] and "val_map" in hist[0] and "train_loss" in hist[0]
    assert list((exp / "logs").glob("events.out.tfevents.*"))  # TensorBoard scalars
    lm = load_model(exp)  # best.pt, rebuilt from its own config
    assert lm.config.model.d_model == 32 and lm.works == state["works"]


def test_resume_is_exact_and_runs_repeat(tmp_path):
    data = make_feature_lists(tmp_path / "data")
    extra = "loss: {center_weight: 0.01}\n"
    straight = make_experiment(tmp_path / "a", data, extra)
    train(straight, overrides=["model.dropout=0.1"], verbose=False)
    again = make_experiment(tmp_path / "b", data, extra)
    train(again, overrides=["model.dropout=0.1"], verbose=False)
    split = make_experiment(tmp_path / "c", data, extra)
    train(split, overrides=["model.dropout=0.1"], max_epochs=1, verbose=False)  # "interrupted"
    r = train(split, overrides=["model.dropout=0.1"], verbose=False)  # resumes at epoch 1
    assert r.epochs_run == 2
    a, _ = _params(straight / "checkpoints" / "last.pt")
    b, _ = _params(again / "checkpoints" / "last.pt")
    c, _ = _params(split / "checkpoints" / "last.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k  # same seed, same weights
        assert torch.equal(a[k], c[k]), k  # resumed == uninterrupted


def test_early_stopping(tmp_path):
    data = make_feature_lists(tmp_path / "data")
    exp = make_experiment(tmp_path / "exp", data)
    r = train(
        exp,
        overrides=["optim.learning_rate=0.0", "optim.min_lr=0.0", "optim.patience=1", "optim.max_epochs=5"],
        verbose=False,
    )
    assert r.epochs_run == 2  # epoch 1 did not improve on epoch 0


def test_lr_schedule_warms_up_and_decays():
    from coverhunter.config import OptimConfig

    o = OptimConfig(learning_rate=1e-3, min_lr=1e-4, warmup_steps=10)
    lrs = [lr_at(s, o, 100) for s in range(120)]
    assert lrs[0] == 1e-4 and abs(lrs[9] - 1e-3) < 1e-12
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # non-increasing after warm-up
    assert abs(lrs[100] - 1e-4) < 1e-12 and lrs[119] == lrs[100]


def test_seed_train_command_with_original_hparams(tmp_path):
    data = make_feature_lists(tmp_path / "data")
    exp = tmp_path / "exp"
    (exp / "config").mkdir(parents=True)
    (exp / "config" / "hparams.yaml").write_text(f"""
train_path: {data}/train.txt
train_sample_path: {data}/train.txt
dev_path: {data}/val.txt
chunk_frame: [40, 30]
mean_size: 3
m_per_class: 2
batch_size: 4
spec_augmentation:
  random_erase: {{prob: 0.5, erase_num: 4}}
  roll_pitch: {{prob: 0.5, shift_num: 12}}
learning_rate: 0.001
adam_b1: 0.8
adam_b2: 0.99
lr_decay: 0.9975
min_lr: 0.0001
input_dim: 96
embed_dim: 128
encoder: {{output_dims: 32, num_blocks: 1, attention_dim: 64}}
ce: {{output_dims: 4, weight: 1.0, gamma: 2}}
triplet: {{margin: 0.3, weight: 0.1}}
center: {{weight: 0.0}}
chunk_s: 4.8
""")
    cmd = [sys.executable, "-m", "tools.train", str(exp), "--max_epochs", "1", "--device", "cpu"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (exp / "checkpoints" / "last.pt").is_file()
    p = subprocess.run(cmd[:4] + ["--only_eval"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "val_map" in p.stdout


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_time_budget_shortens_the_schedule_and_survives_a_resume(tmp_path, clock):
    data = make_feature_lists(tmp_path / "data")
    exp = make_experiment(tmp_path / "exp", data)
    # a budget of about one epoch: the schedule of 20 epochs shrinks after the first
    budget = ["optim.max_epochs=20", "optim.time_budget_s=0.001", f"optim.budget_clock={clock}"]
    r = train(exp, overrides=budget, verbose=False)
    assert r.epochs_run == 1
    state = torch.load(exp / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert state["trainer"]["planned_epochs"] == 1 and state["trainer"]["train_seconds"] > 0
    r = train(exp, overrides=budget, verbose=False)
    assert r.epochs_run == 1  # the resumed run keeps the fitted plan: nothing left to do
    # the cosine decay ends at the planned end, not at max_epochs
    from coverhunter.config import OptimConfig

    o = OptimConfig(warmup_steps=2, max_epochs=20, steps_per_epoch=3)
    assert lr_at(3, o, 1 * 3) == pytest.approx(o.min_lr)


def test_an_unknown_budget_clock_is_refused():
    from coverhunter.config import OptimConfig

    with pytest.raises(ValueError, match="budget_clock"):
        OptimConfig(budget_clock="gpu")


def test_progress_bar_in_a_log_file_is_not_redrawn_every_step(tmp_path, capsys):
    # stderr captured = not a terminal: the bar is drawn at its 30 s pace, not at every
    # step's loss (which printed one stale "0/N" line per step into log files)
    data = make_feature_lists(tmp_path / "data")
    exp = make_experiment(tmp_path / "exp", data)
    train(exp, verbose=True)
    err = capsys.readouterr().err
    for epoch in (0, 1):
        draws = err.count(f"epoch {epoch}:")
        assert 1 <= draws <= 2, err
