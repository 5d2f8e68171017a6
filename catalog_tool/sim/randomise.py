"""Domain randomisation: what makes real survey spectra differ from a clean rendering.

A network trained on spectra rendered one way learns that way's quirks. Real DESI and LAMOST
spectra vary from fibre to fibre and night to night in ways the base simulators fix: the
line-spread function is a little wider or narrower and changes along the spectrum, the flux
calibration tilts and wiggles, sky lines are over- or under-subtracted, dust reddens the star,
runs of pixels are masked, and the S/N spans 5 to 200. :class:`DomainRandomisation` draws each of
these per spectrum; the simulators (:func:`catalog_tool.sim.desi.simulate_desi`,
:func:`catalog_tool.sim.lamost.simulate_lamost`, ``randomise=``) apply them and write the drawn
values to the truth table, so every ingredient can be switched off (``off``) and measured.

Everything here is pure numpy over a batch of spectra (rows).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from catalog_tool.errors import ConfigError
from catalog_tool.sim import instrument as ins

__all__ = ["DomainRandomisation", "TRUTH_COLUMNS", "INGREDIENTS", "ccm89_extinction", "broaden_rows",
           "masked_runs", "draw_parameters"]

#: Per-spectrum values a randomised simulation records in its truth table.
TRUTH_COLUMNS = ("LSF_EXTRA", "LSF_SLOPE", "EBV", "CAL_SCALE", "WIGGLE", "SKY_RESID", "MASK_RUNS")

#: Ingredients that can be switched off one by one (see :meth:`DomainRandomisation.without`).
INGREDIENTS = ("lsf", "calibration", "sky", "extinction", "masks")


@dataclass(frozen=True)
class DomainRandomisation:
    """Ranges of the per-spectrum perturbations (the defaults cover what real data do).

    Parameters
    ----------
    lsf_extra_fwhm : float
        Extra Gaussian broadening on top of the instrument's, FWHM drawn uniform in
        ``[0, lsf_extra_fwhm]`` Angstrom at 5000 A (0: off).
    lsf_slope : float
        The extra FWHM changes linearly along the spectrum by a factor ``1 + s x`` with ``s`` uniform
        in ``[-lsf_slope, lsf_slope]`` and ``x`` in [-1, 1] across the instrument's range.
    calibration_scale : (float, float)
        Factor on the instrument's smooth flux-calibration error (DESI 3%, LAMOST 8% rms),
        uniform in this range; ``(1, 1)`` is the base simulator.
    wiggle : float
        rms amplitude (fraction) of small-scale calibration wiggles (Legendre orders 4-15),
        uniform in ``[0, wiggle]``.
    sky_residual : float
        Sky-subtraction error: ``eps * sky`` added with ``eps ~ N(0, sky_residual)`` per spectrum.
    ebv_max : float
        Reddening E(B-V) uniform in ``[0, ebv_max]`` (Cardelli et al. 1989, R_V = 3.1).
    mask_runs : float
        Mean number of masked runs (5-60 pixels: bad columns, dead CCD regions) per spectrum.
    """

    lsf_extra_fwhm: float = 1.5
    lsf_slope: float = 0.5
    calibration_scale: tuple = (0.3, 2.5)
    wiggle: float = 0.02
    sky_residual: float = 0.03
    ebv_max: float = 0.4
    mask_runs: float = 0.6

    def __post_init__(self):
        lo, hi = self.calibration_scale
        problems = []
        for name in ("lsf_extra_fwhm", "lsf_slope", "wiggle", "sky_residual", "ebv_max", "mask_runs"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                problems.append(f"{name} must be finite and >= 0, not {v}")
        if not (0 <= lo <= hi and np.isfinite(hi)):
            problems.append(f"calibration_scale must be 0 <= lo <= hi, not {self.calibration_scale}")
        if self.lsf_slope >= 1:
            problems.append(f"lsf_slope must be < 1 (a FWHM never turns negative), not {self.lsf_slope}")
        if problems:
            raise ConfigError("invalid domain randomisation: " + "; ".join(problems))
        object.__setattr__(self, "calibration_scale", (float(lo), float(hi)))

    @classmethod
    def off(cls) -> "DomainRandomisation":
        """Every ingredient off: the base simulator's spectra (other random draws aside)."""
        return cls(lsf_extra_fwhm=0.0, lsf_slope=0.0, calibration_scale=(1.0, 1.0), wiggle=0.0,
                   sky_residual=0.0, ebv_max=0.0, mask_runs=0.0)

    def without(self, *ingredients: str) -> "DomainRandomisation":
        """A copy with the named :data:`INGREDIENTS` switched off (for ablations)."""
        unknown = sorted(set(ingredients) - set(INGREDIENTS))
        if unknown:
            raise ConfigError(f"unknown randomisation ingredients {unknown}; known: {', '.join(INGREDIENTS)}")
        off = DomainRandomisation.off()
        fields = {"lsf": ("lsf_extra_fwhm", "lsf_slope"), "calibration": ("calibration_scale", "wiggle"),
                  "sky": ("sky_residual",), "extinction": ("ebv_max",), "masks": ("mask_runs",)}
        return dataclasses.replace(self, **{f: getattr(off, f) for i in ingredients for f in fields[i]})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def draw_parameters(n: int, *, settings: DomainRandomisation, rng: np.random.Generator) -> dict:
    """Per-spectrum values (:data:`TRUTH_COLUMNS`, each shape (n,)) drawn from ``settings``.

    The draws are made in a fixed order whatever the settings, so switching one ingredient off
    leaves every other spectrum's values (and the rest of the simulation) unchanged.
    """
    u = rng.random((n, 6))
    lo, hi = settings.calibration_scale
    return {
        "LSF_EXTRA": settings.lsf_extra_fwhm * u[:, 0],
        "LSF_SLOPE": settings.lsf_slope * (2.0 * u[:, 1] - 1.0),
        "EBV": settings.ebv_max * u[:, 2],
        "CAL_SCALE": lo + (hi - lo) * u[:, 3],
        "WIGGLE": settings.wiggle * u[:, 4],
        "SKY_RESID": settings.sky_residual * rng.standard_normal(n),
        "MASK_RUNS": rng.poisson(settings.mask_runs, n).astype(np.int64),
    }


