"""The ``coverhunter`` command line: the parser, ``main`` and the data commands' thin handlers
(the catalogue commands' are in ``cli_index``, the model commands' in ``cli_train``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .cli_index import (
    IDENTIFY_OPTIONS,
    SERVE_OPTIONS,
    cmd_identify,
    cmd_index_add,
    cmd_index_build,
    cmd_index_calibrate,
    cmd_index_compact,
    cmd_index_remove,
    cmd_index_repair,
    cmd_serve,
)
from .cli_train import cmd_align, cmd_coarse_to_fine, cmd_evaluate, cmd_fit_summary, cmd_train
from .config import IdentifyOptions, ServeConfig, add_arguments

log = logging.getLogger("coverhunter")


def fatal(msg: str, code: int = 1) -> None:
    print(f"coverhunter: error: {msg}", file=sys.stderr)
    sys.exit(code)


def _error_line(msg: str) -> str:
    """One line for an error message (a file's problem, not a traceback)."""
    return " ".join(msg.split()) if msg.count("\n") <= 1 else msg


def setup_logging(verbose: int = 0) -> None:
    """INFO by default; ``-v`` (once or more) shows DEBUG messages too."""
    level = logging.DEBUG if verbose >= 1 else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger().setLevel(level)  # also when logging was configured before


# ---------------------------------------------------------------------------
# handlers


def _versions(text: str) -> tuple[int, int]:
    """'6' -> (6, 6); '4-8' -> (4, 8)."""
    try:
        lo, _, hi = text.partition("-")
        return int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX, got {text!r}") from None


def cmd_make_demo_corpus(args) -> int:
    from .corpus import make_corpus

    tracks = make_corpus(
        args.out_dir,
        works=args.works,
        versions=args.versions,
        seed=args.seed,
        num_workers=args.workers,
        split=getattr(args, "split", "train"),
        arrangement_only=getattr(args, "arrangement_only", False),
        **({} if args.harmony_kept is None else {"harmony_kept": args.harmony_kept}),
    )
    hours = sum(t.duration for t in tracks) / 3600
    log.info(
        "wrote %d recordings of %d works (%.2f h) to %s",
        len(tracks),
        len({t.work for t in tracks}),
        hours,
        Path(args.out_dir) / "dataset.txt",
    )
    return 0


def cmd_extract(args) -> int:
    from .extract import extract_features

    report = extract_features(
        args.data_dir, num_workers=args.workers, rank=args.rank, world_size=args.world_size
    )
    log.info("%s", report.summary())
    if report.failed:
        print(f"{len(report.failed)} recording(s) failed:", file=sys.stderr)
        for utt, msg in report.failed:
            print(f"  {utt}: {msg}", file=sys.stderr)
        return 1
    return 0


def cmd_pack(args) -> int:
    from .pack import pack_features

    report = pack_features(
        args.data_dir,
        args.out,
        lists=tuple(args.lists),
        mean_size=args.mean_size,
        alignment=not args.no_alignment,
    )
    if report["failed"]:
        print(f"{len(report['failed'])} recording(s) left out:", file=sys.stderr)
        for line in report["failed"]:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def cmd_unpack(args) -> int:
    from .pack import unpack_features

    unpack_features(args.pack, args.out_dir)
    return 0


def cmd_prepare(args) -> int:
    from . import prepare

    if args.dataset == "covers80":
        report = prepare.prepare_covers80(args.archive_dir, args.data_dir)
    elif args.dataset == "shs100k":
        report = prepare.prepare_shs100k(args.list_dir, args.audio_dir, args.data_dir)
    else:
        report = prepare.prepare_datacos(args.metadata, args.audio_dir, args.data_dir)
    log.info("%s", report.summary())
    if report.missing or report.problems:
        print(
            f"{len(report.missing)} missing, {len(report.problems)} problem(s): see "
            f"{report.data_dir / 'missing.txt'}",
            file=sys.stderr,
        )
    return 0


def cmd_demo(args) -> int:
    import json

    from .demo import run_demo

    summary = run_demo(
        args.out_dir,
        works=args.works,
        versions=args.versions,
        seed=args.seed,
        max_epochs=args.max_epochs,
        compare_model=args.compare_model,
    )
    for text in summary.pop("identify_text"):
        print(text + "\n")
    print(json.dumps(summary, indent=2))
    return 0


# ---------------------------------------------------------------------------
# parser


def get_parser() -> argparse.ArgumentParser:
    # fmt: off
    p = argparse.ArgumentParser(prog="coverhunter", description="Cover song identification.")
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name in ("make-corpus", "make-demo-corpus"):
        s = sub.add_parser(name, help="render an offline arranged-cover corpus from music21 scores"
                           + (" (resumable)" if name == "make-corpus" else " (= make-corpus)"))
        s.add_argument("out_dir", type=Path)
        s.add_argument("--works", type=int, default=60, help="number of works (default 60)")
        s.add_argument("--versions", type=_versions, default=(4, 4),
                       help="versions per work, N or MIN-MAX drawn per work (default 4)")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--split", choices=["train", "test"], default="train",
                       help="train: training works and soundfonts; test: the held-out test works "
                            "rendered with the test soundfont (default train)")
        s.add_argument("--arrangement-only", action="store_true",
                       help="versions keep key, tempo and structure; only the arrangement and sound change")
        s.add_argument("--harmony-kept", type=float, default=None, metavar="SHARE",
                       help="share of versions that keep the work's chord progression, the "
                            "others re-harmonised (default: half; 0 = all re-harmonised)")
        s.add_argument("--workers", type=int, default=0, help="processes (0 = one per core)")
        s.set_defaults(func=cmd_make_demo_corpus)

    s = sub.add_parser("extract", help="CQT features for DATA_DIR/dataset.txt (resumable)")
    s.add_argument("data_dir", type=Path)
    s.add_argument("--workers", type=int, default=None, help="processes (default: hparams, 0 = all cores)")
    s.add_argument("--rank", type=int, default=None,
                   help="this process's slice: every W-th recording by utt (default: $RANK, else 0)")
    s.add_argument("--world-size", type=int, default=None,
                   help="processes sharing the dataset (default: $WORLD_SIZE, else 1); the last "
                   "slice to finish writes the lists")
    s.set_defaults(func=cmd_extract)
    s = sub.add_parser("pack", help="a data folder's training features as one small chroma pack "
                       "(.npz, about 1/100 of the CQT files), to train a chroma model elsewhere")
    s.add_argument("data_dir", type=Path)
    s.add_argument("out", type=Path, help="the .npz to write")
    s.add_argument("--lists", nargs="+", default=["train.txt", "val.txt"],
                   help="list files of DATA_DIR to pack (default: train.txt val.txt)")
    s.add_argument("--mean-size", type=int, default=3, help="the training config's data.mean_size")
    s.add_argument("--no-alignment", action="store_true", help="leave DATA_DIR/alignment.jsonl out")
    s.set_defaults(func=cmd_pack)
    s = sub.add_parser("unpack", help="a chroma pack back to a data folder the trainer reads")
    s.add_argument("pack", type=Path)
    s.add_argument("out_dir", type=Path)
    s.set_defaults(func=cmd_unpack)
    s = sub.add_parser("fit-summary", help="fit the two-stage search's 2D Fourier summary "
                       "projection on training recordings and store it in MODEL")
    s.add_argument("model", type=Path, help="model file (.pt) to store it in")
    s.add_argument("train_list", type=Path, help="training list with features (never test works)")
    s.add_argument("--method", choices=("lda", "pca"), default="lda",
                   help="lda: discriminant, learnt from the list's work labels (default); "
                        "pca: principal axes, whitened, no labels")
    s.add_argument("--dims", type=int, default=30, help="dimensions kept (default 30)")
    s.add_argument("--patches", type=int, nargs="+", default=[75, 300],
                   help="summary patch lengths in chroma frames, 2.5 per second (default 75 300)")
    s.add_argument("--pca-dims", type=int, default=100,
                   help="lda only: principal axes kept before the discriminant (default 100)")
    s.add_argument("--sample", type=int, default=0,
                   help="recordings used at most, drawn at random (default 0: all)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_fit_summary)
    s = sub.add_parser("train", help="train EXP_DIR (config: EXP_DIR/config/hparams.yaml); resumes")
    s.add_argument("exp_dir", type=Path)
    s.add_argument("set", nargs="*", metavar="SECTION.KEY=VALUE", help="config overrides")
    s.add_argument("--config", type=Path, help="config file to use (copied into EXP_DIR/config)")
    s.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N | mps")
    s.add_argument("--max-epochs", type=int, default=None)
    s.add_argument("--init-from", type=Path, default=None, help="start from this checkpoint's weights")
    s.add_argument("--only-eval", action="store_true", help="evaluate the latest checkpoint and exit")
    s.add_argument("--first-eval", action="store_true", help="evaluate the starting weights, then train")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("evaluate", help="MAP, top10, MR1, hit rate of a model on query/ref lists")
    s.add_argument("model", type=Path, help="model folder or checkpoint (ours or the original's)")
    s.add_argument("query", type=Path, help="query list (full.txt format, with feat)")
    s.add_argument("ref", type=Path, nargs="?", default=None, help="reference list (default: query)")
    s.add_argument("--query-in-ref", "-query_in_ref_path", dest="query_in_ref", type=Path)
    s.add_argument("--mode", choices=["standard", "original"], default="standard")
    s.add_argument("--bootstrap", type=int, default=0, help="resamples for 95%% confidence intervals")
    s.add_argument("--output", type=Path, default=None, help="write metrics as JSON here")
    s.add_argument("--plots", type=Path, default=None, help="write PNG plots to this folder")
    s.add_argument("--device", default=None)
    s.add_argument("--chunk-s", type=float, default=None)
    s.add_argument("--hop-s", type=float, default=None)
    s.add_argument("--distance", choices=["min", "mean"], default=None)
    # the search's --rerank, off by default here: evaluate measures the model alone unless asked
    add_arguments(s, IdentifyOptions, ["rerank"], defaults={"rerank": 0},
                  helps={"rerank": "re-order each query's top K by alignment (two-stage search; 0 = off)"})
    s.add_argument("--rerank-source", choices=["chroma", "embedding", "both"], default="chroma",
                   help="alignment over chroma, over the model's short-chunk embeddings, or both")
    s.add_argument("--rerank-weight", type=float, default=None,
                   help="weight of the alignment score in the fusion (default: coverhunter.rerank's)")
    s.add_argument("--rerank-expand", type=int, default=None, metavar="N",
                   help="recordings nearest to the best-aligned one added to the shortlist "
                        "(query expansion; 0 = none; default: coverhunter.rerank's)")
    s.add_argument("--rerank-expand-votes", type=float, default=None, metavar="SHARE",
                   help="share of those N taken from the best-aligned one's own recurrence "
                        "votes, the rest by the 2D Fourier summary (0-1; default: coverhunter.rerank's)")
    s.add_argument("--rerank-expansion-weight", type=float, default=None,
                   help="weight of each item's alignment with the best-aligned one "
                        "(0 = off; default: coverhunter.rerank's)")
    add_arguments(s, IdentifyOptions, ["rerank_grow_after"])
    s.add_argument("--rerank-first-stage", choices=["both", "recurrence", "summary"], default=None,
                   help="the chroma searches that propose candidates beside the embedding: "
                        "recurrence voting and the 2D Fourier summary (both, the default), or "
                        "one of them (summary: earlier releases)")
    s.add_argument("--rerank-coarse-keep", type=float, default=None, metavar="SHARE",
                   help="share of a grown shortlist aligned in full after a coarse alignment of "
                        "all of it (never fewer than 50; 0 = align it all; default: coverhunter.rerank's)")
    s.add_argument("--rerank-widen-after", type=int, default=None, metavar="N",
                   help="catalogue size beyond which the coarse pass scans twice the shortlist "
                        "and keeps half the share, as many aligned in full (0 = never; default: "
                        "coverhunter.rerank's)")
    s.add_argument("--rerank-scan-below", type=int, default=None, metavar="N",
                   help="catalogue size up to which the query is aligned coarsely with every "
                        "recording, a chroma search beside its recurrence votes (0 = never; default: "
                        "coverhunter.rerank's)")
    s.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("index", help="build, extend, shrink or calibrate a catalogue index")
    isub = s.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    for name, func, text in (("build", cmd_index_build, "embed a catalogue into a new index"),
                             ("add", cmd_index_add, "append recordings to an index")):
        t = isub.add_parser(name, help=text)
        t.add_argument("index", type=Path)
        t.add_argument("--model", type=Path, required=True)
        src = t.add_mutually_exclusive_group(required=True)
        src.add_argument("--dataset", type=Path, help="dataset.txt / full.txt (work = song)")
        src.add_argument(
            "--audio-dir", type=Path, help="folder of audio files (work = sub-folder or file name)"
        )
        t.add_argument("--device", default=None)
        t.add_argument("--rank", type=int, default=None,
                       help="this process's slice of the input (default: $RANK, else 0)")
        t.add_argument("--world-size", type=int, default=None,
                       help="processes sharing the input (default: $WORLD_SIZE, else 1)")
        if name == "build":
            t.add_argument("--backend", choices=["auto", "exact", "hnsw", "ivfpq", "qdrant"],
                           default="auto", help="faiss exact / HNSW / IVF-PQ in the folder, auto "
                           "(by size: exact, HNSW from 200k, IVF-PQ from 2M chunks), or a Qdrant "
                           "collection at --uri")
            t.add_argument("--uri", default=None,
                           help="Qdrant server (http://host:6333) or local-mode folder")
            t.add_argument(
                "--calibrate", type=Path, default=None, help="labelled list to calibrate scores on"
            )
            t.add_argument("--overwrite", action="store_true")
        else:
            t.add_argument("--replace", action="store_true",
                           help="a recording whose track id is in the index replaces it")
        t.set_defaults(func=func)
    t = isub.add_parser("remove", help="remove recordings by track id")
    t.add_argument("index", type=Path)
    t.add_argument("tracks", nargs="+", metavar="TRACK")
    t.add_argument("--compact", action="store_true", help="then rewrite the index without them")
    t.set_defaults(func=cmd_index_remove)
    t = isub.add_parser("compact", help="rewrite an index without its removed recordings")
    t.add_argument("index", type=Path)
    t.set_defaults(func=cmd_index_compact)
    t = isub.add_parser("repair", help="rewrite damaged shard files (chroma and embeddings from "
                        "the recordings' audio)")
    t.add_argument("index", type=Path)
    t.add_argument("--model", type=Path, default=None, help="default: the model the index was built with")
    t.add_argument("--device", default=None)
    t.set_defaults(func=cmd_index_repair)
    t = isub.add_parser("calibrate", help="fit score distributions on a labelled list")
    t.add_argument("index", type=Path)
    t.add_argument("--model", type=Path, required=True)
    t.add_argument("--dataset", type=Path, required=True)
    t.add_argument("--device", default=None)
    t.set_defaults(func=cmd_index_calibrate)

    s = sub.add_parser("identify", help="which catalogue works do these recordings perform?")
    s.add_argument("audio", nargs="+", type=Path)
    s.add_argument("--index", type=Path, required=True)
    s.add_argument("--model", type=Path, default=None, help="default: the model the index was built with")
    # the search settings: IdentifyOptions' fields, their defaults and help written there
    add_arguments(s, IdentifyOptions, [n for n in IDENTIFY_OPTIONS if n != "segments"])
    s.add_argument("--json", action="store_true")
    s.add_argument("--device", default=None)
    add_arguments(s, IdentifyOptions, ["segments"])
    s.add_argument("--recursive", action="store_true", help="folders: also their sub-folders")
    s.add_argument("--output", type=Path, default=None,
                   help="append one JSON line per file here; a re-run skips files already answered")
    s.set_defaults(func=cmd_identify)

    s = sub.add_parser("serve", help="HTTP API and web page for identification (FastAPI + uvicorn)")
    # ServeConfig's fields, their defaults and help written there (the search's from IdentifyOptions)
    add_arguments(s, ServeConfig, SERVE_OPTIONS, notes={
        "rerank": " (a request's ?rerank=, ?rerank_grow_after= and ?rerank_versions= override them)"})
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("prepare", help="turn a downloaded dataset into dataset files",
                       description="Datasets: covers80, shs100k, datacos (Da-TACOS benchmark).")
    psub = s.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    t = psub.add_parser("covers80", help="Covers80: covers32k tree + list1/list2 -> dataset, query, ref")
    t.add_argument("archive_dir", type=Path)
    t.add_argument("data_dir", type=Path)
    t.set_defaults(func=cmd_prepare)
    t = psub.add_parser("shs100k", help="SHS100K: published split lists + audio named <set>_<ver>")
    t.add_argument("list_dir", type=Path)
    t.add_argument("audio_dir", type=Path)
    t.add_argument("data_dir", type=Path)
    t.set_defaults(func=cmd_prepare)
    t = psub.add_parser("datacos", help="Da-TACOS benchmark: metadata JSON + audio named <perf_id>")
    t.add_argument("metadata", type=Path, help="da-tacos_benchmark_subset_metadata.json")
    t.add_argument("audio_dir", type=Path)
    t.add_argument("data_dir", type=Path)
    t.set_defaults(func=cmd_prepare)

    s = sub.add_parser("align", help="chunk alignment of every pair of versions of each work")
    s.add_argument("model", type=Path, help="the coarse model")
    s.add_argument("data_path", type=Path, help="list with features (e.g. train.txt)")
    s.add_argument("output", type=Path, nargs="?", default=None, help="alignment file (JSON lines)")
    s.add_argument("--chunk-s", type=float, default=6.0)
    s.add_argument("--hop-s", type=float, default=1.5)
    s.add_argument("--jump", type=float, default=0.15, help="path penalty of a jump (repeat/drop)")
    s.add_argument("--plot", type=Path, default=None, help="PNG of one pair's distance matrix and path")
    s.add_argument("--pair", nargs=2, metavar=("UTT_A", "UTT_B"), help="the pair to plot")
    s.add_argument("--device", default=None)
    s.set_defaults(func=cmd_align)

    s = sub.add_parser("coarse-to-fine", help="coarse training -> alignment -> fine training")
    s.add_argument("exp_dir", type=Path)
    s.add_argument("set", nargs="*", metavar="SECTION.KEY=VALUE")
    s.add_argument("--coarse-epochs", type=int, required=True)
    s.add_argument("--fine-epochs", type=int, required=True)
    s.add_argument("--fine-lr-scale", type=float, default=0.5, help="fine learning rate / coarse")
    s.add_argument("--device", default=None)
    s.set_defaults(func=cmd_coarse_to_fine)

    s = sub.add_parser("demo", help="run the whole pipeline on the built-in demo corpus")
    s.add_argument("out_dir", type=Path, nargs="?", default=Path("demo"))
    s.add_argument("--works", type=int, default=60)
    s.add_argument("--versions", type=int, default=4)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--max-epochs", type=int, default=None, help="training budget (default: the demo config's)"
    )
    s.add_argument("--compare-model", type=Path, default=None,
                   help="also evaluate this model on the held-out works (e.g. models/default/model.pt)")
    s.set_defaults(func=cmd_demo)
    # fmt: on
    return p


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse; ``SECTION.KEY=VALUE`` overrides may come before, between or after options."""
    parser = get_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "set") and all("=" in x and not x.startswith("-") for x in extra):
        args.set = list(args.set or []) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None, exit: bool = True) -> int:
    args = _parse(argv)
    setup_logging(args.verbose)
    from .config import ConfigError
    from .dataset import DatasetError

    try:
        code = args.func(args)
    except (ConfigError, DatasetError, ValueError, OSError, RuntimeError) as e:
        if not exit:
            print(f"coverhunter: error: {_error_line(str(e))}", file=sys.stderr)
            return 1
        fatal(_error_line(str(e)))
    except KeyboardInterrupt:
        if not exit:
            return 130
        fatal("interrupted", 130)
    if exit:
        sys.exit(code or 0)
    return code or 0
