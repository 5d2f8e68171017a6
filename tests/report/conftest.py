"""Fixtures of the report tests: seeded synthetic VACs, one report of each, a tiny bundle."""

from __future__ import annotations

import pytest

from report_factory import write_synthetic_vac
from tiny_bundle_factory import make_tiny_bundle


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic_vac(tmp_path_factory) -> str:
    """A 4,000-row VAC (scatter-plot regime)."""
    return write_synthetic_vac(tmp_path_factory.mktemp("vac") / "vac.fits", 4000, seed=5)


@pytest.fixture(scope="session")
def large_vac(tmp_path_factory) -> str:
    """A 12,000-row VAC (density-plot regime)."""
    return write_synthetic_vac(tmp_path_factory.mktemp("vac_large") / "vac.fits", 12000, seed=6)


@pytest.fixture(scope="session")
def synthetic_report(synthetic_vac, tmp_path_factory):
    from catalog_tool.report import make_report

    return make_report(synthetic_vac, tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> str:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny", seed=17, command="tests/report")
