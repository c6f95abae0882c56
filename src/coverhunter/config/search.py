"""The search settings: :class:`IdentifyOptions`, every setting of an identification, with the
defaults the command line (``identify``, its batch mode, ``serve``) and the service start from.

Each field's ``metadata`` is its command-line option (:mod:`.cli_options`): the commands
build their flags from it, so a default or a help text is written here only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .cli_options import positive_int


@dataclass(frozen=True)
class IdentifyOptions:
    """How a recording is searched: every setting of :func:`coverhunter.identification.identify`.

    Parameters
    ----------
    top : int
        Works listed per recording (at least 1).
    false_alarm : float
        The verdict is "match" when the best match's p-value is at most this, in [0, 1]
        (calibrated index only; see :func:`coverhunter.identification.verdict`).
    rerank : int or None
        Shortlist length re-ranked by chroma alignment when the index stores chroma
        (None: :data:`coverhunter.rerank.DEFAULT_K`; 0: the embedding search alone).
    rerank_grow_after : int or None
        Catalogue size (recordings) beyond which the shortlist grows as
        ``rerank * sqrt(size / N)`` (None: :data:`coverhunter.rerank.DEFAULT_GROW_AFTER`;
        0: never).
    rerank_versions : int or None
        Recordings aligned per shortlisted work (None:
        :data:`coverhunter.rerank.DEFAULT_VERSIONS`; 1: the one found).
    segments : bool or None
        Say which works are performed where; None: for recordings longer than
        ``segments_after_s`` (the service's default).
    segments_after_s : float
        See ``segments``.
    switch_cost : float
        Price of a change of work between segments, in typical score gaps
        (:func:`coverhunter.segments.find_segments`).
    approximate : bool or None
        None: the index's engine; False: exact search; True: the approximate engine
        (:meth:`coverhunter.index.CatalogueIndex.search_vectors`).

    Raises
    ------
    ValueError
        A setting out of its range, named in the message.
    """

    top: int = field(default=10, metadata={"help": "works listed per recording"})
    false_alarm: float = field(
        default=0.01,
        metadata={"help": "answer 'no cover' when the best match's p-value is above this (calibrated index)"},
    )
    rerank: int | None = field(
        default=None,
        metadata={
            "metavar": "K",
            "help": "re-order the best K works by chroma alignment when the index stores "
            "chroma (default 50; 0 = off)",
        },
    )
    rerank_grow_after: int | None = field(
        default=None,
        metadata={
            "metavar": "N",
            "help": "in a catalogue of more than N recordings, K grows as K * sqrt(size / N) "
            "(0 = always K; default: coverhunter.rerank's)",
        },
    )
    rerank_versions: int | None = field(
        default=None,
        metadata={
            "metavar": "V",
            "type": positive_int,
            "help": "align up to V recordings of each shortlisted work: the one found, then the "
            "work's others nearest by the 2D Fourier summary (default: coverhunter.rerank's, "
            "3; 1 = the one found)",
        },
    )
    segments: bool | None = field(
        default=False,
        metadata={"help": "also say which works are performed where (medleys, concerts, mixes)"},
    )
    segments_after_s: float = field(
        default=600.0,
        metadata={"help": "'auto' segments for recordings longer than this many seconds"},
    )
    switch_cost: float = field(
        default=3.0,
        metadata={"help": "price of a change of work between segments, in typical score gaps"},
    )
    approximate: bool | None = field(
        default=None,
        metadata={
            "flag": "--search",
            "choices": {"auto": None, "exact": False, "approximate": True},
            "help": "the index's own engine (auto), exact search, or the approximate engine",
        },
    )

    def __post_init__(self):
        check_search(self, "identify")
        if self.switch_cost < 0:
            raise ValueError(f"identify switch_cost must be >= 0, got {self.switch_cost}")

    def but(self, **changes) -> IdentifyOptions:
        """These options with the ``changes`` that are not None (a request's overrides)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def check_search(settings: Any, where: str, hyphens: bool = False) -> None:
    """Raise ValueError for a search setting of ``settings`` out of its range.

    Parameters
    ----------
    settings : IdentifyOptions or coverhunter.config.ServeConfig
        Anything with the attributes ``top``, ``false_alarm``, ``rerank``,
        ``rerank_grow_after``, ``rerank_versions`` and ``segments_after_s``.
    where : str
        Whose settings, the message's first word ("identify", "serve").
    hyphens : bool
        Name the settings as options (``rerank-grow-after``), not fields.
    """

    def name(key: str) -> str:
        return key.replace("_", "-") if hyphens else key

    for key in ("rerank", "rerank_grow_after"):
        v = getattr(settings, key)
        if v is not None and v < 0:
            raise ValueError(f"{where} {name(key)} must be >= 0 (0 = off), got {v}")
    if settings.rerank_versions is not None and settings.rerank_versions < 1:
        raise ValueError(f"{where} {name('rerank_versions')} must be >= 1, got {settings.rerank_versions}")
    if settings.top < 1:
        raise ValueError(f"{where} top must be >= 1, got {settings.top}")
    if not 0 <= settings.false_alarm <= 1:
        raise ValueError(f"{where} {name('false_alarm')} must be in [0, 1], got {settings.false_alarm}")
    if settings.segments_after_s < 0:
        raise ValueError(f"{where} {name('segments_after_s')} must be >= 0, got {settings.segments_after_s}")


__all__ = ["IdentifyOptions", "check_search"]
