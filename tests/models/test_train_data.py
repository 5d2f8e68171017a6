"""Labelled training sets: matching spectra to a label table, preprocessing once, the cache."""

from __future__ import annotations

import csv
import os

import fitsio
import numpy as np
import pytest

from catalog_tool.errors import ConfigError
from catalog_tool.preprocess.grid import ModelGrid
from catalog_tool.preprocess.settings import PreprocessSettings
from catalog_tool.sim.lamost import simulate_lamost
from catalog_tool.train.data import LabelledSet, load_labelled

NAMES = ["FEH", "TEFF"]


@pytest.fixture(scope="module")
def lamost_sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("lam")
    return simulate_lamost(out, n=16, seed=11, layout="mixed", galaxy_fraction=0.15, qso_fraction=0.0)


def _load(sim, labels_path, **kw):
    return load_labelled([os.path.join(sim.out, "spectra")], labels_path=labels_path, names=NAMES,
                         grid=ModelGrid(), settings=PreprocessSettings(), **kw)


def test_match_by_id_keeps_labelled_stars_with_their_labels(lamost_sim):
    truth = fitsio.read(lamost_sim.truth)
    s, failed = _load(lamost_sim, lamost_sim.truth)
    assert failed == []
    stars = truth[np.char.strip(truth["KIND"].astype(str)) == "star"]
    assert sorted(s.targetid) == sorted(stars["TARGETID"])  # galaxies have no labels: left out
    by_id = {int(t): i for i, t in enumerate(stars["TARGETID"])}
    rows = [by_id[int(t)] for t in s.targetid]
    np.testing.assert_allclose(s.labels["FEH"], stars["FEH"][rows])
    np.testing.assert_allclose(s.labels["TEFF"], stars["TEFF"][rows])
    assert s.flux.shape == (len(s), ModelGrid().npix) and np.all(np.isfinite(s.flux))


def test_csv_by_position_gives_the_same_set(lamost_sim, tmp_path):
    truth = fitsio.read(lamost_sim.truth)
    path = tmp_path / "labels.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ra", "dec", "feh", "teff"])  # lower case, no id column: matched on the sky
        for r in truth[::-1]:
            w.writerow([repr(float(r["RA"])), repr(float(r["DEC"])), r["FEH"], r["TEFF"]])
    a, _ = _load(lamost_sim, lamost_sim.truth)
    b, _ = _load(lamost_sim, str(path))
    order = np.argsort(b.targetid)
    np.testing.assert_array_equal(np.sort(a.targetid), b.targetid[order])
    np.testing.assert_allclose(a.labels["FEH"][np.argsort(a.targetid)], b.labels["FEH"][order], rtol=1e-6)


def test_cache_round_trip_and_stale_cache_refused(lamost_sim, tmp_path):
    cache = str(tmp_path / "set.npz")
    a, _ = _load(lamost_sim, lamost_sim.truth, cache=cache)
    b, _ = _load(lamost_sim, lamost_sim.truth, cache=cache)
    np.testing.assert_array_equal(a.flux, b.flux)
    assert b.key == a.key and len(a.key) == 64
    assert isinstance(LabelledSet.load(cache), LabelledSet)
    with pytest.raises(ConfigError, match="made from other inputs"):
        load_labelled([os.path.join(lamost_sim.out, "spectra")], labels_path=lamost_sim.truth, names=["FEH"],
                      grid=ModelGrid(), settings=PreprocessSettings(), cache=cache)


def test_unmatched_table_and_missing_column_are_errors(lamost_sim, tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("TARGETID,FEH,TEFF\n1,0.0,5000\n")
    with pytest.raises(ConfigError, match="matches the label table"):
        _load(lamost_sim, str(path))
    path.write_text("TARGETID,FEH\n1,0.0\n")
    with pytest.raises(ConfigError, match="no column"):
        _load(lamost_sim, str(path))
