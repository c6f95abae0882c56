"""The ``coverhunter`` command line's model commands: ``fit-summary``, ``train``, ``evaluate``,
``align`` and ``coarse-to-fine``, thin handlers over the library (``cli`` builds the parser that
dispatches to them)."""

from __future__ import annotations

import logging

log = logging.getLogger("coverhunter")


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
        rerank_expand_votes=args.rerank_expand_votes,
        rerank_expansion_weight=args.rerank_expansion_weight,
        rerank_grow_after=args.rerank_grow_after,
        rerank_first_stage=args.rerank_first_stage,
        rerank_coarse_keep=args.rerank_coarse_keep,
        rerank_widen_after=args.rerank_widen_after,
        rerank_scan_below=args.rerank_scan_below,
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
