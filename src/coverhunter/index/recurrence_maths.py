"""The recurrence index's settings and pure functions: shingles, key normalisation, voting.

:class:`RecurrenceParams` and steps 1-5 of :mod:`coverhunter.index.recurrence` (which
describes the method and imports every name here) as functions of arrays: delay-embedded
chroma shingles, their key normalisation (rolls) and centring, the weight of each
neighbour's vote and each recording's best band of votes. No faiss, no state.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numba
import numpy as np

from coverhunter.classical import N_CHROMA
from coverhunter.qmax import delay_embed

TRANSPOSITIONS = ("canonical", "all")
CENTRES = ("none", "frame", "shingle")
VOTES = ("count", "rank", "margin")


@dataclass(frozen=True)
class RecurrenceParams:
    """Settings of a :class:`~coverhunter.index.recurrence.RecurrenceIndex` (frames are
    chroma frames, 2.5 per second).

    The defaults were chosen on the two training-type corpora only (``tune-mix-w60-s1000``
    and ``-s1001``, ~370 recordings each, view c3; ``benchmarks/bench_first_stage.py``),
    recall@50 of every recording against the rest. From the first key-normalised index
    (m 7, tau 1, 30 neighbours, plain counts in 2.4 s bands: 0.36 / 0.34), each step on
    tune1001 (tune1000 agreed): hubness weighting (power 1; 2 was no better) +0.06,
    one vote per query shingle and band +0.03, frame centring +0.02, tau 2 (5.2 s of
    context in 84 values; m 10 or 14 at tau 1 did as well at 1.5-2.5 times the cost)
    +0.03, 16-frame bands over five tempo ratios (against 6-frame bands at ratio 1)
    +0.025, the match's transposition as a vote group +0.015, two query keys +0.026
    (three: another +0.02 at 1.6 times the cost). All together 0.57 / 0.51 against
    0.36 / 0.32 for the 2D Fourier summary and 0.67 / 0.64 for all-pairs alignment. Rank
    and margin votes lost to counts once hubs were weighted; dividing by the
    recording's length was neutral; stride 2 halves the memory and loses 0.02.

    The search's cost, chosen on a larger training-type corpus (``runs/fine_chroma/data``:
    3,611 recordings of 600 works, half the versions keeping the harmony; 300 seeded
    queries against all, HNSW; the shortlist of 142 the two-stage search aligns there,
    votes and projected summary fused as the first stage fuses them; all-pairs alignment
    finds 0.526 of the covers in its own top 142): the defaults before (every query
    shingle, ``ef_search`` 128) found 0.425 at 79 ms a query; ``ef_search`` 100 (the
    neighbour count, which bounds it from below) 0.427 at 71 ms; with ``query_stride`` 2
    0.419 at 36 ms. One query key instead of two: 0.407 (34 ms); 50 neighbours with
    stride 2: 0.404 (22 ms); HNSW degree 16: no faster. So ``query_stride`` 2 and
    ``ef_search`` 100: the votes at less than half the cost for 0.006 of recall.
    At catalogue scale (``benchmarks/bench_votes_tune.py``: 20,000 training-type
    recordings, 300 queries) no voting setting moved the fused shortlist's recall by
    more than 0.007; searching the query at three tempo rates did (on the 5,000-recording
    training-type catalogue, shortlist 167, the votes fused as the two-stage search fuses
    them; ``bench_votes_tune.py --distractors 5000 [--query-rates 1 --query-stride 2]``):
    rate 1 alone, every 2nd shingle, 0.380 (search and scoring 51 ms a query with 200
    neighbours); rates 0.85 / 1 / 1.18, every 4th shingle, 0.413 (75 ms). So
    ``query_rates`` (0.85, 1, 1.18) and ``query_stride`` 4:
    ``bench_catalogue_tune.py --distractors 5000``
    two-stage MAP 0.3315 against 0.3206 with the single-rate votes.
    Exact search against HNSW on the first 1,000 recordings of that corpus (112,384
    shingles, 150 queries, R@50 of the votes alone): exact 188 ms a query, R@50 0.346;
    HNSW 33 ms, 0.340. The exact scan costs about 1.7 us per catalogue shingle and query,
    as much as HNSW from about 20,000 shingles (some 180 recordings) on: ``exact_max``
    20,000 (it was 200,000, set when HNSW with the id filter looked slower).

    Attributes
    ----------
    m, tau : int
        Delay embedding: ``m`` frames, ``tau`` apart, per shingle.
    stride : int
        Every ``stride``-th catalogue shingle is indexed.
    query_stride : int
        Every ``query_stride``-th query shingle searches (1: all of them). Adjacent
        shingles overlap in all but one of their ``m`` frames and mostly find the same
        neighbours, so a stride of 2 halves the search for little recall.
    query_rates : tuple of float
        The query is also searched at these tempo rates (its chroma resampled in time,
        :func:`resample_time`; 1.0 = as it is), each rate voting on its own, and a
        recording scores its best rate: a cover much faster or slower than the query
        then still has shingles that look like the query's.
    neighbours : int
        Nearest catalogue shingles per query shingle.
    band : int
        Width of a time-offset band in frames.
    slopes : tuple of float
        Tempo ratios (query frames per catalogue frame) voted for; ``(1.0,)`` is plain
        offset voting.
    transpositions : str
        ``"canonical"`` (key-normalised shingles, one search) or ``"all"`` (12 rolls of
        each query shingle against unrolled catalogue shingles; the best band of any
        transposition counts).
    centre : str
        ``"frame"``: each frame of a shingle minus its mean over pitch classes;
        ``"shingle"``: the shingle minus its mean; ``"none"``.
    query_keys : int
        ``canonical``: each query shingle is searched rolled to its ``query_keys``
        strongest pitch classes (1: its canonical form only).
    key_groups : bool
        Votes of different transpositions (query roll minus catalogue roll) never share
        a band.
    vote : str
        ``"count"``, ``"rank"`` or ``"margin"`` (see :mod:`coverhunter.index.recurrence`).
    hub_power : float
        Votes are weighed by ``(1 + hubness) ** -hub_power`` (0: not at all).
    one_vote : bool
        A query shingle votes at most once per (recording, band): its best neighbour
        there (adjacent overlapping catalogue shingles otherwise all vote).
    length_power : float
        A recording's score is divided by its shingle count to this power.
    exact_max : int
        Above this many catalogue shingles the index becomes HNSW.
    hnsw_m, ef_search, ef_construction : int
        HNSW graph degree and search / build breadth.
    float16 : bool
        Store vectors as float16 (faiss scalar quantiser): half the memory.
    hub_probes : int
        Catalogue shingles sampled to count hubness (``hub_power > 0``).
    """

    m: int = 7
    tau: int = 2
    stride: int = 1
    query_stride: int = 4
    query_rates: tuple = (0.85, 1.0, 1.18)
    neighbours: int = 100
    band: int = 16
    slopes: tuple = (0.8, 0.9, 1.0, 1.1, 1.25)
    transpositions: str = "canonical"
    centre: str = "frame"
    query_keys: int = 2
    key_groups: bool = True
    vote: str = "count"
    hub_power: float = 1.0
    one_vote: bool = True
    length_power: float = 0.0
    exact_max: int = 20_000
    hnsw_m: int = 32
    ef_search: int = 100
    ef_construction: int = 80
    float16: bool = False
    hub_probes: int = 20_000

    def __post_init__(self):
        if (
            min(self.m, self.tau, self.stride, self.query_stride, self.neighbours, self.band, self.query_keys)
            < 1
        ):
            raise ValueError(
                f"m, tau, stride, query_stride, neighbours, band and query_keys must be >= 1: {self}"
            )
        if self.transpositions not in TRANSPOSITIONS:
            raise ValueError(f"transpositions must be one of {TRANSPOSITIONS}, got {self.transpositions!r}")
        if self.centre not in CENTRES:
            raise ValueError(f"centre must be one of {CENTRES}, got {self.centre!r}")
        if self.vote not in VOTES:
            raise ValueError(f"vote must be one of {VOTES}, got {self.vote!r}")
        if not self.slopes or any(s <= 0 for s in self.slopes):
            raise ValueError(f"slopes must be positive tempo ratios, got {self.slopes}")
        object.__setattr__(self, "slopes", tuple(float(s) for s in self.slopes))
        if not self.query_rates or any(r <= 0 for r in self.query_rates):
            raise ValueError(f"query_rates must be positive tempo rates, got {self.query_rates}")
        object.__setattr__(self, "query_rates", tuple(float(r) for r in self.query_rates))

    @property
    def dim(self) -> int:
        """Length of one shingle vector: ``12 m``."""
        return N_CHROMA * self.m

    @property
    def span(self) -> int:
        """Chroma frames one shingle covers: ``(m - 1) tau + 1``."""
        return (self.m - 1) * self.tau + 1


# ---------------------------------------------------------------------------
# pure functions: shingles, key normalisation, voting


def shingles(chroma: np.ndarray, m: int, tau: int = 1) -> np.ndarray:
    """Delay-embedded chroma: (T - (m-1) tau, 12 m) float32; empty when T is too short.

    Unlike :func:`coverhunter.qmax.delay_embed`, a recording shorter than one
    shingle gives no rows (nothing to match) instead of a zero-padded one.
    """
    x = np.asarray(chroma, np.float32)
    if x.ndim != 2 or x.shape[1] != N_CHROMA:
        raise ValueError(f"chroma must have shape (T, {N_CHROMA}), got {x.shape}")
    if len(x) < (m - 1) * tau + 1:
        return np.zeros((0, N_CHROMA * m), np.float32)
    return delay_embed(x, m, tau)


def resample_time(chroma: np.ndarray, rate: float) -> np.ndarray:
    """Chroma (T, 12) played ``rate`` times as fast: (about T / rate, 12) float32, linear
    interpolation between frames, each frame max-normalised again; ``rate`` 1: unchanged."""
    x = np.asarray(chroma, np.float32)
    if rate == 1.0 or len(x) < 2:
        return x
    t = np.arange(0.0, len(x) - 1, rate)
    lo = np.floor(t).astype(np.int64)
    frac = (t - lo).astype(np.float32)[:, None]
    y = (1 - frac) * x[lo] + frac * x[np.minimum(lo + 1, len(x) - 1)]
    return y / np.maximum(y.max(axis=1, keepdims=True), 1e-9)


def roll_shingles(x: np.ndarray, shift: np.ndarray | int) -> np.ndarray:
    """Shingles (n, 12 m) with every frame rolled by ``shift`` pitch classes (scalar or (n,)):
    ``out[., f, p] = x[., f, (p + shift) % 12]``."""
    n, d = x.shape
    frames = x.reshape(n, d // N_CHROMA, N_CHROMA)
    cols = (np.arange(N_CHROMA)[None, :] + np.reshape(shift, (-1, 1))) % N_CHROMA  # (n or 1, 12)
    cols = np.broadcast_to(cols[:, None, :], (n, d // N_CHROMA, N_CHROMA))
    return np.take_along_axis(frames, cols, axis=2).reshape(n, d)


def canonical_shift(x: np.ndarray) -> np.ndarray:
    """Each shingle's key: the pitch class with the largest chroma summed over its frames, (n,)."""
    n, d = x.shape
    return x.reshape(n, d // N_CHROMA, N_CHROMA).sum(1).argmax(1)


def centred(x: np.ndarray, centre: str) -> np.ndarray:
    """Shingles (n, 12 m) minus each frame's mean (``"frame"``), each shingle's mean
    (``"shingle"``), or unchanged (``"none"``)."""
    if centre == "none" or not len(x):
        return x
    n, d = x.shape
    if centre == "shingle":
        return x - x.mean(1, keepdims=True)
    frames = x.reshape(n, d // N_CHROMA, N_CHROMA)
    return (frames - frames.mean(2, keepdims=True)).reshape(n, d)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero), float32."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norm > 1e-12, norm, 1.0)).astype(np.float32)


def key_candidates(x: np.ndarray, n: int) -> np.ndarray:
    """Each shingle's ``n`` strongest pitch classes (summed over its frames), strongest
    first: (rows, n) int."""
    rows, d = x.shape
    summed = x.reshape(rows, d // N_CHROMA, N_CHROMA).sum(1)
    return np.argsort(-summed, axis=1, kind="stable")[:, :n]


def prepare(x: np.ndarray, canonical: bool, centre: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """Shingles as indexed: (centred unit-length vectors (n, 12 m), rolls (n,) uint8),
    key-normalised (each rolled by its canonical shift) when ``canonical``."""
    shift = canonical_shift(x) if canonical and len(x) else np.zeros(len(x), np.int64)
    if canonical and len(x):
        x = roll_shingles(x, shift)
    return l2_normalise(centred(x, centre)), shift.astype(np.uint8)


def vote_weights(
    sims: np.ndarray, ids: np.ndarray, vote: str, hub_weight: np.ndarray | None = None
) -> np.ndarray:
    """Weight of each neighbour's vote, (n, k) float64; missing neighbours (id -1) weigh 0.

    Parameters
    ----------
    sims, ids : np.ndarray, shape (n, k)
        faiss results (inner products of unit vectors), best first.
    vote : str
        ``"count"``, ``"rank"`` or ``"margin"``.
    hub_weight : np.ndarray, shape (n_shingles,), optional
        Inverse hubness of every catalogue shingle, multiplied in.
    """
    n, k = ids.shape
    ok = ids >= 0
    if vote == "count":
        w = np.ones((n, k))
    elif vote == "rank":
        w = np.broadcast_to(1.0 / (1.0 + np.arange(k)), (n, k)).copy()
    elif vote == "margin":
        s = np.where(ok, sims, np.nan).astype(np.float64)
        last = np.nanmin(s, axis=1, keepdims=True) if k else s
        first = s[:, :1]
        w = np.nan_to_num((s - last) / np.maximum(first - last, 1e-6), nan=0.0) + 1.0 / k
    else:
        raise ValueError(f"unknown vote {vote!r}")
    if hub_weight is not None:
        w *= hub_weight[np.maximum(ids, 0)]
    w[~ok] = 0.0
    return w


def band_scores(
    n_tracks: int,
    track: np.ndarray,
    q_frame: np.ndarray,
    c_frame: np.ndarray,
    weight: np.ndarray,
    group: np.ndarray,
    slopes: tuple,
    band: int,
    one_vote: bool = False,
) -> np.ndarray:
    """Each recording's best offset-band vote total, (n_tracks,) float64.

    For each tempo ratio ``s`` of ``slopes`` and each of two grids (the second shifted by
    half a band), a vote falls in band ``floor((q - s c) / band)``; a recording scores the
    largest total of one (group, band) over every ratio and grid.

    Parameters
    ----------
    n_tracks : int
    track, q_frame, c_frame, weight, group : np.ndarray, shape (v,)
        One entry per vote: the catalogue recording, the query shingle's frame, the
        catalogue shingle's frame, the vote's weight, and a group (the query
        transposition: votes of different groups never share a band).
    slopes : tuple of float
        Tempo ratios.
    band : int
        Band width in frames.
    one_vote : bool
        A query shingle (frame and group) counts once per band: its best vote there.

    Notes
    -----
    The votes are sorted once by (recording, group, query frame) and every band counted
    by a compiled pass (numba) over those runs: 5 times faster than the numpy version it
    replaced (``np.unique`` of the band keys for each ratio and grid; 1.9 against 10.0 ms
    for 5,800 votes, the same totals; that version is kept in ``tests/test_recurrence.py``
    as the reference).
    """
    if len(track) == 0:
        return np.zeros(n_tracks)
    track = np.asarray(track, np.int64)
    group = np.asarray(group, np.int64)
    q_frame = np.asarray(q_frame, np.float64)
    order = np.lexsort((q_frame, group, track))
    return _band_kernel(
        order,
        track,
        q_frame,
        np.asarray(c_frame, np.float64),
        np.asarray(weight, np.float64),
        group,
        np.asarray(slopes, np.float64),
        float(band),
        bool(one_vote),
        int(n_tracks),
    )


@numba.njit(cache=True, nogil=True)
def _band_kernel(
    order, track, q_frame, c_frame, weight, group, slopes, band, one_vote, n_tracks
):  # pragma: no cover - compiled
    best = np.zeros(n_tracks)
    n = len(order)
    # runs of one (recording, group) in ``order``
    seg = [0]
    for r in range(1, n):
        if track[order[r]] != track[order[r - 1]] or group[order[r]] != group[order[r - 1]]:
            seg.append(r)
    seg.append(n)
    bs = np.empty(n, np.int64)
    acc = np.zeros(16, np.float64)
    for s in slopes:
        for shift in (0.0, 0.5):
            for r in range(n):
                v = order[r]
                bs[r] = np.int64(np.floor((q_frame[v] - s * c_frame[v]) / band + shift))
            for k in range(len(seg) - 1):
                i, j = seg[k], seg[k + 1]
                lo, hi = bs[i], bs[i]
                for r in range(i + 1, j):
                    lo = min(lo, bs[r])
                    hi = max(hi, bs[r])
                nb = hi - lo + 1
                if len(acc) < nb:
                    acc = np.zeros(nb, np.float64)
                for r in range(nb):
                    acc[r] = 0.0
                if one_vote:
                    r = i
                    while r < j:  # a run of one query frame: its best vote in each band
                        q = q_frame[order[r]]
                        e = r
                        while e < j and q_frame[order[e]] == q:
                            e += 1
                        for a in range(r, e):
                            wa = weight[order[a]]
                            top = True
                            for c in range(r, e):
                                if c != a and bs[c] == bs[a]:
                                    wc = weight[order[c]]
                                    if wc > wa or (wc == wa and c < a):
                                        top = False
                                        break
                            if top:
                                acc[bs[a] - lo] += wa
                        r = e
                else:
                    for r in range(i, j):
                        acc[bs[r] - lo] += weight[order[r]]
                m = 0.0
                for r in range(nb):
                    m = max(m, acc[r])
                t = track[order[i]]
                if m > best[t]:
                    best[t] = m
    return best


# settings that change only how an index is searched, not what it holds: an index built
# with other values of these serves as it is (the catalogue's cached index is keyed by the
# others, coverhunter.index.chroma_store). ``neighbours`` is not one of them: the hubness
# counted at the first search is stored with the index and counts ``neighbours``.
SEARCH_FIELDS = (
    "query_stride",
    "query_rates",
    "band",
    "slopes",
    "query_keys",
    "key_groups",
    "vote",
    "one_vote",
    "length_power",
    "ef_search",
)


def build_settings(p: RecurrenceParams) -> dict:
    """The fields of ``p`` that decide what a recurrence index holds (all but
    :data:`SEARCH_FIELDS`), as a dict."""
    return {k: v for k, v in asdict(p).items() if k not in SEARCH_FIELDS}


__all__ = [
    "RecurrenceParams",
    "SEARCH_FIELDS",
    "build_settings",
    "shingles",
    "roll_shingles",
    "resample_time",
    "canonical_shift",
    "centred",
    "l2_normalise",
    "key_candidates",
    "prepare",
    "vote_weights",
    "band_scores",
]
