"""ModelGrid and PreprocessSettings: values, JSON round trips, validation; resampling with IVAR."""

import json

import numpy as np
import pytest

from catalog_tool.errors import ConfigError
from catalog_tool.preprocess import ModelGrid, PreprocessSettings
from catalog_tool.preprocess.grid import loglinear_wave, resample_to_grid
from catalog_tool.sim import instrument as ins


def test_paper_grid():
    g = ModelGrid()
    assert g.npix == 1462
    assert g.wave[0] == pytest.approx(3999.45, abs=0.01)
    assert g.wave[-1] == pytest.approx(5598.87, abs=0.01)
    np.testing.assert_allclose(np.diff(np.log10(g.wave)), 1e-4, rtol=1e-9)


def test_one_loglinear_grid_helper_serves_model_and_simulator():
    np.testing.assert_allclose(loglinear_wave(loglam0=3.0, dloglam=0.5, npix=3), [1e3, 10 ** 3.5, 1e4])
    g = ModelGrid(loglam0=3.6, dloglam=2e-4, npix=7)
    fine = ins.FineGrid(3.6, 2e-4, 7)
    assert np.array_equal(g.wave, fine.wave)
    assert np.array_equal(g.wave, 10.0 ** g.loglam)
    assert ins.lamost_wave(4)[0] == pytest.approx(10 ** 3.5682)


def test_grid_dict_round_trip():
    g = ModelGrid(loglam0=3.6, dloglam=2e-4, npix=500)
    d = json.loads(json.dumps(g.to_dict()))
    assert ModelGrid.from_dict(d) == g
    assert d["medium"] == "vacuum"
    with pytest.raises(ConfigError, match="npix"):
        ModelGrid.from_dict({**d, "npix": 1})
    with pytest.raises(ConfigError, match="unknown"):
        ModelGrid.from_dict({**d, "step": 1})
    with pytest.raises(ConfigError, match="kind"):
        ModelGrid.from_dict({**d, "kind": "linear"})


def test_settings_dict_round_trip():
    s = PreprocessSettings(rest_frame=True, lsf_match_R=1800.0, savgol_windows=((40, 3), (0, 9)))
    d = json.loads(json.dumps(s.to_dict()))
    assert PreprocessSettings.from_dict(d) == s
    assert d["savgol_windows"] == [[40.0, 3], [0.0, 9]]
    assert PreprocessSettings.from_dict(PreprocessSettings().to_dict()) == PreprocessSettings()


def test_settings_validation_lists_all_problems():
    with pytest.raises(ConfigError) as err:
        PreprocessSettings(median_window=6, lsf_match_R=-1, min_coverage=0)
    msg = str(err.value)
    assert "median_window" in msg and "lsf_match_R" in msg and "min_coverage" in msg
    with pytest.raises(ConfigError, match="unknown"):
        PreprocessSettings.from_dict({"restframe": True})


def test_resample_linear_in_loglam_with_ivar_propagation():
    wave = np.array([4000.0, 4001, 4002, 4003])
    flux = np.array([[1.0, 3.0, 5.0, 2.0]])
    ivar = np.array([[1.0, 4.0, 0.0, 2.0]])
    target = np.array([3999.0, 4000.5, 4001.0, 4002.5])
    out = resample_to_grid(wave=wave, flux=flux, ivar=ivar, target=target)
    t = (np.log10(4000.5) - np.log10(4000)) / (np.log10(4001) - np.log10(4000))
    np.testing.assert_array_equal(out.covered[0], [False, True, True, True])
    assert out.flux[0, 1] == pytest.approx((1 - t) * 1 + t * 3, rel=1e-6)
    assert out.ivar[0, 1] == pytest.approx(1 / ((1 - t) ** 2 / 1 + t ** 2 / 4), rel=1e-5)
    assert out.flux[0, 2] == pytest.approx(3.0) and out.ivar[0, 2] == pytest.approx(4.0)
    # a bad neighbour with weight makes the pixel bad; uncovered pixels are 1 with IVAR 0
    assert out.ivar[0, 3] == 0 and out.flux[0, 3] == 1.0
    assert out.ivar[0, 0] == 0 and out.flux[0, 0] == 1.0


def test_resample_per_row_grids_match_shared():
    rng = np.random.default_rng(3)
    wave = 4000 + 0.8 * np.arange(300)
    flux = rng.normal(size=(3, 300))
    ivar = rng.uniform(0.5, 2, size=(3, 300))
    target = np.linspace(4010, 4200, 77)
    shared = resample_to_grid(wave=wave, flux=flux, ivar=ivar, target=target)
    per_row = resample_to_grid(wave=np.tile(wave, (3, 1)), flux=flux, ivar=ivar,
                               target=np.tile(target, (3, 1)))
    np.testing.assert_allclose(shared.flux, per_row.flux, rtol=1e-6)
    np.testing.assert_allclose(shared.ivar, per_row.ivar, rtol=1e-6)


def test_needed_observed_range_decides_the_desi_arms_read():
    from catalog_tool.io.desi import arms_covering
    from catalog_tool.preprocess import needed_observed_range

    def arms(grid=ModelGrid(), **kw):
        return arms_covering(*needed_observed_range(grid=grid, settings=PreprocessSettings(**kw)))

    # the paper's grid and blue segment (3700-5700 A) plus 30 A margins: the B arm alone
    assert needed_observed_range(grid=ModelGrid(), settings=PreprocessSettings()) == (3670.0, 5730.0)
    assert arms() == ("B",)
    # in the rest frame a star at z = +0.01 needs up to 5700 x 1.01 + 30 = 5787 A: into the R arm
    assert needed_observed_range(grid=ModelGrid(), settings=PreprocessSettings(rest_frame=True)) == (
        pytest.approx(3633.0), pytest.approx(5787.0))
    assert arms(rest_frame=True) == ("B", "R")
    assert arms(fit_all_segments=True) == ("B", "R", "Z")
    red = ModelGrid(loglam0=3.80, npix=1000)  # 6310-7940 A: the red segment, arms R and Z
    assert arms(grid=red) == ("R", "Z")
