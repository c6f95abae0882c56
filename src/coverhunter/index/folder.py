"""The index folder on disk: ``meta.json`` (the commit point), shards, the lock, the swap.

Every file is written atomically and ``meta.json`` last, so a reader sees the index
before or after a write, never half of it. Shard files are never rewritten in place:
compaction writes new shards under new names, and deletes the ones it replaced at the
next compaction (a reader holding the old ``meta.json`` can still open them).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..utils import atomic_save_npy, atomic_write_text
from .results import CatalogueError

log = logging.getLogger(__name__)

FORMAT = "coverhunter-index/1"
META_KEYS = ("model_fingerprint", "embed_dim", "windowing", "backend", "shards", "n_tracks", "n_vectors")
# hidden siblings of an index folder: a build in progress, a finished build waiting to be
# swapped in, the index it replaces (see swap_in and recover)
BUILD_TAG, READY_TAG, OLD_TAG = ".build-", ".ready-", ".old-"
TRACK_KEYS = ("track_id", "work", "row", "starts")


def repair_hint(root: Path) -> str:
    """What to run when a file of the index at ``root`` is damaged."""
    return f"run 'coverhunter index repair {root}'"


def _reason(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def lock_path(root: Path) -> Path:
    """The lock file of an index: beside the folder, so it survives a swap of the folder."""
    return root.parent / f".{root.name}.lock"


def read_meta(root: Path) -> dict:
    """``meta.json`` of an index, checked; every problem names the file."""
    path = Path(root) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CatalogueError(f"{root}: not an index (no meta.json)") from None
    except (OSError, ValueError) as e:
        raise CatalogueError(f"{path}: damaged ({e})") from e
    if not isinstance(meta, dict):
        raise CatalogueError(f"{path}: damaged (not a JSON object)")
    if meta.get("format") != FORMAT:
        raise CatalogueError(f"{path}: unknown index format {meta.get('format')!r}")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise CatalogueError(f"{path}: damaged (no {', '.join(missing)})")
    if not isinstance(meta["shards"], list):
        raise CatalogueError(f"{path}: damaged ('shards' is not a list)")
    return meta


def new_meta(lm, win, backend: str, engine: dict | None) -> dict:
    """``meta.json`` of a new, empty index.

    Parameters
    ----------
    lm : coverhunter.checkpoint.LoadedModel
        The model it is built with (its path resolved: the index is used from other
        working directories).
    win : coverhunter.embed.Windowing
    backend : str
        ``auto``, ``exact``, ``hnsw``, ``ivfpq`` or ``qdrant``.
    engine : dict, optional
        The Qdrant collection's record (``qdrant`` only).
    """
    return {
        "format": FORMAT,
        "model_fingerprint": lm.fingerprint,
        "model": str(Path(lm.source).resolve()),
        "embed_dim": lm.config.model.embed_dim,
        "windowing": asdict(win),
        "frames_per_second": lm.config.features.frames_per_second,
        "backend": backend,
        "shards": [],
        "n_tracks": 0,
        "n_vectors": 0,
        "removed_rows": [],
        "engine": engine,
        "calibration": None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def meta_stamp(root: Path) -> tuple | None:
    """What changes whenever ``meta.json`` is committed (every write replaces the file):
    its inode, modification time and size; None without one. One ``stat``, cheap
    enough for a reader to call before every search."""
    try:
        st = os.stat(Path(root) / "meta.json")
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def write_meta(root: Path, meta: dict) -> None:
    atomic_write_text(Path(root) / "meta.json", json.dumps(meta, indent=1))


def read_jsonl(path: Path) -> list[dict]:
    """A shard's track lines; a damaged line is a one-line error naming the file and line."""
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CatalogueError(
            f"{path}: damaged (not UTF-8 text: {e.reason} at byte {e.start}); {repair_hint(path.parent)}"
        ) from e
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            if not all(k in r for k in TRACK_KEYS):
                raise ValueError("missing keys")
        except (ValueError, TypeError) as e:
            raise CatalogueError(f"{path} line {n}: damaged ({e}); {repair_hint(path.parent)}") from e
        rows.append(r)
    return rows


def read_vectors(npy: Path, dim: int, hint: str = "") -> np.ndarray:
    """A shard's vectors (n, dim), memory-mapped; a damaged file raises CatalogueError
    naming it (``hint`` is appended to an unreadable file's message)."""
    try:
        arr = np.load(npy, mmap_mode="r")
    except (OSError, ValueError, EOFError) as e:
        raise CatalogueError(f"{npy}: damaged ({_reason(e)}){hint}") from e
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise CatalogueError(f"{npy}: damaged (shape {arr.shape}, expected [n, {dim}])")
    return arr


def read_shard(root: Path, shard: str, first_row: int, dim: int) -> tuple[np.ndarray, list[dict]]:
    """``(vectors (n, dim) memory-mapped, track lines)`` of one shard starting at ``first_row``."""
    npy, jsonl = root / f"{shard}.npy", root / f"{shard}.jsonl"
    for f in (npy, jsonl):
        if not f.is_file():
            raise CatalogueError(f"{f}: missing (shard {shard} of {root / 'meta.json'})")
    arr = read_vectors(npy, dim, f"; {repair_hint(root)}")
    rows = read_jsonl(jsonl)
    end = first_row + len(arr)
    for r in rows:
        if not first_row <= r["row"] < end or r["row"] + len(r["starts"]) > end:
            raise CatalogueError(
                f"{jsonl}: damaged (track {r['track_id']!r} points to rows outside {npy.name})"
            )
    return arr, rows


