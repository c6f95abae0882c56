"""Which works are performed where: recordings of any length, medleys, concerts, DJ mixes.

A recording is decoded and analysed block by block (``stream.recording_analysis``), cut into
the index's chunk windows and embedded in batches, so memory is bounded by the
(frames, 96) CQT (69 MB for 2 hours) whatever the length. Then:

1. every chunk is searched in the catalogue: for each candidate work, its best chunk
   similarity ``S[t, w]`` (works not among a chunk's neighbours get the lowest neighbour
   similarity, an upper bound);
2. a Viterbi path through the chunks picks one work per chunk, maximising the summed
   similarity minus ``switch_cost`` x (typical gap between a chunk's best and second-best
   work) for each change of work, so one odd chunk does not open a segment;
3. each run of chunks with one work is a segment: its time range, and the catalogue
   search of its chunks alone gives the score, offsets, calibrated probability, p-value
   and verdict exactly as ``identify`` computes them for a whole recording.

Boundaries fall half-way through the overlap of the last chunk of one segment and the
first of the next, so their precision is about a quarter of a chunk (about 4 s with
15 s chunks every 7.5 s).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .audio import BLOCK_S, AudioError, audio_duration
from .checkpoint import LoadedModel
from .chroma import CHROMA_SPEC, fine_views
from .embed import Windowing, chunk_starts, cut_chunk, embed_chunks, l2_normalise
from .index import CatalogueIndex, Match
from .inputs import require_cqt_input
from .stream import ProgressLog, recording_analysis

log = logging.getLogger(__name__)

WHOLE_MAX_CHUNKS = 200  # up to this many chunks (~25 min) the whole-recording search is exact
NEIGHBOURS = 64  # catalogue chunks looked up per query chunk for the segmentation


@dataclass(frozen=True)
class Segment:
    """A time range of the query and the work performed there."""

    start_s: float
    end_s: float
    work: str
    track_id: str
    score: float  # best chunk-pair similarity inside the range
    query_offset_s: float  # start of the best chunk in the query
    ref_offset_s: float  # start of the matching chunk in the catalogue track
    probability: float | None = None
    p_value: float | None = None
    verdict: str = ""


def verdict_of(matches: list[Match], false_alarm: float) -> str:
    """``identify``'s rule: "match" when the best p-value is at most ``false_alarm``."""
    if matches and matches[0].p_value is not None:
        return "match" if matches[0].p_value <= false_alarm else "no cover in the catalogue"
    return ""


# ---------------------------------------------------------------------------
# embedding a CQT of any length


def embed_features(
    lm: LoadedModel, feat: np.ndarray, win: Windowing, device="cpu", batch_chunks: int = 256
) -> tuple[np.ndarray, list[float]]:
    """L2-normalised chunk embeddings of a CQT, a batch of windows at a time.

    Parameters
    ----------
    feat : np.ndarray, shape (frames, n_bins)

    Returns
    -------
    (np.ndarray, shape (n_chunks, E), float32; list of float)
        The same windows as ``index.embed_recording``, with their starts in seconds.
    """
    require_cqt_input(lm.config, lm.source, "segment search")
    starts = chunk_starts(len(feat), win.chunk, win.hop)
    out = []
    for i in range(0, len(starts), batch_chunks):
        chunks = np.stack(
            [cut_chunk(feat, s, win.chunk, win.mean_size) for s in starts[i : i + batch_chunks]]
        )
        out.append(embed_chunks(lm.model, chunks, device, lm.config.eval.batch_size))
    emb = l2_normalise(np.concatenate(out)).astype(np.float32)
    fps = lm.config.features.frames_per_second
    return emb, [round(s / fps, 3) for s in starts]


# ---------------------------------------------------------------------------
# segmentation


