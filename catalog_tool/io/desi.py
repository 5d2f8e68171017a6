"""Reader for DESI coadd files (healpix-based and tile-based), with the redrock join.

A DESI coadd holds N coadded spectra: a ``FIBERMAP`` table (one row per target) and, per arm
``B``, ``R``, ``Z``, the HDUs ``{ARM}_WAVELENGTH`` (npix,), ``{ARM}_FLUX``, ``{ARM}_IVAR``,
``{ARM}_MASK`` (N, npix) and ``{ARM}_RESOLUTION`` (N, ndiag, npix). HDUs are found by EXTNAME,
never by position. Only the FIBERMAP columns listed in :data:`FIBERMAP_COLUMNS` are read, and
``RESOLUTION`` (most of a file's bytes) only when asked for.

The redshifts come from the sibling ``redrock-*`` file (``REDSHIFTS`` table), joined by TARGETID.
See ``docs/data-formats.md`` for the full description.
"""

from __future__ import annotations

import os
import re

import numpy as np

from catalog_tool.batch import Arm, SpectraBatch
from catalog_tool.errors import (
    EmptyFileError,
    FileAccessError,
    InputFileError,
    MissingHDUError,
    UnknownLayoutError,
)
from catalog_tool.io.fitsutil import (
    get_hdu,
    normalise_rows,
    open_fits,
    read_columns,
    read_image_rows,
    read_keywords,
)
from catalog_tool.io.entry import FileEntry, pixel_of_targets, radec_to_healpix, text_column

__all__ = [
    "ARMS",
    "ARM_RANGES",
    "FIBERMAP_COLUMNS",
    "REDROCK_COLUMNS",
    "read_coadd",
    "scan_coadd",
    "find_redrock",
    "classify",
    "sniff",
    "arms_covering",
    "read_files",
    "select_stars",
]

#: The DESI spectrograph arms, in wavelength order.
ARMS = ("B", "R", "Z")
#: Observed wavelength range (A) of each arm's pixels (all releases so far).
ARM_RANGES = {"B": (3600.0, 5800.0), "R": (5760.0, 7620.0), "Z": (7520.0, 9824.0)}

#: FIBERMAP columns read. Required ones raise when absent; the others get a fill value.
FIBERMAP_REQUIRED = ("TARGETID", "TARGET_RA", "TARGET_DEC")
_TARGET_BITS = ("DESI_TARGET", "MWS_TARGET")
_SV_SURVEYS = ("SV1", "SV2", "SV3")
#: Every target-bit column kept: the main ones, then the ``SVn_`` ones.
_TARGET_BIT_COLUMNS = _TARGET_BITS + tuple(f"{sv}_{b}" for sv in _SV_SURVEYS for b in _TARGET_BITS)
FIBERMAP_COLUMNS = FIBERMAP_REQUIRED + ("OBJTYPE", "COADD_FIBERSTATUS") + _TARGET_BIT_COLUMNS

#: Redrock columns joined into the batch metadata, with their fill values when there is no match.
REDROCK_COLUMNS = {
    "Z": np.nan,
    "ZERR": np.nan,
    "ZWARN": -1,  # all bits set: any "ZWARN != 0" test treats a missing redshift as bad
    "SPECTYPE": "",
    "SUBTYPE": "",
    "DELTACHI2": np.nan,
}
_REDROCK_DTYPES = {"Z": np.float64, "ZERR": np.float64, "ZWARN": np.int64,
                   "SPECTYPE": "U", "SUBTYPE": "U", "DELTACHI2": np.float64}

#: Image HDUs of each arm (``{ARM}_{PART}``); RESOLUTION is optional but must be in every arm or none.
_ARM_PARTS = ("WAVELENGTH", "FLUX", "IVAR", "MASK")
#: Every HDU a coadd may hold besides the primary: a file with a FIBERMAP and nothing outside this
#: set is a coadd (complete or damaged), one with another table too (REDSHIFTS, ...) a companion.
_COADD_HDUS = frozenset({"FIBERMAP", "EXP_FIBERMAP", "SCORES"}
                        | {f"{a}_{p}" for a in ARMS for p in _ARM_PARTS + ("RESOLUTION",)})
#: Slack allowed around an arm's nominal range (:data:`ARM_RANGES`): an arm grid outside it is
#: damaged (or not in vacuum Angstrom).
_WAVE_SLACK = 100.0

