"""Coarse-only vs coarse-to-fine training at the same total budget, over several seeds.

    .venv/bin/python benchmarks/bench_coarse_to_fine.py [--data demo/data] [--epochs 20] [--seeds 0 1 2]
    .venv/bin/python benchmarks/bench_coarse_to_fine.py --align-only MODEL --list DATA/val.txt
    .venv/bin/python benchmarks/bench_coarse_to_fine.py --fine-from CKPT --data CORPUS \
        --val CORPUS/val.txt --test HELD_OUT/full.txt [--steps 1000] [--seeds 0 1 2]

Both arms use the demo training config with ``--epochs`` epochs in total: coarse-only
trains all of them on random crops; coarse-to-fine trains half on random crops, aligns
the training versions with that model, and trains the other half on aligned chunks.
Prints MAP, MR1 and hit rate on the held-out test works (mean and standard deviation
over seeds), and how accurate each alignment was: the demo corpus records how every
version was made (sections, tempo), so the true source-time of both chunks of a match is
known; a match is right when they agree within 1.5 s (chance: random pairs of times).
Runs in --out (default runs/c2f); finished runs are reused.

``--fine-from`` is the fine stage alone on a rendered corpus, from a trained (coarse)
checkpoint: per seed, ``--steps`` more steps on CORPUS/train.txt with the corpus's *exact*
alignment (``CORPUS/alignment.jsonl``, half of the works per batch on aligned chunks),
against a control that is the same run on random crops only. Both start from the same
weights with the same schedule and seed; the table gives MAP on ``--val`` (the last epoch's
validation) and on ``--test`` (the last checkpoint), mean and standard deviation over seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from coverhunter.checkpoint import load_model
from coverhunter.config import load_config, to_dict
from coverhunter.corpus.align import Performance
from coverhunter.dataset import read_dataset
from coverhunter.demo import demo_config_text
from coverhunter.evaluate import evaluate_tracks
from coverhunter.train import coarse_to_fine, train


def _base(data: Path, seed: int, exp: Path) -> dict:
    import yaml

    cfg = to_dict(load_config(yaml.safe_load(demo_config_text()), [f"optim.seed={seed}", "optim.patience=0"]))
    cfg["data"]["train_path"] = str((data / "train.txt").resolve())
    cfg["data"]["val_path"] = str((data / "val.txt").resolve())
    (exp / "config").mkdir(parents=True, exist_ok=True)
    (exp / "config" / "hparams.yaml").write_text(yaml.safe_dump(cfg))
    return cfg


def _test(ckpt: Path, data: Path) -> dict:
    """MAP, MR1 and hit rate of a checkpoint on ``data`` (a list file, or a corpus folder's
    ``test.txt``), all against all."""
    lst = data if data.is_file() else data / "test.txt"
    lm = load_model(ckpt)
    rep, _ = evaluate_tracks(lm.model, read_dataset(lst, check_features=True), None, lm.config)
    return {"map": rep.map, "mr1": rep.mr1, "hit_rate": rep.hit_rate}


def mean_sd(values, digits: int = 3) -> str:
    """ "mean ± sd" over seeds (sample standard deviation; 0 for a single seed)."""
    v = np.asarray(values, np.float64)
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1) if len(v) > 1 else 0:.{digits}f}"


def fine_config(ckpt: Path, data: Path, val: Path, *, seed: int, steps: int, lr: float, exact: bool) -> dict:
    """The config of one fine-stage arm: the checkpoint's own, on ``data``'s training list,
    ``steps`` steps at a learning rate falling from ``lr``; ``exact`` adds the corpus's
    alignment for half of the works of each batch."""
    cfg = to_dict(load_model(ckpt).config)
    per = min(int(cfg["optim"]["steps_per_epoch"] or steps), steps)
    cfg["data"].update(
        train_path=str((data / "train.txt").resolve()),
        val_path=str(val.resolve()),
        align_path=str((data / "alignment.jsonl").resolve()) if exact else "",
        aligned_prob=0.5 if exact else 1.0,
    )
    cfg["optim"].update(
        seed=seed,
        learning_rate=lr,
        warmup_steps=min(100, steps // 10),
        steps_per_epoch=per,
        max_epochs=-(-steps // per),
        patience=0,
    )
    return cfg


def fine_from(
    ckpt: Path, data: Path, val: Path, test: Path, seeds: list[int], steps: int, lr: float, out: Path
) -> None:
    """Fine stage with the exact alignment vs random crops from ``ckpt``, over seeds."""
    if not (data / "alignment.jsonl").is_file():
        raise SystemExit(f"{data}: no alignment.jsonl (a corpus written by make-corpus has one)")
    rows = {"fine, exact alignment": [], "control, random crops": []}
    start = {"val": _test(ckpt, val)["map"], "test": _test(ckpt, test)["map"]}
    for seed in seeds:
        for name, exact in (("fine, exact alignment", True), ("control, random crops", False)):
            exp = out / f"{'fine' if exact else 'ctrl'}-{seed}"
            cfg = fine_config(ckpt, data, val, seed=seed, steps=steps, lr=lr, exact=exact)
            r = train(exp, config=load_config(cfg), init_from=ckpt, verbose=False)
            rows[name].append(
                {"val": r.history[-1].get("val_map"), "test": _test(r.last_checkpoint, test)["map"]}
            )
            print(f"seed {seed}, {name}: " + json.dumps(rows[name][-1]), flush=True)
    print(
        f"\nfine stage from {ckpt}: {steps} steps on {data / 'train.txt'}, {len(seeds)} seeds "
        f"(start: val MAP {start['val']:.4f}, test MAP {start['test']:.4f})\n"
    )
    print(f"| training | val MAP ({val.name}) | test MAP ({test}) |")
    print("|---|---|---|")
    for name, rs in rows.items():
        print(f"| {name} | " + " | ".join(mean_sd([r[k] for r in rs], 4) for k in ("val", "test")) + " |")


def alignment_accuracy(align_file: Path, list_file: Path, tol: float = 1.5) -> tuple[float, float]:
    """Share of matches within ``tol`` s of the true correspondence, and the chance level.

    The truth comes from each version's plan (sections, tempo map), read by
    :class:`coverhunter.corpus.align.Performance`: both chunk centres of a match are mapped
    to score time. Chance: random pairs of times of the same two versions.
    """
    tracks = {t.track_id: t for t in read_dataset(list_file)}
    rng = np.random.default_rng(0)
    hits, chance = [], []
    for line in align_file.read_text().splitlines():
        r = json.loads(line)
        ti, tj = tracks[r["utt_i"]], tracks[r["utt_j"]]
        pi, pj = Performance(json.loads(ti.version)), Performance(json.loads(tj.version))
        half = r["chunk_s"] / 2
        centres = np.array([[a + half, b + half] for a, b, *_ in r["pairs"]]).reshape(-1, 2)
        si, sj = pi.score_time(centres[:, 0]), pj.score_time(centres[:, 1])
        hits.extend(np.nan_to_num(np.abs(si - sj), nan=np.inf) < tol)
        ri = pi.score_time(rng.uniform(0, ti.duration, 5))
        rj = pj.score_time(rng.uniform(0, tj.duration, 5))
        chance.extend(np.nan_to_num(np.abs(ri - rj), nan=np.inf) < tol)
    return float(np.mean(hits)), float(np.mean(chance))


def align_only(model: Path, list_file: Path, out: Path) -> None:
    """Align the versions of a corpus list with a trained model and score the matches."""
    from coverhunter.align import run_alignment

    out.mkdir(parents=True, exist_ok=True)
    path = out / f"align-{model.stem}-{list_file.stem}.jsonl"
    run_alignment(model, list_file, path, verbose=True)
    right, chance = alignment_accuracy(path, list_file)
    print(
        f"\nalignment of {list_file} by {model}: {right:.1%} of matches within 1.5 s of the "
        f"true passage (random pairs of times: {chance:.1%})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("demo/data"))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("runs/c2f"))
    ap.add_argument(
        "--align-only",
        type=Path,
        metavar="MODEL",
        default=None,
        help="no training: align the versions of --list with MODEL and score the matches",
    )
    ap.add_argument("--list", type=Path, default=None, help="corpus list file for --align-only")
    ap.add_argument(
        "--fine-from",
        type=Path,
        metavar="CKPT",
        default=None,
        help="fine stage only, from this checkpoint: exact alignment vs random crops",
    )
    ap.add_argument("--val", type=Path, default=None, help="validation list for --fine-from")
    ap.add_argument("--test", type=Path, default=None, help="held-out list for --fine-from")
    ap.add_argument("--steps", type=int, default=1000, help="--fine-from: steps per arm")
    ap.add_argument("--lr", type=float, default=2e-4, help="--fine-from: peak learning rate")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if a.fine_from:
        if a.val is None or a.test is None:
            ap.error("--fine-from needs --val and --test (list files with features)")
        fine_from(a.fine_from, a.data, a.val, a.test, a.seeds, a.steps, a.lr, a.out)
        return
    if a.align_only:
        if a.list is None:
            ap.error("--align-only needs --list (a corpus list file with features)")
        align_only(a.align_only, a.list, a.out)
        return
    rows = {"coarse only": [], "coarse-to-fine": []}
    acc = []
    for seed in a.seeds:
        exp = a.out / f"coarse-{seed}"
        cfg = _base(a.data, seed, exp)
        r = train(exp, config=load_config(cfg, [f"optim.max_epochs={a.epochs}"]), verbose=False)
        rows["coarse only"].append(_test(r.best_checkpoint, a.data))
        exp = a.out / f"c2f-{seed}"
        _base(a.data, seed, exp)
        half = a.epochs // 2
        r = coarse_to_fine(exp, coarse_epochs=half, fine_epochs=a.epochs - half, verbose=False)
        rows["coarse-to-fine"].append(_test(r.best_checkpoint, a.data))
        try:
            acc.append(alignment_accuracy(exp / "alignment.jsonl", a.data / "train.txt"))
        except (KeyError, ValueError):  # not a demo corpus: no ground truth
            pass
        print(f"seed {seed}: " + json.dumps({k: v[-1] for k, v in rows.items()}), flush=True)
    print(f"\nheld-out test works of {a.data}, {len(a.seeds)} seeds, {a.epochs} epochs in total\n")
    print("| training | MAP | MR1 | hit rate |")
    print("|---|---|---|---|")
    for name, rs in rows.items():
        print(
            f"| {name} | "
            + " | ".join(mean_sd([r[k] for r in rs]) for k in ("map", "mr1", "hit_rate"))
            + " |"
        )
    if acc:
        right, chance = np.mean([x for x, _ in acc]), np.mean([c for _, c in acc])
        print(
            f"\nalignment of the coarse models: {right:.1%} of matches within 1.5 s of the true "
            f"passage (random pairs: {chance:.1%})"
        )


if __name__ == "__main__":
    main()
