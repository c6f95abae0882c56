"""Audio loading: any format, rate and channel count -> float32 mono, whole or in blocks.

Two decoders, tried in this order:

- soundfile (libsndfile): wav, flac, ogg/vorbis/opus, mp3, aiff; fast, exact for PCM;
- PyAV (FFmpeg inside the ``av`` wheel): everything else a user has, m4a/AAC, Opus in
  WebM, MP4/MKA audio, WMA, ... (``pip install coverhunter[formats]``).

Channels are averaged and the rate converted with soxr in both cases, so one file read by
either decoder gives the same samples up to the codec. :func:`iter_audio_blocks` reads a
recording block by block (a 2-hour concert never sits in memory as a whole).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz, the rate every feature is computed at
SOUNDFILE_EXTS = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif"}
PYAV_EXTS = {
    ".m4a",
    ".aac",
    ".mp4",
    ".m4b",
    ".webm",
    ".weba",
    ".mka",
    ".mkv",
    ".wma",
    ".ac3",
    ".amr",
    ".caf",
    ".alac",
    ".ape",
    ".wv",
    ".mp2",
    ".oga",
    ".spx",
    ".au",
}
AUDIO_EXTS = SOUNDFILE_EXTS | PYAV_EXTS  # what a folder scan picks up
BLOCK_S = 30.0  # seconds per block when reading in blocks


class AudioError(ValueError):
    """A recording could not be read or is unusable; the message names the file."""


# ---------------------------------------------------------------------------
# checks


def check_wav_truncation(path: str | Path) -> str | None:
    """A message when a RIFF/WAVE file's header announces more audio than the file holds.

    libsndfile (and so soundfile) silently reads what is there; a truncated copy (an
    interrupted download or transfer) then looks like a shorter recording. Returns
    ``None`` for complete files, other formats and streamed WAVs (size 0 or 0xFFFFFFFF).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            byte_rate = 0
            while True:
                hdr = f.read(8)
                if len(hdr) < 8:
                    return None
                cid, n = hdr[:4], struct.unpack("<I", hdr[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(min(n, 16))
                    if len(fmt) >= 12:
                        byte_rate = struct.unpack("<I", fmt[8:12])[0]
                    f.seek(n - len(fmt) + (n & 1), 1)
                    continue
                if cid != b"data":
                    f.seek(n + (n & 1), 1)
                    continue
                held = size - f.tell()
                if n in (0, 0xFFFFFFFF) or n <= held:
                    return None
                if byte_rate:
                    return (
                        f"{path}: truncated WAV: the header announces {n / byte_rate:.2f} s of "
                        f"audio, the file holds {held / byte_rate:.2f} s"
                    )
                return (
                    f"{path}: truncated WAV: the header announces {n} bytes of audio, the file holds {held}"
                )
    except OSError:
        return None


def _warn_truncated(path: Path) -> None:
    msg = check_wav_truncation(path)
    if msg:
        log.warning("%s", msg)


def _check_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file, no audio in it")
    _warn_truncated(path)
    return path


# ---------------------------------------------------------------------------
# decoders: native-rate blocks of shape (n, channels), float32


def _soundfile_blocks(path: Path, block_frames: int) -> Iterator[tuple[np.ndarray, int]]:
    with sf.SoundFile(str(path)) as f:
        sr = f.samplerate
        while True:
            y = f.read(block_frames, dtype="float32", always_2d=True)
            if len(y) == 0:
                return
            yield y, sr


def _av():
    try:
        import av
    except ImportError:
        raise AudioError("this format needs PyAV: pip install 'coverhunter[formats]' (or av)") from None
    return av


def _pyav_blocks(path: Path, block_frames: int) -> Iterator[tuple[np.ndarray, int]]:
    """Decode with FFmpeg (PyAV): planar float frames gathered into blocks."""
    av = _av()
    with av.open(str(path), metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise AudioError(f"{path}: no audio stream in this file")
        stream = container.streams.audio[0]
        to_float = av.AudioResampler(format="fltp")  # keeps layout and rate
        pending, n_pending, sr = [], 0, None
        for frame in container.decode(stream):
            for f in to_float.resample(frame):
                if sr is not None and f.sample_rate != sr:
                    raise AudioError(f"{path}: sample rate changes inside the stream")
                sr = f.sample_rate
                pending.append(f.to_ndarray().T)  # (n, channels)
                n_pending += pending[-1].shape[0]
                if n_pending >= block_frames:
                    yield np.concatenate(pending).astype(np.float32, copy=False), sr
                    pending, n_pending = [], 0
        for f in to_float.resample(None):
            pending.append(f.to_ndarray().T)
        if pending:
            yield np.concatenate(pending).astype(np.float32, copy=False), sr


def _native_blocks(path: Path, block_s: float) -> Iterator[tuple[np.ndarray, int]]:
    """soundfile when it opens the file, else PyAV; errors name the file."""
    try:
        with sf.SoundFile(str(path)) as f:
            block_frames = max(1, int(block_s * f.samplerate))
        blocks = _soundfile_blocks(path, block_frames)
        decoder = "soundfile"
    except Exception:  # not a libsndfile format: FFmpeg's turn
        blocks = _pyav_blocks(path, max(1, int(block_s * 48000)))
        decoder = "FFmpeg"
    try:
        yield from blocks
    except AudioError:
        raise
    except Exception as e:  # LibsndfileError, av.FFmpegError, RuntimeError, ...
        raise AudioError(f"{path}: cannot decode audio ({decoder}: {e})") from e


def _mono(y: np.ndarray) -> np.ndarray:
    return y.mean(axis=1) if y.shape[1] > 1 else y[:, 0]


# ---------------------------------------------------------------------------
# public API


def iter_audio_blocks(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    block_s: float = BLOCK_S,
    max_seconds: float | None = None,
) -> Iterator[np.ndarray]:
    """Read a recording block by block as float32 mono at ``sample_rate``.

    Parameters
    ----------
    path : str or Path
        Any format soundfile or PyAV (FFmpeg) decodes.
    sample_rate : int
        Output rate in Hz; other rates go through a streaming soxr resampler.
    block_s : float
        About this many seconds per block (the last one is shorter).
    max_seconds : float, optional
        Raise :class:`AudioError` as soon as more audio than this has been decoded.

    Yields
    ------
    np.ndarray, shape (n,), float32
        Consecutive blocks; concatenated, they are the whole recording.

    Raises
    ------
    AudioError
        Missing, empty, undecodable or too long (the message names the file and the problem).
    """
    path = _check_path(path)
    resampler, sr_in, total = None, None, 0
    for y, sr in _native_blocks(path, block_s):
        if sr_in is None:
            sr_in = sr
            if sr != sample_rate:
                resampler = soxr.ResampleStream(sr, sample_rate, 1, dtype="float32", quality="HQ")
        total += len(y)
        if max_seconds is not None and total / sr_in > max_seconds:
            raise AudioError(f"{path}: longer than the limit of {max_seconds:g} s")
        y = np.ascontiguousarray(_mono(y), dtype=np.float32)
        if resampler is not None:
            y = resampler.resample_chunk(y)
        if not np.all(np.isfinite(y)):
            raise AudioError(f"{path}: audio holds NaN or infinite samples")
        if len(y):
            yield y
    if total == 0:
        raise AudioError(f"{path}: audio file holds no samples")
    if resampler is not None:
        tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
        if len(tail):
            yield tail.astype(np.float32, copy=False)


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read a whole recording as float32 mono at ``sample_rate``.

    Parameters
    ----------
    path : str or Path
        Any format libsndfile reads (wav, flac, ogg/vorbis/opus, mp3), else any format
        FFmpeg reads through PyAV (m4a/AAC, Opus/WebM, MP4, ...).
    sample_rate : int
        Target rate in Hz; other rates are resampled with soxr (high quality).

    Returns
    -------
    np.ndarray, shape (n_samples,), float32
        Channels are averaged. 16-bit PCM at the target rate is returned exactly as
        ``int16 / 32768``, which is what the original extractor saw.

    Raises
    ------
    AudioError
        Missing, unreadable or empty file. A truncated WAV is read with a warning.
    """
    path = _check_path(path)
    try:
        y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types (LibsndfileError, RuntimeError)
        try:
            parts = list(_pyav_blocks(path, 1 << 20))
        except AudioError:
            raise
        except Exception as e2:
            raise AudioError(f"{path}: cannot decode audio ({e}; FFmpeg: {e2})") from e2
        if not parts:
            raise AudioError(f"{path}: audio file holds no samples") from e
        y, sr = np.concatenate([p for p, _ in parts]), parts[0][1]
    if y.shape[0] == 0:
        raise AudioError(f"{path}: audio file holds no samples")
    y = _mono(y)
    if sr != sample_rate:
        y = soxr.resample(y, sr, sample_rate, quality="HQ").astype(np.float32)
    if not np.all(np.isfinite(y)):
        raise AudioError(f"{path}: audio holds NaN or infinite samples")
    return np.ascontiguousarray(y, dtype=np.float32)


def peak_normalize(y: np.ndarray) -> np.ndarray:
    """The original's normalisation, ``y / max(0.001, max|y|) * 0.999``, kept in float32."""
    y = np.asarray(y, dtype=np.float32)
    peak = np.float32(max(np.float32(0.001), np.abs(y).max(initial=0.0)))
    return (y / peak * np.float32(0.999)).astype(np.float32)


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the file header (no decoding); PyAV for non-libsndfile formats."""
    try:
        info = sf.info(str(path))
        return info.frames / info.samplerate
    except Exception as e:
        first = e
    try:
        av = _av()
        with av.open(str(path), metadata_errors="ignore") as c:
            if not c.streams.audio:
                raise AudioError(f"{path}: no audio stream in this file")
            s = c.streams.audio[0]
            if s.duration is not None and s.time_base is not None:
                return float(s.duration * s.time_base)
            if c.duration is not None:
                return c.duration / 1_000_000  # av.time_base
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(f"{path}: cannot read audio header ({first}; FFmpeg: {e})") from e
    raise AudioError(f"{path}: the header does not give a duration")
