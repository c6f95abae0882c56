"""Splitting a catalogue across processes: rank ``R`` of ``W`` embeds every W-th recording.

Each process adds its slice to the same index under the index's write lock, committing
every few hundred recordings; a recording already in the index is skipped, so running
a slice again resumes it. ``--rank``/``--world-size`` win over torchrun's ``RANK`` and
``WORLD_SIZE`` environment variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence


def resolve_rank(rank: int | None = None, world_size: int | None = None,
                 environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``(rank, world_size)`` from the arguments, else torchrun's environment, else (0, 1)."""
    env = os.environ if environ is None else environ
    if world_size is None:
        world_size = int(env.get("WORLD_SIZE", 1))
    if rank is None:
        rank = int(env.get("RANK", 0)) if world_size > 1 else 0
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} of world size {world_size}: need 0 <= rank < world size")
    return rank, world_size


def rank_slice(items: Sequence, rank: int, world_size: int) -> list:
    """The items rank ``rank`` handles: every ``world_size``-th, starting at ``rank``.

    Interleaving (not contiguous blocks) keeps the slices' amounts of audio alike when
    the list is sorted by work or length.
    """
    return list(items[rank::world_size])


__all__ = ["resolve_rank", "rank_slice"]