#: Primary-header keywords used (survey, program, healpix).
_PRIMARY_KEYS = ("SURVEY", "PROGRAM", "HPXPIXEL", "HPXNSIDE", "HPXNEST")

#: OBJTYPE values of fibres that carry no target (besides a negative TARGETID).
_NO_TARGET_OBJTYPES = ("NON", "BAD")

_HEALPIX_NAME = re.compile(r"^coadd-([a-z][a-z0-9]*)-([a-z][a-z0-9]*)-(\d+)\.fits(?:\.gz)?$")


# ---------------------------------------------------------------------------------------------
# structure
# ---------------------------------------------------------------------------------------------
def classify(fits) -> str:
    """What kind of DESI file an open ``fitsio.FITS`` is, from its structure alone.

    Returns
    -------
    str
        ``"coadd"`` (FIBERMAP plus arm fluxes, one row per target), ``"spectra"`` (the same HDUs
        but one FIBERMAP row per exposure: an uncoadded ``spectra-*`` file), ``"companion"``
        (a redrock/zbest file or another per-pixel table with a FIBERMAP but no spectra), or
        ``"other"`` (not a DESI spectro file).

        A FIBERMAP with no HDU beside it but coadd ones (arm images, EXP_FIBERMAP, SCORES) is a
        ``"coadd"`` even without its fluxes: a coadd whose arms were removed or that was cut short
        at an HDU boundary, which :func:`scan_coadd` then reports, instead of a companion passed
        over in silence.
    """
    has_fibermap = "FIBERMAP" in fits
    has_flux = any(f"{arm}_FLUX" in fits for arm in ARMS)
    if has_fibermap and (has_flux or _only_coadd_hdus(fits)):
        cols = fits["FIBERMAP"].get_colnames()
        return "spectra" if "EXPID" in cols else "coadd"
    if "REDSHIFTS" in fits or "ZBEST" in fits or has_fibermap:
        return "companion"
    return "other"


def _only_coadd_hdus(fits) -> bool:
    names = {(hdu.get_extname() or "").strip().upper() for hdu in list(fits)[1:]}
    return names <= _COADD_HDUS


def _check_coadd(fits, path: str) -> int:
    """Raise unless ``fits`` is a non-empty coadd; return its number of rows."""
    fibermap = get_hdu(fits, "FIBERMAP", path)
    nrows = fibermap.get_nrows()
    if not any(f"{arm}_FLUX" in fits for arm in ARMS):
        _raise_missing_arms(fits, path, nrows)
    if nrows == 0:
        raise EmptyFileError(path, "FIBERMAP is empty: the file holds no spectra")
    return nrows


def _check_arm_shapes(fits, path: str, arm: str, nrows: int) -> int:
    """Raise unless the arm's images agree with the FIBERMAP and its wavelength HDU; return npix."""
    dims = get_hdu(fits, f"{arm}_WAVELENGTH", path).get_dims()
    if len(dims) != 1:
        raise UnknownLayoutError(path, f"{arm}_WAVELENGTH has shape {tuple(dims)}, expected one axis")
    npix = int(dims[0])
    for part in ("FLUX", "IVAR", "MASK"):
        got = get_hdu(fits, f"{arm}_{part}", path).get_dims()
        if len(got) != 2 or got[0] != nrows or got[1] != npix:
            raise UnknownLayoutError(
                path, f"{arm}_{part} has shape {tuple(got)}, expected ({nrows}, {npix}) "
                      f"from FIBERMAP and {arm}_WAVELENGTH")
    return npix


def _raise_missing_arms(fits, path: str, nrows: int) -> None:
    """Raise :class:`MissingHDUError` naming the first arm HDU missing (file order), if any."""
    missing = [f"{a}_{p}" for a in ARMS for p in _ARM_PARTS if f"{a}_{p}" not in fits]
    if missing:
        more = f" (and {len(missing) - 1} more arm HDUs)" if len(missing) > 1 else ""
        raise MissingHDUError(path, f"required HDU {missing[0]!r} is missing{more}: a damaged or "
                                    f"cut-short coadd; its {nrows} FIBERMAP rows are not annotated")


