"""The model's wavelength grid and linear resampling onto it in log wavelength.

IVAR propagation
----------------
An output pixel at log wavelength x between native pixels l and r is ``f = (1 - t) f_l + t f_r``
with ``t = (x - x_l) / (x_r - x_l)``. For independent native pixels its variance is
``(1 - t)^2 / ivar_l + t^2 / ivar_r``, and the output IVAR is its inverse. When either neighbour that
carries weight is bad (IVAR 0) the output pixel is bad (IVAR 0): a masked pixel never leaks. The
covariance this creates between neighbouring output pixels is ignored, as in the paper. Output
pixels outside a spectrum's wavelength range are never extrapolated: they are *uncovered*, with
IVAR 0, and count against the spectrum's coverage.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from catalog_tool.errors import ConfigError

__all__ = ["ModelGrid", "resample_to_grid", "Resampled", "loglinear_wave"]


def loglinear_wave(*, loglam0: float, dloglam: float, npix: int) -> np.ndarray:
    """Wavelengths ``10**(loglam0 + dloglam * i)`` for ``i < npix``, float64, in Angstrom.

    The one definition of a log-linear grid: the model grid, the simulator's rendering grid and
    the LAMOST pixel grid (:mod:`catalog_tool.sim.instrument`) are all built with it.
    """
    return 10.0 ** (loglam0 + dloglam * np.arange(npix))


@dataclass(frozen=True)
class ModelGrid:
    """A log-linear vacuum wavelength grid: ``log10(wave / A) = loglam0 + dloglam * i``.

    The default is the paper's grid: 1,462 pixels from 3999.45 to 5598.87 A.
    The model bundle carries it (:meth:`to_dict`), so other models can use other grids.
    """

    loglam0: float = 3.602
    dloglam: float = 1e-4
    npix: int = 1462

    def __post_init__(self):
        problems = []
        if not np.isfinite(self.loglam0) or not 2.5 < self.loglam0 < 5.5:
            problems.append(f"loglam0 {self.loglam0} is not log10 of an optical wavelength")
        if not (np.isfinite(self.dloglam) and self.dloglam > 0):
            problems.append(f"dloglam must be positive, not {self.dloglam}")
        if int(self.npix) != self.npix or self.npix < 2:
            problems.append(f"npix must be an integer >= 2, not {self.npix}")
        if problems:
            raise ConfigError("invalid model grid: " + "; ".join(problems))
        object.__setattr__(self, "npix", int(self.npix))

    @property
    def loglam(self) -> np.ndarray:
        """log10 of the vacuum wavelengths, float64, shape (npix,)."""
        return self.loglam0 + self.dloglam * np.arange(self.npix)

    @property
    def wave(self) -> np.ndarray:
        """Vacuum wavelengths in Angstrom, float64, shape (npix,)."""
        return loglinear_wave(loglam0=self.loglam0, dloglam=self.dloglam, npix=self.npix)

    @property
    def range(self) -> tuple[float, float]:
        """(first, last) wavelength in Angstrom."""
        w = self.wave
        return float(w[0]), float(w[-1])

    def to_dict(self) -> dict:
        """JSON-ready description, stored in the model bundle's manifest."""
        return {"kind": "loglinear", "medium": "vacuum", "loglam0": float(self.loglam0),
                "dloglam": float(self.dloglam), "npix": int(self.npix)}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelGrid":
        """Grid from :meth:`to_dict` output; anything else raises :class:`ConfigError`."""
        d = dict(d)
        kind = d.pop("kind", "loglinear")
        medium = d.pop("medium", "vacuum")
        if kind != "loglinear" or medium != "vacuum":
            raise ConfigError(f"unsupported model grid kind={kind!r} medium={medium!r}")
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown model grid keys {unknown}")
        return cls(**d)


@dataclass(frozen=True)
class Resampled:
    """Output of :func:`resample_to_grid`: flux, ivar (0 where bad or uncovered), covered mask."""

    flux: np.ndarray
    ivar: np.ndarray
    covered: np.ndarray


