"""Bad-pixel masks and interpolation over bad pixels, batched along the pixel axis.

A pixel is bad when its mask has any bit set, its inverse variance is zero, negative or not
finite, or its flux is not finite. Bad pixels keep IVAR 0 in every output; for the continuum fit
(which needs a value at every pixel) their flux is replaced by a straight line between the nearest
good neighbours.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bad_pixels", "interpolate_bad"]


def bad_pixels(*, flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Boolean (N, npix) array, True where a pixel must not be used.

    Parameters
    ----------
    flux, ivar : ndarray, shape (N, npix)
        Flux and inverse variance.
    mask : ndarray of int, shape (N, npix), optional
        Pipeline mask; any non-zero bit marks the pixel bad.
    """
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0))
    if mask is not None:
        bad |= mask != 0
    return bad


def interpolate_bad(*, wave: np.ndarray, flux: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Flux with bad pixels replaced by linear interpolation between the nearest good pixels.

    Bad pixels before the first (after the last) good pixel take that pixel's value; a row with no
    good pixel becomes all zeros. Vectorised: the previous and next good pixel of every pixel come
    from a running maximum (minimum) of good-pixel indices, so no loop over spectra or pixels.

    Parameters
    ----------
    wave : ndarray, shape (npix,) or (N, npix)
        Wavelengths (any monotonic coordinate); NaN allowed on bad pixels only.
    flux : ndarray, shape (N, npix)
    bad : ndarray of bool, shape (N, npix)

    Returns
    -------
    ndarray, float64 or float32 like ``flux``, shape (N, npix), finite everywhere.
    """
    n, npix = flux.shape
    out = np.where(bad, 0, flux).astype(flux.dtype, copy=False)
    if not bad.any():
        return out
    # int32 running extremes over all pixels; the gathers and arithmetic then run on the bad
    # pixels only (a few per cent of a spectrum), not on every pixel
    idx = np.arange(npix, dtype=np.int32)
    # index of the last good pixel at or before each pixel (-1 when none) ...
    prev = np.maximum.accumulate(np.where(bad, np.int32(-1), idx), axis=1)
    # ... and of the first good pixel at or after it (npix when none)
    nxt = np.minimum.accumulate(np.where(bad, np.int32(npix), idx)[:, ::-1], axis=1)[:, ::-1]
    r, c = np.nonzero(bad)
    prev, nxt = prev[r, c], nxt[r, c]
    has_prev = prev >= 0
    has_next = nxt < npix
    p = np.clip(prev, 0, npix - 1)
    q = np.clip(nxt, 0, npix - 1)
    fp = out[r, p]
    fq = out[r, q]
    if wave.ndim == 1:
        wc, wp, wq = wave[c], wave[p], wave[q]
    else:
        wc, wp, wq = wave[r, c], wave[r, p], wave[r, q]
    w = np.where(np.isfinite(wc), wc, wp)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(q > p, (w - wp) / (wq - wp), 0.0)
    t = np.where(np.isfinite(t), np.clip(t, 0.0, 1.0), 0.0)
    interp = np.where(has_prev & has_next, fp + t * (fq - fp),
                      np.where(has_prev, fp, np.where(has_next, fq, 0.0)))
    out[r, c] = interp
    return out
