"""Converters from the field's datasets (audio the user downloaded) to our dataset files.

* Covers80: the ``covers32k/<song>/<artist+album+track>.mp3`` tree and ``list1.list`` /
  ``list2.list``: one work per song folder, the 80 x 80 query/reference protocol and the
  164-recording self-query set.
* SHS100K: the published ``SHS100K-TRAIN|VAL|TEST`` lists (``set_id<TAB>ver_id``) and
  optional ``list`` metadata, with audio files named ``<set_id>_<ver_id>.<ext>``.
* Da-TACOS benchmark: its metadata JSON (``{work_id: {perf_id: {...}}}``) with audio
  files named ``<perf_id>.<ext>``; queries are the performances of works with at least
  two performances, references are every performance, and ``query_in_ref`` marks each
  query's own entry.

Nothing is downloaded. Missing recordings are reported (``missing.txt``) and skipped.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from .audio import AUDIO_EXTS, AudioError, audio_duration
from .dataset import Track, write_dataset
from .utils import atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class PrepareReport:
    """What a converter wrote and what it could not find."""

    data_dir: Path
    written: dict[str, int] = field(default_factory=dict)  # list file -> lines
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = ", ".join(f"{k}: {v}" for k, v in self.written.items())
        return (
            f"{self.data_dir}: {parts}; {len(self.missing)} missing recording(s), "
            f"{len(self.problems)} problem(s)"
        )


def _audio_files(root: Path) -> dict[str, list[Path]]:
    """Audio files under root by stem (a stem may occur more than once)."""
    out: dict[str, list[Path]] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in AUDIO_EXTS:
            out.setdefault(p.stem, []).append(p)
    return out


def _duration(path: Path, report: PrepareReport) -> float | None:
    try:
        d = audio_duration(path)
    except AudioError as e:
        report.problems.append(str(e))
        return None
    if d <= 0:
        report.problems.append(f"{path}: empty audio")
        return None
    return round(d, 3)


def _locate(
    files: dict[str, list[Path]], stems: list[str], label: str, report: PrepareReport
) -> tuple[Path, float] | None:
    """The audio file of the first stem found and its duration; a miss or an unreadable
    file is reported (as ``label``) and gives None."""
    cands = next((files[s] for s in stems if files.get(s)), None)
    if not cands:
        report.missing.append(label)
        return None
    dur = _duration(cands[0], report)
    return None if dur is None else (cands[0].resolve(), dur)


def _finish(report: PrepareReport, lists: dict[str, list[Track]], hparams: str | None) -> PrepareReport:
    d = report.data_dir
    d.mkdir(parents=True, exist_ok=True)
    for name, tracks in lists.items():
        write_dataset(tracks, d / name, relative_to=d)
        report.written[name] = len(tracks)
    if report.missing or report.problems:
        atomic_write_text(
            d / "missing.txt",
            "".join(f"missing: {m}\n" for m in report.missing)
            + "".join(f"problem: {p}\n" for p in report.problems),
        )
    if hparams is not None and not (d / "hparams.yaml").exists():
        atomic_write_text(d / "hparams.yaml", hparams)
    for line in report.missing[:20] + report.problems[:20]:
        log.warning("%s", line)
    return report


# ---------------------------------------------------------------------------
# Covers80

COVERS80_HPARAMS = """\
# Covers80 is a test set: no training split, no augmentation
aug_speed_mode: [1.0]
split: {train: 0.0, val: 0.0, test: 1.0, seed: 0}
"""


def _find(root: Path, name: str) -> Path | None:
    hits = sorted(root.rglob(name))
    return hits[0] if hits else None


def prepare_covers80(archive_dir: str | Path, data_dir: str | Path) -> PrepareReport:
    """``dataset.txt`` (all recordings), ``query.txt`` / ``ref.txt`` (list1 / list2).

    Track ids follow the seed: ``cover80_<8-digit index>_<song index>_<version index>``.
    """
    archive_dir, data_dir = Path(archive_dir), Path(data_dir)
    report = PrepareReport(data_dir)
    root = archive_dir / "covers32k" if (archive_dir / "covers32k").is_dir() else archive_dir
    songs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not songs:
        raise FileNotFoundError(f"{archive_dir}: no covers32k/<song>/ folders found")
    tracks, by_key = [], {}
    for si, song in enumerate(songs):
        files = sorted(p for p in song.iterdir() if p.suffix.lower() in AUDIO_EXTS)
        for vi, f in enumerate(files):
            dur = _duration(f, report)
            if dur is None:
                continue
            t = Track(f"cover80_{len(tracks):08d}_{si}_{vi}", str(f.resolve()), dur, song.name, f.stem)
            tracks.append(t)
            by_key[f"{song.name}/{f.stem}"] = t
    lists = {"dataset.txt": tracks}
    for list_name, out in (("list1.list", "query.txt"), ("list2.list", "ref.txt")):
        path = _find(archive_dir, list_name)
        if path is None:
            report.problems.append(f"{list_name} not found under {archive_dir}: no {out}")
            continue
        chosen = []
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            key = line.strip()
            if not key:
                continue
            key = re.sub(r"\.(mp3|wav|flac|ogg)$", "", key)
            if key in by_key:
                chosen.append(by_key[key])
            else:
                report.missing.append(f"{path.name} line {n}: {key}")
        lists[out] = chosen
    return _finish(report, lists, COVERS80_HPARAMS)


# ---------------------------------------------------------------------------
# SHS100K

SHS_SPLITS = {"SHS100K-TRAIN": "train", "SHS100K-VAL": "val", "SHS100K-TEST": "test"}


def _read_pairs(path: Path, report: PrepareReport) -> list[tuple[str, str, list[str]]]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        cols = line.rstrip("\n").split("\t")
        if len(cols) < 2 or not cols[0].strip().isdigit() or not cols[1].strip().isdigit():
            report.problems.append(f"{path.name} line {n}: expected '<set_id>\\t<ver_id>', got {line[:60]!r}")
            continue
        out.append((cols[0].strip(), cols[1].strip(), cols[2:]))
    return out


def prepare_shs100k(list_dir: str | Path, audio_dir: str | Path, data_dir: str | Path) -> PrepareReport:
    """One list per published split plus ``dataset.txt`` of every recording found.

    Every line carries its published split (``split``), which extraction then uses
    instead of drawing its own. Works are SHS ``set_id``s.
    """
    list_dir, audio_dir, data_dir = Path(list_dir), Path(audio_dir), Path(data_dir)
    report = PrepareReport(data_dir)
    titles = {}
    meta = _find(list_dir, "list")
    if meta is not None:
        for s, v, rest in _read_pairs(meta, PrepareReport(data_dir)):
            titles[(s, v)] = " - ".join(x for x in rest[:2] if x)
    files = _audio_files(audio_dir)
    lists: dict[str, list[Track]] = {"dataset.txt": []}
    seen: dict[str, str] = {}
    for fname, split in SHS_SPLITS.items():
        path = _find(list_dir, fname)
        if path is None:
            report.problems.append(f"{fname} not found under {list_dir}")
            continue
        chosen = []
        for s, v, _ in _read_pairs(path, report):
            utt = f"{s}_{v}"
            if utt in seen:
                report.problems.append(f"{fname}: duplicate id {utt} (also in {seen[utt]}); kept the first")
                continue
            found = _locate(files, [utt, f"{s}-{v}"], f"{fname}: {utt}", report)
            if found is None:
                continue
            seen[utt] = fname
            chosen.append(Track(utt, str(found[0]), found[1], s, titles.get((s, v), ""), {"split": split}))
        lists[f"{split}.list.txt"] = chosen
        lists["dataset.txt"] += chosen
    if not lists["dataset.txt"]:
        raise FileNotFoundError(
            f"{audio_dir}: none of the listed recordings were found "
            "(expected files named <set_id>_<ver_id>.<ext>)"
        )
    return _finish(report, lists, "aug_speed_mode: [1.0]\n")


# ---------------------------------------------------------------------------
# Da-TACOS benchmark


def prepare_datacos(metadata: str | Path, audio_dir: str | Path, data_dir: str | Path) -> PrepareReport:
    """``dataset.txt``, ``query.txt``, ``ref.txt`` and ``query_in_ref.txt`` for the benchmark."""
    metadata, audio_dir, data_dir = Path(metadata), Path(audio_dir), Path(data_dir)
    report = PrepareReport(data_dir)
    try:
        meta = json.loads(metadata.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{metadata}: not a Da-TACOS metadata JSON ({e})") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{metadata}: expected {{work_id: {{perf_id: {{...}}}}}}")
    files = _audio_files(audio_dir)
    refs, seen = [], set()
    for work in sorted(meta):
        perfs = meta[work]
        if not isinstance(perfs, dict):
            report.problems.append(f"{work}: expected a mapping of performances")
            continue
        for perf in sorted(perfs):
            if perf in seen:
                report.problems.append(f"duplicate performance id {perf} (work {work}); kept the first")
                continue
            found = _locate(files, [perf], f"{work}/{perf}", report)
            if found is None:
                continue
            seen.add(perf)
            info = perfs[perf] if isinstance(perfs[perf], dict) else {}
            version = " - ".join(str(info.get(k, "")) for k in ("perf_title", "perf_artist") if info.get(k))
            refs.append(Track(perf, str(found[0]), found[1], work, version))
    size = {}
    for t in refs:
        size[t.work] = size.get(t.work, 0) + 1
    queries = [t for t in refs if size[t.work] > 1]
    pos = {t.track_id: i for i, t in enumerate(refs)}
    pairs = [[qi, pos[t.track_id]] for qi, t in enumerate(queries)]
    report = _finish(
        report,
        {"dataset.txt": refs, "query.txt": queries, "ref.txt": refs},
        COVERS80_HPARAMS.replace("Covers80", "The Da-TACOS benchmark"),
    )
    atomic_write_text(data_dir / "query_in_ref.txt", json.dumps({"query_in_ref": pairs}) + "\n")
    return report
