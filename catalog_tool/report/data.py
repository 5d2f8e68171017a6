"""Reading what the report needs from a VAC: only the columns it plots, column by column.

A VAC of millions of rows is a few hundred bytes a row, most of it columns the report never looks
at (SOURCE, Z, the ensemble spreads, ...). Reading only the needed columns keeps the memory at
about 80 bytes a row and the time to one pass over each column.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from catalog_tool.errors import StxcatError
from catalog_tool.io.fitsutil import get_hdu, open_fits
from catalog_tool.report.stats import text_codes
from catalog_tool.vac import datamodel as dm

__all__ = ["ReportError", "VacColumns", "REQUIRED", "read_vac_columns"]


class ReportError(StxcatError):
    """A report cannot be made from the inputs (not a VAC, unusable truth table, ...)."""


#: Columns a file must have to be reported on as a VAC.
REQUIRED = ("TARGETID", "SURVEY", "PROGRAM", "HEALPIX", "SNR", "FLAGS", "FLAG_BAD")

#: Text columns kept as codes plus names (few distinct values).
TEXT_COLUMNS = ("SURVEY", "PROGRAM")
#: Rows read per step.
CHUNK_ROWS = 262_144

#: Header cards shown in the report's provenance table.
PROVENANCE_KEYS = ("STXCVER", "VACDMVER", "MODEL", "MODELSHA", "INPUT", "DATE", "COMMAND")


@dataclass
class VacColumns:
    """The columns of a VAC the report uses, as plain arrays.

    Attributes
    ----------
    path : str
    nrows : int
    columns : dict of str to ndarray
        ``TARGETID``, ``HEALPIX``, ``SNR``, ``FLAGS``,
        ``FLAG_BAD``, ``PRIMARY`` when present, and each label ``X`` with ``X_ERR`` present.
    labels : tuple of str
        Labels found, in data-model order.
    provenance : dict
        Header cards of :data:`PROVENANCE_KEYS` that are set.
    codes : dict of str to (ndarray, ndarray)
        For ``SURVEY`` and ``PROGRAM``: integer codes per row and the sorted, stripped names they
        index (``names[codes]`` is the column).
    """

    path: str
    nrows: int
    columns: dict
    labels: tuple
    provenance: dict = field(default_factory=dict)
    codes: dict = field(default_factory=dict)


def read_vac_columns(path: str | os.PathLike, *, chunk_rows: int = CHUNK_ROWS) -> VacColumns:
    """Read the report's columns of a VAC's ``STELLAR_PARAMS`` table.

    Raises
    ------
    FileAccessError, NotFitsError, TruncatedFileError
        The file is missing, not FITS or damaged.
    MissingHDUError
        There is no ``STELLAR_PARAMS`` extension.
    ReportError
        The table lacks VAC columns (:data:`REQUIRED`, or every label).
    """
    path = os.fspath(path)
    with open_fits(path) as fits:
        hdu = get_hdu(fits, dm.EXTNAME, path)
        present = set(hdu.get_colnames())
        missing = [c for c in REQUIRED if c not in present]
        labels = tuple(lab for lab in dm.LABELS if lab in present and f"{lab}_ERR" in present)
        if missing or not labels:
            what = ", ".join(missing) if missing else "any label with its _ERR column"
            raise ReportError(f"{path}: not an stxcat VAC (its {dm.EXTNAME} table lacks {what})")
        header = hdu.read_header()
        provenance = {k: header[k] for k in PROVENANCE_KEYS if k in header and header[k] not in (None, "")}
        nrows = hdu.get_nrows()
        wanted = list(REQUIRED) + (["PRIMARY"] if "PRIMARY" in present else [])
        wanted += [c for lab in labels for c in (lab, f"{lab}_ERR")]
        numeric = [c for c in wanted if c not in TEXT_COLUMNS]
        cols = {c: np.empty(nrows, dtype=dm.column(c).np_dtype) for c in numeric}
        text_parts: dict[str, list] = {c: [] for c in TEXT_COLUMNS}
        # Row chunks of every wanted column at once: one pass over the file (CFITSIO reads rows),
        # copied into contiguous native-order arrays; memory stays at the kept columns plus a chunk.
        for start in range(0, nrows, chunk_rows):
            stop = min(nrows, start + chunk_rows)
            block = hdu.read(columns=wanted, rows=np.arange(start, stop))
            for c in numeric:
                cols[c][start:stop] = block[c]
            for c in TEXT_COLUMNS:
                text_parts[c].append(text_codes(block[c]))
    # SURVEY and PROGRAM stay codes (4 bytes a row instead of 4 per character)
    codes = {c: _join_codes(text_parts[c]) for c in TEXT_COLUMNS}
    return VacColumns(path=path, nrows=int(nrows), columns=cols, labels=labels, provenance=provenance,
                      codes=codes)


def _join_codes(parts: list) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-chunk (codes, names) into codes over one sorted list of names."""
    if not parts:
        return np.zeros(0, np.int32), np.zeros(0, dtype="U1")
    names = np.unique(np.concatenate([n for _, n in parts]))
    return np.concatenate([np.searchsorted(names, n).astype(np.int32)[c] for c, n in parts]), names
