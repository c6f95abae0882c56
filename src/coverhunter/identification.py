"""Identify: which catalogue works a recording performs. The one path behind every surface.

``coverhunter identify`` (files, folders, ``--segments``, ``--output``), the service's
``POST /identify`` and the Python API all answer through :func:`identify`::

    source (audio path, Track, or decoded Recording)
      -> read: CQT and fine chroma, decoded block by block (stream.recording_analysis),
         or a Track's feature files
      -> embed: the index's chunk windows, a batch at a time (embed_query)
      -> search: the whole recording, re-ranked by chroma alignment when the index stores
         chroma (index.reranked_search.search_reranked); segments (which work where) when asked for, and
         for recordings of more than WHOLE_MAX_CHUNKS chunks, whose matches then come
         from their segments
      -> verdict (the one rule, :func:`verdict`) -> QueryResult

:class:`IdentifyOptions` (:mod:`coverhunter.config.search`, re-exported here) holds every
setting of a search, with the defaults the command line and the service start from. A
:class:`coverhunter.index.QueryResult` is the answer; its ``to_dict`` is the JSON each
surface gives (the service and ``--output`` add their own keys around it).

The package-level ``coverhunter.identify(index, lm, [paths])`` is :func:`identify_all`
(a list of QueryResult, as before this module existed).

Imports ``index`` and ``segments`` (never imported by them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from .audio import BLOCK_S, AudioError, audio_duration
from .checkpoint import LoadedModel
from .config import Config, IdentifyOptions
from .dataset import Track
from .embed import Windowing, chunk_starts, cut_chunk, embed_chunks, l2_normalise
from .index import CatalogueIndex, Match, QueryResult, Segment, recording_features
from .inputs import MissingInputError, input_of_analysis, input_views, model_input
from .segments import find_segments, matches_from_segments
from .stream import ProgressLog, recording_analysis

log = logging.getLogger(__name__)

WHOLE_MAX_CHUNKS = 200  # up to this many chunks (~25 min) the whole-recording search is exact
MATCH = "match"
NO_COVER = "no cover in the catalogue"
ERROR = "error"


@dataclass(frozen=True)
class Recording:
    """A decoded recording, ready to search.

    Attributes
    ----------
    name : str
        The ``query`` of its answer.
    cqt : np.ndarray, shape (frames, n_bins)
        Its CQT (dB), as :func:`coverhunter.stream.recording_analysis` gives it.
    chroma : dict of str to np.ndarray (T, 12), or None
        Its fine chroma views (:func:`coverhunter.chroma.audio_chroma`), for the
        re-ranking and, for a "fine_chroma" model, its input.
    emb : np.ndarray, shape (n_chunks, E), float32, optional
        Its unit chunk embeddings in the index's windows (:func:`embed_query`); made by
        :func:`identify` when None.
    starts : list of float, optional
        Each chunk's start in seconds (with ``emb``).
    """

    name: str
    cqt: np.ndarray
    chroma: dict | None = None
    emb: np.ndarray | None = None
    starts: list[float] | None = None


def verdict(p_value: float | None, false_alarm: float) -> str:
    """The one verdict rule, for a recording (its best match) and for a segment.

    Returns
    -------
    str
        "match" when ``p_value`` is at most ``false_alarm``, else "no cover in the
        catalogue"; "" without a p-value (an index that is not calibrated).
    """
    if p_value is None:
        return ""
    return MATCH if p_value <= false_alarm else NO_COVER


# ---------------------------------------------------------------------------
# reading and embedding


def source_name(source) -> str:
    """The ``query`` of a source's answer: a Recording's name, a Track's id, a path as given."""
    if isinstance(source, Recording):
        return source.name
    if isinstance(source, Track):
        return source.track_id
    return str(source)