def _check_complete_coadd(fits, path: str, nrows: int) -> None:
    """Raise unless every arm is there with its four images, of the FIBERMAP's length.

    What discovery checks (headers only), so that a coadd whose arms were removed or that was cut
    short at an HDU boundary (CFITSIO then just sees fewer HDUs) is reported, not half read.
    """
    _raise_missing_arms(fits, path, nrows)
    with_res = [a for a in ARMS if f"{a}_RESOLUTION" in fits]
    if with_res and len(with_res) != len(ARMS):
        lacking = next(a for a in ARMS if a not in with_res)
        raise MissingHDUError(path, f"HDU '{lacking}_RESOLUTION' is missing while other arms have "
                                    f"theirs: a damaged or cut-short coadd")
    for arm in ARMS:
        _check_arm_shapes(fits, path, arm, nrows)


def _check_wave(wave: np.ndarray, arm: str, path: str) -> None:
    """Raise unless ``wave`` is a finite, increasing grid inside the arm's nominal range."""
    lo, hi = ARM_RANGES[arm]
    with np.errstate(invalid="ignore"):
        ok = wave.size >= 2 and bool(np.all(np.isfinite(wave))) and bool(np.all(np.diff(wave) > 0))
    if not ok:
        raise UnknownLayoutError(path, f"{arm}_WAVELENGTH is not a finite, increasing wavelength grid")
    if wave[0] < lo - _WAVE_SLACK or wave[-1] > hi + _WAVE_SLACK:
        raise UnknownLayoutError(
            path, f"{arm}_WAVELENGTH spans {wave[0]:.6g}-{wave[-1]:.6g} A, outside the DESI {arm} arm "
                  f"({lo:.0f}-{hi:.0f} A): damaged, or not vacuum Angstrom")


def _clean_str(value) -> str:
    return str(value).strip() if value is not None else ""


def _survey_program(header, colnames, path: str, fibermap=None) -> tuple[str, str]:
    """The file's survey and program.

    In order: the primary header (``SURVEY``, ``PROGRAM``); the FIBERMAP columns of the same names
    (first row); the healpix file name ``coadd-{survey}-{program}-{pixel}.fits``; for the survey
    only, the prefix of ``SV1_``/``SV2_``/``SV3_`` target-bit columns. ``"unknown"`` when none
    says (tile-based coadds of DR1 carry neither keyword).
    """
    survey = _clean_str(header.get("SURVEY")).lower()
    program = _clean_str(header.get("PROGRAM")).lower()
    if (not survey or not program) and fibermap is not None:
        wanted = [c for c in ("SURVEY", "PROGRAM") if c in colnames]
        if wanted:
            first = read_columns(fibermap, wanted, np.array([0]), path)
            if not survey and "SURVEY" in wanted:
                survey = _clean_str(first["SURVEY"][0]).lower()
            if not program and "PROGRAM" in wanted:
                program = _clean_str(first["PROGRAM"][0]).lower()
    if not survey or not program:
        match = _HEALPIX_NAME.match(os.path.basename(path))
        if match:
            survey = survey or match.group(1)
            program = program or match.group(2)
    if not survey:
        for sv in _SV_SURVEYS:
            if f"{sv}_DESI_TARGET" in colnames:
                survey = sv.lower()
                break
    return survey or "unknown", program or "unknown"


def _header_healpix(header) -> int | None:
    """``HPXPIXEL`` when the header says nside 64 NESTED (EDR writes HPXNEST as the string 'True')."""
    pixel = header.get("HPXPIXEL")
    if pixel is None:
        return None
    nside = header.get("HPXNSIDE", 64)
    nest = header.get("HPXNEST", True)
    nest = nest if isinstance(nest, bool) else str(nest).strip().lower() in ("t", "true", "1")
    if int(nside) != 64 or not nest:
        return None
    return int(pixel)


# ---------------------------------------------------------------------------------------------
# redrock
# ---------------------------------------------------------------------------------------------
def find_redrock(coadd_path: str | os.PathLike) -> str | None:
    """The redrock file beside ``coadd_path`` (``coadd-X`` → ``redrock-X``), or None.

    Also accepts a gzip-compressed sibling and the ``zbest-X`` name of early releases.
    """
    coadd_path = os.fspath(coadd_path)
    folder, name = os.path.split(coadd_path)
    if not name.startswith("coadd-"):
        return None
    rest = name[len("coadd-"):]
    alt = rest[:-3] if rest.endswith(".gz") else rest + ".gz"
    for prefix in ("redrock-", "zbest-"):
        for suffix in (rest, alt):
            candidate = os.path.join(folder, prefix + suffix)
            if os.path.isfile(candidate):
                return candidate
    return None


