"""The ``coverhunter`` command line's catalogue commands: ``index build|add|remove|compact|
repair|calibrate``, ``identify`` and ``serve``, thin handlers over the library (``cli`` builds the
parser that dispatches to them)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger("coverhunter")

# the command-line options of `identify` (IdentifyOptions' fields, in the order of its help)
# and of `serve` (ServeConfig's): `cli` adds them, the handlers read them back
IDENTIFY_OPTIONS = (
    "top",
    "false_alarm",
    "approximate",
    "rerank",
    "rerank_grow_after",
    "rerank_versions",
    "segments",
)
SERVE_OPTIONS = (
    "index",
    "model",
    "host",
    "port",
    "device",
    "token",
    "open_reads",
    "max_upload_mb",
    "max_duration_s",
    "decode_timeout_s",
    "queue_size",
    "rerank",
    "rerank_grow_after",
    "rerank_versions",
)


def identify_options(args):
    """The ``IdentifyOptions`` of ``identify``'s parsed flags."""
    from .config import IdentifyOptions, from_arguments

    return IdentifyOptions(**from_arguments(IdentifyOptions, args, IDENTIFY_OPTIONS))


def serve_config(args):
    """The ``ServeConfig`` of ``serve``'s parsed flags."""
    from .config import ServeConfig, from_arguments

    return ServeConfig(**from_arguments(ServeConfig, args, SERVE_OPTIONS))


def _cache(lm, win=None):
    """The user's embedding cache (``$COVERHUNTER_CACHE`` / ``$XDG_CACHE_HOME/coverhunter``)."""
    from .embed import EmbeddingCache
    from .evaluate import windowing

    return EmbeddingCache(None, lm.fingerprint, win or windowing(lm.config))


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
    from .identification import identify
    from .index import CatalogueIndex, format_result
    from .index.chroma_store import IndexChroma

    options = identify_options(args)  # a setting out of range: one error line before any loading
    idx = CatalogueIndex.load(args.index)
    if args.model is None:
        args.model = Path(idx.meta["model"])
    lm, device = _load(args)
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
    from .serve.app import serve

    serve(serve_config(args))
    return 0
