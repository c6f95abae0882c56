"""Run by torchrun in test_ddp: train EXP_DIR on this rank in float64, save this rank's parameters.

Both sides of test_ddp's comparison train in float64 (:func:`float64_trainer`): DDP sums the
two ranks' gradients in another order than one process does, and in float32 that rounding
noise, blown up by Adam's normalisation for elements whose gradient is nearly zero, moved
single elements by up to ~lr (a tolerance that held on one machine failed on another). In
float64 the noise is ~1e-16 of a gradient, far below anything the test tolerates.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from coverhunter.config import load_config
from coverhunter.trainer import Trainer


class Float64Chunks(Dataset):
    """A :class:`coverhunter.data.ChunkDataset` whose chunks come as float64 tensors."""

    def __init__(self, chunks: Dataset):
        self.chunks = chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, req):
        x, label = self.chunks[req]
        return x.double(), label


def float64_trainer(exp: Path) -> Trainer:
    """The Trainer of ``exp`` with float64 weights and inputs and no validation (call with
    ``torch.set_default_dtype(torch.float64)`` in force).

    Validation embeds float32 features; the early-stopping monitor falls back to the
    training loss, which does not change what the steps compute.
    """
    trainer = Trainer(exp, load_config(exp / "config" / "hparams.yaml"), torch.device("cpu"), verbose=False)
    trainer.dataset = Float64Chunks(trainer.dataset)
    trainer.val_tracks = []
    return trainer


def main(exp: Path) -> None:
    torch.set_default_dtype(torch.float64)
    trainer = float64_trainer(exp)
    trainer.run()
    torch.save(
        {k: v.detach().clone() for k, v in trainer.module.module.named_parameters()},
        exp / f"rank{trainer.rank}.pt",
    )
    # leave together: a rank that tears down its process group while the other still talks
    # to it can abort ("terminate called without an active exception")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
