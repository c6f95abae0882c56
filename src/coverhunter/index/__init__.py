"""The catalogue index: which works does a recording perform?

Modules, imports flowing down: ``catalogue`` (the public names gathered, and the folder's
layout) -> ``build`` (``build_index``, ``build_shard``) -> ``store`` (``CatalogueIndex``:
loading, commits under the lock, reading rows) -> ``writes`` (add, remove, compact),
``scoring`` (chunk rows -> works) -> ``calibrate`` (fitting and applying the
calibration; statistics in ``calibration``) and ``backend`` (the engines' protocol and
choice) -> ``exact_backend`` / ``faiss_backend`` / ``qdrant_backend`` (the engines) ->
``search`` (exact search, shortlist clean-up), ``folder`` (files, lock, swap), ``shard``
(rank slices), ``embedding`` -> ``results``; ``repair`` (damaged shard files) sits above
``store``. ``recurrence`` (the first stage's recurrence voting over chroma shingles)
depends on nothing else here. ``chroma_format`` (the stored chroma format: one
``shard_NNNNN.chroma.npz`` per shard) imports nothing here; ``folder``, ``writes`` and
``repair`` write it inside functions. ``chroma_store`` (the recordings' stored chroma,
read for re-ranking: ``IndexChroma``) builds a recurrence index per catalogue
(``IndexChroma.recurrence``, kept in ``INDEX/recurrence.cache``); it imports
``chroma_format``, ``recurrence`` and ``coverhunter.rerank`` (the re-ranking maths), and
``calibrate`` imports it inside functions only. ``reranked_search`` (``identify``'s
re-ranking of a search) imports nothing here (the index and its chroma are passed in);
``coverhunter.identification`` imports it.
"""

from .calibration import fit_calibration, p_impostor, probability_same
from .catalogue import (
    APPROX_MIN_VECTORS,
    BACKENDS,
    FORMAT,
    CatalogueIndex,
    build_index,
    build_shard,
)
from .embedding import embed_recording, embed_recordings, recording_features, tracks_from_folder
from .repair import RepairReport, repair_index
from .results import CatalogueError, Match, QueryResult, Segment, format_result, format_segments
from .shard import rank_slice, resolve_rank

__all__ = [
    "CatalogueIndex",
    "Match",
    "QueryResult",
    "Segment",
    "build_index",
    "build_shard",
    "CatalogueError",
    "format_result",
    "format_segments",
    "fit_calibration",
    "probability_same",
    "p_impostor",
    "embed_recording",
    "embed_recordings",
    "recording_features",
    "tracks_from_folder",
    "rank_slice",
    "resolve_rank",
    "BACKENDS",
    "APPROX_MIN_VECTORS",
    "FORMAT",
    "RepairReport",
    "repair_index",
]
