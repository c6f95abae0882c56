"""DDP with two gloo processes really synchronises gradients."""

import socket
import subprocess
import sys
from pathlib import Path

import torch

from coverhunter.data import WorkBatchSampler, collate

from .conftest import make_experiment, make_feature_lists
from .ddp_worker import float64_trainer

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args, cwd=ROOT):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        *args,
    ]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    import os

    env = {**os.environ, **env}
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def test_ddp_ranks_agree_with_each_other_and_with_one_process(tmp_path):
    data = make_feature_lists(tmp_path / "data", n_works=8, val_works=2)
    exp = make_experiment(tmp_path / "ddp", data)
    _torchrun([str(ROOT / "tests" / "ddp_worker.py"), str(exp)])
    r0 = torch.load(exp / "rank0.pt", weights_only=True)
    r1 = torch.load(exp / "rank1.pt", weights_only=True)

    # one process, same config, each step on the union of the two ranks' batches, in
    # float64 as the workers train (see ddp_worker)
    single = make_experiment(tmp_path / "single", data)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        t = float64_trainer(single)
        cfg = t.cfg
        initial = {k: v.detach().clone() for k, v in t.model.named_parameters()}
        lrs = []
        for epoch in range(cfg.optim.max_epochs):
            t.epoch = epoch
            samplers = [
                WorkBatchSampler(t.labels, cfg.data, cfg.optim.seed, epoch, t.steps_per_epoch, rank, 2)
                for rank in (0, 1)
            ]
            gens = [t.augment_rng(rank) for rank in (0, 1)]
            for b0, b1 in zip(*samplers):
                shards = [(*collate([t.dataset[r] for r in b]), g) for b, g in zip((b0, b1), gens)]
                lrs.append(t.train_step(shards)["lr"])
    finally:
        torch.set_default_dtype(default_dtype)
    assert r0[next(iter(r0))].dtype == torch.float64
    change = max((initial[k] - v.detach()).abs().max().item() for k, v in t.model.named_parameters())
    assert change > 1e-3  # the weights did move
    # Adam moves an element by about lr per step at most, so the runs moved each element by
    # at most ~sum(lrs); two float64 runs that differ only in the order their gradients are
    # summed agree to far better than a millionth of that (measured: 4e-12 at worst, for
    # elements whose exact gradient is 0, against a tolerance of ~5e-9)
    tol = 1e-6 * sum(lrs)
    for k, v in t.model.named_parameters():
        key = f"model.{k}"
        torch.testing.assert_close(r0[key], r1[key], atol=0, rtol=0)  # ranks are identical
        torch.testing.assert_close(r0[key], v.detach(), atol=tol, rtol=0)  # == one process


def test_torchrun_seed_command(tmp_path):
    data = make_feature_lists(tmp_path / "data", n_works=8, val_works=2)
    exp = make_experiment(tmp_path / "exp", data, "\n")
    _torchrun(["-m", "tools.train", str(exp), "--max_epochs", "1"])
    assert (exp / "checkpoints" / "last.pt").is_file()
    assert len(list((exp / "logs").glob("events.out.tfevents.*"))) == 1  # rank 0 only
