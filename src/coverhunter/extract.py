"""Feature extraction: ``dataset.txt`` -> one CQT ``.npy`` per recording, ``full.txt`` and split lists.

Replaces the original's numbered stages with one resumable, parallel pass:

1. read and validate ``dataset.txt``;
2. split the *works* into train/val/test (before any augmentation);
3. compute each recording's CQT (skipped when its file is up to date) and, for tracks
   of the augmented splits, tempo copies derived from that CQT (no shell, no sox);
   when only the chroma is due (other views asked for, as by a release whose alignment
   reads a new view, or a chroma file lost), the CQT files stand and only the chroma is
   computed again, about half the work;
   progress is saved after every recording (a journal appended line by line), so a
   killed run recomputes at most the recordings that were in flight;
4. write ``full.txt`` (every line, with ``feat``, ``feat_len``, ``song_id``,
   ``version_id``, ``split``) and ``train.txt`` / ``val.txt`` / ``test.txt``.

Across processes or machines (``rank`` of ``world_size``, or torchrun's ``RANK`` /
``WORLD_SIZE``), each rank computes only every W-th recording by sorted utt (tempo copies
go with their recording). The state file and its journal are shared, and every change to
them is made under ``cqt_feat/.extract.lock``: a rank appends its progress there and, at
its end, merges its entries into the state. The lists are then written by the first rank
that finds every recording of the dataset done (normally the last one to finish), so
they are the same whatever the number of ranks; when some recording failed, no rank
writes them, and a plain run (one rank) retries the failures and writes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from .audio import load_audio, peak_normalize
from .chroma import CHROMA_SPEC, audio_chroma, chroma_path, fine_views, save_chroma
from .config import ExtractConfig, FeatureConfig, load_extract_config
from .dataset import SPLITS, Track, read_dataset, split_by_work, write_dataset
from .features import cqt, stretch_frames
from .shard import rank_slice, resolve_rank
from .utils import atomic_save_npy, atomic_write_text, file_lock, remove_stale_tmp, sha256_file

log = logging.getLogger(__name__)

FEAT_DIR = "cqt_feat"
STATE_FILE = ".extract_state.json"
JOURNAL_FILE = ".extract_state.jsonl"  # one line per recording done since the last STATE_FILE
LOCK_FILE = ".extract.lock"  # held while the state, the journal or the lists change


@dataclass
class ExtractReport:
    """What one extraction run did."""

    n_tracks: int = 0
    computed: int = 0
    skipped: int = 0
    chroma_only: int = 0  # of ``computed``: the CQT kept, only the chroma views computed
    copies: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (utt, message)
    split_counts: dict[str, int] = field(default_factory=dict)
    rank: int = 0
    world_size: int = 1
    lists_written: bool = False
    waiting: int = 0  # recordings of the dataset still without features (other slices)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        s = (
            f"{self.n_tracks} recordings: {self.computed} computed"
            + (f" ({self.chroma_only} of them only their chroma views)" if self.chroma_only else "")
            + f", {self.skipped} up to date, {len(self.failed)} failed"
        )
        if self.world_size > 1:
            s = f"rank {self.rank} of {self.world_size}: {s}"
        if self.lists_written:
            s += f"; {self.copies} tempo copies; split (works): " + ", ".join(
                f"{k} {v}" for k, v in self.split_counts.items()
            )
        else:
            s += (
                f"; lists not written yet: {self.waiting} recording(s) of the dataset have no "
                "features (other slices still running, or failed: a plain `extract` "
                "retries them and writes the lists)"
            )
        return s


def feature_name(track_id: str) -> str:
    """File name for a track's CQT: the utt made file-system safe (hash added if changed)."""
    safe = re.sub(r"[^\w.\-+=,@]", "_", track_id)
    if safe != track_id or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha1(track_id.encode()).hexdigest()[:8]}"
    return f"{safe}.cqt.npy"


