"""Shared test fixtures: the real survey files and seeded random generators."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: Real DESI and LAMOST files, kept beside the project (see ../shared/realdata/README.md).
REALDATA = ROOT.parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def realdata() -> pathlib.Path:
    """Path of ``../shared/realdata``; the tests that need it fail (not skip) when it is absent."""
    assert REALDATA.is_dir(), f"real survey files not found at {REALDATA}"
    return REALDATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20260215)
