"""Every write of an index after its creation: add, remove, compact.

Each runs its read-modify-write under the index's exclusive lock
(:meth:`~coverhunter.index.CatalogueIndex._locked`), re-reads ``meta.json`` first (other
writers), writes new files and commits ``meta.json`` last:

- :func:`add` embeds recordings without the lock and commits them ``ADD_GROUP`` at a
  time: a new shard each, appended to the engine before the commit
  (:meth:`~coverhunter.index.backend.Backend.append`); the faiss file is written at the
  end (:func:`flush_engine`). A killed add keeps what it committed; a re-run skips those.
- :func:`remove` (and replacing a track) tombstones recordings: their first rows go to
  ``removed_rows``, searches skip them, the engine forgets them where it can.
- once ``COMPACT_AT`` of the rows are dead, or on :func:`compact`, the live rows are
  rewritten into a new shard and engine (:func:`compact_locked`); the files they replace
  stay until the next compaction, for readers of the old ``meta.json``.

Each function takes the index (a :class:`~coverhunter.index.CatalogueIndex`); the index's
methods of the same names call them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..checkpoint import LoadedModel
from ..chroma import chroma_path, fine_views
from ..dataset import Track
from ..embed import EmbeddingCache
from ..utils import remove_stale_tmp
from . import faiss_backend as fb
from . import folder as fs
from .backend import kind_for, open_backend
from .chroma_store import IndexChroma, written_spec
from .embedding import embed_recordings
from .qdrant_backend import drop_engine

log = logging.getLogger(__name__)

ADD_GROUP = 256  # recordings embedded and committed at a time by ``add``
COMPACT_AT = 0.25  # compact once this share of the rows belongs to removed recordings
ALREADY = "already in the index"


# -- adding ---------------------------------------------------------------------------
def add(
    index,
    lm: LoadedModel,
    tracks: list[Track],
    device="cpu",
    verbose: bool = True,
    cache: EmbeddingCache | None = None,
    replace: bool = False,
) -> list[tuple[str, str]]:
    """Embed and append recordings; returns the (track_id, error) pairs that failed.

    See :meth:`coverhunter.index.CatalogueIndex.add`.
    """
    index.check_model(lm)
    failed = []
    for g in range(0, len(tracks), ADD_GROUP):
        failed += _add_group(index, lm, tracks[g : g + ADD_GROUP], device, verbose, cache, replace)
    flush_engine(index)
    return failed


def _add_group(index, lm, tracks, device, verbose, cache, replace) -> list:
    known = {t["track_id"] for t in index.tracks()}
    failed, todo, seen = [], [], set()
    for t in tracks:
        if (t.track_id in known and not replace) or t.track_id in seen:
            failed.append((t.track_id, ALREADY))
        else:
            todo.append(t)
            seen.add(t.track_id)
    spec = written_spec(index)  # the index's own chroma: one chroma in an index
    new, chroma, bad = _embed(index, lm, todo, device, verbose, cache, spec)
    failed += bad
    if not new:
        return failed
    with index._locked():
        remove_stale_tmp(index.root)
        index._reload()
        if written_spec(index) != spec:  # rebuilt with another chroma meanwhile
            return failed + [(t.track_id, "the index was rebuilt meanwhile; add it again") for t, _, _ in new]
        failed += _append(index, new, chroma, replace, spec)
    return failed


def _embed(index, lm, todo, device, verbose, cache, spec):
    """``(embedded (track, vectors, starts), chroma by track id made with ``spec``,
    failures)``, no lock held."""
    from .chroma_format import compact_chroma

    chroma = {}  # per-recording uint8 chroma for re-ranking, stored beside the shard
    embs = embed_recordings(
        lm,
        todo,
        index.windowing,
        device,
        cache,
        verbose=verbose,
        on_features=lambda i, f, fine: chroma.__setitem__(todo[i].track_id, compact_chroma(f, fine, spec)),
        views=fine_views(spec),
    )
    new, failed = [], []
    for t, (emb, starts) in zip(todo, embs):
        if emb is None:
            failed.append((t.track_id, starts))
        else:
            new.append((t, emb, starts))
    return new, chroma, failed


def _append(index, new, chroma, replace, spec) -> list:
    """Write one shard of new recordings (chroma made with ``spec``) and commit (call under
    the lock)."""
    meta = index.meta
    live = {t["track_id"]: t for t in index.tracks()}
    n0 = meta["n_vectors"]
    rows, vecs, replaced, failed = [], [], [], []
    for t, emb, starts in new:
        if t.track_id in live:
            if not replace:  # added by another writer meanwhile
                failed.append((t.track_id, ALREADY))
                continue
            replaced.append(live[t.track_id])
        rows.append(
            {
                "track_id": t.track_id,
                "work": t.work,
                "audio": t.audio,
                "row": n0 + sum(len(v) for v in vecs),
                "starts": starts,
            }
        )
        vecs.append(emb)
    if not rows:
        return failed
    name = next_shard(index)
    arr = np.concatenate(vecs)
    fs.write_shard(index.root, name, arr, rows, [chroma[r["track_id"]] for r in rows], spec)
    # before the commit: readers ignore rows past n_vectors; the kind the index has after it
    open_backend(index, kind_for(meta, n0 + len(arr))).append(arr, n0)
    meta["shards"].append(name)
    meta["n_tracks"] += len(rows) - len(replaced)
    meta["n_vectors"] += len(arr)
    commit_removing(index, replaced)
    return failed


def flush_engine(index) -> None:
    """Write what the add appended to its faiss index (``index._writer``), if that still
    matches the rows: another writer may have compacted meanwhile."""
    w = index._writer
    if w is None or w.ann.ntotal == w.saved:
        index._writer = None
        return
    with index._locked():
        index._reload()
        if w.name == fb.ann_path(index).name and w.ann.ntotal <= index.meta["n_vectors"]:
            w.save(index.root)
    index._writer = None


# -- removing -------------------------------------------------------------------------
def remove(index, track_ids: list[str]) -> list[str]:
    """Remove recordings by track id; returns the ids that were not in the index."""
    with index._locked():
        remove_stale_tmp(index.root)
        index._reload()
        live = {t["track_id"]: t for t in index.tracks()}
        missing = [tid for tid in track_ids if tid not in live]
        gone = [live[tid] for tid in dict.fromkeys(track_ids) if tid in live]
        if gone:
            index.meta["n_tracks"] -= len(gone)
            commit_removing(index, gone)
    return missing


def commit_removing(index, tracks: list[dict]) -> None:
    """Commit ``meta.json`` with ``tracks`` (maybe none) tombstoned, under the lock; then
    drop their engine points and compact once ``COMPACT_AT`` of the rows are dead."""
    meta = index.meta
    meta["removed_rows"] = meta.get("removed_rows", []) + [t["row"] for t in tracks]
    index._commit()
    index._forget()
    if tracks:
        rows = np.concatenate([np.arange(t["row"], t["row"] + len(t["starts"])) for t in tracks])
        open_backend(index, index.kind).remove(rows)
    if meta["removed_rows"] and (index._dead_rows().sum() >= COMPACT_AT * meta["n_vectors"]):
        compact_locked(index)


# -- compacting -----------------------------------------------------------------------
def compact(index) -> int:
    """Rewrite the index without its removed recordings; returns the rows dropped."""
    with index._locked():
        remove_stale_tmp(index.root)
        index._reload()
        return compact_locked(index)


def compact_locked(index) -> int:
    """New shard and engine index of the live rows, committed; old files go after (call
    under the lock)."""
    meta = index.meta
    removed = set(meta.get("removed_rows", []))
    if not removed:
        return 0
    vecs, rows, chromas, first, n = [], [], [], 0, 0
    dropped = []
    reader = IndexChroma(index.root, meta["shards"])
    spec = reader.params  # the chroma the index re-ranks with, kept by the new shard
    for s in meta["shards"]:
        arr, lines = fs.read_shard(index.root, s, first, meta["embed_dim"])
        # a shard of another chroma was not re-ranked (IndexChroma.params): nor is it now
        same = reader.shard_params(s) == spec
        stored = (same and fs.read_shard_chroma(index.root, s)) or [np.zeros((0, 12), np.uint8)] * len(lines)
        for t, chroma in zip(lines, stored):
            if t["row"] in removed:
                dropped.append(t)
            else:
                a = t["row"] - first
                vecs.append(np.asarray(arr[a : a + len(t["starts"])]))
                rows.append({**t, "row": n})
                chromas.append(chroma)
                n += len(t["starts"])
        first += len(arr)
    # the files replaced now stay until the next compaction, so a reader that loaded
    # the old meta.json just before this commit can still open them
    stale = meta.get("stale") or {}
    name = next_shard(index)
    arr = np.concatenate(vecs) if vecs else np.zeros((0, meta["embed_dim"]), np.float32)
    if rows:
        fs.write_shard(index.root, name, arr, rows, chromas, spec)
    meta.update(
        shards=[name] if rows else [],
        n_vectors=n,
        removed_rows=[],
        stale={k: meta.get(k) for k in ("shards", "ann_file", "engine")},
    )
    meta.update(open_backend(index, kind_for(meta, len(arr))).rebuild(arr, name))
    index._commit()
    index._forget()
    _delete_stale(index.root, stale)
    _delete_uploads(index.root, dropped, rows)
    log.info("%s: compacted, %d rows of removed recordings dropped", index.root, first - n)
    return first - n


def next_shard(index) -> str:
    """The name of the index's next shard, after every listed and stale one."""
    stale = (index.meta.get("stale") or {}).get("shards") or []
    return fs.next_shard_name(index.meta["shards"] + stale)


