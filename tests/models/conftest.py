"""Fixtures of the model tests: a seeded toy set and one tiny ensemble trained once per session."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from catalog_tool.models.bundle import make_provenance
from catalog_tool.train.loop import TrainConfig
from catalog_tool.train.pretrain import pretrain
from catalog_tool.train.synthetic import toy_labels, toy_spectra

from toy_model_settings import GRID, HIDDEN, NPIX, PREPROCESS  # noqa: F401


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def toy():
    """2,000 training spectra (S/N 20-100) and 600 test spectra, NPIX pixels."""
    rng = np.random.default_rng(5)
    labels = toy_labels(2600, rng=rng)
    snr = rng.uniform(20.0, 100.0, 2600)
    flux, ivar = toy_spectra(labels=labels, npix=NPIX, snr=snr, rng=rng)
    tr, te = slice(0, 2000), slice(2000, None)
    return {"train": (flux[tr], ivar[tr], {k: v[tr] for k, v in labels.items()}),
            "test": (flux[te], ivar[te], {k: v[te] for k, v in labels.items()})}


@pytest.fixture(scope="session")
def trained(toy):
    """A 3-member per-label ensemble for FEH and LOGG, trained for 8 epochs (a few seconds)."""
    torch.set_num_threads(1)
    flux, _, labels = toy["train"]
    return pretrain(flux=flux, labels=labels, names=["FEH", "LOGG"], hidden=HIDDEN, ensemble=3,
                    config=TrainConfig(epochs=8, lr=2e-3, batch_size=64, seed=3, device="cpu"))


@pytest.fixture(scope="session")
def saved(trained, tmp_path_factory):
    """The trained ensemble written as a bundle (do not modify: copy it first)."""
    path = tmp_path_factory.mktemp("bundles") / "toy"
    return trained.save(path, grid=GRID, preprocess=PREPROCESS,
                        provenance=make_provenance(command="pytest", seed=3, training_data={"toy": 2000}))
