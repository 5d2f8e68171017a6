"""What the LAMOST and DESI spectrographs do to a spectrum: wavelength grids, resolution, Doppler
shifts, noise, sky-line structure and flux-calibration distortions.

Pure, vectorised numpy over a batch of spectra (rows); no file I/O. The writers in
:mod:`catalog_tool.sim.desi` and :mod:`catalog_tool.sim.lamost` chain these steps:

1. render the stellar model once per chunk on a shared, fine **rest-frame log-lambda grid**
   (:class:`FineGrid`), which makes per-star radial velocities a per-row shift of the index;
2. broaden with the extra Gaussian LSF the instrument needs on top of the model's own resolution
   (:func:`lsf_matrix`, a sparse banded matrix applied to all rows at once);
3. shift and resample onto the instrument pixels (:func:`resample_shifted`, linear interpolation
   by gathered indices, one call for the whole batch);
4. multiply by a smooth flux-calibration distortion, add sky-dominated noise, compute IVAR.

Resolution: the spectral model has the MILES resolution, FWHM 2.5 A at all wavelengths. A
simulator can only *degrade*: where the instrument's FWHM (lambda / R) is larger than 2.5 A we convolve
with a Gaussian of FWHM sqrt((lambda/R)^2 - 2.5^2); where it is smaller (all of DESI, and LAMOST
below about 4500 A) the spectrum keeps 2.5 A. :func:`effective_fwhm` is the resulting resolution,
and it is what the DESI ``RESOLUTION`` HDU describes (see docs/simulation.md, "Instruments").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from catalog_tool.preprocess.grid import loglinear_wave

__all__ = [
    "C_KMS", "MODEL_FWHM", "LAMOST_LOGLAM0", "LAMOST_DLOGLAM", "LAMOST_NPIX", "LAMOST_R",
    "DESI_ARMS", "DESI_DWAVE", "DESI_R", "lamost_wave", "desi_wave", "desi_resolving_power",
    "effective_fwhm", "broadening_fwhm", "doppler_factor", "FineGrid", "lsf_matrix",
    "apply_lsf", "resample_shifted", "calibration_distortion", "sky_spectrum", "add_noise",
    "resolution_diagonals", "ab_flux_density",
]

#: Speed of light, km/s.
C_KMS = 299792.458
#: FWHM (Angstrom) of the spectral model (MILES library resolution).
MODEL_FWHM = 2.5
_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))

#: LAMOST LRS: log10-linear vacuum grid 10**(3.5682 + 1e-4 i), i < 3909 (3700-9100 A), R ~ 1800.
LAMOST_LOGLAM0 = 3.5682
LAMOST_DLOGLAM = 1.0e-4
LAMOST_NPIX = 3909
LAMOST_R = 1800.0

#: DESI arms: (first wavelength, number of pixels) of the 0.8 A coadd grids.
DESI_ARMS = {"B": (3600.0, 2751), "R": (5760.0, 2326), "Z": (7520.0, 2881)}
DESI_DWAVE = 0.8
#: DESI resolving power at the start and end of each arm (linear in between); the spectrograph
#: design values (about 2000-3200 in B, 3200-4100 in R, 4100-5100 in Z).
DESI_R = {"B": (2000.0, 3200.0), "R": (3200.0, 4100.0), "Z": (4100.0, 5100.0)}


def lamost_wave(npix: int = LAMOST_NPIX) -> np.ndarray:
    """LAMOST LRS vacuum wavelengths, ``10**(3.5682 + 1e-4 i)`` for ``i < npix`` (Angstrom)."""
    return loglinear_wave(loglam0=LAMOST_LOGLAM0, dloglam=LAMOST_DLOGLAM, npix=npix)


def desi_wave(arm: str) -> np.ndarray:
    """The 0.8 A DESI coadd grid of ``arm`` (``B``, ``R`` or ``Z``), vacuum Angstrom."""
    start, n = DESI_ARMS[arm]
    # np.arange with a float step, as desispec builds the grid: bit-identical to the real files.
    return np.arange(start, start + DESI_DWAVE * n - DESI_DWAVE / 2, DESI_DWAVE)


def desi_resolving_power(*, wave: np.ndarray, arm: str) -> np.ndarray:
    """Resolving power lambda / FWHM of DESI ``arm`` at ``wave``, linear across the arm."""
    r0, r1 = DESI_R[arm]
    start, n = DESI_ARMS[arm]
    end = start + DESI_DWAVE * (n - 1)
    return np.interp(wave, [start, end], [r0, r1])


def broadening_fwhm(*, wave: np.ndarray, resolving_power) -> np.ndarray:
    """FWHM (A) of the Gaussian that takes the model (FWHM 2.5 A) to FWHM ``wave / R``.

    Zero where the instrument is sharper than the model: we cannot sharpen.
    """
    inst = np.asarray(wave, dtype=np.float64) / resolving_power
    return np.sqrt(np.clip(inst ** 2 - MODEL_FWHM ** 2, 0.0, None))


def effective_fwhm(*, wave: np.ndarray, resolving_power) -> np.ndarray:
    """FWHM (A) of the simulated spectra: ``max(wave / R, 2.5 A)``."""
    return np.maximum(np.asarray(wave, dtype=np.float64) / resolving_power, MODEL_FWHM)


def doppler_factor(*, rv: np.ndarray) -> np.ndarray:
    """Relativistic Doppler factor ``lambda_obs / lambda_rest = 1 + z`` for radial velocity ``rv`` (km/s)."""
    beta = np.asarray(rv, dtype=np.float64) / C_KMS
    return np.sqrt((1.0 + beta) / (1.0 - beta))


def ab_flux_density(*, mag, wave) -> np.ndarray:
    """f_lambda (1e-17 erg/s/cm2/A) of a flat-f_nu source of AB magnitude ``mag`` at ``wave`` (A)."""
    fnu = 10.0 ** (-0.4 * (np.asarray(mag, dtype=np.float64) + 48.6))
    return fnu * 2.99792458e18 / np.asarray(wave, dtype=np.float64) ** 2 / 1e-17


@dataclass(frozen=True)
class FineGrid:
    """A uniform log10-lambda grid on which models are rendered before the instrument sees them.

    Parameters
    ----------
    loglam0 : float
        log10 of the first wavelength (A).
    dloglam : float
        Step in log10 lambda; 3e-5 (about 21 km/s, 0.25-0.7 A) samples the 2.5 A model well.
    npix : int
        Number of pixels.
    """

    loglam0: float
    dloglam: float
    npix: int

    @classmethod
    def covering(cls, wmin: float, wmax: float, *, vmax: float = 1500.0,
                 dloglam: float = 3.0e-5) -> "FineGrid":
        """The grid covering rest wavelengths ``[wmin, wmax]`` for any |RV| <= ``vmax`` km/s."""
        pad = np.log10(doppler_factor(rv=vmax)) + 2 * dloglam
        lo = np.log10(wmin) - pad
        n = int(np.ceil((np.log10(wmax) + pad - lo) / dloglam)) + 1
        return cls(float(lo), float(dloglam), n)

    @property
    def wave(self) -> np.ndarray:
        """Rest-frame vacuum wavelengths (A) of the grid's pixels."""
        return loglinear_wave(loglam0=self.loglam0, dloglam=self.dloglam, npix=self.npix)


