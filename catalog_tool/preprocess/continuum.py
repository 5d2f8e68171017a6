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

import functools

import numpy as np
from numpy.polynomial import chebyshev
from scipy import sparse
from scipy.ndimage import median_filter
from scipy.signal import savgol_coeffs

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
    """``continuum`` float32 (N, npix), ``status`` int16 bits (N,), ``hot`` bool (N,)."""

    continuum: np.ndarray
    status: np.ndarray
    hot: np.ndarray


# Devillard's 13-comparator selection network for the median of 7 values
_MED7_NETWORK = ((0, 5), (0, 3), (1, 6), (2, 4), (0, 1), (3, 5), (2, 6), (2, 3), (3, 6), (4, 5),
                 (1, 4), (1, 3), (3, 4))


def median_smooth(*, flux: np.ndarray, size: int) -> np.ndarray:
    """Running median over ``size`` pixels along the last axis (edges: nearest value).

    For the paper's 7 pixels a sorting network of element-wise min/max over shifted views is used:
    exact, and several times faster than a rank filter on batches that fit the cache.
    """
    if size <= 1 or flux.shape[-1] == 0:
        return flux
    if size != 7:
        return median_filter(flux, size=(1, size), mode="nearest")
    m = flux.shape[-1]
    yp = np.concatenate([np.repeat(flux[:, :1], 3, 1), flux, np.repeat(flux[:, -1:], 3, 1)], axis=1)
    p = [yp[:, k:k + m] for k in range(7)]
    for i, j in _MED7_NETWORK:
        p[i], p[j] = np.minimum(p[i], p[j]), np.maximum(p[i], p[j])
    return p[3]


class _BatchedPoly:
    """Batched least squares with a Chebyshev basis of degree ``degree`` and 0/1 weights.

    ``x`` is (m,) (shared by all rows) or (N, m); ``w`` is (m,) (one segment for all rows) or
    (N, m). The normal matrices are inverted once; :meth:`fit` then costs two matrix products
    (float32 for the big ones: the sums run over a few thousand pixels of O(1) Chebyshev values).
    """

    def __init__(self, x: np.ndarray, w: np.ndarray, degree: int, nrows: int):
        self.shared = x.ndim == 1
        self.shared_w = w.ndim == 1
        V = chebyshev.chebvander(x, degree)  # (m, d+1) or (N, m, d+1)
        d1 = degree + 1
        if self.shared and self.shared_w:
            A = np.broadcast_to((V * w[:, None]).T @ V, (nrows, d1, d1)).copy()
        elif self.shared:
            # A_n = V^T diag(w_n) V for every row at once: one GEMM with the pixelwise outer products
            outer = (V[:, :, None] * V[:, None, :]).reshape(V.shape[0], d1 * d1)
            A = (w @ outer).reshape(-1, d1, d1)
        else:
            A = np.einsum("nmi,nm,nmj->nij", V, np.broadcast_to(w, V.shape[:2]), V, optimize=True)
        # rows with too few pixels would be singular: they get the identity (and are never used)
        usable = np.broadcast_to((w > 0).sum(axis=-1) > degree, (nrows,))
        A[~usable] = np.eye(d1)
        self.Ainv = np.linalg.solve(A, np.broadcast_to(np.eye(d1), A.shape))
        self.w = w.astype(np.float32)
        self.V = V.astype(np.float32)
        # weights folded into the design matrix when they are the same for every row
        self.Vw = (V * w[:, None]).astype(np.float32) if self.shared and self.shared_w else None
        self.VT = np.ascontiguousarray(self.V.T) if self.shared else None

    def fit(self, y: np.ndarray, smoother=None) -> np.ndarray:
        """The least-squares polynomial of ``y`` (N, m) float32, evaluated on the same pixels.

        With ``smoother`` (a sparse (m, m) linear filter S), fit ``S @ y`` instead, without
        filtering the spectra: the normal equations need ``(W V)^T S y = (S^T W V)^T y``, and
        ``S^T W V`` is a small (m, d+1) product per batch.

        Flux so large that the products overflow (1e19 and up in float32) gives a non-finite fit,
        which :func:`gaspp_continuum` flags ``CONT_NONPOSITIVE``: no warning is raised for it.
        """
        with np.errstate(over="ignore", invalid="ignore"):
            return self._fit(y, smoother)

    def _fit(self, y: np.ndarray, smoother) -> np.ndarray:
        if smoother is not None:
            if self.Vw is None:  # per-row weights: filter the spectra themselves
                return self._fit(np.asarray((smoother @ y.T).T, np.float32), None)
            rhs = y @ np.asarray(smoother.T @ self.Vw, np.float32)
        elif self.Vw is not None:
            rhs = y @ self.Vw
        elif self.shared:
            rhs = (self.w * y) @ self.V
        else:
            rhs = np.einsum("nm,nmi->ni", self.w * y, self.V)
        coef = np.einsum("nij,nj->ni", self.Ainv, rhs).astype(np.float32)
        if self.shared:
            return coef @ self.VT
        return np.einsum("nmi,ni->nm", self.V, coef)


