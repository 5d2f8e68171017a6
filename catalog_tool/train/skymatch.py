"""Sky cross-matching: the one matcher of label tables, paired views and duplicate stars.

:func:`match_sky` is a symmetric best match (what TOPCAT calls "best match, symmetric"): every row
of either side is in at most one pair, and pairs are taken nearest first, so a row whose nearest
neighbour went to a closer row pairs with its next neighbour within the radius, if any. It joins
spectra to a label table without ids (:func:`catalog_tool.train.data.load_labelled`: a table star
labels one spectrum, never two stars that happen to lie within the radius of it) and pairs two
views of the same stars (``stxcat pretrain-encoder --contrastive-with``, in
:func:`catalog_tool.train.encoder_commands.run_pretrain_encoder`).
:func:`pairs_within` lists every pair within a radius (the duplicates of a label table).

Distances are chords between unit vectors (scipy's cKDTree), exact on the sphere: no RA wrap at
0/360 and no trouble at the poles. Rows with non-finite coordinates never match.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["match_sky", "pairs_within"]


def _unit(ra, dec) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (N, 3) of the rows with finite coordinates, and the indices of those rows."""
    ra, dec = np.asarray(ra, np.float64), np.asarray(dec, np.float64)
    ok = np.flatnonzero(np.isfinite(ra) & np.isfinite(dec))
    r, d = np.radians(ra[ok]), np.radians(dec[ok])
    return np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)], axis=1), ok


def _chord(radius_arcsec: float) -> float:
    return float(2 * np.sin(np.radians(radius_arcsec / 3600.0) / 2))


def _candidates(ra_a, dec_a, ra_b, dec_b, radius_arcsec):
    """Every (i, j, chord) with row i of a and row j of b within the radius."""
    ua, oka = _unit(ra_a, dec_a)
    ub, okb = _unit(ra_b, dec_b)
    if not len(ua) or not len(ub):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    pairs = cKDTree(ua).sparse_distance_matrix(cKDTree(ub), _chord(radius_arcsec), output_type="ndarray")
    return oka[pairs["i"]].astype(np.int64), okb[pairs["j"]].astype(np.int64), pairs["v"]


def pairs_within(*, ra_a, dec_a, ra_b, dec_b, radius_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i, j) of a row of ``a`` and a row of ``b`` at most ``radius_arcsec`` apart,
    sorted by (i, j). Pass the same arrays twice for the pairs within one set (i == j included)."""
    i, j, _ = _candidates(ra_a, dec_a, ra_b, dec_b, radius_arcsec)
    order = np.lexsort((j, i))
    return i[order], j[order]


def match_sky(*, ra_a, dec_a, ra_b, dec_b, radius_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one best match of two sets of positions within ``radius_arcsec``.

    Pairs are taken nearest first (ties: lower row of ``a``, then of ``b``), each row of either
    set at most once: the global greedy matching, found here as repeated rounds of "mutual nearest
    remaining neighbours" (the same pairs, vectorised).

    Returns
    -------
    ia, ib : ndarray of int
        Matched rows of ``a`` (ascending) and their rows of ``b``.
    """
    i, j, d = _candidates(ra_a, dec_a, ra_b, dec_b, radius_arcsec)
    order = np.lexsort((j, i, d))  # a strict total order: nearest first
    i, j = i[order], j[order]
    take_i, take_j = [], []
    while len(i):
        # the first (best) remaining pair of each row of a, and of each row of b
        best_of_i = np.zeros(len(i), bool)
        best_of_i[np.unique(i, return_index=True)[1]] = True
        best_of_j = np.zeros(len(j), bool)
        best_of_j[np.unique(j, return_index=True)[1]] = True
        mutual = best_of_i & best_of_j  # never empty: the nearest remaining pair is mutual
        take_i.append(i[mutual])
        take_j.append(j[mutual])
        keep = ~np.isin(i, i[mutual]) & ~np.isin(j, j[mutual])
        i, j = i[keep], j[keep]
    if not take_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ia, ib = np.concatenate(take_i), np.concatenate(take_j)
    order = np.argsort(ia, kind="stable")
    return ia[order], ib[order]
