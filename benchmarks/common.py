"""What the benchmark scripts share. A script run as ``python benchmarks/<name>.py`` has
``benchmarks/`` on its path, so ``from common import ...`` finds this file (the tests'
``load_benchmark`` puts it there too)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from coverhunter import rerank as R
from coverhunter import reranker as RK
from coverhunter.chroma import CHROMA_SPEC, search_view, spec_views

log = logging.getLogger("benchmarks")


def model_embeddings(lm, feats: list, device="cpu") -> list[np.ndarray]:
    """A model's chunk embeddings (n_chunks, E) float32 of recordings, as ``evaluate``
    embeds them: ``feats`` are CQT files (each model reads its own input: the CQT, or the
    fine chroma stored beside it, :mod:`coverhunter.inputs`) or model-input arrays."""
    from coverhunter.embed import embed_tracks
    from coverhunter.evaluate import windowing
    from coverhunter.inputs import model_input

    cfg = lm.config
    lm.model.eval()
    inp = model_input(cfg)
    out = embed_tracks(
        lm.model,
        [inp.source(f) for f in feats],
        windowing(cfg),
        device=device,
        batch_size=cfg.eval.batch_size,
        load=inp.loader(),
    )
    return [np.asarray(e, np.float32) for e, _ in out]


def reranked(
    dist: np.ndarray,
    align,
    summaries: np.ndarray,
    rr: R.RerankConfig,
    votes: np.ndarray | None = None,
    scan: np.ndarray | None = None,
) -> tuple:
    """Every recording a query against the others, re-ranked by ``evaluate --rerank``'s
    code (``coverhunter.reranker.Reranker``, symmetric pairs aligned once, as the all-pairs
    baseline aligns each pair once) from precomputed chroma, summaries and recurrence
    votes (first stage ``"recurrence"``) and the scan beside them where it scans
    (``coverhunter.reranker.coarse_scan``): (re-ranked distances, the Reranker with its
    counts)."""
    rk = RK.Reranker(
        rr,
        query_align=align,
        ref_align=align,
        query_summary=summaries,
        ref_summary=summaries,
        votes=votes,
        scan=scan,
        coarse_view=coarse_view(align),
        symmetric=True,
    )
    if votes is not None and rr.expand > 0 and rr.expand_votes > 0:
        # the anchor's own votes: its row of the vote matrix, as build_reranker gives them
        rk.anchor_votes = RK.anchor_vote_rows(align, CHROMA_SPEC, votes)
    return rk.rerank_block(dist, 0, exclude=np.eye(len(dist), dtype=bool)), rk


def coarse_view(align) -> int | None:
    """The view of the alignment chroma the coarse pass aligns (``Reranker.coarse_view``):
    the search view of :data:`coverhunter.chroma.CHROMA_SPEC` when ``align`` (a list of
    AlignmentFeatures) has its views, else all (None)."""
    spec = CHROMA_SPEC
    full = len(align) and align[0].chroma.shape[1] == 12 * len(spec_views(spec))
    return search_view(spec) if full else None


def timed(fn, *args, **kw):
    t0 = time.process_time()
    out = fn(*args, **kw)
    return out, time.process_time() - t0


def cached(path: Path | None, key: str, compute):
    """``(value, seconds) = timed(compute)``, kept in ``path`` (an ``.npz``) under ``key`` so
    that a run stopped later (a long catalogue) does not compute it again; a file of
    another key is recomputed. The seconds are those of the run that computed it."""
    if path is not None and path.is_file():
        with np.load(path) as z:
            if str(z["key"]) == key:
                log.info("%s: reused", path)
                return z["value"], float(z["seconds"])
    value, secs = timed(compute)
    if path is not None:
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, value=value, seconds=secs, key=key)
        os.replace(tmp, path)
    return value, secs


def parse_variant(name: str, text: str, base=None) -> tuple[str, object]:
    """``FIELD=VALUE,FIELD=VALUE`` -> (name, ``base`` with those fields changed); ``base``
    is a frozen dataclass, the default ``RerankConfig()`` when None. A value takes the
    type of the field's default: ``true``/``false`` for a bool, ``a:b:c`` for a tuple of
    numbers."""
    base = R.RerankConfig() if base is None else base
    known = sorted(f.name for f in fields(base))
    changes = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key not in known or not value:
            raise SystemExit(
                f"--variant {name}: {part!r} is not FIELD=VALUE of {type(base).__name__} ({known})"
            )
        changes[key] = _typed(name, key, value, getattr(base, key))
    return name, replace(base, **changes)


def _typed(name: str, key: str, value: str, default):
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false"):
                raise ValueError(value)
            return value.lower() == "true"
        if isinstance(default, tuple):
            return tuple(float(v) for v in value.split(":"))
        return type(default)(value)
    except ValueError:
        raise SystemExit(f"--variant {name}: {key}={value!r} is not a {type(default).__name__}") from None


def add_search_arguments(ap) -> None:
    """``--query-rates`` and ``--query-stride``: the recurrence votes' search settings
    (:func:`search_params` reads them)."""
    ap.add_argument(
        "--query-rates",
        type=float,
        nargs="+",
        default=None,
        metavar="RATE",
        help="the recurrence votes' tempo rates (default: RecurrenceParams')",
    )
    ap.add_argument(
        "--query-stride",
        type=int,
        default=None,
        help="the recurrence votes' query stride (default: RecurrenceParams')",
    )


def search_params(args):
    """The default ``RecurrenceParams`` with the search settings of
    :func:`add_search_arguments` that were given."""
    from coverhunter.index.recurrence import RecurrenceParams

    params = RecurrenceParams()
    if args.query_rates:
        params = replace(params, query_rates=tuple(args.query_rates))
    if args.query_stride:
        params = replace(params, query_stride=args.query_stride)
    return params
