"""Fixtures of the pipeline tests: a tiny model bundle, small simulated releases, a reference VAC.

Everything is session-scoped and seeded: the bundle is an untrained-quality 2-member MLP (what is
tested here is the plumbing, not the accuracy), built in about two seconds.
"""

from __future__ import annotations

import os

import pytest

from pipeline_helpers import run_annotate
from tiny_bundle_factory import make_tiny_bundle


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> str:
    """Path of a 2-member multi-label bundle on the default grid and preprocessing."""
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny", seed=11, command="tests/pipeline")


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
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "other", seed=12, command="tests/pipeline",
                            n=64, hidden=(8,), ensemble=1, epochs=1)


@pytest.fixture(scope="session")
def desi_release6(tmp_path_factory):
    """Six pixels x 40 fibres: enough partitions (one pixel each) to kill a run in the middle."""
    from catalog_tool.sim.desi import simulate_desi

    out = tmp_path_factory.mktemp("desi6") / "rel"
    return simulate_desi(out, pixels=6, per_pixel=40, seed=6, resolution=False, checksum=False)