def write_shard(
    root: Path, name: str, vectors: np.ndarray, rows: list[dict], chromas: list[np.ndarray], spec
) -> None:
    """A shard's vectors, re-ranking chroma (made with ``spec``,
    :func:`coverhunter.index.chroma_store.written_spec`) and track lines (each file
    atomically)."""
    from .chroma_format import write_shard_chroma

    atomic_save_npy(root / f"{name}.npy", np.ascontiguousarray(vectors, dtype=np.float32))
    write_shard_chroma(root, name, chromas, spec)
    atomic_write_text(root / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def next_shard_name(shards: list[str]) -> str:
    """``shard_NNNNN`` numbered after every shard listed (compaction leaves gaps)."""
    used = [int(s.rsplit("_", 1)[1]) for s in shards if s.rsplit("_", 1)[-1].isdigit()]
    return f"shard_{max(used, default=-1) + 1:05d}"


def read_shard_chroma(root: Path, shard: str) -> list[np.ndarray] | None:
    """Per-recording uint8 chroma of a shard, in its ``.jsonl`` order (None if it has none)."""
    from .chroma_format import CHROMA_SUFFIX

    path = root / f"{shard}{CHROMA_SUFFIX}"
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            data, offsets = z["data"], z["offsets"]
        if offsets.ndim != 1 or len(offsets) == 0 or offsets[-1] != len(data):
            raise ValueError("its offsets do not match its data")
    except Exception as e:  # noqa: BLE001 - numpy and zipfile raise many types for bad files
        raise CatalogueError(f"{path}: damaged chroma file ({_reason(e)}); {repair_hint(root)}") from e
    return [data[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def check_shard_chroma(root: Path, shard: str, n_recordings: int) -> None:
    """Raise a one-line :class:`CatalogueError` naming a shard's chroma file when it exists
    but cannot be read or does not list ``n_recordings`` recordings (cheap: reads the
    offsets and the data's header, not the chroma itself)."""
    from .chroma_format import CHROMA_SUFFIX

    path = root / f"{shard}{CHROMA_SUFFIX}"
    if not path.exists():
        return  # written before re-ranking existed
    try:
        with np.load(path) as z:
            offsets = z["offsets"]
            with z.zip.open("data.npy") as f:
                fmt = np.lib.format
                read = fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0) else fmt.read_array_header_2_0
                shape = read(f)[0]
        if offsets.ndim != 1 or len(offsets) != n_recordings + 1:
            raise ValueError(f"{len(offsets) - 1} recordings, its shard lists {n_recordings}")
        if shape[:1] != (int(offsets[-1]),):
            raise ValueError("its offsets do not match its data")
    except Exception as e:  # noqa: BLE001 - numpy and zipfile raise many types for bad files
        raise CatalogueError(f"{path}: damaged chroma file ({_reason(e)}); {repair_hint(root)}") from e


def delete_shards(root: Path, shards: list[str]) -> None:
    """Remove the files of shards no longer listed in ``meta.json`` (after the commit)."""
    for s in shards:
        for f in root.glob(f"{s}.*"):
            f.unlink(missing_ok=True)


def swap_interrupted(root: Path) -> bool:
    """Whether a killed build left a swap of ``root`` unfinished (:func:`recover` ends it)."""
    return any(True for tag in (READY_TAG, OLD_TAG) for _ in root.parent.glob(f".{root.name}{tag}*"))


def recover(root: Path) -> None:
    """End what a killed build left beside ``root`` (call under the index lock): remove
    half-built folders, finish a swap whose build was complete, and put back an old index
    moved aside by an older version's swap."""
    for p in root.parent.glob(f".{root.name}{BUILD_TAG}*"):
        shutil.rmtree(p, ignore_errors=True)
        log.info("removed %s, left by an interrupted build", p)
    ready = sorted(root.parent.glob(f".{root.name}{READY_TAG}*"), key=lambda p: p.stat().st_mtime)
    for p in ready[:-1]:
        shutil.rmtree(p, ignore_errors=True)
    if ready:
        _finish_swap(ready[-1], root)
        log.warning("%s: finished swapping in the index of a build interrupted at its end", root)
    for p in sorted(root.parent.glob(f".{root.name}{OLD_TAG}*")):
        if not root.exists():
            os.replace(p, root)
            log.warning("%s: restored the index that an interrupted build was replacing", root)
        else:
            shutil.rmtree(p, ignore_errors=True)


def replaceable(root: Path, overwrite: bool) -> None:
    """Refuse to replace what must not be replaced (call under the lock)."""
    if not root.exists():
        return
    if not root.is_dir():
        raise CatalogueError(f"{root}: exists and is not a folder")
    if (root / "meta.json").exists():
        if overwrite:
            return
        try:
            empty = read_meta(root)["n_tracks"] == 0
        except CatalogueError:
            empty = False
        if not empty:
            raise CatalogueError(f"{root}: an index exists already (use 'index add', or --overwrite)")
        return  # an empty index (e.g. of an interrupted older build) is rebuilt
    if any(root.iterdir()):
        raise CatalogueError(f"{root}: a non-empty folder that is not an index; not replacing it")


def swap_in(tmp: Path, root: Path) -> None:
    """Put the built folder at ``root`` (call under the index lock).

    The complete build is first renamed ``.NAME.ready-PID``; then an old index is moved
    aside to ``.NAME.old-PID``, the ready folder takes its place and the old one is
    deleted. A kill at any point leaves a state that :func:`recover` (run by the next
    command that opens the folder) finishes: the new index in place, the old one gone.
    """
    ready = root.parent / f".{root.name}{READY_TAG}{os.getpid()}"
    os.replace(tmp, ready)
    _finish_swap(ready, root)


def _finish_swap(ready: Path, root: Path) -> None:
    old = None
    if root.exists():
        old = root.parent / f".{root.name}{OLD_TAG}{os.getpid()}"
        os.replace(root, old)
    os.replace(ready, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
