"""Splitting a catalogue across processes: rank ``R`` of ``W`` embeds every W-th recording.

Each process adds its slice to the same index under the index's write lock, committing
every few hundred recordings; a recording already in the index is skipped, so running
a slice again resumes it. The rank helpers live in :mod:`coverhunter.shard` (feature
extraction uses them too); ``--rank``/``--world-size`` win over torchrun's ``RANK`` and
``WORLD_SIZE`` environment variables.
"""

from __future__ import annotations

from ..shard import rank_slice, resolve_rank

__all__ = ["resolve_rank", "rank_slice"]
