"""Catalogue index: chunk embeddings of known recordings on disk, searched by new recordings.

An index folder holds::

    meta.json          format, model fingerprint, windowing, shards, calibration (commit point)
    shard_00000.npy    L2-normalised chunk embeddings (float32, [chunks, E])
    shard_00000.jsonl  one line per recording: track, work, audio, first row, chunk starts (s)
    ann.faiss          optional approximate index (faiss HNSW) over every shard

Writers never lose each other's work or the index they replace:

- ``add`` embeds first, then, under an exclusive lock (``fcntl`` on ``.INDEX.lock``
  beside the folder), re-reads ``meta.json``, writes its shard files and ``meta.json``
  last (atomically). Two processes adding at once both keep their recordings; a killed
  add leaves the index as it was.
- ``build`` (also with ``--overwrite``) builds into a hidden sibling folder and swaps it
  in only when it holds at least one recording: a failed or killed build leaves the old
  index (or none) in place, never an empty one.

A recording is scored against a catalogue track by its best chunk pair (cosine
similarity), and a work by its best track.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .audio import AUDIO_EXTS, AudioError, load_audio, peak_normalize
from .checkpoint import LoadedModel
from .config import Config
from .dataset import Track, read_dataset
from .embed import EmbeddingCache, Windowing, embed_tracks, l2_normalise
from .features import cqt
from .utils import atomic_save_npy, atomic_write_text, file_lock, remove_stale_tmp

log = logging.getLogger(__name__)

FORMAT = "coverhunter-index/1"
APPROX_MIN_VECTORS = 200_000  # "auto" switches to faiss HNSW above this many chunks


class CatalogueError(ValueError):
    """The index is missing, damaged, or does not match the model."""


@dataclass(frozen=True)
class Match:
    """One catalogue work proposed for a query."""

    work: str
    track_id: str
    score: float  # cosine similarity of the best chunk pair (1 - distance)
    query_offset_s: float  # start of the matching chunk in the query
    ref_offset_s: float  # start of the matching chunk in the catalogue track
    probability: float | None = None  # calibrated P(same work | score)
    p_value: float | None = None  # chance that the best wrong work scores this high


@dataclass
class QueryResult:
    query: str
    matches: list[Match]
    verdict: str = ""  # "match" or "no cover in the catalogue" (with calibration)
    error: str | None = None

    def to_dict(self) -> dict:
        return {"query": self.query, "verdict": self.verdict, "error": self.error,
                "matches": [asdict(m) for m in self.matches]}


# ---------------------------------------------------------------------------
# embedding recordings (from CQT files or audio)


def recording_features(path_or_track, cfg: Config):
    """CQT of a recording: the path of its ``feat`` file if it has a readable one (so the
    embedding cache can key it by content), else the CQT computed from the audio."""
    if isinstance(path_or_track, Track) and path_or_track.feat and Path(path_or_track.feat).is_file():
        try:
            feat = np.load(path_or_track.feat, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise ValueError(f"{path_or_track.feat}: damaged feature file ({e})") from e
        if feat.ndim != 2 or feat.shape[0] == 0:
            raise ValueError(f"{path_or_track.feat}: not a CQT ([frames, bins]), shape {feat.shape}")
        return path_or_track.feat
    path = path_or_track.audio if isinstance(path_or_track, Track) else path_or_track
    y = peak_normalize(load_audio(path, cfg.features.sample_rate))
    feat = cqt(y, cfg.features)
    if feat.shape[0] == 0:
        raise AudioError(f"{path}: too short to analyse ({len(y)} samples)")
    return feat


def embed_recordings(lm: LoadedModel, items: list, win: Windowing, device="cpu",
                     cache: EmbeddingCache | None = None, group: int = 64, verbose: bool = False,
                     on_features=None):
    """Normalised chunk embeddings of many recordings through :func:`embed.embed_tracks`.

    Parameters
    ----------
    items : list of path or Track
        Audio files, or tracks (their ``feat`` file when they have one).
    group : int
        Recordings whose features are held in memory at once.
    on_features : callable (item index, CQT array), optional
        Called with each recording's features (re-ranking keeps their chroma).

    Returns
    -------
    list of (np.ndarray (n_chunks, E) float32 or None, list of float or str)
        Per item: the embeddings and chunk starts in seconds, or None and the error.
    """
    from tqdm import tqdm

    fps = lm.config.features.frames_per_second
    out: list = [None] * len(items)
    bar = tqdm(total=len(items), desc="embed", unit="track", disable=not verbose or not items)
    for g in range(0, len(items), group):
        feats, where = [], []
        for i in range(g, min(len(items), g + group)):
            try:
                feats.append(recording_features(items[i], lm.config))
                where.append(i)
                if on_features is not None:
                    on_features(i, feats[-1])
            except (AudioError, OSError, ValueError) as e:
                out[i] = (None, str(e))
        embs = embed_tracks(lm.model, feats, win, device=device,
                            batch_size=lm.config.eval.batch_size, cache=cache)
        for i, (emb, starts) in zip(where, embs):
            out[i] = (l2_normalise(emb).astype(np.float32), [round(s / fps, 3) for s in starts])
        bar.update(min(len(items), g + group) - g)
    bar.close()
    return out


def embed_recording(lm: LoadedModel, path_or_track, win: Windowing, device="cpu",
                    cache: EmbeddingCache | None = None):
    """(L2-normalised chunk embeddings (n, E), chunk starts in seconds) of one recording."""
    emb, starts = embed_recordings(lm, [path_or_track], win, device, cache)[0]
    if emb is None:
        raise ValueError(starts)
    return emb, starts


def tracks_from_folder(folder: Path) -> list[Track]:
    """Every audio file under ``folder``; the work is the file's parent folder name when the
    files are in sub-folders, else the file name without extension."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_EXTS)
    if not files:
        raise CatalogueError(f"{folder}: no audio files ({', '.join(sorted(AUDIO_EXTS))})")
    out = []
    for p in files:
        rel = p.relative_to(folder)
        work = rel.parts[0] if len(rel.parts) > 1 else p.stem
        out.append(Track(str(rel), str(p), 0.0, work))
    return out


