"""The stored chroma of a catalogue index, read for re-ranking: :class:`IndexChroma`.

Each shard of an index keeps its recordings' chroma beside its vectors, in
``shard_NNNNN.chroma.npz`` (:data:`coverhunter.index.chroma_format.CHROMA_SUFFIX`, written by
:func:`coverhunter.index.chroma_format.write_shard_chroma`): the recordings' uint8 chroma made
with the chroma spec the file records (:func:`coverhunter.index.chroma_format.compact_chroma`),
where each one
starts, and their 2D Fourier summaries. :class:`IndexChroma` reads those files on demand
for ``identify``'s re-ranking: a recording's alignment data, its summary (projected by the
model's summary projection), the recordings nearest to a query by summary, and the first
stage's recurrence index over every stored recording (:meth:`IndexChroma.recurrence`)
or, in a small catalogue, its scan of every stored recording (:meth:`IndexChroma.scan`),
kept in ``INDEX/recurrence.cache/`` (:data:`RECURRENCE_CACHE`) under a key of the chroma
files it was built from. :func:`catalogue_reranking` gives ``identify`` its re-ranking
settings together with the index's stored chroma.

Imports: the re-ranking settings (:mod:`coverhunter.rerank`), a recording's alignment
data (:mod:`coverhunter.alignment_inputs`), the stored format
(:mod:`coverhunter.index.chroma_format`) and the recurrence index
(:mod:`coverhunter.index.recurrence`); none of them imports this module, and the rest of
the index package imports it inside functions only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from ..alignment_inputs import (
    alignment_features,
    recurrence_chroma,
    summary_chroma,
    summary_columns,
    summary_params,
)
from ..chroma import CHROMA_SPEC, fine_views
from ..classical import chroma_params_of, multiscale_summary
from ..qmax import AlignmentFeatures, QmaxParams, qmax_scores
from ..rerank import RerankConfig, identify_config
from .chroma_format import CHROMA_SUFFIX
from .recurrence import RecurrenceIndex, RecurrenceParams
from .recurrence_maths import build_settings

log = logging.getLogger(__name__)


def _damaged(path, e: BaseException):
    """The one-line error of a chroma file that exists but cannot be read."""
    from ..utils import DamagedFileError

    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return DamagedFileError(
        f"{path}: damaged chroma file ({reason}); run 'coverhunter index repair {path.parent}'"
    )


class IndexChroma:
    """Chroma of an index's recordings, read from the shards' ``.chroma.npz`` files on demand.

    Shards written before re-ranking existed have no such file: their recordings give None.
    A query is aligned with chroma made as the index's were (:attr:`params`,
    :meth:`query_features`): a chroma spec (:data:`coverhunter.chroma.CHROMA_SPEC`), or
    for shards written before the fine chroma the CQT chroma's ``(lowest_octave, power)``
    (:data:`coverhunter.classical.LEGACY_CHROMA_PARAMS` before those were recorded). Shards
    added, compacted or repaired are written with the index's own chroma
    (:func:`written_spec`); when shards disagree all the same (an old index extended by a
    version before that rule), those with the current chroma are used and the others give
    None (logged once: rebuild the index to re-rank them again).
    """

    def __init__(self, root, shards: list[str], projection=None):
        from pathlib import Path

        self.root = Path(root)
        self.projection = projection  # the model's SummaryProjection, or None (raw summaries)
        self.patches = (75,) if projection is None else tuple(projection.patches)
        self._shards = list(shards)
        self._where: dict[str, tuple[str, int]] | None = None
        self._files: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
        self._summaries: dict[str, np.ndarray | None] = {}
        self._all: tuple[list[str], np.ndarray] | None = None
        # per shard: its stored summaries, already projected (n, k) when there is a projection,
        # so a large catalogue keeps k floats per recording in memory, not the raw 2,268
        self._stored_summaries: dict[str, np.ndarray] = {}
        self._params: tuple | None = None
        self._shard_chroma: dict[str, tuple | None] = {}  # each shard's chroma parameters
        self._work: dict[str, str] = {}  # track_id -> work (filled by _locate)
        self._recurrence: RecurrenceIndex | None = None
        # the scan's coarse copies of every recording with chroma, under their settings
        self._coarse: tuple[tuple, list[str], list[AlignmentFeatures]] | None = None

    @classmethod
    def of(cls, index, projection=None) -> IndexChroma:
        """The stored chroma of ``index``; ``projection``: its model's summary projection."""
        return cls(index.root, index.meta["shards"], projection)

    def shard_params(self, shard: str) -> str | tuple | None:
        """The chroma a shard's file was made with (read once): a spec, an old file's
        ``(lowest_octave, power)``, or None without a file."""
        if shard not in self._shard_chroma:
            try:
                with np.load(self.root / f"{shard}{CHROMA_SUFFIX}") as z:
                    self._shard_chroma[shard] = (
                        str(z["chroma_spec"])
                        if "chroma_spec" in z
                        else chroma_params_of(z["chroma_params"] if "chroma_params" in z else None)
                    )
            except FileNotFoundError:
                self._shard_chroma[shard] = None  # written before re-ranking existed
            except Exception as e:  # noqa: BLE001 - numpy and zipfile raise many types
                raise _damaged(self.root / f"{shard}{CHROMA_SUFFIX}", e) from e
        return self._shard_chroma[shard]

    @property
    def params(self) -> tuple:
        """The chroma this reader aligns (a spec, or an old index's ``(lowest_octave,
        power)``): the current :data:`coverhunter.chroma.CHROMA_SPEC` if any shard holds
        it, else that of the first shard with chroma."""
        if self._params is None:
            found = [p for p in (self.shard_params(s) for s in self._shards) if p is not None]
            self._params = CHROMA_SPEC if (CHROMA_SPEC in found or not found) else found[0]
            if any(p != self._params for p in found):
                log.warning(
                    "%s: %d of %d chroma files were written with other chroma parameters "
                    "than %s; their recordings are not re-ranked (rebuild the index to "
                    "re-rank them)",
                    self.root,
                    sum(p != self._params for p in found),
                    len(found),
                    self._params,
                )
            summarised = summary_params(self._params)
            if self.projection is not None and tuple(self.projection.chroma) != summarised:
                log.warning(
                    "%s: the index's summary chroma %s differs from the chroma %s the "
                    "model's summary projection was fitted on; rebuild the index for the "
                    "best shortlist",
                    self.root,
                    summarised,
                    tuple(self.projection.chroma),
                )
        return self._params

    @property
    def fine_views(self) -> tuple[str, ...]:
        """The fine chroma views a query needs (from its audio) to be aligned here."""
        return fine_views(self.params)

    def query_features(self, feat, fine: dict | None = None) -> AlignmentFeatures:
        """A query's alignment data (its CQT array or ``.npy`` path, and its fine chroma
        views :attr:`fine_views`), with chroma made as this index's were."""
        return alignment_features(feat, self.params, fine)

    def query_summary(self, query: AlignmentFeatures) -> np.ndarray:
        """A query's 2D Fourier summary, projected as the catalogue's are."""
        s = multiscale_summary(summary_chroma(query.chroma), self.patches)
        return s if self.projection is None else self.projection(s)[0]

    def available(self) -> bool:
        """True when at least one shard stores chroma."""
        return any((self.root / f"{s}{CHROMA_SUFFIX}").is_file() for s in self._shards)

    @property
    def _located(self) -> dict[str, tuple[str, int]]:
        """track_id -> (shard, position in the shard's .jsonl), read once (and each
        recording's work into ``_work``)."""
        if self._where is None:
            self._where = self._locate()
        return self._where

    def _locate(self) -> dict[str, tuple[str, int]]:
        """track_id -> (shard, position in the shard's .jsonl)."""
        where = {}
        for s in self._shards:
            lines = (self.root / f"{s}.jsonl").read_text(encoding="utf-8").splitlines()
            for k, line in enumerate(x for x in lines if x.strip()):
                t = json.loads(line)
                where[t["track_id"]] = (s, k)
                self._work[t["track_id"]] = t.get("work", "")
        return where

    def _file(self, shard: str):
        if shard not in self._files:
            path = self.root / f"{shard}{CHROMA_SUFFIX}"
            try:
                if self.shard_params(shard) != self.params:
                    self._files[shard] = None  # other chroma, or none: not comparable
                    return None
                with np.load(path) as z:
                    self._files[shard] = (z["data"], z["offsets"])
                    # files written before summary_patches existed hold the plain (75,) summary
                    cols = summary_columns(
                        z["summary_patches"] if "summary_patches" in z else (75,), self.patches
                    )
                    if (
                        cols is not None
                        and "summary" in z
                        and len(z["summary"]) == len(z["offsets"]) - 1
                        and z["summary"].shape[1] > cols[-1]
                    ):
                        raw = z["summary"][:, cols].astype(np.float32)
                        self._stored_summaries[shard] = (
                            raw if self.projection is None else self.projection(raw)
                        )
            except FileNotFoundError:
                self._files[shard] = None  # missing: no re-ranking for this shard
            except Exception as e:  # noqa: BLE001 - numpy and zipfile raise many types
                raise _damaged(path, e) from e  # never a silent search without re-ranking
        return self._files[shard]

    def has(self, track_id: str) -> bool:
        """Whether :meth:`get` gives alignment data for a recording (without making it)."""
        loc = self._located.get(track_id)
        f = None if loc is None else self._file(loc[0])
        return f is not None and loc[1] + 1 < len(f[1])

    def get(self, track_id: str) -> AlignmentFeatures | None:
        """Alignment data of a catalogue recording, or None if its shard has no chroma."""
        from ..classical import chroma_from_uint8

        loc = self._located.get(track_id)
        f = None if loc is None else self._file(loc[0])
        if f is None or loc[1] + 1 >= len(f[1]):
            return None
        data, offsets = f
        return AlignmentFeatures.from_chroma(chroma_from_uint8(data[offsets[loc[1]] : offsets[loc[1] + 1]]))

    def summary(self, track_id: str) -> np.ndarray | None:
        """2D Fourier summary of a catalogue recording (stored with its chroma, or computed
        once per reader), or None."""
        if track_id not in self._summaries:
            loc = self._located.get(track_id)
            f = None if loc is None else self._file(loc[0])
            stored = None if f is None else self._stored_summaries.get(loc[0])
            if stored is not None:
                v = stored[loc[1]]  # projected when loaded
            else:
                a = self.get(track_id)
                v = None if a is None else multiscale_summary(summary_chroma(a.chroma), self.patches)
                if v is not None and self.projection is not None:
                    v = self.projection(v)[0]
            self._summaries[track_id] = v
        return self._summaries[track_id]

    def summaries(self) -> tuple[list[str], np.ndarray]:
        """Every recording with chroma and its summary: (track ids, (n, D) float32), once
        per reader; D is 456 for raw summaries, the projection's size (30 for the shipped
        model) otherwise. :meth:`nearest` scans it once per query."""
        if self._all is None:
            ids, vecs = [], []
            for t in self._located:
                v = self.summary(t)
                if v is not None:
                    ids.append(t), vecs.append(v)
            self._all = (ids, np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, 1), np.float32))
        return self._all

    def nearest(self, query_summary: np.ndarray, n: int) -> list[str]:
        """The ``n`` catalogue recordings nearest by the 2D Fourier summary to a query's
        (:meth:`query_summary`)."""
        ids, mat = self.summaries()
        if n <= 0 or not ids:
            return []
        # unit-length summaries: the nearest by distance are the largest inner products
        sims = mat @ query_summary
        top = np.arange(len(ids)) if n >= len(ids) else np.argpartition(-sims, n)[:n]
        top = top[np.lexsort((top, -sims[top]))]  # best first, ties by catalogue order
        return [ids[i] for i in top]

    # -- the first stage's recurrence index over the stored chroma --------------------

    def _recurrence_manifest(self, params: RecurrenceParams) -> dict:
        """What the recurrence index is built from: every shard's chroma file as (name,
        size, modification time; None and None for a missing file), and the chroma and
        index settings, as JSON values (a change of the files' list beyond appended
        shards, or of the settings, rebuilds it)."""
        files = []
        for s in self._shards:
            try:
                st = (self.root / f"{s}{CHROMA_SUFFIX}").stat()
                files.append([s, st.st_size, st.st_mtime_ns])
            except FileNotFoundError:
                files.append([s, None, None])
        settings = [str(self.params), build_settings(params)]  # search settings apply after loading
        return {"files": files, "settings": json.loads(json.dumps(settings))}

    @staticmethod
    def _recurrence_key(manifest: dict) -> str:
        """The cache key of a manifest (:meth:`_recurrence_manifest`)."""
        raw = json.dumps([manifest["files"], *manifest["settings"]], sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:20]

    def recurrence(self, params: RecurrenceParams = RecurrenceParams()) -> RecurrenceIndex | None:
        """The recurrence index (:class:`coverhunter.index.recurrence.RecurrenceIndex`) of
        every stored recording's search view (:func:`coverhunter.alignment_inputs.recurrence_chroma`),
        or None without stored chroma.

        Built on first use and kept in ``INDEX/recurrence.cache/`` for the next reader,
        under a key of the chroma files it was built from. Shards appended since (``index
        add``) are added to the cached index (:meth:`_grown_recurrence`); whatever rewrites
        a shard (compact, repair, a replaced recording) rebuilds it at the next search; a
        recording removed without compaction keeps its shingles until then (the search
        leaves removed recordings out of its answers). An index folder the process cannot
        write to keeps it in memory only.
        """
        if self._recurrence is not None:
            return self._recurrence
        if not self.available():
            return None
        manifest = self._recurrence_manifest(params)
        key = self._recurrence_key(manifest)
        cache = self.root / RECURRENCE_CACHE
        try:
            if self._cached_key(cache) == key:
                self._recurrence = RecurrenceIndex.load(cache).searched_with(params)
                return self._recurrence
            rec = self._grown_recurrence(cache, manifest)
            rec = rec if rec is None else rec.searched_with(params)
        except (OSError, ValueError) as e:
            log.warning("%s: unreadable recurrence cache (%s): rebuilding it", cache, e)
            rec = None
        if rec is None:
            rec = self._built_recurrence(params)
        self._recurrence = rec
        _save_recurrence(rec, cache, key, manifest)
        return rec

    def _recurrence_inputs(self, shards: set | None = None) -> tuple[list[str], list[np.ndarray]]:
        """Track ids and search views of the live recordings (of ``shards`` only, if given)."""
        ids, chromas = [], []
        for t, (s, _) in self._located.items():
            if shards is not None and s not in shards:
                continue
            a = self.get(t)
            if a is not None:
                ids.append(t), chromas.append(recurrence_chroma(a, self.params))
        return ids, chromas

    def _built_recurrence(self, params: RecurrenceParams) -> RecurrenceIndex:
        t0 = time.perf_counter()
        ids, chromas = self._recurrence_inputs()
        rec = RecurrenceIndex(params)
        rec.add(np.asarray(ids, dtype=str), chromas)
        if rec.n_shingles:
            rec.hub_counts()  # computed once, stored with the index
        log.info(
            "%s: recurrence index of %d recordings (%d shingles) built in %.1f s",
            self.root,
            len(rec),
            rec.n_shingles,
            time.perf_counter() - t0,
        )
        return rec

    def _grown_recurrence(self, cache: Path, manifest: dict) -> RecurrenceIndex | None:
        """The cached recurrence index with the recordings of the shards appended since it
        was written, or None when it cannot be grown: no manifest (a cache written before
        manifests), other settings, a file it was built from changed or gone, or a new
        shard replacing a recording it holds. Adding to an HNSW index gives the graph a
        full build would give up to its random levels: the same votes but for near ties."""
        try:
            old = json.loads((cache / MANIFEST_FILE).read_text())
        except FileNotFoundError:
            return None
        n_old = len(old["files"])
        if old["settings"] != manifest["settings"] or old["files"] != manifest["files"][:n_old]:
            return None
        new_shards = {f[0] for f in manifest["files"][n_old:]}
        if not new_shards:
            return None
        t0 = time.perf_counter()
        rec = RecurrenceIndex.load(cache)
        ids, chromas = self._recurrence_inputs(new_shards)
        if set(ids) & set(rec.track_ids.tolist()):
            return None  # a replaced recording: its old shingles would vote for it
        rec.add(np.asarray(ids, dtype=str), chromas)
        if rec.n_shingles:
            rec.hub_counts()
        log.info(
            "%s: %d recordings added to the recurrence index (%d recordings, %d shingles) in %.1f s",
            self.root,
            len(ids),
            len(rec),
            rec.n_shingles,
            time.perf_counter() - t0,
        )
        return rec

    @staticmethod
    def _cached_key(cache: Path) -> str | None:
        """The key the recurrence cache folder was written under, None without one."""
        try:
            return (cache / "key").read_text().strip()
        except FileNotFoundError:
            return None

    def prepare_recurrence(self, params: RecurrenceParams = RecurrenceParams()) -> None:
        """Build and keep the recurrence index (:meth:`recurrence`) unless the cache already
        holds it for these chroma files; reads nothing else (what index commands call
        before they return, so that the first search does not build it)."""
        if self.available() and self._cached_key(self.root / RECURRENCE_CACHE) != self._recurrence_key(
            self._recurrence_manifest(params)
        ):
            self.recurrence(params)

    def work_votes(self, query: AlignmentFeatures) -> dict[str, tuple[str, float]]:
        """The first stage's recurrence votes of a query, per catalogue work: work ->
        (its best-voted recording, votes), for the works that got any vote."""
        rec = self.recurrence()
        if rec is None or rec.n_shingles == 0:
            return {}
        score = rec.scores(recurrence_chroma(query, self.params))
        return self.per_work((str(rec.track_ids[i]), float(score[i])) for i in np.flatnonzero(score > 0))

    def per_work(self, scores) -> dict[str, tuple[str, float]]:
        """Track scores (pairs ``(track_id, score)``, larger = closer) per catalogue work:
        work -> (its best recording, its score), for the scores above 0 of recordings
        still in the catalogue."""
        located = self._located  # the shards' track lists, with each recording's work
        out: dict[str, tuple[str, float]] = {}
        for t, v in scores:
            w = self._work.get(t) if v > 0 and t in located else None
            if w is not None and (w not in out or v > out[w][1]):
                out[w] = (t, float(v))
        return out

    def scan(
        self, query: AlignmentFeatures, block: int, view: int | None, params: QmaxParams
    ) -> dict[str, float]:
        """The first stage's scan of a small catalogue (:func:`coverhunter.rerank.scans`):
        the query's coarse alignment score with every recording that has chroma, track id
        -> score (larger = closer). Each recording's coarse copy
        (:meth:`coverhunter.qmax.AlignmentFeatures.coarse`: frames averaged by ``block``,
        chroma view ``view``, None = all) is made once per reader and settings; the
        alignment is ``params``."""
        key = (block, view)
        if self._coarse is None or self._coarse[0] != key:
            ids = [t for t in self._located if self.has(t)]
            self._coarse = (key, ids, [self.get(t).coarse(block, view) for t in ids])
        _, ids, feats = self._coarse
        if not ids:
            return {}
        return dict(zip(ids, qmax_scores(query.coarse(block, view), feats, params).tolist()))


