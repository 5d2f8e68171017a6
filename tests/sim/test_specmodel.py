"""Tests of the MILES-based stellar spectral model (catalog_tool.sim.specmodel)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from catalog_tool.errors import ConfigError
from catalog_tool.sim.specmodel import (
    DEFAULT_MODEL_PATH,
    SpectralModel,
    air_to_vacuum,
    alpha_galactic,
)

WAVE = np.arange(3600.0, 9824.0, 0.5)


@pytest.fixture(scope="module")
def model() -> SpectralModel:
    return SpectralModel.load_default()


def _depth(flux, lam_air, hw=1.5):
    """Central depth of a line (normalised flux) near an air wavelength."""
    sel = np.abs(WAVE - air_to_vacuum(lam_air)) < hw
    return 1.0 - flux[:, sel].min(axis=1)


def _band(flux, lo, hi):
    return flux[:, (WAVE > lo) & (WAVE < hi)].mean(axis=1)


def test_model_file_is_small_and_pickle_free():
    assert DEFAULT_MODEL_PATH.stat().st_size < 2_000_000
    with np.load(DEFAULT_MODEL_PATH, allow_pickle=False) as f:
        assert f["theta_norm"].dtype == np.float32
        assert f["wave"].shape == (4300,)
        meta = json.loads(str(f["meta_json"]))
        wave = f["wave"]
    assert meta["script"] == "scripts/fit_miles_model.py"
    assert "MILES" in meta["library"] and meta["n_holdout"] > 50
    # The MILES grid starts at 3540.5 A in air: about 1.0 A more in vacuum.
    assert wave[0] == pytest.approx(3541.51, abs=0.02)


def test_air_to_vacuum_known_lines():
    # H-alpha 6562.80 A (air) is 6564.61 A in vacuum; Ca II K 3933.66 -> 3934.78.
    np.testing.assert_allclose(air_to_vacuum(np.array([6562.80, 3933.66])), [6564.61, 3934.78],
                               atol=0.01)


def test_render_shape_dtype_and_determinism(model):
    kw = dict(teff=[4500.0, 5800.0, 6600.0], logg=[2.4, 4.4, 4.1], feh=[-1.2, 0.1, -0.4],
              alphafe=[0.35, 0.0, 0.1], wave=WAVE[:517])
    a = model.render(**kw)
    b = model.render(**kw)
    assert a.shape == (3, 517) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert np.all(np.isfinite(a)) and np.all(a > 0)
    # The three stars differ (no axis mix-up that would make rows equal).
    assert np.abs(a[0] - a[1]).max() > 0.05 and np.abs(a[1] - a[2]).max() > 0.05


def test_per_star_wave_rows_match_single_rows(model):
    labels = dict(teff=[4800.0, 6100.0], logg=[2.6, 4.3], feh=[-0.3, -1.6], alphafe=[0.1, 0.4])
    w2 = np.stack([WAVE[:800], WAVE[:800] * (1 + 150.0 / 299792.458)])
    both = model.render(**labels, wave=w2)
    second = model.render(**{k: v[1:] for k, v in labels.items()}, wave=w2[1])
    np.testing.assert_allclose(both[1], second[0], rtol=1e-6)


def test_continuum_is_one_at_5500(model):
    c = model.continuum(teff=[4200.0, 7000.0], logg=[2.0, 4.0], feh=[0.0, -1.0],
                        wave=np.array([5500.0]))
    np.testing.assert_allclose(c[:, 0], 1.0, atol=1e-6)


def test_fe_lines_deepen_with_feh(model):
    feh = np.array([-2.0, -1.0, 0.0, 0.3])
    for teff, logg in [(4800.0, 2.5), (5800.0, 4.4)]:
        f = model.render(teff=teff, logg=logg, feh=feh, alphafe=alpha_galactic(feh), wave=WAVE,
                         normalised=True)
        for lam in (4383.55, 4404.75, 5269.54, 5328.04):
            assert np.all(np.diff(_depth(f, lam)) > 0), (teff, lam, _depth(f, lam))


def test_mgb_deepens_with_alpha_and_fe_does_not(model):
    alpha = np.array([-0.1, 0.2, 0.5])
    f = model.render(teff=5000.0, logg=3.0, feh=-0.5, alphafe=alpha, wave=WAVE, normalised=True)
    mgb = _depth(f, 5183.60)
    assert np.all(np.diff(mgb) > 0.03)
    # +0.3 dex: Mg b 20-60 % deeper, Fe 5270 untouched (outside every alpha window).
    assert 1.2 < mgb[2] / mgb[1] < 1.6
    np.testing.assert_allclose(_depth(f, 5269.54), _depth(f, 5269.54)[0], rtol=1e-6)
    # Ca triplet in the red extension follows [Ca/H] too.
    assert np.all(np.diff(_depth(f, 8542.09)) > 0)


def test_blue_to_red_flux_ratio_rises_with_teff(model):
    teff = np.array([4000.0, 5000.0, 6000.0, 7000.0])
    f = model.render(teff=teff, logg=4.4, feh=0.0, alphafe=0.0, wave=WAVE)
    ratio = _band(f, 4400, 4600) / _band(f, 6400, 6600)
    assert np.all(np.diff(ratio) > 0.2)
    assert ratio[0] < 0.7 and ratio[-1] > 1.6
    # In the red extension (Planck continuum) the z-band falls relative to 6500 A as Teff rises.
    assert np.all(np.diff(_band(f, 9000, 9200) / _band(f, 6400, 6600)) < 0)


def test_gravity_features(model):
    # K stars: Mg b wings are pressure-broadened in dwarfs; the Ca II triplet is stronger in giants.
    f = model.render(teff=4800.0, logg=[2.5, 4.5], feh=0.0, alphafe=0.0, wave=WAVE, normalised=True)
    mg_region = 1.0 - _band(f, 5150, 5200)
    assert mg_region[1] > mg_region[0] + 0.05
    assert _depth(f, 8542.09)[0] > _depth(f, 8542.09)[1] + 0.05


def test_red_extension_is_continuous(model):
    edge = model.wave_model[-1]
    w = np.array([edge - 1.5, edge + 1.5])
    f = model.render(teff=[4200.0, 5800.0, 7200.0], logg=[1.8, 4.4, 4.0], feh=[0.2, -0.5, -1.5],
                     alphafe=[0.0, 0.1, 0.4], wave=w)
    np.testing.assert_allclose(f[:, 1] / f[:, 0], 1.0, atol=0.08)


def test_labels_outside_domain_are_clipped(model):
    lo = model.domain["FEH"][0]
    assert lo == -2.5
    a = model.render(teff=5000.0, logg=2.5, feh=[-4.0], alphafe=0.4, wave=WAVE[:300])
    b = model.render(teff=5000.0, logg=2.5, feh=[lo], alphafe=0.4, wave=WAVE[:300])
    assert np.array_equal(a, b)


def test_bad_input_raises(model):
    with pytest.raises(ConfigError, match="wave"):
        model.render(teff=[5000.0, 5100.0], logg=4.0, feh=0.0, alphafe=0.0,
                     wave=np.ones((3, 10)) * 5000)
    with pytest.raises(ConfigError, match="finite"):
        model.render(teff=[np.nan], logg=4.0, feh=0.0, alphafe=0.0, wave=WAVE[:10])


def test_reproduces_held_out_miles_stars(model):
    """The stored model was fitted without these real MILES stars; compare them to it."""
    ex = model.examples
    lab = ex["example_labels"]
    truth = np.exp(ex["example_lnorm"].astype(np.float64))
    pred = model.render(teff=lab[:, 0], logg=lab[:, 1], feh=lab[:, 2],
                        alphafe=alpha_galactic(lab[:, 2]), wave=model.wave_model, normalised=True)
    ok = np.isfinite(truth)
    rms = np.sqrt(np.nanmean(np.where(ok, pred - truth, np.nan) ** 2, axis=1))
    stats = model.meta["holdout"]["all"]
    # Recorded by the fit: median held-out rms of the normalised flux (2.6 % when fitted).
    assert stats["norm_rms_median"] < 0.035
    assert np.median(rms) < 2.0 * stats["norm_rms_median"]
    assert np.all(rms < 0.12)
    # Continuum shape of the held-out stars: within 0.1 in ln over the MILES range.
    basis = np.polynomial.legendre.legvander(
        (model.wave_model - model.wave_model.mean()) / (0.5 * np.ptp(model.wave_model)), 8)
    lnc_true = ex["example_cont_coef"] @ basis.T
    lnc_pred = np.log(model.continuum(teff=lab[:, 0], logg=lab[:, 1], feh=lab[:, 2],
                                      wave=model.wave_model))
    assert np.median(np.sqrt(np.mean((lnc_pred - lnc_true) ** 2, axis=1))) < 0.1
