"""Reader for LAMOST low-resolution (LRS) spectrum files: three layouts, one :class:`SpectraBatch`.

LAMOST publishes one FITS file per spectrum. Three layouts exist, told apart here by the file's
structure only (never by its name, its ``DATA_V`` keyword or its pipeline version):

``dr1``
    Primary image of shape (5, npix): flux, ivar, **sub-continuum**, andmask, ormask. The
    wavelength is not stored: ``10**(COEFF0 + COEFF1 * i)`` (log10-linear, header keywords).
``dr7``
    Primary image of shape (5, npix): flux, ivar, **wavelength**, andmask, ormask.
``dr10``
    Empty primary HDU plus a one-row binary table ``COADD`` with array columns FLUX, IVAR,
    WAVELENGTH, ANDMASK, ORMASK, NORMALIZATION.

The third image row is taken as a wavelength grid when it is finite, strictly increasing, inside
3000-11000 A and log10-linear to a tenth of a pixel (a sub-continuum is none of these); otherwise
the file is ``dr1`` provided COEFF0/COEFF1 give a grid in that range. Any other structure is an
:class:`~catalog_tool.errors.UnknownLayoutError`.

Wavelengths are vacuum and heliocentric (header ``VACUUM = T``, ``HELIO = T``). The mask is the
pipeline's ANDMASK (a pixel bad in *every* exposure), see :func:`read_lamost`. Files may be plain
or gzip-compressed (fitsio decompresses in memory).
"""

from __future__ import annotations

import math
import os
import re
import zlib
from collections.abc import Iterable, Mapping

import fitsio
import numpy as np

from catalog_tool.batch import Arm, SpectraBatch
from catalog_tool.errors import (
    EmptyFileError,
    InputFileError,
    MissingHDUError,
    UnknownLayoutError,
)
from catalog_tool.io.fitsutil import open_fits, read_error, read_header_cards
from catalog_tool.io.entry import FileEntry, radec_to_healpix, text_column

__all__ = [
    "LAYOUTS",
    "ARM",
    "BAD_MASK_VALUE_BIT",
    "SYNTHETIC_ID_BIT",
    "LAMOST_META",
    "detect_layout",
    "read_lamost",
    "read_lamost_files",
    "scan_lamost",
    "scan_lamost_open",
    "synthetic_obsid",
    "read_files",
    "select_stars",
]

LAYOUTS = ("dr1", "dr7", "dr10")
ARM = "LRS"

#: Mask bit set where the file's mask value is not a non-negative integer (NaN, negative,
#: fractional): the pixel is then treated as bad. LAMOST's own mask bits stop well below bit 30;
#: bit 31 is the batch padding bit.
BAD_MASK_VALUE_BIT = np.uint32(1 << 30)

#: Bit 62 marks a TARGETID stxcat made up for a file without OBSID (see :func:`synthetic_obsid`);
#: real OBSIDs are below 2**40, so the two can never collide.
SYNTHETIC_ID_BIT = 62

#: Metadata columns of a LAMOST batch and their dtypes (``U`` = unicode string). Missing header
#: values are NaN (floats), ``""`` (strings) or -1 (integers).
LAMOST_META = {
    "TARGETID": np.int64, "SURVEY": "U", "PROGRAM": "U", "TARGET_RA": np.float64,
    "TARGET_DEC": np.float64, "HEALPIX": np.int32, "FIBER_KIND": "U", "SOURCE": "U",
    "ROW": np.int32, "OBSID": np.int64, "DESIG": "U", "CLASS": "U", "SUBCLASS": "U",
    "Z": np.float64, "Z_ERR": np.float64, "SNRU": np.float32, "SNRG": np.float32,
    "SNRR": np.float32, "SNRI": np.float32, "SNRZ": np.float32, "MJD": np.float64,
    "LMJD": np.int32, "PLANID": "U", "SPID": np.int32, "FIBERID": np.int32, "OBJTYPE": "U",
    "LAYOUT": "U",
}

