"""Atomic file writes: a temporary name beside the destination, made durable, then renamed.

Every file stxcat writes (VACs and part files, done markers and plans, model and encoder bundles,
simulated releases) goes through :func:`atomic_path`, so a reader never sees a half-written file
under its final name and a killed process leaves at most a hidden ``.NAME.XXXXXXXX.tmp`` beside it.

A write that fails because the disk (or quota) is full raises :class:`DiskFullError`, one clear
line, with the temporary file removed: fitsio reports a full disk only as a CFITSIO status dump
without an errno, so the free space left is what tells.

The temporary name is unique (several processes or threads may write beside each other) and the
file is created with the permissions a plain ``open`` would give (``0o666`` less the umask), not
the ``0o600`` of :func:`tempfile.mkstemp`: VACs and bundles are meant to be shared.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import secrets
import shutil
from collections.abc import Iterator

from catalog_tool.errors import StxcatError

__all__ = ["OutputExistsError", "DiskFullError", "atomic_path", "atomic_write_bytes", "atomic_write_text",
           "TEMP_SUFFIX"]

#: Temporary files are ``.{name}.{8 hex digits}{TEMP_SUFFIX}`` beside their destination.
TEMP_SUFFIX = ".tmp"
#: With less free space than this, an OSError without an errno while writing is a full disk.
_NEARLY_FULL = 16 << 20


class OutputExistsError(StxcatError, FileExistsError):
    """The output file exists and overwriting was not asked for."""


class DiskFullError(StxcatError):
    """An output could not be written: no space left on its device (or quota exceeded)."""


def _free_bytes(directory: str) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def _size(nbytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes} B"  # pragma: no cover


def _disk_full(exc: OSError, directory: str) -> str | None:
    """The one-line reason when ``exc`` means the disk is full, else None."""
    free = _free_bytes(directory)
    left = f" ({_size(free)} free there)" if free is not None else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ("no space left on device" if exc.errno == errno.ENOSPC else "disk quota exceeded") + left
    if exc.errno is None and free is not None and free < _NEARLY_FULL:
        return "no space left on device" + left  # CFITSIO's write errors carry no errno
    return None


def _new_temp(directory: str, name: str) -> str:
    """Create an empty, uniquely named file in ``directory`` (mode 0o666 less the umask)."""
    while True:
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:  # pragma: no cover - 1 in 4 billion
            continue


def _fsync(path: str) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True, compress: bool = False) -> Iterator[str]:
    """Yield a temporary path beside ``path``; when the block ends without error, rename it to ``path``.

    Parameters
    ----------
    path : path-like
        Destination. Its folder is created if needed.
    overwrite : bool
        Replace an existing ``path``; when False an existing one raises :class:`OutputExistsError`
        (checked before anything is written).
    compress : bool
        gzip the finished file (``path`` should end in ``.gz``). The gzip header records neither
        the time nor the temporary name, so the same content always gives the same bytes.

    On an exception the temporary file is removed and ``path`` is left as it was; a full disk
    raises :class:`DiskFullError`.
    """
    path = os.path.abspath(os.fspath(path))
    if not overwrite and os.path.exists(path):
        raise OutputExistsError(f"{path}: exists (pass overwrite to replace it)")
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    try:
        tmp = _new_temp(directory, name)
    except OSError as exc:
        reason = _disk_full(exc, directory)
        if reason:
            raise DiskFullError(f"cannot write {path}: {reason}; free some space and run again") from None
        raise
    done = tmp
    try:
        yield tmp
        if compress:
            done = _new_temp(directory, name)
            inner = name[:-3] if name.endswith(".gz") else name
            with open(tmp, "rb") as src, open(done, "wb") as raw, \
                    gzip.GzipFile(filename=inner, mode="wb", fileobj=raw, compresslevel=6, mtime=0) as dst:
                shutil.copyfileobj(src, dst)
            os.remove(tmp)
        _fsync(done)  # durable before it becomes visible under the real name
        os.replace(done, path)
    except OSError as exc:
        reason = _disk_full(exc, directory)  # asked before the temporary file frees its space
        if reason:
            raise DiskFullError(f"cannot write {path}: {reason}; free some space and run again") from None
        raise
    finally:
        for p in {tmp, done}:
            with contextlib.suppress(FileNotFoundError):
                os.remove(p)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`)."""
    atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)
