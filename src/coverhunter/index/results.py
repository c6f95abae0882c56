"""What an index answers: matches per query, segments of a long one, their text form, and the
index's one error."""

from __future__ import annotations

from dataclasses import asdict, dataclass


class CatalogueError(ValueError):
    """The index is missing, damaged, or does not match the model."""


@dataclass(frozen=True)
class Match:
    """One catalogue work proposed for a query."""

    work: str
    track_id: str
    score: float  # cosine similarity of the best chunk pair (1 - distance)
    query_offset_s: float  # start of the matching chunk in the query
    ref_offset_s: float  # start of the matching chunk in the catalogue track
    # calibrated P(same work) and the chance that the best wrong work scores this high: from
    # the alignment score when the match was aligned and the index's calibration has an
    # alignment part, else from the embedding score
    probability: float | None = None
    p_value: float | None = None
    alignment: float | None = None  # chroma alignment score (Qmax / sqrt(NM)) when re-ranked


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


@dataclass
class QueryResult:
    """The answer for one recording (:func:`coverhunter.identification.identify`).

    ``to_dict`` is the JSON object every surface gives (``identify --json``, a line of
    ``identify --output``, ``POST /identify``): ``query``, ``verdict``, ``error``,
    ``matches``, then ``duration_s`` when the recording was read, and ``segments`` when
    they were asked for. Surfaces add their own keys around it. Its numbers are rounded to
    :data:`DECIMALS` places: the embedding scores are float32 (about seven significant
    digits), and their last digit can differ between the threads a surface computes in
    (the service answers from a worker thread: 1.0 against 0.9999998 for the same upload),
    which the same recording must not show.
    """

    query: str
    matches: list[Match]
    verdict: str = ""  # "match", "no cover in the catalogue" (with calibration) or "error"
    error: str | None = None
    duration_s: float | None = None  # seconds of audio searched; None when it was not read
    segments: list[Segment] | None = None  # which work where, when asked for

    def to_dict(self) -> dict:
        out = {
            "query": self.query,
            "verdict": self.verdict,
            "error": self.error,
            "matches": [_rounded(asdict(m)) for m in self.matches],
        }
        if self.duration_s is not None:
            out["duration_s"] = round(self.duration_s, DECIMALS)
        if self.segments is not None:
            out["segments"] = [_rounded(asdict(s)) for s in self.segments]
        return out


DECIMALS = 6  # places of the numbers in a QueryResult's JSON (QueryResult.to_dict)


def _rounded(d: dict) -> dict:
    """``d`` with its float values rounded to :data:`DECIMALS` places."""
    return {k: round(v, DECIMALS) if isinstance(v, float) else v for k, v in d.items()}


def format_result(r: QueryResult) -> str:
    """A query's answer as a small text table, then its segments' (when it has any)."""
    lines = [f"{r.query}" + (f"  [{r.verdict}]" if r.verdict else "")]
    if r.error:
        return lines[0] + f"\n  error: {r.error}"
    calibrated = bool(r.matches) and r.matches[0].probability is not None
    aligned = any(m.alignment is not None for m in r.matches)
    head = (
        f"  {'#':>2}  {'score':>6}  "
        + ("align  " if aligned else "")
        + ("P(same)  p-value  " if calibrated else "")
        + f"{'query@s':>8}  {'ref@s':>7}  work (track)"
    )
    lines.append(head)
    for i, m in enumerate(r.matches, 1):
        al = (f"{m.alignment:5.3f}  " if m.alignment is not None else f"{'-':>5}  ") if aligned else ""
        cal = f"{m.probability:7.3f}  {m.p_value:7.2g}  " if calibrated else ""
        lines.append(
            f"  {i:>2}  {m.score:6.3f}  {al}{cal}{m.query_offset_s:8.1f}  {m.ref_offset_s:7.1f}  "
            f"{m.work} ({m.track_id})"
        )
    if r.segments:
        lines.append(format_segments(r.segments))
    return "\n".join(lines)


def format_segments(segs: list[Segment]) -> str:
    """Segments as a small text table (times as m:ss)."""

    def t(s):
        return f"{int(s // 60)}:{s % 60:04.1f}"

    lines = [f"  {'from':>7}  {'to':>7}  {'score':>6}  verdict / work (track)"]
    for s in segs:
        v = f"[{s.verdict}] " if s.verdict else ""
        lines.append(f"  {t(s.start_s):>7}  {t(s.end_s):>7}  {s.score:6.3f}  {v}{s.work} ({s.track_id})")
    return "\n".join(lines)