def lsf_matrix(*, grid: FineGrid, fwhm: np.ndarray) -> scipy.sparse.csr_matrix | None:
    """Sparse Gaussian-convolution matrix on ``grid`` with a wavelength-dependent FWHM.

    Parameters
    ----------
    grid : FineGrid
    fwhm : ndarray, shape (grid.npix,)
        Broadening FWHM in Angstrom at each fine pixel (0 = no broadening).

    Returns
    -------
    scipy.sparse.csr_matrix of shape (npix, npix), or None when no pixel needs broadening.
    Row i holds the kernel centred on pixel i (kernel width taken at the output pixel), normalised
    to unit sum, so ``flux @ M.T`` is the broadened flux. Banded: 4 sigma each side.
    """
    fwhm = np.asarray(fwhm, dtype=np.float64)
    if fwhm.shape != (grid.npix,):
        raise ValueError(f"fwhm has shape {fwhm.shape}, grid has {grid.npix} pixels")
    # sigma in fine pixels: d(ln lambda) = ln(10) * dloglam per pixel.
    sig_pix = fwhm / _FWHM_PER_SIGMA / (grid.wave * np.log(10.0) * grid.dloglam)
    if not np.any(sig_pix > 0.05):
        return None
    half = int(np.ceil(4.0 * sig_pix.max()))
    off = np.arange(-half, half + 1)
    sig = np.maximum(sig_pix, 1e-3)[:, None]  # near-zero sigma -> delta kernel
    w = np.exp(-0.5 * (off[None, :] / sig) ** 2)
    cols = np.arange(grid.npix)[:, None] + off[None, :]
    inside = (cols >= 0) & (cols < grid.npix)
    w = np.where(inside, w, 0.0)
    w /= w.sum(axis=1, keepdims=True)  # edges renormalised: flux level kept at the grid ends
    rows = np.broadcast_to(np.arange(grid.npix)[:, None], cols.shape)
    keep = inside & (w > 1e-12)
    return scipy.sparse.csr_matrix((w[keep], (rows[keep], cols[keep])), shape=(grid.npix, grid.npix))


