"""Data-driven stellar spectral model fitted to the MILES library, used to render synthetic stars.

The model (fitted by ``scripts/fit_miles_model.py``, coefficients in
``catalog_tool/data/miles_model.npz``) has two parts, both cubic polynomials in the scaled labels
(Teff, logg, [Fe/H]) in the manner of The Cannon (Ness et al. 2015):

* the continuum-normalised log-flux on the MILES pixel grid (vacuum, 3541-7412 A, FWHM 2.5 A);
* the log pseudo-continuum as a degree-8 Legendre series in wavelength (normalised to 1 at
  5500 A), which carries the real continuum slope of MILES stars as a function of the labels.

Three documented approximations complete it (see docs/simulation.md, "Stellar spectral model"):

* [alpha/Fe]: MILES has no alpha labels. The base model at a given [Fe/H] carries the Galactic
  mean [alpha/Fe] of the MILES stars at that [Fe/H] (``alpha_galactic``). The difference
  ``alphafe - alpha_galactic(feh)`` scales the log-depth of the spectrum in narrow windows around
  Mg, Ca, Ti and Si lines by ``10**(ALPHA_GAMMA * delta * window)``.
* red extension beyond the MILES red end (7412 A vacuum): a Planck continuum at the colour
  temperature that matches the model's 6800-7412 A continuum slope, with Ca II triplet, Paschen,
  Fe I, Mg I, Na I and O I lines as pseudo-Voigt profiles whose strengths follow the labels
  (Paschen lines are tied to the model's own H-alpha equivalent width).
* blue end (below 3541 A vacuum): normalised flux held at its first-pixel value, log-continuum
  extrapolated linearly.

Labels outside :attr:`SpectralModel.domain` are clipped to it (no polynomial extrapolation).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from catalog_tool.errors import ConfigError
from catalog_tool.sim._wavelength import air_to_vacuum

__all__ = ["SpectralModel", "alpha_galactic", "DEFAULT_MODEL_PATH", "air_to_vacuum"]

DEFAULT_MODEL_PATH = pathlib.Path(__file__).resolve().parent.parent / "data" / "miles_model.npz"

#: Log-depth response of alpha-element lines per dex of [alpha/Fe] (partly saturated lines at
#: R ~ 2000 respond less than linearly to abundance: +0.3 dex deepens Mg b by ~30%, close to the
#: response of the Lick Mgb index of K stars to [Mg/Fe] in synthetic-spectrum studies).
ALPHA_GAMMA = 0.4
#: Wavelength where the continuum is 1 (vacuum A).
NORM_WAVE = 5500.0

# Alpha-element lines (air wavelengths, A) and the Gaussian half-width (A) of the window in which
# the log-depth is scaled. Wider windows for lines with strong wings (Ca II H&K, Ca I 4227, Mg b).
_ALPHA_LINES_AIR = [
    # Mg I / Mg II
    (3829.35, 1.5), (3832.30, 1.5), (3838.29, 1.5), (4167.27, 1.2), (4481.13, 1.2),
    (4571.10, 1.2), (4702.99, 1.5), (5167.32, 2.5), (5172.68, 2.5), (5183.60, 2.5),
    (5528.41, 1.8),
    # Ca II H&K, Ca I
    (3933.66, 6.0), (3968.47, 6.0), (4226.73, 3.0), (4435.0, 1.2), (4454.78, 1.2),
    (5588.76, 1.2), (5857.45, 1.2), (6102.72, 1.5), (6122.22, 1.5), (6162.17, 1.5),
    (6439.08, 1.2), (6493.78, 1.2),
    # Ti I / Ti II
    (4395.03, 1.2), (4443.80, 1.2), (4468.49, 1.2), (4501.27, 1.2), (4533.24, 1.2),
    (4534.78, 1.2), (4535.57, 1.2), (4563.76, 1.2), (4571.97, 1.2), (4981.73, 1.2),
    (4991.07, 1.2), (4999.50, 1.2), (5036.46, 1.2), (5064.65, 1.2), (5210.39, 1.2),
    # Si I / Si II
    (3905.52, 1.2), (5684.48, 1.2), (5690.43, 1.2), (5708.40, 1.2), (5772.15, 1.2),
    (5948.54, 1.2), (6155.13, 1.2), (6237.32, 1.2), (6347.11, 1.5), (6371.37, 1.5),
]

# Red-extension lines (air A). Strength functions are in _red_strengths.
_CAT_AIR = np.array([8498.02, 8542.09, 8662.14])
_CAT_SHARE = np.array([0.22, 0.43, 0.35])
_PASCHEN_AIR = {20: 8392.40, 19: 8413.32, 18: 8437.95, 17: 8467.25, 16: 8502.48, 15: 8545.38,
                14: 8598.39, 13: 8665.02, 12: 8750.47, 11: 8862.79, 10: 9014.91, 9: 9229.01,
                8: 9545.97}
_FE_RED_AIR = np.array([8327.05, 8387.77, 8468.41, 8514.07, 8611.80, 8674.75, 8688.62,
                        8824.22, 8838.43])
_MG_RED_AIR = np.array([8736.02, 8806.76])
_MG_RED_EW = np.array([0.15, 0.45])
_NA_RED_AIR = np.array([8183.26, 8194.82])
_OI_AIR = np.array([7771.94, 7774.17, 7775.39])

_HC_K = 1.438776877e8  # h c / k in A K


def alpha_galactic(feh: np.ndarray) -> np.ndarray:
    """Mean [alpha/Fe] of Galactic (and MILES) stars at a given [Fe/H].

    0 at [Fe/H] >= 0, rising linearly to +0.4 at [Fe/H] <= -1 (the plateau of halo and thick-disc
    stars; Milone et al. 2011 measured this trend in [Mg/Fe] for the MILES stars themselves). The
    base model implicitly carries this trend; :meth:`SpectralModel.render` applies only the
    difference from it.
    """
    return np.clip(-0.4 * np.asarray(feh, dtype=np.float64), 0.0, 0.4)


def _pseudo_voigt(dl: np.ndarray, fwhm_g: float, fwhm_l: np.ndarray) -> np.ndarray:
    """Unit-area pseudo-Voigt profile (Thompson, Cox & Hastings 1987) at offsets ``dl`` (A).

    ``fwhm_l`` broadcasts against ``dl`` (one Lorentzian width per star).
    """
    fg, fl = fwhm_g, fwhm_l
    f = (fg**5 + 2.69269 * fg**4 * fl + 2.42843 * fg**3 * fl**2 + 4.47163 * fg**2 * fl**3
         + 0.07842 * fg * fl**4 + fl**5) ** 0.2
    r = fl / f
    eta = 1.36603 * r - 0.47719 * r**2 + 0.11116 * r**3
    sig = f / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    gauss = np.exp(-0.5 * (dl / sig) ** 2) / (sig * np.sqrt(2.0 * np.pi))
    lor = (f / (2.0 * np.pi)) / (dl**2 + (0.5 * f) ** 2)
    return (1.0 - eta) * gauss + eta * lor


def _ln_planck(wave: np.ndarray, temp: np.ndarray) -> np.ndarray:
    """Natural log of B_lambda (up to a constant) at wavelengths ``wave`` (A), temperature (K)."""
    return -5.0 * np.log(wave) - np.log(np.expm1(_HC_K / (wave * temp)))


class SpectralModel:
    """Cubic-per-pixel MILES model of stellar spectra with alpha and red-end approximations.

    Use :meth:`load_default` (the bundled fit) or :meth:`load` (a file written by
    ``scripts/fit_miles_model.py``).
    """

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.wave_model = np.asarray(arrays["wave"], dtype=np.float64)
        self._exps = np.asarray(arrays["exponents"], dtype=np.int64)
        self._offset = np.asarray(arrays["label_offset"], dtype=np.float64)
        self._scale = np.asarray(arrays["label_scale"], dtype=np.float64)
        self._theta = np.asarray(arrays["theta_norm"], dtype=np.float32)
        self._theta_cont = np.asarray(arrays["theta_cont"], dtype=np.float64)
        self._crange = np.asarray(arrays["cont_wave_range"], dtype=np.float64)
        self.meta = json.loads(str(arrays["meta_json"]))
        self.examples = {k: np.asarray(arrays[k]) for k in
                         ("example_labels", "example_lnorm", "example_cont_coef") if k in arrays}
        tmin, tmax = self.meta["train_label_min"], self.meta["train_label_max"]
        # Trust limits: the Teff range of the fit, logg as sampled, [Fe/H] down to -2.5 (MILES has
        # ~40 stars below -1.5 in this Teff range but only a handful below -2.5).
        self.domain = {
            "TEFF": (float(tmin[0]), float(tmax[0])),
            "LOGG": (max(float(tmin[1]), 0.5), min(float(tmax[1]), 5.0)),
            "FEH": (-2.5, min(float(tmax[2]), 0.5)),
            "ALPHAFE": (-0.2, 0.6),
        }
        self._alpha_window = self._make_alpha_window(self.wave_model)
        # Pixels where the alpha boost can differ from 1: elsewhere |exponent| < 1e-9 (|delta| <= 1),
        # and 10**x rounds to exactly 1.0 in float32, so skipping them changes no bit.
        self._alpha_cols = np.flatnonzero(ALPHA_GAMMA * self._alpha_window >= 1e-9)
        self._basis_cache: tuple[np.ndarray, np.ndarray] | None = None
        self._red_edge = float(self.wave_model[-1])
        self._blue_edge = float(self.wave_model[0])
        self._ha = (self.wave_model > 6549.0) & (self.wave_model < 6579.0)  # H-alpha 6564.6 vac
        self._dl = np.gradient(self.wave_model)

    # ----------------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, path: str | pathlib.Path) -> "SpectralModel":
        """Load a model file (npz, no pickle)."""
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read spectral model ({exc})") from exc
        return cls(arrays)

    @classmethod
    def load_default(cls) -> "SpectralModel":
        """Load the bundled MILES fit (``catalog_tool/data/miles_model.npz``)."""
        return cls.load(DEFAULT_MODEL_PATH)

    # ------------------------------------------------------------------------------ components
    @staticmethod
    def _make_alpha_window(wave: np.ndarray) -> np.ndarray:
        centres = air_to_vacuum(np.array([c for c, _ in _ALPHA_LINES_AIR]))
        widths = np.array([w for _, w in _ALPHA_LINES_AIR])
        g = np.exp(-0.5 * ((wave[:, None] - centres[None, :]) / widths[None, :]) ** 2)
        # Overlapping windows combine like probabilities, so the weight never exceeds 1.
        return 1.0 - np.prod(1.0 - g, axis=1)

    def _clip(self, teff, logg, feh, alphafe):
        arrs = np.broadcast_arrays(*(np.atleast_1d(np.asarray(a, dtype=np.float64))
                                     for a in (teff, logg, feh, alphafe)))
        if arrs[0].ndim != 1:
            raise ConfigError("labels must be scalars or 1-D arrays of one length")
        if not all(np.all(np.isfinite(a)) for a in arrs):
            raise ConfigError("labels must be finite")
        names = ("TEFF", "LOGG", "FEH", "ALPHAFE")
        return [np.clip(a, *self.domain[n]) for a, n in zip(arrs, names)]

    def _design(self, teff, logg, feh):
        z = (np.stack([teff, logg, feh], axis=1) - self._offset) / self._scale
        return np.prod(z[:, None, :] ** self._exps[None, :, :], axis=2)

    def _lnorm_model_grid(self, teff, logg, feh, alphafe) -> np.ndarray:
        """Continuum-normalised log-flux on the model grid, alpha adjustment applied: (N, npix)."""
        y = self._design(teff, logg, feh).astype(np.float32) @ self._theta
        delta = (alphafe - alpha_galactic(feh)).astype(np.float32)
        cols = self._alpha_cols
        yc = y[:, cols]
        boost = 10.0 ** (ALPHA_GAMMA * delta[:, None] * self._alpha_window[None, cols].astype(np.float32))
        # Only absorption (negative log-flux) is scaled; pixels above the pseudo-continuum stay.
        y[:, cols] = yc + np.minimum(yc, 0.0) * (boost - 1.0)
        return y

    def _ln_continuum(self, teff, logg, feh, wave2d) -> np.ndarray:
        """Log-continuum (1 at 5500 A) at ``wave2d`` (N or 1, nwave): (N, nwave)."""
        coef = self._design(teff, logg, feh) @ self._theta_cont  # (N, ncoef)
        lo, hi = self._crange
        mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)

        def legval(w):
            return np.polynomial.legendre.legval((w - mid) / half, coef.T[:, :, None], tensor=False)

        inside = np.clip(wave2d, lo, hi)
        shared = wave2d.shape[0] == 1
        if shared:
            # One wavelength row for all stars (the simulators' fine grid): a matrix product with
            # the Legendre basis, computed once per grid, instead of a Clenshaw pass per star.
            lnc = coef @ self._legendre_basis(inside[0], coef.shape[1]).T
        else:
            lnc = legval(inside)
        # Blue of the MILES range: linear extrapolation with the slope over the first 50 A.
        w_b = np.array([[lo], [lo + 50.0]]).T  # (1, 2)
        lb = legval(w_b)
        slope_b = (lb[:, 1:2] - lb[:, 0:1]) / 50.0
        if shared:
            cb = np.flatnonzero(wave2d[0] < lo)
            lnc[:, cb] = lb[:, 0:1] + slope_b * (wave2d[:, cb] - lo)
        else:
            lnc = np.where(wave2d < lo, lb[:, 0:1] + slope_b * (wave2d - lo), lnc)
        if np.any(wave2d > hi):
            # Red of it: Planck at the colour temperature matching the 6800 A / red-end ratio.
            w_r = np.array([[6800.0, hi]])
            lr = legval(w_r)
            target = lr[:, 1] - lr[:, 0]
            tlo = np.full(coef.shape[0], np.log(1500.0))
            thi = np.full(coef.shape[0], np.log(60000.0))
            for _ in range(40):  # bisection in log T, vectorised over stars
                tm = 0.5 * (tlo + thi)
                ratio = _ln_planck(hi, np.exp(tm)) - _ln_planck(6800.0, np.exp(tm))
                # The red/blue ratio falls as T rises: too high a ratio means T is too low.
                too_cold = ratio > target
                tlo = np.where(too_cold, tm, tlo)
                thi = np.where(too_cold, thi, tm)
            tc = np.exp(0.5 * (tlo + thi))[:, None]
            if shared:
                cr = np.flatnonzero(wave2d[0] > hi)
                lnc[:, cr] = lr[:, 1:2] + _ln_planck(wave2d[:, cr], tc) - _ln_planck(hi, tc)
            else:
                red = lr[:, 1:2] + _ln_planck(wave2d, tc) - _ln_planck(hi, tc)
                lnc = np.where(wave2d > hi, red, lnc)
        return lnc

    def _legendre_basis(self, inside: np.ndarray, ncoef: int) -> np.ndarray:
        """Legendre polynomials 0..ncoef-1 at ``inside`` (in the continuum's x), cached for the last grid."""
        cached = self._basis_cache
        if cached is not None and np.array_equal(cached[0], inside) and cached[1].shape[1] == ncoef:
            return cached[1]
        lo, hi = self._crange
        mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
        basis = np.polynomial.legendre.legvander((inside - mid) / half, ncoef - 1)
        self._basis_cache = (inside.copy(), basis)
        return basis

    def _red_lines(self, teff, logg, feh, alphafe, ew_halpha, wave2d) -> np.ndarray:
        """Optical depth of the synthetic red-extension lines at ``wave2d``: (N, nwave)."""
        n = teff.shape[0]
        tau = np.zeros(np.broadcast_shapes((n, 1), wave2d.shape), dtype=np.float64)
        if not np.any(wave2d > self._red_edge - 5.0):
            return tau
        # Cool-star factor for metal lines: stronger in cooler atmospheres, weak in F stars.
        cool = np.clip(1.6 - (teff - 4500.0) / 2500.0, 0.2, 1.6)
        lines = []  # (vacuum centre, strength (N,), Lorentzian FWHM (N,))
        ca_h = np.clip(feh + alphafe, -3.0, 0.6)
        cat_ew = (8.0 * 10.0 ** (0.25 * ca_h) * np.clip(1.0 + 0.1 * (3.5 - logg), 0.8, 1.4)
                  * np.exp(-0.5 * ((teff - 4700.0) / 2200.0) ** 2))
        for c, share in zip(air_to_vacuum(_CAT_AIR), _CAT_SHARE):
            lines.append((c, share * cat_ew, 0.5 + 0.6 * logg))
        # Paschen: tied to the model's own H-alpha EW, with the n=3/n=2 Boltzmann factor.
        pa_base = ew_halpha * 1.8 * np.exp(-21900.0 / teff)
        for nup, lam in _PASCHEN_AIR.items():
            lines.append((air_to_vacuum(lam), pa_base * (12.0 / nup) ** 2, np.full(n, 1.5)))
        fe_ew = 0.25 * 10.0 ** (0.5 * feh) * cool
        for lam in air_to_vacuum(_FE_RED_AIR):
            lines.append((lam, fe_ew, np.full(n, 0.3)))
        for lam, ew0 in zip(air_to_vacuum(_MG_RED_AIR), _MG_RED_EW):
            lines.append((lam, ew0 * 10.0 ** (0.5 * (feh + alphafe)) * cool, np.full(n, 0.5)))
        na_ew = (0.5 * np.clip((5500.0 - teff) / 1500.0, 0.05, 1.2)
                 * np.clip((logg - 2.5) / 2.0, 0.1, 1.0) * 10.0 ** (0.4 * feh))
        for lam in air_to_vacuum(_NA_RED_AIR):
            lines.append((lam, na_ew, np.full(n, 1.0)))
        oi_ew = (0.08 * (1.0 + np.clip((teff - 5000.0) / 1500.0, 0.0, 2.0))
                 * (1.0 + 0.15 * np.clip(4.5 - logg, 0.0, 4.0)) * 10.0 ** (0.5 * (feh + alphafe)))
        for lam in air_to_vacuum(_OI_AIR):
            lines.append((lam, oi_ew, np.full(n, 0.3)))
        # A loop over ~35 lines (not over spectra): each step is vectorised over (N, nwave).
        for lam, ew, fl in lines:
            # Only the columns within 60 A of the line (in any row) are evaluated.
            cols = np.nonzero(np.any(np.abs(wave2d - lam) < 60.0, axis=0))[0]
            if cols.size == 0:
                continue
            w = wave2d[:, cols]
            prof = _pseudo_voigt(w - lam, 2.5, fl[:, None])
            tau[:, cols] += np.where(w > self._red_edge - 5.0, ew[:, None] * prof, 0.0)
        return tau

    # ----------------------------------------------------------------------------------- public
    def render(self, *, teff, logg, feh, alphafe, wave, normalised: bool = False,
               chunk: int = 512) -> np.ndarray:
        """Render spectra for N stars.

        Parameters
        ----------
        teff, logg, feh, alphafe : array_like, shape (N,) or scalar
            Labels (K, cgs dex, dex, dex); broadcast to a common length N. Values outside
            :attr:`domain` are clipped to it.
        wave : ndarray, shape (nwave,) or (N, nwave)
            Vacuum wavelengths (A), increasing along the last axis; per-star rows allow rendering
            in each star's rest frame. Valid range about 3500-10000 A.
        normalised : bool
            If True, return the continuum-normalised flux instead of flux with the continuum.
        chunk : int
            Stars rendered at a time (bounds the temporaries).

        Returns
        -------
        ndarray, shape (N, nwave), float32
            Flux in arbitrary units (the continuum is 1 at 5500 A), at MILES resolution
            (FWHM 2.5 A).
        """
        teff, logg, feh, alphafe = self._clip(teff, logg, feh, alphafe)
        wave = np.asarray(wave, dtype=np.float64)
        n = teff.shape[0]
        if wave.ndim == 1:
            wave = wave[None, :]
        if wave.ndim != 2 or wave.shape[0] not in (1, n):
            raise ConfigError(f"wave must have shape (nwave,) or ({n}, nwave); got {wave.shape}")
        if not np.all(np.isfinite(wave)) or np.any(wave <= 0):
            raise ConfigError("wave must be finite and positive")
        out = np.empty((n, wave.shape[1]), dtype=np.float32)
        for s in range(0, n, chunk):
            sl = slice(s, min(s + chunk, n))
            w = wave if wave.shape[0] == 1 else wave[sl]
            out[sl] = self._render_chunk(teff[sl], logg[sl], feh[sl], alphafe[sl], w, normalised)
        return out

    def _render_chunk(self, teff, logg, feh, alphafe, wave2d, normalised):
        y = self._lnorm_model_grid(teff, logg, feh, alphafe)
        ew_ha = np.sum((1.0 - np.exp(y[:, self._ha])) * self._dl[self._ha], axis=1)
        # Linear interpolation from the model grid, vectorised over stars and rows of wave.
        wm = self.wave_model
        idx = np.clip(np.searchsorted(wm, wave2d) - 1, 0, wm.size - 2)
        frac = np.clip((wave2d - wm[idx]) / (wm[idx + 1] - wm[idx]), 0.0, 1.0)
        n = y.shape[0]
        if wave2d.shape[0] == 1:  # shared grid: one column gather for all stars
            ly = np.take(y, idx[0], axis=1) * (1.0 - frac) + np.take(y, idx[0] + 1, axis=1) * frac
        else:
            idx_b = np.broadcast_to(idx, (n, wave2d.shape[1]))
            frac_b = np.broadcast_to(frac, (n, wave2d.shape[1]))
            ly = (np.take_along_axis(y, idx_b, axis=1) * (1.0 - frac_b)
                  + np.take_along_axis(y, idx_b + 1, axis=1) * frac_b)
        # Beyond the red end the MILES pattern fades over ~10 A into the synthetic lines.
        beyond = np.clip(wave2d - self._red_edge, 0.0, None)
        ly = ly * np.exp(-beyond / 10.0)
        ly = ly - self._red_lines(teff, logg, feh, alphafe, ew_ha, wave2d)
        if normalised:
            return np.exp(ly)
        return np.exp(ly + self._ln_continuum(teff, logg, feh, wave2d))

    def continuum(self, *, teff, logg, feh, wave) -> np.ndarray:
        """Model continuum (1 at 5500 A) at vacuum ``wave`` (nwave,) or (N, nwave): (N, nwave)."""
        teff, logg, feh, _ = self._clip(teff, logg, feh, 0.0)
        wave = np.atleast_2d(np.asarray(wave, dtype=np.float64))
        return np.exp(self._ln_continuum(teff, logg, feh, wave)).astype(np.float32)
