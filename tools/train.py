"""``python -m tools.train EXP_DIR``: the seed's training command (also under torchrun).

Reads ``EXP_DIR/config/hparams.yaml`` (the original's keys or ours). ``--first_eval`` /
``--only_eval`` evaluate before training / instead of it; ``--debug`` is accepted.
"""

import argparse
import sys

from coverhunter.cli import main

if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m tools.train")
    p.add_argument("model_dir")
    p.add_argument("--first_eval", action="store_true", help="evaluate before training")
    p.add_argument("--only_eval", action="store_true", help="evaluate and exit")
    p.add_argument("--debug", action="store_true", help="accepted for compatibility")
    p.add_argument("--device", default=None)
    p.add_argument("--max_epochs", type=int, default=None)
    a, rest = p.parse_known_args()
    argv = ["train", a.model_dir, *rest]
    if a.device:
        argv += ["--device", a.device]
    if a.max_epochs is not None:
        argv += ["--max-epochs", str(a.max_epochs)]
    if a.only_eval:
        sys.exit(main(argv + ["--only-eval"]))
    sys.exit(main(argv + (["--first-eval"] if a.first_eval else [])))
