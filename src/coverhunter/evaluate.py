"""Evaluate a model on query/reference lists: embed, distance matrix, metrics."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from .checkpoint import LoadedModel, load_model
from .config import Config, EvalConfig
from .dataset import Track, read_dataset
from .embed import EmbeddingCache, Windowing, default_cache_dir, distances_to, embed_tracks
from .inputs import model_input
from .metrics import EvalReport, evaluate_distances, pairs_exclusion, self_exclusion
from .utils import atomic_write_text, resolve_device, resolve_path

log = logging.getLogger(__name__)


def windowing(cfg: Config) -> Windowing:
    """Evaluation windows in frames of the model's input (:mod:`coverhunter.inputs`)."""
    inp = model_input(cfg)
    return Windowing.from_config(cfg.eval, inp.frames_per_second, cfg.data.mean_size, inp.pad_value)


def read_query_in_ref(path: str | Path) -> list[tuple[int, int]]:
    """The original's ``query_in_ref`` file: a JSON line with key ``query_in_ref``: [[q, r], ...]."""
    path = Path(path)
    try:
        first = next(line for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        pairs = json.loads(first)["query_in_ref"]
        return [(int(q), int(r)) for q, r in pairs]
    except (OSError, StopIteration, ValueError, KeyError, TypeError) as e:
        raise ValueError(f'{path}: expected a JSON line {{"query_in_ref": [[q, r], ...]}} ({e})') from e


def read_eval_list(path: str | Path) -> list[Track]:
    """A query or reference list; lines without ``feat`` take it from ``full.txt`` beside the
    list (so ``prepare``'s query/ref lists work once their data folder is extracted)."""
    path = Path(path)
    tracks = read_dataset(path)
    if all(t.feat for t in tracks):
        return read_dataset(path, check_features=True)
    full_path = path.parent / "full.txt"
    if not full_path.is_file():
        raise ValueError(
            f"{path}: lines have no 'feat' and there is no full.txt beside it; "
            f"run 'coverhunter extract {path.parent}' first"
        )
    full = {t.track_id: t for t in read_dataset(full_path, check_features=True)}
    missing = [t.track_id for t in tracks if not t.feat and t.track_id not in full]
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} recording(s) have no features in {full_path} "
            f"(e.g. {missing[:3]}); did their extraction fail?"
        )
    return [t if t.feat else full[t.track_id] for t in tracks]


def evaluate_tracks(
    model: torch.nn.Module,
    queries: list[Track],
    refs: list[Track] | None,
    cfg: Config,
    *,
    device="cpu",
    cache: EmbeddingCache | None = None,
    query_in_ref=None,
    mode: str = "standard",
    bootstrap: int = 0,
    verbose: bool = False,
    return_dist: bool = False,
    reranker=None,
):
    """Metrics of ``queries`` against ``refs`` (None: the queries themselves, self excluded).

    Returns the report and, with ``return_dist``, the full distance matrix (else None:
    distances are then computed and ranked in blocks of queries, in bounded memory).
    ``reranker`` (a :class:`coverhunter.reranker.Reranker`) re-orders each query's
    shortlist; the returned matrix then holds the re-ordered distances.
    """
    win = windowing(cfg)
    inp = model_input(cfg)  # the CQT files, or the chroma stored beside them
    was_training = model.training
    model.eval()
    try:
        q_emb = embed_tracks(
            model,
            [inp.source(t.feat) for t in queries],
            win,
            device=device,
            batch_size=cfg.eval.batch_size,
            cache=cache,
            verbose=verbose,
            desc="embed queries",
            load=inp.loader(),
        )
        r_emb = (
            q_emb
            if refs is None
            else embed_tracks(
                model,
                [inp.source(t.feat) for t in refs],
                win,
                device=device,
                batch_size=cfg.eval.batch_size,
                cache=cache,
                verbose=verbose,
                desc="embed refs",
                load=inp.loader(),
            )
        )
    finally:
        model.train(was_training)
    refs_ = queries if refs is None else refs
    q_list, r_list = [e for e, _ in q_emb], [e for e, _ in r_emb]
    shape = (len(queries), len(refs_))
    if refs is None:
        exclude = self_exclusion(len(queries))
    elif query_in_ref:
        exclude = pairs_exclusion(shape, query_in_ref)
    else:
        exclude = None
    to_refs = distances_to(r_list, cfg.eval.distance)  # references prepared once for all blocks
    full = to_refs(q_list) if return_dist else None
    if full is not None and reranker is not None:
        full = reranker.rerank_block(full, 0, _mask(exclude, 0, len(queries)))

    def rows(a: int, b: int) -> np.ndarray:
        d = full[a:b].copy() if full is not None else to_refs(q_list[a:b])
        if full is None and reranker is not None:
            d = reranker.rerank_block(d, a, _mask(exclude, a, b))
        if mode == "original" and exclude is not None:  # the original marks exclusions by -1
            d[exclude(a, b) if callable(exclude) else exclude[a:b]] = -1.0
        return d

    qw, rw = [t.work for t in queries], [t.work for t in refs_]
    if mode == "original":
        report = evaluate_distances(rows, qw, rw, mode="original", topk=10000)
    else:
        report = evaluate_distances(rows, qw, rw, exclude=exclude, bootstrap=bootstrap)
    return report, full


