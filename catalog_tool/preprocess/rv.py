"""Radial-velocity (rest-frame) correction.

A Doppler shift is a scaling of wavelength, ``lambda_rest = lambda_obs / (1 + z)``; only the
wavelengths change, flux and inverse variance stay on their pixels. The redshift comes from
``batch.meta["Z"]`` (redrock Z for DESI, the header Z for LAMOST); a missing, non-finite or
sentinel value (z <= -1, e.g. LAMOST's -9999) means unknown: that row is left in the observed frame
and flagged.
"""

from __future__ import annotations

import numpy as np

__all__ = ["redshifts", "rest_wave"]


def redshifts(meta: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Redshift per row and whether it is known.

    Parameters
    ----------
    meta : dict of str to ndarray
        Batch metadata; the ``Z`` column is used when present.
    n : int
        Number of rows.

    Returns
    -------
    z : ndarray float64 (N,)
        The redshift, 0 where unknown.
    known : ndarray bool (N,)
    """
    if "Z" not in meta:
        return np.zeros(n), np.zeros(n, bool)
    z = np.asarray(meta["Z"], dtype=np.float64)
    known = np.isfinite(z) & (z > -1.0)
    return np.where(known, z, 0.0), known


def rest_wave(*, wave: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Rest-frame wavelengths ``wave / (1 + z)``.

    Parameters
    ----------
    wave : ndarray, shape (npix,) or (N, npix)
        Observed wavelengths.
    z : ndarray, shape (N,)
        Redshift per row (0 = no shift).

    Returns
    -------
    ndarray float64, shape (N, npix); the input itself (shape (npix,)) when every z is 0.
    """
    if not np.any(z):
        return wave
    return wave / (1.0 + z)[:, None]
