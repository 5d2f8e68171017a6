"""The real DESI and LAMOST files go through the whole chain; continua hug the upper envelope."""

import glob

import numpy as np
import pytest

from catalog_tool.io.desi import read_coadd
from catalog_tool.io.lamost import read_lamost, read_lamost_files
from catalog_tool.preprocess import ModelGrid, PreprocessSettings, preprocess_batch
from catalog_tool.preprocess.continuum import gaspp_continuum, median_smooth
from catalog_tool.preprocess.masks import bad_pixels, interpolate_bad

GRID = ModelGrid()
SETTINGS = [PreprocessSettings(),
            PreprocessSettings(rest_frame=True, lsf_match_R=1800.0, fit_all_segments=True)]


@pytest.mark.parametrize("settings", SETTINGS, ids=["paper", "restframe-lsf-all"])
def test_lamost_files(realdata, settings):
    batch, failed = read_lamost_files(sorted(glob.glob(str(realdata / "lamost" / "*.fits*"))))
    assert not failed and len(batch) == 9
    out = preprocess_batch(batch, grid=GRID, settings=settings)
    d = out.diagnostics
    assert out.flux.shape == (9, 1462) and out.flux.dtype == np.float32
    assert np.isfinite(out.flux).all() and (out.ivar >= 0).all()
    assert d["COVERED"].all() and d["CONT_OK"].all()
    assert (d["SNR_MEDIAN"] > 5).all()
    if settings.rest_frame:  # one DR7 file has Z = -9999 (unknown)
        assert d["RV_APPLIED"].sum() == 8 and d["PREPROC_OK"].sum() == 8
    else:
        assert d["PREPROC_OK"].all()
    # normalised: the bright pixels sit near 1
    good = out.ivar > 0
    q95 = np.array([np.percentile(out.flux[i][good[i]], 95) for i in range(9)])
    assert np.all((q95 > 0.95) & (q95 < 1.15))


@pytest.mark.parametrize("name", ["dr10-3703110.fits", "dr7-spec-56286-HD100408N031203B04_sp08-071.fits"])
def test_lamost_continuum_hugs_upper_envelope(realdata, name):
    # a K7 (dr10) and an M2 (dr7) star: the degree-5 envelope sits on the tops of the spectrum
    b = read_lamost(realdata / "lamost" / name)
    a = b.arms["LRS"]
    bad = bad_pixels(flux=a.flux, ivar=a.ivar, mask=a.mask)
    clean = interpolate_bad(wave=a.wave, flux=a.flux, bad=bad)
    res = gaspp_continuum(wave=a.wave, flux=clean, snr=np.array([20.0]),
                          settings=PreprocessSettings(), fit_red=False)
    w = a.wave2d()[0]
    mf = median_smooth(flux=clean, size=7)[0]
    c = res.continuum[0]
    sel = (w > 4000) & (w < 5600)
    ratio = mf[sel] / c[sel]
    assert 0.97 < np.percentile(ratio, 90) < 1.04       # the top decile touches the continuum
    assert np.mean(ratio > 1.05) < 0.08                  # few points poke above it
    assert np.median(ratio) < 0.9                        # and the lines lie below it
    # by hand: at 5400 A the local maximum of the median-filtered flux is within 5% of the
    # continuum, while inside the MgH/Mg b trough at 5170 A the flux is far below it
    j = np.argmin(np.abs(w - 5400))
    assert np.max(mf[j - 6:j + 7]) / c[j] == pytest.approx(1.0, abs=0.05)
    k = np.argmin(np.abs(w - 5170))
    assert mf[k] / c[k] < 0.8


def test_desi_files(realdata):
    b = read_coadd(realdata / "desi" / "coadd-sv3-dark-26065.fits", resolution=True)
    for settings in SETTINGS:
        out = preprocess_batch(b, grid=GRID, settings=settings)
        d = out.diagnostics
        assert np.isfinite(out.flux).all()
        # rows 0, 1 (unassigned fibres) and 3 hold no data at all: flagged, IVAR 0
        np.testing.assert_array_equal(d["N_GOOD"][[0, 1, 3]], 0)
        assert not d["PREPROC_OK"][[0, 1, 3]].any()
        assert (d["CONT_STATUS"][[0, 1, 3]] != 0).all()
        assert (out.ivar[[0, 1, 3]] == 0).all()
        assert d["COVERED"].all()
        assert (d["N_GOOD"][[2, 4]] > 1400).all()
    for name in ("coadd-4-80613-thru20210324.fits", "coadd-special-dark-27247.fits"):
        b = read_coadd(realdata / "desi" / name)
        out = preprocess_batch(b, grid=GRID, settings=SETTINGS[1])
        d = out.diagnostics
        assert np.isfinite(out.flux).all() and len(d["PREPROC_OK"]) == 1
        # redrock calls these galaxies (z = 0.37, 0.007): shifted, the first no longer covers
        # the grid from its B arm alone, the second still does
        assert d["RV_APPLIED"][0]
    assert b.meta["Z"][0] == pytest.approx(0.00727, abs=1e-4)
    assert d["COVERED"][0]