_IMAGE_ROWS = 5
_WAVE_ROW = 2
_WAVE_RANGE = (3000.0, 11000.0)
#: Largest departure from a log10-linear grid, in pixels, for a row to count as wavelengths.
_WAVE_TOL_PIX = 0.1
_COADD = "COADD"
_COADD_COLUMNS = ("FLUX", "IVAR", "WAVELENGTH", "ANDMASK")
#: The LAMOST pipeline writes -9999 for quantities it could not measure (e.g. Z of a failed fit).
_SENTINEL = -9999.0
_SNR_BANDS = "UGRIZ"


# ----------------------------------------------------------------------------------------------
# Layout detection
# ----------------------------------------------------------------------------------------------

def _structure(fits: fitsio.FITS, path: str) -> str:
    """``"image"`` (dr1/dr7, decided later from row 3) or ``"dr10"``; typed error otherwise."""
    primary = fits[0]
    if primary.has_data():
        dims = tuple(primary.get_info()["dims"])  # numpy order: (NAXIS2, NAXIS1)
        if len(dims) != 2 or dims[0] != _IMAGE_ROWS or dims[1] < 2:
            raise UnknownLayoutError(
                path, f"primary image has shape {dims}; LAMOST LRS images are ({_IMAGE_ROWS}, npix)")
        return "image"
    if _COADD not in fits:
        present = [fits[i].get_extname() or f"#{i}" for i in range(len(fits))]
        raise MissingHDUError(
            path, f"required HDU {_COADD!r} is missing (empty primary image, so the DR10 layout "
                  f"was expected; HDUs present: {present})")
    hdu = fits[_COADD]
    if hdu.get_exttype() != "BINARY_TBL":
        raise UnknownLayoutError(path, f"HDU {_COADD!r} is a {hdu.get_exttype()}, not a binary table")
    missing = [c for c in _COADD_COLUMNS if c not in hdu.get_colnames()]
    if missing:
        raise UnknownLayoutError(path, f"HDU {_COADD!r} lacks the columns {missing}")
    nrows = hdu.get_nrows()
    if nrows == 0:
        raise EmptyFileError(path, f"HDU {_COADD!r} has no rows")
    if nrows != 1:
        raise UnknownLayoutError(path, f"HDU {_COADD!r} has {nrows} rows; LAMOST LRS files hold one")
    return "dr10"


def _is_wavelength_grid(row: np.ndarray) -> bool:
    """True when ``row`` is a finite, increasing, log10-linear grid inside 3000-11000 A."""
    w = np.asarray(row, dtype=np.float64)
    if w.size < 2 or not np.all(np.isfinite(w)):
        return False
    if w[0] < _WAVE_RANGE[0] or w[-1] > _WAVE_RANGE[1] or np.any(np.diff(w) <= 0):
        return False
    logw = np.log10(w)
    step = (logw[-1] - logw[0]) / (w.size - 1)
    # float32 storage jitters each step by ~0.05%; a sub-continuum is off by many pixels.
    resid = logw - (logw[0] + step * np.arange(w.size))
    return bool(np.max(np.abs(resid)) < _WAVE_TOL_PIX * step)


def _coeff_wave(path: str, header, npix: int) -> np.ndarray:
    """The dr1 wavelength grid ``10**(COEFF0 + COEFF1 * i)``; UnknownLayoutError if unusable."""
    c0, c1 = _float(header, "COEFF0"), _float(header, "COEFF1")
    if not (math.isfinite(c0) and math.isfinite(c1) and c1 > 0):
        raise UnknownLayoutError(
            path, "third image row is not a wavelength grid and COEFF0/COEFF1 are missing or "
                  "invalid, so no wavelengths can be derived")
    wave = 10.0 ** (c0 + c1 * np.arange(npix, dtype=np.float64))
    if wave[0] < _WAVE_RANGE[0] or wave[-1] > _WAVE_RANGE[1]:
        raise UnknownLayoutError(
            path, f"COEFF0/COEFF1 give {wave[0]:.0f}-{wave[-1]:.0f} A, outside the LRS range")
    return wave


def _image_layout(path: str, header, third_row: np.ndarray) -> tuple[str, np.ndarray]:
    """``("dr7", third row)`` or ``("dr1", COEFF grid)``: the layout and its wavelengths, float64."""
    if _is_wavelength_grid(third_row):
        return "dr7", np.array(third_row, dtype=np.float64)  # a copy: the image is not kept alive
    return "dr1", _coeff_wave(path, header, len(third_row))  # raises when dr1 is impossible too