# ---------------------------------------------------------------------------
# calibration
#
# Assumptions, stated once (they are what the numbers mean):
# - Scores are track-pair scores: the best chunk pair of two recordings (cosine). A
#   catalogue work's score is the best over its tracks, so the best wrong work of a
#   query is the best of all the wrong *tracks*, not of the wrong works.
# - Wrong-track scores of one query are independent draws from the different-work
#   distribution measured on the calibration set (labelled recordings like the
#   catalogue's, not the catalogue itself).
# - P(same work | score) is for one pair drawn like the calibration pairs: its base rate
#   (prior) is the share of same-work pairs among them unless given explicitly.


def _fit_logistic(x: np.ndarray, y: np.ndarray, iters: int = 50) -> tuple[float, float]:
    """log f_same(x) / f_diff(x) ~ a + b x: logistic regression with both classes weighted
    equally, which estimates the log likelihood ratio (no base rate in it)."""
    w = np.where(y == 1, 0.5 / max(1, y.sum()), 0.5 / max(1, (1 - y).sum()))
    a, b = 0.0, 0.0
    X = np.stack([np.ones_like(x), x], 1)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(a + b * x)))
        g = X.T @ (w * (p - y))
        h = (X * (w * p * (1 - p))[:, None]).T @ X + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    return float(a), float(b)


def fit_calibration(scores: np.ndarray, same: np.ndarray, max_keep: int = 20000,
                    prior: float | None = None) -> dict:
    """Score distributions of same-work and different-work pairs, and P(same | score).

    Parameters
    ----------
    scores : np.ndarray, shape (n_pairs,)
        Track-pair scores (cosine of the best chunk pair) of a labelled set.
    same : np.ndarray of bool, shape (n_pairs,)
        Whether each pair is two versions of one work.
    prior : float, optional
        Base rate P(same work) of the pairs the probability is for; default: the share
        of same-work pairs in ``same``.

    Returns
    -------
    dict
        ``same`` / ``different`` (sorted scores, subsampled to ``max_keep``),
        ``logistic`` [a, b] with log LR = a + b * score, ``prior``, the pair counts.
    """
    scores, same = np.asarray(scores, float), np.asarray(same, bool)
    if same.sum() < 2 or (~same).sum() < 2:
        raise ValueError("calibration needs at least 2 same-work and 2 different-work pairs")
    if prior is None:
        prior = float(same.mean())
    if not 0 < prior < 1:
        raise ValueError(f"prior must be in (0, 1), got {prior}")
    rng = np.random.default_rng(0)

    def keep(v):
        v = np.sort(v)
        return v if len(v) <= max_keep else np.sort(rng.choice(v, max_keep, replace=False))

    a, b = _fit_logistic(scores, same.astype(float))
    return {"same": keep(scores[same]).tolist(), "different": keep(scores[~same]).tolist(),
            "logistic": [a, b], "prior": prior, "n_same": int(same.sum()),
            "n_different": int((~same).sum())}


