"""Rest-frame shift and resolution matching."""

import numpy as np
import pytest

from preprocess_factory import DESI_B, LAMOST, absorption, batch_from, smooth_continuum
from catalog_tool.preprocess import ModelGrid, PreprocessSettings, preprocess_batch
from catalog_tool.preprocess.arms import FWHM_SIGMA, arm_sigma
from catalog_tool.preprocess.lsf import match_resolution
from catalog_tool.preprocess.rv import redshifts

C_KMS = 299792.458
LINES = np.array([4383.5, 4668.1, 4957.6, 5167.3, 5269.5, 5328.0])


def _grid_shift(a, b):
    """Shift (grid pixels) of b relative to a by cross-correlation with a parabolic peak."""
    a = 1 - a
    b = 1 - b
    lags = np.arange(-20, 21)
    cc = np.array([np.sum(a[30:-30] * np.roll(b, -k)[30:-30]) for k in lags])
    k = np.argmax(cc)
    y0, y1, y2 = cc[k - 1], cc[k], cc[k + 1]
    return lags[k] + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)


@pytest.mark.parametrize("v_kms", [-87.0, 151.3])
def test_known_radial_velocity_is_undone(rng, v_kms):
    z = v_kms / C_KMS
    cont = smooth_continuum(DESI_B, 1, rng)
    rest = absorption(DESI_B, LINES, np.full(LINES.size, 0.5), np.full(LINES.size, 1.5))
    moved = absorption(DESI_B, LINES * (1 + z), np.full(LINES.size, 0.5), np.full(LINES.size, 1.5))
    flux = np.vstack([cont * rest, cont * moved])
    batch = batch_from({"B": (DESI_B, flux, np.full(flux.shape, 1.0))}, 2, Z=np.array([0.0, z]))
    grid = ModelGrid()
    expected = np.log10(1 + z) / grid.dloglam  # grid pixels
    out = preprocess_batch(batch, grid=grid, settings=PreprocessSettings(rest_frame=True))
    assert out.diagnostics["RV_APPLIED"].all()
    assert abs(_grid_shift(out.flux[0], out.flux[1])) < 0.1
    # without the shift the lines sit |expected| pixels away: the measurement can fail
    obs = preprocess_batch(batch, grid=grid, settings=PreprocessSettings(rest_frame=False))
    assert _grid_shift(obs.flux[0], obs.flux[1]) == pytest.approx(expected, abs=0.1)
    assert abs(expected) > 1.2


def test_unknown_redshift_is_flagged():
    z, known = redshifts({"Z": np.array([0.001, np.nan, -9999.0])}, 3)
    np.testing.assert_array_equal(known, [True, False, False])
    np.testing.assert_array_equal(z, [0.001, 0.0, 0.0])
    assert not redshifts({}, 2)[1].any()
    flux = np.full((2, DESI_B.size), 10.0)
    batch = batch_from({"B": (DESI_B, flux, np.ones_like(flux))}, 2, Z=np.array([1e-4, np.nan]))
    out = preprocess_batch(batch, grid=ModelGrid(), settings=PreprocessSettings(rest_frame=True))
    np.testing.assert_array_equal(out.diagnostics["RV_APPLIED"], [True, False])
    np.testing.assert_array_equal(out.diagnostics["PREPROC_OK"], [True, False])


def _line_sigma(wave, depth_profile, centre):
    sel = np.abs(wave - centre) < 15
    w = depth_profile[sel]
    mu = np.sum(w * wave[sel]) / np.sum(w)
    return np.sqrt(np.sum(w * (wave[sel] - mu) ** 2) / np.sum(w))


def test_resolution_match_brings_narrow_line_to_target_width():
    centre = 5000.0
    s = PreprocessSettings(lsf_match_R=1800.0)
    batch = batch_from({"B": (DESI_B, np.ones((1, DESI_B.size)), np.ones((1, DESI_B.size)))}, 1)
    s_in = arm_sigma(batch.arms["B"], settings=s)
    j = np.argmin(np.abs(DESI_B - centre))
    # an unresolved line as DESI records it: a Gaussian of the instrument's own width
    line = 0.5 * np.exp(-0.5 * ((DESI_B - centre) / s_in[j]) ** 2)
    flux = (1 - line)[None, :] * 100
    ivar = np.full(flux.shape, 4.0, np.float32)
    bad = np.zeros(flux.shape, bool)
    out_f, out_iv = match_resolution(wave=DESI_B, flux=flux, ivar=ivar, bad=bad, sigma_in=s_in,
                                     target_R=1800.0)
    target = centre / (FWHM_SIGMA * 1800.0)
    got = _line_sigma(DESI_B, 1 - out_f[0] / 100, centre)
    assert got == pytest.approx(target, rel=0.03)
    assert _line_sigma(DESI_B, line, centre) < 0.8 * target  # it really was narrower
    # smoothing averages noise down: ivar rises, and the equivalent width is kept
    assert np.median(out_iv) > 1.5 * 4.0
    assert np.sum(1 - out_f[0] / 100) == pytest.approx(np.sum(line), rel=1e-3)


def test_resolution_match_is_identity_at_input_resolution(rng):
    flux = 100 + rng.normal(size=(2, LAMOST.size))
    ivar = np.ones(flux.shape, np.float32)
    batch = batch_from({"LRS": (np.broadcast_to(LAMOST, flux.shape).copy(), flux, ivar)}, 2,
                       survey="lamost")
    s = PreprocessSettings(lsf_match_R=1800.0, lamost_R=1800.0)
    sig = arm_sigma(batch.arms["LRS"], settings=s)
    out_f, out_iv = match_resolution(wave=batch.arms["LRS"].wave, flux=flux, ivar=ivar,
                                     bad=np.zeros(flux.shape, bool), sigma_in=sig, target_R=1800.0)
    np.testing.assert_allclose(out_f, flux, rtol=1e-6)
    np.testing.assert_allclose(out_iv, ivar, rtol=1e-6)


def test_desi_resolution_matrix_gives_plausible_lsf(realdata):
    from catalog_tool.io.desi import read_coadd
    b = read_coadd(realdata / "desi" / "coadd-sv3-dark-26065.fits", resolution=True)
    s = PreprocessSettings()
    for name, (lo, hi) in {"B": (1900, 4200), "R": (3300, 5800), "Z": (3800, 6000)}.items():
        arm = b.arms[name]
        assert arm.resolution is not None
        sig = arm_sigma(arm, settings=s)
        R = arm.wave / (FWHM_SIGMA * sig[4])
        assert lo < np.median(R) < hi
        assert R[-1] > R[0]  # resolving power rises along each arm