def validate_model(
    model: torch.nn.Module, cfg: Config, exp_dir: Path, val_tracks: list[Track], device
) -> dict:
    """Validation MAP (self-query on the val list) and the metrics of the config's test sets
    (``eval.test_sets``, paths relative to ``exp_dir``): what training monitors and
    ``coverhunter train EXP_DIR --only-eval`` reports."""
    out = {}
    if val_tracks and len({t.work for t in val_tracks}) > 1:
        report, _ = evaluate_tracks(model, val_tracks, None, cfg, device=device)
        out.update(val_map=report.map, val_mr1=report.mr1, val_hit_rate=report.hit_rate)
    for name, spec in cfg.eval.test_sets:
        spec = dict(spec)
        q = read_dataset(resolve_path(spec["query_path"], exp_dir), check_features=True)
        rp = spec.get("ref_path", spec["query_path"])
        same = rp == spec["query_path"]
        r = None if same else read_dataset(resolve_path(rp, exp_dir), check_features=True)
        pairs = (
            read_query_in_ref(resolve_path(spec["query_in_ref_path"], exp_dir))
            if spec.get("query_in_ref_path") and not same
            else None
        )
        report, _ = evaluate_tracks(model, q, r, cfg, device=device, query_in_ref=pairs)
        out.update(
            {
                f"{name}_map": report.map,
                f"{name}_mr1": report.mr1,
                f"{name}_hit_rate": report.hit_rate,
                f"{name}_top10": report.top10,
            }
        )
    return out


def _mask(exclude, a: int, b: int):
    return None if exclude is None else (exclude(a, b) if callable(exclude) else exclude[a:b])