def _locate(xn: np.ndarray, xt: np.ndarray, n: int):
    """Left neighbour index, fraction t and coverage of targets ``xt`` in native ``xn`` (log wave).

    ``xn`` is (npix,) or (N, npix), increasing, NaN only as trailing padding; ``xt`` is (G,) or
    (N, G). Per-row grids are searched in one call by offsetting row n by ``n * span`` so that the
    flattened array stays sorted (no loop over spectra).
    """
    if xn.ndim == 1:
        valid = np.isfinite(xn)
        nvalid = np.full(n, int(valid.sum()))
        xs = xn[:nvalid[0]]
        j = np.searchsorted(xs, xt, side="right")  # xs[j-1] <= x < xs[j]
        j = np.broadcast_to(j, (n, xt.shape[-1]))
        left = np.clip(j - 1, 0, max(nvalid[0] - 2, 0))
        xl = xs[left] if nvalid[0] else np.zeros_like(left, float)
        xr = xs[np.minimum(left + 1, max(nvalid[0] - 1, 0))] if nvalid[0] else xl
    else:
        npix = xn.shape[1]
        nvalid = np.isfinite(xn).sum(axis=1)
        lo = np.nanmin(np.where(np.isfinite(xn), xn, np.inf)) if nvalid.any() else 0.0
        hi = np.nanmax(np.where(np.isfinite(xn), xn, -np.inf)) if nvalid.any() else 1.0
        xt2 = np.broadcast_to(xt, (n, xt.shape[-1]))
        lo = min(lo, float(np.nanmin(xt2)))
        hi = max(hi, float(np.nanmax(xt2)))
        span = (hi - lo) + 1.0
        pad = hi + 0.5  # padding sorts after every real value of its row, before the next row
        rows = np.arange(n)[:, None]
        flat = (np.where(np.isfinite(xn), xn, pad) - lo + rows * span).ravel()
        jt = np.searchsorted(flat, (xt2 - lo + rows * span).ravel(), side="right").reshape(n, -1)
        j = jt - rows * npix
        left = np.clip(j - 1, 0, np.maximum(nvalid[:, None] - 2, 0))
        xl = xn[rows, left]
        xr = xn[rows, np.minimum(left + 1, npix - 1)]
    xt2 = np.broadcast_to(xt, left.shape)
    # Coverage from the row's own first and last valid wavelength, not from the bracketing pair:
    # the row-offset search above can land one cell early when a target coincides with a native
    # pixel to rounding (LAMOST and the model grid share one log-lambda lattice), and t is
    # clipped to [0, 1] anyway.
    if xn.ndim == 1:
        first = xs[0] if nvalid[0] else np.nan
        last = xs[-1] if nvalid[0] else np.nan
    else:
        first = xn[:, :1]
        last = xn[np.arange(n)[:, None], np.maximum(nvalid[:, None] - 1, 0)]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (xt2 - xl) / (xr - xl)
        covered = (nvalid[:, None] >= 2) & (xt2 >= first) & (xt2 <= last) & np.isfinite(t)
    t = np.where(covered, np.clip(t, 0.0, 1.0), 0.0)
    return left, t, covered


def resample_to_grid(*, wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray,
                     target: np.ndarray) -> Resampled:
    """Linear interpolation in log wavelength onto ``target``, with IVAR propagated.

    Parameters
    ----------
    wave : ndarray, shape (npix,) or (N, npix)
        Native vacuum wavelengths, increasing; trailing NaN padding allowed.
    flux, ivar : ndarray, shape (N, npix)
        Flux and inverse variance (0 on bad pixels).
    target : ndarray, shape (G,) or (N, G)
        Output wavelengths in the same frame as ``wave``.

    Returns
    -------
    Resampled
        ``flux`` and ``ivar`` float32 (N, G): IVAR 0 where either weighted neighbour is bad or the
        pixel is not covered, and flux 1.0 there (a neutral continuum value, never NaN);
        ``covered`` bool (N, G).
    """
    n = flux.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        xn = np.log10(wave)
        xt = np.log10(target)
    if xn.ndim == 1 and xt.ndim == 1:
        # one native grid and one target for all rows: 1-D interpolation weights, column gathers
        left, t, covered = _locate(xn, xt[None, :], 1)
        left, t, covered = left[0], t[0], covered[0]
        right = np.minimum(left + 1, flux.shape[1] - 1)
        fl, fr = flux[:, left], flux[:, right]
        il, ir = ivar[:, left], ivar[:, right]
        covered = np.broadcast_to(covered, (n, covered.size))
    else:
        left, t, covered = _locate(xn, xt, n)
        rows = np.arange(n)[:, None]
        right = np.minimum(left + 1, flux.shape[1] - 1)
        fl, fr = flux[rows, left], flux[rows, right]
        il, ir = ivar[rows, left], ivar[rows, right]
    t = t.astype(np.float32)
    wl, wr = np.float32(1.0) - t, t
    bad = ((wl > 0) & ~(il > 0)) | ((wr > 0) & ~(ir > 0)) | ~covered
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        # a neighbour with zero weight contributes nothing, even when it is bad
        var = (np.where(wl > 0, (wl * wl) / il, np.float32(0))
               + np.where(wr > 0, (wr * wr) / ir, np.float32(0)))
        out_ivar = np.float32(1.0) / var
        out_flux = wl * fl + wr * fr
    bad |= ~np.isfinite(out_flux) | ~(out_ivar > 0) | ~np.isfinite(out_ivar)
    out_flux = np.where(bad, np.float32(1.0), out_flux).astype(np.float32)
    out_ivar = np.where(bad, np.float32(0.0), out_ivar).astype(np.float32)
    return Resampled(flux=out_flux, ivar=out_ivar, covered=covered)
