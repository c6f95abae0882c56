"""``python -m tools.extract_csi_features DATA_DIR``: the seed's command, same outputs, no bugs.

``--start_stage`` / ``--end_stage`` are accepted for compatibility; extraction is one
resumable pass, so they are not needed (a re-run only redoes what is missing or stale).
``--rank R --world-size W`` (or torchrun's ``RANK`` / ``WORLD_SIZE``) extract one slice,
as ``coverhunter extract`` does.
"""

import argparse
import sys

from coverhunter.cli import main

if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m tools.extract_csi_features")
    p.add_argument("feat_dir")
    p.add_argument("--start_stage", type=int, default=0, help="ignored (kept for compatibility)")
    p.add_argument("--end_stage", type=int, default=100, help="ignored (kept for compatibility)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--rank", type=int, default=None, help="this process's slice (default: $RANK)")
    p.add_argument(
        "--world-size",
        "--world_size",
        dest="world_size",
        type=int,
        default=None,
        help="processes sharing the dataset (default: $WORLD_SIZE, else 1)",
    )
    a = p.parse_args()
    argv = ["extract", a.feat_dir]
    for flag, value in (("--workers", a.workers), ("--rank", a.rank), ("--world-size", a.world_size)):
        if value is not None:
            argv += [flag, str(value)]
    sys.exit(main(argv))