def _empty_redrock(n: int) -> dict:
    out = {}
    for name, fill in REDROCK_COLUMNS.items():
        dtype = _REDROCK_DTYPES[name]
        out[name] = np.full(n, fill, dtype="U1" if dtype == "U" else dtype)
    out["REDROCK_FOUND"] = np.zeros(n, bool)
    return out


def _read_redrock(path: str, targetid: np.ndarray) -> tuple[dict, list[str]]:
    """Redrock columns for ``targetid`` (joined by TARGETID), and the problems met."""
    out = _empty_redrock(len(targetid))
    problems = []
    with open_fits(path) as fits:
        hdu_name = "ZBEST" if "REDSHIFTS" not in fits and "ZBEST" in fits else "REDSHIFTS"
        hdu = get_hdu(fits, hdu_name, path)
        colnames = hdu.get_colnames()
        missing = [c for c in ("TARGETID", "Z") if c not in colnames]
        if missing:
            raise UnknownLayoutError(path, f"{hdu_name} lacks columns {missing}")
        wanted = ["TARGETID"] + [c for c in REDROCK_COLUMNS if c in colnames]
        table = read_columns(hdu, wanted, None, path)
    rr_id = np.asarray(table["TARGETID"], dtype=np.int64)
    # Join by sorting: vectorised, and independent of the row order of either file.
    order = np.argsort(rr_id, kind="stable")
    sorted_id = rr_id[order]
    pos = np.clip(np.searchsorted(sorted_id, targetid), 0, max(len(sorted_id) - 1, 0))
    found = (sorted_id[pos] == targetid) if len(sorted_id) else np.zeros(len(targetid), bool)
    src = order[pos[found]]
    for name in wanted[1:]:
        col = np.asarray(table[name])
        if _REDROCK_DTYPES[name] == "U":
            col = np.char.strip(col.astype("U"))
            out[name] = out[name].astype(col.dtype)
        out[name][found] = col[src]
    out["REDROCK_FOUND"] = found
    if not found.all():
        problems.append(f"{path}: {int((~found).sum())} of {len(targetid)} targets have no redrock row")
    if len(np.unique(rr_id)) != len(rr_id):
        problems.append(f"{path}: duplicate TARGETIDs in {hdu_name}; the first row of each was used")
    return out, problems


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def _select_rows(fibermap, path, nrows, rows, targetids) -> tuple[np.ndarray | None, list[str]]:
    """Row indices to read (None = all) from ``rows`` or ``targetids``."""
    if rows is not None and targetids is not None:
        raise ValueError("give rows or targetids, not both")
    if targetids is None:
        return normalise_rows(rows, nrows), []
    wanted = np.unique(np.asarray(targetids, dtype=np.int64))
    ids = np.asarray(read_columns(fibermap, ["TARGETID"], None, path)["TARGETID"], dtype=np.int64)
    hit = np.isin(ids, wanted)
    problems = []
    nmissing = int((~np.isin(wanted, ids)).sum())
    if nmissing:
        problems.append(f"{path}: {nmissing} of {len(wanted)} requested TARGETIDs are not in the file")
    return np.flatnonzero(hit).astype(np.int64), problems


def _normalise_arms(arms) -> tuple[str, ...]:
    if isinstance(arms, str):
        arms = (arms,)
    asked = {str(a).upper() for a in arms}
    unknown = asked - set(ARMS)
    if unknown:
        raise ValueError(f"unknown DESI arm(s) {sorted(unknown)}; choose from {ARMS}")
    return tuple(a for a in ARMS if a in asked)


def _as_uint32_mask(mask: np.ndarray) -> np.ndarray:
    """DR1 stores MASK as int32, EDR as uint32 with BZERO: same bits, returned as uint32."""
    if mask.dtype == np.uint32:
        return mask
    if mask.dtype.itemsize == 4 and mask.dtype.kind == "i":
        # Reinterpret, not convert: bit 31 stays bit 31 (no copy for native-endian data).
        return mask.astype(mask.dtype.newbyteorder("="), copy=False).view(np.uint32)
    return mask.astype(np.uint32)