def chunk_work_scores(
    index: CatalogueIndex,
    emb: np.ndarray,
    k: int = NEIGHBOURS,
    per_chunk: int = 3,
    max_works: int = 256,
    block: int = 256,
    approximate: bool | None = None,
) -> tuple[list[str], np.ndarray]:
    """Best similarity of every query chunk to each candidate work.

    Parameters
    ----------
    emb : np.ndarray, shape (m, E)
        Unit chunk embeddings of the query.
    k : int
        Catalogue neighbours looked up per chunk.
    per_chunk : int
        The best ``per_chunk`` works of each chunk become candidates (at most ``max_works``,
        the most frequent first).

    Returns
    -------
    (list of str, np.ndarray, shape (m, n_works))
        Candidate works and ``S[t, w]``; a work missing from chunk t's neighbours gets the
        lowest neighbour similarity of that chunk.
    """
    tracks = index.tracks()
    row_starts = np.array([t["row"] for t in tracks])
    work_of_track = [t["work"] for t in tracks]
    k = min(k, index.meta["n_vectors"])
    per_chunk_best: list[dict[str, float]] = []
    floors = []
    for i in range(0, len(emb), block):
        sims, rows = index.search_vectors(emb[i : i + block], k, approximate)
        owner = np.searchsorted(row_starts, rows, side="right") - 1
        for srow, rrow, orow in zip(sims, rows, owner):
            best: dict[str, float] = {}
            for s, r, o in zip(srow, rrow, orow):
                if r >= 0 and work_of_track[o] not in best:
                    best[work_of_track[o]] = float(s)
            per_chunk_best.append(best)
            floors.append(float(srow[rrow >= 0].min()) if (rrow >= 0).any() else -1.0)
    votes: dict[str, int] = {}
    for best in per_chunk_best:
        for w in sorted(best, key=best.get, reverse=True)[:per_chunk]:
            votes[w] = votes.get(w, 0) + 1
    works = sorted(votes, key=lambda w: (-votes[w], w))[:max_works]
    col = {w: j for j, w in enumerate(works)}
    S = np.repeat(np.asarray(floors, np.float64)[:, None], len(works), axis=1)
    for t, best in enumerate(per_chunk_best):
        for w, s in best.items():
            if w in col:
                S[t, col[w]] = s
    return works, S