def probability_same(cal: dict, score: float) -> float:
    """P(same work | score) = sigmoid(log LR(score) + logit(prior)) (Bayes' rule)."""
    prior = cal.get("prior")
    if prior is None:  # calibrations written before the prior was stored
        prior = cal["n_same"] / (cal["n_same"] + cal["n_different"])
    a, b = cal["logistic"]
    z = a + b * score + math.log(prior / (1 - prior))
    return 1 / (1 + math.exp(-z)) if z > -700 else 0.0


def p_impostor(cal: dict, score: float, n_tracks: int) -> float:
    """Chance that the best of ``n_tracks`` wrong tracks scores >= ``score``.

    With ``t`` the different-work tail P(S >= score) (empirical, with a half count so it
    is never 0), independence gives 1 - (1 - t) ** n_tracks. A query that performs no
    catalogue work has every catalogue track as a wrong track. The empirical tail
    resolves t down to about 1 / len(cal["different"]): p-values smaller than about
    n_tracks / len(cal["different"]) are not resolved (they come out larger, i.e.
    conservative), so calibrate on enough different-work pairs for the catalogue's size.
    """
    diff = np.asarray(cal["different"])
    tail = (len(diff) - np.searchsorted(diff, score, side="left") + 0.5) / (len(diff) + 1)
    return float(1 - (1 - min(1.0, tail)) ** max(1, n_tracks))


# ---------------------------------------------------------------------------
# the index

_META_KEYS = ("model_fingerprint", "embed_dim", "windowing", "backend", "shards", "n_tracks",
              "n_vectors")
_BUILD_TAG, _OLD_TAG = ".build-", ".old-"


def _lock_path(root: Path) -> Path:
    """The lock file of an index: beside the folder, so it survives a swap of the folder."""
    return root.parent / f".{root.name}.lock"


def _recover(root: Path) -> None:
    """Undo what a killed build left beside ``root`` (call under the index lock): remove
    half-built folders, and put back an old index moved aside just before a swap."""
    for p in root.parent.glob(f".{root.name}{_BUILD_TAG}*"):
        shutil.rmtree(p, ignore_errors=True)
        log.info("removed %s, left by an interrupted build", p)
    for p in sorted(root.parent.glob(f".{root.name}{_OLD_TAG}*")):
        if not root.exists():
            os.replace(p, root)
            log.warning("%s: restored the index that an interrupted build was replacing", root)
        else:
            shutil.rmtree(p, ignore_errors=True)