def _read_arm(fits, path, arm, rows, nrows, resolution) -> Arm:
    _check_arm_shapes(fits, path, arm, nrows)
    wave = np.asarray(get_hdu(fits, f"{arm}_WAVELENGTH", path).read(), dtype=np.float64)
    _check_wave(wave, arm, path)
    arrays = {part: read_image_rows(get_hdu(fits, f"{arm}_{part}", path), rows, path)
              for part in ("FLUX", "IVAR", "MASK")}
    res = None
    if resolution:
        res = read_image_rows(get_hdu(fits, f"{arm}_RESOLUTION", path), rows, path)
        res = res.astype(np.float32, copy=False)
    return Arm(arm, wave,
               arrays["FLUX"].astype(np.float32, copy=False),
               arrays["IVAR"].astype(np.float32, copy=False),
               _as_uint32_mask(arrays["MASK"]), res)


def _fibermap_meta(table, colnames, n) -> dict:
    """Per-target columns from the FIBERMAP rows read (fill values where a column is absent)."""
    meta = {
        "TARGETID": np.asarray(table["TARGETID"], dtype=np.int64),
        "TARGET_RA": np.asarray(table["TARGET_RA"], dtype=np.float64),
        "TARGET_DEC": np.asarray(table["TARGET_DEC"], dtype=np.float64),
    }
    if "OBJTYPE" in colnames:
        objtype = np.asarray(table["OBJTYPE"])
        if objtype.dtype.kind == "S":
            objtype = np.char.decode(objtype, "ascii")
        meta["OBJTYPE"] = np.char.strip(objtype.astype("U"))
    else:
        meta["OBJTYPE"] = np.full(n, "", dtype="U1")
    # Early productions called the coadded fibre status FIBERSTATUS.
    status = "COADD_FIBERSTATUS" if "COADD_FIBERSTATUS" in colnames else (
        "FIBERSTATUS" if "FIBERSTATUS" in colnames else None)
    meta["COADD_FIBERSTATUS"] = (np.asarray(table[status], dtype=np.int32) if status
                                 else np.zeros(n, np.int32))
    for name in _TARGET_BIT_COLUMNS:
        meta[name] = (np.asarray(table[name], dtype=np.int64) if name in colnames
                      else np.zeros(n, np.int64))
    return meta


def _fiber_kind(targetid: np.ndarray, objtype: np.ndarray) -> np.ndarray:
    unassigned = (targetid < 0) | np.isin(objtype, _NO_TARGET_OBJTYPES)
    sky = objtype == "SKY"
    return np.where(unassigned, "unassigned", np.where(sky, "sky", "target")).astype("U10")