def viterbi_path(S: np.ndarray, switch: float) -> np.ndarray:
    """Column per row maximising ``sum S[t, path[t]] - switch * (number of changes)``.

    Parameters
    ----------
    S : np.ndarray, shape (m, n)
    switch : float >= 0

    Returns
    -------
    np.ndarray, shape (m,), int
    """
    m, n = S.shape
    back = np.zeros((m, n), np.int64)
    score = S[0].copy()
    for t in range(1, m):
        j = int(score.argmax())
        stay = score
        move = score[j] - switch
        back[t] = np.where(stay >= move, np.arange(n), j)
        score = np.maximum(stay, move) + S[t]
    path = np.empty(m, np.int64)
    path[-1] = int(score.argmax())
    for t in range(m - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def _runs(labels: np.ndarray) -> list[tuple[int, int]]:
    """[first, last] chunk index of each run of equal labels."""
    cut = np.flatnonzero(np.diff(labels)) + 1
    edges = np.concatenate([[0], cut, [len(labels)]])
    return [(int(a), int(b) - 1) for a, b in zip(edges[:-1], edges[1:])]


def find_segments(
    index: CatalogueIndex,
    emb: np.ndarray,
    starts: list[float],
    duration_s: float,
    chunk_s: float,
    *,
    false_alarm: float = 0.01,
    switch_cost: float = 3.0,
    approximate: bool | None = None,
) -> list[Segment]:
    """Time ranges of the query, each with the work performed there.

    Parameters
    ----------
    emb : np.ndarray, shape (m, E)
        Unit chunk embeddings of the query, windows of ``chunk_s`` seconds.
    starts : list of float
        Each chunk's start in seconds.
    duration_s : float
        Length of the query (the last segment ends there).
    switch_cost : float
        Price of a change of work, in units of the median gap between a chunk's best and
        second-best candidate work.

    Returns
    -------
    list of Segment
        In time order, covering [0, duration_s]; neighbours never share a work.
    """
    if len(emb) == 0 or index.meta["n_vectors"] == 0:
        return []
    works, S = chunk_work_scores(index, emb, approximate=approximate)
    top2 = -np.sort(-S, axis=1)[:, :2] if S.shape[1] > 1 else np.c_[S, S]
    scale = max(1e-3, float(np.median(top2[:, 0] - top2[:, 1])))
    labels = viterbi_path(S, switch_cost * scale)
    segs: list[Segment] = []
    runs = _runs(labels)
    for i, (a, b) in enumerate(runs):
        lo = 0.0 if i == 0 else (starts[a - 1] + chunk_s + starts[a]) / 2
        hi = duration_s if i == len(runs) - 1 else (starts[b] + chunk_s + starts[b + 1]) / 2
        seg = _segment(
            index, emb[a : b + 1], starts[a : b + 1], works[labels[a]], lo, hi, false_alarm, approximate
        )
        if segs and segs[-1].work == seg.work:  # same work after the search: one segment
            seg = _merge(segs.pop(), seg)
        segs.append(seg)
    return segs


def _segment(
    index: CatalogueIndex,
    emb: np.ndarray,
    starts: list[float],
    work: str,
    lo: float,
    hi: float,
    false_alarm: float,
    approximate: bool | None,
) -> Segment:
    """The catalogue search of one range's chunks; the labelled work's match when the
    search lists it (else the search's best), with its own verdict."""
    matches = index.search(emb, list(starts), 10, approximate)
    m = next((x for x in matches if x.work == work), matches[0])
    return Segment(
        round(lo, 2),
        round(hi, 2),
        m.work,
        m.track_id,
        m.score,
        m.query_offset_s,
        m.ref_offset_s,
        m.probability,
        m.p_value,
        verdict_of([m], false_alarm),
    )


def _merge(a: Segment, b: Segment) -> Segment:
    best = a if a.score >= b.score else b
    return Segment(
        a.start_s, b.end_s, **{k: v for k, v in asdict(best).items() if k not in ("start_s", "end_s")}
    )


def matches_from_segments(segs: list[Segment], top: int) -> list[Match]:
    """Works of a long recording: each work's best segment, best first."""
    best: dict[str, Segment] = {}
    for s in segs:
        if s.work not in best or s.score > best[s.work].score:
            best[s.work] = s
    ranked = sorted(best.values(), key=lambda s: -s.score)[:top]
    return [
        Match(s.work, s.track_id, s.score, s.query_offset_s, s.ref_offset_s, s.probability, s.p_value)
        for s in ranked
    ]


# ---------------------------------------------------------------------------
# one recording, end to end


def whole_matches(
    index: CatalogueIndex,
    emb: np.ndarray,
    starts: list[float],
    top: int,
    *,
    feat: np.ndarray | None = None,
    rerank: int | None = None,
    chroma=None,
    approximate: bool | None = None,
    projection=None,
    rerank_grow_after: int | None = None,
    rerank_versions: int | None = None,
    fine: dict | None = None,
) -> list[Match]:
    """``identify``'s matches: the catalogue search, re-ranked by chroma alignment as
    ``index.identify`` does when the CQT ``feat`` is given and the index stores chroma.

    ``rerank``: shortlist size (default ``rerank.DEFAULT_K``, 0 = off), grown in large
    catalogues beyond ``rerank_grow_after`` recordings (default ``rerank.DEFAULT_GROW_AFTER``,
    0 = never; :func:`coverhunter.rerank.shortlist_length`), aligning up to
    ``rerank_versions`` recordings of each shortlisted work (default
    ``rerank.DEFAULT_VERSIONS``); ``chroma``: an ``index.chroma_store.IndexChroma`` of
    the index to reuse across queries; ``projection``: the model's summary projection, for
    the ``IndexChroma`` made when none is given; ``fine``: the query's fine chroma views
    (:func:`coverhunter.chroma.audio_chroma`), which an index of the fine chroma needs.
    """
    from . import rerank as rr
    from .index.chroma_store import catalogue_reranking

    setup = (
        None
        if feat is None
        else catalogue_reranking(index, rerank, rerank_grow_after, chroma, projection, rerank_versions)
    )
    if setup is None:
        return index.search(emb, starts, top, approximate)
    cfg, chroma = setup
    return rr.search_reranked(
        index, emb, starts, top, chroma.query_features(feat, fine), chroma, cfg, approximate
    )


def identify_embedded(
    index: CatalogueIndex,
    emb: np.ndarray,
    starts: list[float],
    duration_s: float,
    chunk_s: float,
    name: str,
    *,
    top: int = 10,
    false_alarm: float = 0.01,
    segments: bool = False,
    approximate: bool | None = None,
    feat: np.ndarray | None = None,
    rerank: int | None = None,
    chroma=None,
    rerank_grow_after: int | None = None,
    rerank_versions: int | None = None,
    fine: dict | None = None,
) -> dict:
    """The answer for one recording's chunk embeddings, as ``identify --json`` gives it.

    With its CQT ``feat`` (and its fine chroma views ``fine``), the whole-recording matches
    are re-ranked as ``identify`` does (see :func:`whole_matches`); segments are not
    re-ranked.

    Returns
    -------
    dict
        ``query``, ``verdict``, ``error``, ``matches`` (as ``QueryResult.to_dict``),
        ``duration_s`` and, with ``segments``, ``segments`` (list of Segment dicts).
        Recordings of more than ``WHOLE_MAX_CHUNKS`` chunks take their matches from
        their segments (each work's best), which keeps memory bounded.
    """
    segs = None
    if segments or len(emb) > WHOLE_MAX_CHUNKS:
        segs = find_segments(
            index, emb, starts, duration_s, chunk_s, false_alarm=false_alarm, approximate=approximate
        )
    if len(emb) <= WHOLE_MAX_CHUNKS:
        matches = whole_matches(
            index,
            emb,
            starts,
            top,
            feat=feat,
            rerank=rerank,
            chroma=chroma,
            approximate=approximate,
            rerank_grow_after=rerank_grow_after,
            rerank_versions=rerank_versions,
            fine=fine,
        )
    else:
        matches = matches_from_segments(segs, top)
    out = {
        "query": name,
        "verdict": verdict_of(matches, false_alarm),
        "error": None,
        "matches": [asdict(m) for m in matches],
        "duration_s": duration_s,
    }
    if segments:
        out["segments"] = [asdict(s) for s in segs]
    return out


def identify_features(
    index: CatalogueIndex,
    lm: LoadedModel,
    feat: np.ndarray,
    name: str,
    *,
    top: int = 10,
    false_alarm: float = 0.01,
    segments: bool = False,
    device="cpu",
    approximate: bool | None = None,
    rerank: int | None = None,
    rerank_grow_after: int | None = None,
    rerank_versions: int | None = None,
    fine: dict | None = None,
) -> dict:
    """The answer for one recording's CQT (frames, n_bins) and fine chroma views; see
    :func:`identify_embedded`."""
    index.check_model(lm)
    win = index.windowing
    fps = lm.config.features.frames_per_second
    emb, starts = embed_features(lm, feat, win, device)
    return identify_embedded(
        index,
        emb,
        starts,
        round(len(feat) / fps, 3),
        win.chunk / fps,
        name,
        top=top,
        false_alarm=false_alarm,
        segments=segments,
        approximate=approximate,
        feat=feat,
        rerank=rerank,
        rerank_grow_after=rerank_grow_after,
        rerank_versions=rerank_versions,
        fine=fine,
    )


def identify_file(
    index: CatalogueIndex,
    lm: LoadedModel,
    path: str | Path,
    *,
    top: int = 10,
    false_alarm: float = 0.01,
    segments: bool = False,
    device="cpu",
    approximate: bool | None = None,
    rerank: int | None = None,
    rerank_grow_after: int | None = None,
    rerank_versions: int | None = None,
    block_s: float = BLOCK_S,
    max_seconds: float | None = None,
    progress: Callable[[float], None] | None = None,
) -> dict:
    """Identify one audio file of any length in bounded memory; errors become ``error``.

    See :func:`identify_features` for the answer. With ``progress=None`` a recording
    longer than 10 minutes logs its progress every 10 s.
    """
    name = str(path)
    try:
        if progress is None:
            try:
                dur = audio_duration(path)
            except AudioError:
                dur = None
            progress = ProgressLog(Path(path).name, duration_s=dur) if dur is None or dur > 600 else None
        feat, fine = recording_analysis(
            path,
            lm.config.features,
            fine_views(CHROMA_SPEC),
            block_s=block_s,
            max_seconds=max_seconds,
            progress=progress,
        )
        if len(feat) == 0:
            raise AudioError(f"{path}: too short to analyse")
        return identify_features(
            index,
            lm,
            feat,
            name,
            top=top,
            false_alarm=false_alarm,
            segments=segments,
            device=device,
            approximate=approximate,
            rerank=rerank,
            rerank_grow_after=rerank_grow_after,
            rerank_versions=rerank_versions,
            fine=fine,
        )
    except (AudioError, OSError) as e:
        return {"query": name, "verdict": "error", "error": str(e), "matches": []}


def format_segments(segs: list[dict]) -> str:
    """Segments as a small text table (times as m:ss)."""

    def t(s):
        return f"{int(s // 60)}:{s % 60:04.1f}"

    lines = [f"  {'from':>7}  {'to':>7}  {'score':>6}  verdict / work (track)"]
    for s in segs:
        v = f"[{s['verdict']}] " if s["verdict"] else ""
        lines.append(
            f"  {t(s['start_s']):>7}  {t(s['end_s']):>7}  {s['score']:6.3f}  {v}{s['work']} ({s['track_id']})"
        )
    return "\n".join(lines)