def read_recording(
    source,
    cfg: Config,
    views=(),
    *,
    block_s: float = BLOCK_S,
    max_seconds: float | None = None,
    progress: Callable[[float], None] | None = None,
) -> Recording:
    """The CQT and fine chroma views of a source, decoded in bounded memory.

    Parameters
    ----------
    source : str, Path, Track or Recording
        An audio file (decoded block by block, :func:`coverhunter.stream.recording_analysis`),
        a Track (its ``feat`` file and the chroma beside it when readable, else its
        audio), or a Recording (returned as it is).
    views : sequence of str
        Fine chroma views to compute (:data:`coverhunter.chroma.VIEWS`).
    progress : callable, optional
        Seconds analysed so far; None: a recording longer than 10 minutes (or of unknown
        length) logs its progress every 10 s.

    Raises
    ------
    AudioError, OSError, ValueError
        The source cannot be read (the message names it).
    """
    if isinstance(source, Recording):
        return source
    name = source_name(source)
    if isinstance(source, Track) and source.feat and Path(source.feat).is_file():
        feat, chroma = recording_features(source, cfg, views)
        return Recording(name, np.asarray(np.load(feat) if isinstance(feat, str) else feat), chroma)
    path = source.audio if isinstance(source, Track) else source
    if progress is None:
        try:
            dur = audio_duration(path)
        except AudioError:
            dur = None
        progress = ProgressLog(Path(path).name, duration_s=dur) if dur is None or dur > 600 else None
    feat, chroma = recording_analysis(
        path, cfg.features, views, block_s=block_s, max_seconds=max_seconds, progress=progress
    )
    if len(feat) == 0:
        raise AudioError(f"{path}: too short to analyse")
    return Recording(name, feat, chroma)


def embed_query(
    lm: LoadedModel, rec: Recording, win: Windowing, device="cpu", batch_chunks: int = 256
) -> Recording:
    """``rec`` with its L2-normalised chunk embeddings, a batch of windows at a time.

    Parameters
    ----------
    win : Windowing
        The index's chunk windows (``index.windowing``).

    Returns
    -------
    Recording
        ``emb`` (n_chunks, E) float32 and ``starts`` (seconds) set: the windows of
        ``index.embed_recording``, in memory bounded by ``batch_chunks`` windows. ``rec``
        itself when it has them already.
    """
    if rec.emb is not None:
        return rec
    inp = model_input(lm.config)
    try:
        feat = np.asarray(input_of_analysis(inp, rec.cqt, rec.chroma or {}))
    except MissingInputError as e:
        raise MissingInputError(f"{rec.name}: {e}") from None
    starts = chunk_starts(len(feat), win.chunk, win.hop)
    out = []
    for i in range(0, len(starts), batch_chunks):
        chunks = np.stack(
            [
                cut_chunk(feat, s, win.chunk, win.mean_size, win.pad_value)
                for s in starts[i : i + batch_chunks]
            ]
        )
        out.append(embed_chunks(lm.model, chunks, device, lm.config.eval.batch_size))
    emb = l2_normalise(np.concatenate(out)).astype(np.float32)
    fps = inp.frames_per_second
    return replace(rec, emb=emb, starts=[round(s / fps, 3) for s in starts])


# ---------------------------------------------------------------------------
# the search


def reranking(index: CatalogueIndex, lm: LoadedModel, options: IdentifyOptions, chroma=None):
    """The re-ranking settings and stored chroma ``identify`` uses on ``index``
    (:func:`coverhunter.index.chroma_store.catalogue_reranking`), or None when it does
    not re-rank (``rerank`` 0, or no stored chroma)."""
    from .index.chroma_store import catalogue_reranking

    return catalogue_reranking(
        index,
        options.rerank,
        options.rerank_grow_after,
        chroma,
        lm.summary_projection,
        options.rerank_versions,
    )


def search_settings(
    index: CatalogueIndex,
    lm: LoadedModel,
    options: IdentifyOptions,
    chroma=None,
    n_chunks: int | None = None,
) -> dict:
    """How a query of ``n_chunks`` chunks (None: a short one) is searched in ``index``.

    Returns
    -------
    dict
        ``rerank``: the works its shortlist aligns (0: the embedding search alone, also
        without stored chroma and for recordings too long to search whole), and the
        ``rerank_grow_after`` and ``rerank_versions`` behind it (None when 0).
    """
    from . import rerank as rr

    if n_chunks is not None and n_chunks > WHOLE_MAX_CHUNKS:
        options = replace(options, rerank=0)
    setup = reranking(index, lm, options, chroma)
    if setup is None:
        return {"rerank": 0, "rerank_grow_after": None, "rerank_versions": None}
    n = index.meta["n_tracks"]
    return {
        "rerank": min(n, rr.shortlist_length(setup[0], n)),
        "rerank_grow_after": setup[0].grow_after,
        "rerank_versions": setup[0].versions,
    }


def _whole_matches(index, rec: Recording, options: IdentifyOptions, setup) -> list[Match]:
    """The search of the whole recording, re-ranked by chroma alignment with ``setup``."""
    from .index.reranked_search import search_reranked

    if setup is None:
        return index.search(rec.emb, rec.starts, options.top, options.approximate)
    cfg, chroma = setup
    return search_reranked(
        index,
        rec.emb,
        rec.starts,
        options.top,
        chroma.query_features(rec.cqt, rec.chroma),
        chroma,
        cfg,
        options.approximate,
    )


