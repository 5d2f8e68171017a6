"""annotate --format parquet|hats and stxcat export: the same rows and metadata as the FITS VAC,
export equal to annotate --format, ERRORS carried with exit status 3, one-line errors."""

from __future__ import annotations

import os
import sys

import lsdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from catalog_tool.cli import EXIT_SOME_FILES_FAILED, main
from catalog_tool.errors import ConfigError
from catalog_tool.pipeline.run import FITS_IN_WORK_DIR
from catalog_tool.vac import hats as H
from catalog_tool.vac import parquet as P
from catalog_tool.vac import write as w
from pipeline_helpers import assert_same_rows, run_annotate


def _sorted(t: np.ndarray) -> np.ndarray:
    return t[np.lexsort((t["PROGRAM"], t["SURVEY"], t["TARGETID"]))]


def _invoke(*args):
    return CliRunner().invoke(main, [os.fspath(a) for a in args])


@pytest.fixture(scope="module")
def parquet_run(tmp_path_factory, desi_release, tiny_bundle):
    out = tmp_path_factory.mktemp("annotate-pq") / "vac.parquet"
    summary = run_annotate([desi_release.out], out, tiny_bundle, partition_size=30, format="parquet")
    return out, summary


def test_annotate_parquet_has_the_rows_of_the_fits_run(parquet_run, reference_vac):
    out, summary = parquet_run
    got = P.read_parquet(out)
    assert summary.rows == len(got) == len(w.read_vac(reference_vac)) > 0
    assert_same_rows(got, w.read_vac(reference_vac))
    # the FITS VAC it was exported from is kept in the work dir
    assert_same_rows(w.read_vac(f"{out}.work/{FITS_IN_WORK_DIR}"), got)
    prov = P.read_parquet_provenance(out)
    assert prov["model_name"] == "tiny" and prov["extra"][0][:2] == ["DEVICE", "cpu"]
    assert P.read_parquet_errors(out) == []


def test_export_equals_annotate_format(parquet_run, tmp_path):
    out, _ = parquet_run
    fits = f"{out}.work/{FITS_IN_WORK_DIR}"
    res = _invoke("export", fits, tmp_path / "again.parquet", "--format", "parquet")
    assert res.exit_code == 0, res.output
    assert "ERRORS rows carried over" in res.output
    assert_same_rows(P.read_parquet(out), P.read_parquet(tmp_path / "again.parquet"))  # NaN == NaN
    a, b = pq.read_schema(out), pq.read_schema(tmp_path / "again.parquet")
    assert a.equals(b, check_metadata=True)  # provenance and errors included


def test_annotate_hats_equals_export_and_the_fits_rows(tmp_path, desi_release, tiny_bundle, reference_vac):
    out = tmp_path / "vac_hats"
    res = _invoke("annotate", desi_release.out, "--out", f"{out}/", "--format", "hats", "--model", tiny_bundle,
                  "--partition-size", "30", "--no-progress")
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(tmp_path)) == ["vac_hats", "vac_hats.work"]  # work dir beside, not inside
    rows = _sorted(P.arrow_to_table(pq.read_table(os.path.join(out, "dataset"), columns=list(w.dm.names()))))
    assert_same_rows(rows, _sorted(w.read_vac(reference_vac)))
    assert len(lsdb.read_hats(out).compute()) == len(rows)
    fits = tmp_path / "vac_hats.work" / FITS_IN_WORK_DIR
    res = _invoke("export", fits, tmp_path / "exported", "--format", "hats", "--no-progress")
    assert res.exit_code == 0, res.output
    exported = _sorted(P.arrow_to_table(pq.read_table(tmp_path / "exported" / "dataset",
                                                      columns=list(w.dm.names()))))
    assert_same_rows(exported, rows)
    assert (open(out / "partition_info.csv").read() == open(tmp_path / "exported" / "partition_info.csv").read())


def test_failed_files_are_carried_and_exit_3(tmp_path, desi_release, tiny_bundle):
    import shutil

    rel = tmp_path / "rel"
    shutil.copytree(desi_release.out, rel)
    garbage = rel / "healpix" / "main" / "bright" / "999" / "99999" / "coadd-main-bright-99999.fits"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"\x00" * 5000)
    for fmt, out in (("parquet", tmp_path / "v.parquet"), ("hats", tmp_path / "v_hats")):
        res = _invoke("annotate", rel, "--out", out, "--format", fmt, "--model", tiny_bundle, "--no-progress")
        assert res.exit_code == EXIT_SOME_FILES_FAILED, res.output
        errors = P.read_parquet_errors(out) if fmt == "parquet" else H.read_hats_errors(out)
        assert [os.path.basename(f) for f, _ in errors] == [garbage.name], fmt


def test_missing_extra_is_one_line_before_the_run(tmp_path, desi_release, tiny_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "hats_import", None)  # import hats_import now fails
    out = tmp_path / "cat"
    res = _invoke("annotate", desi_release.out, "--out", out, "--format", "hats", "--model", tiny_bundle,
                  "--no-progress")
    assert res.exit_code == 1
    line = res.output.strip()
    assert "\n" not in line and "pip install 'stxcat[hats]'" in line and "hats_import" in line
    assert os.listdir(tmp_path) == []  # no work dir: nothing ran
    vac = tmp_path / "v.fits"
    w.write_vac(vac, w.dm.empty_table(2), provenance=w.Provenance("m", "0" * 64, "c", "i"), errors=[])
    res = _invoke("export", vac, out, "--format", "hats")
    assert res.exit_code == 1 and "pip install 'stxcat[hats]'" in res.output and res.output.count("\n") == 1


@pytest.mark.parametrize("case", ["not-a-vac", "missing", "exists", "bad-format"])
def test_export_bad_input_is_one_line(case, tmp_path, reference_vac):
    vac, out = reference_vac, tmp_path / "out.parquet"
    args = ["--format", "parquet"]
    if case == "not-a-vac":
        vac = tmp_path / "x.fits"
        vac.write_text("SIMPLE = nonsense\n")
    elif case == "missing":
        vac = tmp_path / "nothere.fits"
    elif case == "exists":
        out.write_bytes(b"keep")
    else:
        args = ["--format", "csv"]
    res = _invoke("export", vac, out, *args)
    if case == "bad-format":
        assert res.exit_code == 2 and "csv" in res.output
        return
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: ") and res.output.count("\n") == 1, res.output
    assert (case == "exists") == out.exists()
    if case == "exists":
        assert out.read_bytes() == b"keep" and "--overwrite" in res.output


def test_config_refuses_per_pixel_with_parquet_and_a_bad_format(tmp_path):
    from catalog_tool.config import build_config

    with pytest.raises(ConfigError, match="--per-pixel writes FITS files"):
        build_config(inputs=("x",), out=os.fspath(tmp_path / "v.parquet"), format="parquet", per_pixel=True)
    with pytest.raises(ConfigError, match="format must be one of fits, parquet, hats"):
        build_config(inputs=("x",), out=os.fspath(tmp_path / "v"), format="csv")
    # a folder is a valid HATS OUT (replaced with --overwrite), not a valid FITS one
    cfg = build_config(inputs=("x",), out=os.fspath(tmp_path) + "/", format="hats")
    assert cfg.resolved_work_dir == os.fspath(tmp_path) + ".work"
    with pytest.raises(ConfigError, match="is a directory"):
        build_config(inputs=("x",), out=os.fspath(tmp_path), format="fits")