def detect_layout(source: str | os.PathLike | fitsio.FITS) -> str:
    """The LAMOST layout of a file, from its structure: ``"dr1"``, ``"dr7"`` or ``"dr10"``.

    Parameters
    ----------
    source : path or fitsio.FITS
        A file name, or a FITS file already open with fitsio.

    Returns
    -------
    str
        One of :data:`LAYOUTS`.

    Raises
    ------
    UnknownLayoutError, MissingHDUError, EmptyFileError
        When the structure matches none of the layouts; plus the errors of
        :func:`~catalog_tool.io.fitsutil.open_fits` when given a path.
    """
    if isinstance(source, fitsio.FITS):
        # fitsio keeps the name it was opened with; errors must name the file.
        return _detect_open(source, getattr(source, "_filename", "<open FITS file>"))[0]
    path = os.fspath(source)
    with open_fits(path) as fits:
        return _detect_open(fits, path)[0]


def _primary_header(fits: fitsio.FITS, path: str):
    """The primary header's cards (:func:`~catalog_tool.io.fitsutil.read_header_cards`: a LAMOST
    header of ~130 cards costs fitsio's ``read_header`` 2 ms, most of reading the file)."""
    return read_header_cards(fits, 0, path, strict=True)


def _detect_open(fits: fitsio.FITS, path: str) -> tuple[str, Mapping]:
    """The layout and the primary header (read once: :func:`scan_lamost` needs it too)."""
    if _structure(fits, path) == "dr10":
        return "dr10", _primary_header(fits, path)
    header = _primary_header(fits, path)
    try:
        # Only the third row: ~16 kB, so a header-only scan stays cheap.
        third = fits[0][_WAVE_ROW:_WAVE_ROW + 1, :][0]
    except OSError as exc:
        raise read_error(path, exc, "the primary image") from None
    return _image_layout(path, header, third)[0], header


# ----------------------------------------------------------------------------------------------
# Header metadata
# ----------------------------------------------------------------------------------------------

def _float(header, key: str) -> float:
    """Header value as float; NaN when absent, unparsable or the -9999 sentinel."""
    value = header.get(key) if key in header else None
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        x = float(value)  # some LAMOST keywords are stored as strings (e.g. X_VALUE in DR10)
    except (TypeError, ValueError):
        return math.nan
    return math.nan if x == _SENTINEL else x


def _int(header, key: str) -> int | None:
    x = _float(header, key)
    if not math.isfinite(x) or x != int(x):
        return None
    return int(x)


def _str(header, key: str) -> str:
    value = header.get(key) if key in header else None
    return "" if value is None else str(value).strip()


def _first_present(header, keys: Iterable[str]) -> str | None:
    return next((k for k in keys if k in header), None)


def synthetic_obsid(*, lmjd: int, planid: str, spid: int, fiberid: int) -> int:
    """A stable int64 TARGETID for a spectrum whose file has no OBSID (the DR1 layout).

    LAMOST identifies a spectrum by (LMJD, PLANID, SPID, FIBERID). They are packed as
    ``2**62 | crc32(PLANID) << 30 | LMJD << 13 | SPID << 8 | FIBERID``: deterministic across
    runs and machines, positive, and far above every real OBSID (bit 62 set).

    Raises
    ------
    ValueError
        When a field is outside the range LAMOST uses.
    """
    if not (0 <= lmjd < 1 << 17 and 0 <= spid < 1 << 5 and 0 <= fiberid < 1 << 8 and planid):
        raise ValueError(f"spectrum key out of range: LMJD={lmjd} PLANID={planid!r} "
                         f"SPID={spid} FIBERID={fiberid}")
    crc = zlib.crc32(planid.strip().encode("ascii", "replace"))
    return (1 << SYNTHETIC_ID_BIT) | (crc << 30) | (lmjd << 13) | (spid << 8) | fiberid


