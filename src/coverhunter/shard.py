"""Splitting work across processes: rank ``R`` of ``W`` handles every W-th item.

Shared by feature extraction (:mod:`coverhunter.extract`) and index building
(:mod:`coverhunter.index`). ``--rank``/``--world-size`` win over torchrun's ``RANK`` and
``WORLD_SIZE`` environment variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name}={value!r} is not an integer") from None


def resolve_rank(
    rank: int | None = None, world_size: int | None = None, environ: Mapping[str, str] | None = None
) -> tuple[int, int]:
    """``(rank, world_size)`` from the arguments, else torchrun's environment, else (0, 1).

    Parameters
    ----------
    rank, world_size : int, optional
        Given values (command-line flags); None falls back to ``$RANK`` / ``$WORLD_SIZE``.
    environ : mapping, optional
        The environment to read (default ``os.environ``).

    Returns
    -------
    tuple of int

    Raises
    ------
    ValueError
        Unless ``world_size >= 1`` and ``0 <= rank < world_size``.
    """
    env = os.environ if environ is None else environ
    if world_size is None:
        world_size = _env_int(env, "WORLD_SIZE", 1)
    if rank is None:
        rank = _env_int(env, "RANK", 0) if world_size > 1 else 0
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
