"""Comparing a VAC with a truth table: a simulation's truth or a reference catalogue.

Matching (first rule that applies to the truth table's columns):

1. ``TARGETID`` and ``SURVEY``: rows match on both (SURVEY compared case-insensitively, stripped);
2. ``TARGETID``: rows match on TARGETID alone (every VAC row of that id, whatever its survey);
3. ``OBSID``: matched to the ``TARGETID`` of the VAC's LAMOST rows (``SURVEY == 'lamost'``),
   where stxcat keeps the LAMOST OBSID.

Label columns are looked up by name, case-insensitively: ``FEH`` (or ``FE_H``), ``ALPHAFE`` (or
``ALPHA_FE``), ``TEFF``, ``LOGG``. A truth id that occurs more than once is used at its first row
and the duplicates are counted. The metrics are those of :mod:`catalog_tool.train.evaluate`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from catalog_tool.io.fitsutil import open_fits
from catalog_tool.report.data import ReportError
from catalog_tool.train import evaluate

__all__ = ["LABEL_ALIASES", "TruthTable", "TruthMatch", "read_truth", "match_truth", "truth_metrics"]

#: Truth column names accepted for each VAC label (upper-cased before the lookup).
LABEL_ALIASES = {"FEH": ("FEH", "FE_H"), "ALPHAFE": ("ALPHAFE", "ALPHA_FE"), "TEFF": ("TEFF",), "LOGG": ("LOGG",)}


@dataclass
class TruthTable:
    """The id and label columns of a truth table.

    Attributes
    ----------
    path : str
    key : str
        ``"TARGETID+SURVEY"``, ``"TARGETID"`` or ``"OBSID"``: the matching rule used.
    ids : ndarray of int64
    survey : ndarray of str or None
    labels : dict of str to ndarray of float64
        VAC label name -> truth values.
    """

    path: str
    key: str
    ids: np.ndarray
    survey: np.ndarray | None
    labels: dict


@dataclass
class TruthMatch:
    """Result of :func:`match_truth`.

    Attributes
    ----------
    vac_rows, truth_rows : ndarray of int64
        Matched pairs (VAC row, truth row), in VAC row order.
    n_vac_unmatched : int
        VAC rows (of those offered) with no truth row.
    n_truth_unmatched : int
        Truth rows matched by no VAC row.
    n_truth_duplicates : int
        Truth rows not used because an earlier row has the same key.
    """

    vac_rows: np.ndarray
    truth_rows: np.ndarray
    n_vac_unmatched: int
    n_truth_unmatched: int
    n_truth_duplicates: int


def _table_hdu(fits, path):
    names = [h.get_extname().upper() for h in fits]
    if "TRUTH" in names:
        return fits[names.index("TRUTH")]
    for h in fits:
        if h.get_exttype() in ("BINARY_TBL", "ASCII_TBL") and h.get_nrows() > 0:
            return h
    raise ReportError(f"{path}: no table with rows to use as truth")


def read_truth(path: str | os.PathLike) -> TruthTable:
    """Read the id and label columns of a truth table (EXTNAME ``TRUTH``, else the first table).

    Raises
    ------
    FileAccessError, NotFitsError, TruncatedFileError
        The file is missing, not FITS or damaged.
    ReportError
        No table, no id column (TARGETID or OBSID), or no label column.
    """
    path = os.fspath(path)
    with open_fits(path) as fits:
        hdu = _table_hdu(fits, path)
        by_upper = {c.upper(): c for c in hdu.get_colnames()}
        if "TARGETID" in by_upper:
            key = "TARGETID+SURVEY" if "SURVEY" in by_upper else "TARGETID"
            id_col = by_upper["TARGETID"]
        elif "OBSID" in by_upper:
            key, id_col = "OBSID", by_upper["OBSID"]
        else:
            raise ReportError(f"{path}: the truth table has neither a TARGETID nor an OBSID column to match on")
        found = {lab: next(by_upper[a] for a in aliases if a in by_upper)
                 for lab, aliases in LABEL_ALIASES.items() if any(a in by_upper for a in aliases)}
        if not found:
            raise ReportError(f"{path}: the truth table has no label column (FEH, ALPHAFE, TEFF or LOGG)")
        ids = hdu.read_column(id_col)
        if ids.dtype.kind not in "iu":
            raise ReportError(f"{path}: {id_col} is not an integer column ({ids.dtype})")
        survey = None
        if key == "TARGETID+SURVEY":
            survey = hdu.read_column(by_upper["SURVEY"])
            if survey.dtype.kind == "S":
                survey = np.char.decode(survey, "ascii", errors="replace")
            survey = np.char.lower(np.char.strip(survey.astype(str)))
        labels = {lab: hdu.read_column(col).astype(np.float64) for lab, col in found.items()}
    return TruthTable(path=path, key=key, ids=ids.astype(np.int64), survey=survey, labels=labels)


def _first_of_each(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Sorted unique int keys, the first row of each, and the number of repeated rows."""
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    first = np.ones(sk.size, bool)
    first[1:] = sk[1:] != sk[:-1]
    return sk[first], order[first], int((~first).sum())


