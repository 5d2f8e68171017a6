"""Opening FITS files with errors that name the file and the problem.

fitsio raises a bare ``OSError`` with CFITSIO's multi-line status dump for every kind of failure;
these helpers turn that into one of the typed errors of :mod:`catalog_tool.errors`.
"""

from __future__ import annotations

import contextlib
import gzip
import os
from collections.abc import Iterator

import fitsio

from catalog_tool.errors import (
    FileAccessError,
    MissingHDUError,
    NotFitsError,
    TruncatedFileError,
)

__all__ = ["open_fits", "get_hdu", "has_hdu", "check_readable", "is_gzip"]

_FITS_MAGIC = b"SIMPLE  ="


def is_gzip(path: str | os.PathLike) -> bool:
    """True when the file starts with the gzip magic number."""
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def check_readable(path: str | os.PathLike) -> None:
    """Raise :class:`FileAccessError` or :class:`NotFitsError` unless ``path`` looks like FITS."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileAccessError(path, "no such file")
    if os.path.isdir(path):
        raise FileAccessError(path, "is a directory, not a file")
    try:
        if is_gzip(path):
            with gzip.open(path, "rb") as fh:
                head = fh.read(len(_FITS_MAGIC))
        else:
            with open(path, "rb") as fh:
                head = fh.read(len(_FITS_MAGIC))
    except PermissionError:
        raise FileAccessError(path, "permission denied") from None
    except (OSError, EOFError) as exc:
        raise NotFitsError(path, f"cannot be read as gzip ({exc})") from None
    if head != _FITS_MAGIC:
        raise NotFitsError(path, "not a FITS file (no SIMPLE card at the start)")


def _check_complete(fits: fitsio.FITS, path: str) -> None:
    """Raise :class:`TruncatedFileError` when the last HDU's data end past the end of the file."""
    if is_gzip(path):
        return  # compressed size says nothing; a short gzip stream fails on read instead
    size = os.path.getsize(path)
    last = fits[len(fits) - 1]
    end = last.get_offsets()["data_end"]
    if end > size:
        raise TruncatedFileError(
            path, f"truncated: HDU {last.get_extnum()} ({last.get_extname() or 'unnamed'}) "
                  f"needs {end} bytes, the file has {size}")


@contextlib.contextmanager
def open_fits(path: str | os.PathLike) -> Iterator[fitsio.FITS]:
    """Open ``path`` read-only with fitsio, checking it is a complete FITS file.

    Raises
    ------
    FileAccessError, NotFitsError, TruncatedFileError
    """
    path = os.fspath(path)
    check_readable(path)
    try:
        fits = fitsio.FITS(path, "r")
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        if "end of file" in str(exc) or "past end" in str(exc):
            raise TruncatedFileError(path, f"truncated ({first})") from None
        raise NotFitsError(path, f"cannot be opened as FITS ({first})") from None
    try:
        _check_complete(fits, path)
        yield fits
    finally:
        fits.close()


def has_hdu(fits: fitsio.FITS, name: str) -> bool:
    """True when the file has an HDU with EXTNAME ``name``."""
    return name in fits


def get_hdu(fits: fitsio.FITS, name: str, path: str | os.PathLike):
    """The HDU with EXTNAME ``name``; :class:`MissingHDUError` naming the file otherwise."""
    if name not in fits:
        raise MissingHDUError(path, f"required HDU {name!r} is missing")
    return fits[name]


def read_error(path: str | os.PathLike, exc: OSError, what: str) -> TruncatedFileError | NotFitsError:
    """Map an ``OSError`` raised by fitsio while reading ``what`` to a typed error."""
    text = str(exc)
    first = text.strip().splitlines()[0] if text.strip() else repr(exc)
    if "end of file" in text or "past end" in text or "EOF" in text:
        return TruncatedFileError(path, f"truncated while reading {what} ({first})")
    return NotFitsError(path, f"cannot read {what} ({first})")
