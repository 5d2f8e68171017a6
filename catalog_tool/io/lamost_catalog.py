"""Plan a LAMOST release from its survey catalogue, opening no spectrum file.

LAMOST publishes one FITS file per spectrum (about 20 million in DR10 counting every release), so
discovering a release by opening each file's header (:func:`catalog_tool.io.release.discover`)
costs one open per spectrum. The LRS General Catalogue (``dr10_v2.0_LRS_catalogue.fits``) already
says, for every spectrum, where it is on the sky and which file holds it. :func:`discover_with_catalog`
reads only the columns it needs from the catalogue, lists the files under the inputs (directory
reads only: no file is opened or even ``stat``-ed), and matches them by name:

* a ``filename`` column, when the catalogue has one (its base name), else
* ``spec-{lmjd}-{planid}_sp{spid:02d}-{fiberid:03d}.fits`` (the archive's name), or
* ``{obsid}.fits`` (the name of a file fetched from the LAMOST web service by obsid),

each with or without ``.gz``. Column names are matched case-insensitively (the real catalogue
uses lower case: ``obsid``, ``ra``, ``dec``, ``lmjd``, ``planid``, ``spid``, ``fiberid``; see
:data:`catalog_tool.sim.lamost.GENERAL_CATALOG_COLUMNS`) and any integer, float or text width is
accepted. The sky position is ``ra``/``dec`` (the object's, as in the file headers), else
``ra_obs``/``dec_obs``.

What comes out:

* every catalogue row whose file is found: an ordinary LAMOST :class:`FileEntry` (its HEALPix
  pixel from the catalogue's position; ``nbytes`` 0: files are not ``stat``-ed);
* every catalogue row whose file is missing: a :class:`MissingEntry`, planned into its pixel's
  partition like the others; the pipeline writes it as a VAC row flagged ``FILE_MISSING`` (the
  catalogue's OBSID and position, no estimate). Catalogue rows are what is planned: each reaches
  the VAC;
* files found under the inputs that no catalogue row names: listed in ``unlisted`` (and in the
  plan, the log and the run summary), **not read**. The catalogue defines the input, so a subset
  catalogue (e.g. the A, F, G and K star catalogue, which has the same identifying columns) selects
  the spectra to process. Run without ``--catalog`` to read such files from their headers;
* a file named by several catalogue rows is planned once; the other rows are ``skipped`` (they
  reach the ``ERRORS`` table), as is a second file of the same name under the inputs (in another
  folder, or with and without ``.gz``) when the first is read for a catalogue row.
"""

from __future__ import annotations

import array
import math
import os
import re
from dataclasses import dataclass, field

import fitsio
import numpy as np

from catalog_tool.errors import ConfigError
from catalog_tool.io.entry import FileEntry, radec_to_healpix
from catalog_tool.io.release import FITS_SUFFIXES, ReleaseIndex

__all__ = ["MissingEntry", "CatalogIndex", "discover_with_catalog", "read_catalog", "archive_name",
           "MISSING_REASON", "ROWS_PER_READ"]

#: Catalogue rows read at a time (bounds memory on a 20-million-row catalogue).
ROWS_PER_READ = 1_000_000
#: ERRORS reason of a catalogue row whose file is not under the inputs.
MISSING_REASON = "named by the catalogue {catalog} (row {row}, obsid {obsid}) but not found under the inputs"
_SENTINEL = -9999.0


@dataclass(frozen=True)
class MissingEntry(FileEntry):
    """A catalogue row whose file is not under the inputs: planned like a file, read as a flagged row.

    ``path`` is the file name the catalogue implies (no folder: it was not found anywhere).
    """

    obsid: int = -1
    ra: float = math.nan
    dec: float = math.nan
    row: int = -1


