"""Metrics and calibration tables on planted residuals."""

from __future__ import annotations

import numpy as np
import pytest

from catalog_tool.train.evaluate import (calibration_table, format_markdown, metrics_table, regression_metrics,
                                         robust_scatter)


def test_robust_scatter_is_scaled_mad_and_ignores_outliers(rng):
    r = rng.normal(0.3, 0.1, 20000)
    r[:200] = 50.0  # 1 % wild outliers
    assert robust_scatter(r) == pytest.approx(0.1, rel=0.04)
    assert robust_scatter(np.array([1.0, 2.0, 4.0])) == pytest.approx(1.4826 * 1.0)
    assert np.isnan(robust_scatter(np.array([np.nan])))


def test_regression_metrics_on_planted_bias():
    true = np.array([0.0, 1.0, 2.0, 3.0, np.nan])
    pred = np.array([0.5, 1.5, 2.5, 3.5, 1.0])
    m = regression_metrics(pred=pred, true=true)
    assert m["n"] == 4 and m["n_missing"] == 1
    assert m["bias"] == pytest.approx(0.5) and m["mae"] == pytest.approx(0.5) and m["scatter"] == pytest.approx(0.0)
    assert m["r2"] == pytest.approx(1 - 4 * 0.25 / 5.0)


def test_table_splits_at_feh_minus_one(rng):
    feh = np.concatenate([rng.uniform(-2.5, -1.01, 30), rng.uniform(-1.0, 0.4, 70)])
    true = np.stack([feh, rng.normal(5000, 500, 100)], axis=1)
    pred = true + np.where(feh < -1, 0.2, -0.05)[:, None] * [1.0, 100.0]
    rows = metrics_table(pred=pred, true=true, label_names=["FEH", "TEFF"], feh_ref=feh)
    by = {(r["label"], r["subset"]): r for r in rows}
    assert by[("FEH", "[Fe/H] < -1")]["n"] == 30 and by[("FEH", "[Fe/H] >= -1")]["n"] == 70
    assert by[("FEH", "[Fe/H] < -1")]["bias"] == pytest.approx(0.2)
    assert by[("TEFF", "[Fe/H] >= -1")]["bias"] == pytest.approx(-5.0)
    text = format_markdown(rows, columns=["label", "subset", "n", "bias"])
    assert "| FEH | [Fe/H] < -1 | 30 | 0.2 |" in text


def test_calibration_spread_is_one_for_honest_errors(rng):
    n = 40000
    snr = rng.uniform(5, 100, n)
    err = 1.0 / snr
    true = rng.normal(size=(n, 1))
    pred = true + rng.normal(size=(n, 1)) * err[:, None]
    rows = calibration_table(pred=pred, true=true, err=err[:, None] * [2.0], snr=snr, label_names=["FEH"],
                             snr_edges=(0, 20, 50, np.inf))
    assert [r["n"] for r in rows] == [int(((snr >= a) & (snr < b)).sum()) for a, b in ((0, 20), (20, 50), (50, np.inf))]
    # The errors were doubled: z spread is 1/2 in every bin.
    assert all(r["z_scatter"] == pytest.approx(0.5, rel=0.05) for r in rows)
