"""Plain per-spectrum reference of the GASPP continuum (one spectrum at a time, np.polyfit).

Written from the recipe in docs/preprocessing.md independently of the batched code, to check it:
explicit loops, monomial polynomials via np.polyfit, a median filter from np.median over an
edge-padded window. Slow on purpose (the benchmark reports its speed next to the batched chain).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import savgol_filter


def median7(y, size):
    h = size // 2
    yp = np.concatenate([np.full(h, y[0]), y, np.full(h, y[-1])])
    return np.median(np.lib.stride_tricks.sliding_window_view(yp, size), axis=1)


def polyfit_eval(x, y, deg):
    c = np.polyfit(x, y, deg)
    return np.polyval(c, x)


def continuum_one(wave, flux, snr, s, fit_blue=True, fit_red=True, wave_rest=None):
    """Continuum of one spectrum (``flux`` already interpolated over bad pixels)."""
    wr = wave if wave_rest is None else wave_rest
    mf = median7(np.asarray(flux, float), s.median_window)
    cont = mf.copy()
    hot = False
    if fit_blue:
        b0, b1 = s.blue_segment
        seg = np.flatnonzero((wr >= b0) & (wr <= b1))
        if seg.size > s.min_segment_pixels:
            x = (wave[seg] - wave[seg].mean()) / 1000.0
            y = mf[seg].copy()
            window = [w for smin, w in s.savgol_windows if snr >= smin][0]
            ys = savgol_filter(y, window, s.savgol_order, mode="interp") if window <= y.size else y
            p0 = polyfit_eval(x, ys, s.blue_degree)
            hot = wr[seg][np.argmax(p0)] < s.hot_peak_wave
            if hot:
                for lo, hi in s.balmer_windows:
                    wseg = wr[seg]
                    left = np.flatnonzero((wseg >= lo - s.balmer_anchor) & (wseg <= lo))
                    right = np.flatnonzero((wseg >= hi) & (wseg <= hi + s.balmer_anchor))
                    if left.size == 0 or right.size == 0:
                        continue
                    il = left[np.argmax(y[left])]
                    ir = right[np.argmax(y[right])]
                    for i in range(il + 1, ir):
                        t = (wseg[i] - wseg[il]) / (wseg[ir] - wseg[il])
                        y[i] = y[il] + t * (y[ir] - y[il])
            for _ in range(s.blue_rounds):
                p = polyfit_eval(x, y, s.blue_degree)
                for i in range(y.size):
                    if y[i] < p[i]:
                        y[i] = p[i]
            cont[seg] = polyfit_eval(x, y, s.blue_degree)
    if fit_red:
        seg = np.flatnonzero(wr >= s.red_start)
        if seg.size > s.min_segment_pixels:
            x = (wave[seg] - wave[seg].mean()) / 1000.0
            y = mf[seg].copy()
            for k in range(s.red_rounds):
                p = polyfit_eval(x, y, s.red_degree)
                if k == s.red_rounds - 1:
                    break
                r = y - p
                sd = np.sqrt(np.mean(r * r))
                for i in range(y.size):
                    if r[i] < 0 or r[i] > s.red_clip * sd:
                        y[i] = p[i]
            cont[seg] = p
    cont[~(np.isfinite(cont) & (cont > 0))] = 1.0
    return cont, hot


def interpolate_one(wave, flux, bad):
    good = np.flatnonzero(~bad)
    if good.size == 0:
        return np.zeros_like(flux, dtype=float)
    return np.interp(wave, wave[good], flux[good])


def resample_one(wave, flux, ivar, target):
    """Linear interpolation in log wavelength with ivar propagation, one spectrum."""
    xn, xt = np.log10(wave), np.log10(target)
    f = np.ones(target.size)
    iv = np.zeros(target.size)
    for k, x in enumerate(xt):
        if x < xn[0] or x > xn[-1]:
            continue
        j = min(max(np.searchsorted(xn, x, side="right") - 1, 0), xn.size - 2)
        t = (x - xn[j]) / (xn[j + 1] - xn[j])
        var = 0.0
        ok = True
        for idx, wgt in ((j, 1 - t), (j + 1, t)):
            if wgt > 0:
                if ivar[idx] <= 0:
                    ok = False
                else:
                    var += wgt * wgt / ivar[idx]
        if ok:
            f[k] = (1 - t) * flux[j] + t * flux[j + 1]
            iv[k] = 1.0 / var
    return f, iv


def preprocess_one(wave, flux, ivar, bad, grid_wave, s, snr, fit_blue=True, fit_red=False):
    """Continuum-normalise one spectrum and put it on the grid (no rest frame, no LSF)."""
    clean = interpolate_one(wave, flux, bad)
    cont, _ = continuum_one(wave, clean, snr, s, fit_blue, fit_red)
    nf = clean / cont
    niv = np.where(bad, 0.0, ivar * cont ** 2)
    return resample_one(wave, nf, niv, grid_wave)