def run_evaluation(
    model_dir: str | Path,
    query_path: str | Path,
    ref_path: str | Path | None = None,
    *,
    query_in_ref_path=None,
    device: str | None = None,
    mode: str = "standard",
    bootstrap: int = 0,
    output: str | Path | None = None,
    plots: Path | None = None,
    cache_dir: Path | None = None,
    chunk_s: float | None = None,
    hop_s: float | None = None,
    distance: str | None = None,
    rerank: int = 0,
    rerank_source: str = "chroma",
    rerank_weight: float | None = None,
    rerank_expand: int | None = None,
    rerank_expand_votes: float | None = None,
    rerank_expansion_weight: float | None = None,
    rerank_grow_after: int | None = None,
    rerank_first_stage: str | None = None,
    rerank_coarse_keep: float | None = None,
    rerank_widen_after: int | None = None,
    rerank_scan_below: int | None = None,
) -> EvalReport:
    """The ``evaluate`` command: load a model (ours or the original's), evaluate, write JSON.

    ``rerank`` > 0 re-ranks each query's top ``rerank`` (:mod:`coverhunter.rerank`);
    ``rerank_weight``, ``rerank_expand``, ``rerank_expand_votes``, ``rerank_expansion_weight``,
    ``rerank_grow_after``, ``rerank_first_stage``, ``rerank_coarse_keep``,
    ``rerank_widen_after`` and ``rerank_scan_below`` default to that module's defaults.
    """
    dev = resolve_device(device)
    lm: LoadedModel = load_model(model_dir, dev)
    cfg = lm.config
    ev = {k: v for k, v in (("chunk_s", chunk_s), ("hop_s", hop_s), ("distance", distance)) if v is not None}
    if ev:
        cfg = Config(**{**cfg.__dict__, "eval": EvalConfig(**{**cfg.eval.__dict__, **ev})})
    queries = read_eval_list(query_path)
    same = ref_path is None or Path(ref_path).resolve() == Path(query_path).resolve()
    refs = None if same else read_eval_list(ref_path)
    pairs = read_query_in_ref(query_in_ref_path) if query_in_ref_path and not same else None
    model_dir = Path(model_dir)
    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    cache = EmbeddingCache(cache_root, lm.fingerprint, windowing(cfg))
    reranker = None
    if rerank:  # two-stage search: re-order each query's top `rerank` (coverhunter.rerank)
        from .rerank import RerankConfig
        from .reranker import build_reranker

        given = {
            "weight": rerank_weight,
            "expand": rerank_expand,
            "expand_votes": rerank_expand_votes,
            "expansion_weight": rerank_expansion_weight,
            "grow_after": rerank_grow_after,
            "first_stage": rerank_first_stage,
            "coarse_keep": rerank_coarse_keep,
            "widen_after": rerank_widen_after,
            "scan_below": rerank_scan_below,
        }
        rr = RerankConfig(k=rerank, source=rerank_source, **{k: v for k, v in given.items() if v is not None})
        if lm.summary_projection is None and rr.first_stage != "recurrence":
            # a newly trained model has none until fit-summary: its two-stage search then
            # compares raw summaries and finds fewer covers (0.54 against 0.61 MAP on the
            # fine_chroma recipe's test corpus)
            log.warning(
                "%s has no 2D Fourier summary projection: the first stage compares raw summaries; "
                "'coverhunter fit-summary MODEL TRAIN_LIST' fits one from training works",
                lm.source,
            )
        reranker = build_reranker(
            lm.model,
            cfg,
            queries,
            refs,
            rr,
            device=dev,
            cache_dir=cache_root,
            fingerprint=lm.fingerprint,
            verbose=True,
            projection=lm.summary_projection,
        )
    report, dist = evaluate_tracks(
        lm.model,
        queries,
        refs,
        cfg,
        device=dev,
        cache=cache,
        query_in_ref=pairs,
        mode=mode,
        bootstrap=bootstrap,
        verbose=True,
        return_dist=plots is not None,
        reranker=reranker,
    )
    if reranker is not None:
        log.info("%s", reranker.summary())
    if report.n_queries == 0:
        raise ValueError(
            f"{query_path}: no query has a relevant reference (a recording of the same "
            f"work) in {ref_path or query_path}; nothing to evaluate"
        )
    if output is not None:
        extra = (
            {}
            if reranker is None
            else {
                "rerank": {
                    "k": reranker.cfg.k,
                    "grow_after": reranker.cfg.grow_after,
                    "k_used": reranker.k_used,
                    "pool": reranker.cfg.pool,
                    "global_weight": reranker.cfg.global_weight,
                    "first_stage": reranker.cfg.first_stage,
                    "source": reranker.cfg.source,
                    "weight": reranker.cfg.weight,
                    "expand": reranker.cfg.expand,
                    "expand_votes": reranker.cfg.expand_votes,
                    "expansion_weight": reranker.cfg.expansion_weight,
                    "expansion_top": reranker.cfg.expansion_top,
                    "coarse_keep": reranker.cfg.coarse_keep,
                    "coarse_min": reranker.cfg.coarse_min,
                    "widen_after": reranker.cfg.widen_after,
                    "widen": reranker.cfg.widen,
                    "scan_below": reranker.cfg.scan_below,
                    "scanned": reranker.scan is not None,
                    "seconds": reranker.seconds,
                    "seconds_per_query": reranker.seconds / max(1, reranker.n_queries),
                    "alignments_per_query": reranker.n_pairs / max(1, reranker.n_queries),
                    "alignments_computed_per_query": reranker.n_computed / max(1, reranker.n_queries),
                    "coarse_alignments_per_query": reranker.n_coarse / max(1, reranker.n_queries),
                }
            }
        )
        atomic_write_text(
            Path(output),
            json.dumps(
                {
                    **report.to_dict(per_query=True),
                    "model": str(lm.source),
                    "query": str(query_path),
                    "ref": str(ref_path or query_path),
                    **extra,
                },
                indent=2,
                allow_nan=False,
            ),
        )
    if plots is not None:
        from .plots import write_plots

        tracks = queries + [t for t in refs or [] if t.track_id not in {q.track_id for q in queries}]
        inp = model_input(cfg)
        embs = embed_tracks(  # read back from the evaluation's embedding cache
            lm.model,
            [inp.source(t.feat) for t in tracks],
            windowing(cfg),
            device=dev,
            cache=cache,
            load=inp.loader(),
        )
        pooled = np.stack([e.mean(0) for e, _ in embs])
        write_plots(Path(plots), queries, refs, dist, pooled, tracks)
    return report
