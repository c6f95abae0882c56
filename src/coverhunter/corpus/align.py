"""Exact chunk alignment between the versions of a rendered corpus, from their plans.

A version of ``coverhunter make-corpus`` plays the source score's sections in some
order (crops, repeats, drops), at its own tempo with a linear drift (see
:func:`coverhunter.corpus.perform`). Its ``version`` field stores that plan, so for a
moment of one version we know which moment of the score it plays, and where the other
versions play the same moment. The result is written in the format of
``coverhunter align`` (:mod:`coverhunter.align`), so the trainer's fine stage (chunk
pairs that cover the same passage, ``data.align_path``) can use it from the first step
instead of an alignment guessed by a coarse model. :func:`coverhunter.corpus.make_corpus`
writes it as ``OUT_DIR/alignment.jsonl``.

The rubato of :func:`~coverhunter.corpus.perform` (a sine of a few hundredths of a
second) is not stored and is ignored: the error it leaves is far below a chunk.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..dataset import Track, read_dataset
from ..utils import atomic_write_text

log = logging.getLogger(__name__)

GRID_S = 0.05  # resolution of the performance-time grid that inverts the tempo map


class Performance:
    """The time map of one rendered version: audio seconds <-> score seconds.

    Parameters
    ----------
    plan : dict
        The version's plan as stored in the dataset (``tempo``, ``tempo_drift``,
        ``sections`` = [[score start, score end], ...] in playing order).
    """

    def __init__(self, plan: dict):
        try:
            self.tempo = float(plan["tempo"])
            self.drift = float(plan.get("tempo_drift", 0.0))
            self.sections = np.asarray(plan["sections"], dtype=np.float64).reshape(-1, 2)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a corpus version plan ({e})") from e
        if self.tempo <= 0 or not len(self.sections):
            raise ValueError("a version plan needs a positive tempo and at least one section")
        lengths = self.sections[:, 1] - self.sections[:, 0]
        self.offsets = np.r_[0.0, np.cumsum(lengths)]  # performance time of each section start
        self.total = max(float(self.offsets[-1]), 1e-3)
        self._p = np.arange(0.0, self.total + GRID_S, GRID_S)
        self._tau = self.warp(self._p)

    def warp(self, p: np.ndarray) -> np.ndarray:
        """Performance seconds -> audio seconds (the tempo map without its rubato)."""
        p = np.asarray(p, dtype=np.float64)
        return (p + 0.5 * self.drift * p * p / self.total) / self.tempo

    def score_time(self, tau: np.ndarray) -> np.ndarray:
        """Audio seconds -> score seconds; NaN past the end of the performance."""
        p = np.interp(tau, self._tau, self._p, right=np.nan)
        k = np.clip(np.searchsorted(self.offsets, p, side="right") - 1, 0, len(self.sections) - 1)
        return np.where(np.isnan(p), np.nan, self.sections[k, 0] + p - self.offsets[k])

    def audio_times(self, s: float) -> list[float]:
        """Every audio second at which the score moment ``s`` is played (repeats: several)."""
        hit = (self.sections[:, 0] <= s) & (s < self.sections[:, 1])
        return [float(self.warp(self.offsets[k] + s - self.sections[k, 0])) for k in np.flatnonzero(hit)]


def pair_centres(a: Performance, b: Performance, duration_a: float, hop_s: float) -> list[list[float]]:
    """Matched moments of two versions: [[t_a, t_b], ...] in audio seconds.

    ``t_a`` runs over ``duration_a`` every ``hop_s``; a moment that ``b`` does not play
    (a dropped section, a cropped end) has no pair; one that ``b`` plays twice has two.
    """
    out = []
    ta = np.arange(hop_s / 2, duration_a, hop_s)
    for t, s in zip(ta, a.score_time(ta)):
        if np.isnan(s):
            continue
        out.extend([round(float(t), 3), round(tb, 3)] for tb in b.audio_times(float(s)))
    return out


def corpus_alignment(tracks: list[Track], hop_s: float = 2.0) -> tuple[list[dict], list[str]]:
    """Alignment records for every ordered pair of versions of each work.

    Parameters
    ----------
    tracks : list of Track
        Corpus recordings whose ``version`` is a corpus plan (JSON text).
    hop_s : float
        Spacing of the matched moments in the first version of each pair.

    Returns
    -------
    records : list of dict
        ``{"utt_i", "utt_j", "work", "chunk_s": 0, "pairs": [[centre_i, centre_j], ...]}``
        (``chunk_s`` 0: the pairs are chunk centres, as :func:`~coverhunter.align.read_alignment` reads them).
    skipped : list of str
        One line per recording without a usable plan, naming it and the problem.
    """
    perf: dict[str, Performance] = {}
    skipped = []
    for t in tracks:
        try:
            perf[t.track_id] = Performance(json.loads(t.version) if isinstance(t.version, str) else t.version)
        except (ValueError, TypeError) as e:
            skipped.append(f"{t.track_id}: {e}")
    by_work: dict[str, list[Track]] = {}
    for t in tracks:
        if t.track_id in perf and "source_utt" not in t.extra:  # tempo copies: no plan of their own
            by_work.setdefault(t.work, []).append(t)
    records = []
    for work, members in by_work.items():
        for a in members:
            for b in members:
                if a is b:
                    continue
                pairs = pair_centres(perf[a.track_id], perf[b.track_id], a.duration, hop_s)
                if pairs:
                    records.append(
                        {
                            "utt_i": a.track_id,
                            "utt_j": b.track_id,
                            "work": work,
                            "chunk_s": 0.0,
                            "pairs": pairs,
                        }
                    )
    return records, skipped


def write_records(records: list[dict], path: str | Path) -> None:
    """Alignment records as JSON lines, written atomically."""
    atomic_write_text(Path(path), "".join(json.dumps(r) + "\n" for r in records))


def write_corpus_alignment(dataset: str | Path, output: str | Path, hop_s: float = 2.0) -> int:
    """Read a corpus list file, write its exact alignment (JSON lines); returns the record count."""
    tracks = read_dataset(dataset)
    records, skipped = corpus_alignment(tracks, hop_s)
    for line in skipped:
        log.warning("%s: %s", dataset, line)
    if not records:
        raise ValueError(f"{dataset}: no two versions of one work have a corpus plan to align")
    write_records(records, output)
    log.info("%s: %d aligned version pairs -> %s", dataset, len(records), output)
    return len(records)