class CatalogueIndex:
    """Chunk embeddings of a catalogue, with exact or approximate search."""

    def __init__(self, root: Path, meta: dict):
        self.root, self.meta = Path(root), meta
        self._vectors: np.ndarray | None = None
        self._tracks: list[dict] | None = None
        self._ann = None
        self._lock_root = self.root  # the folder whose lock guards writes

    # -- creation and loading -----------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, lm: LoadedModel, win: Windowing, backend: str = "auto",
               overwrite: bool = False) -> "CatalogueIndex":
        """An empty index in a new folder (``build_index`` uses it on a hidden sibling)."""
        root = Path(root)
        if (root / "meta.json").exists() and not overwrite:
            raise CatalogueError(f"{root}: an index exists already (use 'index add', or --overwrite)")
        if backend not in ("auto", "exact", "hnsw"):
            raise ValueError(f"backend must be auto, exact or hnsw, got {backend!r}")
        root.mkdir(parents=True, exist_ok=True)
        for old in list(root.glob("shard_*")) + list(root.glob("ann.faiss")):
            old.unlink()
        meta = {"format": FORMAT, "model_fingerprint": lm.fingerprint, "model": str(lm.source),
                "embed_dim": lm.config.model.embed_dim, "windowing": asdict(win),
                "frames_per_second": lm.config.features.frames_per_second, "backend": backend,
                "shards": [], "n_tracks": 0, "n_vectors": 0, "calibration": None,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        idx = cls(root, meta)
        idx._commit()
        return idx

    @staticmethod
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
        missing = [k for k in _META_KEYS if k not in meta]
        if missing:
            raise CatalogueError(f"{path}: damaged (no {', '.join(missing)})")
        if not isinstance(meta["shards"], list):
            raise CatalogueError(f"{path}: damaged ('shards' is not a list)")
        return meta

    @classmethod
    def load(cls, root: str | Path) -> "CatalogueIndex":
        """Open an index and check every shard (each problem names its file)."""
        root = Path(root)
        idx = cls(root, cls.read_meta(root))
        idx._check_shards()
        return idx

    def _check_shards(self) -> None:
        tracks, parts = [], []
        for s in self.meta["shards"]:
            npy, jsonl = self.root / f"{s}.npy", self.root / f"{s}.jsonl"
            for f in (npy, jsonl):
                if not f.is_file():
                    raise CatalogueError(f"{f}: missing (shard {s} of {self.root / 'meta.json'})")
            try:
                arr = np.load(npy, mmap_mode="r")
            except (OSError, ValueError, EOFError) as e:
                raise CatalogueError(f"{npy}: damaged ({e})") from e
            if arr.ndim != 2 or arr.shape[1] != self.meta["embed_dim"]:
                raise CatalogueError(f"{npy}: damaged (shape {arr.shape}, expected "
                                     f"[n, {self.meta['embed_dim']}])")
            rows = self._read_jsonl(jsonl)
            first = sum(len(p) for p in parts)
            end = first + len(arr)
            for r in rows:
                if not first <= r["row"] < end or r["row"] + len(r["starts"]) > end:
                    raise CatalogueError(f"{jsonl}: damaged (track {r['track_id']!r} points to rows "
                                         f"outside {npy.name})")
            tracks += rows
            parts.append(arr)
        n = sum(len(p) for p in parts)
        if n != self.meta["n_vectors"] or len(tracks) != self.meta["n_tracks"]:
            raise CatalogueError(f"{self.root / 'meta.json'}: damaged (says {self.meta['n_tracks']} "
                                 f"recordings / {self.meta['n_vectors']} vectors, shards hold "
                                 f"{len(tracks)} / {n})")
        self._tracks = tracks
        self._vectors = np.concatenate(parts) if parts else np.zeros(
            (0, self.meta["embed_dim"]), np.float32)

    @staticmethod
    def _read_jsonl(path: Path) -> list[dict]:
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                if not all(k in r for k in ("track_id", "work", "row", "starts")):
                    raise ValueError("missing keys")
            except ValueError as e:
                raise CatalogueError(f"{path} line {n}: damaged ({e})") from e
            rows.append(r)
        return rows

    def check_model(self, lm: LoadedModel) -> None:
        if lm.fingerprint != self.meta["model_fingerprint"]:
            raise CatalogueError(
                f"{self.root}: built with model {self.meta['model_fingerprint']} "
                f"({self.meta.get('model')}), not {lm.fingerprint} ({lm.source}); rebuild the "
                "index with this model or use the one it was built with")

    def check_not_empty(self) -> None:
        if self.meta["n_vectors"] == 0:
            raise CatalogueError(f"{self.root}: the index is empty (no recordings); add some with "
                                 "'coverhunter index add' or build it again")

    @property
    def windowing(self) -> Windowing:
        return Windowing(**self.meta["windowing"])

    def _commit(self) -> None:
        atomic_write_text(self.root / "meta.json", json.dumps(self.meta, indent=1))

    def _locked(self):
        """The index's write lock, or nothing while ``build_index`` already holds it."""
        if self._lock_root is None:
            from contextlib import nullcontext

            return nullcontext()
        return file_lock(_lock_path(self._lock_root))

    def _reload(self) -> None:
        """Re-read ``meta.json`` (under the lock: another process may have added)."""
        self.meta = self.read_meta(self.root)
        self._vectors, self._tracks, self._ann = None, None, None

    # -- adding -------------------------------------------------------------------------
    def add(self, lm: LoadedModel, tracks: list[Track], device="cpu", verbose: bool = True,
            cache: EmbeddingCache | None = None):
        """Embed and append recordings; returns the (track_id, error) pairs that failed.

        Embedding runs without the lock; the read-modify-write of the shard list runs
        under it, against the index as it is on disk then (other writers included).
        """
        self.check_model(lm)
        known = {t["track_id"] for t in self.tracks()}
        failed, todo, seen = [], [], set()
        for t in tracks:
            if t.track_id in known or t.track_id in seen:
                failed.append((t.track_id, "already in the index"))
            else:
                todo.append(t)
                seen.add(t.track_id)
        from .rerank import compact_chroma, write_shard_chroma

        chroma = {}  # per-recording uint8 chroma for re-ranking, stored beside the shard
        embs = embed_recordings(lm, todo, self.windowing, device, cache, verbose=verbose,
                                on_features=lambda i, f: chroma.__setitem__(todo[i].track_id,
                                                                            compact_chroma(f)))
        new = []
        for t, (emb, starts) in zip(todo, embs):
            if emb is None:
                failed.append((t.track_id, starts))
            else:
                new.append((t, emb, starts))
        if not new:
            return failed
        with self._locked():
            remove_stale_tmp(self.root)
            self._reload()
            known = {t["track_id"] for t in self.tracks()}
            rows, vecs = [], []
            n0 = self.meta["n_vectors"]
            for t, emb, starts in new:
                if t.track_id in known:  # added by another writer meanwhile
                    failed.append((t.track_id, "already in the index"))
                    continue
                rows.append({"track_id": t.track_id, "work": t.work, "audio": t.audio,
                             "row": n0 + sum(len(v) for v in vecs), "starts": starts})
                vecs.append(emb)
            if not rows:
                return failed
            name = f"shard_{len(self.meta['shards']):05d}"
            arr = np.concatenate(vecs)
            atomic_save_npy(self.root / f"{name}.npy", arr)
            write_shard_chroma(self.root, name, [chroma[r["track_id"]] for r in rows])
            atomic_write_text(self.root / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
            self.meta["shards"].append(name)
            self.meta["n_tracks"] += len(rows)
            self.meta["n_vectors"] += len(arr)
            self._vectors, self._tracks = None, None
            if self._use_ann():
                self._build_ann()
            self._commit()
        return failed

    # -- reading ------------------------------------------------------------------------
    def tracks(self) -> list[dict]:
        if self._tracks is None:
            self._check_shards()
        return self._tracks

    def vectors(self) -> np.ndarray:
        if self._vectors is None:
            self._check_shards()
        return self._vectors

    @property
    def n_works(self) -> int:
        return len({t["work"] for t in self.tracks()})

    def _use_ann(self) -> bool:
        b = self.meta["backend"]
        return b == "hnsw" or (b == "auto" and self.meta["n_vectors"] >= APPROX_MIN_VECTORS)

    def _build_ann(self) -> None:
        try:
            import faiss
        except ImportError as e:
            raise CatalogueError("approximate search needs faiss: pip install faiss-cpu") from e
        ann = faiss.IndexHNSWFlat(self.meta["embed_dim"], 32, faiss.METRIC_INNER_PRODUCT)
        ann.hnsw.efConstruction = 80
        ann.add(np.ascontiguousarray(self.vectors(), dtype=np.float32))
        faiss.write_index(ann, str(self.root / "ann.faiss.tmp"))
        (self.root / "ann.faiss.tmp").replace(self.root / "ann.faiss")
        self._ann = ann

    def _ann_index(self):
        if self._ann is None:
            import faiss

            path = self.root / "ann.faiss"
            if not path.is_file():
                self._build_ann()
            else:
                self._ann = faiss.read_index(str(path))
                if self._ann.ntotal != self.meta["n_vectors"]:
                    self._build_ann()
            self._ann.hnsw.efSearch = 128
        return self._ann

    # -- searching ----------------------------------------------------------------------
    def search_vectors(self, q: np.ndarray, k: int = 10, approximate: bool | None = None):
        """Best chunk rows for query chunks: (similarities (m, k), rows (m, k))."""
        n = self.meta["n_vectors"]
        k = min(k, n)
        use_ann = self._use_ann() if approximate is None else approximate
        q = np.ascontiguousarray(q, dtype=np.float32)
        if use_ann:
            return self._ann_index().search(q, k)
        sims = torch.from_numpy(q) @ torch.from_numpy(np.asarray(self.vectors())).T
        top = torch.topk(sims, k, dim=1)
        return top.values.numpy(), top.indices.numpy()

    def search(self, q: np.ndarray, q_starts: list[float], top: int = 10,
               approximate: bool | None = None) -> list[Match]:
        """Best works for one query recording (its normalised chunk embeddings)."""
        if self.meta["n_vectors"] == 0:
            return []
        tracks = self.tracks()
        row_starts = np.array([t["row"] for t in tracks])
        # enough chunk neighbours to reach `top` distinct works in practice
        k = min(self.meta["n_vectors"], max(50, 8 * top * max(1, len(q_starts))))
        sims, rows = self.search_vectors(q, k, approximate)
        best: dict[str, Match] = {}
        owner = np.searchsorted(row_starts, rows, side="right") - 1
        order = np.argsort(-sims, axis=None)
        for flat in order:
            qi, j = divmod(int(flat), sims.shape[1])
            if rows[qi, j] < 0:
                continue
            t = tracks[owner[qi, j]]
            if t["work"] in best:
                continue
            ref_chunk = int(rows[qi, j] - t["row"])
            best[t["work"]] = Match(t["work"], t["track_id"], float(sims[qi, j]), q_starts[qi],
                                    t["starts"][ref_chunk])
            if len(best) >= top:
                break
        matches = sorted(best.values(), key=lambda m: -m.score)
        cal = self.meta.get("calibration")
        if cal:
            n = self.meta["n_tracks"]  # a work scores its best track: n wrong tracks compete
            matches = [Match(**{**asdict(m), "probability": probability_same(cal, m.score),
                                "p_value": p_impostor(cal, m.score, n)}) for m in matches]
        return matches

    # -- calibration ----------------------------------------------------------------------
    def calibrate(self, lm: LoadedModel, tracks: list[Track], device="cpu",
                  cache: EmbeddingCache | None = None, prior: float | None = None) -> dict:
        """Fit same-work / different-work score distributions on a labelled set (not the
        catalogue itself, to avoid optimism) and store them in the index (see the
        assumptions above :func:`fit_calibration`)."""
        from .embed import distance_matrix

        self.check_model(lm)
        embs = embed_recordings(lm, tracks, self.windowing, device, cache)
        bad = [(t.track_id, err) for t, (e, err) in zip(tracks, embs) if e is None]
        if bad:
            raise CatalogueError(f"calibration set: {len(bad)} recording(s) failed, e.g. "
                                 f"{bad[0][0]}: {bad[0][1]}")
        vecs = [e for e, _ in embs]
        dist = distance_matrix(vecs, vecs, "min")
        labels = np.array([t.work for t in tracks])
        iu = np.triu_indices(len(tracks), 1)
        scores = 1.0 - dist[iu]
        same = labels[iu[0]] == labels[iu[1]]
        cal = fit_calibration(scores, same, prior=prior)
        cal["source"] = f"{len(tracks)} recordings, {len(set(labels))} works"
        with self._locked():
            self._reload()
            self.meta["calibration"] = cal
            self._commit()
        return cal


def identify(index: CatalogueIndex, lm: LoadedModel, audio: list, *, top: int = 10,
             false_alarm: float = 0.01, device="cpu", approximate: bool | None = None,
             cache: EmbeddingCache | None = None, rerank: int | None = None) -> list[QueryResult]:
    """Identify the works that each recording performs (paths, or Tracks with features).

    With ``rerank`` > 0 (default :data:`coverhunter.rerank.DEFAULT_K`) and an index that
    stores chroma, the best ``rerank`` works are re-ordered by chroma alignment
    (:func:`coverhunter.rerank.rerank_matches`); 0 turns it off.

    Raises
    ------
    CatalogueError
        The index is empty or was built with another model.
    """
    index.check_model(lm)
    index.check_not_empty()
    from . import rerank as rr

    k = rr.DEFAULT_K if rerank is None else rerank
    stored = rr.IndexChroma.of(index) if k > 0 else None
    q_chroma = {} if stored is not None and stored.available() else None
    out = []
    embs = embed_recordings(lm, list(audio), index.windowing, device, cache,
                            on_features=None if q_chroma is None else
                            lambda i, f: q_chroma.__setitem__(i, rr.alignment_features(f)))
    for i, (a, (emb, starts)) in enumerate(zip(audio, embs)):
        name = a.track_id if isinstance(a, Track) else str(a)
        if emb is None:
            out.append(QueryResult(name, [], "error", starts))
            continue
        if q_chroma is None:
            matches = index.search(emb, starts, top, approximate)
        else:
            matches = rr.rerank_matches(index.search(emb, starts, max(top, k), approximate),
                                        q_chroma[i], stored.get, rr.RerankConfig(k=k))[:top]
        verdict = ""
        if matches and matches[0].p_value is not None:
            verdict = "match" if matches[0].p_value <= false_alarm else "no cover in the catalogue"
        out.append(QueryResult(name, matches, verdict))
    return out


def format_result(r: QueryResult) -> str:
    """A query's answer as a small text table."""
    lines = [f"{r.query}" + (f"  [{r.verdict}]" if r.verdict else "")]
    if r.error:
        return lines[0] + f"\n  error: {r.error}"
    calibrated = bool(r.matches) and r.matches[0].probability is not None
    head = f"  {'#':>2}  {'score':>6}  " + ("P(same)  p-value  " if calibrated else "") + \
        f"{'query@s':>8}  {'ref@s':>7}  work (track)"
    lines.append(head)
    for i, m in enumerate(r.matches, 1):
        cal = f"{m.probability:7.3f}  {m.p_value:7.2g}  " if calibrated else ""
        lines.append(f"  {i:>2}  {m.score:6.3f}  {cal}{m.query_offset_s:8.1f}  {m.ref_offset_s:7.1f}  "
                     f"{m.work} ({m.track_id})")
    return "\n".join(lines)


def _replaceable(root: Path, overwrite: bool) -> None:
    """Refuse to replace what must not be replaced (call under the lock)."""
    if not root.exists():
        return
    if not root.is_dir():
        raise CatalogueError(f"{root}: exists and is not a folder")
    if (root / "meta.json").exists():
        if overwrite:
            return
        try:
            empty = CatalogueIndex.read_meta(root)["n_tracks"] == 0
        except CatalogueError:
            empty = False
        if not empty:
            raise CatalogueError(f"{root}: an index exists already (use 'index add', or --overwrite)")
        return  # an empty index (e.g. of an interrupted older build) is rebuilt
    if any(root.iterdir()):
        raise CatalogueError(f"{root}: a non-empty folder that is not an index; not replacing it")


def _swap_in(tmp: Path, root: Path) -> None:
    """Put the built folder at ``root``; an old index is moved aside first and deleted
    after, so a kill in between leaves it recoverable (:func:`_recover`)."""
    old = None
    if root.exists():
        old = root.parent / f".{root.name}{_OLD_TAG}{os.getpid()}"
        os.replace(root, old)
    os.replace(tmp, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_index(index_dir, lm: LoadedModel, *, dataset=None, folder=None, backend="auto",
                overwrite=False, device="cpu", calibrate_with=None,
                cache: EmbeddingCache | None = None) -> tuple[CatalogueIndex, list]:
    """Create an index from a dataset list or a folder of audio files.

    The index is built in a hidden sibling folder and swapped in only when at least one
    recording was added (and calibration, if asked, succeeded): a failed or killed build
    leaves the previous index, or no index, never an empty or half-built one.
    """
    from .embed import Windowing as W

    if (dataset is None) == (folder is None):
        raise ValueError("give exactly one of a dataset list or an audio folder")
    root = Path(index_dir)
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(_lock_path(root)):
        _recover(root)
        _replaceable(root, overwrite)
        tracks = read_dataset(dataset) if dataset is not None else tracks_from_folder(Path(folder))
        cfg = lm.config
        win = W.from_config(cfg.eval, cfg.features.frames_per_second, cfg.data.mean_size)
        tmp = root.parent / f".{root.name}{_BUILD_TAG}{os.getpid()}"
        try:
            idx = CatalogueIndex.create(tmp, lm, win, backend)
            idx._lock_root = None  # private folder; the lock is held here
            failed = idx.add(lm, tracks, device, cache=cache)
            if idx.meta["n_tracks"] == 0:
                first = f" (e.g. {failed[0][0]}: {failed[0][1]})" if failed else ""
                keep = "the existing index is unchanged" if root.exists() else "no index written"
                raise CatalogueError(f"{root}: no recording could be added{first}; {keep}")
            if calibrate_with is not None:
                idx.calibrate(lm, read_dataset(calibrate_with), device, cache)
            _swap_in(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    idx = CatalogueIndex.load(root)
    return idx, failed


__all__ = ["CatalogueIndex", "Match", "QueryResult", "identify", "build_index", "CatalogueError",
           "format_result", "fit_calibration", "probability_same", "p_impostor"]
