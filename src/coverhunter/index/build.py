"""Building an index: :func:`build_index` (one process, swapped in) and :func:`build_shard`
(one rank of several, added in place).

A one-process build fills a hidden sibling folder (``.NAME.build-PID``) under the index's
lock and swaps it in (:func:`coverhunter.index.folder.swap_in`) only when it holds at least
one recording (and calibration, if asked, succeeded): a failed or killed build leaves the
previous index, or none, never an empty or half-built one. A replaced or failed build's
Qdrant collection is dropped.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from ..checkpoint import LoadedModel
from ..dataset import Track, read_dataset
from ..embed import EmbeddingCache
from ..evaluate import windowing
from ..utils import file_lock
from . import folder as fs
from .embedding import tracks_from_folder
from .qdrant_backend import drop_engine
from .results import CatalogueError
from .shard import rank_slice, resolve_rank
from .store import CatalogueIndex

log = logging.getLogger(__name__)


def _build_tracks(dataset, folder) -> list[Track]:
    if (dataset is None) == (folder is None):
        raise ValueError("give exactly one of a dataset list or an audio folder")
    return read_dataset(dataset) if dataset is not None else tracks_from_folder(Path(folder))


def build_index(
    index_dir,
    lm: LoadedModel,
    *,
    dataset=None,
    folder=None,
    backend="auto",
    overwrite=False,
    device="cpu",
    calibrate_with=None,
    cache: EmbeddingCache | None = None,
    uri: str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> tuple[CatalogueIndex, list]:
    """Create an index from a dataset list or a folder of audio files.

    The index is built in a hidden sibling folder and swapped in only when at least one
    recording was added (and calibration, if asked, succeeded): a failed or killed build
    leaves the previous index, or no index, never an empty or half-built one.

    Parameters
    ----------
    backend : str
        See :meth:`CatalogueIndex.create`; ``uri`` goes with ``qdrant``.
    rank, world_size : int, optional
        Sharded build (default: torchrun's ``RANK`` / ``WORLD_SIZE``, else one process):
        see :func:`build_shard`.
    """
    rank, world_size = resolve_rank(rank, world_size)
    if world_size > 1:
        return build_shard(
            index_dir,
            lm,
            dataset=dataset,
            folder=folder,
            backend=backend,
            overwrite=overwrite,
            device=device,
            cache=cache,
            uri=uri,
            rank=rank,
            world_size=world_size,
        )
    root = Path(index_dir)
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(fs.lock_path(root)):
        fs.recover(root)
        fs.replaceable(root, overwrite)
        tracks = _build_tracks(dataset, folder)
        win = windowing(lm.config)
        tmp = root.parent / f".{root.name}{fs.BUILD_TAG}{os.getpid()}"
        idx = None
        try:
            idx = CatalogueIndex.create(tmp, lm, win, backend, uri=uri)
            idx._lock_root = None  # private folder; the lock is held here
            failed = idx.add(lm, tracks, device, cache=cache)
            if idx.meta["n_tracks"] == 0:
                first = f" (e.g. {failed[0][0]}: {failed[0][1]})" if failed else ""
                keep = "the existing index is unchanged" if root.exists() else "no index written"
                raise CatalogueError(f"{root}: no recording could be added{first}; {keep}")
            if calibrate_with is not None:
                idx.calibrate(lm, read_dataset(calibrate_with), device, cache)
            old = fs.read_meta(root) if (root / "meta.json").is_file() else {}
            fs.swap_in(tmp, root)
            idx = None
            drop_engine(old.get("engine"))  # the replaced index's collection
        finally:
            if idx is not None:  # failed: drop its collection
                drop_engine(idx.meta.get("engine"))
            shutil.rmtree(tmp, ignore_errors=True)
    return CatalogueIndex.load(root), failed


def build_shard(
    index_dir,
    lm: LoadedModel,
    *,
    rank: int,
    world_size: int,
    dataset=None,
    folder=None,
    backend="auto",
    overwrite=False,
    device="cpu",
    cache: EmbeddingCache | None = None,
    uri: str | None = None,
) -> tuple[CatalogueIndex, list]:
    """Rank ``rank`` of ``world_size`` adds its slice of the catalogue to one index.

    The first rank to arrive creates the index in place (under the lock); every rank
    then adds every ``world_size``-th recording, committing as it goes, so a re-run of a
    rank resumes its slice. There is no swap: ``overwrite`` is refused.
    """
    if overwrite:
        raise ValueError(
            "a sharded build (world size > 1) adds to one index in place; "
            "remove the old index first instead of --overwrite"
        )
    root = Path(index_dir)
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(fs.lock_path(root)):
        fs.recover(root)
        if not (root / "meta.json").is_file():
            fs.replaceable(root, False)
            CatalogueIndex.create(root, lm, windowing(lm.config), backend, uri=uri)
    idx = CatalogueIndex.load(root)
    tracks = rank_slice(_build_tracks(dataset, folder), rank, world_size)
    log.info("rank %d of %d: %d recordings", rank, world_size, len(tracks))
    failed = idx.add(lm, tracks, device, cache=cache)
    return CatalogueIndex.load(root), failed


__all__ = ["build_index", "build_shard"]
