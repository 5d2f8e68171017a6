"""Label catalogues as survey teams have them: APOGEE allStar, GALAH allstar, or any FITS/CSV table.

One place decides how a table given with ``--labels`` becomes reference labels, for every command
that takes it (``pretrain``, ``finetune``, ``evaluate``, ``calibrate``):

* **Which column is what.** Each label (``FEH``, ``TEFF``, ...) and each role -- ``TARGETID`` (joins
  on DESI TARGETID / LAMOST OBSID), ``ID`` (the catalogue's own star id, for duplicates), ``RA``,
  ``DEC``, ``SNR``, and a label's error ``<LABEL>_ERR`` -- is found, in this order, from an explicit
  ``--label-column KEY=COLUMN``, a ``--label-preset`` (:data:`PRESETS`), or a column of the same name.
* **Quality cuts.** ``--where`` (parsed safely by :mod:`catalog_tool.train.where`) on any columns.
* **Missing values.** NaN, +-inf and values <= -9999 (the APOGEE / IRAF sentinel) are missing,
  per label: a star keeps its other labels (the training loss masks the missing ones).
* **Duplicates.** Rows of the same star (equal ``ID``, or within 1 arcsec of each other) are
  reduced to the one with the highest ``SNR`` (missing S/N ranks last; ties: first row), after the
  cuts, among rows that have at least one of the labels asked for; the number dropped is reported.

Only the columns needed are read, so a full allStar (hundreds of array columns, GBs) costs little.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field

import numpy as np

from catalog_tool.errors import ConfigError, InputFileError
from catalog_tool.train import where as where_mod
from catalog_tool.train.skymatch import pairs_within

__all__ = ["LabelOptions", "LabelTable", "PRESETS", "ROLES", "MISSING_BELOW", "MATCH_ARCSEC", "read_labels",
           "describe", "available_labels", "table_columns", "file_sha256"]

#: Roles a column can play besides being a label (keys of ``--label-column``).
ROLES = ("TARGETID", "ID", "RA", "DEC", "SNR")
#: Values at or below this are missing (APOGEE writes -9999 for "not measured").
MISSING_BELOW = -9999.0
#: Rows closer than this on the sky are the same star (also the spectra-to-table match radius).
MATCH_ARCSEC = 1.0
_LAMOST_ID = "OBSID"  # a LAMOST table's OBSID is the TARGETID the readers give LAMOST spectra

#: Column names of the survey catalogues (upper case: table columns are matched case-insensitively).
#: A preset's columns are used when the table has them; explicit ``--label-column`` entries win.
PRESETS = {
    "apogee": {
        "title": "APOGEE DR17 allStar (ASPCAP)",
        "columns": {
            "FEH": "FE_H", "FEH_ERR": "FE_H_ERR",
            # allStar has no [alpha/Fe] column: [alpha/M] equals it where [M/H] = [Fe/H] (the usual proxy)
            "ALPHAFE": "ALPHA_M", "ALPHAFE_ERR": "ALPHA_M_ERR",
            "MH": "M_H", "MH_ERR": "M_H_ERR",
            "TEFF": "TEFF", "TEFF_ERR": "TEFF_ERR", "LOGG": "LOGG", "LOGG_ERR": "LOGG_ERR",
            "ID": "APOGEE_ID", "RA": "RA", "DEC": "DEC", "SNR": "SNR",
        },
        "suggested_where": "ASPCAPFLAG & 2**23 == 0 and EXTRATARG & 16 == 0 and SNR > 70",
    },
    "galah": {
        "title": "GALAH DR4 allstar",
        "columns": {
            "FEH": "FE_H", "FEH_ERR": "E_FE_H", "ALPHAFE": "ALPHA_FE", "ALPHAFE_ERR": "E_ALPHA_FE",
            "TEFF": "TEFF", "TEFF_ERR": "E_TEFF", "LOGG": "LOGG", "LOGG_ERR": "E_LOGG",
            # sobject_id names an observation (repeats of a star differ); the Gaia id names the star
            "ID": "GAIADR3_SOURCE_ID", "RA": "RA", "DEC": "DEC", "SNR": "SNR_PX_CCD3",
        },
        "suggested_where": "flag_sp == 0 and snr_px_ccd3 > 30",
    },
}


@dataclass(frozen=True)
class LabelOptions:
    """How to read a label table (``--label-preset``, ``--label-column``, ``--where``).

    Parameters
    ----------
    preset : str, optional
        A key of :data:`PRESETS` (``apogee``, ``galah``).
    columns : tuple of (key, column)
        Explicit assignments, key upper case: a label (``FEH``), a label error (``FEH_ERR``) or a
        role of :data:`ROLES`. The column must exist.
    where : str, optional
        A quality cut (:mod:`catalog_tool.train.where`); parsed when the options are made.
    """

    preset: str | None = None
    columns: tuple = ()
    where: str | None = None

    def __post_init__(self):
        if self.preset is not None and self.preset not in PRESETS:
            raise ConfigError(f"unknown --label-preset {self.preset!r} (known: {', '.join(PRESETS)})")
        keys = [k for k, _ in self.columns]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ConfigError(f"--label-column gives {', '.join(dup)} more than once")
        if self.where is not None:
            where_mod.parse(self.where)  # syntax errors now, before any spectrum is read

    @classmethod
    def from_cli(cls, *, preset=None, columns=(), where=None) -> "LabelOptions":
        """From the command-line strings (``columns`` as ``KEY=COLUMN``)."""
        pairs = []
        for item in columns or ():
            key, sep, col = str(item).partition("=")
            key, col = key.strip().upper(), col.strip()
            if not sep or not key or not col or not key.replace("_", "").isalnum() or not key[0].isalpha():
                raise ConfigError(f"--label-column {item!r} must look like LABEL=COLUMN (e.g. FEH=FE_H)")
            pairs.append((key, col))
        return cls(preset=preset or None, columns=tuple(pairs), where=where or None)

    @property
    def is_default(self) -> bool:
        return self.preset is None and not self.columns and self.where is None

    def to_dict(self) -> dict:
        return {"preset": self.preset, "columns": {k: c for k, c in self.columns}, "where": self.where}


@dataclass
class LabelTable:
    """The usable rows of a label table, after cuts and duplicate removal (row-matched arrays)."""

    path: str
    labels: dict                      # label -> (N,) float64, NaN where missing
    errors: dict                      # label -> (N,) float64, NaN where unknown (labels with an error column)
    targetid: np.ndarray | None       # (N,) int64 when the table has a TARGETID/OBSID column
    ra: np.ndarray | None             # (N,) float64 degrees
    dec: np.ndarray | None
    snr: np.ndarray | None            # (N,) float64, NaN where missing
    columns: dict                     # key (label, LABEL_ERR or role) -> the table column used
    report: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.labels.values()))) if self.labels else 0

    def summary(self) -> str:
        """One line: rows read, cut, duplicates dropped, kept."""
        return describe(self.report)


def describe(report: dict, n_spectra: int | None = None) -> str:
    """One line about a :attr:`LabelTable.report`: rows, cut, duplicates, kept (and spectra matched)."""
    r = report
    parts = [f"label table {r['table']}: {r['rows']} rows"]
    if r.get("where"):
        parts.append(f"{r['pass_where']} pass --where")
    parts += [f"{r['duplicates']} duplicate(s) dropped (highest S/N kept)", f"{r['kept']} stars with a label"]
    line = ", ".join(parts)
    return line if n_spectra is None else f"{line}; {n_spectra} spectra matched"


def file_sha256(path: str, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _is_csv(path: str) -> bool:
    return path.lower().endswith((".csv", ".txt"))


def table_columns(path: str) -> list[str]:
    """Upper-cased column names of a FITS (first table HDU) or CSV label table, without reading rows."""
    if not os.path.isfile(path):
        raise InputFileError(path, "label table not found")
    if _is_csv(path):
        with open(path, newline="") as fh:
            header = next(csv.reader(fh), None)
        if not header:
            raise InputFileError(path, "label table is empty")
        return [h.strip().upper() for h in header]
    with _table_hdu(path) as hdu:
        return [c.upper() for c in hdu.get_colnames()]


class _table_hdu:
    """Context manager: the first table HDU of a FITS file."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        from catalog_tool.io.fitsutil import open_fits

        self._cm = open_fits(self.path)
        fits = self._cm.__enter__()
        for hdu in fits:
            if hdu.get_exttype() in ("BINARY_TBL", "ASCII_TBL"):
                return hdu
        self._cm.__exit__(None, None, None)
        raise InputFileError(self.path, "label table has no table HDU")

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def _read_csv(path: str, wanted: set[str]) -> tuple[dict, int]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    header = [h.strip().upper() for h in rows[0]]
    body = rows[1:]
    if not body:
        raise InputFileError(path, "label table is empty")
    out = {}
    for j, name in enumerate(header):
        if name not in wanted:
            continue
        values = [r[j].strip() if j < len(r) else "" for r in body]
        try:
            if name in ("TARGETID", _LAMOST_ID) or all(v.lstrip("+-").isdigit() for v in values if v):
                arr = np.array([int(v) if v else 0 for v in values], dtype=np.int64)
                if not all(values):  # empty cells in an integer column: read it as float, NaN missing
                    arr = np.array([float(v) if v else np.nan for v in values])
            else:
                arr = np.array([float(v) if v not in ("", "nan", "NaN") else np.nan for v in values])
        except ValueError:
            arr = np.array(values)
        out[name] = arr
    return out, len(body)


