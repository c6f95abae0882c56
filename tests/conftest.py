"""Shared fixtures: small synthetic recordings and dataset folders, made in tmp_path."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from coverhunter.chroma import chroma_path, save_chroma
from coverhunter.classical import chroma_from_cqt
from coverhunter.config import ExtractConfig
from coverhunter.extract import stored_views

_REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "reference"
SR = 16000


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (the benchmarks are scripts, not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    if str(path.parent) not in sys.path:  # as when run: the scripts import benchmarks/common.py
        sys.path.append(str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def reference_dir() -> Path:
    """Parity fixtures computed by the original code (``tests/fixtures/reference``, part of
    the repository; ``$COVERHUNTER_REFERENCE`` points elsewhere). Missing fixtures fail the
    test: a parity test never skips."""
    cand = Path(os.environ["COVERHUNTER_REFERENCE"]) if os.environ.get("COVERHUNTER_REFERENCE") else FIXTURES
    if not (cand / "manifest.json").is_file():
        pytest.fail(f"reference fixtures not found in {cand}")
    return cand


@pytest.fixture(autouse=True, scope="session")
def _private_embedding_cache(tmp_path_factory):
    """Embedding caches of the tests go to a temporary folder, never the user's cache."""
    old = os.environ.get("COVERHUNTER_CACHE")
    os.environ["COVERHUNTER_CACHE"] = str(tmp_path_factory.mktemp("embed_cache"))
    yield
    if old is None:
        os.environ.pop("COVERHUNTER_CACHE", None)
    else:
        os.environ["COVERHUNTER_CACHE"] = old


def melody(work: int, version: int, seconds: float = 6.0, sr: int = SR) -> np.ndarray:
    """A short harmonic melody; versions of a work share the notes, with another key and tempo."""
    rng = np.random.default_rng(work)
    notes = rng.integers(48, 72, size=12)
    vr = np.random.default_rng(1000 + 17 * work + version)
    shift = 0 if version == 0 else int(vr.integers(-3, 4))
    tempo = 1.0 if version == 0 else float(vr.uniform(0.85, 1.15))
    n = int(seconds * sr)
    t = np.arange(n) / sr
    idx = np.minimum((t * tempo * 2).astype(int) % len(notes), len(notes) - 1)
    f0 = 440.0 * 2 ** ((notes[idx] + shift - 69) / 12)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = sum(0.6**k * np.sin((k + 1) * phase) for k in range(4))
    y = y + 0.01 * vr.standard_normal(n)
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def make_dataset(
    root: Path, n_works: int = 4, n_versions: int = 3, seconds: float = 6.0, hparams: str | None = None
) -> Path:
    """Write ``root/dataset.txt`` and its wavs; returns root."""
    (root / "wav").mkdir(parents=True, exist_ok=True)
    lines = []
    for w in range(n_works):
        for v in range(n_versions):
            utt = f"t_{w:02d}_{v}"
            wav = root / "wav" / f"{utt}.wav"
            sf.write(wav, melody(w, v, seconds), SR, subtype="PCM_16")
            lines.append(
                {
                    "utt": utt,
                    "wav": f"wav/{utt}.wav",
                    "dur_s": seconds,
                    "song": f"work{w}",
                    "version": f"v{v}",
                }
            )
    (root / "dataset.txt").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    if hparams is not None:
        (root / "hparams.yaml").write_text(hparams)
    return root


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data")


def write_fine_chroma(feat_path: Path, cqt_db: np.ndarray) -> None:
    """Beside a synthetic CQT (no audio), the fine chroma views extract would store
    (``extract.stored_views``): here the CQT's own chroma (from C1 for ``c1``), so that
    versions of a work align as their CQTs do."""
    bass = chroma_from_cqt(cqt_db, lowest_octave=0, power=1.0)
    views = stored_views(ExtractConfig())
    save_chroma(chroma_path(feat_path), {v: bass if v == "c1" else chroma_from_cqt(cqt_db) for v in views})


def make_feature_lists(
    root: Path, n_works: int = 6, n_versions: int = 3, frames: int = 300, val_works: int = 2
) -> Path:
    """CQT-like .npy files (a work = a random pattern, versions = shifted and noisy copies)
    and ``train.txt`` / ``val.txt`` lists, without any audio."""
    feat_dir = root / "cqt_feat"
    feat_dir.mkdir(parents=True, exist_ok=True)
    lists = {"train": [], "val": []}
    for w in range(n_works):
        base = np.random.default_rng(w).uniform(-80, 0, size=(frames, 96)).astype(np.float32)
        split = "val" if w >= n_works - val_works else "train"
        for v in range(n_versions):
            rng = np.random.default_rng(100 * w + v)
            x = np.roll(base, int(rng.integers(0, frames)), axis=0)
            x = (x + rng.normal(0, 5, x.shape)).astype(np.float32)
            utt = f"f_{w}_{v}"
            np.save(feat_dir / f"{utt}.cqt.npy", x - x.max())
            write_fine_chroma(feat_dir / f"{utt}.cqt.npy", x - x.max())
            lists[split].append(
                {
                    "utt": utt,
                    "wav": f"wav/{utt}.wav",
                    "dur_s": frames / 25,
                    "song": f"work{w}",
                    "version": str(v),
                    "feat": f"cqt_feat/{utt}.cqt.npy",
                    "feat_len": frames,
                }
            )
    for split, lines in lists.items():
        (root / f"{split}.txt").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return root


TINY_TRAIN_CONFIG = """\
data:
  train_path: {data}/train.txt
  val_path: {data}/val.txt
  chunk_frame: [40, 30]
  batch_size: 4
  m_per_class: 2
model: {{d_model: 32, n_layers: 2, n_heads: 2, ffn_dim: 64, embed_dim: 16, dropout: 0.0}}
optim: {{max_epochs: 2, steps_per_epoch: 3, warmup_steps: 2, patience: 0, device: cpu}}
eval: {{chunk_s: 4.8, hop_s: 2.4, batch_size: 8}}
"""


def make_experiment(root: Path, data: Path, extra: str = "") -> Path:
    (root / "config").mkdir(parents=True, exist_ok=True)
    (root / "config" / "hparams.yaml").write_text(TINY_TRAIN_CONFIG.format(data=data) + extra)
    return root
