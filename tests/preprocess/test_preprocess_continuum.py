"""GASPP continuum: a known continuum is recovered; hot stars; the red segment; status bits."""

import numpy as np

from preprocess_factory import DESI_B, LAMOST, absorption, batch_from, smooth_continuum
from catalog_tool.preprocess import ModelGrid, PreprocessSettings, preprocess_batch
from catalog_tool.preprocess.continuum import (CONT_BLUE_SKIPPED, CONT_HOT, CONT_NONPOSITIVE,
                                               gaspp_continuum, savgol_operator)
from scipy.signal import savgol_filter

# metal-line-like absorption: many narrow lines of different depths (only downward)
LINES = np.linspace(3720, 5680, 140)
DEPTHS = 0.1 + 0.5 * (np.sin(LINES) ** 2)


def test_known_continuum_recovered_noiseless(rng):
    n = 4
    cont = smooth_continuum(DESI_B, n, rng)
    flux = cont * absorption(DESI_B, LINES, DEPTHS, np.full(LINES.size, 1.2))
    res = gaspp_continuum(wave=DESI_B, flux=flux, snr=np.full(n, 100.0),
                          settings=PreprocessSettings(), fit_red=False)
    sel = (DESI_B > 4000) & (DESI_B < 5600)
    rel = res.continuum[:, sel] / cont[:, sel] - 1
    assert np.max(np.abs(rel)) < 5e-3
    # "hot" means the continuum peaks blueward of 4500 A: true for the rows whose true one does
    seg = (DESI_B >= 3700) & (DESI_B <= 5700)
    peaks_blue = DESI_B[seg][np.argmax(cont[:, seg], axis=1)] < 4500
    assert peaks_blue.any() and not peaks_blue.all()
    np.testing.assert_array_equal(res.hot, peaks_blue)
    assert ((res.status & ~CONT_HOT) == 0).all()


def test_known_continuum_recovered_with_noise(rng):
    n = 6
    cont = smooth_continuum(DESI_B, n, rng)
    flux = cont * absorption(DESI_B, LINES, DEPTHS, np.full(LINES.size, 1.2))
    sigma = cont / 100.0  # S/N 100 on the continuum
    noisy = flux + rng.normal(size=flux.shape) * sigma
    ivar = 1 / sigma ** 2
    batch = batch_from({"B": (DESI_B, noisy, ivar)}, n)
    out = preprocess_batch(batch, grid=ModelGrid(), settings=PreprocessSettings(),
                           keep_continuum=True)
    truth = np.interp(ModelGrid().wave, DESI_B, cont[0])
    rel = out.continuum[0] / truth - 1
    # the upper envelope of the median-filtered flux sits on, or a little above, the continuum
    assert np.median(rel) > -0.003
    assert np.max(np.abs(rel)) < 0.02
    assert out.diagnostics["PREPROC_OK"].all()
    # normalised flux between the lines is ~1
    gw = ModelGrid().wave
    far = np.min(np.abs(gw[:, None] - LINES[None, :]), axis=1) > 6
    assert abs(np.median(out.flux[:, far]) - 1) < 0.01


def test_hot_star_balmer_windows_bridged(rng):
    # a hot star: continuum falling to the red (peaks at the blue end), very broad Balmer lines
    n = 2
    x = (DESI_B - 3700) / 2000
    cont = 100 * (1.6 - 0.9 * x + 0.2 * x ** 2)[None, :] * np.array([[1.0], [0.7]])
    balmer = absorption(DESI_B, [4102.9, 4341.7, 4862.7], [0.6, 0.6, 0.6], [25.0, 25.0, 25.0])
    flux = cont * balmer
    res = gaspp_continuum(wave=DESI_B, flux=flux, snr=np.full(n, 80.0), settings=PreprocessSettings(),
                          fit_red=False)
    assert res.hot.all() and (res.status & CONT_HOT).all()
    for centre in (4102.9, 4341.7, 4862.7):
        j = np.argmin(np.abs(DESI_B - centre))
        assert abs(res.continuum[0, j] / cont[0, j] - 1) < 0.03
    # the same star without bridging (a cool-star recipe) is dragged into the Balmer wings
    cool = PreprocessSettings(hot_peak_wave=0.0)
    res2 = gaspp_continuum(wave=DESI_B, flux=flux, snr=np.full(n, 80.0), settings=cool, fit_red=False)
    j = np.argmin(np.abs(DESI_B - 4341.7))
    assert not res2.hot.any()
    assert res2.continuum[0, j] < res.continuum[0, j]


def test_red_segment_fitted_on_lamost_wavelengths(rng):
    n = 3
    wave = LAMOST
    x = (wave - 6500) / 2000
    cont = 50 * (1 + 0.2 * x - 0.1 * x ** 2)[None, :] * rng.uniform(0.5, 2, (n, 1))
    red_lines = np.linspace(6150, 8900, 60)
    flux = cont * absorption(wave, red_lines, np.full(60, 0.4), np.full(60, 2.0))
    flux = flux + rng.normal(size=flux.shape) * cont / 200
    res = gaspp_continuum(wave=wave, flux=flux, snr=np.full(n, 200.0),
                          settings=PreprocessSettings(), fit_blue=False, fit_red=True)
    sel = (wave > 6300) & (wave < 8800)
    rel = res.continuum[:, sel] / cont[:, sel] - 1
    assert np.max(np.abs(rel)) < 0.02
    # between the segments (5700-6100 A) the median-filtered flux is its own continuum
    mid = (wave > 5800) & (wave < 6000)
    assert np.allclose(res.continuum[:, mid], flux[:, mid], rtol=0.03)


def test_savgol_operator_matches_scipy(rng):
    y = rng.normal(size=200)
    for window in (5, 7, 11):
        np.testing.assert_allclose(savgol_operator(200, window, 2) @ y,
                                   savgol_filter(y, window, 2, mode="interp"), atol=1e-12)


def test_short_and_nonpositive_spectra_flagged():
    wave = DESI_B[:80]  # fewer pixels than the segment minimum
    flux = np.ones((2, 80))
    res = gaspp_continuum(wave=wave, flux=flux, snr=np.ones(2), settings=PreprocessSettings(),
                          fit_red=False)
    assert (res.status & CONT_BLUE_SKIPPED).all()
    res = gaspp_continuum(wave=DESI_B, flux=np.vstack([np.zeros(DESI_B.size), -np.ones(DESI_B.size)]),
                          snr=np.zeros(2), settings=PreprocessSettings(), fit_red=False)
    assert (res.status & CONT_NONPOSITIVE).all()
    assert (res.continuum == 1).all()