def read_coadd(path: str | os.PathLike, *, arms=ARMS, rows=None, targetids=None,
               resolution: bool = False, redrock="auto") -> SpectraBatch:
    """Read a DESI coadd file into a :class:`~catalog_tool.batch.SpectraBatch`.

    Parameters
    ----------
    path : str or path-like
        A ``coadd-*.fits`` file, healpix- or tile-based (EDR or DR1 formats).
    arms : sequence of str
        Arms to read, any of ``B``, ``R``, ``Z`` (case-insensitive); returned in wavelength order.
        An empty sequence reads metadata only.
    rows : None, slice, sequence of int or boolean mask
        Rows of the file to read, in the order given (duplicates allowed). Only those rows'
        pixels are read from the images. Exclusive with ``targetids``.
    targetids : sequence of int, optional
        Read the rows whose TARGETID is listed, in file order; requested TARGETIDs absent from
        the file are reported in ``problems``.
    resolution : bool
        Also read ``{ARM}_RESOLUTION`` (float32, (N, ndiag, npix)). Off by default: it is most
        of the file's bytes and the pipeline does not need it.
    redrock : "auto", str or None
        ``"auto"``: the sibling ``redrock-*`` file (see :func:`find_redrock`); when it is missing
        or unreadable, the redrock columns are NaN / ``""`` / ZWARN -1 and the reason is in
        ``problems``. A path: that file (its absence or damage raises). None: do not read redrock
        (columns filled, nothing reported).

    Returns
    -------
    SpectraBatch
        Meta columns: the required ones (``SURVEY``/``PROGRAM`` per file, ``HEALPIX`` per target
        from TARGET_RA/DEC, nside 64 nested, -1 where the coordinates are not finite;
        ``FIBER_KIND`` ``target``/``sky``/``unassigned``), ``OBJTYPE``, ``COADD_FIBERSTATUS``,
        ``DESI_TARGET``/``MWS_TARGET`` (normalised: the ``SVn_`` columns for SV surveys),
        ``SV1_``/``SV2_``/``SV3_`` ``DESI_TARGET``/``MWS_TARGET`` as stored (0 where absent),
        and ``Z``, ``ZERR``, ``ZWARN``, ``SPECTYPE``, ``SUBTYPE``, ``DELTACHI2`` from redrock, with
        ``REDROCK_FOUND`` (bool) False where the target has no redrock row.

    Raises
    ------
    FileAccessError, NotFitsError, TruncatedFileError
        The file cannot be read, is not FITS, or is cut short / damaged.
    MissingHDUError
        FIBERMAP or an HDU of a requested arm is missing.
    EmptyFileError
        The FIBERMAP has no rows.
    UnknownLayoutError
        Required FIBERMAP columns missing, image shapes disagree with the FIBERMAP, or a
        wavelength grid is not finite and increasing inside its arm's nominal range.
    ValueError
        Bad ``arms``, ``rows`` or both ``rows`` and ``targetids`` given.
    """
    path = os.fspath(path)
    arm_names = _normalise_arms(arms)
    problems: list[str] = []
    with open_fits(path) as fits:
        nrows = _check_coadd(fits, path)
        header = read_keywords(fits, 0, _PRIMARY_KEYS, path)
        fibermap = fits["FIBERMAP"]
        colnames = fibermap.get_colnames()
        missing = [c for c in FIBERMAP_REQUIRED if c not in colnames]
        if missing:
            raise UnknownLayoutError(path, f"FIBERMAP lacks required columns {missing}")
        index, select_problems = _select_rows(fibermap, path, nrows, rows, targetids)
        problems += select_problems
        survey, program = _survey_program(header, colnames, path, fibermap)
        wanted = [c for c in FIBERMAP_COLUMNS if c in colnames]
        if "COADD_FIBERSTATUS" not in colnames and "FIBERSTATUS" in colnames:
            wanted.append("FIBERSTATUS")
        table = read_columns(fibermap, wanted, index, path)
        arm_data = {arm: _read_arm(fits, path, arm, index, nrows, resolution) for arm in arm_names}

    n = nrows if index is None else len(index)
    meta = _fibermap_meta(table, colnames, n)
    sv = survey.upper()
    if sv in _SV_SURVEYS:
        # SV target bits live in SVn_ columns; the plain ones are zero (or main-survey bits) there.
        for bits in _TARGET_BITS:
            meta[bits] = meta[f"{sv}_{bits}"].copy()
    ra, dec = meta["TARGET_RA"], meta["TARGET_DEC"]
    meta.update(
        SURVEY=np.full(n, survey),
        PROGRAM=np.full(n, program),
        HEALPIX=radec_to_healpix(ra=ra, dec=dec),
        FIBER_KIND=_fiber_kind(meta["TARGETID"], meta["OBJTYPE"]),
        SOURCE=np.full(n, path),
        ROW=(np.arange(n, dtype=np.int32) if index is None else index.astype(np.int32)),
    )

    rr, rr_problems = _empty_redrock(n), []
    if redrock == "auto":
        # the sibling file is optional: its absence or damage is reported, never fatal
        rr_path = find_redrock(path)
        if rr_path is None:
            rr_problems = [f"{path}: no redrock file beside it; Z, SPECTYPE, ... are empty"]
        else:
            try:
                rr, rr_problems = _read_redrock(rr_path, meta["TARGETID"])
            except InputFileError as exc:
                rr_problems = [f"redrock file not used: {exc}"]
    elif redrock is not None:
        rr_path = os.fspath(redrock)
        if not os.path.exists(rr_path):
            raise FileAccessError(rr_path, "redrock file not found")
        rr, rr_problems = _read_redrock(rr_path, meta["TARGETID"])
    meta.update(rr)
    problems += rr_problems
    return SpectraBatch(arms=arm_data, meta=meta, problems=problems)


