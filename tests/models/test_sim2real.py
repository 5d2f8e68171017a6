"""The sim-to-real recipe on a toy library: held-out stars never train, copies stay together,
the held-out report is computed right, and the whole recipe runs (tiny networks)."""

from __future__ import annotations

import numpy as np
import pytest

from catalog_tool.preprocess.grid import ModelGrid
from catalog_tool.preprocess.settings import PreprocessSettings
from catalog_tool.sim.library import LibraryModel, StellarLibrary, is_heldout
from catalog_tool.sim.randomise import DomainRandomisation
from catalog_tool.sim.specmodel import SpectralModel, air_to_vacuum
from catalog_tool.train.library_sets import heldout_report, library_set
from catalog_tool.train.sim2real import Sim2RealConfig, build_sets, run_recipe

GRID = ModelGrid()
SETTINGS = PreprocessSettings()


@pytest.fixture(scope="module")
def toy_model():
    """Twelve emulated stars as a 'library' (ids 1-12: 5 and 10 are held out)."""
    rng = np.random.default_rng(5)
    n = 12
    labels = np.column_stack([rng.uniform(4200, 7000, n), rng.uniform(1.5, 4.6, n), rng.uniform(-2.0, 0.3, n)])
    wave = air_to_vacuum(3540.5 + 0.9 * np.arange(4300))
    emu = SpectralModel.load_default()
    flux = emu.render(teff=labels[:, 0], logg=labels[:, 1], feh=labels[:, 2], alphafe=np.zeros(n), wave=wave)
    lib = StellarLibrary(name="toy", ids=np.arange(1, n + 1), labels=labels, wave=wave, flux=flux, fwhm=2.5,
                         source="toy library")
    return LibraryModel(lib)


def test_library_set_rows_know_their_star(toy_model, tmp_path):
    rows = np.array([0, 3, 7])
    for inst in ("desi", "lamost"):
        s = library_set(tmp_path / inst, model=toy_model, rows=rows, instrument=inst, names=["FEH", "TEFF", "ALPHAFE"],
                        grid=GRID, settings=SETTINGS, seed=3, copies=3, snr_range=(50, 50))
        assert not s.failures
        assert sorted(np.unique(s.star_id).tolist()) == [1, 4, 8]
        assert np.bincount(s.star_id)[[1, 4, 8]].tolist() == [3, 3, 3] or len(s) < 9  # a dead arm may drop one
        lab = toy_model.library.labels
        for j, sid in enumerate(s.star_id):
            assert s.data.labels["FEH"][j] == lab[sid - 1, 2] and s.data.labels["TEFF"][j] == lab[sid - 1, 0]
        assert np.all(np.isnan(s.data.labels["ALPHAFE"]))  # the library gives no [alpha/Fe]


def test_heldout_report_splits_and_z_scores():
    true = {"FEH": np.array([-2.0, -1.5, -0.5, 0.0, 0.2, -0.2]), "LOGG": np.array([2.0, 4.5, 2.5, 4.4, 4.0, 3.0])}
    pred = np.column_stack([true["FEH"] + np.array([0.1, -0.1, 0.2, -0.2, 0.0, 0.05]), true["LOGG"]])
    err = np.full((6, 2), 0.1)
    rows = heldout_report(pred=pred, err=err, true=true, label_names=["FEH", "LOGG"])
    by = {(r["label"], r["subset"]): r for r in rows}
    assert by[("FEH", "[Fe/H] < -1")]["n"] == 2 and by[("FEH", "logg < 3.5")]["n"] == 3
    assert by[("FEH", "all")]["bias"] == pytest.approx(np.mean([0.1, -0.1, 0.2, -0.2, 0.0, 0.05]))
    r = np.array([0.1, -0.1, 0.2, -0.2, 0.0, 0.05])
    mad = 1.4826 * np.median(np.abs(r - np.median(r)))
    assert by[("FEH", "all")]["scatter"] == pytest.approx(mad)
    assert by[("FEH", "all")]["z_scatter"] == pytest.approx(mad / 0.1)
    assert by[("LOGG", "all")]["scatter"] == 0.0


@pytest.fixture(scope="module")
def tiny_config():
    return Sim2RealConfig(copies_lamost=3, copies_desi=2, n_emu_lamost=40, n_emu_desi=30, heldout_copies=2,
                          randomise=DomainRandomisation(), seed=7)


def test_build_sets_never_train_on_heldout_stars(toy_model, tiny_config, tmp_path):
    sets = build_sets(tmp_path, model=toy_model, config=tiny_config, grid=GRID, settings=SETTINGS)
    for key in ("pretrain", "finetune"):
        s = sets[key]
        real_ids = np.unique(s.star_id[s.real])
        assert real_ids.size == 10 and not is_heldout(real_ids).any()
        assert (~s.real).sum() > 0 and np.all(s.groups[~s.real] < 0)
        assert len(np.unique(s.groups[~s.real])) == (~s.real).sum()  # each emulated star its own group
        assert np.array_equal(s.groups[s.real], s.star_id[s.real])
    for key in ("heldout_desi", "heldout_lamost"):
        ids = np.unique(sets[key].star_id)
        teff = toy_model.library.labels[ids - 1, 0]
        assert is_heldout(ids).all() and np.all((teff > 3800) & (teff < 7500))
        assert np.allclose(np.median(sets[key].data.snr), 30, rtol=0.5)
    # cached: a second call reads the same sets back
    again = build_sets(tmp_path, model=toy_model, config=tiny_config, grid=GRID, settings=SETTINGS)
    assert np.array_equal(again["pretrain"].data.flux, sets["pretrain"].data.flux)


def test_recipe_runs_end_to_end_with_tiny_networks(toy_model, tiny_config, tmp_path):
    r = run_recipe(tmp_path, model=toy_model, config=tiny_config, grid=GRID, settings=SETTINGS, ensemble=2,
                   hidden=(16, 8), epochs=2, ft_epochs=2, methods=("zero-shot", "lora"), batch_size=16)
    assert r["chosen"] in ("zero-shot", "lora")
    assert set(r["floor"]) == {"FEH", "ALPHAFE", "TEFF", "LOGG"} and all(v >= 0 for v in r["floor"].values())
    assert "stars not used for training" in r["floor_fitted_on"]
    desi = r["final_eval"]["heldout_desi"]
    assert {x["label"] for x in desi} == {"FEH", "TEFF", "LOGG"}  # no ALPHAFE reference for library stars
    assert all(x["n"] > 0 for x in desi if x["subset"] == "all")
    assert r["bundle"].manifest["uncertainty"]["floor"] == r["floor"]