def identify(
    index: CatalogueIndex,
    lm: LoadedModel,
    source,
    options: IdentifyOptions | None = None,
    *,
    device="cpu",
    chroma=None,
    block_s: float = BLOCK_S,
    max_seconds: float | None = None,
    progress: Callable[[float], None] | None = None,
) -> QueryResult:
    """Which catalogue works one recording performs.

    Parameters
    ----------
    index : CatalogueIndex
    lm : LoadedModel
        The model the index was built with.
    source : str, Path, Track or Recording
        An audio file of any length and format, a Track (its feature files when it has
        them), or a decoded :class:`Recording` (embedded here unless it carries its
        embeddings).
    options : IdentifyOptions, optional
        Default: ``IdentifyOptions()``.
    chroma : coverhunter.index.chroma_store.IndexChroma, optional
        The index's stored chroma, to reuse across queries (it caches what it reads).
    block_s, max_seconds, progress
        Decoding of an audio file: see :func:`read_recording`.

    Returns
    -------
    QueryResult
        ``matches`` (at most ``top``, best first), ``verdict``, ``duration_s`` and, when
        asked for, ``segments``. A source that cannot be read gives ``verdict`` "error"
        and ``error`` (its message), no matches and no duration.

    Raises
    ------
    CatalogueError
        The index is empty or was built with another model.
    """
    options = options or IdentifyOptions()
    index.check_model(lm)
    index.check_not_empty()
    setup = reranking(index, lm, options, chroma)
    try:
        rec = read_recording(
            source,
            lm.config,
            input_views(lm.config, () if setup is None else setup[1].fine_views),
            block_s=block_s,
            max_seconds=max_seconds,
            progress=progress,
        )
    except (AudioError, OSError, ValueError) as e:
        return QueryResult(source_name(source), [], ERROR, str(e))
    win = index.windowing
    rec = embed_query(lm, rec, win, device)
    duration_s = round(len(rec.cqt) / lm.config.features.frames_per_second, 3)
    want = options.segments
    if want is None:
        want = duration_s > options.segments_after_s
    long = len(rec.emb) > WHOLE_MAX_CHUNKS  # searched by its segments, in bounded memory
    segs: list[Segment] | None = None
    if want or long:
        segs = find_segments(
            index,
            rec.emb,
            rec.starts,
            duration_s,
            win.chunk / model_input(lm.config).frames_per_second,
            switch_cost=options.switch_cost,
            approximate=options.approximate,
        )
        segs = [replace(s, verdict=verdict(s.p_value, options.false_alarm)) for s in segs]
    if long:
        matches = matches_from_segments(segs, options.top)
    else:
        matches = _whole_matches(index, rec, options, setup)
    best = matches[0].p_value if matches else None
    return QueryResult(
        rec.name, matches, verdict(best, options.false_alarm), None, duration_s, segs if want else None
    )


def identify_all(
    index: CatalogueIndex,
    lm: LoadedModel,
    sources: Iterable,
    options: IdentifyOptions | None = None,
    *,
    device="cpu",
    **changes,
) -> list[QueryResult]:
    """:func:`identify` of each source, in order: ``coverhunter.identify(index, lm, [...])``.

    Parameters
    ----------
    sources : iterable of str, Path, Track or Recording
    options : IdentifyOptions, optional
    **changes
        Fields of :class:`IdentifyOptions` set on ``options`` (``top=3``,
        ``rerank=0``, ``rerank_versions=1``, ...), as ``identify`` took them before the
        options existed.

    Returns
    -------
    list of QueryResult
    """
    from .index.chroma_store import IndexChroma

    unknown = set(changes) - {f.name for f in fields(IdentifyOptions)}
    if unknown:
        raise TypeError(f"identify: unknown option(s) {', '.join(sorted(unknown))}")
    options = replace(options or IdentifyOptions(), **changes)
    chroma = IndexChroma.of(index, lm.summary_projection)  # read once for every source
    return [identify(index, lm, s, options, device=device, chroma=chroma) for s in sources]


__all__ = [
    "IdentifyOptions",
    "Recording",
    "identify",
    "identify_all",
    "verdict",
    "read_recording",
    "embed_query",
    "search_settings",
    "source_name",
    "WHOLE_MAX_CHUNKS",
]
