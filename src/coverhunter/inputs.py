"""What the network reads for a recording: its CQT file, or the fine chroma stored beside it.

A training or evaluation list names each recording's CQT (``feat``). Models with the
"cqt" or "chroma" front end read that file (the "chroma" front end folds it inside the
network); a "fine_chroma" model reads the tuned chroma views that ``extract`` writes
beside it (:func:`coverhunter.chroma.chroma_path`), stacked side by side::

    x.cqt.npy     (frames at 25 /s, 96 dB bins)          <- "cqt", "chroma"
    x.chroma.npz  {"c3": (T, 12), "c1": (T, 12)} at 2.5 /s
                  -> (T, 12 * len(model.chroma_views))   <- "fine_chroma"

:func:`model_input` turns a model's config into a :class:`ModelInput` that says which
file to read, how to load it, its frame rate and what pads a short chunk, so the trainer
and every embedding path feed a checkpoint what it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .chroma import FRAMES_PER_SECOND as CHROMA_FPS
from .chroma import VIEWS, chroma_path, load_chroma
from .config import Config, ModelConfig
from .features import PAD_DB

CHROMA_PAD = 0.0  # a chunk past the end of a recording is silence: all pitch classes 0


class MissingInputError(ValueError):
    """A recording lacks the input file its model reads (e.g. no stored fine chroma)."""


def stack_views(views: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    """Chroma views side by side, (T, 12 * len(names)) float32, cut to the shortest view."""
    parts = [np.asarray(views[v], np.float32) for v in names]
    t = min(len(p) for p in parts)
    return np.concatenate([p[:t] for p in parts], axis=1)


@dataclass(frozen=True)
class ModelInput:
    """How a model's input is read from a recording's feature file.

    Attributes
    ----------
    front_end : str
        ``model.front_end`` of the config.
    views : tuple of str
        Fine chroma views stacked into the input ("fine_chroma" only, else empty).
    frames_per_second : float
        Frame rate of the input file (25 for the CQT, 2.5 for the fine chroma).
    pad_value : float
        What fills a chunk past the end of a recording (-100 dB, or 0 for chroma).
    """

    front_end: str
    views: tuple[str, ...]
    frames_per_second: float
    pad_value: float

    @property
    def reads_cqt(self) -> bool:
        return self.front_end != "fine_chroma"

    def source(self, feat):
        """The file this model reads for a recording whose CQT is ``feat``."""
        if self.reads_cqt or isinstance(feat, np.ndarray):
            return feat
        return chroma_path(feat)

    def load(self, source) -> np.ndarray:
        """The input array (frames, bins) of :meth:`source`'s result.

        Raises
        ------
        MissingInputError
            When the stored chroma file or one of its views is missing.
        """
        if isinstance(source, np.ndarray):
            return source
        if self.reads_cqt:
            return np.load(source, mmap_mode="r")
        views = load_chroma(source, self.views)
        if views is None:
            raise MissingInputError(
                f"{source}: missing, or lacks chroma view(s) {list(self.views)}: this model "
                f"(model.front_end='fine_chroma') reads them; run 'coverhunter extract' with "
                f"chroma_views including {list(self.views)} on its data folder"
            )
        return stack_views(views, self.views)

    def loader(self):
        """``load`` for :func:`coverhunter.embed.embed_tracks` (None: its own CQT loader)."""
        return None if self.reads_cqt else self.load


def model_input(cfg: Config | ModelConfig) -> ModelInput:
    """The :class:`ModelInput` of a training config (or only its model section)."""
    m = cfg.model if isinstance(cfg, Config) else cfg
    if m.front_end != "fine_chroma":
        fps = cfg.features.frames_per_second if isinstance(cfg, Config) else 25.0
        return ModelInput(m.front_end, (), fps, PAD_DB)
    unknown = [v for v in m.chroma_views if v not in VIEWS]
    if unknown:
        raise ValueError(f"model.chroma_views: unknown view(s) {unknown}; known: {sorted(VIEWS)}")
    return ModelInput(m.front_end, tuple(m.chroma_views), CHROMA_FPS, CHROMA_PAD)


def input_views(cfg: Config | ModelConfig, views=()) -> tuple[str, ...]:
    """``views`` and the fine chroma views the model reads, each once, in that order: what
    a code path analysing audio must compute for both its own use and the model."""
    return tuple(dict.fromkeys((*views, *model_input(cfg).views)))


def input_of_analysis(inp: ModelInput, cqt: np.ndarray | str | Path, chroma: dict) -> np.ndarray | str | Path:
    """The model input of a recording analysed in memory (or of its CQT file).

    Parameters
    ----------
    cqt : np.ndarray (frames, bins), or path of the CQT file
    chroma : dict of str to np.ndarray (T, 12)
        Its fine chroma views; must hold ``inp.views`` for a "fine_chroma" model.

    Returns
    -------
    ``cqt`` itself for a CQT model, else the views side by side (T, 12 * len(views)).

    Raises
    ------
    MissingInputError
        A view the model reads is missing.
    """
    if inp.reads_cqt:
        return cqt
    missing = [v for v in inp.views if v not in chroma]
    if missing:
        raise MissingInputError(
            f"chroma view(s) {missing} missing: this model (model.front_end='fine_chroma') reads them"
        )
    return stack_views(chroma, inp.views)


def input_of_path(feat: str | Path, cfg: Config | ModelConfig) -> np.ndarray:
    """The model input of one recording, from the path of its CQT file."""
    inp = model_input(cfg)
    return np.asarray(inp.load(inp.source(feat)), np.float32)


__all__ = [
    "ModelInput",
    "MissingInputError",
    "model_input",
    "input_of_path",
    "input_of_analysis",
    "input_views",
    "stack_views",
    "CHROMA_PAD",
]