def copy_id(track_id: str, rate: float) -> str:
    return f"sp_{rate:g}-{track_id}"


def stored_views(cfg: ExtractConfig) -> tuple[str, ...]:
    """The fine chroma views written beside each CQT: ``cfg.chroma_views`` (what a model
    reads) and the alignment's (:data:`coverhunter.chroma.CHROMA_SPEC`), each once, so that
    a data folder always holds what the two-stage search aligns, whatever its config."""
    return tuple(dict.fromkeys((*cfg.chroma_views, *fine_views(CHROMA_SPEC))))


def _fingerprint(
    track: Track, cfg: FeatureConfig, rates: tuple[float, ...], views: tuple[str, ...] = ()
) -> dict:
    """What a recording's features depend on: its audio (by resolved path, size and
    modification time), the CQT settings, the tempo copies and the chroma views (a state
    written before chroma views existed lacks them: its recordings are computed again)."""
    audio = Path(track.audio).resolve()
    st = audio.stat()
    fp = {
        "audio": str(audio),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "features": asdict(cfg),
        "rates": list(rates),
    }
    if views:
        fp["chroma"] = list(views)
    return fp


def _same_audio(old: dict, new: dict, entry: dict) -> bool:
    """Same inputs; an audio file only touched (new mtime, same bytes) still counts."""
    if old == new:
        return True
    if {k: v for k, v in old.items() if k != "mtime_ns"} != {k: v for k, v in new.items() if k != "mtime_ns"}:
        return False
    return bool(entry.get("audio_sha256")) and entry["audio_sha256"] == sha256_file(new["audio"])


def _same_cqt_inputs(old: dict, new: dict, entry: dict) -> bool:
    """Same audio, CQT settings and tempo copies as when the files were written, whatever
    the chroma views: the CQT files stand."""
    return _same_audio(
        {k: v for k, v in old.items() if k != "chroma"},
        {k: v for k, v in new.items() if k != "chroma"},
        entry,
    )


def _feature_sizes(out_dir: Path, names: list[str], views=()) -> dict[str, int]:
    """Bytes of each feature file (and of the first's chroma file when there are views)."""
    sizes = {n: (out_dir / feature_name(n)).stat().st_size for n in names}
    if views:
        sizes["chroma"] = chroma_path(out_dir / feature_name(names[0])).stat().st_size
    return sizes


def check_copy_names(tracks: list[Track], rates_of, path: Path) -> None:
    """Refuse a recording whose utt is the name of another's tempo copy (``sp_0.9-x`` beside
    ``x``): its features and its line in ``full.txt`` would collide."""
    utts = {t.track_id for t in tracks}
    problems = [
        f"utt {copy_id(t.track_id, r)!r} is also the name of the {r:g} tempo copy of "
        f"{t.track_id!r}; rename it (names 'sp_<rate>-<utt>' are reserved for copies)"
        for t in tracks
        for r in rates_of(t)
        if copy_id(t.track_id, r) in utts
    ]
    if problems:
        from .dataset import DatasetError

        raise DatasetError(path, problems)


def given_split(tracks: list[Track], path: Path) -> dict[str, str] | None:
    """The split written in the lines themselves (``"split"``: a published split such as
    SHS100K's), or None when no line has one. Every line of a work must agree."""
    if not any("split" in t.extra for t in tracks):
        return None
    out, problems = {}, []
    for t in tracks:
        s = t.extra.get("split")
        if s not in SPLITS:
            problems.append(f"{t.track_id}: split must be one of {SPLITS}, got {s!r}")
        elif out.setdefault(t.work, s) != s:
            problems.append(f"{t.track_id}: work {t.work!r} is in both {out[t.work]} and {s}")
    if problems:
        from .dataset import DatasetError

        raise DatasetError(path, problems)
    return out