def apply_lsf(*, flux: np.ndarray, matrix) -> np.ndarray:
    """Convolve every row of ``flux`` (N, npix) with the LSF ``matrix`` (None = identity)."""
    if matrix is None:
        return flux
    return np.asarray((matrix @ flux.T).T)


def resample_shifted(*, flux: np.ndarray, grid: FineGrid, wave: np.ndarray,
                     doppler: np.ndarray) -> np.ndarray:
    """Doppler-shift rest-frame fine-grid spectra and sample them at observed wavelengths.

    Parameters
    ----------
    flux : ndarray, shape (N, grid.npix)
        Rest-frame spectra on ``grid``.
    grid : FineGrid
    wave : ndarray, shape (npix,) or (N, npix)
        Observed (vacuum) wavelengths to sample.
    doppler : ndarray, shape (N,)
        ``1 + z`` per row (:func:`doppler_factor`).

    Returns
    -------
    ndarray, float64, shape (N, npix)
        Linear interpolation in log-lambda at ``wave / doppler`` (all rows in one gather).

    Raises
    ------
    ValueError
        When a shifted wavelength falls outside ``grid``.
    """
    n = flux.shape[0]
    # log10 of a shared (1-D) grid once, not once per row (same values either way).
    loglam = np.log10(np.asarray(wave, dtype=np.float64))
    x = (loglam - np.log10(np.asarray(doppler, dtype=np.float64))[:, None] - grid.loglam0) / grid.dloglam
    x = np.broadcast_to(x, (n, x.shape[-1]))
    if x.min() < 0 or x.max() > grid.npix - 1:
        raise ValueError("shifted wavelengths fall outside the rendering grid (RV too large?)")
    i0 = np.minimum(np.floor(x).astype(np.int64), grid.npix - 2)
    t = x - i0
    f0 = np.take_along_axis(flux, i0, axis=1)
    f1 = np.take_along_axis(flux, i0 + 1, axis=1)
    return f0 + t * (f1 - f0)


def calibration_distortion(*, wave: np.ndarray, amplitude: np.ndarray, rng: np.random.Generator,
                           order: int = 3, wrange: tuple[float, float] | None = None) -> np.ndarray:
    """Smooth multiplicative flux-calibration errors, one random curve per row.

    ``1 + sum_k c_k P_k(x)`` with Legendre polynomials over ``wrange`` (x in [-1, 1]) and
    coefficients c_k ~ N(0, amplitude / sqrt(order)), so ``amplitude`` is the typical rms
    fractional error. Floored at 0.2 so flux never changes sign.

    Parameters
    ----------
    wave : ndarray, shape (npix,)
    amplitude : ndarray, shape (N,)
    rng : numpy Generator
    order : int
        Highest Legendre order (3: slopes and gentle bends over the whole range).
    wrange : (float, float), optional
        Wavelength span mapped to [-1, 1]; defaults to the span of ``wave``. Pass the full
        instrument range when distorting one arm at a time so arms share one curve.

    Returns
    -------
    ndarray, shape (N, npix)
    """
    amplitude = np.asarray(amplitude, dtype=np.float64)
    lo, hi = wrange if wrange is not None else (wave.min(), wave.max())
    x = np.clip(2.0 * (wave - lo) / (hi - lo) - 1.0, -1.0, 1.0)
    coef = rng.standard_normal((amplitude.size, order)) * (amplitude / np.sqrt(order))[:, None]
    basis = np.polynomial.legendre.legvander(x, order)[:, 1:]  # (npix, order); P_0 is the "1"
    return np.maximum(1.0 + coef @ basis.T, 0.2)


# Strong night-sky emission lines (vacuum A) and relative strengths: [OI] 5577, Na D, [OI] 6300/6364.
_SKY_ATOMIC = np.array([[5578.9, 6.0], [5891.6, 1.5], [5897.6, 1.5], [6302.0, 3.0], [6365.5, 1.0]])
# OH Meinel band regions (vacuum A) and mean line strengths; lines inside them are a fixed
# pseudo-random forest (not a measured line list) with the right density and red-ward growth.
_OH_BANDS = [(6830, 6980, 0.8), (7240, 7420, 1.2), (7740, 8060, 1.8), (8280, 8560, 2.5),
             (8760, 9060, 2.5), (9300, 9520, 1.5), (9690, 9850, 2.0)]


