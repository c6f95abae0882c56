"""Training survives kills and re-runs, says what it does, and its CLI parses the
documented forms."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coverhunter import cli
from coverhunter.checkpoint import load_model
from coverhunter.train import train
from coverhunter.trainer import TrainResult

from .conftest import make_experiment, make_feature_lists

ROOT = Path(__file__).resolve().parents[1]

# SIGKILL while best.pt is being written: its temporary file is half written, the rename
# never happens. Runs in a child process so the kill is real.
_KILL_AT_BEST = """
import os, signal, sys
import coverhunter.checkpoint as ck
real = ck.atomic_torch_save
def save(obj, path):
    if os.path.basename(str(path)) == "best.pt":
        os.makedirs(os.path.dirname(str(path)), exist_ok=True)
        tmp = os.path.join(os.path.dirname(str(path)), ".best.pt.%d.dead.tmp" % os.getpid())
        open(tmp, "wb").write(b"half a checkpoint")
        os.kill(os.getpid(), signal.SIGKILL)
    real(obj, path)
ck.atomic_torch_save = save
from coverhunter.train import train
train(sys.argv[1], overrides=["optim.max_epochs=1"], verbose=False)
"""


def _exp(tmp_path, extra: str = "") -> Path:
    data = make_feature_lists(tmp_path / "data")
    return make_experiment(tmp_path / "exp", data, extra)


# -- item 3 (kill) and 15 (leftover temporary file) ------------------------------------------


def test_kill_while_best_is_written_then_resume_writes_best(tmp_path):
    exp = _exp(tmp_path)
    r = subprocess.run(
        [sys.executable, "-c", _KILL_AT_BEST, str(exp)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == -9, r.stderr
    assert list((exp / "checkpoints").glob("*.tmp"))  # the kill's leftover
    train(exp, overrides=["optim.max_epochs=1"], verbose=False)  # the re-run
    assert (exp / "checkpoints" / "best.pt").is_file()
    assert load_model(exp).source.name == "best.pt"
    assert not list((exp / "checkpoints").glob("*.tmp"))  # removed by the next run


def test_missing_best_of_an_older_kill_is_restored_on_resume(tmp_path):
    exp = _exp(tmp_path)
    train(exp, overrides=["optim.max_epochs=1"], verbose=False)
    (exp / "checkpoints" / "best.pt").unlink()  # last.pt records epoch 0 as the best
    train(exp, overrides=["optim.max_epochs=1"], verbose=False)
    best, last = (exp / "checkpoints" / n for n in ("best.pt", "last.pt"))
    assert best.read_bytes() == last.read_bytes()


def test_checkpoints_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        exp = _exp(tmp_path)
        train(exp, overrides=["optim.max_epochs=1"], verbose=False)
    finally:
        os.umask(old)
    for p in [exp / "checkpoints" / "last.pt", exp / "checkpoints" / "best.pt", exp / "history.json"]:
        assert p.stat().st_mode & 0o777 == 0o644, p


def test_rerun_of_an_early_stopped_experiment_does_not_train(tmp_path):
    exp = _exp(tmp_path)
    stop = ["optim.learning_rate=0.0", "optim.min_lr=0.0", "optim.patience=1", "optim.max_epochs=5"]
    first = train(exp, overrides=stop, verbose=False)
    assert first.epochs_run == 2
    again = train(exp, overrides=stop, verbose=False)
    assert again.epochs_run == 2 and again.steps == first.steps
    assert len(json.loads((exp / "history.json").read_text())) == 2


def test_resume_refuses_a_changed_schedule(tmp_path):
    exp = _exp(tmp_path)
    train(exp, max_epochs=1, verbose=False)  # interrupted after 1 of 2 epochs
    with pytest.raises(ValueError, match="max_epochs: 2 -> 4"):
        train(exp, overrides=["optim.max_epochs=4"], verbose=False)
    assert train(exp, verbose=False).epochs_run == 2  # same schedule: resumes


def test_coarse_to_fine_realigns_when_the_coarse_model_changes(tmp_path, monkeypatch):
    import coverhunter.align as align
    import coverhunter.train as tr

    exp = _exp(tmp_path)
    ckpt = tmp_path / "coarse_best.pt"
    ckpt.write_bytes(b"coarse model A")
    monkeypatch.setattr(tr, "train", lambda d, **k: TrainResult(Path(d), ckpt, ckpt, 1, 1, 0.5, "val_map"))
    calls = []

    def fake_alignment(model, data, out, **k):
        calls.append(Path(model).read_bytes())
        Path(out).write_text("{}\n")

    monkeypatch.setattr(align, "run_alignment", fake_alignment)
    for _ in range(2):
        tr.coarse_to_fine(exp, coarse_epochs=1, fine_epochs=1, verbose=False)
    assert calls == [b"coarse model A"]  # the second run reuses the alignment
    ckpt.write_bytes(b"coarse model B")  # retrained in place: same path, new content
    tr.coarse_to_fine(exp, coarse_epochs=1, fine_epochs=1, verbose=False)
    assert calls == [b"coarse model A", b"coarse model B"]


def test_damaged_last_checkpoint_is_one_line(tmp_path, capsys):
    exp = _exp(tmp_path)
    (exp / "checkpoints").mkdir()
    (exp / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04 not really a checkpoint")
    assert cli.main(["train", str(exp)], exit=False) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(exp / "checkpoints" / "last.pt") in err
    assert "damaged" in err


def test_one_v_shows_debug(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", root.level)
    args = cli._parse(["-v", "extract", "d"])
    cli.setup_logging(args.verbose)
    assert root.level == logging.DEBUG
    cli.setup_logging(0)
    assert root.level == logging.INFO


def test_seed_first_eval_on_a_fresh_experiment_evaluates_then_trains(tmp_path):
    exp = _exp(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "tools.train", str(exp), "--first_eval"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "first eval" in r.stderr and (exp / "checkpoints" / "best.pt").is_file()
    assert len(json.loads((exp / "history.json").read_text())) == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "E", "--config", "c.yaml", "data.batch_size=32", "optim.max_epochs=3"],
        ["train", "E", "data.batch_size=32", "--config", "c.yaml", "optim.max_epochs=3"],
        ["train", "--config", "c.yaml", "E", "data.batch_size=32", "optim.max_epochs=3"],
    ],
)
def test_overrides_in_any_order(argv):
    args = cli._parse(argv)
    assert args.exp_dir == Path("E") and args.config == Path("c.yaml")
    assert args.set == ["data.batch_size=32", "optim.max_epochs=3"]


def test_overrides_in_any_order_for_coarse_to_fine_and_unknown_options_still_fail():
    args = cli._parse(["coarse-to-fine", "E", "--coarse-epochs", "1", "a.b=1", "--fine-epochs", "2"])
    assert args.set == ["a.b=1"] and args.fine_epochs == 2
    with pytest.raises(SystemExit):
        cli._parse(["train", "E", "--no-such-option"])
    with pytest.raises(SystemExit):
        cli._parse(["extract", "d", "a.b=1"])


def test_damaged_best_checkpoint_is_one_line(tmp_path, capsys):
    exp = _exp(tmp_path)
    (exp / "checkpoints").mkdir()
    (exp / "checkpoints" / "best.pt").write_bytes(b"PK\x03\x04 truncated")
    assert cli.main(["evaluate", str(exp), str(tmp_path / "data" / "val.txt")], exit=False) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(exp / "checkpoints" / "best.pt") in err


def test_damaged_last_checkpoint_message_never_suggests_an_unsafe_load(tmp_path):
    """Torch's hint that ``weights_only=False`` "will likely succeed" is
    not repeated (it runs whatever code the file holds)."""
    import torch

    from coverhunter.config import load_config
    from coverhunter.trainer import Trainer

    exp = make_experiment(tmp_path / "exp", make_feature_lists(tmp_path / "data"))
    (exp / "checkpoints").mkdir()
    (exp / "checkpoints" / "last.pt").write_bytes(b"garbage" * 100)
    with pytest.raises(ValueError, match="damaged checkpoint, cannot resume") as e:
        Trainer(exp, load_config(exp / "config" / "hparams.yaml"), torch.device("cpu"), verbose=False)
    assert "weights_only" not in str(e.value) and "likely succeed" not in str(e.value)
