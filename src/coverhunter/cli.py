"""The ``coverhunter`` command line: thin handlers over the library."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

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


def _cache(lm, win=None):
    """The user's embedding cache (``$COVERHUNTER_CACHE`` / ``$XDG_CACHE_HOME/coverhunter``)."""
    from .embed import EmbeddingCache
    from .evaluate import windowing

    return EmbeddingCache(None, lm.fingerprint, win or windowing(lm.config))


# ---------------------------------------------------------------------------
# handlers


def _versions(text: str) -> tuple[int, int]:
    """'6' -> (6, 6); '4-8' -> (4, 8)."""
    try:
        lo, _, hi = text.partition("-")
        return int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX, got {text!r}") from None


def _positive_int(text: str) -> int:
    """'3' -> 3; zero, negative or not a number: a usage error."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {v}")
    return v


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


def cmd_fit_summary(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from .alignment_inputs import alignment_features
    from .checkpoint import attach_summary_projection, find_checkpoint
    from .classical import CHROMA_PARAMS, SummaryProjection, multiscale_summary
    from .dataset import read_dataset

    tracks = [t for t in read_dataset(args.train_list, check_features=True) if t.feat]
    if not tracks:
        raise ValueError(f"{args.train_list}: no recordings with features (run coverhunter extract)")
    if 0 < args.sample < len(tracks):
        rows = np.sort(np.random.default_rng(args.seed).choice(len(tracks), args.sample, replace=False))
        tracks = [tracks[i] for i in rows]
    patches = tuple(args.patches)
    summaries = np.stack(
        [
            multiscale_summary(alignment_features(t.feat, CHROMA_PARAMS).chroma, patches)
            for t in tqdm(tracks, desc="2D Fourier summaries", unit="rec", mininterval=5.0)
        ]
    )
    if args.method == "lda":
        proj = SummaryProjection.fit_discriminant(
            summaries, [t.work for t in tracks], args.dims, args.pca_dims, patches
        )
    else:
        proj = SummaryProjection.fit(summaries, args.dims, patches)
    path = attach_summary_projection(find_checkpoint(args.model), proj)
    log.info(
        "fitted a %d-dimensional %s summary projection on %d recordings (%d works) of %s; stored in %s",
        len(proj.scale),
        args.method,
        len(tracks),
        len({t.work for t in tracks}),
        args.train_list,
        path,
    )
    return 0


def cmd_train(args) -> int:
    import json

    from .config import load_config
    from .train import train

    config = load_config(args.config, args.set) if args.config else None
    if args.only_eval:
        from .train import evaluate_experiment

        print(json.dumps(evaluate_experiment(args.exp_dir, device=args.device), indent=2))
        return 0
    result = train(
        args.exp_dir,
        config=config,
        overrides=None if config else args.set,
        device=args.device,
        init_from=args.init_from,
        max_epochs=args.max_epochs,
        first_eval=args.first_eval,
    )
    log.info(
        "trained %d epochs (%d steps) in %.0f s; best %s = %s; checkpoint %s",
        result.epochs_run,
        result.steps,
        result.seconds,
        result.monitor,
        result.best_metric,
        result.best_checkpoint,
    )
    return 0


def cmd_evaluate(args) -> int:
    import json

    from .evaluate import run_evaluation

    report = run_evaluation(
        args.model,
        args.query,
        args.ref,
        query_in_ref_path=args.query_in_ref,
        device=args.device,
        mode=args.mode,
        bootstrap=args.bootstrap,
        output=args.output,
        plots=args.plots,
        chunk_s=args.chunk_s,
        hop_s=args.hop_s,
        distance=args.distance,
        rerank=args.rerank,
        rerank_source=args.rerank_source,
        rerank_weight=args.rerank_weight,
        rerank_expand=args.rerank_expand,
        rerank_expansion_weight=args.rerank_expansion_weight,
        rerank_grow_after=args.rerank_grow_after,
        rerank_first_stage=args.rerank_first_stage,
    )
    d = report.to_dict()
    print(
        f"MAP {d['map']:.4f}  top10 {d['top10']:.4f}  MR1 {d['mr1']:.2f}  "
        f"hit rate {d['hit_rate']:.4f}  ({d['n_queries']} queries, {d['mode']} definitions)"
    )
    if d["ci"]:
        print("95% CI: " + ", ".join(f"{k} [{a:.4f}, {b:.4f}]" for k, (a, b) in d["ci"].items()))
    if args.json:
        print(json.dumps(d, indent=2))
    if not args.rerank:
        log.info(
            "this is the model alone, as the original evaluates; --rerank 50 evaluates the "
            "two-stage search (embedding shortlist re-ranked by chroma alignment), which finds "
            "far more of the covers that change the arrangement (docs/accuracy.md)"
        )
    return 0


def _load(args):
    from .checkpoint import load_model
    from .utils import resolve_device

    device = resolve_device(args.device)
    return load_model(args.model, device), device


def cmd_index_build(args) -> int:
    from .index import build_index

    lm, device = _load(args)
    idx, failed = build_index(
        args.index,
        lm,
        dataset=args.dataset,
        folder=args.audio_dir,
        backend=args.backend,
        overwrite=args.overwrite,
        device=device,
        calibrate_with=args.calibrate,
        cache=_cache(lm),
        uri=args.uri,
        rank=args.rank,
        world_size=args.world_size,
    )
    return _report_index(idx, failed)


def _report_index(idx, failed) -> int:
    from .index.chroma_store import IndexChroma

    # the first stage's recurrence index, built now rather than at the first search
    IndexChroma.of(idx).prepare_recurrence()
    m = idx.meta
    log.info(
        "index %s: %d recordings of %d works, %d chunk vectors%s",
        idx.root,
        m["n_tracks"],
        idx.n_works,
        m["n_vectors"],
        (
            ", calibrated (embedding and alignment)"
            if idx.alignment_calibration
            else ", calibrated"
            if m.get("calibration")
            else ""
        ),
    )
    for tid, msg in failed:
        print(f"  not added: {tid}: {msg}", file=sys.stderr)
    return 1 if any(msg != "already in the index" for _, msg in failed) else 0


def cmd_index_add(args) -> int:
    from .dataset import read_dataset
    from .index import CatalogueIndex, rank_slice, resolve_rank, tracks_from_folder

    lm, device = _load(args)
    idx = CatalogueIndex.load(args.index)
    tracks = read_dataset(args.dataset) if args.dataset else tracks_from_folder(args.audio_dir)
    tracks = rank_slice(tracks, *resolve_rank(args.rank, args.world_size))
    failed = idx.add(lm, tracks, device, cache=_cache(lm, idx.windowing), replace=args.replace)
    return _report_index(idx, failed)


def cmd_index_remove(args) -> int:
    from .index import CatalogueIndex

    idx = CatalogueIndex.load(args.index)
    missing = idx.remove(args.tracks)
    for tid in missing:
        print(f"  not in the index: {tid}", file=sys.stderr)
    if args.compact:
        idx.compact()
    return _report_index(CatalogueIndex.load(args.index), []) or (1 if missing else 0)


def cmd_index_compact(args) -> int:
    from .index import CatalogueIndex

    idx = CatalogueIndex.load(args.index)
    log.info("%s: %d rows of removed recordings dropped", idx.root, idx.compact())
    return _report_index(CatalogueIndex.load(args.index), [])


def cmd_index_repair(args) -> int:
    from .index import CatalogueIndex, repair_index
    from .utils import resolve_device

    lm, device = _load(args) if args.model else (None, resolve_device(args.device))
    report = repair_index(args.index, lm, device)
    if not report.rewritten:
        log.info("%s: no damaged shard file found; nothing to repair", args.index)
    else:
        log.info("%s: rewrote %s", args.index, ", ".join(report.rewritten))
    for tid, why in report.removed:
        print(f"  removed: {tid}: {why} (add it again)", file=sys.stderr)
    for shard in report.lost:
        print(
            f"  {shard}: its list of recordings was unreadable; they were dropped (add them again)",
            file=sys.stderr,
        )
    return _report_index(CatalogueIndex.load(args.index), []) or (0 if report.complete else 1)


def cmd_index_calibrate(args) -> int:
    from .dataset import read_dataset
    from .index import CatalogueIndex

    lm, device = _load(args)
    idx = CatalogueIndex.load(args.index)
    cal = idx.calibrate(lm, read_dataset(args.dataset), device)
    log.info(
        "calibrated on %s: %d same-work and %d different-work pairs",
        cal["source"],
        cal["n_same"],
        cal["n_different"],
    )
    if cal.get("alignment"):
        a = cal["alignment"]
        log.info(
            "alignment calibrated on %s: %d same-work and %d different-work pairs (verdicts of "
            "re-ranked searches)",
            a["source"],
            a["n_same"],
            a["n_different"],
        )
    return 0


def cmd_identify(args) -> int:
    """Files and folders, each through ``identification.identify``: printed, or one JSON line per
    file appended to ``--output`` (resumable, ``batch``)."""
    import json

    from .batch import audio_files, identify_batch
    from .identification import IdentifyOptions, identify
    from .index import CatalogueIndex, format_result
    from .index.chroma_store import IndexChroma

    idx = CatalogueIndex.load(args.index)
    if args.model is None:
        args.model = Path(idx.meta["model"])
    lm, device = _load(args)
    options = IdentifyOptions(
        top=args.top,
        false_alarm=args.false_alarm,
        rerank=args.rerank,
        rerank_grow_after=args.rerank_grow_after,
        rerank_versions=args.rerank_versions,
        segments=args.segments,
        approximate={"auto": None, "exact": False, "approximate": True}[args.search],
    )
    current = [idx, IndexChroma.of(idx, lm.summary_projection)]

    def answer(path):
        # a long batch follows the index as other processes change it (one stat per file)
        fresh = current[0].fresh()
        if fresh is not current[0]:
            current[:] = [fresh, IndexChroma.of(fresh, lm.summary_projection)]
        return identify(current[0], lm, path, options, device=device, chroma=current[1])

    files = audio_files(args.audio, args.recursive)
    if args.output:
        report = identify_batch(files, args.output, lambda path: answer(path).to_dict())
        log.info(
            "%d answered, %d already answered, %d failed -> %s",
            report.answered,
            report.skipped,
            len(report.failed),
            args.output,
        )
        for path, msg in report.failed:
            print(f"  failed: {path}: {msg}", file=sys.stderr)
        return 1 if report.failed else 0
    results = [answer(f) for f in files]
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            print(format_result(r))
    return 1 if any(r.error for r in results) else 0


def cmd_serve(args) -> int:
    from .serve.app import ServeConfig, serve

    serve(
        ServeConfig(
            index=args.index,
            model=args.model,
            device=args.device,
            token=args.token,
            open_reads=not args.protect_reads,
            max_upload_mb=args.max_upload_mb,
            max_duration_s=args.max_duration_s,
            decode_timeout_s=args.decode_timeout_s,
            queue_size=args.queue_size,
            rerank=args.rerank,
            rerank_grow_after=args.rerank_grow_after,
            rerank_versions=args.rerank_versions,
        ),
        host=args.host,
        port=args.port,
    )
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


def cmd_align(args) -> int:
    from .align import AlignConfig, plot_alignment, run_alignment

    cfg = AlignConfig(chunk_s=args.chunk_s, hop_s=args.hop_s, jump=args.jump)
    if args.plot:
        from .checkpoint import load_model
        from .dataset import read_dataset

        tracks = {t.track_id: t for t in read_dataset(args.data_path, check_features=True)}
        pair = args.pair or _first_pair(list(tracks.values()))
        missing = [p for p in pair if p not in tracks]
        if missing:
            raise ValueError(f"{args.data_path}: no track {missing[0]!r}")
        out = plot_alignment(load_model(args.model), tracks[pair[0]], tracks[pair[1]], args.plot, cfg)
        log.info("alignment plot of %s vs %s: %s", pair[0], pair[1], out)
    if args.output:
        run_alignment(args.model, args.data_path, args.output, cfg=cfg, device=args.device)
    return 0


def _first_pair(tracks) -> tuple[str, str]:
    seen = {}
    for t in tracks:
        if t.work in seen:
            return seen[t.work], t.track_id
        seen[t.work] = t.track_id
    raise ValueError("no work with two versions to plot")


def cmd_coarse_to_fine(args) -> int:
    from .train import coarse_to_fine

    r = coarse_to_fine(
        args.exp_dir,
        coarse_epochs=args.coarse_epochs,
        fine_epochs=args.fine_epochs,
        fine_lr_scale=args.fine_lr_scale,
        device=args.device,
        overrides=args.set,
    )
    log.info("coarse-to-fine done: best %s = %s (%s)", r.monitor, r.best_metric, r.best_checkpoint)
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
    s.add_argument("--rerank", type=int, default=0, metavar="K",
                   help="re-order each query's top K by alignment (two-stage search; 0 = off)")
    s.add_argument("--rerank-source", choices=["chroma", "embedding", "both"], default="chroma",
                   help="alignment over chroma, over the model's short-chunk embeddings, or both")
    s.add_argument("--rerank-weight", type=float, default=None,
                   help="weight of the alignment score in the fusion (default: coverhunter.rerank's)")
    s.add_argument("--rerank-expand", type=int, default=None, metavar="N",
                   help="recordings nearest to the best-aligned one added to the shortlist "
                        "(query expansion; 0 = none; default: coverhunter.rerank's)")
    s.add_argument("--rerank-expansion-weight", type=float, default=None,
                   help="weight of each item's alignment with the best-aligned one "
                        "(0 = off; default: coverhunter.rerank's)")
    s.add_argument("--rerank-grow-after", type=int, default=None, metavar="N",
                   help="catalogue size beyond which the shortlist grows as K * sqrt(size / N) "
                        "(0 = always K; default: coverhunter.rerank's)")
    s.add_argument("--rerank-first-stage", choices=["both", "recurrence", "summary"], default=None,
                   help="the chroma searches that propose candidates beside the embedding: "
                        "recurrence voting and the 2D Fourier summary (both, the default), or "
                        "one of them (summary: earlier releases)")
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
    s.add_argument("--top", type=int, default=10)
    s.add_argument("--false-alarm", type=float, default=0.01,
                   help="answer 'no cover' when the best match's p-value is above this (calibrated index)")
    s.add_argument("--search", choices=["auto", "exact", "approximate"], default="auto")
    _add_identify_rerank(s)
    s.add_argument("--json", action="store_true")
    s.add_argument("--device", default=None)
    s.add_argument("--segments", action="store_true",
                   help="also say which works are performed where (medleys, concerts, mixes)")
    s.add_argument("--recursive", action="store_true", help="folders: also their sub-folders")
    s.add_argument("--output", type=Path, default=None,
                   help="append one JSON line per file here; a re-run skips files already answered")
    s.set_defaults(func=cmd_identify)

    s = sub.add_parser("serve", help="HTTP API and web page for identification (FastAPI + uvicorn)")
    s.add_argument("--index", type=Path, required=True)
    s.add_argument("--model", type=Path, default=None, help="default: the model the index was built with")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--device", default=None)
    s.add_argument("--token", default=None,
                   help="enables POST /tracks, which needs it (default: $COVERHUNTER_TOKEN)")
    s.add_argument("--protect-reads", action="store_true", help="reads need the token too")
    s.add_argument("--max-upload-mb", type=float, default=200.0)
    s.add_argument("--max-duration-s", type=float, default=3 * 3600.0)
    s.add_argument("--decode-timeout-s", type=float, default=300.0)
    s.add_argument("--queue-size", type=int, default=16, help="requests admitted at once; more get 503")
    _add_identify_rerank(s, " (a request's ?rerank=, ?rerank_grow_after= and ?rerank_versions= "
                            "override them)")
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


def _add_identify_rerank(s, note: str = "") -> None:
    """identify's and serve's two-stage search options: shortlist K and its growth."""
    s.add_argument(
        "--rerank",
        type=int,
        default=None,
        metavar="K",
        help="re-order the best K works by chroma alignment when the index stores "
        "chroma (default 50; 0 = off)" + note,
    )
    s.add_argument(
        "--rerank-grow-after",
        type=int,
        default=None,
        metavar="N",
        help="in a catalogue of more than N recordings, K grows as K * sqrt(size / N) "
        "(0 = always K; default: coverhunter.rerank's)",
    )
    s.add_argument(
        "--rerank-versions",
        type=_positive_int,
        default=None,
        metavar="V",
        help="align up to V recordings of each shortlisted work: the one found, then the "
        "work's others nearest by the 2D Fourier summary (default: coverhunter.rerank's, "
        "3; 1 = the one found)",
    )


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
