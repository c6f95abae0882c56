"""The arms of egs/fine_chroma/run.sh: size, CPU time, validation and test MAP (the model
alone and the two-stage search), and validation MAP at equal CPU time.

    python egs/fine_chroma/summary.py WORK ARM [ARM...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from coverhunter.config import load_config
from coverhunter.model import CoverHunter


def row(work: Path, arm: str) -> str:
    exp = work / arm
    if not (exp / "config" / "hparams.yaml").is_file():
        return f"| {arm} | not started | | | | | | | |"
    cfg = load_config(exp / "config" / "hparams.yaml")
    params = sum(p.numel() for p in CoverHunter(cfg.model).parameters()) / 1e6
    hist = json.loads((exp / "history.json").read_text()) if (exp / "history.json").is_file() else []
    best = max(hist, key=lambda h: h.get("val_map", -1.0), default={})
    seconds = hist[-1].get("train_seconds", float("nan")) if hist else float("nan")
    test = [
        json.loads(p.read_text()).get("map", float("nan")) if p.is_file() else float("nan")
        for p in (exp / "test.json", exp / "test_rerank50.json")
    ]
    return (
        f"| {arm} | {cfg.model.front_end} | {cfg.loss.objective} | {params:.2f} | {len(hist)} | "
        f"{seconds / 3600:.2f} | {best.get('val_map', float('nan')):.3f} (epoch {best.get('epoch', '-')}) | "
        f"{test[0]:.3f} | {test[1]:.3f} |"
    )


MARKS = (300, 600, 900, 1200, 1500, 1800)  # CPU seconds


def curve(work: Path, arm: str, marks=MARKS) -> str:
    """Validation MAP of the last epoch finished by each mark of CPU seconds ('-': not yet)."""
    path = work / arm / "history.json"
    hist = json.loads(path.read_text()) if path.is_file() else []
    log = work / arm / "train.log"
    finished = log.is_file() and "INFO coverhunter: trained " in log.read_text(errors="replace")
    reached = hist[-1].get("train_seconds", 0.0) if hist else 0.0
    cells = []
    for t in marks:
        done = [h for h in hist if h.get("train_seconds", float("inf")) <= t]
        cells.append(f"{done[-1]['val_map']:.3f}" if done and (finished or t <= reached) else "-")
    return f"| {arm} | " + " | ".join(cells) + " |"


def main() -> None:
    work, arms = Path(sys.argv[1]), sys.argv[2:]
    print(
        "| arm | input | objective | M params | epochs | CPU hours | best val MAP | test MAP "
        "| test MAP, re-rank 50 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for arm in arms:
        print(row(work, arm))
    print("\nValidation MAP by CPU seconds of training and validation (the last epoch finished by then):\n")
    print("| arm | " + " | ".join(f"{t} s" for t in MARKS) + " |")
    print("|---|" + "---|" * len(MARKS))
    for arm in arms:
        print(curve(work, arm))


if __name__ == "__main__":
    main()
