"""Training and embedding throughput of the default model config on this machine.

    .venv/bin/python benchmarks/bench_train.py [--threads N] [--steps 20]

Prints training chunks per second (forward + backward + AdamW step, batch 16) for the
three default chunk lengths, embedding throughput in seconds of audio per second, and
peak resident memory, beside the same measurements of the original's configuration
size (the reference in the same run is the model at its original 135 s chunks).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from coverhunter.config import LossConfig, ModelConfig
from coverhunter.losses import CoverLoss
from coverhunter.model import CoverHunter

FPS_POOLED = 25 / 3  # pooled frames per second of audio


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_rate(frames: int, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    model = CoverHunter(ModelConfig())
    loss = CoverLoss(LossConfig(), 128, 1000)
    opt = torch.optim.AdamW(list(model.parameters()) + list(loss.parameters()), lr=1e-3)
    x = torch.randn(batch, frames, 96) * 20 - 50
    y = torch.arange(batch) // 4
    for i in range(steps + 2):
        if i == 2:  # two warm-up steps
            t0 = time.perf_counter()
        out = loss(model(x), y)
        opt.zero_grad()
        out.total.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t0)


@torch.no_grad()
def embed_rate(frames: int, batch: int, reps: int) -> float:
    model = CoverHunter(ModelConfig()).eval()
    x = torch.randn(batch, frames, 96) * 20 - 50
    model(x)
    t0 = time.perf_counter()
    for _ in range(reps):
        model(x)
    return batch * reps * frames / FPS_POOLED / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"\ntorch {torch.__version__}, {a.threads} thread(s), CPU\n")
    print("| workload | chunk (s) | rate | unit |")
    print("|---|---|---|---|")
    rows = []
    for frames, label in ((1125, "original 135 s"), (125, "demo 15 s"), (100, "demo 12 s"), (75, "demo 9 s")):
        r = train_rate(frames, 16, a.steps if frames < 500 else max(2, a.steps // 5))
        rows.append(("train", frames, r))
        print(f"| train step, batch 16 ({label}) | {frames / FPS_POOLED:.0f} | {r:.1f} | chunks/s |")
    for frames, label in ((1125, "135 s windows"), (125, "15 s windows")):
        r = embed_rate(frames, 32, 3)
        print(f"| embed, batch 32 ({label}) | {frames / FPS_POOLED:.0f} | {r:.0f} | s of audio / s |")
    print(f"\npeak resident memory: {peak_mb():.0f} MB")
    base = rows[0][2]
    print(
        "train speed relative to the 135 s chunks: "
        + ", ".join(f"{f / FPS_POOLED:.0f} s: {r / base:.1f}x" for _, f, r in rows)
    )


if __name__ == "__main__":
    main()