def _scaled(w: np.ndarray) -> np.ndarray:
    """Wavelengths mapped linearly onto [-1, 1] (one map for the whole batch; NaN padding -> 0)."""
    with np.errstate(invalid="ignore"):
        lo, hi = np.nanmin(w), np.nanmax(w)
        x = (2.0 * w - (lo + hi)) / max(hi - lo, 1e-12)
    return np.where(np.isfinite(x), x, 0.0)


def _segment_poly(wave, wr, lo, hi, degree, s, n):
    """Design of one segment: the columns it spans, its 0/1 weights and which rows are fitted."""
    with np.errstate(invalid="ignore"):
        inseg = (wr >= lo) & (wr <= hi)
    cols = np.flatnonzero(inseg.any(axis=0) if inseg.ndim == 2 else inseg)
    cols = slice(int(cols[0]), int(cols[-1]) + 1) if cols.size else slice(0, 0)
    wseg = inseg[..., cols]
    fitted = np.broadcast_to(wseg.sum(axis=-1) > s.min_segment_pixels, (n,))
    if not fitted.any():
        return None, cols, wseg, fitted
    if wseg.ndim == 2:
        wseg = wseg & fitted[:, None]
    poly = _BatchedPoly(_scaled(wave[..., cols]), wseg.astype(np.float64), degree, n)
    return poly, cols, wseg, fitted


@functools.lru_cache(maxsize=16)
def savgol_operator(m: int, window: int, order: int) -> sparse.csr_matrix:
    """The (m, m) matrix S of ``savgol_filter(y, window, order, mode="interp")``: ``S @ y``.

    Interior rows hold the smoothing coefficients; the first and last ``window // 2`` rows
    evaluate the polynomial fitted to the first (last) window, as scipy's ``interp`` mode does.
    """
    h = window // 2
    c = savgol_coeffs(window, order, use="dot")
    rows, cols, vals = [], [], []
    i = np.arange(h, m - h)
    rows.append(np.repeat(i, window))
    cols.append((i[:, None] + np.arange(-h, h + 1)).ravel())
    vals.append(np.tile(c, i.size))
    for k in range(h):
        rows += [np.full(window, k), np.full(window, m - 1 - k)]
        cols += [np.arange(window), np.arange(m - window, m)]
        vals += [savgol_coeffs(window, order, pos=k, use="dot"),
                 savgol_coeffs(window, order, pos=window - 1 - k, use="dot")]
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(m, m))


def _savgol_windows(snr: np.ndarray, settings: PreprocessSettings, m: int) -> np.ndarray:
    """Savitzky-Golay window per row from its S/N (first class whose snr_min it reaches)."""
    snr = np.where(np.isfinite(snr), snr, 0.0)
    win = np.full(snr.shape, settings.savgol_windows[-1][1])
    for snr_min, window in reversed(settings.savgol_windows):
        win = np.where(snr >= snr_min, window, win)
    # a window of order + 1 pixels is the identity; one longer than the segment cannot be used
    return np.where((win <= settings.savgol_order + 1) | (win > m), 0, win)


