"""The survey readers stxcat knows, in one registry: all that discovery, the pipeline and the
training loaders ask of a survey.

A :class:`Reader` bundles a survey module's answers: does an open file belong to it (``sniff``),
its index entry from the headers (``scan``), its spectra as batches (``read``), and which rows of
a batch are stars (``select_stars``). :data:`READERS` lists them in the order discovery asks them
and the readers read. Everything else goes through here:

* :func:`catalog_tool.io.release.discover` recognises files with :func:`claim` / :func:`catch_all`;
* :func:`read_groups` is the one loop that turns index entries into batches (the pipeline's
  partitions, :func:`catalog_tool.train.data.load_labelled`, :func:`catalog_tool.train.encoder.load_spectra`);
* :func:`catalog_tool.select.is_star` applies the batch's reader's ``select_stars``.

Adding a survey: a module ``io/<survey>.py`` with those four functions and one entry here
(docs/data-formats.md, "Adding a reader").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from catalog_tool.batch import SpectraBatch
from catalog_tool.io import desi, lamost
from catalog_tool.io.entry import FileEntry

__all__ = ["Reader", "READERS", "reader", "id_space", "claim", "catch_all", "read_groups", "group_entries"]


@dataclass(frozen=True)
class Reader:
    """One survey's file format.

    Attributes
    ----------
    kind : str
        The :attr:`FileEntry.kind <catalog_tool.io.entry.FileEntry.kind>` of its files.
    scan : callable(path) -> FileEntry
        Index entry from the headers; raises a typed :class:`~catalog_tool.errors.InputFileError`
        (naming the problem) for a file it cannot use.
    read : callable(paths, *, wave_range) -> (list of SpectraBatch, list of (path, reason))
        The spectra of ``paths``; an unreadable file is a ``(path, reason)``, never an exception.
        ``wave_range`` is the observed range (A) preprocessing will use, None for everything.
    select_stars : callable(meta) -> ndarray of bool
        Rows of a batch this reader made that the survey classifies as stars (its own columns:
        redrock SPECTYPE, LAMOST CLASS, ...); sky and unassigned fibres are
        :func:`catalog_tool.select.is_target`'s business.
    sniff : callable(open fitsio.FITS) -> (what, reason) or None, optional
        ``("read", None)``, ``("companion", None)`` (a file read with another one: counted, not
        listed), ``("skip", reason)`` or None when the file is not this survey's. A reader without
        it is the catch-all: it gets every file no other reader claims that is not a plain table,
        and its ``scan`` says what the file lacks.
    one_file_per_batch : bool
        True: each file is read (and fails) alone, a batch per file (DESI coadds hold thousands
        of spectra). False: all of a partition's files make one batch (LAMOST: one spectrum each).
    scan_open : callable(open fitsio.FITS, path) -> FileEntry, optional
        ``scan`` of a file discovery already has open (it opens each file once: for a small
        gzip file the opening, which decompresses it, is most of the cost). None: ``scan(path)``.
    own_id_surveys : tuple of str
        The ``SURVEY`` values of this reader's rows whose ``TARGETID`` is not a DESI TARGETID
        (LAMOST: an OBSID). The VAC's ``PRIMARY`` groups such rows only among themselves
        (:func:`id_space`). Empty: the rows share the DESI TARGETID space.
    """

    kind: str
    scan: Callable[[str], FileEntry]
    read: Callable[..., tuple[list[SpectraBatch], list[tuple[str, str]]]]
    select_stars: Callable[[Mapping], np.ndarray]
    sniff: Callable | None = None
    one_file_per_batch: bool = True
    scan_open: Callable | None = None
    own_id_surveys: tuple[str, ...] = ()


#: The readers, in the order discovery asks them; the catch-all (no ``sniff``) last.
READERS = (
    Reader(kind="desi", scan=desi.scan_coadd, read=desi.read_files, select_stars=desi.select_stars,
           sniff=desi.sniff, one_file_per_batch=True),
    Reader(kind="lamost", scan=lamost.scan_lamost, read=lamost.read_files, select_stars=lamost.select_stars,
           sniff=None, one_file_per_batch=False, scan_open=lamost.scan_lamost_open,
           own_id_surveys=("lamost",)),
)


def reader(kind: str) -> Reader:
    """The reader of files of ``kind``; ValueError for a kind no reader has."""
    for r in READERS:
        if r.kind == kind:
            return r
    raise ValueError(f"no reader for files of kind {kind!r} (known: {', '.join(r.kind for r in READERS)})")


def id_space(survey) -> np.ndarray:
    """The TARGETID space of each row from its ``SURVEY`` (str or bytes, blanks stripped): 0 for the
    DESI TARGETID space, ``i + 1`` for rows of the ``i``-th reader's :attr:`Reader.own_id_surveys`.

    Returns
    -------
    ndarray of int8, shape (N,)
    """
    survey = np.asarray(survey)
    out = np.zeros(survey.shape, dtype=np.int8)
    if survey.size == 0:
        return out
    stripped = np.char.strip(survey)
    for i, r in enumerate(READERS):
        for name in r.own_id_surveys:
            out[stripped == (name.encode() if survey.dtype.kind == "S" else name)] = i + 1
    return out


def claim(fits) -> tuple[Reader, str, str | None] | None:
    """The first reader whose ``sniff`` claims the open file, with its verdict; None when none does."""
    for r in READERS:
        if r.sniff is not None:
            verdict = r.sniff(fits)
            if verdict is not None:
                return (r, *verdict)
    return None


def catch_all() -> Reader | None:
    """The reader that gets the files no ``sniff`` claims (the first without one), if any."""
    return next((r for r in READERS if r.sniff is None), None)


def _kind_path(entry) -> tuple[str, str]:
    if isinstance(entry, Mapping):  # a plan's JSON entry
        return entry["kind"], entry["path"]
    return entry.kind, entry.path


def read_groups(entries: Iterable, *, wave_range: tuple[float, float] | None = None
                ) -> Iterator[tuple[Reader, list[SpectraBatch], list[tuple[str, str]]]]:
    """Read index entries group by group: ``(reader, batches, failures)`` per group, lazily.

    A group is one file for readers with ``one_file_per_batch``, else all of that reader's files.
    Groups come reader by reader in :data:`READERS` order, files in the order given within each;
    so a caller holds one group at a time (the pipeline streams a partition this way).

    Parameters
    ----------
    entries : iterable of FileEntry, or of dicts with ``kind`` and ``path`` (a plan's files)
    wave_range : (float, float), optional
        Observed range (A) preprocessing will use
        (:func:`catalog_tool.preprocess.chain.needed_observed_range`); readers read only what
        covers it (DESI: the arms). Everything when None.

    Raises
    ------
    ValueError
        An entry whose kind no reader has (before anything is read).
    """
    for r, group in group_entries(entries):
        batches, failures = r.read(group, wave_range=wave_range)
        yield r, batches, failures


def group_entries(entries: Iterable) -> list[tuple[Reader, list[str]]]:
    """The reading groups of :func:`read_groups`, without reading: ``(reader, paths)`` per group.

    Raises ValueError for an entry whose kind no reader has.
    """
    paths: dict[str, list[str]] = {}
    for e in entries:
        kind, path = _kind_path(e)
        reader(kind)  # unknown kinds fail here, before any reading
        paths.setdefault(kind, []).append(path)
    groups = []
    for r in READERS:
        mine = paths.get(r.kind, [])
        groups += [(r, [p]) for p in mine] if r.one_file_per_batch else ([(r, mine)] if mine else [])
    return groups
