"""What an index answers: matches per query, their text form, and the index's one error."""

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


@dataclass
class QueryResult:
    query: str
    matches: list[Match]
    verdict: str = ""  # "match" or "no cover in the catalogue" (with calibration)
    error: str | None = None

    def to_dict(self) -> dict:
        return {
            "query": self.query,
            "verdict": self.verdict,
            "error": self.error,
            "matches": [asdict(m) for m in self.matches],
        }


def format_result(r: QueryResult) -> str:
    """A query's answer as a small text table."""
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
    return "\n".join(lines)
