"""The seed's JSON-lines ``dataset.txt``: read with full validation, write, split by work.

Each line is one recording: ``{"utt", "wav", "dur_s", "song", "version"}``. Inside the
code these are ``track_id``, ``audio``, ``duration``, ``work`` and ``version``; other keys
(``feat``, ``feat_len``, ``song_id``, ``split``, ...) are kept in ``Track.extra`` and
written back unchanged, so files stay compatible both ways.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .utils import atomic_write_text, resolve_path

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("utt", "wav", "dur_s", "song", "version")
SPLITS = ("train", "val", "test")


class DatasetError(ValueError):
    """A list file has problems; ``problems`` holds every one, not only the first."""

    def __init__(self, path: Path, problems: list[str]):
        self.path = path
        self.problems = problems
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{path}: {len(problems)} problem(s):\n  {shown}{more}")


@dataclass(frozen=True)
class Track:
    """One recording of one work."""

    track_id: str
    audio: str
    duration: float
    work: str
    version: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict:
        line = {
            "utt": self.track_id,
            "wav": self.audio,
            "dur_s": self.duration,
            "song": self.work,
            "version": self.version,
        }
        line.update(self.extra)
        return line

    def with_extra(self, **kw) -> Track:
        return replace(self, extra={**self.extra, **kw})

    @property
    def feat(self) -> str | None:
        return self.extra.get("feat")


def _parse_line(obj: object, lineno: int) -> tuple[Track | None, list[str]]:
    if not isinstance(obj, dict):
        return None, [f"line {lineno}: expected a JSON object, got {type(obj).__name__}"]
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if "dur_s" in missing and "dur_ms" in obj:  # the original's older key
        obj = {**obj, "dur_s": float(obj.pop("dur_ms")) / 1000.0}
        missing.remove("dur_s")
    if missing:
        return None, [f"line {lineno}: missing key(s) {', '.join(missing)}"]
    problems = []
    try:
        duration = float(obj["dur_s"])
        if not np.isfinite(duration) or duration < 0:
            raise ValueError
    except (TypeError, ValueError):
        problems.append(f"line {lineno}: dur_s must be a non-negative number, got {obj['dur_s']!r}")
        duration = 0.0
    for key in ("utt", "wav", "song"):
        if not isinstance(obj[key], str) or not obj[key]:
            problems.append(f"line {lineno}: {key} must be a non-empty string, got {obj[key]!r}")
    if problems:
        return None, problems
    extra = {k: v for k, v in obj.items() if k not in REQUIRED_KEYS}
    return Track(obj["utt"], obj["wav"], duration, obj["song"], str(obj["version"]), extra), []


def read_dataset(path: str | Path, *, check_audio: bool = False, check_features: bool = False) -> list[Track]:
    """Read and validate a JSON-lines list file.

    Parameters
    ----------
    path : str or Path
        ``dataset.txt`` or a derived list (``full.txt``, ``train.txt``...).
    check_audio : bool
        Also check that every ``wav`` exists (relative paths: the list's folder, then CWD).
    check_features : bool
        Also check that every line has an existing ``feat`` file.

    Returns
    -------
    list of Track
        Paths in ``audio`` and ``extra["feat"]`` are made absolute (relative ones: from
        the list's folder, else from the working folder), so they mean the same thing
        however the list's folder was spelled and wherever the caller runs.

    Raises
    ------
    DatasetError
        With every problem found (bad JSON, missing key, missing file, duplicate utt),
        each naming its line.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, ["file not found"])
    tracks, problems, seen = [], [], {}
    base = path.parent
    with path.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            raw = raw.strip()
            if not raw:
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                problems.append(f"line {lineno}: bad JSON ({e.msg} at column {e.colno})")
                continue
            track, errs = _parse_line(obj, lineno)
            problems += errs
            if track is None:
                continue
            if track.track_id in seen:
                problems.append(
                    f"line {lineno}: duplicate utt {track.track_id!r} (first on line {seen[track.track_id]})"
                )
                continue
            seen[track.track_id] = lineno
            audio = Path(os.path.abspath(resolve_path(track.audio, base)))
            if check_audio and not audio.is_file():
                problems.append(f"line {lineno}: audio file not found: {track.audio}")
            extra = dict(track.extra)
            if "feat" in extra:
                feat = Path(os.path.abspath(resolve_path(str(extra["feat"]), base)))
                if check_features and not feat.is_file():
                    problems.append(f"line {lineno}: feature file not found: {extra['feat']}")
                extra["feat"] = str(feat)
            elif check_features:
                problems.append(f"line {lineno}: no 'feat' key (run feature extraction first)")
            tracks.append(replace(track, audio=str(audio), extra=extra))
    if problems:
        raise DatasetError(path, problems)
    if not tracks:
        raise DatasetError(path, ["no recordings in file"])
    return tracks


def write_dataset(tracks: Iterable[Track], path: str | Path, *, relative_to: Path | None = None) -> None:
    """Write tracks as JSON lines, atomically.

    Paths under ``relative_to`` (default: the output's folder) are written relative to it,
    so a data folder can be moved as a whole; others are written absolute (a path
    relative to the working folder would break as soon as the list is read elsewhere).
    """
    path = Path(path)
    base = (relative_to or path.parent).resolve()

    def rel(p: str) -> str:
        try:
            return str(Path(p).resolve().relative_to(base))
        except ValueError:
            return os.path.abspath(p)

    lines = []
    for t in tracks:
        obj = t.to_json()
        obj["wav"] = rel(obj["wav"])
        if "feat" in obj:
            obj["feat"] = rel(obj["feat"])
        lines.append(json.dumps(obj, ensure_ascii=False))
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


def split_by_work(
    tracks: list[Track], ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, str]:
    """Assign every work to one of train/val/test; all its tracks go with it.

    Returns
    -------
    dict
        work name -> split name. Deterministic for a given seed and set of works (the
        order of the lines does not matter). Every non-zero ratio gets at least one work
        when there are enough works.
    """
    if any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"split ratios must be >= 0 with a positive sum, got {ratios}")
    works = sorted({t.work for t in tracks})
    rng = np.random.default_rng(seed)
    order = [works[i] for i in rng.permutation(len(works))]
    total = sum(ratios)
    n = len(order)
    counts = [int(round(n * r / total)) for r in ratios]
    for i, r in enumerate(ratios):  # keep every requested split non-empty when possible
        if r > 0 and counts[i] == 0 and n >= sum(1 for x in ratios if x > 0):
            counts[i] = 1
    counts[0] = n - sum(counts[1:])
    if counts[0] < 0:
        raise ValueError(f"cannot split {n} works with ratios {ratios}")
    out, i = {}, 0
    for name, c in zip(SPLITS, counts):
        for w in order[i : i + c]:
            out[w] = name
        i += c
    return out