def _extract_one(
    track: Track, out_dir: Path, cfg: FeatureConfig, rates: tuple[float, ...], views: tuple[str, ...] = ()
) -> dict[str, int]:
    """Compute (and save) the CQT of one track, its tempo copies and its chroma views
    (:mod:`coverhunter.chroma`, from the same audio); returns frame counts."""
    import torch

    torch.set_num_threads(1)
    y = peak_normalize(load_audio(track.audio, cfg.sample_rate))
    feat = cqt(y, cfg)
    if feat.shape[0] == 0:
        raise ValueError(f"{track.audio}: shorter than one CQT frame ({len(y)} samples)")
    lengths = {track.track_id: feat.shape[0]}
    if views:
        save_chroma(chroma_path(out_dir / feature_name(track.track_id)), audio_chroma(y, views))
    atomic_save_npy(out_dir / feature_name(track.track_id), feat)
    for rate in rates:
        copy = stretch_frames(feat, rate)
        cid = copy_id(track.track_id, rate)
        atomic_save_npy(out_dir / feature_name(cid), copy)
        lengths[cid] = copy.shape[0]
    return lengths


def _extract_chroma(track: Track, out_dir: Path, cfg: FeatureConfig, views: tuple[str, ...]) -> None:
    """Compute (and save) only the chroma views of a track whose CQT files stand: one
    decoding and the fine CQT (:func:`coverhunter.chroma.audio_chroma`), no model CQT."""
    y = peak_normalize(load_audio(track.audio, cfg.sample_rate))
    save_chroma(chroma_path(out_dir / feature_name(track.track_id)), audio_chroma(y, views))


def _compute(track, out_dir, cfg, rates, views, lengths) -> dict[str, int]:
    """One recording's work: everything (``lengths`` None), or only its chroma views
    (``lengths``: the frame counts of its standing CQT files, returned as they are)."""
    if lengths is None:
        return _extract_one(track, out_dir, cfg, rates, views)
    _extract_chroma(track, out_dir, cfg, views)
    return lengths


