"""The parts of benchmarks/bench_peers.py that need no optional package: the training arrays it
builds from the recipe's sets, the ridge and kNN baselines, The Cannon's label table and the tables.
(The Cannon itself is the optional ``peers`` extra and is exercised by the benchmark only.)"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bp():
    spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "benchmarks" / "bench_peers.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def _linear_set(rng, n, npix=60):
    """Flux linear in four labels with distinct pixel signatures and very different label scales."""
    labels = {"FEH": rng.uniform(-2.5, 0.5, n), "ALPHAFE": rng.uniform(-0.1, 0.4, n),
              "TEFF": rng.uniform(4000, 7000, n), "LOGG": rng.uniform(1.0, 4.8, n)}
    sig = rng.normal(size=(4, npix)) * np.array([[0.05], [0.08], [0.03], [0.04]])
    scaled = np.stack([labels["FEH"] / 1.5, labels["ALPHAFE"] / 0.25, (labels["TEFF"] - 5500) / 1500,
                       (labels["LOGG"] - 3) / 1.5], 1)
    flux = 1.0 + scaled @ sig + rng.normal(scale=0.002, size=(n, npix))
    return flux, labels


def test_ridge_recovers_each_label_and_skips_unknown_rows(bp, rng):
    flux, labels = _linear_set(rng, 400)
    labels["ALPHAFE"][50:150] = np.nan        # like the real library stars
    val = np.arange(400) % 5 == 0
    model = bp.fit_ridge(flux=flux, labels=labels, val=val)
    assert set(model.penalty) == set(bp.LABELS) and all(p in bp.RIDGE_PENALTIES for p in model.penalty.values())
    pred = bp.predict_ridge(model, flux=flux[:100])
    assert np.all(np.isfinite(pred))      # ALPHAFE is predicted for every star, known or not
    for j, name in enumerate(bp.LABELS):
        truth = labels[name][:100]
        ok = np.isfinite(truth)
        span = np.ptp(labels[name][np.isfinite(labels[name])])
        assert np.median(np.abs(pred[ok, j] - truth[ok])) < 0.02 * span, name


def test_ridge_generalises_to_new_spectra_of_the_same_relation(bp):
    rng = np.random.default_rng(11)
    flux, labels = _linear_set(rng, 500)
    train, test = np.arange(500) < 400, np.arange(500) >= 400
    model = bp.fit_ridge(flux=flux[train], labels={k: v[train] for k, v in labels.items()})
    pred = bp.predict_ridge(model, flux=flux[test])
    assert np.median(np.abs(pred[:, bp.LABELS.index("TEFF")] - labels["TEFF"][test])) < 60
    assert np.median(np.abs(pred[:, bp.LABELS.index("FEH")] - labels["FEH"][test])) < 0.06
    # the columns follow LABELS: TEFF predictions are not in the FEH column
    assert np.median(np.abs(pred[:, bp.LABELS.index("FEH")] - labels["TEFF"][test])) > 1000


def test_neighbours_match_brute_force_nearest_first(bp, rng):
    train = rng.normal(size=(50, 7))
    query = rng.normal(size=(9, 7))
    nn = bp._neighbours(train, query, 4, chunk=4)
    d = ((query[:, None, :] - train[None]) ** 2).sum(-1)
    assert np.array_equal(nn, np.argsort(d, axis=1)[:, :4])


def test_knn_means_known_neighbour_labels_and_picks_k(bp, rng):
    flux, labels = _linear_set(rng, 300)
    labels["ALPHAFE"][::2] = np.nan
    val = np.arange(300) % 4 == 0
    model = bp.fit_knn(flux=flux, labels=labels, val=val)
    assert set(model.k) == set(bp.LABELS) and all(k in bp.KNN_KS for k in model.k.values())
    # with k = 1 each training spectrum is its own neighbour; a NaN label stays NaN
    one = bp.KNNModel(flux=model.flux, labels=model.labels, k={n: 1 for n in bp.LABELS})
    pred = bp.predict_knn(one, flux=flux[:20])
    assert np.allclose(pred[:, bp.LABELS.index("TEFF")], labels["TEFF"][:20])
    assert np.array_equal(np.isnan(pred[:, bp.LABELS.index("ALPHAFE")]), np.isnan(labels["ALPHAFE"][:20]))
    # the mean ignores unknown labels among the neighbours
    lab = np.array([[np.nan], [1.0], [3.0]])
    assert bp._mean_label(lab[:, 0], np.array([[0, 1, 2], [0, 0, 0]]))[0] == 2.0
    assert np.isnan(bp._mean_label(lab[:, 0], np.array([[0, 1, 2], [0, 0, 0]]))[1])


def _training_set(survey, n, *, real, first_group):
    from catalog_tool.train.data import LabelledSet
    from catalog_tool.train.sim2real import TrainingSet

    rng = np.random.default_rng(n)
    alpha = np.full(n, np.nan) if real else rng.uniform(0, 0.4, n)
    data = LabelledSet(flux=rng.normal(1, 0.01, (n, 5)).astype(np.float32), ivar=np.ones((n, 5), np.float32),
                       labels={"FEH": rng.uniform(-2, 0, n), "ALPHAFE": alpha, "TEFF": rng.uniform(4000, 6000, n),
                               "LOGG": rng.uniform(1, 5, n)},
                       targetid=np.arange(n), snr=np.full(n, 30, np.float32), survey=np.array([survey] * n))
    groups = np.arange(first_group, first_group + n) if real else -1 - np.arange(n)
    return TrainingSet(data=data, groups=groups, real=np.full(n, real), star_id=groups if real else np.full(n, -1))


def test_training_arrays_split_by_format_and_keep_emulated_groups_apart(bp):
    from catalog_tool.train.sim2real import concat_sets

    pre = concat_sets([_training_set("lamost", 6, real=False, first_group=0),
                       _training_set("lamost", 4, real=True, first_group=100)], list(bp.LABELS))
    ft = concat_sets([_training_set("main", 5, real=False, first_group=0),
                      _training_set("main", 3, real=True, first_group=100),
                      _training_set("lamost", 2, real=True, first_group=200)], list(bp.LABELS))
    sets = {"pretrain": pre, "finetune": ft}
    desi, lamost = bp.training_arrays(sets, "desi"), bp.training_arrays(sets, "lamost")
    assert (len(desi), len(lamost)) == (8, 12)
    assert np.array_equal(desi.flux, ft.data.flux[:8])
    assert np.array_equal(lamost.flux, np.concatenate([pre.data.flux, ft.data.flux[8:]]))
    # a real star keeps its id as its group; emulated stars of the two sets never share one
    assert set(lamost.groups[6:10]) == {100, 101, 102, 103}
    assert not set(desi.groups[desi.groups < 0]) & set(lamost.groups[lamost.groups < 0])
    assert np.isnan(desi.labels["ALPHAFE"][5:]).all() and np.isfinite(desi.labels["ALPHAFE"][:5]).all()


def test_cannon_labels_fill_only_unknown_alpha_with_the_galactic_mean(bp):
    from catalog_tool.sim.specmodel import alpha_galactic

    arr = bp.Arrays(flux=np.ones((3, 2)), ivar=np.ones((3, 2)), groups=np.arange(3),
                    labels={"FEH": np.array([-2.0, -0.5, 0.2]), "ALPHAFE": np.array([np.nan, 0.05, np.nan]),
                            "TEFF": np.array([4500.0, 5000.0, 6000.0]), "LOGG": np.array([1.5, 2.5, 4.4])})
    lab, filled = bp.cannon_labels(arr, ("TEFF", "LOGG", "FEH", "ALPHAFE"))
    assert np.array_equal(filled, [True, False, True])
    assert np.allclose(lab[:, 3], [alpha_galactic(np.array([-2.0]))[0], 0.05, alpha_galactic(np.array([0.2]))[0]])
    assert np.allclose(lab[:, 0], [4500, 5000, 6000]) and np.allclose(lab[:, 2], [-2.0, -0.5, 0.2])
    lab3, _ = bp.cannon_labels(arr, ("TEFF", "LOGG", "FEH"))
    assert lab3.shape == (3, 3)


def test_tables_show_a_dash_where_a_method_has_no_uncertainties(bp):
    row = {"label": "FEH", "n": 10, "bias": 0.01, "scatter": 0.2, "z_scatter": float("nan"), "median_err": float("nan")}
    res = {"ridge": {"eval": {"heldout_desi": [dict(row, subset=s) for s in bp.SUBSETS]}, "train": {"desi": {
        "spectra": 10, "seconds": 1.5}}, "predict_seconds": 0.5, "predict_spectra": 100}}
    table = bp.accuracy_table(res, "heldout_desi")
    assert "| ridge | FEH | 10 | 0.200 | 0.200 | 0.200 | +0.010 | +0.010 | +0.010 | — | — |" in table
    assert "| ridge | desi 10 | 2 | 200 |" in bp.speed_table(res)