def ccm89_extinction(*, wave: np.ndarray, ebv: np.ndarray, r_v: float = 3.1) -> np.ndarray:
    """Transmission ``10**(-0.4 A_lambda)`` of dust with colour excess ``ebv`` (Cardelli, Clayton &
    Mathis 1989, optical/near-IR, 3030-9100 A; held at the end values outside).

    Parameters
    ----------
    wave : ndarray, shape (npix,)
        Wavelengths (A).
    ebv : ndarray, shape (N,)
        E(B-V) per spectrum (mag).

    Returns
    -------
    ndarray, shape (N, npix)
    """
    x = 1.0e4 / np.clip(np.asarray(wave, dtype=np.float64), 3030.0, 9100.0)  # 1/micron
    y = x - 1.82
    a = (1 + 0.17699 * y - 0.50447 * y**2 - 0.02427 * y**3 + 0.72085 * y**4 + 0.01979 * y**5
         - 0.77530 * y**6 + 0.32999 * y**7)
    b = (1.41338 * y + 2.28305 * y**2 + 1.07233 * y**3 - 5.38434 * y**4 - 0.62251 * y**5
         + 5.30260 * y**6 - 2.09002 * y**7)
    optical = (x >= 1.1)
    ir = ~optical
    a = np.where(ir, 0.574 * x**1.61, a)
    b = np.where(ir, -0.527 * x**1.61, b)
    a_lambda_per_ebv = r_v * a + b  # A_lambda / E(B-V) = R_V (a + b / R_V)
    return 10.0 ** (-0.4 * np.asarray(ebv, dtype=np.float64)[:, None] * a_lambda_per_ebv[None, :])


