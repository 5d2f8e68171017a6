"""``stxcat report`` on the command line: output, and one-line errors for bad inputs."""

from __future__ import annotations

import json

import fitsio
import numpy as np
import pytest
from click.testing import CliRunner

from catalog_tool.cli import main


def run(*args):
    return CliRunner().invoke(main, ["report", *map(str, args)])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in lines[0]


def test_cli_writes_report(synthetic_vac, tmp_path):
    r = run(synthetic_vac, "--out", tmp_path / "rep", "--all")
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert s["good_only"] is False
    assert r.output.startswith(f"wrote {tmp_path / 'rep' / 'report.html'} and 7 figures: 4000 rows")
    assert f"{s['flag_bad']} FLAG_BAD" in r.output


def test_missing_file(tmp_path):
    assert_one_line_error(run(tmp_path / "nope.fits", "--out", tmp_path / "r"), "nope.fits", "no such file")


def test_not_fits(tmp_path):
    p = tmp_path / "vac.fits"
    p.write_text("hello\n")
    assert_one_line_error(run(p, "--out", tmp_path / "r"), "vac.fits", "not a FITS file")


def test_fits_without_vac_table(tmp_path):
    p = tmp_path / "img.fits"
    fitsio.write(str(p), np.zeros((3, 4), np.float32))
    assert_one_line_error(run(p, "--out", tmp_path / "r"), "img.fits", "STELLAR_PARAMS")


def test_table_missing_vac_columns(tmp_path):
    p = tmp_path / "other.fits"
    data = np.zeros(3, dtype=[("TARGETID", "i8"), ("FEH", "f4")])
    fitsio.write(str(p), data, extname="STELLAR_PARAMS")
    assert_one_line_error(run(p, "--out", tmp_path / "r"), "not an stxcat VAC", "FLAGS")
    assert not (tmp_path / "r").exists()  # nothing written for a bad input


def test_out_is_a_file(synthetic_vac, tmp_path):
    out = tmp_path / "file"
    out.write_text("x")
    r = run(synthetic_vac, "--out", out)
    assert r.exit_code == 2  # click's usage error: --out must be a folder
    assert "Traceback" not in r.output


def test_bad_truth(synthetic_vac, tmp_path):
    assert_one_line_error(run(synthetic_vac, "--out", tmp_path / "r", "--truth", tmp_path / "t.fits"),
                          "t.fits", "no such file")
    t = tmp_path / "t2.fits"
    fitsio.write(str(t), np.zeros(2, dtype=[("NAME", "i8"), ("FEH", "f4")]))
    assert_one_line_error(run(synthetic_vac, "--out", tmp_path / "r", "--truth", t), "TARGETID", "OBSID")


@pytest.mark.parametrize("args", [[], ["--out"]])
def test_usage_errors(args, synthetic_vac):
    r = run(synthetic_vac, *args)
    assert r.exit_code == 2 and "Traceback" not in r.output
