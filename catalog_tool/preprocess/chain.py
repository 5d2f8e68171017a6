"""The whole preprocessing chain for one batch: mask, arms, rest frame, LSF, continuum, grid.

:func:`preprocess_batch` is a pure function of a :class:`~catalog_tool.batch.SpectraBatch`, the
model's :class:`~catalog_tool.preprocess.grid.ModelGrid` and the
:class:`~catalog_tool.preprocess.settings.PreprocessSettings` stored with the model. It never raises
for bad spectra: they come out as rows with IVAR 0 and diagnostics saying why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from catalog_tool.batch import Arm, SpectraBatch
from catalog_tool.preprocess.arms import FWHM_SIGMA, columns_in_range, join_arms
from catalog_tool.preprocess.continuum import CONT_BAD_BITS, CONT_NO_DATA, gaspp_continuum
from catalog_tool.preprocess.grid import ModelGrid, resample_to_grid
from catalog_tool.preprocess.lsf import match_resolution
from catalog_tool.preprocess.masks import interpolate_bad
from catalog_tool.preprocess.rv import redshifts, rest_wave
from catalog_tool.preprocess.settings import PreprocessSettings
from catalog_tool.threads import single_thread_blas

__all__ = ["Preprocessed", "preprocess_batch", "needed_range", "needed_observed_range", "DIAGNOSTIC_COLUMNS"]

#: Native pixels per chunk of rows (the chunk's working arrays then stay in the CPU caches).
CHUNK_PIXELS = 250_000

#: Diagnostics per spectrum: name -> (dtype, description). The VAC carries them.
DIAGNOSTIC_COLUMNS = {
    "SNR_MEDIAN": (np.float32, "median S/N per native pixel over the good pixels in the model window"),
    "BAD_FRAC": (np.float32, "fraction of covered model-grid pixels that are masked (IVAR 0)"),
    "COVERAGE": (np.float32, "fraction of the model grid inside the spectrum's wavelength range"),
    "COVERED": (bool, "COVERAGE >= settings.min_coverage"),
    "CONT_STATUS": (np.int16, "continuum status bits (see preprocess.continuum CONT_*)"),
    "CONT_OK": (bool, "no bad continuum status bit set"),
    "HOT_STAR": (bool, "blue continuum peaked blueward of 4500 A: Balmer windows bridged"),
    "RV_APPLIED": (bool, "shifted to the rest frame with a known redshift"),
    "N_GOOD": (np.int32, "number of model-grid pixels with IVAR > 0"),
    "PREPROC_OK": (bool, "COVERED, CONT_OK, N_GOOD > 0 and (rest frame asked => RV_APPLIED)"),
}


@dataclass(frozen=True)
class Preprocessed:
    """Model inputs for N spectra.

    Attributes
    ----------
    flux : ndarray float32 (N, npix)
        Continuum-normalised flux on the model grid; 1.0 (never NaN) where ``ivar`` is 0.
    ivar : ndarray float32 (N, npix)
        Inverse variance of ``flux``; 0 on masked and uncovered pixels.
    diagnostics : dict of str to ndarray (N,)
        See :data:`DIAGNOSTIC_COLUMNS`.
    continuum : ndarray float32 (N, npix) or None
        The continuum on the grid (input flux units), when asked for.
    """

    flux: np.ndarray
    ivar: np.ndarray
    diagnostics: dict
    continuum: np.ndarray | None = None


def needed_range(*, grid: ModelGrid, settings: PreprocessSettings) -> tuple[float, float, bool, bool]:
    """Rest wavelength range the chain needs, and which continuum segments it fits.

    Returns
    -------
    lo, hi : float
        Rest-frame Angstrom (without margins).
    fit_blue, fit_red : bool
        Only the segments overlapping the grid are fitted unless ``settings.fit_all_segments``.
    """
    g0, g1 = grid.range
    b0, b1 = settings.blue_segment
    fit_blue = settings.fit_all_segments or (g0 <= b1 and g1 >= b0)
    fit_red = settings.fit_all_segments or g1 >= settings.red_start
    lo, hi = g0, g1
    if fit_blue:
        lo, hi = min(lo, b0), max(hi, b1)
    if fit_red:
        hi = np.inf
    return lo, hi, fit_blue, fit_red


#: Largest |z| of a star the observed range allows for when shifting to the rest frame (3000 km/s).
MAX_ABS_Z = 0.01


def needed_observed_range(*, grid: ModelGrid, settings: PreprocessSettings,
                          max_abs_z: float = MAX_ABS_Z) -> tuple[float, float]:
    """Observed wavelength range (A) the chain reads of any star: what a reader must provide.

    :func:`needed_range` plus the margins :func:`preprocess_batch` keeps for its filters and,
    with ``settings.rest_frame``, room for stars up to ``|z| = max_abs_z``: for those the chain
    gives the same result from these pixels as from the whole spectrum. Spectra shifted further
    (galaxies, which are not estimated) may lack pixels and come out flagged, not wrong. For the
    paper's grid and settings this is 3670-5730 A (the DESI B arm); with ``rest_frame`` it
    reaches into the R arm (3633-5787 A).
    """
    lo, hi, _, _ = needed_range(grid=grid, settings=settings)
    zpad = max_abs_z if settings.rest_frame else 0.0
    m = _margin(settings, hi)
    return lo * (1 - zpad) - m, hi * (1 + zpad) + m


def _margin(settings: PreprocessSettings, hi: float) -> float:
    """Angstrom kept beyond the needed range, so filters and kernels see real data at its edges."""
    m = 30.0
    if settings.lsf_match_R:
        m += 5.0 * min(hi, 11000.0) / (FWHM_SIGMA * settings.lsf_match_R)
    return m


def _median_snr(flux, ivar, bad, inwin):
    """Median of flux * sqrt(ivar) over good pixels inside the window, 0 when there are none.

    Vectorised with one fixed-rank partition per row: unused pixels are set to -inf and +inf in
    equal numbers, which leaves the median of the rest unchanged. Rows with an odd number of
    unused pixels get one more +inf column (and are partitioned in a second call).
    """
    n, m = flux.shape
    use = inwin & ~bad
    med = np.zeros(n)
    if m == 0:
        return med
    cols = np.flatnonzero(use.any(axis=0))
    if cols.size == 0:
        return med
    c = slice(int(cols[0]), int(cols[-1]) + 1)
    use = use[:, c]
    with np.errstate(invalid="ignore", over="ignore"):  # absurd flux: inf, a NaN-free median all the same
        v = flux[:, c] * np.sqrt(ivar[:, c], dtype=np.float32)
    nbad = (~use).sum(axis=1)
    if nbad.any():
        # alternate -inf / +inf over the unused pixels of each row: rank of each among the unused
        rank = np.cumsum(~use, axis=1, dtype=np.int32)
        v = np.where(use, v, np.where(rank % 2 == 0, -np.inf, np.inf)).astype(np.float32)
    for odd in (False, True):
        rows = np.flatnonzero((nbad % 2 == 1) == odd)
        if rows.size == 0:
            continue
        vv = v[rows]
        if odd:
            vv = np.concatenate([vv, np.full((rows.size, 1), -np.inf, np.float32)], axis=1)
        w = vv.shape[1]
        k = sorted({(w - 1) // 2, w // 2})
        part = np.partition(vv, k, axis=1)
        with np.errstate(invalid="ignore"):  # rows without good pixels: inf - inf, zeroed below
            med[rows] = 0.5 * (part[:, k[0]].astype(np.float64) + part[:, k[-1]])
    return np.where((nbad < use.shape[1]) & np.isfinite(med), med, 0.0)


def _chunk(batch: SpectraBatch, i: int, j: int) -> SpectraBatch:
    """Rows i:j of a batch as views (no copy): the chain runs on cache-sized chunks."""
    arms = {k: Arm(a.name, a.wave if a.wave.ndim == 1 else a.wave[i:j], a.flux[i:j], a.ivar[i:j],
                   a.mask[i:j], None if a.resolution is None else a.resolution[i:j])
            for k, a in batch.arms.items()}
    return SpectraBatch(arms=arms, meta={k: v[i:j] for k, v in batch.meta.items()})


@single_thread_blas()  # faster on these small matrices, and results independent of the core count
def preprocess_batch(batch: SpectraBatch, *, grid: ModelGrid, settings: PreprocessSettings,
                     keep_continuum: bool = False, chunk_rows: int | None = None) -> Preprocessed:
    """Turn a batch of spectra into continuum-normalised model inputs on the model grid.

    Steps: masks -> arms joined over the needed range -> [resolution match] -> bad pixels
    interpolated -> [rest frame] -> GASPP continuum on the native pixels -> normalised flux and
    IVAR resampled onto ``grid``. Bad spectra never raise: see the diagnostics.

    Parameters
    ----------
    batch : SpectraBatch
        DESI (arms B, R, Z) or LAMOST (arm LRS) spectra.
    grid : ModelGrid
        The model's input grid (from the model bundle).
    settings : PreprocessSettings
        The model's preprocessing settings (from the model bundle).
    keep_continuum : bool
        Also return the continuum on the grid (QA).
    chunk_rows : int, optional
        Rows processed together. Every step is vectorised over the rows of a chunk; chunks of
        about :data:`CHUNK_PIXELS` native pixels (~100 DESI B-arm spectra) keep the working arrays
        in the CPU cache, which is several times faster than one pass over a large batch.
        Default: chosen from the number of pixels per spectrum. The result does not depend on it
        beyond float32 rounding.

    Returns
    -------
    Preprocessed
    """
    n = len(batch)
    lo, hi, fit_blue, fit_red = needed_range(grid=grid, settings=settings)
    if settings.rest_frame:
        z, known = redshifts(batch.meta, n)
    else:
        z, known = np.zeros(n), np.zeros(n, bool)
    margin = _margin(settings, hi)
    zlo, zhi = (float(z.min()), float(z.max())) if n else (0.0, 0.0)
    # one observed range for the whole batch, so chunking cannot change the result
    obs = (lo * (1 + zlo) - margin, hi * (1 + zhi) + margin)
    flux = np.ones((n, grid.npix), np.float32)
    ivar = np.zeros((n, grid.npix), np.float32)
    cont = np.ones((n, grid.npix), np.float32) if keep_continuum else None
    diag = {k: np.zeros(n, dt) for k, (dt, _) in DIAGNOSTIC_COLUMNS.items()}
    if chunk_rows is None:
        npix = sum(columns_in_range(a.wave, *obs).stop - columns_in_range(a.wave, *obs).start
                   for a in batch.arms.values())
        chunk_rows = CHUNK_PIXELS // max(npix, 1)
    step = max(int(chunk_rows), 8)
    for i in range(0, n, step):  # loop over chunks of rows; each chunk is fully vectorised
        j = min(i + step, n)
        part = _chunk(batch, i, j)
        out = _preprocess_chunk(part, z[i:j], known[i:j], obs=obs, grid=grid, settings=settings,
                                fit_blue=fit_blue, fit_red=fit_red, keep_continuum=keep_continuum)
        flux[i:j], ivar[i:j] = out.flux, out.ivar
        if keep_continuum:
            cont[i:j] = out.continuum
        for k in diag:
            diag[k][i:j] = out.diagnostics[k]
    return Preprocessed(flux=flux, ivar=ivar, diagnostics=diag, continuum=cont)


def _preprocess_chunk(batch, z, known, *, obs, grid, settings, fit_blue, fit_red, keep_continuum):
    n = len(batch)
    joined = join_arms(batch, lo=obs[0], hi=obs[1], settings=settings,
                       want_sigma=settings.lsf_match_R is not None)
    wave, flux, ivar, bad = joined.wave, joined.flux, joined.ivar, joined.bad
    if settings.lsf_match_R is not None and flux.shape[1]:
        flux, ivar = match_resolution(wave=wave, flux=flux, ivar=ivar, bad=bad,
                                      sigma_in=joined.sigma, target_R=settings.lsf_match_R)
    clean = interpolate_bad(wave=wave, flux=flux, bad=bad)
    wr = rest_wave(wave=wave, z=z)

    g0, g1 = grid.range
    with np.errstate(invalid="ignore"):
        inwin = (wr >= g0) & (wr <= g1)
    snr = _median_snr(clean, ivar, bad, inwin)

    res_c = gaspp_continuum(wave=wave, wave_rest=wr, flux=clean, snr=snr, settings=settings,
                            fit_blue=fit_blue, fit_red=fit_red, window=(g0, g1))
    cont = res_c.continuum
    status = res_c.status
    status[~(inwin & ~bad).any(axis=1)] |= CONT_NO_DATA
    with np.errstate(over="ignore", invalid="ignore"):  # absurd flux (1e19 and up): caught below
        norm = clean / cont
        norm_ivar = np.where(bad, np.float32(0), ivar * (cont * cont))
    # a flux so large that the normalised inverse variance overflows (or anything else
    # non-finite) is a failed normalisation (CONT_OK False): such a row must not reach the network
    finite = np.isfinite(norm).all(axis=1) & np.isfinite(norm_ivar).all(axis=1)
    if not finite.all():
        norm = np.where(finite[:, None], norm, np.float32(1))
        norm_ivar = np.where(finite[:, None], norm_ivar, np.float32(0))

    target = grid.wave if not np.any(z) else grid.wave[None, :] * (1.0 + z)[:, None]
    if wave.shape[-1] < 2:  # no arm reaches the grid: nothing covered
        wave, norm, norm_ivar = np.full(2, np.nan), np.ones((n, 2)), np.zeros((n, 2))
        cont = np.ones((n, 2))
    out = resample_to_grid(wave=wave, flux=norm, ivar=norm_ivar, target=target)
    covered = out.covered
    coverage = covered.mean(axis=1).astype(np.float32)
    ncov = covered.sum(axis=1)
    n_good = (out.ivar > 0).sum(axis=1).astype(np.int32)
    bad_frac = np.where(ncov > 0, 1.0 - n_good / np.maximum(ncov, 1), 1.0).astype(np.float32)
    cont_ok = ((status & CONT_BAD_BITS) == 0) & finite
    is_covered = coverage >= settings.min_coverage - 1e-9
    rv_ok = known if settings.rest_frame else np.ones(n, bool)
    diagnostics = {
        "SNR_MEDIAN": snr.astype(np.float32),
        "BAD_FRAC": bad_frac,
        "COVERAGE": coverage,
        "COVERED": is_covered,
        "CONT_STATUS": status.astype(np.int16),
        "CONT_OK": cont_ok,
        "HOT_STAR": res_c.hot,
        "RV_APPLIED": known & bool(settings.rest_frame),
        "N_GOOD": n_good,
        "PREPROC_OK": is_covered & cont_ok & (n_good > 0) & rv_ok,
    }
    cont_grid = None
    if keep_continuum:
        cont_grid = resample_to_grid(wave=wave, flux=cont, ivar=np.ones_like(cont), target=target).flux
    return Preprocessed(flux=out.flux, ivar=out.ivar, diagnostics=diagnostics, continuum=cont_grid)
