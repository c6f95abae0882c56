"""The service's work: decoding in killable child processes, one model thread, the index.

Uploads are decoded and turned into a CQT in a child process each (forked from a
``forkserver`` that has the audio and feature modules loaded, so a child starts in
milliseconds): a file that makes the decoder hang or crash costs that child only, and a
child running past ``decode_timeout_s`` is killed. At most ``decoders`` children run at
once. Everything that touches the model or the index (embedding, search, adding
tracks) runs on one thread in order, so the single model instance is never used by two
requests at once and an add never races a search.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import re
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..audio import AUDIO_EXTS, AudioError
from ..checkpoint import load_model
from ..chroma import CHROMA_SPEC, chroma_path, fine_views, save_chroma
from ..config import FeatureConfig, ServeConfig
from ..dataset import Track
from ..identification import Recording, embed_query, identify, search_settings
from ..index import CatalogueError, CatalogueIndex
from ..inputs import input_views
from ..utils import DamagedFileError, resolve_device

log = logging.getLogger(__name__)

TRACK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]{0,127}$")  # ids a client may give
MAX_ALIGN_ROWS = 400  # query chunks drawn in the alignment picture (long queries subsampled)


class InputError(Exception):
    """A request the service cannot answer because of its input: an HTTP status and why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# ---------------------------------------------------------------------------
# decoding child


def _decode_child(src: str, dst: str, err: str, cfg: FeatureConfig, max_s: float, views: tuple) -> None:
    """In a child process: audio file -> CQT and the fine chroma ``views`` in the ``.npz``
    at ``dst``; a problem -> text at ``err``."""
    import os

    import torch

    from ..stream import recording_analysis

    torch.set_num_threads(1)
    try:
        feat, fine = recording_analysis(src, cfg, views, max_seconds=max_s)
        if len(feat) == 0:
            raise AudioError(f"{src}: too short to analyse (less than one frame)")
        with open(dst, "wb") as f:
            np.savez(f, cqt=feat, **{f"chroma_{v}": c for v, c in fine.items()})
    except AudioError as e:
        Path(err).write_text(str(e))
        os._exit(3)
    except MemoryError:
        Path(err).write_text(f"{src}: too large to decode")
        os._exit(3)


def _noop() -> None:
    pass


def upload_suffix(filename: str | None) -> str:
    """A decoder hint from the client's file name: its extension when it is an audio one."""
    suffix = Path(filename or "").suffix.lower()
    return suffix if suffix in AUDIO_EXTS else ".bin"