def _read(path: str, wanted: set[str]) -> tuple[dict, int]:
    """The ``wanted`` columns (upper-case names) of a table, and its row count."""
    if _is_csv(path):
        return _read_csv(path, wanted)
    with _table_hdu(path) as hdu:
        names = {c.upper(): c for c in hdu.get_colnames()}
        cols = [names[w] for w in sorted(wanted) if w in names]
        nrows = hdu.get_nrows()
        data = hdu.read(columns=cols) if cols else None
    return ({n.upper(): data[n] for n in data.dtype.names} if data is not None else {}), nrows


def _resolve(names, available: list[str], options: LabelOptions, *, strict: bool) -> dict:
    """key -> column for the labels ``names`` (and their errors) and the roles."""
    avail = set(available)
    explicit = {k: c.upper() for k, c in options.columns}
    preset = PRESETS[options.preset]["columns"] if options.preset else {}
    bad = sorted(f"{k}={c}" for k, c in explicit.items() if c not in avail)
    if bad:
        raise ConfigError(f"--label-column {', '.join(bad)}: no such column in the label table")
    out = {}
    keys = [n.upper() for n in names] + [f"{n.upper()}_ERR" for n in names] + list(ROLES) + [_LAMOST_ID]
    for key in keys:
        for col in (explicit.get(key), preset.get(key), key):
            if col is not None and col in avail:
                out[key] = col
                break
    if strict:
        missing = [n.upper() for n in names if n.upper() not in out]
        if missing:
            how = f" (preset {options.preset} maps " + ", ".join(
                f"{m} to {preset[m]}" for m in missing if m in preset) + ")" if any(m in preset for m in missing) else ""
            raise ConfigError(f"label table has no column for {', '.join(missing)}{how}; name one with "
                              f"--label-column {missing[0]}=COLUMN")
    return out


