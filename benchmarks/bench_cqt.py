"""CQT extraction speed: seconds of audio per second of compute, on one core.

    .venv/bin/python benchmarks/bench_cqt.py [--data demo/data] [--minutes 3]

Times coverhunter's CQT (the original's transform; float32 default and float64) against
librosa's and nnAudio's CQT of the same audio, measured in the same run, and prints a
table with ratios. Uses the demo corpus when present, else generated audio.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from coverhunter.audio import load_audio, peak_normalize
from coverhunter.config import FeatureConfig
from coverhunter.features import cqt, cqt_kernel

SR = 16000


def audio(data: Path, minutes: float) -> np.ndarray:
    wavs = sorted((data / "wav").rglob("*.wav")) if data.is_dir() else []
    parts, total = [], 0
    for w in wavs:
        y = load_audio(w)
        parts.append(y)
        total += len(y)
        if total >= minutes * 60 * SR:
            break
    if total < minutes * 60 * SR:  # no demo corpus: a noisy chord sequence
        rng = np.random.default_rng(0)
        t = np.arange(int(minutes * 60 * SR)) / SR
        f = 110 * 2 ** (rng.integers(0, 24, size=int(t[-1]) + 1)[t.astype(int)] / 12)
        parts = [np.sin(2 * np.pi * np.cumsum(f) / SR) + 0.01 * rng.standard_normal(len(t))]
    return peak_normalize(np.concatenate(parts)[: int(minutes * 60 * SR)])


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("demo/data"))
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    y = audio(a.data, a.minutes)
    seconds = len(y) / SR
    cqt_kernel()  # built once per process, like in extraction
    rows = [
        ("coverhunter float32 (default)", best_of(lambda: cqt(y))),
        ("coverhunter float64", best_of(lambda: cqt(y, FeatureConfig(precision="float64")))),
    ]
    try:
        import librosa

        # 96 bins from 32 Hz exceed Nyquist for librosa's filters; 90 bins is its maximum here
        rows.append(
            (
                "librosa.cqt (90 bins)",
                best_of(
                    lambda: librosa.cqt(y, sr=SR, hop_length=640, fmin=32.0, n_bins=90, bins_per_octave=12), 2
                ),
            )
        )
    except Exception as e:  # noqa: BLE001
        warnings.warn(f"librosa unavailable: {e}", stacklevel=1)
    try:
        from nnAudio.features import CQT1992v2

        layer = CQT1992v2(sr=SR, hop_length=640, fmin=32.0, n_bins=96, bins_per_octave=12, verbose=False)
        x = torch.from_numpy(y)[None]
        with torch.no_grad():
            rows.append(("nnAudio CQT1992v2", best_of(lambda: layer(x))))
    except Exception as e:  # noqa: BLE001
        warnings.warn(f"nnAudio unavailable: {e}", stacklevel=1)
    ref = rows[0][1]
    print(f"\nCQT of {seconds:.0f} s of audio, {a.threads} thread(s)\n")
    print(f"| {'method':32s} | {'seconds':>8s} | {'x real time':>11s} | {'time vs ours':>12s} |")
    print(f"|{'-' * 34}|{'-' * 10}|{'-' * 13}|{'-' * 14}|")
    for name, t in rows:
        print(f"| {name:32s} | {t:8.3f} | {seconds / t:11.0f} | {t / ref:12.2f} |")


if __name__ == "__main__":
    main()
