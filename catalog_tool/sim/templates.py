"""Simple galaxy and QSO spectra to mix among the stars, and stellar spectral classes.

These are not meant to be good extragalactic models: they give the readers, the star selection
and the flags realistic non-stellar rows (a 4000 A break with narrow emission lines; a power law with
broad emission lines) at the right redshifts. Vectorised over rows; ``wave_rest`` may differ per row.
"""

from __future__ import annotations

import numpy as np

__all__ = ["galaxy_flux", "qso_flux", "stellar_class"]

_C = 299792.458

# Rest vacuum wavelengths (A): emission and absorption features of galaxies.
_GAL_EMISSION = np.array([3727.09, 3729.88, 4862.68, 4960.30, 5008.24, 6564.61, 6585.27, 6718.29, 6732.67])
_GAL_EMISSION_REL = np.array([1.0, 1.3, 0.5, 0.4, 1.2, 1.6, 0.5, 0.3, 0.25])
_GAL_ABSORPTION = np.array([3934.78, 3969.59, 4305.0, 5176.7, 5895.6])
# Broad QSO lines: Ly-alpha, N V, Si IV, C IV, C III], Mg II, H-gamma, H-beta, H-alpha.
_QSO_LINES = np.array([1215.67, 1240.81, 1397.61, 1549.06, 1908.73, 2799.12, 4341.69, 4862.68, 6564.61])
_QSO_REL = np.array([3.0, 0.8, 0.4, 1.5, 0.7, 0.9, 0.3, 0.6, 1.8])


def _gauss_sum(wave_rest: np.ndarray, centres: np.ndarray, amps: np.ndarray, sigma_kms) -> np.ndarray:
    """Sum of Gaussians (N, nline) at ``centres`` with velocity widths, on (N, npix) rest grids."""
    sig = centres[None, :] * (np.asarray(sigma_kms, dtype=np.float64).reshape(-1, 1) / _C)  # (N or 1, nline)
    out = np.zeros(wave_rest.shape)
    for j, c in enumerate(centres):  # a handful of lines; each is a full (N, npix) vector op
        out += amps[:, j:j + 1] * np.exp(-0.5 * ((wave_rest - c) / sig[:, j:j + 1]) ** 2)
    return out


def galaxy_flux(*, wave_rest: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Galaxy spectra on rest-frame wavelengths, unit level near 5500 A rest.

    Parameters
    ----------
    wave_rest : ndarray, shape (N, npix)
        Rest-frame wavelengths of each row.
    rng : numpy Generator
        Draws slope, 4000 A break strength, line strengths and widths.

    Returns
    -------
    ndarray, shape (N, npix)
    """
    n = wave_rest.shape[0]
    slope = rng.uniform(-1.0, 1.0, n)[:, None]
    brk = rng.uniform(0.1, 0.5, n)[:, None]
    cont = (wave_rest / 5500.0) ** slope
    cont *= 1.0 - brk / (1.0 + np.exp((wave_rest - 4000.0) / 40.0))
    sig = rng.uniform(80.0, 200.0, n)
    absn = _gauss_sum(wave_rest, _GAL_ABSORPTION, rng.uniform(0.05, 0.25, (n, _GAL_ABSORPTION.size)), sig)
    em_strength = rng.exponential(1.0, n)[:, None] * _GAL_EMISSION_REL[None, :]
    emis = _gauss_sum(wave_rest, _GAL_EMISSION, em_strength, sig)
    return cont * (1.0 - absn) + emis


def qso_flux(*, wave_rest: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """QSO spectra on rest-frame wavelengths: power law, broad lines, Ly-alpha forest absorption.

    Parameters
    ----------
    wave_rest : ndarray, shape (N, npix)
    rng : numpy Generator

    Returns
    -------
    ndarray, shape (N, npix)
    """
    n = wave_rest.shape[0]
    alpha = rng.uniform(-1.8, -1.2, n)[:, None]
    cont = (wave_rest / 3000.0) ** alpha
    sig = rng.uniform(1500.0, 3000.0, n)
    lines = _gauss_sum(wave_rest, _QSO_LINES, rng.uniform(0.5, 1.5, (n, _QSO_LINES.size)) * _QSO_REL, sig)
    flux = cont * (1.0 + lines)
    # Crude Ly-alpha forest: mean transmission 0.7 blueward of Ly-alpha, with random dips.
    forest = wave_rest < 1215.67
    dips = 0.7 * (1.0 - 0.3 * np.abs(np.sin(wave_rest * 1.7 + rng.uniform(0, 6.3, n)[:, None])))
    return np.where(forest, flux * dips, flux)


_CLASS_EDGES = np.array([3500.0, 3900.0, 5300.0, 6000.0, 7500.0, 10000.0])
_CLASS_NAMES = np.array(["M", "K", "G", "F", "A", "B"])


def stellar_class(*, teff: np.ndarray, digits: bool = False) -> np.ndarray:
    """MK spectral class (``"K"``, or ``"K5"`` with ``digits``) of each effective temperature.

    A coarse Teff mapping (good to a subclass or two), used for redrock SUBTYPE (letter only) and the
    LAMOST SUBCLASS header (letter and digit).
    """
    teff = np.asarray(teff, dtype=np.float64)
    k = np.clip(np.searchsorted(_CLASS_EDGES, teff, side="right") - 1, 0, len(_CLASS_NAMES) - 1)
    letters = _CLASS_NAMES[k]
    if not digits:
        return letters.astype("U2")
    lo = _CLASS_EDGES[k]
    hi = _CLASS_EDGES[np.minimum(k + 1, len(_CLASS_EDGES) - 1)]
    frac = np.clip((teff - lo) / np.maximum(hi - lo, 1.0), 0.0, 0.999)
    digit = (9 - np.floor(frac * 10)).astype(int)  # hotter end of a class has the lower digit
    return np.char.add(letters, digit.astype(str)).astype("U3")
