"""Atomic file writes: a temporary name beside the destination, made durable, then renamed.

Every file stxcat writes (VACs and part files, done markers and plans, model and encoder bundles,
simulated releases) goes through :func:`atomic_path`, so a reader never sees a half-written file
under its final name and a killed process leaves at most a hidden ``.NAME.XXXXXXXX.tmp`` beside it.

The temporary name is unique (several processes or threads may write beside each other) and the
file is created with the permissions a plain ``open`` would give (``0o666`` less the umask), not
the ``0o600`` of :func:`tempfile.mkstemp`: VACs and bundles are meant to be shared.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import secrets
import shutil
from collections.abc import Iterator

from catalog_tool.errors import StxcatError

__all__ = ["OutputExistsError", "atomic_path", "atomic_write_bytes", "atomic_write_text"]


class OutputExistsError(StxcatError, FileExistsError):
    """The output file exists and overwriting was not asked for."""


def _new_temp(directory: str, name: str) -> str:
    """Create an empty, uniquely named file in ``directory`` (mode 0o666 less the umask)."""
    while True:
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
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

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = os.path.abspath(os.fspath(path))
    if not overwrite and os.path.exists(path):
        raise OutputExistsError(f"{path}: exists (pass overwrite to replace it)")
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    tmp = _new_temp(directory, name)
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
