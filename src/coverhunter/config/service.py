"""The service settings: :class:`ServeConfig`, what ``coverhunter serve`` is started with (the
engine's limits, the token, the default search, where it listens).

Each field's ``metadata`` is its command-line option (:mod:`.cli_options`); the search
fields take their defaults and help from :class:`.search.IdentifyOptions`, so the service's
default search is the command line's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from .search import IdentifyOptions, check_search

_SEARCH = {f.name: f for f in fields(IdentifyOptions)}


def _search_field(name: str):
    """A field with the default and the option of ``IdentifyOptions.<name>``."""
    return field(default=_SEARCH[name].default, metadata=_SEARCH[name].metadata)


@dataclass(frozen=True)
class ServeConfig:
    """What ``coverhunter serve`` is started with.

    Parameters
    ----------
    index : Path
        The catalogue index folder.
    model : Path or None
        The model; None: the one the index was built with.
    device : str or None
        auto | cpu | cuda | cuda:N | mps (None: auto).
    token : str or None
        ``POST /tracks`` exists only with a token, and needs it; reads need it unless
        ``open_reads``.
    open_reads : bool
        Reads need no token (``--protect-reads`` turns it off).
    max_upload_mb : float
        Request bodies above this get 413.
    max_duration_s : float
        Longer recordings get 413.
    decode_timeout_s : float
        A decode running longer is killed (422).
    queue_size : int
        Requests admitted at once (decoding, waiting or running); more get 503.
    decoders : int
        Decoding processes at once, 0 = one per core.
    top, false_alarm, segments_after_s, rerank, rerank_grow_after, rerank_versions
        The service's default search (:meth:`identify_options`; the fields of
        :class:`.search.IdentifyOptions`, with its defaults); a request overrides ``top``
        and the re-ranking's.
    workdir : Path or None
        Temporary files (None: the system's temporary folder).
    host : str
        Address :func:`coverhunter.serve.serve` listens on.
    port : int
        Its port (0: a free one).

    Raises
    ------
    ValueError
        A setting out of its range, named in the message.
    """

    index: Path = field(metadata={"help": "the catalogue index folder"})
    model: Path | None = field(default=None, metadata={"help": "default: the model the index was built with"})
    device: str | None = field(default=None, metadata={"help": "auto | cpu | cuda | cuda:N | mps"})
    token: str | None = field(
        default=None,
        metadata={"help": "enables POST /tracks, which needs it (default: $COVERHUNTER_TOKEN)"},
    )
    open_reads: bool = field(
        default=True, metadata={"flag": "--protect-reads", "invert": True, "help": "reads need the token too"}
    )
    max_upload_mb: float = field(default=200.0, metadata={"help": "request bodies above this get 413"})
    max_duration_s: float = field(default=3 * 3600.0, metadata={"help": "longer recordings get 413"})
    decode_timeout_s: float = field(
        default=300.0, metadata={"help": "a decode running longer is killed (422)"}
    )
    queue_size: int = field(default=16, metadata={"help": "requests admitted at once; more get 503"})
    decoders: int = field(default=0, metadata={"help": "decoding processes at once (0 = one per core)"})
    top: int = _search_field("top")
    false_alarm: float = _search_field("false_alarm")
    segments_after_s: float = _search_field("segments_after_s")
    rerank: int | None = _search_field("rerank")
    rerank_grow_after: int | None = _search_field("rerank_grow_after")
    rerank_versions: int | None = _search_field("rerank_versions")
    workdir: Path | None = field(
        default=None, metadata={"help": "temporary files (default: the system's temporary folder)"}
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8000, metadata={"help": "port to listen on (0: a free one)"})

    def __post_init__(self):
        check_search(self, "serve", hyphens=True)
        for key in ("max_upload_mb", "max_duration_s", "decode_timeout_s"):
            if not getattr(self, key) > 0:
                raise ValueError(f"serve {key.replace('_', '-')} must be > 0, got {getattr(self, key)}")
        if self.queue_size < 1 or self.decoders < 0:
            raise ValueError(
                f"serve queue-size must be >= 1 and decoders >= 0, got {self.queue_size}, {self.decoders}"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"serve port must be in [0, 65535], got {self.port}")

    def identify_options(self) -> IdentifyOptions:
        """The service's default search (a request overrides parts of it): segments for
        recordings longer than ``segments_after_s``."""
        return IdentifyOptions(
            top=self.top,
            false_alarm=self.false_alarm,
            rerank=self.rerank,
            rerank_grow_after=self.rerank_grow_after,
            rerank_versions=self.rerank_versions,
            segments=None,
            segments_after_s=self.segments_after_s,
        )


__all__ = ["ServeConfig"]