def available_labels(path: str, candidates, options: LabelOptions | None = None) -> list[str]:
    """Those of ``candidates`` (label names) that the table provides under ``options``."""
    resolved = _resolve(candidates, table_columns(os.fspath(path)), options or LabelOptions(), strict=False)
    return [c for c in candidates if c.upper() in resolved]


def _as_float(a) -> np.ndarray:
    """Float64 copy with NaN where missing (non-finite or at/below the -9999 sentinel)."""
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise ConfigError(f"a label, error, position or S/N column holds {a.dtype} values, not numbers")
    out = a.astype(np.float64)
    out[~np.isfinite(out) | (out <= MISSING_BELOW)] = np.nan
    return out


def _star_ids(a) -> tuple[np.ndarray, np.ndarray]:
    """(group codes, valid) of an id column: blank strings and non-positive integers are no id."""
    a = np.asarray(a)
    if a.dtype.kind in "US":
        s = np.char.strip(a.astype(str))
        valid = s != ""
        _, codes = np.unique(s, return_inverse=True)
    elif a.dtype.kind in "iu":
        valid = a > 0
        _, codes = np.unique(a, return_inverse=True)
    else:
        f = np.asarray(a, np.float64)
        valid = np.isfinite(f) & (f > 0)
        _, codes = np.unique(np.where(valid, f, -1.0), return_inverse=True)
    return codes.reshape(-1), valid


