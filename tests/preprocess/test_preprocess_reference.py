"""The batched chain agrees with the plain per-spectrum reference (tests/preprocess/gaspp_reference)."""

import glob

import numpy as np
import pytest

import gaspp_reference as ref
from preprocess_factory import DESI_B, LAMOST, batch_from, smooth_continuum
from catalog_tool.io.desi import read_coadd
from catalog_tool.io.lamost import read_lamost_files
from catalog_tool.preprocess import ModelGrid, PreprocessSettings, preprocess_batch
from catalog_tool.preprocess.continuum import gaspp_continuum, median_smooth
from catalog_tool.preprocess.masks import bad_pixels, interpolate_bad
from catalog_tool.sim.specmodel import SpectralModel


def _compare_continuum(wave, flux, ivar, mask, settings, fit_red=False):
    bad = bad_pixels(flux=flux, ivar=ivar, mask=mask)
    clean = interpolate_bad(wave=wave, flux=flux.astype(np.float64), bad=bad)
    snr = np.array([np.median((flux * np.sqrt(np.clip(ivar, 0, None)))[i][~bad[i]])
                    if (~bad[i]).any() else 0.0 for i in range(len(flux))])
    res = gaspp_continuum(wave=wave, flux=clean, snr=snr, settings=settings, fit_red=fit_red)
    w2 = np.broadcast_to(wave, flux.shape)
    for i in range(len(flux)):
        fin = np.isfinite(w2[i])
        ci = ref.interpolate_one(w2[i][fin], flux[i][fin].astype(float), bad[i][fin])
        np.testing.assert_allclose(clean[i][fin], ci, rtol=1e-5, atol=1e-6)
        cref, hot = ref.continuum_one(w2[i][fin], ci, snr[i], settings, True, fit_red)
        # 1e-3 relative; where the polynomial crosses zero (LAMOST's blue end) relative to the
        # spectrum's continuum scale instead (float32 sums there are good to ~1e-6 of the scale)
        np.testing.assert_allclose(res.continuum[i][fin], cref, rtol=1e-3,
                                   atol=1e-5 * np.max(np.abs(cref)))
        assert res.hot[i] == hot
    return res


def test_median_filter_matches_reference(rng):
    y = rng.normal(size=(3, 50))
    got = median_smooth(flux=y, size=7)
    for i in range(3):
        np.testing.assert_allclose(got[i], ref.median7(y[i], 7))


def test_reference_agreement_simulated(rng):
    model = SpectralModel.load_default()
    n = 6
    teff = np.array([4200.0, 5200, 6100, 7300, 5800, 4800])
    lines = model.render(teff=teff, logg=np.array([1.5, 4.5, 4.0, 4.0, 3.0, 2.5]),
                         feh=np.array([-2.0, 0.2, -0.5, 0.0, -1.2, 0.3]),
                         alphafe=np.array([0.4, 0.0, 0.2, 0.0, 0.3, 0.1]), wave=DESI_B)
    snr = np.array([200.0, 60, 30, 80, 12, 5])[:, None]
    ivar = (snr / lines) ** 2
    flux = lines + rng.normal(size=lines.shape) / np.sqrt(ivar)
    mask = np.zeros(flux.shape, np.uint32)
    mask[1, 800:812] = 1
    flux[2, 1500] = np.nan
    s = PreprocessSettings()
    res = _compare_continuum(DESI_B, flux.astype(np.float32), ivar.astype(np.float32), mask, s)
    assert res.hot[3] and not res.hot[0]  # the 7300 K star is hot, the giant is not

    # rest frame: segment membership per row, polynomial basis on the shared observed grid
    z = np.array([3e-4, -5e-4, 1e-3, 0.0, -2e-4, 6e-4])
    wr = DESI_B[None, :] / (1 + z[:, None])
    bad = bad_pixels(flux=flux, ivar=ivar, mask=mask)
    clean = interpolate_bad(wave=DESI_B, flux=flux, bad=bad)
    res = gaspp_continuum(wave=DESI_B, wave_rest=wr, flux=clean, snr=snr[:, 0], settings=s,
                          fit_red=False)
    for i in range(n):
        cref, hot = ref.continuum_one(DESI_B, clean[i], snr[i, 0], s, True, False, wave_rest=wr[i])
        np.testing.assert_allclose(res.continuum[i], cref, rtol=1e-3)
        assert res.hot[i] == hot


def test_reference_agreement_real_desi(realdata):
    b = read_coadd(realdata / "desi" / "coadd-sv3-dark-26065.fits", arms=("B",))
    b2 = read_coadd(realdata / "desi" / "coadd-4-80613-thru20210324.fits", arms=("B",))
    arms = [b.arms["B"], b2.arms["B"]]
    flux = np.concatenate([a.flux for a in arms])
    ivar = np.concatenate([a.ivar for a in arms])
    mask = np.concatenate([a.mask for a in arms])
    _compare_continuum(arms[0].wave, flux, ivar, mask, PreprocessSettings())


def test_reference_agreement_real_lamost_all_segments(realdata):
    batch, failed = read_lamost_files(sorted(glob.glob(str(realdata / "lamost" / "*.fits*"))))
    assert not failed
    arm = batch.arms["LRS"]
    _compare_continuum(arm.wave, arm.flux, arm.ivar, arm.mask, PreprocessSettings(), fit_red=True)


def test_full_chain_matches_reference_on_grid(rng):
    wave = LAMOST
    n = 3
    cont = smooth_continuum(wave, n, rng)
    flux = cont * (1 - 0.5 * np.exp(-0.5 * ((wave - 5175.0) / 3.0) ** 2))
    ivar = np.full(flux.shape, 0.04)
    flux = flux + rng.normal(size=flux.shape) * 5.0
    flux[1, 900:905] = 0
    ivar[1, 900:905] = 0
    batch = batch_from({"LRS": (np.broadcast_to(wave, flux.shape).copy(), flux, ivar)}, n,
                       survey="lamost")
    grid = ModelGrid()
    s = PreprocessSettings()
    out = preprocess_batch(batch, grid=grid, settings=s)
    for i in range(n):
        f32 = batch.arms["LRS"].flux[i].astype(float)
        iv32 = batch.arms["LRS"].ivar[i].astype(float)
        sel = (wave >= 3670) & (wave <= 5730)  # crop like the chain (3700 - 30 A .. 5700 + 30 A)
        good = iv32 > 0
        snr = np.median((f32 * np.sqrt(iv32))[sel & good & (wave >= grid.range[0]) & (wave <= grid.range[1])])
        fr, ivr = ref.preprocess_one(wave[sel], f32[sel], iv32[sel], ~good[sel], grid.wave, s, snr)
        np.testing.assert_allclose(out.flux[i], fr, rtol=2e-3)
        np.testing.assert_allclose(out.ivar[i], ivr, rtol=5e-3)
        assert out.diagnostics["SNR_MEDIAN"][i] == pytest.approx(snr, rel=1e-4)
