"""Fixtures of the pipeline tests: a tiny model bundle, small simulated releases, a reference VAC.

Everything is session-scoped and seeded: the bundle is an untrained-quality 2-member MLP (what is
tested here is the plumbing, not the accuracy), built in about two seconds.
"""

from __future__ import annotations

import os
import numpy as np
import pytest

from pipeline_helpers import LABELS, run_annotate


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> str:
    """Path of a 2-member multi-label bundle on the default grid and preprocessing."""
    from catalog_tool.models.bundle import make_provenance, save_bundle
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings
    from catalog_tool.train.loop import TrainConfig
    from catalog_tool.train.pretrain import pretrain
    from catalog_tool.train.synthetic import toy_labels, toy_spectra

    rng = np.random.default_rng(11)
    labels = toy_labels(300, rng=rng)
    flux, _ = toy_spectra(labels=labels, rng=rng)
    ens = pretrain(flux=flux, labels={k: labels[k] for k in LABELS}, hidden=(32, 16), heads="multi-label",
                   ensemble=2, config=TrainConfig(epochs=2))
    path = tmp_path_factory.mktemp("bundle") / "tiny"
    save_bundle(path, members=ens.members, config=ens.config, heads=ens.heads, labels=ens.labels,
                grid=ModelGrid(), preprocess=PreprocessSettings(),
                provenance=make_provenance(command="tests/pipeline", seed=11))
    return os.fspath(path)


@pytest.fixture(scope="session")
def desi_release(tmp_path_factory):
    """A simulated DESI release: 3 pixels x 30 fibres (stars, galaxies, QSOs, sky, unassigned)."""
    from catalog_tool.sim.desi import simulate_desi

    out = tmp_path_factory.mktemp("desi") / "rel"
    return simulate_desi(out, pixels=3, per_pixel=30, seed=3, resolution=False)


@pytest.fixture(scope="session")
def lamost_release(tmp_path_factory):
    """A simulated LAMOST folder of 8 single-spectrum files (mixed DR1/DR7/DR10 layouts)."""
    from catalog_tool.sim.lamost import simulate_lamost

    out = tmp_path_factory.mktemp("lamost") / "lam"
    return simulate_lamost(out, n=8, seed=2)


@pytest.fixture(scope="session")
def reference_vac(tmp_path_factory, desi_release, tiny_bundle) -> str:
    """The DESI release annotated with the default (threads) scheduler, partitions of one pixel."""
    out = tmp_path_factory.mktemp("ref") / "vac.fits"
    run_annotate([desi_release.out], out, tiny_bundle, partition_size=30)
    return os.fspath(out)




@pytest.fixture(scope="session")
def other_bundle(tmp_path_factory) -> str:
    """A second, different bundle (one member) to test that a resume refuses a changed model."""
    from catalog_tool.models.bundle import make_provenance, save_bundle
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings
    from catalog_tool.train.loop import TrainConfig
    from catalog_tool.train.pretrain import pretrain
    from catalog_tool.train.synthetic import toy_labels, toy_spectra

    rng = np.random.default_rng(12)
    labels = toy_labels(64, rng=rng)
    flux, _ = toy_spectra(labels=labels, rng=rng)
    ens = pretrain(flux=flux, labels={k: labels[k] for k in LABELS}, hidden=(8,), heads="multi-label",
                   ensemble=1, config=TrainConfig(epochs=1))
    path = tmp_path_factory.mktemp("bundle") / "other"
    save_bundle(path, members=ens.members, config=ens.config, heads=ens.heads, labels=ens.labels,
                grid=ModelGrid(), preprocess=PreprocessSettings(),
                provenance=make_provenance(command="tests/pipeline", seed=12))
    return os.fspath(path)


@pytest.fixture(scope="session")
def desi_release6(tmp_path_factory):
    """Six pixels x 40 fibres: enough partitions (one pixel each) to kill a run in the middle."""
    from catalog_tool.sim.desi import simulate_desi

    out = tmp_path_factory.mktemp("desi6") / "rel"
    return simulate_desi(out, pixels=6, per_pixel=40, seed=6, resolution=False, checksum=False)