def written_spec(index, skip=()) -> str | tuple:
    """The chroma a shard written into ``index`` is made with: the chroma its reader aligns
    (:attr:`IndexChroma.params`: the current :data:`coverhunter.chroma.CHROMA_SPEC` where a
    shard holds it, else the first shard's; a new index's is the current one), so that
    adding to an index written by an earlier version, compacting or repairing it keeps one
    chroma, every recording re-ranked. ``skip``: shards not to read (a damaged one)."""
    return IndexChroma(index.root, [s for s in index.meta["shards"] if s not in set(skip)]).params


RECURRENCE_CACHE = "recurrence.cache"
MANIFEST_FILE = "manifest.json"  # in the cache: the chroma files and settings it was built from


def _save_recurrence(rec: RecurrenceIndex, cache, key: str, manifest: dict) -> None:
    """Write a recurrence index to ``cache`` (a folder) with its ``key`` and ``manifest``
    (what it was built from, for :meth:`IndexChroma._grown_recurrence`), replacing what is
    there: written beside it under a temporary name, then swapped in; a reader meanwhile
    sees the old folder or the new one, and at worst rebuilds. Best effort: an index
    folder this process cannot write to keeps the index in memory only."""
    cache = Path(cache)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    old = cache.with_name(f".{cache.name}.{os.getpid()}.old")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        rec.save(tmp)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest) + "\n")
        (tmp / "key").write_text(key + "\n")
        if cache.exists():
            os.replace(cache, old)
        os.replace(tmp, cache)
    except OSError as e:
        log.info("recurrence index of %s kept in memory only (%s)", cache.parent, e)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def catalogue_reranking(
    index,
    rerank: int | None = None,
    grow_after: int | None = None,
    chroma: IndexChroma | None = None,
    projection=None,
    versions: int | None = None,
) -> tuple[RerankConfig, IndexChroma] | None:
    """How ``identify`` re-ranks searches of ``index``: its settings
    (:func:`coverhunter.rerank.identify_config`) and the index's stored chroma, or None
    when re-ranking is off (``rerank`` 0) or the index stores no chroma.

    ``chroma``: an :class:`IndexChroma` of the index to reuse (it caches); otherwise one is
    made with the model's summary ``projection``.
    """
    cfg = identify_config(rerank, grow_after, versions)
    if cfg is None:
        return None
    chroma = chroma or IndexChroma.of(index, projection)
    return (cfg, chroma) if chroma.available() else None


__all__ = ["IndexChroma", "catalogue_reranking", "written_spec", "RECURRENCE_CACHE"]
