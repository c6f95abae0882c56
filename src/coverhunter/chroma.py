"""Chroma from the audio: a 36-bin-per-octave CQT with estimated tuning, folded by librosa.

The alignment and the first stage compare pitch-class content, so their input should
resolve pitch finely and hold when a version is tuned off concert pitch. The model's CQT
(one bin per semitone from 32 Hz, :mod:`coverhunter.features`) does neither: a tone
between two bins smears over both, and a recording tuned a quarter-tone off lands on the
wrong ones. Here the audio goes through ``librosa.cqt`` at three bins per semitone with
``librosa.estimate_tuning``'s correction and ``librosa.filters.cq_to_chroma`` folds the
bins onto 12 pitch classes (each centred on its semitone); frames are averaged to
:data:`FRAMES_PER_SECOND` and scaled to a maximum of 1, as
:func:`coverhunter.classical.chroma_from_cqt` does for the model's CQT.

One CQT from C1 (7 octaves) gives every view: :data:`VIEWS` names them (``"c3"``: from C3,
five octaves, no bass line; ``"c1"``: from C1, bass included; ``"c3p15"``, ``"c3p07"``:
from C3 with the magnitudes raised to 1.5 or 0.7 before folding; ``"c3cens"``: librosa's
CENS chroma from C3, ``librosa.feature.chroma_cens``; ``"c3nnls"``: notes transcribed from
the whole CQT by NNLS, folded from C3, :mod:`coverhunter.notes`). A view is a short string
recorded with every stored chroma, so an index or a model file always knows which
chroma its data came from.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classical import block_mean, chroma_from_cqt
from .notes import note_activations, notes_to_chroma
from .qmax import stack_views

SAMPLE_RATE = 16000  # Hz, as every recording is decoded
BINS_PER_OCTAVE = 36  # three bins per semitone
N_OCTAVES = 7  # C1 (32.7 Hz) .. B7 (3.95 kHz)
HOP_LENGTH = 640  # samples: 25 CQT frames per second, as the model's CQT
BLOCK = 10  # CQT frames averaged into one chroma frame
FRAMES_PER_SECOND = SAMPLE_RATE / HOP_LENGTH / BLOCK  # 2.5 chroma frames per second
MIN_SECONDS = 4.0  # shorter audio is padded with silence for the CQT (its frames are cut off)
CONTEXT_S = 3.2  # audio either side of a streamed stretch (twice the longest filter's half)
TUNING_S = 60.0  # a streamed recording's tuning is estimated on its first minute


@dataclass(frozen=True)
class ChromaView:
    """One way to fold the 36-bin CQT onto 12 pitch classes.

    Attributes
    ----------
    lowest_octave : int
        Octaves of the CQT below this one are left out (0: from C1; 2: from C3, 131 Hz,
        above most bass lines).
    power : float
        CQT magnitudes are raised to this power before folding.
    cens : int
        0: the folded magnitudes. Otherwise librosa's CENS chroma
        (``librosa.feature.chroma_cens``: each frame's energy shares quantised on a
        logarithmic scale, smoothed over ``cens`` CQT frames by a Hann window, unit
        length), with ``power`` 1.
    notes : bool
        Fold notes, not bins: each block-averaged frame is transcribed first
        (:mod:`coverhunter.notes`, NNLS on the whole 7-octave CQT) and the notes from
        ``lowest_octave`` up are folded; with ``power`` 1 and no ``cens``.
    """

    lowest_octave: int = 2
    power: float = 1.0
    cens: int = 0
    notes: bool = False


# "c3p07": from C3 with the magnitudes compressed (power 0.7) before folding, so a quieter
# part's pitches count more beside the loudest (the alignment's fine view before c3cens)
VIEWS = {
    "c3": ChromaView(2, 1.0),
    "c1": ChromaView(0, 1.0),
    "c3p15": ChromaView(2, 1.5),
    "c3p07": ChromaView(2, 0.7),
    # the alignment's fine view (CHROMA_SPEC). Smoothing 11 CQT frames (0.44 s): beside the
    # CQT chroma on the two tune corpora, mean all-pairs MAP 0.476, 0.479, 0.482 and 0.481
    # for 41, 21, 11 and 5 (docs/chroma.md "CENS")
    "c3cens": ChromaView(2, 1.0, cens=11),
    # notes transcribed by NNLS from the whitened spectrum (coverhunter.notes), folded
    # from C3: a note counts by how it stands out, not by its energy
    "c3nnls": ChromaView(2, 1.0, notes=True),
}


# The chroma the alignment reads, as a spec: views side by side ("a|b",
# :func:`coverhunter.qmax.stack_views`). "cqt" is the chroma of the model's CQT
# (:func:`coverhunter.classical.chroma_from_cqt` with its CHROMA_PARAMS); the others are
# fine views. Chosen with benchmarks/bench_chroma.py on the two mixed tune corpora
# (docs/chroma.md): "cqt|c3" first, then "cqt|c3p07" (all-pairs MAP 0.482 -> 0.496 and
# 0.446 -> 0.460 at the same cost), then "cqt|c3cens": at or above "cqt|c3p07" on all three
# tune corpora, all-pairs 0.507 -> 0.514, 0.485 -> 0.490, 0.426 -> 0.439 and the two-stage
# search's MAP without expansion 0.545 -> 0.555, 0.514 -> 0.518, 0.446 -> 0.460
# (bench_accuracy.py --tune --tune-spec), then "cqt|c3nnls": the transcribed notes
# (coverhunter.notes) beside the CQT's chroma, all-pairs 0.498 -> 0.574 and 0.465 -> 0.530
# on the two tune corpora of bench_chroma.py, the two-stage search's MAP with expansion
# 0.598 -> 0.695, 0.569 -> 0.649 and 0.499 -> 0.573 on the three of --tune-spec, at about
# the cost of "cqt|c3cens" (docs/chroma.md "Notes"). Indexes record theirs; extract
# writes the fine ones (coverhunter.extract.stored_views)
CHROMA_SPEC = "cqt|c3nnls"
CQT_VIEW = "cqt"


def spec_views(spec: str) -> tuple[str, ...]:
    """The views of a chroma spec (``"cqt|c3"`` -> ``("cqt", "c3")``); ValueError if unknown."""
    views = tuple(spec.split("|"))
    bad = [v for v in views if v != CQT_VIEW and v not in VIEWS]
    if bad or not spec:
        raise ValueError(
            f"unknown chroma view(s) {bad or [spec]} in {spec!r}; known: {[CQT_VIEW, *sorted(VIEWS)]}"
        )
    return views


def fine_views(spec) -> tuple[str, ...]:
    """The views of ``spec`` computed from the audio (all but the CQT's); none for an old
    index's CQT chroma given as legacy ``(lowest_octave, power)``, as :func:`search_view`
    reads it."""
    if not isinstance(spec, str):
        return ()
    return tuple(v for v in spec_views(spec) if v != CQT_VIEW)


# the view the first stage's recurrence voting searches (coverhunter.index.recurrence):
# the fine chroma from C3, whose voting found more covers than the CQT's chroma on every
# corpus of benchmarks/bench_first_stage.py (benchmarks/results/first-stage.md); in a spec
# without it (the shipped "cqt|c3nnls") the first fine view: the same octaves' notes
SEARCH_VIEW = "c3"


def search_view(spec) -> int:
    """Which view of a stacked chroma (T, 12 k) made with ``spec`` the first stage
    searches: :data:`SEARCH_VIEW` when the spec has it, else its first fine view, else
    view 0 (an old index's CQT chroma, given as a spec or as legacy parameters)."""
    if not isinstance(spec, str):
        return 0
    views = spec_views(spec)
    fine = [v for v in views if v != CQT_VIEW]
    return views.index(SEARCH_VIEW) if SEARCH_VIEW in views else (views.index(fine[0]) if fine else 0)


def view_of(chroma: np.ndarray, position: int) -> np.ndarray:
    """View ``position`` of a stacked chroma (T, 12 k): (T, 12)."""
    x = np.asarray(chroma)
    if x.ndim != 2 or x.shape[1] % 12 or not 0 <= position < x.shape[1] // 12:
        raise ValueError(f"no view {position} in a chroma of shape {x.shape}")
    return x[:, 12 * position : 12 * (position + 1)]


def spec_chroma(spec: str, cqt_db: np.ndarray | None, fine: dict[str, np.ndarray]) -> np.ndarray:
    """A recording's chroma for the alignment, (T, 12 k) for a spec of k views.

    Parameters
    ----------
    spec : str
        As :data:`CHROMA_SPEC`.
    cqt_db : np.ndarray, shape (frames, 96), optional
        The model's CQT (needed when the spec has the ``"cqt"`` view).
    fine : dict of str to np.ndarray
        The fine views (:func:`audio_chroma`); a missing one raises ValueError.
    """
    parts = []
    for v in spec_views(spec):
        if v == CQT_VIEW:
            if cqt_db is None:
                raise ValueError(f"chroma {spec!r} needs the recording's CQT")
            parts.append(chroma_from_cqt(np.asarray(cqt_db)))
        elif v not in fine:
            raise ValueError(
                f"chroma {spec!r} needs the fine view {v!r} (computed from the audio "
                f"or stored beside the CQT by extract), which is missing"
            )
        else:
            parts.append(fine[v])
    return parts[0] if len(parts) == 1 else stack_views(parts)


def _check_views(views) -> None:
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise ValueError(f"unknown chroma view(s) {unknown}; known: {sorted(VIEWS)}")


def estimate_tuning(y: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Deviation of the recording's tuning from A440, in fractions of a 36-bin bin.

    Returns 0 for silence and for audio without peaks above librosa's pitch floor.
    """
    import librosa

    if not np.any(np.abs(y) > 1e-6):
        return 0.0
    with warnings.catch_warnings():
        # no peaks in its frequency range (a recording of bass alone): tuning 0, as it returns
        warnings.filterwarnings("ignore", "Trying to estimate tuning from empty", UserWarning)
        return float(librosa.estimate_tuning(y=y, sr=sample_rate, bins_per_octave=BINS_PER_OCTAVE))


def fine_cqt(y: np.ndarray, sample_rate: int = SAMPLE_RATE, tuning: float | None = None) -> np.ndarray:
    """Magnitude CQT at 36 bins per octave from C1, tuned to the recording.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono audio at ``sample_rate``.
    tuning : float, optional
        As :func:`estimate_tuning` returns; estimated from ``y`` when None.

    Returns
    -------
    np.ndarray, shape (n_frames, 252), float32
        ``n_frames = 1 + n_samples // HOP_LENGTH``; magnitudes, not dB.
    """
    import librosa

    y = np.asarray(y, np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected mono audio of shape (n_samples,), got {y.shape}")
    if tuning is None:
        tuning = estimate_tuning(y, sample_rate)
    n_frames = 1 + len(y) // HOP_LENGTH
    # the lowest octave's filters span about 1.6 s: shorter signals are padded with silence
    y = np.pad(y, (0, max(0, int(MIN_SECONDS * sample_rate) - len(y))))
    c = librosa.cqt(
        y,
        sr=sample_rate,
        hop_length=HOP_LENGTH,
        fmin=librosa.note_to_hz("C1"),
        n_bins=BINS_PER_OCTAVE * N_OCTAVES,
        bins_per_octave=BINS_PER_OCTAVE,
        tuning=tuning,
    )
    return np.abs(c).T[:n_frames].astype(np.float32)


def _fold_matrix(lowest_octave: int) -> np.ndarray:
    """(n_bins, 12) librosa fold of the CQT's bins from ``lowest_octave`` up."""
    import librosa

    n_bins = BINS_PER_OCTAVE * (N_OCTAVES - lowest_octave)
    fmin = librosa.note_to_hz("C1") * 2.0**lowest_octave
    return librosa.filters.cq_to_chroma(
        n_bins, bins_per_octave=BINS_PER_OCTAVE, n_chroma=12, fmin=fmin
    ).T.astype(np.float32)


def _checked_cqt(cqt_mag: np.ndarray) -> np.ndarray:
    x = np.asarray(cqt_mag, np.float32)
    if x.ndim != 2 or x.shape[1] != BINS_PER_OCTAVE * N_OCTAVES or len(x) == 0:
        raise ValueError(
            f"expected a fine CQT of shape (frames > 0, {BINS_PER_OCTAVE * N_OCTAVES}), got {x.shape}"
        )
    return x


def _check_view(view: ChromaView) -> None:
    if (
        not 0 <= view.lowest_octave < N_OCTAVES
        or view.power <= 0
        or view.cens < 0
        or ((view.cens or view.notes) and view.power != 1.0)
        or (view.cens and view.notes)
    ):
        raise ValueError(f"bad chroma view {view}")


def fold_frames(cqt_mag: np.ndarray, view: ChromaView) -> np.ndarray:
    """Chroma of every frame of a :func:`fine_cqt`, before the block average.

    Parameters
    ----------
    cqt_mag : np.ndarray, shape (n_frames, 252)
    view : ChromaView

    Returns
    -------
    np.ndarray, shape (n_frames, 12), float32
    """
    x = _checked_cqt(cqt_mag)
    _check_view(view)
    if view.notes:
        raise ValueError(
            f"a notes view is transcribed on block-averaged frames: use fold, not fold_frames ({view})"
        )
    x = x[:, view.lowest_octave * BINS_PER_OCTAVE :]
    if view.cens:
        import librosa

        return librosa.feature.chroma_cens(
            C=x.T,
            bins_per_octave=BINS_PER_OCTAVE,
            n_chroma=12,
            fmin=librosa.note_to_hz("C1") * 2.0**view.lowest_octave,
            win_len_smooth=view.cens,
        ).T.astype(np.float32)
    if view.power != 1.0:
        x = x**view.power
    return x @ _fold_matrix(view.lowest_octave)


def blocked(frames: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """Block-averaged frames of :func:`fold_frames`, each scaled to a maximum of 1 (silent
    ones zero): (ceil(n_frames / block), 12) float32."""
    avg = block_mean(np.asarray(frames, np.float32), block)
    peak = avg.max(axis=1, keepdims=True)
    return np.where(peak > 1e-9 * max(float(peak.max()), 1e-30), avg / np.maximum(peak, 1e-30), 0.0).astype(
        np.float32
    )


def fold(cqt_mag: np.ndarray, view: ChromaView, block: int = BLOCK) -> np.ndarray:
    """Block-averaged, max-normalised chroma of a :func:`fine_cqt`.

    Parameters
    ----------
    cqt_mag : np.ndarray, shape (n_frames, 252)
    view : ChromaView
    block : int
        CQT frames averaged into one chroma frame (a trailing partial block is kept).

    Returns
    -------
    np.ndarray, shape (ceil(n_frames / block), 12), float32
        Each frame scaled to a maximum of 1; silent frames are zero.
    """
    if view.notes:
        _check_view(view)
        spectrum = block_mean(_checked_cqt(cqt_mag), block)
        return notes_to_chroma(note_activations(spectrum), 12 * view.lowest_octave)
    return blocked(fold_frames(cqt_mag, view), block)


def audio_chroma(y: np.ndarray, views=("c3",), sample_rate: int = SAMPLE_RATE) -> dict[str, np.ndarray]:
    """The chroma views of one recording, from one tuned CQT.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono audio at ``sample_rate``.
    views : sequence of str
        Names in :data:`VIEWS`.

    Returns
    -------
    dict of str to np.ndarray, each of shape (T, 12), float32, T = ceil((1 + n // 640) / 10)
    """
    _check_views(views)
    if sample_rate != SAMPLE_RATE:  # the frame rate is defined at 16 kHz
        import soxr

        y = soxr.resample(np.asarray(y, np.float32), sample_rate, SAMPLE_RATE)
    c = fine_cqt(y)
    return {v: fold(c, VIEWS[v]) for v in views}


def chroma_path(feat_path) -> Path:
    """Where a recording's stored chroma lives: beside its CQT file (``x.cqt.npy`` ->
    ``x.chroma.npz``)."""
    p = Path(feat_path)
    stem = p.name[: -len(".cqt.npy")] if p.name.endswith(".cqt.npy") else p.stem
    return p.with_name(f"{stem}.chroma.npz")


def save_chroma(path, views: dict[str, np.ndarray]) -> None:
    """Write a recording's chroma views (each (T, 12)) as float16, atomically."""
    import io
    import os

    buf = io.BytesIO()
    np.savez(buf, **{v: np.asarray(c, np.float16) for v, c in views.items()})
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def load_chroma(path, views) -> dict[str, np.ndarray] | None:
    """The views (float32 (T, 12) each) stored at ``path``, or None when the file is
    missing or lacks one of them; a damaged file raises ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            if any(v not in z.files for v in views):
                return None
            out = {v: z[v].astype(np.float32) for v in views}
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: damaged chroma file ({e})") from e
    bad = [v for v, c in out.items() if c.ndim != 2 or c.shape[1] != 12 or not np.isfinite(c).all()]
    if bad:
        raise ValueError(f"{path}: damaged chroma file (view {bad[0]} is not finite (T, 12))")
    return out


class ChromaStream:
    """Fine chroma of a recording of any length, fed block by block (bounded memory).

    Each stretch of audio is analysed with :data:`CONTEXT_S` of its neighbours on either
    side, so its frames are those of the whole recording's CQT up to the edge effects of
    librosa's resampling (a few thousandths, far below what the alignment resolves);
    the tuning is estimated once, on the first :data:`TUNING_S` seconds.

    Parameters
    ----------
    views : sequence of str
        Names in :data:`VIEWS`.
    stretch_s : float
        Seconds analysed per CQT call (rounded to whole chroma frames).
    """

    def __init__(self, views=("c3",), sample_rate: int = SAMPLE_RATE, stretch_s: float = 30.0):
        _check_views(views)
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"ChromaStream takes audio at {SAMPLE_RATE} Hz, got {sample_rate}")
        self.views = tuple(views)
        step = HOP_LENGTH * BLOCK  # samples per chroma frame
        self._stretch = max(1, round(stretch_s * SAMPLE_RATE / step)) * step
        self._context = round(CONTEXT_S * SAMPLE_RATE / HOP_LENGTH) * HOP_LENGTH
        self._buf = np.zeros(0, np.float32)  # audio from self._start - context (or 0) on
        self._start = 0  # first sample of the whole recording not analysed yet
        self._n = 0  # samples fed
        self._tuning: float | None = None
        self._parts: dict[str, list[np.ndarray]] = {v: [] for v in self.views}

    def feed(self, y: np.ndarray) -> None:
        """Append mono audio (n,) and analyse every stretch that has its right context."""
        self._buf = np.concatenate([self._buf, np.asarray(y, np.float32).ravel()])
        self._n += len(np.ravel(y))
        if self._tuning is None and self._n >= TUNING_S * SAMPLE_RATE:
            self._tuning = estimate_tuning(self._buf[: int(TUNING_S * SAMPLE_RATE)])
        while self._n - self._start >= self._stretch + self._context and self._tuning is not None:
            self._analyse(self._stretch)

    def _analyse(self, length: int | None) -> None:
        """Chroma of ``length`` samples from ``self._start`` (None: to the end)."""
        left = min(self._context, self._start)
        offset = self._start - left  # whole-recording sample of self._buf[0]
        c = fine_cqt(self._buf, tuning=self._tuning)  # frames from `offset`
        first = left // HOP_LENGTH
        last = None if length is None else first + length // HOP_LENGTH
        for v in self.views:  # folded with the context (CENS smooths across frames), then cut
            view = VIEWS[v]  # a notes view is frame by frame: its stretch alone (whole blocks)
            self._parts[v].append(
                fold(c[first:last], view) if view.notes else blocked(fold_frames(c, view)[first:last])
            )
        if length is not None:
            self._start += length
            keep = self._start - min(self._context, self._start) - offset
            self._buf = self._buf[keep:]

    def finish(self) -> dict[str, np.ndarray]:
        """The views of everything fed: as :func:`audio_chroma` gives for the whole."""
        if self._tuning is None:
            self._tuning = estimate_tuning(self._buf) if self._n else 0.0
        if self._n == 0:
            raise ValueError("no audio was fed")
        self._analyse(None)
        return {v: np.concatenate(p) for v, p in self._parts.items()}


__all__ = [
    "CHROMA_SPEC",
    "CQT_VIEW",
    "SEARCH_VIEW",
    "search_view",
    "view_of",
    "spec_views",
    "fine_views",
    "spec_chroma",
    "ChromaView",
    "VIEWS",
    "FRAMES_PER_SECOND",
    "BINS_PER_OCTAVE",
    "estimate_tuning",
    "fine_cqt",
    "fold",
    "fold_frames",
    "blocked",
    "audio_chroma",
    "ChromaStream",
    "chroma_path",
    "save_chroma",
    "load_chroma",
]