def _release(header, notes: list[str]) -> str:
    """Data release ``drN`` from DATA_V ('LAMOST DR7' -> 'dr7'); DR1 files lack DATA_V."""
    match = re.search(r"DR\s*(\d+)", _str(header, "DATA_V"), re.IGNORECASE)
    if match:
        return f"dr{int(match.group(1))}"
    verspipe = _str(header, "VERSPIPE")
    if verspipe.startswith("v2.6"):
        # DR1 is the only release reduced with LAMOST pipeline v2.6.x and its files carry no DATA_V.
        notes.append(f"no DATA_V; release dr1 inferred from VERSPIPE {verspipe!r}")
        return "dr1"
    notes.append("no DATA_V and no known VERSPIPE: data release unknown (PROGRAM '')")
    return ""


def _fiber_kind(header) -> str:
    ftype = _str(header, _first_present(header, ("FIBERTYP", "FIB_TYPE")) or "FIBERTYP").lower()
    if ftype == "sky" or _str(header, "OBJTYPE").lower() == "sky":
        return "sky"
    if ftype in ("unused", "dead"):
        return "unassigned"
    return "target"


def _header_meta(path: str, header, layout: str, notes: list[str]) -> dict:
    """One row of :data:`LAMOST_META` from the primary header; problems go to ``notes``."""
    missing = []

    def num(key, *alternatives):
        key_found = _first_present(header, (key, *alternatives))
        if key_found is None:
            missing.append(key)
            return math.nan
        value = _float(header, key_found)
        if math.isnan(value) and header.get(key_found) not in (_SENTINEL, int(_SENTINEL)):
            missing.append(f"{key_found} (unreadable {header.get(key_found)!r})")
        return value

    def text(key):
        if key not in header:
            missing.append(key)
        return _str(header, key)

    ra, dec = num("RA"), num("DEC")
    row = {
        "SURVEY": "lamost", "PROGRAM": _release(header, notes), "TARGET_RA": ra,
        "TARGET_DEC": dec, "HEALPIX": int(radec_to_healpix(ra=np.array([ra]), dec=np.array([dec]))[0]), "FIBER_KIND": _fiber_kind(header),
        "SOURCE": path, "ROW": 0, "DESIG": text("DESIG"), "CLASS": text("CLASS"),
        "SUBCLASS": text("SUBCLASS"), "Z": num("Z"), "Z_ERR": num("Z_ERR"), "MJD": num("MJD"),
        "PLANID": _str(header, "PLANID"), "OBJTYPE": _str(header, "OBJTYPE"), "LAYOUT": layout,
    }
    for band in _SNR_BANDS:
        # DR1 headers spell the SNR keywords SN_G, later ones SNRG.
        row[f"SNR{band}"] = num(f"SNR{band}", f"SN_{band}")
    for key in ("LMJD", "SPID", "FIBERID"):
        value = _int(header, key)
        row[key] = -1 if value is None else value
    if row["HEALPIX"] < 0:
        notes.append(f"no valid RA/DEC ({ra}, {dec}): HEALPIX -1")

    obsid = _int(header, "OBSID")
    if obsid is not None and obsid > 0:
        row["OBSID"] = row["TARGETID"] = obsid
    else:
        key_ok = row["PLANID"] and min(row["LMJD"], row["SPID"], row["FIBERID"]) >= 0
        if not key_ok:
            raise InputFileError(
                path, "no OBSID and no complete (LMJD, PLANID, SPID, FIBERID) in the header: "
                      "the spectrum cannot be identified")
        try:
            row["TARGETID"] = synthetic_obsid(lmjd=row["LMJD"], planid=row["PLANID"],
                                              spid=row["SPID"], fiberid=row["FIBERID"])
        except ValueError as exc:
            raise InputFileError(path, f"no OBSID and {exc}") from None
        row["OBSID"] = -1
        notes.append("no OBSID: TARGETID synthesized from (LMJD, PLANID, SPID, FIBERID)")
    if missing:
        notes.append(f"header lacks {', '.join(missing)} (set to NaN or '')")
    return row


def _meta_arrays(rows: list[dict]) -> dict:
    return {name: np.array([r[name] for r in rows], dtype=dtype) if rows
            else np.empty(0, dtype=dtype) for name, dtype in LAMOST_META.items()}


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------