class Engine:
    """The model, the index and the workers of one service.

    Parameters
    ----------
    cfg : ServeConfig
    """

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self._load_problem: str | None = None  # why the index on disk cannot be opened
        self.index = self._open_index()
        self.device = resolve_device(cfg.device)
        self.lm = load_model(cfg.model or Path(self.index.meta["model"]), self.device)
        # what a decoding computes: the re-ranking's chroma views (today's, and those of an
        # index written with another chroma, which it keeps: chroma_store.written_spec) and
        # the model's input
        self.views = input_views(self.lm.config, (*fine_views(CHROMA_SPEC), *self._index_views()))
        self.index.check_model(self.lm)
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="coverhunter-model")
        n_dec = cfg.decoders or max(1, multiprocessing.cpu_count())
        self._decoding = threading.BoundedSemaphore(n_dec)
        self._ctx = multiprocessing.get_context("forkserver")
        # librosa's heavy modules (2-3 s to import) once, not in every decoding child
        self._ctx.set_forkserver_preload(
            ["coverhunter.stream", "coverhunter.serve.engine", "librosa.core.constantq", "librosa.core.pitch"]
        )
        self._tmp = tempfile.TemporaryDirectory(prefix="coverhunter-serve-", dir=cfg.workdir)
        self.tmp = Path(self._tmp.name)
        self.service_s = 1.0  # moving average of a request's model time (Retry-After)
        self._by_id: dict[str, dict] | None = None
        self._by_id_of: tuple | None = None  # (index, generation) that _by_id was made from
        self._reload_lock = threading.Lock()
        self._damage: tuple | None = None  # (index, message): a file found damaged by a search
        p = self._ctx.Process(target=_noop)  # start the fork server now, not on a request
        p.start()
        p.join()
        if self._load_problem is None:
            log.info(
                "serving %s: %d recordings of %d works, model %s on %s",
                cfg.index,
                self.index.meta["n_tracks"],
                self.index.n_works,
                self.lm.source,
                self.device,
            )
            try:  # the first stage's recurrence index now (read or built), not on the first request
                self.chroma(self.index).recurrence()
            except (CatalogueError, OSError, ValueError) as e:  # a damaged file: /health says which
                log.error("%s", " ".join(str(e).split()))

    def _open_index(self) -> CatalogueIndex:
        """The index at start-up. With a damaged shard file the service still starts:
        ``/health`` names the file and searches answer 503 until ``coverhunter index
        repair`` commits (a damaged or missing ``meta.json`` stops it)."""
        try:
            return CatalogueIndex.load(self.cfg.index)
        except CatalogueError as e:
            idx = CatalogueIndex(Path(self.cfg.index), CatalogueIndex.read_meta(self.cfg.index))
            self._load_problem = " ".join(str(e).split())
            log.error("%s; searches answer 503 until it is repaired", self._load_problem)
            return idx  # never read as it is: fresh() loads the index again on each request

    def close(self) -> None:
        self._model_thread.shutdown(wait=True)
        self._tmp.cleanup()

    # -- decoding -----------------------------------------------------------------------
    def decode(
        self, src: Path, name: str, max_s: float | None = None, timeout_s: float | None = None
    ) -> tuple[np.ndarray, dict]:
        """CQT (frames, n_bins) and fine chroma views (``{view: (T, 12)}``) of an uploaded
        file, computed in a child process (blocking).

        ``max_s`` and ``timeout_s`` default to the configured duration limit and decode timeout.

        Raises
        ------
        InputError
            413 too long, 422 not decodable, empty, too short or over the decode timeout.
        """
        dst, err = src.with_suffix(".npz"), src.with_suffix(".err")
        max_s = self.cfg.max_duration_s if max_s is None else max_s
        timeout_s = self.cfg.decode_timeout_s if timeout_s is None else timeout_s
        with self._decoding:
            p = self._ctx.Process(
                target=_decode_child,
                daemon=True,
                args=(str(src), str(dst), str(err), self.lm.config.features, max_s, self.views),
            )
            p.start()
            p.join(timeout_s)
            if p.is_alive():
                p.kill()
                p.join()
                raise InputError(422, f"{name}: decoding took longer than {timeout_s:g} s")
        if p.exitcode == 3:
            msg = err.read_text().replace(str(src), name)
            raise InputError(413 if "longer than the limit" in msg else 422, msg)
        if p.exitcode != 0 or not dst.is_file():
            raise InputError(422, f"{name}: the decoder failed on this file (exit status {p.exitcode})")
        try:
            with np.load(dst) as z:
                return z["cqt"], {k[len("chroma_") :]: z[k] for k in z.files if k.startswith("chroma_")}
        finally:
            dst.unlink(missing_ok=True)

    # -- the index on disk -----------------------------------------------------------------
    def current(self) -> CatalogueIndex:
        """The catalogue as it is on disk now: reloaded when another process (``coverhunter
        index add/remove/compact/build``) committed a change since it was read, else the
        one in memory (checked with one ``stat`` per call).

        Raises
        ------
        InputError
            503 when the changed index cannot be opened (damaged) or was rebuilt with
            another model; the message names the problem.
        """
        with self._reload_lock:
            old = self.index
            try:
                idx = old.fresh()
                if idx is not old:
                    idx.check_model(self.lm)
            except CatalogueError as e:
                self._load_problem = " ".join(str(e).split())
                log.error("%s", self._load_problem)
                raise InputError(503, f"the catalogue cannot be searched: {self._load_problem}") from e
            self._load_problem = None
            if idx is not old:
                log.info(
                    "%s changed on disk (generation %d -> %d): reloaded, %d recordings of %d works",
                    self.cfg.index,
                    old.generation,
                    idx.generation,
                    idx.meta["n_tracks"],
                    idx.n_works,
                )
                self.index = idx
            return idx

    # -- model thread -------------------------------------------------------------------
    async def on_model_thread(self, fn, *args, **kw):
        """Run ``fn`` on the one model thread and await its result."""
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        try:
            return await loop.run_in_executor(self._model_thread, lambda: fn(*args, **kw))
        finally:
            self.service_s = 0.8 * self.service_s + 0.2 * (time.monotonic() - t0)

    def identify(
        self,
        feat: np.ndarray,
        name: str,
        *,
        top: int | None = None,
        segments: bool | None = None,
        alignment: bool = False,
        rerank: int | None = None,
        rerank_grow_after: int | None = None,
        rerank_versions: int | None = None,
        fine: dict | None = None,
    ) -> dict:
        """The answer for one decoded upload (model thread only).

        Parameters
        ----------
        feat : np.ndarray, shape (frames, n_bins)
        fine : dict of str to np.ndarray (T, 12), optional
            The upload's fine chroma views (:meth:`decode`), for the re-ranking.
        segments : bool or None
            None: segments for recordings longer than ``cfg.segments_after_s``.
        alignment : bool
            Add the chunk similarity matrix of the query and its best match.
        rerank, rerank_grow_after, rerank_versions : int or None
            This request's shortlist length (0 = no re-ranking), growth threshold and
            recordings aligned per shortlisted work (None: the service's, ``cfg.rerank``,
            ``cfg.rerank_grow_after`` and ``cfg.rerank_versions``).

        Returns
        -------
        dict
            ``identify --json``'s answer plus ``search``: ``{"rerank": shortlist length
            aligned (0 = none), "rerank_grow_after": ..., "rerank_versions": ...}`` and
            ``catalogue_generation``: the commit of the index searched (:meth:`current`).

        Raises
        ------
        InputError
            409 for an empty catalogue; 503 when the index cannot be searched (a damaged
            file, named).
        """
        idx = self.current()
        if idx.meta["n_tracks"] == 0:
            raise InputError(409, "the catalogue is empty: add recordings first")
        options = self.cfg.identify_options().but(
            top=top,
            segments=segments,
            rerank=rerank,
            rerank_grow_after=rerank_grow_after,
            rerank_versions=rerank_versions,
        )
        rec = embed_query(self.lm, Recording(name, feat, fine), idx.windowing, self.device)
        chroma = self.chroma(idx)
        try:
            out = identify(idx, self.lm, rec, options, device=self.device, chroma=chroma).to_dict()
        except (CatalogueError, DamagedFileError) as e:  # changed in place since it was loaded
            self._damage = (idx, " ".join(str(e).split()))
            log.error("%s", self._damage[1])
            raise InputError(503, f"the catalogue cannot be searched: {self._damage[1]}") from e
        out["search"] = search_settings(idx, self.lm, options, chroma, n_chunks=len(rec.emb))
        out["catalogue_generation"] = idx.generation  # the commit of meta.json searched
        out["catalogue_audio"] = {
            m["track_id"]: f"/tracks/{m['track_id']}/audio"
            for m in out["matches"]
            if self.audio_path(m["track_id"])
        }
        if alignment and out["matches"]:
            out["alignment"] = self.alignment(rec.emb, rec.starts, out["matches"][0]["track_id"])
        return out

    def alignment(self, emb: np.ndarray, starts: list[float], track_id: str) -> dict:
        """Chunk similarities of the query (rows, subsampled past 400) and a catalogue track."""
        t = self.track(track_id)
        ref = np.asarray(self.index.vectors()[t["row"] : t["row"] + len(t["starts"])])
        step = max(1, math.ceil(len(emb) / MAX_ALIGN_ROWS))
        sim = emb[::step] @ ref.T
        return {
            "track_id": track_id,
            "work": t["work"],
            "query_starts": list(starts[::step]),
            "ref_starts": t["starts"],
            "similarity": np.round(sim, 4).tolist(),
        }

    def add_track(
        self, feat: np.ndarray, src: Path, track_id: str, work: str, name: str, fine: dict | None = None
    ) -> dict:
        """Keep an uploaded recording and add it to the catalogue (model thread only)."""
        if not TRACK_ID.match(track_id):
            raise InputError(422, f"track_id {track_id!r}: use 1-128 letters, digits, '_', '.', '+', '-'")
        if not work.strip() or len(work) > 256:
            raise InputError(422, "work: give the work's name (1-256 characters)")
        idx = self.current()
        if self.track(track_id) is not None:
            raise InputError(409, f"track {track_id!r} is already in the catalogue")
        store = Path(self.cfg.index).resolve() / "uploads"  # found from any working directory
        store.mkdir(exist_ok=True)
        audio = store / f"{track_id}{src.suffix}"
        feat_path = store / f"{track_id}.cqt.npy"
        np.save(feat_path, feat)
        if fine:
            save_chroma(chroma_path(feat_path), fine)
        src.replace(audio)
        fps = self.lm.config.features.frames_per_second
        track = Track(track_id, str(audio), round(len(feat) / fps, 3), work.strip()).with_extra(
            feat=str(feat_path)
        )
        failed = idx.add(self.lm, [track], self.device, verbose=False)
        self._by_id = None
        if failed:
            raise InputError(422, f"{name}: not added ({failed[0][1]})")
        log.info("added %s (%s) from %s", track_id, work, name)
        return self.track_info(track_id)

    # -- catalogue ----------------------------------------------------------------------
    def _index_views(self) -> tuple[str, ...]:
        """The fine views of the served index's own chroma; none while its chroma files
        cannot be read (the service starts all the same, and its searches say what is
        damaged and how to repair it)."""
        try:
            return self.chroma().fine_views
        except (CatalogueError, DamagedFileError, OSError):
            return ()

    def chroma(self, index: CatalogueIndex | None = None):
        """The stored chroma of ``index`` (default: the one in memory) for re-ranking,
        re-read after each commit of the catalogue."""
        from ..index.chroma_store import IndexChroma

        index = index or self.index
        cached = getattr(self, "_chroma_of", None)
        if cached is None or cached[0] is not index or cached[1] != index.generation:
            chroma = IndexChroma.of(index, self.lm.summary_projection)
            self._chroma_of = (index, index.generation, chroma)
            return chroma
        return cached[2]

    def track(self, track_id: str) -> dict | None:
        idx = self.current()
        if (
            self._by_id is None
            or self._by_id_of is None
            or self._by_id_of[0] is not idx
            or self._by_id_of[1] != idx.generation
        ):
            self._by_id = {t["track_id"]: t for t in idx.tracks()}
            self._by_id_of = (idx, idx.generation)
        return self._by_id.get(track_id)

    def audio_path(self, track_id: str) -> Path | None:
        """The catalogue recording's audio file, when the index names one that exists here."""
        t = self.track(track_id)
        if not t or not t.get("audio"):
            return None
        p = Path(t["audio"])
        if not p.is_absolute():
            p = Path(self.cfg.index) / p
        return p if p.suffix.lower() in AUDIO_EXTS and p.is_file() else None

    def track_info(self, track_id: str) -> dict | None:
        t = self.track(track_id)
        if t is None:
            return None
        info = {
            "track_id": t["track_id"],
            "work": t["work"],
            "n_chunks": len(t["starts"]),
            "chunk_starts_s": t["starts"],
        }
        if self.audio_path(track_id):
            info["audio_url"] = f"/tracks/{track_id}/audio"
        return info

    def works(self) -> list[dict]:
        by_work: dict[str, list[str]] = {}
        for t in self.current().tracks():
            by_work.setdefault(t["work"], []).append(t["track_id"])
        return [{"work": w, "tracks": ids} for w, ids in sorted(by_work.items())]

    def health(self) -> dict:
        """The service's state; ``status`` is ``damaged`` (and ``problem`` says why) when
        the catalogue on disk cannot be searched."""
        try:
            idx = self.current()
        except InputError:
            idx = None
        damage = self._damage[1] if self._damage and self._damage[0] is idx else None
        if idx is None or damage:
            return {
                "status": "damaged",
                "problem": self._load_problem or damage,
                "model": self.lm.fingerprint,
                "device": str(self.device),
            }
        m = idx.meta
        return {
            "status": "ok",
            "tracks": m["n_tracks"],
            "works": idx.n_works,
            "generation": idx.generation,
            "vectors": m["n_vectors"],
            "calibrated": bool(m.get("calibration")),
            # whether re-ranked answers take their verdict from the alignment score
            "calibrated_alignment": bool(idx.alignment_calibration),
            "model": self.lm.fingerprint,
            "device": str(self.device),
            "search": search_settings(idx, self.lm, self.cfg.identify_options(), self.chroma(idx)),
        }


__all__ = ["Engine", "ServeConfig", "InputError", "CatalogueError"]