def _duplicate_groups(*, ids, id_valid, ra, dec) -> np.ndarray:
    """Connected components of "same id" and "within MATCH_ARCSEC" links (a label per row)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(ra) if ra is not None else len(ids)
    rows, cols = [np.arange(n)], [np.arange(n)]
    if ids is not None:
        sel = np.flatnonzero(id_valid)
        order = sel[np.argsort(ids[sel], kind="stable")]
        same = ids[order][1:] == ids[order][:-1]  # consecutive rows of one id chain them together
        rows.append(order[:-1][same])
        cols.append(order[1:][same])
    if ra is not None and dec is not None:
        i, j = pairs_within(ra_a=ra, dec_a=dec, ra_b=ra, dec_b=dec, radius_arcsec=MATCH_ARCSEC)
        keep = i < j
        rows.append(i[keep])
        cols.append(j[keep])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _best_per_group(groups: np.ndarray, snr: np.ndarray | None) -> np.ndarray:
    """Indices of the highest-S/N row of each group (NaN last, ties to the first row), in row order."""
    n = len(groups)
    key = np.full(n, -np.inf) if snr is None else np.where(np.isfinite(snr), snr, -np.inf)
    order = np.lexsort((np.arange(n), -key, groups))  # by group, then S/N descending, then row
    first = np.ones(n, bool)
    first[1:] = groups[order][1:] != groups[order][:-1]
    return np.sort(order[first])


def read_labels(path, *, names, options: LabelOptions | None = None) -> LabelTable:
    """Read a label table: resolve columns, apply the cut, mark missing values, drop duplicates.

    Parameters
    ----------
    path : str
        FITS (first table HDU) or CSV file.
    names : list of str
        Labels wanted (e.g. ``["FEH", "TEFF"]``); each must resolve to a column.
    options : LabelOptions, optional

    Returns
    -------
    LabelTable
        Rows that pass ``--where`` and have at least one finite label, one per star.

    Raises
    ------
    ConfigError
        A label or an explicit ``--label-column`` that the table lacks, no column to join on, or
        a ``--where`` that does not parse or names an unknown column.
    InputFileError
        The table is missing, empty or not a table.
    """
    path = os.fspath(path)
    options = options or LabelOptions()
    names = [n.upper() for n in names]
    available = table_columns(path)
    cols = _resolve(names, available, options, strict=True)
    tree = where_mod.parse(options.where) if options.where else None
    if tree is not None:  # before reading any rows
        where_mod.check_columns(tree, available, text=options.where)
    wanted = set(cols.values()) | (where_mod.columns_of(tree) if tree is not None else set())
    data, nrows = _read(path, wanted)
    if tree is not None:
        mask = where_mod.evaluate(tree, data, nrows, text=options.where)
    else:
        mask = np.ones(nrows, bool)
    n_where = int(mask.sum())
    labels = {n: _as_float(data[cols[n]]) for n in names}
    has_label = np.zeros(nrows, bool)
    for v in labels.values():
        has_label |= np.isfinite(v)
    rows = np.flatnonzero(mask & has_label)
    tid_col = cols.get("TARGETID") or cols.get(_LAMOST_ID)
    ra = _as_float(data[cols["RA"]])[rows] if "RA" in cols and "DEC" in cols else None
    dec = _as_float(data[cols["DEC"]])[rows] if ra is not None else None
    if tid_col is None and ra is None:
        raise ConfigError(f"label table {path} has no TARGETID/OBSID column and no RA/DEC to match on "
                          "(name them with --label-column TARGETID=... or RA=... DEC=...)")
    snr = _as_float(data[cols["SNR"]])[rows] if "SNR" in cols else None
    ids, id_valid = (None, None)
    if "ID" in cols:
        ids, id_valid = _star_ids(np.asarray(data[cols["ID"]])[rows])
    elif tid_col is not None:
        ids, id_valid = _star_ids(np.asarray(data[tid_col])[rows])
    keep = _best_per_group(_duplicate_groups(ids=ids, id_valid=id_valid, ra=ra, dec=dec), snr) \
        if len(rows) else rows
    final = rows[keep]
    table = LabelTable(
        path=path, labels={n: v[final] for n, v in labels.items()},
        errors={n: _as_float(data[cols[f"{n}_ERR"]])[final] for n in names if f"{n}_ERR" in cols},
        targetid=np.asarray(data[tid_col])[final].astype(np.int64) if tid_col is not None else None,
        ra=ra[keep] if ra is not None else None, dec=dec[keep] if dec is not None else None,
        snr=snr[keep] if snr is not None else None, columns=cols,
        report={"table": os.path.basename(path), "rows": int(nrows), "where": options.where,
                "pass_where": n_where, "with_label": int(len(rows)), "duplicates": int(len(rows) - len(final)),
                "kept": int(len(final)), "preset": options.preset, "columns": cols,
                "n_per_label": {n: int(np.isfinite(v[final]).sum()) for n, v in labels.items()}})
    return table
