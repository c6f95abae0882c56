"""``coverhunter index repair``: rewrite damaged shard files from what the index still has.

A shard is three files (see :mod:`.catalogue`). When one is damaged (truncated, garbage):

- ``.chroma.npz``: the chroma is recomputed from each recording's audio;
- ``.npy``: the embeddings are recomputed from the audio (same model and windowing, so
  each recording keeps its rows);
- ``.jsonl``: which recordings the shard held is lost; its rows are dropped and the
  report says so (add those recordings again).

A recording whose audio cannot be read (or no longer gives its chunks) is removed from
the index and listed. Removed rows are then compacted away. Everything runs under the
index's write lock and commits ``meta.json`` last, as every writer does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..checkpoint import LoadedModel, load_model
from ..chroma import fine_views
from ..dataset import Track
from ..utils import atomic_save_npy, atomic_write_text, file_lock, remove_stale_tmp
from . import folder as fs
from .chroma_store import written_spec
from .embedding import embed_recordings
from .results import CatalogueError
from .store import CatalogueIndex

log = logging.getLogger(__name__)


@dataclass
class RepairReport:
    """What :func:`repair_index` did."""

    rewritten: list[str] = field(default_factory=list)  # files written anew
    removed: list[tuple[str, str]] = field(default_factory=list)  # (track id, why)
    lost: list[str] = field(default_factory=list)  # shards whose recording list was unreadable

    @property
    def complete(self) -> bool:
        """True when no recording was lost."""
        return not self.removed and not self.lost


@dataclass
class _Shard:
    """One shard as found on disk: what could be read of it (None: damaged)."""

    name: str
    first: int  # its first row
    vectors: np.ndarray | None
    lines: list[dict] | None
    chroma_damaged: bool


def repair_index(
    root: str | Path, lm: LoadedModel | None = None, device="cpu", verbose: bool = False
) -> RepairReport:
    """Rewrite the damaged files of the index at ``root`` (see the module's notes).

    Parameters
    ----------
    lm : LoadedModel, optional
        The index's model (default: the one ``meta.json`` names); needed only when
        chroma or embeddings must be recomputed.

    Raises
    ------
    CatalogueError
        ``meta.json`` is damaged, or a shard lost both its vectors and its list.
    """
    root = Path(root)
    report = RepairReport()
    with file_lock(fs.lock_path(root)):
        fs.recover(root)
        remove_stale_tmp(root)
        idx = CatalogueIndex(root, fs.read_meta(root))
        idx._lock_root = None  # its lock is held here
        shards = _survey(idx)
        if not any(s.vectors is None or s.lines is None or s.chroma_damaged for s in shards):
            return report
        dead = set(idx.meta.get("removed_rows", []))
        for s in shards:
            if s.lines is None:
                dead.add(_drop_rows(idx, s, report))
            elif s.vectors is None or s.chroma_damaged:
                lm = lm or load_model(Path(idx.meta["model"]), device)
                idx.check_model(lm)
                dead |= _recompute(idx, s, lm, device, dead, report, verbose)
        lines = [t for s in shards for t in (s.lines or [])]
        idx.meta["removed_rows"] = sorted(dead)
        idx.meta["n_tracks"] = sum(t["row"] not in dead for t in lines)
        idx._commit()
        idx._forget()
        if dead:
            idx._compact()
    return report


def _survey(idx: CatalogueIndex) -> list[_Shard]:
    """Every shard's readable parts, in order, with its first row."""
    out, first = [], 0
    for name in idx.meta["shards"]:
        # _try calls each function at once: the loop variables are bound when it runs
        vectors = _try(lambda: fs.read_vectors(idx.root / f"{name}.npy", idx.meta["embed_dim"]))  # noqa: B023
        lines = _try(lambda: fs.read_jsonl(idx.root / f"{name}.jsonl"))  # noqa: B023
        if vectors is not None:
            n = len(vectors)
        elif lines is not None:
            n = max((t["row"] + len(t["starts"]) for t in lines), default=first) - first
        else:
            raise CatalogueError(
                f"{idx.root / name}.npy and .jsonl are both damaged: the index "
                "cannot be repaired; build it again"
            )
        chroma_damaged = (
            lines is not None and _try(lambda: _read_chroma(idx.root, name, len(lines)), failed=True) is True  # noqa: B023
        )
        out.append(_Shard(name, first, vectors, lines, chroma_damaged))
        first += n
    return out


def _try(read, failed=None):
    try:
        return read()
    except CatalogueError as e:
        log.warning("%s", e)
        return failed


def _read_chroma(root: Path, shard: str, n: int) -> None:
    """Read a shard's chroma wholly (a damaged file raises); the count must be ``n``."""
    chroma = fs.read_shard_chroma(root, shard)
    if chroma is not None and len(chroma) != n:
        raise CatalogueError(
            f"{root / shard}.chroma.npz: damaged ({len(chroma)} recordings, its shard lists {n})"
        )


def _drop_rows(idx: CatalogueIndex, s: _Shard, report: RepairReport) -> int:
    """A shard whose list is unreadable: one removed placeholder over all its rows (the
    compaction drops them); returns its first row."""
    from .chroma_format import write_shard_chroma

    line = {
        "track_id": f"({s.name}: lost)",
        "work": "",
        "audio": "",
        "row": s.first,
        "starts": [0.0] * len(s.vectors),
    }
    # the index's own chroma, so that the placeholder leaves the others re-ranked
    write_shard_chroma(idx.root, s.name, [np.zeros((0, 12), np.uint8)], written_spec(idx, skip=[s.name]))
    atomic_write_text(idx.root / f"{s.name}.jsonl", json.dumps(line) + "\n")
    s.lines = [line]
    report.rewritten += [f"{s.name}.jsonl", f"{s.name}.chroma.npz"]
    report.lost.append(s.name)
    log.warning(
        "%s: its list of recordings was unreadable; its %d chunk rows are dropped (add its recordings again)",
        idx.root / f"{s.name}.jsonl",
        len(s.vectors),
    )
    return s.first


def _audio_path(idx: CatalogueIndex, audio: str) -> str:
    """A stored audio path: absolute, or (older indexes) relative to the index folder."""
    p = Path(audio)
    return str(p if p.is_absolute() or not (idx.root / p).is_file() else idx.root / p)


def _recompute(
    idx: CatalogueIndex, s: _Shard, lm: LoadedModel, device, dead: set, report: RepairReport, verbose: bool
) -> set:
    """Embeddings and/or chroma of a shard's live recordings from their audio, written in
    place of the damaged files; returns the rows of recordings that had to be removed."""
    from .chroma_format import compact_chroma, write_shard_chroma

    live = [t for t in s.lines if t["row"] not in dead]
    tracks = [Track(t["track_id"], _audio_path(idx, t["audio"]), 0.0, t["work"]) for t in live]
    spec = written_spec(idx, skip=[s.name])  # the index's chroma, from its readable shards
    chroma: dict[int, np.ndarray] = {}
    embs = embed_recordings(
        lm,
        tracks,
        idx.windowing,
        device,
        verbose=verbose,
        on_features=lambda i, f, fine: chroma.__setitem__(i, compact_chroma(f, fine, spec)),
        views=fine_views(spec),
    )
    got = {t["row"]: (e, i) for i, (t, e) in enumerate(zip(live, embs))}
    n_rows = max((t["row"] + len(t["starts"]) for t in s.lines), default=s.first) - s.first
    vectors = np.zeros((n_rows, idx.meta["embed_dim"]), np.float32)
    chromas, removed = [], set()
    for t in s.lines:
        a, b = t["row"] - s.first, t["row"] - s.first + len(t["starts"])
        (emb, starts), i = got.get(t["row"], ((None, None), None))
        if i is not None and emb is not None and len(emb) == len(t["starts"]):
            vectors[a:b] = emb if s.vectors is None else s.vectors[a:b]
            chromas.append(chroma[i])
            continue
        if i is not None:  # live, but its audio no longer gives its rows
            why = starts if emb is None else f"its audio now gives {len(emb)} chunks, not {b - a}"
            report.removed.append((t["track_id"], why))
            log.warning("%s: removed %s (%s); add it again", idx.root, t["track_id"], why)
            removed.add(t["row"])
        if s.vectors is not None:
            vectors[a:b] = s.vectors[a:b]
        chromas.append(np.zeros((0, 12), np.uint8))
    if s.vectors is None:
        atomic_save_npy(idx.root / f"{s.name}.npy", vectors)
        report.rewritten.append(f"{s.name}.npy")
    if s.chroma_damaged or s.vectors is None:
        write_shard_chroma(idx.root, s.name, chromas, spec)
        report.rewritten.append(f"{s.name}.chroma.npz")
    log.info("%s: rewrote %s from the recordings' audio", idx.root, s.name)
    return removed


__all__ = ["RepairReport", "repair_index"]