@dataclass
class CatalogIndex(ReleaseIndex):
    """A :class:`ReleaseIndex` planned from a catalogue.

    Attributes
    ----------
    catalog : str
        The catalogue's absolute path.
    rows : int
        Rows in the catalogue.
    missing : list of MissingEntry
        Catalogue rows whose file is not under the inputs (planned, as flagged rows).
    unlisted : list of str
        Files under the inputs that no catalogue row names (not read).
    """

    catalog: str = ""
    rows: int = 0
    missing: list = field(default_factory=list)
    unlisted: list = field(default_factory=list)

    def summary(self) -> dict:
        """The catalogue part of a plan, JSON-able."""
        return {"path": self.catalog, "rows": self.rows, "found": len(self.entries),
                "missing": len(self.missing), "unlisted": list(self.unlisted)}

    def lines(self) -> list[str]:
        """Lines for the plan table."""
        out = [f"catalogue {self.catalog}: {self.rows} rows, {len(self.entries)} files found, "
               f"{len(self.missing)} missing"]
        if self.missing:
            out.append(f"  {len(self.missing)} catalogue rows name files not under the inputs: they get flagged "
                       f"rows (FILE_MISSING), e.g. {self.missing[0].path}")
        if self.unlisted:
            shown = ", ".join(self.unlisted[:3]) + (", ..." if len(self.unlisted) > 3 else "")
            out.append(f"  {len(self.unlisted)} files under the inputs are not in the catalogue and are "
                       f"not read: {shown}")
        return out


def archive_name(*, lmjd: int, planid: str, spid: int, fiberid: int) -> str:
    """The archive's file name of a spectrum, without ``.gz``: ``spec-55862-B6212_sp06-005.fits``."""
    return f"spec-{lmjd}-{planid}_sp{spid:02d}-{fiberid:03d}.fits"


def _key(name: str) -> str:
    return name[:-3] if name.endswith(".gz") else name


def _columns(hdu) -> dict:
    """Lower-case name -> stored name of the table's columns."""
    return {c.lower(): c for c in hdu.get_colnames()}


def _text(a: np.ndarray) -> list[str]:
    if a.dtype.kind == "S":
        return [v.decode("ascii", "replace").strip() for v in a.tolist()]
    return [str(v).strip() for v in a.tolist()]


def _program(path: str, hdu, cols: dict) -> str:
    """The data release the catalogue describes: ``drN`` from a DATA_V-like card or column, or from
    the catalogue's file name as LAMOST writes it (``dr10_v2.0_LRS_catalogue.fits``); else ''."""
    header = hdu.read_header()
    for key in ("DATA_V", "DATAVERS", "RELEASE"):
        if key in header:
            m = re.search(r"DR\s*(\d+)", str(header[key]), re.IGNORECASE)
            if m:
                return f"dr{int(m.group(1))}"
    if "dataversion" in cols:  # the DR7 general catalogue has one ('DR7_v2.0' style); take the first row
        value = _text(hdu[cols["dataversion"]][0:1])
        m = re.search(r"DR\s*(\d+)", value[0] if value else "", re.IGNORECASE)
        if m:
            return f"dr{int(m.group(1))}"
    m = re.match(r"dr(\d+)[_.-]", os.path.basename(path), re.IGNORECASE)
    return f"dr{int(m.group(1))}" if m else ""


@dataclass
class _Catalog:
    """The catalogue's identifying columns, read in pieces (see :func:`read_catalog`)."""

    path: str
    hdu_index: int
    rows: int
    program: str
    columns: dict  # role -> stored column name


def read_catalog(path: str | os.PathLike) -> _Catalog:
    """Open a LAMOST catalogue and check its columns (the rows are read later, in pieces).

    Raises
    ------
    ConfigError
        The file cannot be read, has no table, or lacks ``obsid``, a position (``ra``/``dec`` or
        ``ra_obs``/``dec_obs``) or a file identity (``filename``, or ``lmjd``, ``planid``,
        ``spid`` and ``fiberid``): one line naming what is missing.
    """
    path = os.path.abspath(os.fspath(path))
    try:
        fits = fitsio.FITS(path)
    except OSError as exc:
        raise ConfigError(f"catalogue {path} cannot be read: {str(exc).strip().splitlines()[0]}") from None
    with fits:
        tables = [i for i, h in enumerate(fits) if h.get_exttype() in ("BINARY_TBL", "ASCII_TBL")]
        if not tables:
            raise ConfigError(f"catalogue {path} holds no table")
        hdu = fits[tables[0]]
        cols = _columns(hdu)
        roles = {"obsid": cols.get("obsid")}
        for ra, dec in (("ra", "dec"), ("ra_obs", "dec_obs")):
            if ra in cols and dec in cols:
                roles["ra"], roles["dec"] = cols[ra], cols[dec]
                break
        if "filename" in cols:
            roles["filename"] = cols["filename"]
        else:
            for k in ("lmjd", "planid", "spid", "fiberid"):
                roles[k] = cols.get(k)
        lacking = [k for k, v in roles.items() if v is None]
        if "ra" not in roles:
            lacking.append("ra/dec (or ra_obs/dec_obs)")
        if lacking:
            raise ConfigError(f"catalogue {path} lacks the column(s) {', '.join(lacking)} (LAMOST General "
                              f"Catalogue names; found: {', '.join(list(cols)[:12])}{', ...' if len(cols) > 12 else ''})")
        return _Catalog(path=path, hdu_index=tables[0], rows=hdu.get_nrows(), program=_program(path, hdu, cols),
                        columns=roles)


