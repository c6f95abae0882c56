"""The stored chroma format of a catalogue index: one ``shard_NNNNN.chroma.npz`` per shard.

Beside each shard's vectors (``shard_NNNNN.npy``) and track list (``shard_NNNNN.jsonl``),
the index keeps its recordings' chroma for ``identify``'s re-ranking, in
``shard_NNNNN.chroma.npz`` (:data:`CHROMA_SUFFIX`), written atomically by
:func:`write_shard_chroma`:

- ``data``: every recording's uint8 chroma (:func:`compact_chroma`: 30 bytes per second
  of audio and per view, made with the chroma spec in ``chroma_spec``,
  :data:`coverhunter.chroma.CHROMA_SPEC`; files written before it existed hold
  ``chroma_params``, the lowest octave and power of the CQT's chroma), concatenated in the
  ``.jsonl``'s order, and ``offsets`` (n + 1,), where each one starts;
- ``summary``: their 2D Fourier summaries (n, D) float16, made with the patch lengths in
  ``summary_patches`` (:data:`coverhunter.classical.SUMMARY_PATCHES`).

:func:`as_stored` gives a query's chroma as it reads back from this storage (what a
calibration aligns). :class:`coverhunter.index.chroma_store.IndexChroma` reads the files;
``index.folder``, ``index.writes`` and ``index.repair`` write them.

Imports ``alignment_inputs``, ``chroma``, ``classical``, ``qmax``, ``utils``; nothing of ``index``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..alignment_inputs import alignment_features, summary_chroma
from ..chroma import CHROMA_SPEC
from ..classical import (
    SUMMARY_PATCHES,
    chroma_from_uint8,
    chroma_to_uint8,
    multiscale_summary,
    summary_size,
)
from ..qmax import AlignmentFeatures
from ..utils import atomic_write_bytes

CHROMA_SUFFIX = ".chroma.npz"  # shard_00000.chroma.npz beside shard_00000.npy / .jsonl


def compact_chroma(feat, fine: dict | None = None, spec: str = CHROMA_SPEC) -> np.ndarray:
    """What the index keeps per recording for re-ranking: uint8 chroma (T, 12 k), 30 bytes/s
    per view, made with the chroma ``spec`` (:data:`coverhunter.chroma.CHROMA_SPEC`).

    ``feat``: a CQT array (frames, 96) or the path of its ``.npy`` file; ``fine``: the
    recording's fine chroma views (see
    :func:`coverhunter.alignment_inputs.alignment_features`).
    """
    return chroma_to_uint8(alignment_features(feat, spec, fine).chroma)


def as_stored(query: AlignmentFeatures) -> AlignmentFeatures:
    """``query``'s alignment data as a catalogue recording's are once its chroma went
    through the index's uint8 storage (:func:`compact_chroma`, read back by
    :meth:`coverhunter.index.chroma_store.IndexChroma.get`): what a calibration aligns a
    query with."""
    return AlignmentFeatures.from_chroma(chroma_from_uint8(chroma_to_uint8(query.chroma)))


def write_shard_chroma(root, shard: str, chromas: list[np.ndarray], spec: str | tuple = CHROMA_SPEC) -> None:
    """Chroma of a shard's recordings (in its ``.jsonl`` order), one file, written atomically.

    ``spec``: the chroma they were made with, recorded in the file: a chroma spec, or an
    index's legacy ``(lowest_octave, power)`` (written as ``chroma_params``, as then), so
    that a shard appended to, compacted or repaired in an older index keeps its chroma.

    ``data``: all recordings' uint8 chroma concatenated (sum T, 12 k), made by
    :func:`compact_chroma` with the chroma spec in ``chroma_spec`` (files written before
    it existed hold ``chroma_params``: lowest octave and power of the CQT's chroma);
    ``offsets``: (n + 1,); ``summary``: their 2D Fourier summaries (n, D) float16, made with
    the patch lengths in ``summary_patches`` (:data:`coverhunter.classical.SUMMARY_PATCHES`;
    any model's projection reads the columns of its own patches,
    :func:`coverhunter.alignment_inputs.summary_columns`).
    """
    offsets = np.cumsum([0] + [len(c) for c in chromas]).astype(np.int64)
    data = np.concatenate(chromas) if chromas else np.zeros((0, 12), np.uint8)
    # 2D Fourier summaries (n, D) for the global candidates of identify, from the stored chroma
    summaries = (
        np.stack([multiscale_summary(summary_chroma(chroma_from_uint8(c)), SUMMARY_PATCHES) for c in chromas])
        if chromas
        else np.zeros((0, summary_size(SUMMARY_PATCHES)), np.float32)
    )
    buf = io.BytesIO()
    np.savez(
        buf,
        data=data.astype(np.uint8),
        offsets=offsets,
        summary=summaries.astype(np.float16),
        summary_patches=np.asarray(SUMMARY_PATCHES, np.int64),
        **(
            {"chroma_spec": np.str_(spec)}
            if isinstance(spec, str)
            else {"chroma_params": np.asarray(spec, np.float64)}
        ),
    )
    atomic_write_bytes(Path(root) / f"{shard}{CHROMA_SUFFIX}", buf.getvalue())


__all__ = ["CHROMA_SUFFIX", "compact_chroma", "as_stored", "write_shard_chroma"]
