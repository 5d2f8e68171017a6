"""Continuum normalisation as in the paper ("GASPP"), batched over spectra.

Our reading of the recipe (the paper gives it in words; choices we had to make are marked *):

1. Median-filter the flux over ``median_window`` (7) pixels (edges: nearest value*).
2. Blue segment (``blue_segment``, 3700-5700 A), when it holds more than ``min_segment_pixels`` pixels:

   a. smooth the median-filtered flux with a Savitzky-Golay filter (order 2; window 3 at
      S/N >= 50, which leaves the flux unchanged, wider at lower S/N*) and fit a degree-5
      polynomial; used only to decide whether the star is hot*;
   b. if that polynomial peaks blueward of 4500 A (hot star), replace the flux inside each
      Balmer-wing window (4030-4160, 4270-4410, 4800-4940 A) by the straight line between the
      flux maxima found within 10 A outside each window edge;
   c. ten rounds of: fit a degree-5 polynomial, raise every point below the fit to the fit
      (the result climbs to the upper envelope of the median-filtered flux);
   d. a final degree-5 fit is the continuum.
3. Red segment (from ``red_start``, 6100 A, to the end): nine rounds of a degree-4 fit in which
   points below the fit, or more than ``red_clip`` (3) standard deviations of the residuals* above
   it, are replaced by the fit; the ninth fit is the continuum*.
4. Everywhere else (between the segments, or in a segment that was not fitted) the median-filtered
   flux is its own continuum. A continuum <= 0 becomes 1 and the spectrum is flagged.

All pixels of a segment have equal weight* (bad pixels have been interpolated over beforehand, as
the paper does). Polynomials are Chebyshev series on the segment's wavelength mapped to [-1, 1],
fitted by batched least squares: the normal matrices (N, d+1, d+1) are built and inverted once
per batch (they depend only on which pixels belong to the segment, not on the flux), so each round
costs two matrix products over the whole batch. When the rows share one wavelength grid, the
design matrix is shared too and each round is a pair of BLAS GEMMs. A rest-frame shift changes only
which pixels belong to a segment: a polynomial in rest wavelength is a polynomial of the same
degree in observed wavelength, so the observed grid still serves as the basis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.polynomial import chebyshev
from scipy.ndimage import median_filter
from scipy.signal import savgol_filter

from catalog_tool.preprocess.settings import PreprocessSettings

__all__ = ["ContinuumResult", "gaspp_continuum", "median_smooth",
           "CONT_BLUE_SKIPPED", "CONT_RED_SKIPPED", "CONT_NONPOSITIVE", "CONT_HOT", "CONT_NO_DATA",
           "CONT_BAD_BITS"]

#: Continuum status bits (the CONT_STATUS diagnostic).
CONT_BLUE_SKIPPED = 1   # blue segment needed but it has too few pixels: median flux used instead
CONT_RED_SKIPPED = 2    # red segment needed but it has too few pixels
CONT_NONPOSITIVE = 4    # continuum <= 0 (or not finite) somewhere in the window: set to 1 there
CONT_NO_DATA = 8        # no good pixel in the window
CONT_HOT = 16           # information: hot star, Balmer windows bridged
#: Bits that make the continuum unusable (CONT_OK is False when any is set).
CONT_BAD_BITS = CONT_BLUE_SKIPPED | CONT_RED_SKIPPED | CONT_NONPOSITIVE | CONT_NO_DATA


@dataclass(frozen=True)
class ContinuumResult:
    """``continuum`` float64 (N, npix), ``status`` int16 bits (N,), ``hot`` bool (N,)."""

    continuum: np.ndarray
    status: np.ndarray
    hot: np.ndarray


def median_smooth(flux: np.ndarray, size: int) -> np.ndarray:
    """Running median over ``size`` pixels along the last axis (edges: nearest value)."""
    if size <= 1 or flux.shape[-1] == 0:
        return flux
    return median_filter(flux, size=(1, size), mode="nearest")


class _BatchedPoly:
    """Batched weighted least squares with a Chebyshev basis of degree ``degree``.

    ``x`` is (m,) (shared by all rows) or (N, m); ``w`` (N, m) are the per-row weights (0/1 here).
    The normal matrices are inverted once; :meth:`fit` then costs two matrix products.
    """

    def __init__(self, x: np.ndarray, w: np.ndarray, degree: int):
        self.w = w
        self.shared = x.ndim == 1
        V = chebyshev.chebvander(x, degree)  # (m, d+1) or (N, m, d+1)
        self.V = V
        d1 = degree + 1
        if self.shared:
            # A_n = V^T diag(w_n) V for every row at once: one GEMM with the pixelwise outer products
            outer = (V[:, :, None] * V[:, None, :]).reshape(V.shape[0], d1 * d1)
            A = (w @ outer).reshape(-1, d1, d1)
        else:
            A = np.einsum("nmi,nm,nmj->nij", V, w, V, optimize=True)
        # rows with too few pixels would be singular: they get the identity (and are never used)
        usable = (w > 0).sum(axis=1) > degree
        A[~usable] = np.eye(d1)
        self.Ainv = np.linalg.solve(A, np.broadcast_to(np.eye(d1), A.shape))

    def fit(self, y: np.ndarray) -> np.ndarray:
        """The least-squares polynomial of ``y`` (N, m), evaluated on the same pixels."""
        wy = self.w * y
        if self.shared:
            rhs = wy @ self.V                                  # (N, d+1)
            coef = np.einsum("nij,nj->ni", self.Ainv, rhs)
            return coef @ self.V.T
        rhs = np.einsum("nm,nmi->ni", wy, self.V)
        coef = np.einsum("nij,nj->ni", self.Ainv, rhs)
        return np.einsum("nmi,ni->nm", self.V, coef)


def _segment_cols(inseg: np.ndarray) -> slice:
    cols = np.flatnonzero(inseg.any(axis=0))
    return slice(int(cols[0]), int(cols[-1]) + 1) if cols.size else slice(0, 0)


def _scaled(w: np.ndarray) -> np.ndarray:
    """Wavelengths mapped linearly onto [-1, 1] (one map for the whole batch; NaN padding -> 0)."""
    with np.errstate(invalid="ignore"):
        lo, hi = np.nanmin(w), np.nanmax(w)
        x = (2.0 * w - (lo + hi)) / max(hi - lo, 1e-12)
    return np.where(np.isfinite(x), x, 0.0)


def _savgol_by_snr(y: np.ndarray, snr: np.ndarray, settings: PreprocessSettings) -> np.ndarray:
    """Savitzky-Golay smoothing with a window chosen per row by S/N (loop over S/N classes only)."""
    out = y
    snr = np.where(np.isfinite(snr), snr, 0.0)
    assigned = np.zeros(y.shape[0], bool)
    for snr_min, window in settings.savgol_windows:
        rows = ~assigned & (snr >= snr_min)
        assigned |= rows
        if not rows.any() or window <= settings.savgol_order + 1 or window > y.shape[1]:
            continue  # window = order + 1: the filter is the identity
        if out is y:
            out = y.copy()
        out[rows] = savgol_filter(y[rows], window, settings.savgol_order, axis=-1, mode="interp")
    return out


def _bridge_balmer(y, wr, hot, settings):
    """Replace the Balmer-wing windows of hot rows by straight lines between nearby maxima."""
    a = settings.balmer_anchor
    for lo, hi in settings.balmer_windows:  # three windows, vectorised over rows
        left = (wr >= lo - a) & (wr <= lo)
        right = (wr >= hi) & (wr <= hi + a)
        ok = hot & left.any(axis=1) & right.any(axis=1)
        if not ok.any():
            continue
        rows = np.arange(y.shape[0])
        il = np.argmax(np.where(left, y, -np.inf), axis=1)
        ir = np.argmax(np.where(right, y, -np.inf), axis=1)
        wr2 = np.broadcast_to(wr, y.shape)
        wl, wrr = wr2[rows, il], wr2[rows, ir]
        yl, yr = y[rows, il], y[rows, ir]
        t = (wr2 - wl[:, None]) / (wrr - wl)[:, None]
        inside = ok[:, None] & (wr2 > wl[:, None]) & (wr2 < wrr[:, None])
        y = np.where(inside, yl[:, None] + t * (yr - yl)[:, None], y)
    return y


def gaspp_continuum(*, wave: np.ndarray, flux: np.ndarray, snr: np.ndarray,
                    settings: PreprocessSettings, wave_rest: np.ndarray | None = None,
                    fit_blue: bool = True, fit_red: bool = True,
                    window: tuple[float, float] | None = None) -> ContinuumResult:
    """The paper's continuum for a batch of spectra on their native pixels.

    Parameters
    ----------
    wave : ndarray, shape (npix,) or (N, npix)
        Wavelengths of the pixels (observed frame), increasing; they define the polynomial basis.
    flux : ndarray, shape (N, npix)
        Flux with bad pixels already interpolated over (finite everywhere).
    snr : ndarray, shape (N,)
        Median S/N per spectrum (chooses the Savitzky-Golay window).
    settings : PreprocessSettings
    wave_rest : ndarray, shape (npix,) or (N, npix), optional
        Rest-frame wavelengths deciding segment membership; ``wave`` when omitted.
    fit_blue, fit_red : bool
        Which segments to fit (fit only those the model grid needs); elsewhere the median-filtered
        flux is the continuum.
    window : (float, float), optional
        Rest wavelength range in which a non-positive continuum flags the spectrum; all pixels
        when omitted.

    Returns
    -------
    ContinuumResult
    """
    s = settings
    n, npix = flux.shape
    wr = wave if wave_rest is None else wave_rest
    wr2 = np.broadcast_to(wr, flux.shape)
    mf = median_smooth(np.asarray(flux, dtype=np.float64), s.median_window)
    cont = mf.copy()
    status = np.zeros(n, np.int16)
    hot = np.zeros(n, bool)
    with np.errstate(invalid="ignore"):
        finite_wave = np.isfinite(wr2)

    if fit_blue:
        b0, b1 = s.blue_segment
        with np.errstate(invalid="ignore"):
            inseg = finite_wave & (wr2 >= b0) & (wr2 <= b1)
        cols = _segment_cols(inseg)
        fitted = inseg[:, cols].sum(axis=1) > s.min_segment_pixels
        status[~fitted] |= CONT_BLUE_SKIPPED
        if fitted.any():
            wseg = (inseg[:, cols] & fitted[:, None]).astype(np.float64)
            x = _scaled(wave[..., cols])
            poly = _BatchedPoly(x, wseg, s.blue_degree)
            y = mf[:, cols]
            wrc = wr2[:, cols]
            # (a) first fit on the Savitzky-Golay-smoothed flux: where does the continuum peak?
            p0 = poly.fit(_savgol_by_snr(y, snr, s))
            ipk = np.argmax(np.where(wseg > 0, p0, -np.inf), axis=1)
            hot = fitted & (wrc[np.arange(n), ipk] < s.hot_peak_wave)
            status[hot] |= CONT_HOT
            # (b) hot stars: bridge the Balmer wings
            if hot.any():
                y = _bridge_balmer(y, wrc, hot, s)
            # (c) upper envelope, (d) final fit
            for _ in range(s.blue_rounds):
                y = np.maximum(y, poly.fit(y))
            cb = poly.fit(y)
            cont[:, cols] = np.where(wseg > 0, cb, cont[:, cols])

    if fit_red:
        r0 = s.red_start
        with np.errstate(invalid="ignore"):
            inseg = finite_wave & (wr2 >= r0)
        cols = _segment_cols(inseg)
        fitted = inseg[:, cols].sum(axis=1) > s.min_segment_pixels
        status[~fitted] |= CONT_RED_SKIPPED
        if fitted.any() and s.red_rounds > 0:
            wseg = (inseg[:, cols] & fitted[:, None]).astype(np.float64)
            x = _scaled(wave[..., cols])
            poly = _BatchedPoly(x, wseg, s.red_degree)
            y = mf[:, cols]
            nw = np.maximum(wseg.sum(axis=1), 1.0)
            for i in range(s.red_rounds):
                p = poly.fit(y)
                if i == s.red_rounds - 1:
                    break
                r = y - p
                sd = np.sqrt((wseg * r * r).sum(axis=1) / nw)
                y = np.where((r < 0) | (r > s.red_clip * sd[:, None]), p, y)
            cont[:, cols] = np.where(wseg > 0, p, cont[:, cols])

    bad_c = ~np.isfinite(cont) | (cont <= 0)
    if window is not None:
        with np.errstate(invalid="ignore"):
            inwin = (wr2 >= window[0]) & (wr2 <= window[1])
    else:
        inwin = finite_wave
    status[(bad_c & inwin).any(axis=1)] |= CONT_NONPOSITIVE
    cont = np.where(bad_c, 1.0, cont)
    return ContinuumResult(continuum=cont, status=status, hot=hot)
