"""The numbers of a report: row counts, flag counts per bit, rows per survey, label statistics.

Counts are always over every row of the VAC (whatever ``--good-only`` selects for the figures), so
they can be checked against the file directly.
"""

from __future__ import annotations

import numpy as np

from catalog_tool.report.stats import text_codes
from catalog_tool.vac import flags as fl

__all__ = ["flag_table", "group_table", "label_table", "summarize"]


def flag_table(*, flags: np.ndarray) -> list[dict]:
    """Rows set and fraction of rows per named bit of ``FLAGS``.

    Returns
    -------
    list of dict
        One per :data:`~catalog_tool.vac.flags.FLAG_BITS` entry, in bit order: ``bit``, ``name``,
        ``bad`` (part of FLAG_BAD), ``count``, ``fraction`` (of all rows; NaN for an empty VAC), and
        ``description``. Bits outside the named ones are counted in one more row, ``UNKNOWN``,
        when any row has them.
    """
    flags = np.asarray(flags, dtype=np.int64)
    n = flags.size
    rows = []
    # loop over the ~11 bits, each a vectorised pass over all rows
    for b in fl.FLAG_BITS:
        count = int(np.count_nonzero(flags & np.int64(b.value)))
        rows.append({"bit": b.bit, "name": b.name, "bad": b.bad, "count": count,
                     "fraction": count / n if n else float("nan"), "description": b.short})
    known = np.int64(sum(b.value for b in fl.FLAG_BITS))
    unknown = int(np.count_nonzero(flags & ~known))
    if unknown:
        rows.append({"bit": -1, "name": "UNKNOWN", "bad": False, "count": unknown, "fraction": unknown / n,
                     "description": "bits this stxcat does not name"})
    return rows


def group_table(*, keys: list[tuple[np.ndarray, np.ndarray]], names: list[str], flag_bad: np.ndarray,
                estimated: np.ndarray) -> list[dict]:
    """Rows, estimated rows and FLAG_BAD rows per distinct combination of ``keys``.

    Parameters
    ----------
    keys : list of (codes, names)
        Text columns as integer codes per row and the names they index (see
        :func:`~catalog_tool.report.stats.text_codes`), e.g. ``[SURVEY]`` or ``[SURVEY, PROGRAM]``.
    names : list of str
        Names of the keys in the output rows.
    flag_bad, estimated : ndarray of bool, shape (N,)

    Returns
    -------
    list of dict
        Sorted by the keys: the key values, ``rows``, ``estimated``, ``flag_bad``, ``flag_bad_fraction``.
    """
    n = flag_bad.size
    if n == 0:
        return []
    combined = np.zeros(n, dtype=np.int64)
    for codes, labels in keys:
        combined = combined * len(labels) + codes
    present, inv = np.unique(combined, return_inverse=True)
    inv = inv.ravel()
    rows_n = np.bincount(inv)
    est_n = np.bincount(inv, weights=estimated).astype(np.int64)
    bad_n = np.bincount(inv, weights=flag_bad).astype(np.int64)
    out = []
    for j, code in enumerate(present):  # one row per distinct group
        parts = []
        for _, labels in reversed(keys):
            parts.append(str(labels[code % len(labels)]))
            code //= len(labels)
        row = dict(zip(names, reversed(parts)))
        row.update(rows=int(rows_n[j]), estimated=int(est_n[j]), flag_bad=int(bad_n[j]),
                   flag_bad_fraction=float(bad_n[j] / rows_n[j]))
        out.append(row)
    return out


def label_table(*, columns: dict, labels, good: np.ndarray) -> list[dict]:
    """Per label: rows estimated (all, and good), and the 5/50/95th percentiles of good values and errors."""
    out = []
    for lab in labels:
        v, e = np.asarray(columns[lab], float), np.asarray(columns[f"{lab}_ERR"], float)
        fin = np.isfinite(v)
        sel = fin & good
        pv = np.percentile(v[sel], [5, 50, 95]) if sel.any() else [np.nan] * 3
        esel = sel & np.isfinite(e)
        pe = np.median(e[esel]) if esel.any() else np.nan
        out.append({"label": lab, "estimated": int(fin.sum()), "good": int(sel.sum()),
                    "p05": float(pv[0]), "median": float(pv[1]), "p95": float(pv[2]),
                    "median_err": float(pe)})
    return out


def summarize(*, columns: dict, labels, good_only: bool = True, codes: dict | None = None) -> dict:
    """Everything the report's tables show, as a JSON-ready dict.

    Parameters
    ----------
    columns : dict of ndarray
        As :func:`catalog_tool.report.data.read_vac_columns` gives them.
    labels : sequence of str
    good_only : bool
        Whether the label statistics use only rows without FLAG_BAD (the counts never do).
    codes : dict, optional
        ``SURVEY`` and ``PROGRAM`` as (codes, names) (as ``read_vac_columns`` gives them);
        computed from ``columns["SURVEY"]``/``columns["PROGRAM"]`` text when not given.

    Returns
    -------
    dict
        ``rows``, ``estimated`` (a finite first label), ``flag_bad``, ``flag_bad_fraction``,
        ``primary`` (or None), ``healpix_pixels``, ``flags`` (:func:`flag_table`), ``by_survey``,
        ``by_program`` (:func:`group_table`), ``labels`` (:func:`label_table`), ``good_only``.
    """
    flag_bad = np.asarray(columns["FLAG_BAD"], bool)
    n = int(flag_bad.size)
    estimated = np.isfinite(np.asarray(columns[labels[0]], float))
    good = ~flag_bad if good_only else np.ones(n, bool)
    n_bad = int(flag_bad.sum())
    primary = columns.get("PRIMARY")
    codes = dict(codes or {})
    for name in ("SURVEY", "PROGRAM"):
        if name not in codes:
            codes[name] = text_codes(columns[name])
    return {
        "rows": n,
        "estimated": int(estimated.sum()),
        "flag_bad": n_bad,
        "flag_bad_fraction": n_bad / n if n else float("nan"),
        "primary": int(np.count_nonzero(primary)) if primary is not None else None,
        "healpix_pixels": int(np.unique(columns["HEALPIX"]).size),
        "good_only": bool(good_only),
        "flags": flag_table(flags=columns["FLAGS"]),
        "by_survey": group_table(keys=[codes["SURVEY"]], names=["survey"], flag_bad=flag_bad,
                                 estimated=estimated),
        "by_program": group_table(keys=[codes["SURVEY"], codes["PROGRAM"]], names=["survey", "program"],
                                  flag_bad=flag_bad, estimated=estimated),
        "labels": label_table(columns=columns, labels=labels, good=good),
    }
