"""Embedding recordings for the index: the model's input (the CQT, or the fine chroma views
a "fine_chroma" model reads; from a feature file or audio) -> chunk vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..audio import AUDIO_EXTS, AudioError, load_audio, peak_normalize
from ..checkpoint import LoadedModel
from ..chroma import audio_chroma, chroma_path, load_chroma
from ..config import Config
from ..dataset import Track
from ..embed import EmbeddingCache, Windowing, embed_tracks, l2_normalise
from ..features import cqt
from ..inputs import input_of_analysis, input_views, model_input
from .results import CatalogueError


def recording_features(path_or_track, cfg: Config, views=()) -> tuple:
    """CQT and fine chroma views of a recording, from one decoding of its audio.

    Returns
    -------
    cqt : str or np.ndarray, shape (frames, n_bins)
        The path of the track's ``feat`` file if it has a readable one (so the embedding
        cache can key it by content), else the CQT computed from the audio.
    chroma : dict of str to np.ndarray (T, 12)
        The ``views`` (:data:`coverhunter.chroma.VIEWS`): stored beside the ``feat`` file
        by ``extract``, else computed from the audio; empty when no views are asked for.
    """
    if isinstance(path_or_track, Track) and path_or_track.feat and Path(path_or_track.feat).is_file():
        try:
            feat = np.load(path_or_track.feat, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise ValueError(f"{path_or_track.feat}: damaged feature file ({e})") from e
        if feat.ndim != 2 or feat.shape[0] == 0:
            raise ValueError(f"{path_or_track.feat}: not a CQT ([frames, bins]), shape {feat.shape}")
        chroma = load_chroma(chroma_path(path_or_track.feat), views) if views else {}
        if chroma is None:  # extracted before the chroma was stored: from the audio
            y = load_audio(path_or_track.audio, cfg.features.sample_rate)
            chroma = audio_chroma(y, views, cfg.features.sample_rate)
        return path_or_track.feat, chroma
    path = path_or_track.audio if isinstance(path_or_track, Track) else path_or_track
    y = peak_normalize(load_audio(path, cfg.features.sample_rate))
    feat = cqt(y, cfg.features)
    if feat.shape[0] == 0:
        raise AudioError(f"{path}: too short to analyse ({len(y)} samples)")
    return feat, audio_chroma(y, views, cfg.features.sample_rate) if views else {}


def embed_recordings(
    lm: LoadedModel,
    items: list,
    win: Windowing,
    device="cpu",
    cache: EmbeddingCache | None = None,
    group: int = 64,
    verbose: bool = False,
    on_features=None,
    views=(),
):
    """Normalised chunk embeddings of many recordings through :func:`embed.embed_tracks`.

    Parameters
    ----------
    items : list of path or Track
        Audio files, or tracks (their ``feat`` file when they have one).
    group : int
        Recordings whose features are held in memory at once.
    on_features : callable (item index, CQT array or path, chroma dict), optional
        Called with each recording's features (re-ranking keeps their chroma).
    views : sequence of str
        Fine chroma views (:data:`coverhunter.chroma.VIEWS`) handed to ``on_features``
        (beside the views a "fine_chroma" model reads, which are computed in any case).

    Returns
    -------
    list of (np.ndarray (n_chunks, E) float32 or None, list of float or str)
        Per item: the embeddings and chunk starts in seconds, or None and the error.
    """
    from tqdm import tqdm

    inp = model_input(lm.config)
    fps = inp.frames_per_second
    wanted = input_views(lm.config, views)  # the callers' views and the model's
    out: list = [None] * len(items)
    bar = tqdm(total=len(items), desc="embed", unit="track", disable=not verbose or not items)
    for g in range(0, len(items), group):
        feats, where = [], []
        for i in range(g, min(len(items), g + group)):
            try:
                feat, chroma = recording_features(items[i], lm.config, wanted)
                feats.append(input_of_analysis(inp, feat, chroma))
                where.append(i)
                if on_features is not None:
                    on_features(i, feat, chroma)
            except (AudioError, OSError, ValueError) as e:
                out[i] = (None, str(e))
        embs = embed_tracks(
            lm.model,
            feats,
            win,
            device=device,
            batch_size=lm.config.eval.batch_size,
            cache=cache,
            load=inp.loader(),
        )
        for i, (emb, starts) in zip(where, embs):
            out[i] = (l2_normalise(emb).astype(np.float32), [round(s / fps, 3) for s in starts])
        bar.update(min(len(items), g + group) - g)
    bar.close()
    return out


def embed_recording(
    lm: LoadedModel, path_or_track, win: Windowing, device="cpu", cache: EmbeddingCache | None = None
):
    """(L2-normalised chunk embeddings (n, E), chunk starts in seconds) of one recording."""
    emb, starts = embed_recordings(lm, [path_or_track], win, device, cache)[0]
    if emb is None:
        raise ValueError(starts)
    return emb, starts


def tracks_from_folder(folder: Path) -> list[Track]:
    """Every audio file under ``folder``; the work is the file's parent folder name when the
    files are in sub-folders, else the file name without extension. Their paths are
    absolute, so the index finds them from any working directory."""
    folder = Path(folder).resolve()
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTS)
    if not files:
        raise CatalogueError(f"{folder}: no audio files ({', '.join(sorted(AUDIO_EXTS))})")
    out = []
    for p in files:
        rel = p.relative_to(folder)
        work = rel.parts[0] if len(rel.parts) > 1 else p.stem
        out.append(Track(str(rel), str(p), 0.0, work))
    return out
