"""Chroma packs: a corpus's training features in one small file, to train elsewhere.

A model with the chroma front end (``model.front_end: chroma``) folds each pooled CQT
frame to 12 pitch classes before any weight sees it (:func:`coverhunter.model.fold_chroma`),
and that fold gives the same values when it is applied a second time. Its training data can
therefore travel as pooled, folded frames: 12 bytes per pooled frame instead of 96 float32
values per raw frame, about 100 times smaller. A 1,100-work corpus (2.9 GB of CQT files)
becomes about 30 MB, small enough to send to a rented GPU machine.

``pack_features`` reads the list files of a data folder and writes one ``.npz``:
the frames of every recording, quantised to uint8 over [``CHROMA_FLOOR_DB``, 0] dB
(steps of 0.24 dB), their offsets, the list lines, and optionally the folder's
``alignment.jsonl``. ``unpack_features`` writes a data folder back: one 12-bin float32
``.npy`` per recording at the raw frame rate (each pooled frame repeated ``mean_size``
times, so the trainer's own pooling gives the packed frames back) and the list files with
their ``feat`` paths. Training on it needs no other change; the model trained there takes
ordinary 96-bin CQT features at inference, because it folds them itself.
"""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .dataset import read_dataset
from .features import pool_frames
from .model import CHROMA_BINS, CHROMA_FLOOR_DB, fold_chroma
from .utils import atomic_save_npy, atomic_write, atomic_write_bytes, atomic_write_text, resolve_path

log = logging.getLogger(__name__)

PACK_FORMAT = 1
LEVELS = 255


def quantise(chroma: np.ndarray) -> np.ndarray:
    """dB chroma in [CHROMA_FLOOR_DB, 0] -> uint8 codes, same shape (0 is 0 dB)."""
    q = np.rint(np.clip(chroma, CHROMA_FLOOR_DB, 0.0) / CHROMA_FLOOR_DB * LEVELS)
    return q.astype(np.uint8)


def dequantise(codes: np.ndarray) -> np.ndarray:
    """uint8 codes -> float32 dB chroma, same shape."""
    return codes.astype(np.float32) * np.float32(CHROMA_FLOOR_DB / LEVELS)


def pooled_chroma(cqt: np.ndarray, mean_size: int) -> np.ndarray:
    """What the chroma front end computes first: (T, F) dB CQT -> (T // mean_size, 12) dB."""
    pooled = pool_frames(np.asarray(cqt, dtype=np.float32), mean_size)
    return fold_chroma(torch.from_numpy(pooled).unsqueeze(0))[0].numpy()


