"""Joining spectrograph arms into one spectrum, and the input line-spread function per pixel.

DESI's B, R and Z arms share one 0.8 A wavelength lattice, so their overlaps (about 5760-5800 and
7520-7620 A) hold pixels at identical wavelengths; there the arms are combined by inverse variance.
Only the arms, and the columns, inside the wavelength range the rest of the chain needs are touched:
for the paper's grid (4000-5600 A, continuum segment 3700-5700 A) that is the B arm alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from catalog_tool.batch import SpectraBatch
from catalog_tool.preprocess.masks import bad_pixels
from catalog_tool.preprocess.settings import DESI_ARM_R, PreprocessSettings

__all__ = ["Joined", "join_arms", "arm_sigma", "columns_in_range"]

#: FWHM / sigma of a Gaussian.
FWHM_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True)
class Joined:
    """One spectrum per row over the needed range.

    ``wave`` is (npix,) when all rows share it, else (N, npix) with trailing NaN padding;
    ``flux``/``ivar`` float32 (N, npix) with ``ivar`` 0 wherever ``bad``; ``sigma`` the input LSF
    Gaussian sigma in Angstrom, (npix,) or (N, npix), or ``None`` when not asked for.
    """

    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    bad: np.ndarray
    sigma: np.ndarray | None


def arm_sigma(arm, *, settings: PreprocessSettings, cols=slice(None)) -> np.ndarray:
    """Gaussian sigma (Angstrom) of the arm's line-spread function at each pixel.

    LAMOST (``LRS``): ``lambda / (2.355 R)`` with ``settings.lamost_R``. DESI: the square root of the
    second moment of each pixel's resolution-matrix row when the batch holds the RESOLUTION HDU
    (and ``settings.use_resolution_matrix``), else the approximate R(lambda) of each arm.

    Returns
    -------
    ndarray, shape (npix,) or (N, npix) for the selected columns ``cols``.
    """
    wave = arm.wave[..., cols]
    if arm.name == "LRS":
        return wave / (FWHM_SIGMA * settings.lamost_R)
    if arm.name not in DESI_ARM_R:
        raise ValueError(f"no line-spread function known for arm {arm.name!r}")
    if arm.resolution is not None and settings.use_resolution_matrix:
        res = arm.resolution[..., cols].astype(np.float64)  # (N, ndiag, npix)
        ndiag = res.shape[1]
        off = (ndiag // 2 - np.arange(ndiag))[None, :, None].astype(np.float64)
        norm = res.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mu = (res * off).sum(axis=1) / norm
            var_pix = (res * off ** 2).sum(axis=1) / norm - mu ** 2
        dw = np.gradient(arm.wave)[cols]
        sig = np.sqrt(np.clip(var_pix, 0, None)) * dw
        # rows without a usable matrix (all zero: unassigned fibres) fall back to the arm model
        w0, r0, w1, r1 = DESI_ARM_R[arm.name]
        approx = wave / (FWHM_SIGMA * np.interp(wave, [w0, w1], [r0, r1]))
        return np.where(np.isfinite(sig) & (sig > 0), sig, approx)
    w0, r0, w1, r1 = DESI_ARM_R[arm.name]
    return wave / (FWHM_SIGMA * np.interp(wave, [w0, w1], [r0, r1]))


def columns_in_range(wave: np.ndarray, lo: float, hi: float) -> slice:
    """The contiguous column range holding every pixel with lo <= wave <= hi in any row."""
    with np.errstate(invalid="ignore"):
        inside = (wave >= lo) & (wave <= hi)
    if inside.ndim == 2:
        inside = inside.any(axis=0)
    idx = np.flatnonzero(inside)
    if idx.size == 0:
        return slice(0, 0)
    return slice(int(idx[0]), int(idx[-1]) + 1)


def join_arms(batch: SpectraBatch, *, lo: float, hi: float, settings: PreprocessSettings,
              want_sigma: bool = False) -> Joined:
    """Join the batch's arms over observed wavelengths [lo, hi] into one spectrum per row.

    Parameters
    ----------
    batch : SpectraBatch
    lo, hi : float
        Observed-frame wavelength range needed downstream (Angstrom).
    settings : PreprocessSettings
    want_sigma : bool
        Also return the input LSF sigma per pixel (for the resolution match).

    Returns
    -------
    Joined
        With zero columns when no arm reaches the range.
    """
    n = len(batch)
    parts = []
    for arm in batch.arms.values():
        cols = columns_in_range(arm.wave, lo, hi)
        if cols.stop > cols.start:
            parts.append((arm, cols))
    if not parts:
        empty = np.zeros((n, 0), np.float32)
        return Joined(np.zeros(0), empty, empty, np.zeros((n, 0), bool),
                      np.zeros(0) if want_sigma else None)

    def cut(arm, cols):
        flux, ivar = arm.flux[:, cols], arm.ivar[:, cols]
        bad = bad_pixels(flux=flux, ivar=ivar, mask=arm.mask[:, cols])
        sig = arm_sigma(arm, settings=settings, cols=cols) if want_sigma else None
        return arm.wave[..., cols], flux, ivar, bad, sig

    if len(parts) == 1:
        wave, flux, ivar, bad, sig = cut(*parts[0])
        if wave.ndim == 2:
            bad = bad | ~np.isfinite(wave)
            # LAMOST files share one log-linear grid (stored as float32 in some layouts, float64
            # in others): when every row agrees with the first to 1% of a pixel over the needed
            # range, one shared grid makes every later step cheaper (one design matrix, one
            # interpolation table); the 1% (0.7 km/s at most) is far below any velocity error
            if wave.shape[1] > 1 and np.isfinite(wave).all():
                tol = 0.01 * float(np.min(np.diff(wave[0])))
                if np.max(np.abs(wave - wave[0])) <= tol:
                    wave = wave[0]
                if sig is not None and sig.ndim == 2:
                    sig = sig[0]
        ivar = np.where(bad, np.float32(0), ivar).astype(np.float32, copy=False)
        return Joined(wave, flux.astype(np.float32, copy=False), ivar, bad, sig)

    if any(arm.wave.ndim != 1 for arm, _ in parts):
        raise ValueError("joining several arms needs shared (1-D) wavelength grids")
    cuts = [cut(arm, cols) for arm, cols in parts]
    # arms on one lattice: identical wavelengths (to 1e-4 A) in the overlaps become one pixel
    union = np.unique(np.round(np.concatenate([c[0] for c in cuts]), 4))
    fsum = np.zeros((n, union.size))
    isum = np.zeros((n, union.size))
    sig_sum = np.zeros((n, union.size)) if want_sigma else None
    count = np.zeros(union.size)
    for w, flux, ivar, bad, sig in cuts:  # loop over (at most three) arms, not spectra
        j = np.searchsorted(union, np.round(w, 4))
        if j.size and np.all(np.diff(j) == 1):  # the usual case: a contiguous block of the union
            j = slice(int(j[0]), int(j[-1]) + 1)
        iv = np.where(bad, 0.0, ivar)
        fsum[:, j] += np.where(bad, 0.0, flux) * iv
        isum[:, j] += iv
        count[j] += 1  # (a slice or distinct indices: no repeated index is lost)
        if want_sigma:
            sig_sum[:, j] += np.broadcast_to(sig, flux.shape)
    bad = ~(isum > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        flux = np.where(bad, 0.0, fsum / isum).astype(np.float32)
    sigma = None
    if want_sigma:
        sigma = sig_sum / count  # overlaps: mean of the arms' LSF widths
        if np.all(sigma == sigma[:1]):
            sigma = sigma[0]
    return Joined(union, flux, isum.astype(np.float32), bad, sigma)