def match_truth(*, vac_targetid: np.ndarray, vac_survey: np.ndarray, truth: TruthTable,
                rows: np.ndarray | None = None) -> TruthMatch:
    """Pair VAC rows with truth rows by the table's matching rule (see the module docstring).

    Parameters
    ----------
    vac_targetid : ndarray of int64, shape (N,)
    vac_survey : ndarray of str, shape (N,)
    truth : TruthTable
    rows : ndarray of int, optional
        VAC rows to match (e.g. those without FLAG_BAD); all when None.
    """
    rows = np.arange(vac_targetid.size) if rows is None else np.asarray(rows, dtype=np.int64)
    tid = np.asarray(vac_targetid, dtype=np.int64)[rows]
    vsurvey = np.char.lower(np.char.strip(np.asarray(vac_survey).astype(str)))[rows]
    if truth.key == "TARGETID+SURVEY":
        # the survey names become small integer codes shared by both sides, so that one int
        # sort per survey does the matching
        names, tcode = np.unique(truth.survey, return_inverse=True)
        vcode = np.searchsorted(names, vsurvey)
        vcode = np.where((vcode < names.size) & (names[np.minimum(vcode, names.size - 1)] == vsurvey), vcode, -1)
        tcode = tcode.ravel()
    else:
        tcode = np.zeros(truth.ids.size, np.int64)
        vcode = np.zeros(tid.size, np.int64)
        if truth.key == "OBSID":
            vcode = np.where(vsurvey == "lamost", 0, -1)
    vac_sel, truth_sel = [], []
    dup_total = 0
    matched_truth = np.zeros(truth.ids.size, bool)
    for code in np.unique(tcode):  # a handful of surveys, not a loop over stars
        t_rows = np.flatnonzero(tcode == code)
        keys, first, dup = _first_of_each(truth.ids[t_rows])
        dup_total += dup
        v_rows = np.flatnonzero(vcode == code)
        pos = np.searchsorted(keys, tid[v_rows])
        hit = pos < keys.size
        hit[hit] = keys[pos[hit]] == tid[v_rows][hit]
        vac_sel.append(v_rows[hit])
        tr = t_rows[first[pos[hit]]]
        truth_sel.append(tr)
        matched_truth[tr] = True
    v = np.concatenate(vac_sel) if vac_sel else np.zeros(0, np.int64)
    t = np.concatenate(truth_sel) if truth_sel else np.zeros(0, np.int64)
    order = np.argsort(v, kind="stable")
    return TruthMatch(vac_rows=rows[v[order]], truth_rows=t[order], n_vac_unmatched=int(rows.size - v.size),
                      n_truth_unmatched=int(truth.ids.size - matched_truth.sum() - dup_total),
                      n_truth_duplicates=dup_total)


def truth_metrics(*, columns: dict, labels, truth: TruthTable, match: TruthMatch) -> dict:
    """Metrics and calibration of the VAC's labels against the truth, with the evaluate functions.

    Returns
    -------
    dict
        ``labels`` (compared), ``pred``/``true``/``err`` ((M, L) arrays, matched rows), ``snr``,
        ``metrics`` (:func:`~catalog_tool.train.evaluate.metrics_table`, split at the true [Fe/H]
        = -1 when the truth has FEH), ``calibration``
        (:func:`~catalog_tool.train.evaluate.calibration_table`).
    """
    names = [lab for lab in labels if lab in truth.labels]
    if not names:
        raise ReportError(f"{truth.path}: none of the VAC's labels ({', '.join(labels)}) is in the truth table")
    v, t = match.vac_rows, match.truth_rows
    pred = np.stack([np.asarray(columns[n], float)[v] for n in names], axis=1)
    err = np.stack([np.asarray(columns[f"{n}_ERR"], float)[v] for n in names], axis=1)
    true = np.stack([truth.labels[n][t] for n in names], axis=1)
    snr = np.asarray(columns["SNR"], float)[v]
    feh_ref = truth.labels["FEH"][t] if "FEH" in truth.labels else None
    return {
        "labels": names, "pred": pred, "true": true, "err": err, "snr": snr,
        "metrics": evaluate.metrics_table(pred=pred, true=true, label_names=names, feh_ref=feh_ref),
        "calibration": evaluate.calibration_table(pred=pred, true=true, err=err, snr=snr, label_names=names),
    }