def pack_features(
    data_dir: str | Path,
    out_path: str | Path,
    *,
    lists: tuple[str, ...] = ("train.txt", "val.txt"),
    mean_size: int = 3,
    alignment: bool = True,
) -> dict:
    """Pack the features of ``data_dir``'s list files into one ``.npz``.

    Parameters
    ----------
    data_dir : folder with the list files and the ``feat`` files they name
    out_path : the ``.npz`` to write (atomically)
    lists : list files of ``data_dir`` to pack; a missing one is an error
    mean_size : raw frames per pooled frame, the training config's ``data.mean_size``
    alignment : also pack ``data_dir/alignment.jsonl`` when it exists

    Returns
    -------
    dict with ``recordings``, ``frames`` (pooled), ``bytes`` (of the file), ``failed``
    (list of "track: problem" lines; those recordings are left out of the pack).
    """
    data_dir, out_path = Path(data_dir), Path(out_path)
    if mean_size < 1:
        raise ValueError(f"mean_size must be >= 1, got {mean_size}")
    if out_path.suffix != ".npz":
        raise ValueError(f"{out_path}: a pack is written as a .npz file")
    lines: dict[str, list[dict]] = {}
    blocks, failed, n = [], [], 0
    for name in lists:
        path = data_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: list file not found")
        tracks = read_dataset(path)
        kept = []
        for t in tqdm(tracks, desc=f"pack {name}", unit="rec", mininterval=5.0):
            if not t.feat:
                failed.append(f"{t.track_id}: no 'feat' in {path}")
                continue
            feat_path = resolve_path(t.feat, path.parent)
            try:
                cqt = np.load(feat_path, mmap_mode="r")
                if cqt.ndim != 2 or cqt.shape[1] < CHROMA_BINS:
                    raise ValueError(f"shape {cqt.shape} is not (frames, >= {CHROMA_BINS} bins)")
                codes = quantise(pooled_chroma(cqt, mean_size))
            except (OSError, ValueError) as e:
                failed.append(f"{t.track_id}: {feat_path}: {e}")
                continue
            if len(codes) == 0:
                failed.append(f"{t.track_id}: {feat_path}: shorter than {mean_size} frames")
                continue
            blocks.append(codes)
            line = t.to_json()
            line["pack_index"] = n
            kept.append(line)
            n += 1
        lines[name] = kept
    for msg in failed:
        log.warning("left out of the pack: %s", msg)
    lengths = np.array([len(b) for b in blocks], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    frames = np.concatenate(blocks) if blocks else np.zeros((0, CHROMA_BINS), np.uint8)
    meta = {
        "format": PACK_FORMAT,
        "kind": "chroma",
        "mean_size": mean_size,
        "floor_db": CHROMA_FLOOR_DB,
        "levels": LEVELS,
        "lists": lines,
    }
    arrays = {
        "frames": frames,
        "offsets": offsets,
        "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
    }
    align_file = data_dir / "alignment.jsonl"
    if alignment and align_file.is_file():
        arrays["alignment_gz"] = np.frombuffer(gzip.compress(align_file.read_bytes(), 6), dtype=np.uint8)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: numpy would append .npz to a path
            np.savez_compressed(f, **arrays)

    atomic_write(out_path, write)
    size = out_path.stat().st_size
    log.info(
        "packed %d recordings (%d pooled frames) into %s (%.1f MB)", n, len(frames), out_path, size / 1e6
    )
    return {"recordings": n, "frames": int(len(frames)), "bytes": size, "failed": failed}


def read_pack(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict, bytes | None]:
    """(frames (N, 12) uint8, offsets (R + 1,), meta dict, alignment.jsonl bytes or None)."""
    path = Path(path)
    try:
        with np.load(path) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            frames, offsets = z["frames"], z["offsets"]
            align = gzip.decompress(z["alignment_gz"].tobytes()) if "alignment_gz" in z else None
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a coverhunter chroma pack ({e})") from e
    if meta.get("format") != PACK_FORMAT or meta.get("kind") != "chroma":
        raise ValueError(
            f"{path}: pack format {meta.get('format')!r}/{meta.get('kind')!r} "
            f"is not chroma format {PACK_FORMAT}"
        )
    return frames, offsets, meta, align


def unpack_features(pack_path: str | Path, out_dir: str | Path) -> dict:
    """Write a data folder from a pack: ``cqt_feat/<track>.npy`` and the packed list files.

    Each file holds (frames * mean_size, 12) float32 dB chroma, every pooled frame repeated
    ``mean_size`` times, so a trainer configured with the pack's ``mean_size`` pools them
    back to the packed values. Files already there are rewritten (the pack is the truth).

    Returns
    -------
    dict with ``recordings`` and ``lists`` (the list files written).
    """
    frames, offsets, meta, align = read_pack(pack_path)
    out_dir = Path(out_dir)
    feat_dir = out_dir / "cqt_feat"
    feat_dir.mkdir(parents=True, exist_ok=True)
    m = int(meta["mean_size"])
    written = 0
    for name, lines in meta["lists"].items():
        out_lines = []
        for line in tqdm(lines, desc=f"unpack {name}", unit="rec", mininterval=5.0):
            i = int(line.pop("pack_index"))
            codes = frames[offsets[i] : offsets[i + 1]]
            feat = np.repeat(dequantise(codes), m, axis=0)
            rel = f"cqt_feat/{line['utt']}.npy"
            atomic_save_npy(out_dir / rel, feat)
            line.update(feat=rel, feat_len=len(feat))
            out_lines.append(json.dumps(line))
            written += 1
        atomic_write_text(out_dir / name, "".join(s + "\n" for s in out_lines))
    if align is not None:
        atomic_write_bytes(out_dir / "alignment.jsonl", align)
    log.info("unpacked %d recordings into %s", written, out_dir)
    return {"recordings": written, "lists": list(meta["lists"])}
