"""Identify every recording of a folder into a JSON-lines file, resumably.

Each answer is appended to the output as one line (``identify --json``'s object,
``QueryResult.to_dict`` of :func:`coverhunter.identification.identify`, after ``path``, ``size``
and ``mtime_ns`` of the file) and flushed to disk before the next
file starts. A re-run reads the output first and skips every file already answered
with the same size and modification time; files that failed are tried again. The last
line for a path is its answer. A line cut short by a kill is dropped on the next run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .audio import AUDIO_EXTS

log = logging.getLogger(__name__)


@dataclass
class BatchReport:
    """What a batch run did."""

    answered: int = 0
    skipped: int = 0  # answered by an earlier run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, error)


def audio_files(inputs: Iterable[str | Path], recursive: bool = False) -> list[Path]:
    """Files given, plus the audio files of the folders given (sub-folders with ``recursive``).

    Raises
    ------
    ValueError
        A folder given holds no audio file (``no audio files in DIR``).
    """
    out: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            found = p.rglob("*") if recursive else p.glob("*")
            files = sorted(f for f in found if f.is_file() and f.suffix.lower() in AUDIO_EXTS)
            if not files:
                more = "" if recursive else " (--recursive also searches its sub-folders)"
                raise ValueError(f"no audio files in {p}{more}")
            out.extend(files)
        else:
            out.append(p)
    return out


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def read_answers(output: Path) -> dict[str, dict]:
    """Answered lines of an earlier run, by resolved path (the last line of a path wins).

    A final line without its newline (a run killed while writing) is cut off the file.
    """
    if not output.is_file():
        return {}
    data = output.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        log.warning("%s: dropping an incomplete last line (an interrupted run)", output)
        with open(output, "r+b") as f:
            f.truncate(keep)
        data = data[:keep]
    answers = {}
    for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        try:
            rec = json.loads(line)
            answers[rec["path"]] = rec
        except (ValueError, KeyError, TypeError):
            log.warning("%s:%d: not an answer line, ignored", output, n)
    return answers


def identify_batch(files: list[Path], output: Path, answer: Callable[[Path], dict]) -> BatchReport:
    """Answer every file not answered yet in ``output``, appending one line per file.

    Parameters
    ----------
    files : list of Path
    output : Path
        JSON-lines file, created or extended.
    answer : callable
        path -> answer dict: ``identification.identify(index, lm, path, options).to_dict()``
        (``coverhunter identify --output`` binds the index, which it follows as it
        changes, the model and the options); an answer with ``error`` counts as failed
        and is retried by the next run.

    Returns
    -------
    BatchReport
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    done = read_answers(output)
    report = BatchReport()
    with open(output, "a", encoding="utf-8") as out:
        for i, path in enumerate(files, 1):
            key, stamp = str(path.resolve()), _stamp(path)
            old = done.get(key)
            if (
                old
                and not old.get("error")
                and stamp
                and [old.get("size"), old.get("mtime_ns")] == list(stamp)
            ):
                report.skipped += 1
                continue
            rec = answer(path)
            rec = {
                "path": key,
                "size": stamp[0] if stamp else None,
                "mtime_ns": stamp[1] if stamp else None,
                **rec,
            }
            out.write(json.dumps(rec) + "\n")
            out.flush()
            os.fsync(out.fileno())
            if rec.get("error"):
                report.failed.append((str(path), rec["error"]))
                log.warning("[%d/%d] %s: %s", i, len(files), path, rec["error"])
            else:
                report.answered += 1
                best = rec["matches"][0]["work"] if rec["matches"] else "-"
                log.info("[%d/%d] %s: %s %s", i, len(files), path, best, rec.get("verdict", ""))
    return report