def _sky_lines() -> np.ndarray:
    g = np.random.default_rng(5577)  # fixed: the sky is the same in every run and file
    lines = [_SKY_ATOMIC]
    for lo, hi, s in _OH_BANDS:
        k = int((hi - lo) / 6)
        lines.append(np.column_stack([np.sort(g.uniform(lo, hi, k)), s * g.exponential(1.0, k)]))
    return np.concatenate(lines)


def sky_spectrum(*, wave: np.ndarray, fwhm: np.ndarray) -> np.ndarray:
    """Night-sky surface brightness seen through one fibre, in 1e-17 erg/s/cm2/A.

    A smooth continuum rising to the red plus atomic and OH emission lines drawn with Gaussian
    profiles of the local ``fwhm`` (A). Deterministic; what matters downstream is that the sky
    noise puts sharp line structure into IVAR, as in real sky-subtracted spectra.

    Parameters
    ----------
    wave, fwhm : ndarray, shape (npix,)

    Returns
    -------
    ndarray, shape (npix,)
    """
    wave = np.asarray(wave, dtype=np.float64)
    cont = 0.6 + 0.5 * (wave - 3600.0) / 6200.0
    lines = _sky_lines()
    sig = np.interp(lines[:, 0], wave, np.broadcast_to(fwhm, wave.shape)) / _FWHM_PER_SIGMA
    out = cont.copy()
    # Lines are sparse: loop over the few hundred lines, each touching a few pixels only.
    for (lam, amp), s in zip(lines, sig):
        sel = np.abs(wave - lam) < 5 * s + 2
        if sel.any():
            out[sel] += 40.0 * amp * np.exp(-0.5 * ((wave[sel] - lam) / s) ** 2)
    return out


def add_noise(*, flux: np.ndarray, sky: np.ndarray, snr: np.ndarray, ref: np.ndarray,
              rng: np.random.Generator, read: float = 0.3,
              throughput: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian noise with variance from object photons, sky photons and read noise.

    ``var = k * (max(flux, 0) + sky + read)`` with k per row chosen so that the median S/N
    (``flux / sqrt(var)``) over the reference pixels equals ``snr``. The inverse variance comes from
    the noiseless model, as pipelines derive it from their models; sky lines therefore appear as
    sharp dips in IVAR.

    Parameters
    ----------
    flux : ndarray, shape (N, npix)
        Noiseless flux (> 0 for real sources).
    sky : ndarray, shape (npix,) or (N, npix)
        Sky level in the same units.
    snr : ndarray, shape (N,)
        Target median S/N per pixel (> 0).
    ref : ndarray of bool, shape (npix,)
        Pixels over which the median S/N is taken.
    rng : numpy Generator
    read : float
        Read-noise term, in flux units.
    throughput : ndarray, shape (npix,), optional
        Relative system throughput (1 = nominal); the variance grows as 1 / throughput, which is
        how the noisy arm ends and dichroic overlaps of real spectra arise.

    Returns
    -------
    noisy_flux, ivar : ndarray, float32, shape (N, npix)
    """
    shape = np.clip(flux, 0.0, None) + sky + read
    if throughput is not None:
        shape = shape / throughput
    s_unit = np.median(flux[:, ref] / np.sqrt(shape[:, ref]), axis=1)
    k = (np.maximum(s_unit, 1e-12) / np.asarray(snr, dtype=np.float64)) ** 2
    var = k[:, None] * shape
    noisy = flux + np.sqrt(var) * rng.standard_normal(flux.shape)
    return noisy.astype(np.float32), (1.0 / var).astype(np.float32)


def resolution_diagonals(*, fwhm_pix: np.ndarray, ndiag: int = 11) -> np.ndarray:
    """DESI-convention resolution-matrix diagonals for a Gaussian LSF.

    Parameters
    ----------
    fwhm_pix : ndarray, shape (..., npix)
        LSF FWHM in pixels at each pixel (any leading batch shape).
    ndiag : int
        Number of diagonals (11 in DESI coadds).

    Returns
    -------
    ndarray, float32, shape (..., ndiag, npix)
        ``data[k, j]`` is the weight at offset ``ndiag // 2 - k`` of the kernel of input pixel j
        (scipy ``dia_matrix`` storage as desispec's ``Resolution`` uses it); columns sum to 1.
    """
    off = (ndiag // 2 - np.arange(ndiag)).astype(np.float64)
    sig = np.asarray(fwhm_pix, dtype=np.float64)[..., None, :] / _FWHM_PER_SIGMA
    w = np.exp(-0.5 * (off[:, None] / sig) ** 2)
    w /= w.sum(axis=-2, keepdims=True)
    return w.astype(np.float32)