#: Quantisation of the per-spectrum LSF draws: each row uses the matrix of the nearest level.
_LSF_FWHM_STEP = 0.25
_LSF_SLOPE_STEP = 0.25


def broaden_rows(*, flux: np.ndarray, grid: ins.FineGrid, fwhm: np.ndarray, slope: np.ndarray,
                 wrange: tuple[float, float], cache: dict | None = None) -> np.ndarray:
    """Convolve each row with its own extra Gaussian LSF on the rendering grid.

    Row i gets FWHM ``fwhm[i] * (1 + slope[i] x)`` (Angstrom), ``x`` running from -1 to 1 across
    ``wrange``. The values are rounded to steps of 0.25 A and 0.25 so that a handful of sparse
    matrices (kept in ``cache``) serve a whole batch.

    Parameters
    ----------
    flux : ndarray, shape (N, grid.npix)
    grid : FineGrid
    fwhm, slope : ndarray, shape (N,)
    wrange : (float, float)
    cache : dict, optional
        Matrices by quantised (fwhm, slope), reused across calls.

    Returns
    -------
    ndarray, shape (N, grid.npix)
    """
    cache = {} if cache is None else cache
    qf = np.round(np.asarray(fwhm, dtype=np.float64) / _LSF_FWHM_STEP).astype(np.int64)
    qs = np.round(np.asarray(slope, dtype=np.float64) / _LSF_SLOPE_STEP).astype(np.int64)
    out = np.array(flux, dtype=np.float64, copy=True)
    lo, hi = wrange
    x = np.clip(2.0 * (grid.wave - lo) / (hi - lo) - 1.0, -1.0, 1.0)
    for key in sorted(set(zip(qf.tolist(), qs.tolist()))):
        if key[0] == 0:
            continue
        rows = np.flatnonzero((qf == key[0]) & (qs == key[1]))
        if key not in cache:
            cache[key] = ins.lsf_matrix(grid=grid, fwhm=key[0] * _LSF_FWHM_STEP * (1.0 + key[1] * _LSF_SLOPE_STEP * x))
        out[rows] = ins.apply_lsf(flux=out[rows], matrix=cache[key])
    return out


def masked_runs(*, runs: np.ndarray, npix: int, rng: np.random.Generator, min_len: int = 5,
                max_len: int = 60) -> np.ndarray:
    """Boolean (N, npix): ``runs[i]`` masked runs of ``min_len``-``max_len`` pixels in row i."""
    runs = np.asarray(runs, dtype=np.int64)
    rows = np.repeat(np.arange(runs.size), runs)
    start = rng.integers(0, npix, rows.size)
    stop = np.minimum(start + rng.integers(min_len, max_len + 1, rows.size), npix)
    d = np.zeros((runs.size, npix + 1), np.int32)
    np.add.at(d, (rows, start), 1)
    np.add.at(d, (rows, stop), -1)
    return np.cumsum(d, axis=1)[:, :npix] > 0


def calibration_wiggles(*, wave: np.ndarray, amplitude: np.ndarray, rng: np.random.Generator,
                        lo_order: int = 4, hi_order: int = 15) -> np.ndarray:
    """Multiplicative wiggles ``1 + sum_k c_k P_k(x)``, ``k`` in ``lo_order..hi_order``, rms ``amplitude``."""
    amplitude = np.asarray(amplitude, dtype=np.float64)
    x = np.clip(2.0 * (wave - wave.min()) / (wave.max() - wave.min()) - 1.0, -1.0, 1.0)
    k = hi_order - lo_order + 1
    basis = np.polynomial.legendre.legvander(x, hi_order)[:, lo_order:]
    # Legendre P_k has rms 1/sqrt(2k+1) over [-1, 1]: weight so each order contributes equally.
    norm = np.sqrt(2.0 * np.arange(lo_order, hi_order + 1) + 1.0)
    coef = rng.standard_normal((amplitude.size, k)) * norm[None, :] * (amplitude / np.sqrt(k))[:, None]
    return np.maximum(1.0 + coef @ basis.T, 0.2)
