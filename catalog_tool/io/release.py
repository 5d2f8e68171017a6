"""Release discovery: an index of input files by HEALPix pixel, and its partitions.

:func:`discover` turns inputs (a DESI release tree, a folder of LAMOST files, single files) into a
:class:`ReleaseIndex` of :class:`FileEntry` sorted by HEALPix pixel (nside 64, NESTED), reading
headers only. Files are recognised by their structure, never their names, by the readers of
:mod:`catalog_tool.io.readers` asked in turn:

* a DESI coadd (``FIBERMAP`` plus ``B_FLUX``/``R_FLUX``/``Z_FLUX``, one FIBERMAP row per target);
* a DESI companion (redrock/zbest, emline, ... : a FIBERMAP or REDSHIFTS table without spectra):
  ignored silently and only counted, since its contents are joined when the coadd is read;
* an uncoadded DESI ``spectra-*`` file (one FIBERMAP row per exposure): skipped, with the reason;
* anything else: handed to the LAMOST scanner, which recognises the three LRS layouts or raises.

A file that cannot be used is listed in ``skipped`` with the reason; discovery goes on.

:func:`partition` groups consecutive pixels into partitions of about ``target_spectra`` spectra.
A pixel is never split across partitions, so a partition is a set of whole pixels (what the
pipeline's done markers and resume rely on); a pixel, or a single file, larger than the target
is a partition of its own.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from catalog_tool.config import available_cpus
from catalog_tool.errors import ConfigError, InputFileError
from catalog_tool.io import readers
from catalog_tool.io.entry import (HEALPIX_NEST, HEALPIX_NSIDE, FileEntry, pixel_of_targets, radec_to_healpix,
                                   valid_radec)
from catalog_tool.io.fitsutil import open_fits

__all__ = [
    "HEALPIX_NSIDE",
    "HEALPIX_NEST",
    "DEFAULT_PARTITION_SPECTRA",
    "FITS_SUFFIXES",
    "FileEntry",
    "ReleaseIndex",
    "Partition",
    "valid_radec",
    "radec_to_healpix",
    "pixel_of_targets",
    "discover",
    "scan_workers",
    "partition",
    "plan_to_dict",
    "format_plan",
]

#: Default target number of spectra per partition.
DEFAULT_PARTITION_SPECTRA = 20000
#: File names considered when walking a folder (files named explicitly are always tried).
FITS_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fit.gz", ".fts")


@dataclass
class ReleaseIndex:
    """What :func:`discover` found.

    Attributes
    ----------
    entries : list of FileEntry
        Usable files sorted by (healpix, path).
    skipped : list of (str, str)
        (path, reason) of every file that could not be used, in discovery order.
    companions : int
        DESI companion files (redrock, ...) ignored because they are read with their coadd.
    tables : list of str
        Plain FITS tables found among the spectra (catalogues, truth tables): not spectra, not
        read, listed so that nothing is passed over silently.
    notes : list of str
        Decisions worth telling the user (e.g. a ``tiles/`` tree left out beside ``healpix/``).
    """

    entries: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    companions: int = 0
    tables: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def nspec(self) -> int:
        return sum(e.nspec for e in self.entries)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries)

    @property
    def pixels(self) -> list[int]:
        return sorted({e.healpix for e in self.entries})


@dataclass(frozen=True)
class Partition:
    """A group of whole HEALPix pixels: the unit of work of the pipeline.

    Attributes
    ----------
    index : int
        Position in the plan, from 0.
    pixels : tuple of int
        The pixels, ascending (NESTED order keeps them close on the sky).
    files : tuple of FileEntry
    nspec : int
        Spectra in all the files.
    """

    index: int
    pixels: tuple
    files: tuple
    nspec: int

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.files)


# ---------------------------------------------------------------------------------------------
# discovery
# ---------------------------------------------------------------------------------------------
def _is_fits_name(name: str) -> bool:
    return name.lower().endswith(FITS_SUFFIXES) and not name.startswith(".")


def _walk(root: str, notes: list[str]) -> list[str]:
    """FITS files under ``root``, sorted, hidden folders left out.

    A DESI release root holds ``healpix/`` and, beside it, ``tiles/`` coadds of the same spectra
    (reading both would count every spectrum twice) and catalogues: only ``healpix/`` is walked.
    """
    top = root
    if os.path.isdir(os.path.join(root, "healpix")):
        # a release root: its spectra live under healpix/; beside it are tiles/ (the same spectra
        # again), catalogues, truth tables and the like, none of them coadds
        top = os.path.join(root, "healpix")
        extra = sorted(n + ("/" if os.path.isdir(os.path.join(root, n)) else "")
                       for n in os.listdir(root) if n != "healpix" and not n.startswith("."))
        if extra:
            notes.append(f"{root}: release root, walked healpix/ only (not {', '.join(extra[:4])}"
                         f"{', ...' if len(extra) > 4 else ''}; give a folder itself to read it)")
    found = []
    for folder, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(folder, f) for f in sorted(files) if _is_fits_name(f)]
    return found


def _is_plain_table(fits) -> bool:
    """True for a catalogue-like file: empty primary, table HDUs, none of them a LAMOST COADD."""
    if fits[0].get_info().get("ndims", 0) or "COADD" in fits or len(fits) < 2:
        return False
    return all(h.get_exttype() in ("BINARY_TBL", "ASCII_TBL") for h in list(fits)[1:])


def _scan(path: str):
    """("entry", FileEntry) | ("companion" | "table", None) | ("skip", reason) for one file.

    The readers that can tell their files by structure are asked first
    (:func:`catalog_tool.io.readers.claim`); a file none of them claims is a plain table, or goes
    to the catch-all reader (LAMOST), whose scanner says what the file lacks.
    """
    try:
        with open_fits(path) as fits:  # opened once for every question below
            claimed = readers.claim(fits)
            if claimed is None:
                if _is_plain_table(fits):
                    return "table", None
                fallback = readers.catch_all()
                if fallback is None:
                    return "skip", "not a file any stxcat reader recognises"
                claimed = (fallback, "read", None)
            reader, what, reason = claimed
            if what == "read" and reader.scan_open is not None:
                return "entry", reader.scan_open(fits, path)
        if what == "read":
            return "entry", reader.scan(path)
        return what, reason
    except InputFileError as exc:
        return "skip", exc.problem
    except OSError as exc:  # e.g. the file vanished or became unreadable between walk and scan
        return "skip", f"cannot be read ({exc.strerror or exc})"
    except (ValueError, TypeError, IndexError, KeyError) as exc:  # a damage no check foresaw
        return "skip", f"cannot be scanned ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"


#: Below this many files discovery scans in this process: starting scan processes costs ~1 s.
PARALLEL_SCAN_MIN_FILES = 2000
#: At most this many scan processes by default (the scan is bound by opening files).
MAX_SCAN_WORKERS = 8


def scan_workers(nfiles: int, workers: int | None = None) -> int:
    """Processes :func:`discover` scans ``nfiles`` files with: ``workers`` when given (>= 1), else
    1 below :data:`PARALLEL_SCAN_MIN_FILES` files and the CPUs (at most :data:`MAX_SCAN_WORKERS`)
    from there."""
    if workers is not None:
        if int(workers) < 1:
            raise ConfigError(f"scan workers must be >= 1, not {workers}")
        return int(workers)
    if nfiles < PARALLEL_SCAN_MIN_FILES:
        return 1
    return max(1, min(available_cpus(), MAX_SCAN_WORKERS))


def _scan_all(paths: list[str], workers: int, notes: list[str]) -> list:
    """``_scan`` of every path, in order; in ``workers`` spawned processes when more than one
    (fitsio holds the GIL while it opens a file, so threads would not help)."""
    import concurrent.futures
    import multiprocessing

    if workers <= 1 or len(paths) < 2 or multiprocessing.current_process().daemon:
        # (a daemonic process, e.g. a worker of a process pool, may not start processes)
        return [_scan(p) for p in paths]

    ctx = multiprocessing.get_context("spawn")  # no fork: safe beside threads (dask, torch)
    chunk = max(1, min(512, len(paths) // (workers * 8)))
    try:
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
            return list(ex.map(_scan, paths, chunksize=chunk))
    except (concurrent.futures.process.BrokenProcessPool, OSError) as exc:
        # a scan process died (e.g. killed for memory) or none could start: scan here instead
        notes.append(f"scanning in {workers} processes failed ({type(exc).__name__}: "
                     f"{' '.join(str(exc).split())[:120]}); scanned in one")
        return [_scan(p) for p in paths]


def discover(inputs: Iterable[str | os.PathLike], *, workers: int | None = None) -> ReleaseIndex:
    """Index the spectra files in ``inputs`` from their headers.

    Parameters
    ----------
    inputs : iterable of str or path-like
        DESI release trees or any folders (walked recursively for ``*.fits``, ``*.fits.gz``,
        ...), and single files (tried whatever their name). A path given twice, or reached twice
        (e.g. through a folder and by name), is indexed once.
    workers : int, optional
        Processes that open the files (:func:`scan_workers`: by default one below 2,000 files,
        else the CPUs up to 8). The index is the same for any number. Readers are those of
        :data:`catalog_tool.io.readers.READERS` as imported by a fresh process: one registered at
        run time (not in the module) is seen with ``workers=1`` only.

    Returns
    -------
    ReleaseIndex
        Entries sorted by (healpix, path); unusable files in ``skipped`` with the reason, missing
        inputs included.
    """
    index = ReleaseIndex()
    candidates: list[str] = []
    for raw in inputs:
        path = os.path.abspath(os.fspath(raw))
        if os.path.isdir(path):
            try:
                candidates += _walk(path, index.notes)
            except OSError as exc:
                index.skipped.append((path, f"folder cannot be read ({exc.strerror or exc})"))
        elif os.path.lexists(path):
            candidates.append(path)
        else:
            index.skipped.append((path, "no such file or directory"))

    seen: set[str] = set()
    unique = []
    for path in candidates:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    for path, (what, value) in zip(unique, _scan_all(unique, scan_workers(len(unique), workers), index.notes)):
        if what == "entry":
            index.entries.append(value)
        elif what == "companion":
            index.companions += 1
        elif what == "table":
            index.tables.append(path)
        else:
            index.skipped.append((path, value))
    index.entries.sort(key=lambda e: (e.healpix, e.path))
    return index


# ---------------------------------------------------------------------------------------------
# partitions
# ---------------------------------------------------------------------------------------------
def partition(entries: Sequence[FileEntry], *, target_spectra: int) -> list[Partition]:
    """Group consecutive pixels into partitions of about ``target_spectra`` spectra.

    Pixels are taken in ascending NESTED order (neighbours on the sky stay together). A pixel is
    never split. The next pixel joins the current partition unless that would overshoot the target
    by more than stopping now falls short of it, so partitions come out as close to the target as
    whole pixels allow; a pixel (or a single file) larger than the target is a partition alone.

    Parameters
    ----------
    entries : sequence of FileEntry
        Usually ``discover(...).entries``; sorted here by (healpix, path) in any case.
    target_spectra : int
        Wanted spectra per partition, >= 1.

    Raises
    ------
    ConfigError
        ``target_spectra`` < 1.
    """
    if int(target_spectra) < 1:
        raise ConfigError(f"partition size must be at least 1 spectrum, not {target_spectra}")
    ordered = sorted(entries, key=lambda e: (e.healpix, e.path))
    parts: list[Partition] = []
    pixels: list[int] = []
    files: list[FileEntry] = []
    count = 0

    def flush():
        nonlocal pixels, files, count
        if files:
            parts.append(Partition(len(parts), tuple(pixels), tuple(files), count))
        pixels, files, count = [], [], 0

    i = 0
    while i < len(ordered):
        j = i
        while j < len(ordered) and ordered[j].healpix == ordered[i].healpix:
            j += 1
        group = ordered[i:j]
        n = sum(e.nspec for e in group)
        if files and (count + n - target_spectra) > (target_spectra - count):
            flush()
        pixels.append(int(ordered[i].healpix))
        files += group
        count += n
        i = j
    flush()
    return parts


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------
def _by_survey(entries) -> list[dict]:
    groups: dict[tuple, list] = {}
    for e in entries:
        groups.setdefault((e.kind, e.survey, e.program), []).append(e)
    return [{"kind": k, "survey": s, "program": p, "files": len(es),
             "nspec": sum(e.nspec for e in es), "nbytes": sum(e.nbytes for e in es)}
            for (k, s, p), es in sorted(groups.items())]


def plan_to_dict(index: ReleaseIndex, parts: Sequence[Partition]) -> dict:
    """The plan as JSON-able data: totals, partitions with their files, skipped files."""
    return {
        "healpix": {"nside": HEALPIX_NSIDE, "order": "nested" if HEALPIX_NEST else "ring"},
        "totals": {
            "files": len(index.entries),
            "spectra": index.nspec,
            "pixels": len(index.pixels),
            "bytes": index.nbytes,
            "partitions": len(parts),
            "skipped": len(index.skipped),
            "companions": index.companions,
            "tables": len(index.tables),
        },
        "by_survey": _by_survey(index.entries),
        "partitions": [
            {"index": p.index, "pixels": list(p.pixels), "nspec": p.nspec, "nbytes": p.nbytes,
             "files": [asdict(e) for e in p.files]}
            for p in parts
        ],
        "skipped": [{"path": os.fspath(path), "reason": reason} for path, reason in index.skipped],
        "tables": list(index.tables),
        "notes": list(index.notes),
    }


def _size(nbytes: int) -> str:
    if nbytes <= 0:  # not measured (a plan from a survey catalogue does not stat the files)
        return "-"
    if nbytes < 1024:
        return f"{nbytes} B"
    exp = min(int(math.log(nbytes, 1024)), 5)
    return f"{nbytes / 1024 ** exp:.1f} {'BKMGTP'[exp]}iB"


def _pixels_label(pixels: Sequence[int]) -> str:
    if len(pixels) == 1:
        return str(pixels[0])
    return f"{pixels[0]}-{pixels[-1]}"


def format_plan(index: ReleaseIndex, parts: Sequence[Partition]) -> str:
    """The plan as a table a person can read: partitions, totals, surveys, skipped files."""
    lines = []
    header = f"{'part':>5}  {'pixels':<13} {'npix':>5} {'files':>6} {'spectra':>9} {'size':>10}"
    lines.append(header)
    lines.append("-" * len(header))
    for p in parts:
        lines.append(f"{p.index:>5}  {_pixels_label(p.pixels):<13} {len(p.pixels):>5} "
                     f"{len(p.files):>6} {p.nspec:>9} {_size(p.nbytes):>10}")
    lines.append("-" * len(header))
    lines.append(f"{'total':>5}  {'':<13} {len(index.pixels):>5} {len(index.entries):>6} "
                 f"{index.nspec:>9} {_size(index.nbytes):>10}")
    lines.append("")
    lines.append(f"{len(index.entries)} files, {index.nspec} spectra, {len(index.pixels)} HEALPix "
                 f"pixels (nside {HEALPIX_NSIDE}, nested), {_size(index.nbytes)}, "
                 f"{len(parts)} partitions")
    for g in _by_survey(index.entries):
        lines.append(f"  {g['kind']:<7} {g['survey']}/{g['program']}: {g['files']} files, "
                     f"{g['nspec']} spectra")
    if index.companions:
        lines.append(f"{index.companions} companion files (redrock, ...) read with their coadds")
    if index.tables:
        lines.append(f"{len(index.tables)} plain FITS tables (catalogues, truth tables) are not spectra "
                     f"and were not read: {', '.join(os.path.basename(t) for t in index.tables[:3])}"
                     f"{', ...' if len(index.tables) > 3 else ''}")
    for note in index.notes:
        lines.append(f"note: {note}")
    if index.skipped:
        lines.append(f"skipped {len(index.skipped)} files:")
        for path, reason in index.skipped:
            lines.append(f"  {path}: {reason}")
    return "\n".join(lines)