def _mask_to_uint32(values: np.ndarray) -> tuple[np.ndarray, int]:
    """LAMOST stores its bit masks as floats; convert, flagging values that are not bit masks."""
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(v) & (v >= 0) & (v < 2.0 ** 32) & (v == np.floor(v))
    mask = np.where(ok, v, 0).astype(np.uint32)
    mask[~ok] = BAD_MASK_VALUE_BIT
    return mask, int(np.count_nonzero(~ok))


def _read_one(path: str | os.PathLike) -> tuple[SpectraBatch, list[str]]:
    """One file as a one-row batch, plus the non-fatal notes (without the path)."""
    path = os.fspath(path)
    notes: list[str] = []
    with open_fits(path) as fits:
        kind = _structure(fits, path)
        what = "the primary image" if kind == "image" else f"HDU {_COADD!r}"
        header = _primary_header(fits, path)
        try:
            if kind == "image":
                image = fits[0].read()
            else:
                table = fits[_COADD].read(columns=list(_COADD_COLUMNS))
        except OSError as exc:
            raise read_error(path, exc, what) from None
    if kind == "image":
        layout, wave = _image_layout(path, header, image[_WAVE_ROW])
        flux, ivar, raw_mask = image[0], image[1], image[3]
    else:
        layout = "dr10"
        lengths = {c: np.size(table[c][0]) for c in ("FLUX", "IVAR", "WAVELENGTH", "ANDMASK")}
        if len(set(lengths.values())) != 1:
            raise UnknownLayoutError(path, f"HDU {_COADD!r} arrays differ in length ("
                                           + ", ".join(f"{c} {n}" for c, n in lengths.items()) + ")")
        flux, ivar, raw_mask = table["FLUX"][0], table["IVAR"][0], table["ANDMASK"][0]
        wave = table["WAVELENGTH"][0].astype(np.float64)
        if not _is_wavelength_grid(wave):
            raise UnknownLayoutError(path, f"HDU {_COADD!r} WAVELENGTH is not an increasing "
                                           "log-linear grid in 3000-11000 A")
    mask, nbad = _mask_to_uint32(raw_mask)
    if nbad:
        notes.append(f"{nbad} ANDMASK values are not bit masks (flagged bad)")
    row = _header_meta(path, header, layout, notes)
    arm = Arm(ARM, wave[None, :], flux.astype(np.float32)[None, :],
              ivar.astype(np.float32)[None, :], mask[None, :])
    batch = SpectraBatch(arms={ARM: arm}, meta=_meta_arrays([row]),
                         problems=[f"{path}: {n}" for n in notes])
    return batch, notes


def read_lamost(path: str | os.PathLike) -> SpectraBatch:
    """Read one LAMOST LRS spectrum file (any of the three layouts, plain or gzip).

    Parameters
    ----------
    path : str or path-like
        The FITS file.

    Returns
    -------
    SpectraBatch
        One row, one arm ``"LRS"``: wave float64 (1, npix), vacuum heliocentric Angstrom (the
        stored row for dr7/dr10, ``10**(COEFF0 + COEFF1 i)`` for dr1); flux and ivar float32 as
        stored; mask uint32 from ANDMASK. ANDMASK is used because the spectrum is a coadd: a pixel
        bad in *every* exposure has no good data, whereas ORMASK (bad in *any* exposure) would
        discard pixels the coadd rebuilt from the remaining exposures. ORMASK, NORMALIZATION and
        the dr1 sub-continuum are not read. Metadata: the columns of :data:`LAMOST_META`.
        TARGETID is the header OBSID; files without one (DR1) get :func:`synthetic_obsid` and
        OBSID -1. Header values of -9999 become NaN. Missing keywords give NaN / ``""`` / -1
        and a line in ``problems``.

    Raises
    ------
    FileAccessError, NotFitsError, TruncatedFileError, MissingHDUError, EmptyFileError,
    UnknownLayoutError
        Each names the file and the problem.
    InputFileError
        The header has neither OBSID nor a complete (LMJD, PLANID, SPID, FIBERID): a spectrum
        that cannot be identified cannot be catalogued.
    """
    return _read_one(path)[0]