def scan_coadd(path: str | os.PathLike) -> FileEntry:
    """Index entry of a DESI coadd from its headers (no spectra are read).

    The HEALPix pixel is ``HPXPIXEL`` of a healpix coadd (nside 64, nested); a tile-based coadd
    has none, so its pixel is the one holding the mean direction of its targets (a few
    TARGET_RA/DEC values, the only data read; robust to the RA = 0/360 wrap).

    Raises
    ------
    The errors of :func:`read_coadd` that concern the file's structure, plus
    :class:`~catalog_tool.errors.UnknownLayoutError` when the file is not a coadd.
    """
    path = os.fspath(path)
    with open_fits(path) as fits:
        kind = classify(fits)
        if kind != "coadd":
            _check_coadd(fits, path)  # names the missing HDU when there is one
            raise UnknownLayoutError(path, f"not a DESI coadd file (looks like a {kind} file)")
        nrows = _check_coadd(fits, path)
        _check_complete_coadd(fits, path, nrows)
        header = read_keywords(fits, 0, _PRIMARY_KEYS, path)
        fibermap = fits["FIBERMAP"]
        colnames = fibermap.get_colnames()
        survey, program = _survey_program(header, colnames, path, fibermap)
        pixel = _header_healpix(header)
        layout = "healpix" if pixel is not None else "tile"
        if pixel is None:
            missing = [c for c in FIBERMAP_REQUIRED if c not in colnames]
            if missing:
                raise UnknownLayoutError(path, f"FIBERMAP lacks required columns {missing}")
            table = read_columns(fibermap, ["TARGETID", "TARGET_RA", "TARGET_DEC"], None, path)
            real = np.asarray(table["TARGETID"]) >= 0
            pixel = pixel_of_targets(ra=np.asarray(table["TARGET_RA"], dtype=np.float64)[real],
                                     dec=np.asarray(table["TARGET_DEC"], dtype=np.float64)[real])
    return FileEntry(path=path, kind="desi", survey=survey, program=program, healpix=int(pixel),
                     nspec=int(nrows), nbytes=os.path.getsize(path), layout=layout)


# ---------------------------------------------------------------------------------------------
# what the reader registry (catalog_tool.io.readers) asks of a survey
# ---------------------------------------------------------------------------------------------
_SPECTRA_FILE = ("uncoadded DESI spectra file (one FIBERMAP row per exposure); "
                 "stxcat reads the coadd files")


def sniff(fits) -> tuple[str, str | None] | None:
    """Discovery's question to this reader about an open file: ``("read", None)`` for a coadd,
    ``("companion", None)`` for a redrock-like companion (read with its coadd), ``("skip", reason)``
    for an uncoadded spectra file, None for anything that is not a DESI spectro file."""
    kind = classify(fits)
    if kind == "coadd":
        return "read", None
    if kind == "companion":
        return "companion", None
    if kind == "spectra":
        return "skip", _SPECTRA_FILE
    return None


def arms_covering(lo: float, hi: float) -> tuple[str, ...]:
    """The arms with pixels in the observed range [lo, hi] (A), in wavelength order."""
    return tuple(a for a, (a0, a1) in ARM_RANGES.items() if a0 <= hi and a1 >= lo)


def read_files(paths, *, wave_range=None) -> tuple[list[SpectraBatch], list[tuple[str, str]]]:
    """Read coadds one by one: a batch per readable file, ``(path, reason)`` per file that is not.

    ``wave_range`` is the observed range (A) preprocessing will use
    (:func:`catalog_tool.preprocess.chain.needed_observed_range`): only the arms covering it are
    read (:func:`arms_covering`); every arm when None.
    """
    arms = ARMS if wave_range is None else arms_covering(*wave_range)
    batches, failures = [], []
    for path in paths:
        try:
            batches.append(read_coadd(path, arms=arms))
        except InputFileError as exc:
            failures.append((exc.path, exc.problem))
    return batches, failures


def select_stars(meta: dict) -> np.ndarray:
    """Rows of a DESI batch to estimate: redrock ``SPECTYPE == 'STAR'``; where redrock says nothing
    (no companion file, or the target not in it), Milky Way Survey targets (``MWS_TARGET != 0``).

    A redrock classification always wins over the targeting bit: MWS targets that redrock calls
    GALAXY or QSO are not estimated. Sky and unassigned fibres are left to
    :func:`catalog_tool.select.is_target`.
    """
    n = len(meta["TARGETID"])
    spectype = text_column(meta["SPECTYPE"]) if "SPECTYPE" in meta else np.full(n, "")
    has_redrock = spectype != ""
    star = has_redrock & (spectype == "STAR")
    if "MWS_TARGET" in meta:
        star |= ~has_redrock & (np.asarray(meta["MWS_TARGET"]).astype(np.int64) != 0)
    return star
