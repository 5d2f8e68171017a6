"""Typed exceptions for domain errors.

Every error stxcat raises on purpose derives from :class:`StxcatError`. The CLI turns any of them
into one line on stderr and a non-zero exit; library users can catch the precise subclass.
Errors about an input file always name the file and the problem in their message.
"""

from __future__ import annotations

import os

__all__ = [
    "StxcatError",
    "ConfigError",
    "InputFileError",
    "FileAccessError",
    "NotFitsError",
    "TruncatedFileError",
    "MissingHDUError",
    "EmptyFileError",
    "UnknownLayoutError",
    "BundleError",
    "RunStateError",
]


class StxcatError(Exception):
    """Base class of every error stxcat raises on purpose."""


class ConfigError(StxcatError):
    """Invalid settings or command-line arguments (all problems listed in one message)."""


class InputFileError(StxcatError):
    """An input file could not be used. ``path`` and ``problem`` are kept as attributes."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        # Dask's process and distributed schedulers pickle a worker's exception back to the client;
        # the default reduction would call __init__ with the one formatted message and fail.
        return type(self), (self.path, self.problem)


class FileAccessError(InputFileError):
    """The file does not exist or cannot be read (permissions, a directory, ...)."""


class NotFitsError(InputFileError):
    """The file is not a FITS file."""


class TruncatedFileError(InputFileError):
    """The file is a FITS file cut short: its data end before the headers say they should."""


class MissingHDUError(InputFileError):
    """A required HDU (extension) is not in the file."""


class EmptyFileError(InputFileError):
    """The file holds no spectra (e.g. an empty FIBERMAP)."""


class UnknownLayoutError(InputFileError):
    """The file's structure matches none of the layouts stxcat knows."""


class BundleError(StxcatError):
    """A model bundle is malformed, tampered with, or does not match what is asked of it."""


class RunStateError(StxcatError):
    """A work directory does not match the run (changed plan or model, or not empty)."""