def _delete_stale(root: Path, stale: dict) -> None:
    """Delete what the compaction before the last one replaced: shards, engine file or
    collection (``meta["stale"]`` as it was before the last compaction)."""
    if not stale:
        return
    fs.delete_shards(root, stale.get("shards") or [])
    (root / (stale.get("ann_file") or fb.ANN_FILE)).unlink(missing_ok=True)
    drop_engine(stale.get("engine"))


def _delete_uploads(root: Path, dropped: list[dict], live: list[dict]) -> None:
    """Delete the files ``POST /tracks`` kept in ``uploads/`` (``ID.ext``, ``ID.cqt.npy``
    and ``ID.chroma.npz``) for recordings a compaction dropped, unless a live recording still
    uses them (a replaced track keeps its id)."""
    uploads = root / "uploads"
    if not uploads.is_dir():
        return
    live_ids = {t["track_id"] for t in live}
    live_audio = {
        Path(t.get("audio") or "").name for t in live if Path(t.get("audio") or "").parent.name == "uploads"
    }
    for t in dropped:
        if t["track_id"] in live_ids:
            continue
        names = [f"{t['track_id']}.cqt.npy", chroma_path(f"{t['track_id']}.cqt.npy").name]
        audio = Path(t.get("audio") or "")
        if audio.parent.name == "uploads" and audio.name not in live_audio:
            names.append(audio.name)
        for name in names:
            (uploads / name).unlink(missing_ok=True)


__all__ = ["add", "remove", "compact", "compact_locked", "commit_removing", "flush_engine", "next_shard"]
