"""The end-to-end demo: corpus -> features -> training -> evaluation -> index -> identify.

Every stage is resumable: a second run reuses the corpus, the features and the trained
model, and only repeats the (fast) evaluation and identification.
"""

from __future__ import annotations

import json
import logging
import time
from importlib import resources
from pathlib import Path

import torch

from .dataset import read_dataset, write_dataset

log = logging.getLogger(__name__)

DEMO_HPARAMS = """\
# feature extraction of the demo corpus (see docs/corpus.md: "Feature extraction")
aug_speed_mode: [1.0]
split: {train: 0.7, val: 0.1, test: 0.2, seed: 0}
"""


def demo_config_text() -> str:
    """The demo's training config (shipped inside the package)."""
    return resources.files("coverhunter").joinpath("configs/demo.yaml").read_text()


def _corpus(data_dir: Path, works: int, versions: int, seed: int) -> None:
    from .corpus import CORPUS_VERSION, make_demo_corpus

    params = {"works": works, "versions": versions, "seed": seed, "corpus_version": CORPUS_VERSION}
    stamp = data_dir / "demo_corpus.json"
    if (data_dir / "dataset.txt").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == params:
        log.info("demo corpus already in %s", data_dir)
        return
    make_demo_corpus(data_dir, works=works, versions=versions, seed=seed)
    stamp.write_text(json.dumps(params))


def _fit_batch(exp: Path, data_dir: Path) -> list[str]:
    """Smaller batches when a small demo corpus has fewer training works than a batch needs."""
    from .config import load_config

    cfg = load_config(exp / "config" / "hparams.yaml")
    n_works = len({t.work for t in read_dataset(data_dir / "train.txt")})
    m = cfg.data.m_per_class
    if n_works * m >= cfg.data.batch_size:
        return []
    log.info("only %d training works: batch_size %d", n_works, n_works * m)
    return [f"data.batch_size={n_works * m}"]


def _untrained_report(cfg, test):
    from .evaluate import evaluate_tracks
    from .model import CoverHunter

    torch.manual_seed(cfg.optim.seed)
    return evaluate_tracks(CoverHunter(cfg.model), test, None, cfg)[0]


def _identify_demo(out_dir: Path, exp: Path, data_dir: Path) -> list:
    """Index the test works without their last version, then identify those versions and
    one recording of a training work (absent from the catalogue)."""
    from .checkpoint import load_model
    from .identification import identify_all
    from .index import build_index

    test = read_dataset(data_dir / "test.txt")
    by_work: dict[str, list] = {}
    for t in test:
        by_work.setdefault(t.work, []).append(t)
    held_out = [ts[-1] for ts in by_work.values()]
    catalogue = [t for t in test if t not in held_out]
    write_dataset(catalogue, out_dir / "catalogue.txt")
    lm = load_model(exp)
    idx, _ = build_index(out_dir / "index", lm, dataset=out_dir / "catalogue.txt", overwrite=True)
    try:
        idx.calibrate(lm, read_dataset(data_dir / "val.txt"))
    except ValueError as e:  # a very small corpus: too few validation pairs
        log.warning("index not calibrated: %s", e)
    stranger = read_dataset(data_dir / "train.txt")[0]
    queries = [t.audio for t in held_out[:3]] + [stranger.audio]
    results = identify_all(idx, lm, queries, top=3)
    truth = {t.audio: t.work for t in held_out[:3]}
    truth[stranger.audio] = None
    return [(r, truth[r.query]) for r in results]


def run_demo(
    out_dir: str | Path,
    *,
    works: int = 60,
    versions: int = 4,
    seed: int = 0,
    max_epochs: int | None = None,
    compare_model: str | Path | None = None,
) -> dict:
    """Run every stage on the demo corpus in ``out_dir``; returns a summary dict.

    ``compare_model`` (e.g. the shipped ``models/default/model.pt``) is evaluated on the
    same held-out works, beside the model the demo trains and an untrained network.
    """
    from .evaluate import evaluate_tracks
    from .extract import extract_features
    from .index import format_result
    from .train import train

    out_dir = Path(out_dir)
    data_dir, exp = out_dir / "data", out_dir / "exp"
    data_dir.mkdir(parents=True, exist_ok=True)
    timings = {}
    t0 = time.perf_counter()
    _corpus(data_dir, works, versions, seed)
    timings["corpus_s"] = time.perf_counter() - t0
    if not (data_dir / "hparams.yaml").is_file():
        (data_dir / "hparams.yaml").write_text(DEMO_HPARAMS)
    t0 = time.perf_counter()
    report = extract_features(data_dir)
    timings["extract_s"] = time.perf_counter() - t0
    if not report.ok:
        raise RuntimeError(f"feature extraction failed for {len(report.failed)} recording(s)")

    (exp / "config").mkdir(parents=True, exist_ok=True)
    if not (exp / "config" / "hparams.yaml").is_file():
        (exp / "config" / "hparams.yaml").write_text(demo_config_text())
    overrides = _fit_batch(exp, data_dir)
    t0 = time.perf_counter()
    result = train(exp, max_epochs=max_epochs, overrides=overrides)
    timings["train_s"] = time.perf_counter() - t0

    from .checkpoint import load_model

    lm = load_model(exp)
    test = read_dataset(data_dir / "test.txt", check_features=True)
    trained = evaluate_tracks(lm.model, test, None, lm.config)[0]
    untrained = _untrained_report(lm.config, test)
    others = {}
    if compare_model is not None:
        cm = load_model(compare_model)
        others[str(compare_model)] = evaluate_tracks(cm.model, test, None, cm.config)[0]
    t0 = time.perf_counter()
    answers = _identify_demo(out_dir, exp, data_dir)
    timings["index_identify_s"] = time.perf_counter() - t0
    shown = [f"{format_result(r)}\n  truth: {truth or 'not in the catalogue'}" for r, truth in answers]
    full = read_dataset(data_dir / "full.txt")
    pick = ("map", "mr1", "hit_rate", "top10", "n_queries")
    summary = {
        "recordings": len(full),
        "works": len({t.work for t in full}),
        "audio_hours": round(sum(t.duration for t in full) / 3600, 3),
        "split_works": report.split_counts,
        "epochs": result.epochs_run,
        "steps": result.steps,
        "test_trained": {
            k: round(v, 4) if isinstance(v, float) else v for k, v in trained.to_dict().items() if k in pick
        },
        "test_untrained": {
            k: round(v, 4) if isinstance(v, float) else v for k, v in untrained.to_dict().items() if k in pick
        },
        **{
            f"test_{name}": {
                k: round(v, 4) if isinstance(v, float) else v for k, v in rep.to_dict().items() if k in pick
            }
            for name, rep in others.items()
        },
        "identify_top1_correct": sum(1 for r, t in answers if t and r.matches and r.matches[0].work == t),
        "model": str(lm.source),
        **{k: round(v, 1) for k, v in timings.items()},
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (out_dir / "identify.txt").write_text("\n\n".join(shown) + "\n")
    return {**summary, "identify_text": shown}
