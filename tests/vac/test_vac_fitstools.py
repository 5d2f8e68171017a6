"""A VAC passes fitsverify and shows its units, descriptions and UCDs in STILTS (as TOPCAT would).

fitsverify and stilts are Debian packages that CI installs (.ci/run); a missing tool is an error.
"""

from __future__ import annotations

import csv
import io
import re
import subprocess

import numpy as np
import pytest

from catalog_tool.vac import datamodel as dm
from catalog_tool.vac import write as w
from vac_factory import make_columns, provenance


@pytest.fixture(scope="module")
def vac(tmp_path_factory):
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("fitstools") / "vac.fits"
    extra = np.zeros(25, dtype=[("CHI2", "f4")])
    w.write_vac(path, make_columns(25, rng, targetid_pool=10), provenance=provenance(),
                errors=[("release/bad.fits", "truncated"), ("release/dünn.fits", "not FITS")],
                extras={"FIT": extra})
    return path


def _run(*args) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    return proc.stdout + proc.stderr


def test_fitsverify_no_errors_no_warnings(fitsverify, vac):
    out = _run(fitsverify, str(vac))
    m = re.search(r"Verification found (\d+) warning\(s\) and (\d+) error\(s\)", out)
    assert m, out
    assert (int(m.group(1)), int(m.group(2))) == (0, 0), out
    assert "STELLAR_PARAMS" in out and "ERRORS" in out


def test_fitsverify_flags_a_damaged_file(fitsverify, vac, tmp_path):
    """The check above can fail: a truncated copy is reported."""
    bad = tmp_path / "cut.fits"
    bad.write_bytes(vac.read_bytes()[:-2880])
    out = _run(fitsverify, str(bad))
    m = re.search(r"and (\d+) error\(s\)", out)
    assert m is None or int(m.group(1)) > 0, out


def test_stilts_meta_shows_units_descriptions_ucds(stilts, vac):
    out = _run(stilts, "tpipe", "omode=meta", f"in={vac}")
    for c in dm.COLUMNS:
        # "  11: TEFF(Float)/K - effective temperature; NaN if not estimated"
        unit = f"/{c.unit}" if c.unit else ""
        pattern = rf"^\s*\d+: {re.escape(c.name)}\(\w+\){re.escape(unit)} - {re.escape(c.description)}$"
        assert re.search(pattern, out, re.M), f"{c.name} not shown as expected:\n{out}"
    assert "MODELSHA" in out and provenance().model_sha256 in out
    table = _run(stilts, "tpipe", f"in={vac}", "cmd=meta", "ofmt=csv")
    rows = {r["Name"]: r for r in csv.DictReader(io.StringIO(table[table.index("Index"):]))}
    for c in dm.COLUMNS:
        assert rows[c.name]["UCD"] == c.ucd
        assert rows[c.name]["Units"] == c.unit
        if c.null is not None:
            assert rows[c.name]["NULL_VALUE"] == str(c.null)
    errors = _run(stilts, "tpipe", f"in={vac}#2", "ofmt=csv")
    assert "release/bad.fits,truncated" in errors
    assert "release/d\\xfcnn.fits,not FITS" in errors  # non-ASCII kept as an escape
