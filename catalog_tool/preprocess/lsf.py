"""Resolution matching: convolve to a target resolving power with a Gaussian line-spread function.

At each pixel the input LSF (Gaussian sigma ``s_in``, from the arm's resolution) and the target
(``s_t = lambda / (2.355 R_target)``) set the kernel ``s_k = sqrt(s_t^2 - s_in^2)``, zero where the
input is already coarser than the target. The kernel is evaluated in Angstrom from the actual
pixel positions, so it works on linear (DESI) and log-linear (LAMOST) sampling alike, and its width
may change along the spectrum. Bad pixels do not contribute (normalised convolution) and stay bad;
the variance is propagated as ``sum w^2 var / (sum w)^2`` (correlations between output pixels are
ignored). The loop runs over kernel offsets (a few dozen), never over spectra.
"""

from __future__ import annotations

import numpy as np

from catalog_tool.preprocess.arms import FWHM_SIGMA

__all__ = ["kernel_sigma", "match_resolution"]


def kernel_sigma(*, wave: np.ndarray, sigma_in: np.ndarray, target_R: float) -> np.ndarray:
    """Gaussian sigma (Angstrom) of the kernel that takes ``sigma_in`` to resolving power ``target_R``."""
    s_t = wave / (FWHM_SIGMA * target_R)
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.clip(s_t ** 2 - sigma_in ** 2, 0.0, None))


def match_resolution(*, wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, bad: np.ndarray,
                     sigma_in: np.ndarray, target_R: float) -> tuple[np.ndarray, np.ndarray]:
    """Convolve spectra to resolving power ``target_R``.

    Parameters
    ----------
    wave : ndarray, shape (npix,) or (N, npix)
        Wavelengths (A); NaN padding allowed.
    flux, ivar : ndarray, shape (N, npix)
    bad : ndarray of bool, shape (N, npix)
        Pixels that must not contribute; they stay bad in the output.
    sigma_in : ndarray, shape (npix,) or (N, npix)
        Input LSF Gaussian sigma in Angstrom.
    target_R : float
        Target resolving power lambda / FWHM.

    Returns
    -------
    flux, ivar : ndarray float32, shape (N, npix)
        ``ivar`` is 0 on bad pixels.
    """
    n, npix = flux.shape
    sk = kernel_sigma(wave=wave, sigma_in=sigma_in, target_R=target_R)
    sk = np.where(np.isfinite(sk), sk, 0.0)
    with np.errstate(invalid="ignore"):
        dpix = np.abs(np.diff(wave, axis=-1))
    dmin = np.nanmin(dpix) if np.isfinite(dpix).any() else 1.0
    half = int(np.ceil(4.0 * np.max(sk) / dmin)) if npix else 0
    half = min(half, npix - 1) if npix else 0
    good = ~bad
    g = good.astype(np.float64)
    f = np.where(good, flux, 0.0)
    with np.errstate(divide="ignore"):
        var = np.where(good, 1.0 / np.where(good, ivar, 1.0), 0.0)
    num = np.zeros((n, npix))
    den = np.zeros((n, npix))
    vnum = np.zeros((n, npix))
    # 1 / (2 s^2); infinite where the kernel is a delta, so that off-centre weights vanish
    inv2s2 = np.full(np.shape(sk), np.inf)
    np.divide(0.5, sk * sk, out=inv2s2, where=sk > 1e-6)
    for k in range(-half, half + 1):  # loop over kernel offsets, vectorised over spectra and pixels
        lo, hi = max(0, -k), min(npix, npix - k)  # output pixels i with i + k inside
        if hi <= lo:
            continue
        dl = wave[..., lo + k:hi + k] - wave[..., lo:hi] if k else None
        if k == 0:
            w = 1.0  # the centre pixel (exp(-0 * inf) would be NaN where the kernel is a delta)
        else:
            with np.errstate(invalid="ignore", over="ignore"):
                w = np.exp(-(dl ** 2) * inv2s2[..., lo:hi])
            w = np.where(np.isfinite(w), w, 0.0)
        gw = w * g[:, lo + k:hi + k]
        num[:, lo:hi] += gw * f[:, lo + k:hi + k]
        den[:, lo:hi] += gw
        vnum[:, lo:hi] += gw * w * var[:, lo + k:hi + k]
    ok = good & (den > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out_f = np.where(den > 0, num / den, flux)
        out_iv = np.where(ok & (vnum > 0), den ** 2 / vnum, 0.0)
    out_f = np.where(np.isfinite(out_f), out_f, 0.0)
    return out_f.astype(np.float32), out_iv.astype(np.float32)
