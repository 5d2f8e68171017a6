"""Fixtures of the vac tests: external FITS tools required, not optional."""

from __future__ import annotations

import shutil

import pytest


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        # an error, not a skip: CI installs it (.ci/run), so a missing tool is a broken setup
        pytest.fail(f"{tool} not found: install {tool} (Debian package): apt-get install {tool}",
                    pytrace=False)
    return path


@pytest.fixture(scope="session")
def fitsverify() -> str:
    return _require("fitsverify")


@pytest.fixture(scope="session")
def stilts() -> str:
    return _require("stilts")