def _pieces(cat: _Catalog):
    """(first row, {role: array}) for pieces of :data:`ROWS_PER_READ` rows."""
    names = list(cat.columns.values())
    with fitsio.FITS(cat.path) as fits:
        hdu = fits[cat.hdu_index]
        for start in range(0, cat.rows, ROWS_PER_READ):
            data = hdu.read(columns=names, rows=np.arange(start, min(start + ROWS_PER_READ, cat.rows)))
            yield start, {role: data[name] for role, name in cat.columns.items()}


def _file_names(piece: dict) -> list[str]:
    """The file name (without ``.gz``) of each of a piece's rows: its ``filename``, else the archive's."""
    if "filename" in piece:
        return [_key(os.path.basename(v)) for v in _text(piece["filename"])]
    return [f"spec-{lmjd}-{planid}_sp{spid:02d}-{fiberid:03d}.fits" for lmjd, planid, spid, fiberid in
            zip(piece["lmjd"].astype(np.int64).tolist(), _text(piece["planid"]),
                piece["spid"].astype(np.int64).tolist(), piece["fiberid"].astype(np.int64).tolist())]


def _is_fits(name: str) -> bool:
    return not name.startswith(".") and (name.endswith(FITS_SUFFIXES) or name.lower().endswith(FITS_SUFFIXES))


def _walk(inputs, catalog_path: str, skipped: list):
    """The FITS files under ``inputs``: (folders, folder index of each file, file names,
    {name without .gz: file index}, [(folder index, name, key) of files whose name was seen before]).

    Directory reads only (``os.walk`` uses the entry types the directory already holds). Files are
    indexed by position in parallel lists (folder index, name) to keep 20 million of them compact;
    each folder's files are added in one go (this runs once per file of a release).
    """
    folders: list[str] = []
    dir_of = array.array("i")
    names: list[str] = []
    index: dict[str, int] = {}
    again: list[tuple[int, str, str]] = []
    cat_dir, cat_name = os.path.split(catalog_path)

    def add(folder_idx: int, found: list[str]) -> None:
        keys = [n[:-3] if n.endswith(".gz") else n for n in found]
        start = len(names)
        new = dict(zip(keys, range(start, start + len(found))))
        if len(new) == len(found) and index.keys().isdisjoint(new):  # the usual case: all names new
            index.update(new)
            names.extend(found)
            dir_of.extend([folder_idx] * len(found))
            return
        for n, key in zip(found, keys):  # a name seen before: the first one wins
            if key in index:
                again.append((folder_idx, n, key))
            else:
                index[key] = len(names)
                names.append(n)
                dir_of.append(folder_idx)

    for raw in inputs:
        path = os.path.abspath(os.fspath(raw))
        if os.path.isdir(path):
            for folder, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found = sorted(n for n in files if _is_fits(n))
                if folder == cat_dir and cat_name in found:
                    found.remove(cat_name)
                folders.append(folder)
                if found:
                    add(len(folders) - 1, found)
        elif os.path.lexists(path):
            folders.append(os.path.dirname(path))
            add(len(folders) - 1, [os.path.basename(path)])
        else:
            skipped.append((path, "no such file or directory"))
    return folders, dir_of, names, index, again