def _bridge_balmer(y, wr, hot, settings):
    """Replace the Balmer-wing windows of hot rows by straight lines between nearby maxima.

    Works on the hot rows and on the columns around each window only.
    """
    a = settings.balmer_anchor
    rows = np.flatnonzero(hot)
    if rows.size == 0:
        return y
    y = y.copy()
    wr_h = np.broadcast_to(wr, y.shape)[rows] if np.ndim(wr) == 2 else wr
    for lo, hi in settings.balmer_windows:  # three windows, vectorised over rows
        with np.errstate(invalid="ignore"):
            near = (wr_h >= lo - a) & (wr_h <= hi + a)
        cols = np.flatnonzero(near.any(axis=0) if near.ndim == 2 else near)
        if cols.size == 0:
            continue
        c = slice(int(cols[0]), int(cols[-1]) + 1)
        w = np.broadcast_to(wr_h[..., c], (rows.size, c.stop - c.start))
        yy = y[rows, c]
        with np.errstate(invalid="ignore"):
            left = (w >= lo - a) & (w <= lo)
            right = (w >= hi) & (w <= hi + a)
        ok = left.any(axis=1) & right.any(axis=1)
        r = np.arange(rows.size)
        il = np.argmax(np.where(left, yy, -np.inf), axis=1)
        ir = np.argmax(np.where(right, yy, -np.inf), axis=1)
        wl, wrr = w[r, il], w[r, ir]
        yl, yr = yy[r, il], yy[r, ir]
        with np.errstate(invalid="ignore", divide="ignore"):
            t = (w - wl[:, None]) / (wrr - wl)[:, None]
            inside = ok[:, None] & (w > wl[:, None]) & (w < wrr[:, None])
        y[rows, c] = np.where(inside, yl[:, None] + t * (yr - yl)[:, None], yy)
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
    mf = median_smooth(flux=np.asarray(flux, dtype=np.float32), size=s.median_window)
    cont = mf.copy()
    status = np.zeros(n, np.int16)
    hot = np.zeros(n, bool)

    if fit_blue:
        b0, b1 = s.blue_segment
        poly, cols, wseg, fitted = _segment_poly(wave, wr, b0, b1, s.blue_degree, s, n)
        status[~fitted] |= CONT_BLUE_SKIPPED
        if fitted.any():
            y = mf[:, cols]
            wrc = wr[..., cols]
            # (a) first fit on the Savitzky-Golay-smoothed flux: where does the continuum peak?
            win = _savgol_windows(snr, s, y.shape[1])
            p0 = poly.fit(y)
            for w in np.unique(win[win > 0]):  # one class per distinct window (a few at most)
                rows = win == w
                p0[rows] = poly.fit(y, savgol_operator(y.shape[1], int(w), s.savgol_order))[rows]
            ipk = np.argmax(np.where(wseg > 0, p0, -np.inf), axis=1)
            peak = wrc[ipk] if wrc.ndim == 1 else wrc[np.arange(n), ipk]
            hot = fitted & (peak < s.hot_peak_wave)
            status[hot] |= CONT_HOT
            # (b) hot stars: bridge the Balmer wings
            y = _bridge_balmer(y, wrc, hot, s)
            # (c) upper envelope, (d) final fit
            for _ in range(s.blue_rounds):
                y = np.maximum(y, poly.fit(y))
            cb = poly.fit(y)
            cont[:, cols] = np.where((wseg > 0) & fitted[:, None], cb, cont[:, cols])

    if fit_red:
        with np.errstate(invalid="ignore"):
            top = float(np.nanmax(wr)) if np.isfinite(wr).any() else s.red_start
        poly, cols, wseg, fitted = _segment_poly(wave, wr, s.red_start, max(top, s.red_start),
                                                 s.red_degree, s, n)
        status[~fitted] |= CONT_RED_SKIPPED
        if fitted.any() and s.red_rounds > 0:
            y = mf[:, cols]
            nw = np.maximum(np.broadcast_to(wseg, y.shape).sum(axis=1), 1.0)
            for i in range(s.red_rounds):
                p = poly.fit(y)
                if i == s.red_rounds - 1:
                    break
                r = y - p
                sd = np.sqrt((wseg * r * r).sum(axis=1) / nw)
                y = np.where((r < 0) | (r > s.red_clip * sd[:, None]), p, y)
            cont[:, cols] = np.where((wseg > 0) & fitted[:, None], p, cont[:, cols])

    bad_c = ~np.isfinite(cont) | (cont <= 0)
    with np.errstate(invalid="ignore"):
        inwin = np.isfinite(wr) if window is None else (wr >= window[0]) & (wr <= window[1])
    status[(bad_c & inwin).any(axis=1)] |= CONT_NONPOSITIVE
    cont = np.where(bad_c, np.float32(1.0), cont)
    return ContinuumResult(continuum=cont, status=status, hot=hot)
