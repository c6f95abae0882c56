"""``python -m tools.eval_testset MODEL_DIR QUERY_PATH REF_PATH [-query_in_ref_path P] [--rerank K]``.

MODEL_DIR may be ours or the original's (``pt_model/g_*`` + ``config/hparams.yaml``).
Prints MAP, top10, MR1 and hit rate, and writes them as JSON to MODEL_DIR/eval_results.json
unless ``--output`` says otherwise.
"""

import argparse
import sys
from pathlib import Path

from coverhunter.cli import main

if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m tools.eval_testset")
    p.add_argument("model_dir")
    p.add_argument("query_path")
    p.add_argument("ref_path")
    p.add_argument("-query_in_ref_path", "--query_in_ref_path", default=None)
    p.add_argument("--output", default=None)
    p.add_argument("--mode", choices=["standard", "original"], default="standard")
    p.add_argument("--device", default=None)
    p.add_argument(
        "--rerank",
        type=int,
        default=0,
        metavar="K",
        help="two-stage search: re-order each query's top K by chroma alignment "
        "(coverhunter.rerank; 0 = the model alone, as the original evaluates)",
    )
    a = p.parse_args()
    out = a.output or str(
        (Path(a.model_dir) if Path(a.model_dir).is_dir() else Path(a.model_dir).parent) / "eval_results.json"
    )
    argv = ["evaluate", a.model_dir, a.query_path, a.ref_path, "--output", out, "--mode", a.mode]
    if a.query_in_ref_path:
        argv += ["--query-in-ref", a.query_in_ref_path]
    if a.device:
        argv += ["--device", a.device]
    if a.rerank:
        argv += ["--rerank", str(a.rerank)]
    sys.exit(main(argv))