def _empty_batch() -> SpectraBatch:
    empty_f = np.zeros((0, 0), np.float32)
    arm = Arm(ARM, np.zeros((0, 0)), empty_f, empty_f.copy(), np.zeros((0, 0), np.uint32))
    return SpectraBatch(arms={ARM: arm}, meta=_meta_arrays([]))


def read_lamost_files(paths: Iterable[str | os.PathLike]
                      ) -> tuple[SpectraBatch, list[tuple[str, str]]]:
    """Read many LAMOST files into one batch; a bad file is reported, never fatal.

    Parameters
    ----------
    paths : iterable of path-like
        Files of any of the three layouts, in any mix.

    Returns
    -------
    batch : SpectraBatch
        One row per file read, in input order; rows of different lengths are padded at the end
        (see :meth:`SpectraBatch.concat`). Empty (0 rows) when every file failed. Its
        ``problems`` are grouped: one line per kind of problem with the number of files and the
        first of them, so a release of millions of DR1 files does not yield millions of lines.
    failures : list of (str, str)
        ``(path, reason)`` for every file that raised a typed input error (or, from a damage
        no check foresaw, a ValueError, TypeError, IndexError or KeyError: one bad file never
        takes the others down with it).
    """
    batches, failures = [], []
    grouped: dict[str, list[str]] = {}
    for p in paths:
        p = os.fspath(p)
        try:
            batch, notes = _read_one(p)
        except InputFileError as exc:
            failures.append((p, exc.problem))
            continue
        except (ValueError, TypeError, IndexError, KeyError) as exc:  # a damage no check foresaw
            failures.append((p, f"could not be read ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"))
            continue
        batches.append(batch)
        for note in notes:
            grouped.setdefault(note, []).append(p)
    if not batches:
        return _empty_batch(), failures
    out = SpectraBatch.concat(batches)
    problems = [f"{note}: {len(ps)} file(s), e.g. {ps[0]}" for note, ps in grouped.items()]
    return SpectraBatch(arms=out.arms, meta=out.meta, problems=problems), failures


def scan_lamost(path: str | os.PathLike) -> FileEntry:
    """Index entry of one LAMOST file from its headers (plus one image row for dr1/dr7).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    FileEntry
        ``path`` made absolute, ``kind="lamost"``, ``survey="lamost"``, ``program`` the data release (``dr7``; ``""`` when
        unknown), ``healpix`` (nside 64, NESTED, from header RA/DEC; -1 without them),
        ``nspec=1``, ``nbytes`` the size on disk, ``layout`` from :func:`detect_layout`.

    Raises
    ------
    The errors of :func:`read_lamost` that can be found without reading the spectrum.
    """
    path = os.path.abspath(os.fspath(path))
    with open_fits(path) as fits:
        return scan_lamost_open(fits, path)


def scan_lamost_open(fits: fitsio.FITS, path: str | os.PathLike) -> FileEntry:
    """:func:`scan_lamost` of a file already open (with :func:`~catalog_tool.io.fitsutil.open_fits`):
    discovery opens each file once for every question it asks of it."""
    path = os.path.abspath(os.fspath(path))
    layout, header = _detect_open(fits, path)
    row = _header_meta(path, header, layout, [])
    return FileEntry(path=path, kind="lamost", survey="lamost", program=row["PROGRAM"],
                     healpix=row["HEALPIX"], nspec=1, nbytes=os.path.getsize(path), layout=layout)


# ----------------------------------------------------------------------------------------------
# What the reader registry (catalog_tool.io.readers) asks of a survey
# ----------------------------------------------------------------------------------------------

def read_files(paths, *, wave_range=None) -> tuple[list[SpectraBatch], list[tuple[str, str]]]:
    """Read many files into one batch (none when every file failed), plus ``(path, reason)`` per
    failed file (:func:`read_lamost_files`). ``wave_range`` is not used: a file holds one arm."""
    batch, failures = read_lamost_files(paths)
    return ([batch] if len(batch) else []), failures


def select_stars(meta: dict) -> np.ndarray:
    """Rows of a LAMOST batch to estimate: the LAMOST pipeline's ``CLASS == 'STAR'``."""
    if "CLASS" not in meta:
        return np.zeros(len(meta["TARGETID"]), bool)
    return text_column(meta["CLASS"]) == "STAR"