def discover_with_catalog(inputs, catalog: str | os.PathLike) -> CatalogIndex:
    """Index the LAMOST files under ``inputs`` from a survey catalogue, opening none of them.

    Parameters
    ----------
    inputs : iterable of path-like
        Folders (walked recursively) and single files.
    catalog : path-like
        A LAMOST LRS catalogue FITS table (General Catalogue or one with the same identifying
        columns); see the module docstring for the columns and the matching.

    Returns
    -------
    CatalogIndex
        ``entries`` (found files, sorted by (healpix, folder, name): the path order unless a folder
        holds files at several depths), ``missing``, ``unlisted``, ``skipped``.

    Raises
    ------
    ConfigError
        See :func:`read_catalog`.
    """
    cat = read_catalog(catalog)
    index = CatalogIndex(catalog=cat.path, rows=cat.rows)
    folders, dir_of, names, by_key, again = _walk(inputs, cat.path, index.skipped)
    dir_of = np.frombuffer(dir_of, np.int32) if len(dir_of) else np.zeros(0, np.int32)
    sep = os.sep

    def path_of(k: int) -> str:
        return folders[dir_of[k]] + sep + names[k]

    matched = np.full(len(names), -1, np.int64)  # catalogue row of each file found
    program = cat.program
    found_k, found_pix = [], []
    get = by_key.get
    for start, piece in _pieces(cat):
        ra = piece["ra"].astype(np.float64)
        dec = piece["dec"].astype(np.float64)
        bad = (ra == _SENTINEL) | (dec == _SENTINEL)
        ra[bad], dec[bad] = np.nan, np.nan
        pix = radec_to_healpix(ra=ra, dec=dec)
        obsid = piece["obsid"].astype(np.int64)
        primary = _file_names(piece)
        k = np.fromiter((get(n, -1) for n in primary), np.int64, len(primary))
        miss = np.flatnonzero(k < 0)
        if miss.size:  # files fetched by obsid are named OBSID.fits
            k[miss] = [get(f"{o}.fits", -1) for o in obsid[miss].tolist()]
        rows = np.arange(start, start + len(k))
        for i in np.flatnonzero(k < 0).tolist():
            index.missing.append(MissingEntry(path=primary[i], kind="lamost", survey="lamost", program=program,
                                              healpix=int(pix[i]), nspec=1, nbytes=0, layout="",
                                              obsid=int(obsid[i]), ra=float(ra[i]), dec=float(dec[i]),
                                              row=int(rows[i])))
        hit = np.flatnonzero(k >= 0)
        first = np.zeros(hit.size, bool)
        first[np.unique(k[hit], return_index=True)[1]] = True
        new = first & (matched[k[hit]] < 0)
        matched[k[hit[new]]] = rows[hit[new]]
        for i in hit[~new].tolist():  # a file some other row names already: read once, for that row
            index.skipped.append((path_of(k[i]), f"catalogue row {rows[i]} (obsid {obsid[i]}) names the same "
                                                 f"file as row {matched[k[i]]}: read once, for that row"))
        found_k.append(k[hit[new]])
        found_pix.append(pix[hit[new]])
    k = np.concatenate(found_k) if found_k else np.zeros(0, np.int64)
    pix = np.concatenate(found_pix) if found_pix else np.zeros(0, np.int32)
    # (healpix, folder, name) order: folders ranked as "folder/" strings, names sorted within a
    # folder by the walk (the same as path order unless one folder holds files at several depths)
    rank = np.empty(len(folders), np.int64)
    rank[np.argsort(np.array([f + sep for f in folders], dtype=object), kind="stable")] = np.arange(len(folders))
    order = np.lexsort((k, rank[dir_of[k]], pix))
    index.entries = [FileEntry(path_of(f), "lamost", "lamost", program, h, 1, 0, "")
                     for f, h in zip(k[order].tolist(), pix[order].tolist())]
    index.unlisted = [path_of(f) for f in np.flatnonzero(matched < 0).tolist()]
    for folder_idx, name, key in again:  # a second file of the same name: read at most one
        f = by_key[key]
        path = folders[folder_idx] + sep + name
        if matched[f] >= 0:
            index.skipped.append((path, f"same file name as {path_of(f)}, which is read for catalogue row "
                                        f"{matched[f]}"))
        else:
            index.unlisted.append(path)
    return index
