"""Tests of the Milky-Way-like label sampler (catalog_tool.sim.population)."""

from __future__ import annotations

import numpy as np
import pytest

from catalog_tool.errors import ConfigError
from catalog_tool.sim.population import LIMITS, sample_labels
from catalog_tool.sim.specmodel import SpectralModel


@pytest.fixture(scope="module")
def pop():
    return sample_labels(40_000, rng=np.random.default_rng(7), return_components=True)


def test_deterministic_and_seed_dependent():
    a = sample_labels(500, rng=np.random.default_rng(3))
    b = sample_labels(500, rng=np.random.default_rng(3))
    c = sample_labels(500, rng=np.random.default_rng(4))
    assert set(a) == {"TEFF", "LOGG", "FEH", "ALPHAFE"}
    for k in a:
        assert a[k].shape == (500,) and a[k].dtype == np.float64
        assert np.array_equal(a[k], b[k])
        assert not np.array_equal(a[k], c[k])


def test_within_limits_and_model_domain(pop):
    dom = SpectralModel.load_default().domain
    for k, (lo, hi) in LIMITS.items():
        assert pop[k].min() >= lo and pop[k].max() <= hi
        assert dom[k][0] <= lo and hi <= dom[k][1]


def test_metallicity_distribution(pop):
    feh = pop["FEH"]
    assert -0.35 < np.median(feh) < -0.05
    assert 0.05 < np.mean(feh < -1.0) < 0.15
    # The metal-poor tail reaches the model limit, without a pile-up at it.
    assert 0.003 < np.mean(feh < -2.0) < 0.03
    assert feh.min() > -2.5 - 1e-9 and np.mean(feh <= -2.499) < 0.001


def test_alpha_feh_anticorrelation_and_thick_disc(pop):
    feh, alpha = pop["FEH"], pop["ALPHAFE"]
    assert np.corrcoef(feh, alpha)[0, 1] < -0.5
    assert 0.2 < np.median(alpha[feh < -1.0]) < 0.4
    assert abs(np.median(alpha[feh > -0.1])) < 0.08
    # Two sequences at intermediate metallicity: high-alpha (thick disc) and low-alpha (thin).
    mid = (feh > -0.7) & (feh < -0.3)
    assert 0.15 < np.mean(alpha[mid] > 0.17) < 0.75
    assert np.median(alpha[mid & (pop["COMPONENT"] == 1)]) > np.median(alpha[mid & (pop["COMPONENT"] == 0)]) + 0.1


def test_teff_logg_loci(pop):
    teff, logg = pop["TEFF"], pop["LOGG"]
    dwarfs, giants = logg > 4.0, logg < 3.0
    assert 0.4 < dwarfs.mean() < 0.7 and 0.15 < giants.mean() < 0.4
    assert np.median(teff[giants]) < np.median(teff[dwarfs]) - 400
    # Red giant branch: hotter at higher gravity; no hot low-gravity stars.
    rgb = pop["STAGE"] == 2
    assert np.corrcoef(logg[rgb], teff[rgb])[0, 1] > 0.7
    assert np.mean((logg < 2.0) & (teff > 5500)) < 0.002
    # Main sequence: gravity falls with Teff.
    ms = pop["STAGE"] == 0
    assert np.corrcoef(logg[ms], teff[ms])[0, 1] < -0.5


def test_bad_n():
    assert sample_labels(0, rng=np.random.default_rng(1))["TEFF"].shape == (0,)
    with pytest.raises(ConfigError):
        sample_labels(-1, rng=np.random.default_rng(1))
