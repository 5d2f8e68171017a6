"""Vectorised statistics behind the report figures: grouped quantiles and 2-D binning.

Pure numpy, no plotting. Everything here is O(N log N) or better over millions of rows: groups are
formed by one sort, never by a Python loop over stars or groups.
"""

from __future__ import annotations

import numpy as np

__all__ = ["grouped_quantiles", "binned_2d", "bin_index", "text_codes"]


def grouped_quantiles(*, groups: np.ndarray, values: np.ndarray, q) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantiles of ``values`` within each group (linear interpolation, as ``np.quantile``).

    Parameters
    ----------
    groups : ndarray of int, shape (N,)
        Group of each value (e.g. a HEALPix pixel or a bin index).
    values : ndarray of float, shape (N,)
        Non-finite values are left out (a group with none of its values finite is absent).
    q : float or sequence of float
        Quantiles in [0, 1].

    Returns
    -------
    keys : ndarray, shape (G,)
        The groups present, ascending.
    result : ndarray of float64, shape (G, len(q)) (or (G,) for a scalar ``q``)
    counts : ndarray of int, shape (G,)
        Finite values per group.
    """
    groups = np.asarray(groups)
    values = np.asarray(values)
    scalar = np.ndim(q) == 0
    qs = np.atleast_1d(np.asarray(q, dtype=float))
    ok = np.isfinite(values)
    g, v = groups[ok], values[ok].astype(np.float64)
    # one sort by (group, value) puts each group's values in order, contiguously
    order = np.lexsort((v, g))
    g, v = g[order], v[order]
    keys, start, counts = np.unique(g, return_index=True, return_counts=True)
    pos = start[:, None] + qs[None, :] * (counts[:, None] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, (start + counts - 1)[:, None])
    frac = pos - lo
    result = v[lo] * (1.0 - frac) + v[hi] * frac if v.size else np.zeros((0, qs.size))
    return keys, (result[:, 0] if scalar else result), counts


def bin_index(x: np.ndarray, *, lo: float, hi: float, bins: int) -> np.ndarray:
    """Index of the uniform bin of [lo, hi) each ``x`` falls in; -1 outside or non-finite."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        i = np.floor((x - lo) * (bins / (hi - lo)))
        ok = np.isfinite(i) & (i >= 0) & (i < bins)
    return np.where(ok, i, -1).astype(np.int64)


def binned_2d(*, x: np.ndarray, y: np.ndarray, xrange: tuple[float, float], yrange: tuple[float, float],
              bins: tuple[int, int], weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Counts (and sums of ``weights``) on a uniform 2-D grid; faster than ``np.histogram2d``.

    Points outside the ranges, or with a non-finite coordinate or weight, are not counted.

    Returns
    -------
    count : ndarray of int64, shape (bins[1], bins[0])
        Rows follow ``y``, columns ``x`` (the orientation ``imshow`` expects).
    total : ndarray of float64 of the same shape, or None without ``weights``
    """
    nx, ny = bins
    ix = bin_index(x, lo=xrange[0], hi=xrange[1], bins=nx)
    iy = bin_index(y, lo=yrange[0], hi=yrange[1], bins=ny)
    ok = (ix >= 0) & (iy >= 0)
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        ok &= np.isfinite(w)
    flat = iy[ok] * nx + ix[ok]
    count = np.bincount(flat, minlength=nx * ny).reshape(ny, nx)
    if weights is None:
        return count, None
    total = np.bincount(flat, weights=w[ok], minlength=nx * ny).reshape(ny, nx)
    return count, total


def text_codes(a: np.ndarray, *, max_distinct: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of a low-cardinality text column (SURVEY, PROGRAM) and the stripped names.

    One vectorised comparison per distinct value: for the handful of survey and program names this
    is several times faster than ``np.unique`` (a sort of N strings) and allocates one int array.
    Above ``max_distinct`` distinct values it falls back to ``np.unique``.

    Returns
    -------
    codes : ndarray of int32, shape (N,)
    names : ndarray of str, shape (K,)
        ``names[codes]`` is the column, leading/trailing blanks stripped; names sorted, unique.
    """
    a = np.asarray(a)
    n = a.size
    codes = np.full(n, -1, dtype=np.int32)
    found = []
    start = 0
    while start < n and len(found) < max_distinct:
        value = a[start]
        hit = a == value
        codes[hit] = len(found)
        found.append(value)
        rest = np.flatnonzero(codes[start:] < 0)
        if rest.size == 0:
            break
        start += int(rest[0])
    else:
        if n and (codes < 0).any():  # many distinct values: a sort is cheaper
            names, inv = np.unique(a, return_inverse=True)
            found, codes = list(names), inv.ravel().astype(np.int32)
    text = np.array([v.decode("ascii", "replace") if isinstance(v, bytes) else str(v) for v in found], dtype=str)
    text = np.char.strip(text) if text.size else text
    # distinct raw values can become equal once stripped: merge them, and sort the names
    names, remap = np.unique(text, return_inverse=True)
    return (remap.ravel().astype(np.int32)[codes] if n else codes), names
