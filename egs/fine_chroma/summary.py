"""One table of the arms of egs/fine_chroma/run.sh: size, CPU time, validation and test MAP
(the model alone and the two-stage search).

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


def main() -> None:
    work, arms = Path(sys.argv[1]), sys.argv[2:]
    print(
        "| arm | input | objective | M params | epochs | CPU hours | best val MAP | test MAP "
        "| test MAP, re-rank 50 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for arm in arms:
        print(row(work, arm))


if __name__ == "__main__":
    main()
