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
from catalog_tool.vac import datamodel as dm

__all__ = ["ReportError", "VacColumns", "REQUIRED", "read_vac_columns"]


class ReportError(StxcatError):
    """A report cannot be made from the inputs (not a VAC, unusable truth table, ...)."""


#: Columns a file must have to be reported on as a VAC.
REQUIRED = ("TARGETID", "SURVEY", "PROGRAM", "HEALPIX", "SNR", "FLAGS", "FLAG_BAD")

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
        ``TARGETID``, ``SURVEY``/``PROGRAM`` (stripped str), ``HEALPIX``, ``SNR``, ``FLAGS``,
        ``FLAG_BAD``, ``PRIMARY`` when present, and each label ``X`` with ``X_ERR`` present.
    labels : tuple of str
        Labels found, in data-model order.
    provenance : dict
        Header cards of :data:`PROVENANCE_KEYS` that are set.
    """

    path: str
    nrows: int
    columns: dict
    labels: tuple
    provenance: dict = field(default_factory=dict)


def _as_str(a: np.ndarray) -> np.ndarray:
    """Fixed-width text (bytes or unicode, as fitsio gives it) as stripped unicode."""
    if a.dtype.kind == "S":
        a = np.char.decode(a, "ascii", errors="replace")
    return np.char.strip(a.astype(str))


def read_vac_columns(path: str | os.PathLike) -> VacColumns:
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
        cols = {}
        for name in wanted:
            # one column at a time: CFITSIO reads it with a strided pass, and the peak memory is
            # that of the columns kept, not of whole rows
            a = hdu.read_column(name) if nrows else np.zeros(0, dtype=dm.column(name).dtype)
            cols[name] = a
    for name in ("SURVEY", "PROGRAM"):
        cols[name] = _as_str(cols[name])
    for name, a in cols.items():
        if a.dtype.kind in "iuf" and a.dtype.byteorder not in ("=", "|"):
            cols[name] = a.astype(a.dtype.newbyteorder("="))  # native order: faster arithmetic
    cols["FLAG_BAD"] = cols["FLAG_BAD"].astype(bool)
    return VacColumns(path=path, nrows=int(nrows), columns=cols, labels=labels, provenance=provenance)