def _load_state(path: Path) -> dict:
    """The saved state plus the journal of recordings done since (a torn last line of a
    killed run is ignored)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        state = {}
    journal = path.with_name(JOURNAL_FILE)
    try:
        lines = journal.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            utt, entry = json.loads(line)
            state[utt] = entry
        except (ValueError, TypeError):
            continue
    return state


def _save_state(path: Path, state: dict) -> None:
    """Write the whole state and drop the journal; call with the state lock held."""
    atomic_write_text(path, json.dumps(state))
    path.with_name(JOURNAL_FILE).unlink(missing_ok=True)


def _append_journal(path: Path, line: str) -> None:
    """Append one line to the journal under the state lock (opened each time, so a line
    never lands in a journal another rank has just folded into the state and removed)."""
    with file_lock(path.with_name(LOCK_FILE)):
        with open(path.with_name(JOURNAL_FILE), "a", encoding="utf-8") as fh:
            fh.write(line)


def _plan(tracks, splits, cfg, out_dir, state):
    """Which tracks need (re)computing, as ``(track, rates, fingerprint, lengths)``
    (``lengths``: the frame counts of CQT files that stand when only the chroma views are
    due, else None), and the cached frame counts of the rest."""
    todo, done = [], {}
    rates_all = tuple(r for r in cfg.aug_speed_mode if abs(r - 1.0) > 1e-6)
    views = stored_views(cfg)
    for t in tracks:
        rates = rates_all if splits[t.work] in cfg.aug_splits else ()
        try:
            fp = _fingerprint(t, cfg.features, rates, views)
        except OSError:
            todo.append((t, rates, None, None))  # missing audio: let the worker report it
            continue
        entry = state.get(t.track_id)
        names = [t.track_id] + [copy_id(t.track_id, r) for r in rates]
        written = (entry or {}).get("feat_bytes") or {}
        try:  # every file there, with the size it was written with (not truncated)
            sizes = _feature_sizes(out_dir, names)
            cqt_standing = bool(entry) and all(written.get(n) == b for n, b in sizes.items())
        except OSError:
            cqt_standing = False
        try:  # and the chroma file (each file is looked at once: a catalogue may be large)
            chroma = chroma_path(out_dir / feature_name(t.track_id)).stat().st_size if views else None
            complete = cqt_standing and written == ({**sizes, "chroma": chroma} if views else sizes)
        except OSError:  # the chroma file is missing
            complete = False
        if complete and _same_audio(entry.get("fp", {}), fp, entry):
            if entry["fp"] != fp:
                state[t.track_id] = {**entry, "fp": fp}
            done[t.track_id] = entry["lengths"]
        elif cqt_standing and _same_cqt_inputs(entry.get("fp", {}), fp, entry):
            # other views due, or the chroma file missing or truncated: the chroma only
            todo.append((t, rates, fp, entry["lengths"]))
        else:
            todo.append((t, rates, fp, None))
    return todo, done


def extract_features(
    data_dir: str | Path,
    *,
    config: ExtractConfig | None = None,
    num_workers: int | None = None,
    verbose: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
) -> ExtractReport:
    """Extract CQT features for ``DATA_DIR/dataset.txt`` (see module docstring).

    Parameters
    ----------
    data_dir : path
        Holds ``dataset.txt`` and optionally ``hparams.yaml``; outputs go here too.
    config : ExtractConfig, optional
        Overrides ``DATA_DIR/hparams.yaml``.
    num_workers : int, optional
        Processes; default from the config (0 = one per core).
    verbose : bool
        Show a progress bar.
    rank, world_size : int, optional
        This process's slice (every ``world_size``-th recording by sorted utt, starting
        at ``rank``); default ``$RANK`` / ``$WORLD_SIZE``, else the whole dataset.

    Returns
    -------
    ExtractReport
        Failed recordings are listed there (and logged); the others are written.
        ``lists_written`` says whether this call wrote ``full.txt`` and the split lists.

    Raises
    ------
    ValueError
        A bad configuration, or a rank outside ``0 <= rank < world_size``.
    """
    rank, world_size = resolve_rank(rank, world_size)
    data_dir = Path(data_dir)
    cfg = config or load_extract_config(data_dir / "hparams.yaml")
    if any(r <= 0 for r in cfg.aug_speed_mode):
        raise ValueError(f"aug_speed_mode factors must be > 0, got {cfg.aug_speed_mode}")
    bad = set(cfg.aug_splits) - set(SPLITS)
    if bad:
        raise ValueError(f"aug_splits: unknown split(s) {sorted(bad)}; use {SPLITS}")
    tracks = read_dataset(data_dir / "dataset.txt")
    splits = given_split(tracks, data_dir / "dataset.txt")
    if splits is None:
        s = cfg.split
        splits = split_by_work(tracks, (s.train, s.val, s.test), s.seed)
    rates_all = tuple(r for r in cfg.aug_speed_mode if abs(r - 1.0) > 1e-6)
    check_copy_names(
        tracks, lambda t: rates_all if splits[t.work] in cfg.aug_splits else (), data_dir / "dataset.txt"
    )
    mine = rank_slice(sorted(tracks, key=lambda t: t.track_id), rank, world_size)
    out_dir = data_dir / FEAT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    # leftovers of a killed run, by a plain run only: with ranks on several machines, the
    # pid in a temporary file's name may be another machine's live writer
    if world_size == 1:
        remove_stale_tmp(data_dir), remove_stale_tmp(out_dir)
    state_path = out_dir / STATE_FILE
    lock_path = out_dir / LOCK_FILE
    with file_lock(lock_path):
        state = _load_state(state_path)
    todo, done = _plan(mine, splits, cfg, out_dir, state)
    views = stored_views(cfg)
    report = ExtractReport(n_tracks=len(mine), skipped=len(done), rank=rank, world_size=world_size)
    workers = num_workers if num_workers is not None else cfg.num_workers
    workers = workers or os.cpu_count() or 1
    n_chroma = sum(old is not None for *_, old in todo)
    log.info(
        "%s%d recordings, %d to compute%s, %d up to date",
        f"rank {rank} of {world_size}: " if world_size > 1 else "",
        len(mine),
        len(todo),
        f" ({n_chroma} only their chroma views: their CQT stands)" if n_chroma else "",
        len(done),
    )

    def record(t, rates, fp, lengths, chroma_only):
        done[t.track_id] = lengths
        if fp is not None:
            entry = {
                "fp": fp,
                "lengths": lengths,
                "audio_sha256": sha256_file(fp["audio"]),
                "feat_bytes": _feature_sizes(out_dir, list(lengths), views),
            }
            state[t.track_id] = entry
            _append_journal(state_path, json.dumps([t.track_id, entry]) + "\n")  # per recording
        report.computed += 1
        report.chroma_only += chroma_only

    bar = tqdm(total=len(todo), desc="extract", unit="track", disable=not verbose or not todo)
    if workers == 1 or len(todo) <= 1:
        for t, rates, fp, old in todo:
            try:
                record(t, rates, fp, _compute(t, out_dir, cfg.features, rates, views, old), old is not None)
            except Exception as e:  # noqa: BLE001 - report and go on with the rest
                report.failed.append((t.track_id, str(e)))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            futs = {
                pool.submit(_compute, t, out_dir, cfg.features, rates, views, old): (t, rates, fp, old)
                for t, rates, fp, old in todo
            }
            for fut in as_completed(futs):
                t, rates, fp, old = futs[fut]
                try:
                    record(t, rates, fp, fut.result(), old is not None)
                except Exception as e:  # noqa: BLE001
                    report.failed.append((t.track_id, str(e)))
                bar.update()
    bar.close()
    for utt, msg in report.failed:
        log.error("failed: %s: %s", utt, msg)
    with file_lock(lock_path):  # other ranks may have saved or journalled since we read
        merged = _load_state(state_path)
        merged.update({t.track_id: state[t.track_id] for t in mine if t.track_id in state})
        if world_size > 1:  # lists only once every slice is done, from the state on disk
            missing, done = _plan(tracks, splits, cfg, out_dir, merged)
            report.waiting = len(missing)
        _save_state(state_path, merged)
        if not report.waiting:
            _write_lists(data_dir, tracks, splits, done, out_dir, report)
            report.lists_written = True
    return report


def _write_lists(data_dir, tracks, splits, done, out_dir, report) -> None:
    """full.txt plus per-split lists, song ids by sorted work name, version ids in utt order."""
    works = sorted({t.work for t in tracks})
    song_id = {w: i for i, w in enumerate(works)}
    lines, next_version = [], {}
    for t in sorted(tracks, key=lambda t: t.track_id):
        if t.track_id not in done:
            continue
        for utt, n_frames in done[t.track_id].items():
            is_copy = utt != t.track_id
            rate = float(utt.split("-", 1)[0][3:]) if is_copy else 1.0
            vid = next_version.get(t.work, 0)
            next_version[t.work] = vid + 1
            extra = {
                **t.extra,
                "feat": str(out_dir / feature_name(utt)),
                "feat_len": n_frames,
                "song_id": song_id[t.work],
                "version_id": vid,
                "split": splits[t.work],
            }
            if is_copy:
                extra.update(speed=rate, source_utt=t.track_id)
                report.copies += 1
            lines.append(Track(utt, t.audio, round(t.duration / rate, 3), t.work, t.version, extra))
    write_dataset(lines, data_dir / "full.txt")
    for name in SPLITS:
        write_dataset([t for t in lines if t.extra["split"] == name], data_dir / f"{name}.txt")
    atomic_write_text(data_dir / "song_id.map", "".join(f"{w} {i}\n" for w, i in song_id.items()))
    report.split_counts = {n: sum(1 for w in works if splits[w] == n) for n in SPLITS}
