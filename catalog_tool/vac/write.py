"""Writing VAC FITS files: one table, merged part files, and per-HEALPix-pixel files.

File layout (see ``docs/vac.md``)::

    HDU 0  primary, no data: provenance, flag bits, data-model version
    HDU 1  STELLAR_PARAMS   the catalogue (uncompressed binary table; TUNIT/TCOMM/TUCD per column)
    HDU 2  ERRORS           input files that failed (FILE, REASON); written when errors are given
    HDU 3+ row-matched extras (optional), in the order given

Every HDU carries ``CHECKSUM``/``DATASUM``. Files are written to a temporary name in the destination
directory and renamed into place, so a reader never sees a half-written VAC and a killed run leaves
at most a ``.*.tmp`` file, never a truncated VAC under the real name.

Part files (one per partition, written by the pipeline with :func:`write_vac`) have the same format;
:func:`merge_parts` streams them into the final VAC in bounded memory: it reads only the few key
columns of all parts at once (about 30 bytes a row), then copies rows chunk by chunk.

Rows are ordered by ``HEALPIX`` then input order (part order, then row order within a part), and
``PRIMARY`` and ``FLAG_BAD`` are computed here, so the same input gives the same rows.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import fitsio
import numpy as np

from catalog_tool import __version__
from catalog_tool.errors import StxcatError
from catalog_tool.io.atomic import OutputExistsError, atomic_path
from catalog_tool.io.fitsutil import get_hdu, open_fits
from catalog_tool.io.readers import id_space
from catalog_tool.vac import datamodel as dm
from catalog_tool.vac import flags as fl

__all__ = [
    "Provenance",
    "OutputExistsError",
    "PartFileError",
    "LostRowsError",
    "MergeResult",
    "write_vac",
    "merge_parts",
    "write_per_pixel",
    "per_pixel_path",
    "primary_mask",
    "read_vac",
    "read_errors",
    "atomic_path",
]

#: Rows copied per step by :func:`merge_parts` (about 20 MB of table at ~200 bytes a row).
DEFAULT_CHUNK_ROWS = 100_000

#: Header keys that are not provenance: FITS structure, column cards, flag cards, checksums.
_STRUCTURAL = re.compile(
    r"SIMPLE|BITPIX|NAXIS\d*|EXTEND|XTENSION|PCOUNT|GCOUNT|TFIELDS|EXTNAME|EXTVER|EXTLEVEL|COMMENT|"
    r"HISTORY|CONTINUE|CHECKSUM|DATASUM|BADMASK|ROWMATCH|FLAGB\d+|"
    r"T(TYPE|FORM|UNIT|COMM|UCD|NULL|DISP|DIM|SCAL|ZERO)\d+|")

#: What SURVEY and PROGRAM may look like to become a directory name.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

_ERRORS_COLUMNS = (
    # name, ucd, description
    ("FILE", "meta.id;meta.file", "input file that could not be used"),
    ("REASON", "meta.note", "why it failed"),
)


class PartFileError(StxcatError):
    """A part file cannot be merged (unreadable, or not in the VAC format)."""


class LostRowsError(StxcatError):
    """The parts do not hold the rows the run expects of its input files: the VAC is not written."""


@dataclass(frozen=True)
class Provenance:
    """What made a VAC; written into the primary and the table header.

    Parameters
    ----------
    model_name : str
        Bundle name (``MODEL``).
    model_sha256 : str
        sha256 of the bundle's weights (``MODELSHA``, 64 hex digits).
    command : str
        The command line (``COMMAND``; long values use the CONTINUE convention).
    input_release : str
        What was read: release directory or files (``INPUT``).
    date : str, optional
        ISO-8601 UTC time of the run (``DATE``); the time of writing when None. Pass one value for
        the whole run so part files and the merged VAC agree.
    stxcat_version : str
        ``STXCVER``; this package's version by default.
    thresholds : FlagThresholds
        Flag thresholds used (JSON in ``FLAGTHR``).
    extra : tuple of (str, value, str)
        More cards ``(KEY, value, comment)``: keys of at most 8 characters, values str/int/float/bool.
    """

    model_name: str
    model_sha256: str
    command: str
    input_release: str
    date: str | None = None
    stxcat_version: str = __version__
    thresholds: fl.FlagThresholds = fl.DEFAULT_THRESHOLDS
    extra: tuple = ()

    def resolved(self) -> "Provenance":
        """This provenance with ``date`` filled in (now, UTC) when it was None."""
        if self.date is not None:
            return self
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        return Provenance(self.model_name, self.model_sha256, self.command, self.input_release,
                          now, self.stxcat_version, self.thresholds, self.extra)

    def cards(self) -> list[dict]:
        """Header cards (fitsio dicts); ``date`` must be set (see :meth:`resolved`)."""
        cards = [
            {"name": "LONGSTRN", "value": "OGIP 1.0", "comment": "long strings use CONTINUE cards"},
            {"name": "STXCVER", "value": self.stxcat_version, "comment": "stxcat version"},
            {"name": "VACDMVER", "value": dm.DATAMODEL_VERSION, "comment": "VAC data model version"},
            {"name": "MODEL", "value": self.model_name, "comment": "model bundle name"},
            {"name": "MODELSHA", "value": self.model_sha256, "comment": "sha256 of the model weights"},
            {"name": "COMMAND", "value": self.command, "comment": "command line"},
            {"name": "INPUT", "value": self.input_release, "comment": "input release"},
            {"name": "DATE", "value": self.date, "comment": "UTC date of the run"},
            {"name": "HPXNSIDE", "value": dm.HEALPIX_NSIDE, "comment": "nside of HEALPIX column"},
            {"name": "HPXNEST", "value": True, "comment": "HEALPIX column uses NESTED ordering"},
            {"name": "FLAGTHR", "value": json.dumps(self.thresholds.to_dict()),
             "comment": "flag thresholds (JSON)"},
        ]
        for key, value, comment in self.extra:
            if len(key) > 8 or not key.replace("-", "").replace("_", "").isalnum() or key != key.upper():
                raise ValueError(f"provenance card {key!r}: FITS keys are at most 8 upper-case characters")
            cards.append({"name": key, "value": value, "comment": comment})
        return cards

    @classmethod
    def from_header(cls, header) -> "Provenance":
        """The provenance written in a VAC header (fitsio ``FITSHDR`` or a dict)."""
        def get(key, default=""):
            try:
                value = header[key]
            except KeyError:
                return default
            return default if value is None else value

        known = {c["name"] for c in cls("", "", "", "", date="x").cards()}
        extra = []
        for key in header.keys():
            if key in known or _STRUCTURAL.fullmatch(key):
                continue
            comment = header.get_comment(key) if hasattr(header, "get_comment") else ""
            extra.append((key, header[key], comment or ""))
        thr = get("FLAGTHR", "")
        return cls(
            model_name=str(get("MODEL")),
            model_sha256=str(get("MODELSHA")),
            command=str(get("COMMAND")),
            input_release=str(get("INPUT")),
            date=str(get("DATE")) or None,
            stxcat_version=str(get("STXCVER")),
            thresholds=fl.FlagThresholds.from_dict(json.loads(thr)) if thr else fl.DEFAULT_THRESHOLDS,
            extra=tuple(extra),
        )


@dataclass(frozen=True)
class MergeResult:
    """What :func:`merge_parts` wrote."""

    path: str
    nrows: int
    nparts: int
    nprimary: int
    errors: list


# ---------------------------------------------------------------------------------------------
# pure helpers

def primary_mask(*, targetid, survey, snr) -> np.ndarray:
    """``PRIMARY``: True on one row per target, the one with the best S/N.

    Rows are grouped by ``TARGETID`` across DESI surveys and programs; rows of a survey whose ids
    are not DESI TARGETIDs (LAMOST's OBSIDs: :attr:`Reader.own_id_surveys
    <catalog_tool.io.readers.Reader.own_id_surveys>`) form their own group space. Within a group
    the row with the highest finite ``SNR`` wins; ties, and groups without a finite S/N, go to the
    first row in the order given (the file order, so the choice is deterministic).

    Parameters
    ----------
    targetid : array of int64, shape (N,)
    survey : array of str or bytes, shape (N,)
    snr : array of float, shape (N,)

    Returns
    -------
    ndarray of bool, shape (N,)
    """
    targetid = np.asarray(targetid, dtype=np.int64)
    return _primary_from_keys(targetid=targetid, space=id_space(survey), snr=snr)


def _primary_from_keys(*, targetid: np.ndarray, space: np.ndarray, snr) -> np.ndarray:
    n = targetid.shape[0]
    snr = np.asarray(snr, dtype=np.float64)
    # NaN S/N ranks below any finite one
    neg_snr = np.where(np.isfinite(snr), -snr, np.inf)
    order = np.lexsort((np.arange(n), neg_snr, targetid, space))
    t, sp = targetid[order], space[order]
    first = np.ones(n, dtype=bool)
    first[1:] = (t[1:] != t[:-1]) | (sp[1:] != sp[:-1])
    out = np.zeros(n, dtype=bool)
    out[order[first]] = True
    return out


def per_pixel_path(out_dir: str | os.PathLike, *, survey: str, program: str, pixel: int) -> str:
    """Path of one per-pixel VAC in the DESI layout.

    ``{out_dir}/healpix/{survey}/{program}/{pixel//100}/{pixel}/stxcat-{survey}-{program}-{pixel}.fits``;
    a blank survey or program (e.g. a LAMOST file of unknown release) becomes ``unknown``.
    """
    pixel = int(pixel)
    survey, program = survey.strip() or "unknown", program.strip() or "unknown"
    for what, value in (("survey", survey), ("program", program)):
        if not _SAFE_NAME.fullmatch(value):
            raise dm.DataModelError(f"{what} {value!r} cannot be used in a file name")
    return os.path.join(os.fspath(out_dir), "healpix", survey, program, str(pixel // 100), str(pixel),
                        f"stxcat-{survey}-{program}-{pixel}.fits")


def _conform(rows: np.ndarray) -> np.ndarray:
    """Rows read from a VAC (fitsio: unicode strings, big-endian) in the model's exact dtype."""
    dm.validate_table(rows)
    return rows.astype(dm.table_dtype())


# ---------------------------------------------------------------------------------------------
# low-level writing

def _write_cards(hdu, cards: Iterable[dict]) -> None:
    for card in cards:
        hdu.write_key(card["name"], card["value"], comment=card.get("comment", ""))


def _create_vac_table(fits: fitsio.FITS, header_cards: list[dict]):
    """Create an empty STELLAR_PARAMS HDU with the column metadata cards; return it."""
    fits.create_table_hdu(dtype=dm.table_dtype(), extname=dm.EXTNAME,
                          units=[c.unit for c in dm.COLUMNS])
    hdu = fits[-1]
    for i, c in enumerate(dm.COLUMNS, start=1):
        hdu.write_key(f"TUNIT{i}", c.unit, comment="unit" if c.unit else "no unit (dex or dimensionless)")
        hdu.write_key(f"TCOMM{i}", c.description)
        hdu.write_key(f"TUCD{i}", c.ucd)
        if c.null is not None:
            hdu.write_key(f"TNULL{i}", c.null, comment="value of a missing entry")
    _write_cards(hdu, header_cards)
    return hdu


def _write_errors(fits: fitsio.FITS, errors: Sequence[tuple[str, str]], header_cards: list[dict]) -> None:
    # FITS text is ASCII: other characters of a file name are kept as backslash escapes
    files = [str(f).encode("ascii", "backslashreplace") for f, _ in errors]
    reasons = [" ".join(str(r).split()).encode("ascii", "backslashreplace") for _, r in errors]
    wf = max([1, *(len(f) for f in files)])
    wr = max([1, *(len(r) for r in reasons)])
    data = np.zeros(len(errors), dtype=[("FILE", f"S{wf}"), ("REASON", f"S{wr}")])
    data["FILE"] = files
    data["REASON"] = reasons
    fits.create_table_hdu(dtype=data.dtype, extname=dm.ERRORS_EXTNAME)
    hdu = fits[-1]
    for i, (_, ucd, desc) in enumerate(_ERRORS_COLUMNS, start=1):
        hdu.write_key(f"TCOMM{i}", desc)
        hdu.write_key(f"TUCD{i}", ucd)
    _write_cards(hdu, header_cards)
    if len(data):
        hdu.append(data)


def _write_file(
    path: str,
    chunks: Iterable[np.ndarray],
    *,
    provenance: Provenance,
    errors: Sequence[tuple[str, str]] | None,
    extras: Mapping[str, Iterable[np.ndarray]] | None,
    overwrite: bool,
) -> int:
    """Write a VAC from an iterable of STELLAR_PARAMS chunks (model dtype); return the row count.

    ``extras`` maps EXTNAME to an iterable of chunks, consumed only after the main table and
    ``ERRORS`` are written: appending rows to an HDU that is not the last would make CFITSIO shift
    everything after it, so each HDU is written whole before the next one starts.
    """
    prov = provenance.resolved()
    cards = prov.cards() + fl.header_cards()
    with atomic_path(path, overwrite=overwrite) as tmp:
        with fitsio.FITS(tmp, "rw", clobber=True) as fits:
            fits.write(None, header=cards)
            table = _create_vac_table(fits, cards)
            nrows = 0
            for chunk in chunks:
                table.append(chunk)
                nrows += len(chunk)
            if errors is not None:
                _write_errors(fits, errors, cards)
            for name, extra_chunks in (extras or {}).items():
                hdu, nextra = None, 0
                for part in extra_chunks:
                    if hdu is None:
                        fits.create_table_hdu(dtype=part.dtype, extname=name)
                        hdu = fits[-1]
                        hdu.write_key("ROWMATCH", True, comment="row-matched to STELLAR_PARAMS")
                    hdu.append(part)
                    nextra += len(part)
                if nextra != nrows:
                    raise dm.DataModelError(f"extra HDU {name}: {nextra} rows where STELLAR_PARAMS "
                                            f"has {nrows}")
            for hdu in fits:
                hdu.write_checksum()
    return nrows


def write_vac(
    path: str | os.PathLike,
    table,
    *,
    provenance: Provenance,
    errors: Sequence[tuple[str, str]] | None = None,
    extras: Mapping[str, np.ndarray] | None = None,
    compute_primary: bool = True,
    overwrite: bool = False,
) -> str:
    """Write one VAC (or a part file) atomically.

    Parameters
    ----------
    path : path
        Output; its directory is created. Written to a temporary name first.
    table : mapping of str to array, or structured array
        The rows, by column name (see :func:`catalog_tool.vac.datamodel.to_table`; missing columns
        are null-filled, unknown ones refused). Reordered by ``HEALPIX``, stable.
    provenance : Provenance
    errors : list of (file, reason), optional
        Input files that failed; written as the ``ERRORS`` HDU when not None (even if empty).
    extras : mapping of str to structured array, optional
        Row-matched tables (same length as ``table``), reordered with it, written after ``ERRORS``.
    compute_primary : bool
        Compute ``PRIMARY`` within this table; False keeps the given values (per-pixel files keep
        the merged VAC's). ``FLAG_BAD`` is always recomputed from ``FLAGS``.
    overwrite : bool
        Replace an existing file; otherwise :class:`OutputExistsError`.

    Returns
    -------
    str
        ``path``.
    """
    data = dm.to_table(table)
    order = np.argsort(data["HEALPIX"], kind="stable")
    data = data[order]
    data["FLAG_BAD"] = fl.flag_bad(data["FLAGS"])
    if compute_primary:
        data["PRIMARY"] = primary_mask(targetid=data["TARGETID"], survey=data["SURVEY"], snr=data["SNR"])
    ordered_extras = {}
    for name, extra in (extras or {}).items():
        extra = np.asarray(extra)
        if len(extra) != len(data):
            raise dm.DataModelError(f"extra HDU {name}: {len(extra)} rows, STELLAR_PARAMS has {len(data)}")
        if name in (dm.EXTNAME, dm.ERRORS_EXTNAME):
            raise dm.DataModelError(f"extra HDU name {name} is reserved")
        if extra.dtype.names is None:
            raise dm.DataModelError(f"extra HDU {name} must be a structured array")
        ordered_extras[name] = [extra[order]]
    _write_file(os.fspath(path), [data], provenance=provenance, errors=errors,
                extras=ordered_extras, overwrite=overwrite)
    return os.fspath(path)


# ---------------------------------------------------------------------------------------------
# reading

def read_vac(path: str | os.PathLike, *, columns: Sequence[str] | None = None, rows=None) -> np.ndarray:
    """The ``STELLAR_PARAMS`` rows of a VAC (all columns: in the model's dtype)."""
    with open_fits(path) as fits:
        hdu = get_hdu(fits, dm.EXTNAME, path)
        if hdu.get_nrows() == 0:
            empty = dm.empty_table(0)
            return empty[list(columns)] if columns else empty
        data = hdu.read(columns=list(columns) if columns else None, rows=rows)
    return data if columns else _conform(data)


def read_errors(path: str | os.PathLike) -> list[tuple[str, str]]:
    """The ``ERRORS`` table of a VAC as ``[(file, reason)]``; empty when there is none."""
    with open_fits(path) as fits:
        return _errors_of(fits)


def _errors_of(fits: fitsio.FITS) -> list[tuple[str, str]]:
    """:func:`read_errors` on a file already open."""
    if dm.ERRORS_EXTNAME not in fits or fits[dm.ERRORS_EXTNAME].get_nrows() == 0:
        return []
    data = fits[dm.ERRORS_EXTNAME].read()
    return [(str(f).strip(), str(r).strip()) for f, r in zip(data["FILE"], data["REASON"])]


# ---------------------------------------------------------------------------------------------
# merging part files

def _extra_names(fits: fitsio.FITS) -> list[str]:
    names = []
    for hdu in fits[2:] if len(fits) > 2 else []:
        name = hdu.get_extname()
        if name != dm.ERRORS_EXTNAME:
            names.append(name)
    return names


def _scan_part(path: str, *, sources: bool = False) -> tuple[dict, list, list, dict]:
    """Key columns, errors and extra-HDU names of one part file, and (``sources``) its rows per
    ``SOURCE``: ``{source: (rows, distinct SOURCE_ROW values)}``."""
    columns = ["HEALPIX", "TARGETID", "SURVEY", "SNR"] + (["SOURCE", "SOURCE_ROW"] if sources else [])
    try:
        with open_fits(path) as fits:
            hdu = get_hdu(fits, dm.EXTNAME, path)
            got = tuple(hdu.get_colnames())
            if got != dm.names():
                raise PartFileError(f"{path}: columns differ from the VAC data model")
            keys = hdu.read(columns=columns) if hdu.get_nrows() else None
            extras = _extra_names(fits)
            errors = _errors_of(fits)  # in the same open: a part file is opened once here
    except StxcatError as exc:
        if isinstance(exc, PartFileError):
            raise
        raise PartFileError(f"part file unusable: {exc}") from None
    per_source: dict = {}
    if keys is None:
        keys = np.zeros(0, dtype=[("HEALPIX", "i4"), ("TARGETID", "i8"), ("SURVEY", "S8"), ("SNR", "f4")])
    elif sources:
        names = np.char.strip(np.asarray(keys["SOURCE"]).astype(str))
        pairs = np.unique(np.rec.fromarrays([names, keys["SOURCE_ROW"].astype(np.int64)]))
        uniq, rows = np.unique(names, return_counts=True)
        distinct = dict(zip(*np.unique(pairs["f0"], return_counts=True)))
        per_source = {str(u): (int(r), int(distinct[u])) for u, r in zip(uniq, rows)}
    # compact: ~17 bytes a row (the survey name as read is 32)
    compact = {"HEALPIX": keys["HEALPIX"].astype(np.int32), "TARGETID": keys["TARGETID"].astype(np.int64),
               "ID_SPACE": id_space(keys["SURVEY"]), "SNR": keys["SNR"].astype(np.float32)}
    return compact, errors, extras, per_source


def _check_rows(per_source: dict, expected: Mapping[str, tuple[int, int]], out: str) -> None:
    """Raise :class:`LostRowsError` unless every input file has its expected rows, each once."""
    wrong = []
    for name in sorted(set(expected) | set(per_source)):
        rows, distinct = per_source.get(name, (0, 0))
        want, nfiles = expected.get(name, (None, 0))
        if want is None:
            wrong.append(f"{name}: {rows} rows from a file the run did not plan")
        elif rows != want:
            wrong.append(f"{name}: {rows} rows, {want} expected")
        elif nfiles == 1 and distinct != rows:
            wrong.append(f"{name}: {rows - distinct} of its rows appear more than once")
    if wrong:
        raise LostRowsError(
            f"refusing to write {out}: the part files do not hold one row per target of each input file "
            f"({'; '.join(wrong[:3])}{'; ...' if len(wrong) > 3 else ''}); this is an stxcat bug: "
            f"please report it with the work dir's stxcat.log")


def merge_parts(
    parts: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    provenance: Provenance,
    errors: Sequence[tuple[str, str]] = (),
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    overwrite: bool = False,
    expected_rows: Mapping[str, tuple[int, int]] | None = None,
) -> MergeResult:
    """Merge part files (VACs of the same format) into one VAC, streaming.

    Rows are ordered by ``HEALPIX``, then by part (in the order of ``parts``), then by row within a
    part. ``PRIMARY`` is computed across all parts and ``FLAG_BAD`` from ``FLAGS``. The ``ERRORS``
    tables of the parts are concatenated after ``errors`` and always written (possibly empty).
    Extra HDUs are merged too when every part has the same ones.

    Memory: the key columns of every row (about 30 bytes a row) plus ``chunk_rows`` rows at a time.

    Parameters
    ----------
    parts : sequence of paths
        Part files in partition order.
    out : path
        The merged VAC (written atomically).
    provenance : Provenance
    errors : list of (file, reason)
        Failures known outside the parts (e.g. files the plan could not open).
    chunk_rows : int
        Rows copied per step.
    overwrite : bool
    expected_rows : mapping of str to (int, int), optional
        By ``SOURCE`` value (see :func:`catalog_tool.vac.datamodel.source_name`): the rows the
        input files of that name must have together (0 for a failed one) and how many files share
        the name. Checked against the parts before anything is written, and each
        (``SOURCE``, ``SOURCE_ROW``) must be there once when one file has the name.

    Returns
    -------
    MergeResult

    Raises
    ------
    PartFileError
        A part is missing, unreadable or not in the VAC format, or parts have different extras.
    LostRowsError
        ``expected_rows`` given and the parts do not match it (rows lost, duplicated, or from a file
        not expected); nothing is written.
    """
    parts = [os.fspath(p) for p in parts]
    keys, all_errors, extra_names = [], list(errors), None
    per_source: dict = {}
    for p in parts:
        k, errs, extras, sources = _scan_part(p, sources=expected_rows is not None)
        if extra_names is None:
            extra_names = extras
        elif extras != extra_names:
            raise PartFileError(f"{p}: extra HDUs {extras} differ from the first part's {extra_names}")
        keys.append(k)
        all_errors.extend(errs)
        for name, (rows, distinct) in sources.items():
            r0, d0 = per_source.get(name, (0, 0))
            per_source[name] = (r0 + rows, d0 + distinct)
    extra_names = extra_names or []
    if expected_rows is not None:
        _check_rows(per_source, expected_rows, os.fspath(out))

    sizes = np.array([len(k["HEALPIX"]) for k in keys], dtype=np.int64)
    n = int(sizes.sum())
    part_of = np.repeat(np.arange(len(parts), dtype=np.int32), sizes)
    row_of = np.concatenate([np.arange(s, dtype=np.int64) for s in sizes]) if n else np.zeros(0, np.int64)

    def cat(name):
        if not keys:
            return np.zeros(0, dtype=np.int8 if name == "ID_SPACE" else np.int64)
        return np.concatenate([k[name] for k in keys])

    order = np.lexsort((row_of, part_of, cat("HEALPIX")))
    primary = _primary_from_keys(targetid=cat("TARGETID")[order], space=cat("ID_SPACE")[order],
                                 snr=cat("SNR")[order])
    del keys

    def chunks(extname):
        for start in range(0, n, chunk_rows):
            sel = order[start:start + chunk_rows]
            p_sel, r_sel = part_of[sel], row_of[sel]
            out_chunk = None
            for k in np.unique(p_sel):
                where = np.flatnonzero(p_sel == k)
                rows = r_sel[where]
                srt = np.argsort(rows, kind="stable")
                with open_fits(parts[k]) as fits:
                    got = get_hdu(fits, extname, parts[k]).read(rows=rows[srt])
                if extname == dm.EXTNAME:
                    got = _conform(got)
                if out_chunk is None:
                    out_chunk = np.empty(len(sel), dtype=got.dtype)
                out_chunk[where[srt]] = got
            if extname == dm.EXTNAME:
                out_chunk["PRIMARY"] = primary[start:start + len(sel)]
                out_chunk["FLAG_BAD"] = fl.flag_bad(out_chunk["FLAGS"])
            yield out_chunk

    nrows = _write_file(os.fspath(out), chunks(dm.EXTNAME), provenance=provenance, errors=all_errors,
                        extras={name: chunks(name) for name in extra_names}, overwrite=overwrite)
    return MergeResult(os.fspath(out), nrows, len(parts), int(primary.sum()), all_errors)


# ---------------------------------------------------------------------------------------------
# per-pixel files

def write_per_pixel(vac_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                    overwrite: bool = False) -> list[str]:
    """Split a merged VAC into one VAC per (SURVEY, PROGRAM, HEALPix pixel), DESI layout.

    Each file (see :func:`per_pixel_path`) has the merged VAC's provenance and its rows in the same
    order; ``PRIMARY`` keeps the merged (whole-catalogue) value. The ``ERRORS`` table stays in the
    merged VAC only. Reads one pixel's rows at a time (the VAC is sorted by ``HEALPIX``).

    Returns
    -------
    list of str
        Paths written, in (pixel, survey, program) order.
    """
    vac_path = os.fspath(vac_path)
    with open_fits(vac_path) as fits:
        prov = Provenance.from_header(fits[0].read_header())
        hdu = get_hdu(fits, dm.EXTNAME, vac_path)
        nrows = hdu.get_nrows()
        healpix = hdu.read_column("HEALPIX") if nrows else np.zeros(0, np.int32)
        if np.any(np.diff(healpix) < 0):
            raise PartFileError(f"{vac_path}: rows are not ordered by HEALPIX")
        starts = np.flatnonzero(np.r_[True, healpix[1:] != healpix[:-1]]) if nrows else np.zeros(0, int)
        stops = np.r_[starts[1:], nrows].astype(int)
        written = []
        for a, b in zip(starts, stops):
            rows = _conform(hdu[int(a):int(b)])
            pixel = int(rows["HEALPIX"][0])
            combos = np.unique(np.stack([rows["SURVEY"], rows["PROGRAM"]], axis=1), axis=0)
            for survey, program in combos:
                sel = (rows["SURVEY"] == survey) & (rows["PROGRAM"] == program)
                path = per_pixel_path(out_dir, survey=survey.decode().strip(),
                                      program=program.decode().strip(), pixel=pixel)
                _write_file(path, [rows[sel]], provenance=prov, errors=None, extras=None,
                            overwrite=overwrite)
                written.append(path)
    return written
