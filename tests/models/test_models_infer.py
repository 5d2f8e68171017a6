"""Inference: uncertainties grow as S/N falls, noise propagation agrees with Monte Carlo, bad rows are NaN."""

from __future__ import annotations

import numpy as np
import pytest

from catalog_tool.errors import ConfigError
from catalog_tool.models.bundle import make_provenance
from catalog_tool.models.infer import predict
from catalog_tool.train.synthetic import toy_spectra

from toy_model_settings import GRID, PREPROCESS


def test_uncertainties_grow_as_snr_falls(saved, toy, rng):
    _, _, labels = toy["test"]
    med_err, med_ens = [], []
    for snr in (150.0, 40.0, 10.0):
        flux, ivar = toy_spectra(labels=labels, npix=200, snr=snr, rng=rng)
        p = predict(saved, flux=flux, ivar=ivar)
        med_err.append(np.median(p.errors, axis=0))
        med_ens.append(np.median(p.ensemble_std, axis=0))
        assert np.allclose(p.errors**2, p.ensemble_std**2 + p.noise_std**2, rtol=1e-4)
    med_err, med_ens = np.array(med_err), np.array(med_ens)
    assert np.all(np.diff(med_err, axis=0) > 0), med_err   # every label, every step
    assert np.all(med_ens[2] > med_ens[0]), med_ens        # the ensemble spread alone too


def test_linear_noise_propagation_agrees_with_monte_carlo(saved, toy):
    flux, ivar, _ = toy["test"]
    lin = predict(saved, flux=flux[:200], ivar=ivar[:200], noise="linear", noise_members=1)
    mc = predict(saved, flux=flux[:200], ivar=ivar[:200], noise="mc", noise_members=1, mc_draws=300, seed=2)
    ratio = np.median(lin.noise_std / mc.noise_std, axis=0)
    assert np.all(np.abs(ratio - 1) < 0.15), ratio
    assert np.array_equal(lin.values, mc.values) and np.array_equal(lin.ensemble_std, mc.ensemble_std)
    full = predict(saved, flux=flux[:200], ivar=ivar[:200], noise="linear", noise_members=None)
    assert np.all(full.noise_std > 0) and not np.array_equal(full.noise_std, lin.noise_std)


def test_noise_scales_with_flux_errors_and_ignores_masked_pixels(saved, toy):
    flux, ivar, _ = toy["test"]
    a = predict(saved, flux=flux[:50], ivar=ivar[:50]).noise_std
    b = predict(saved, flux=flux[:50], ivar=ivar[:50] / 4.0).noise_std  # errors twice as large
    assert np.allclose(b, 2 * a, rtol=1e-4)
    iv = ivar[:50].copy()
    iv[:, :100] = 0.0  # masked half: less measured noise propagated
    c = predict(saved, flux=flux[:50], ivar=iv).noise_std
    assert np.all(np.isfinite(c)) and np.all(c < a + 1e-9)


def test_batches_and_bad_rows(saved, toy):
    flux, ivar, _ = toy["test"]
    flux = flux[:70].copy()
    flux[3, 17] = np.nan
    whole = predict(saved, flux=flux, ivar=ivar[:70], batch_size=1000)
    parts = predict(saved, flux=flux, ivar=ivar[:70], batch_size=16)
    assert np.allclose(whole.values, parts.values, atol=1e-5, equal_nan=True)
    assert np.all(np.isnan(whole.values[3])) and np.all(np.isnan(whole.errors[3]))
    assert np.all(np.isfinite(np.delete(whole.values, 3, axis=0)))
    assert whole.label_names == ["FEH", "LOGG"] and whole.values.dtype == np.float32
    v, e = whole.column("LOGG")
    assert np.array_equal(v, whole.values[:, 1], equal_nan=True) and np.array_equal(e, whole.errors[:, 1], equal_nan=True)


def test_wrong_shapes_and_options_refused(saved, toy):
    flux, ivar, _ = toy["test"]
    with pytest.raises(ConfigError, match="expects spectra of 200 pixels, got 199"):
        predict(saved, flux=flux[:, :199], ivar=ivar[:, :199])
    with pytest.raises(ConfigError, match="one shape"):
        predict(saved, flux=flux, ivar=ivar[:10])
    with pytest.raises(ConfigError, match="noise must be one of"):
        predict(saved, flux=flux, ivar=ivar, noise="bootstrap")


def test_error_floor_from_the_manifest_is_added_in_quadrature(trained, toy, tmp_path):
    flux, ivar, _ = toy["test"]
    plain = trained.save(tmp_path / "plain", grid=GRID, preprocess=PREPROCESS,
                         provenance=make_provenance(command="pytest", seed=3))
    floored = trained.save(tmp_path / "floored", grid=GRID, preprocess=PREPROCESS,
                           provenance=make_provenance(command="pytest", seed=3),
                           extra={"uncertainty": {"floor": {"FEH": 0.07}}})
    a = predict(plain, flux=flux[:50], ivar=ivar[:50])
    b = predict(floored, flux=flux[:50], ivar=ivar[:50])
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_allclose(b.errors[:, 0] ** 2, a.errors[:, 0] ** 2 + 0.07 ** 2, rtol=1e-5)
    np.testing.assert_array_equal(b.errors[:, 1], a.errors[:, 1])  # LOGG has no floor


def test_fit_error_floor_recovers_a_planted_systematic(rng):
    from catalog_tool.train.evaluate import fit_error_floor, robust_scatter

    n = 20000
    err = rng.uniform(0.01, 0.2, n)
    true = rng.normal(size=n)
    pred = true + rng.normal(size=n) * np.sqrt(err ** 2 + 0.05 ** 2)
    f = fit_error_floor(pred=pred, true=true, err=err)
    assert abs(f - 0.05) < 0.005
    assert abs(robust_scatter((pred - true) / np.sqrt(err ** 2 + f ** 2)) - 1) < 1e-3
    assert fit_error_floor(pred=pred, true=true, err=err * 3) == 0.0  # already large enough
