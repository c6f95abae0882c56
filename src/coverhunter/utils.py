"""Small helpers shared by every stage: atomic writes, file locks, hashing, device choice."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"


class DamagedFileError(ValueError):
    """A data file that exists but cannot be read (truncated, overwritten with garbage);
    the message names the file and how to repair it."""


def _tmp_name(path: Path) -> Path:
    """``.NAME.PID.RANDOM.tmp`` beside ``path``: the pid lets a later run tell a leftover
    of a killed process from a file another live process is writing."""
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``.

    The temporary file is created with mode 0666 minus the umask, like any file
    ``open()`` creates, so outputs are not private to their owner (``mkstemp`` gives 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError as e:  # pragma: no cover - other platforms
        return e.errno != errno.ESRCH
    return True


def remove_stale_tmp(folder: Path) -> int:
    """Delete leftover temporary files of :func:`atomic_write` whose process is gone (a kill).

    Returns the number of files removed. Files of live processes are left alone.
    """
    n = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    for p in folder.glob(f".*{TMP_SUFFIX}"):
        parts = p.name[: -len(TMP_SUFFIX)].rsplit(".", 2)
        if len(parts) != 3 or not parts[1].isdigit() or _pid_alive(int(parts[1])):
            continue
        try:
            p.unlink()
            n += 1
        except OSError:
            pass
    if n:
        log.info("%s: removed %d leftover temporary file(s) of an interrupted run", folder, n)
    return n


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive ``fcntl`` lock on ``path`` (created if needed) for the ``with`` block.

    The lock is released when the block ends or the process dies (even by SIGKILL), so
    a killed writer never leaves it held. Other processes wait for it.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda p: p.write_bytes(data))


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def atomic_torch_save(obj: object, path: Path) -> None:
    import torch

    atomic_write(path, lambda p: torch.save(obj, p))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """Content hash of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_device(device: str | None = "auto") -> torch.device:  # noqa: F821
    """``"auto"`` picks cuda, then mps, then cpu; anything else is passed to torch."""
    import torch

    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def resolve_path(value: str, base: Path) -> Path:
    """A path from a list file: absolute, else relative to the list's folder, else to CWD."""
    p = Path(value)
    if p.is_absolute():
        return p
    cand = base / p
    if cand.exists() or not p.exists():
        return cand
    return p
