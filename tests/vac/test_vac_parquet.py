"""Parquet VAC: same rows, types and column metadata as the FITS data model; provenance, errors,
missing values, streaming, atomic writes and bad inputs."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import fitsio
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog_tool.vac import datamodel as dm
from catalog_tool.vac import flags as fl
from catalog_tool.vac import parquet as P
from catalog_tool.vac import write as w
from vac_factory import assert_tables_equal, make_sky_columns, provenance

ERRORS = [("release/healpix/main/dark/100/10016/coadd-main-dark-10016.fits", "truncated: 2880 of 5760 bytes"),
          ("release/b\u00e9.fits", "not a FITS file")]


@pytest.fixture(scope="module")
def fits_vac(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("pq") / "vac.fits"
    cols = make_sky_columns(700, np.random.default_rng(7))
    w.write_vac(path, cols, provenance=provenance(extra=(("DEVICE", "cpu", "inference device"),)),
                errors=ERRORS)
    return os.fspath(path)


@pytest.fixture(scope="module")
def parquet_vac(fits_vac, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("pqout") / "vac.parquet"
    res = P.export_parquet(fits_vac, out, chunk_rows=256)
    assert res.nrows == 700 and res.nerrors == 2 and res.format == "parquet"
    return os.fspath(out)


def test_rows_equal_the_fits_vac(fits_vac, parquet_vac):
    assert_tables_equal(P.read_parquet(parquet_vac), w.read_vac(fits_vac))


def test_schema_follows_the_data_model(parquet_vac):
    schema = pq.read_schema(parquet_vac)
    assert tuple(schema.names) == dm.names()
    want = {"i8": pa.int64(), "i4": pa.int32(), "f4": pa.float32(), "f8": pa.float64(), "?": pa.bool_()}
    for c in dm.COLUMNS:
        f = schema.field(c.name)
        assert f.type == (pa.string() if c.kind == "S" else want[c.dtype]), c.name
        meta = f.metadata
        assert meta[b"unit"].decode() == c.unit and meta[b"ucd"].decode() == c.ucd
        assert meta[b"description"].decode() == c.description
        # only the TNULL columns can hold nulls; they say what their FITS TNULL was
        assert f.nullable == (c.null is not None)
        assert (b"fits_tnull" in meta) == (c.null is not None)
        if c.null is not None:
            assert int(meta[b"fits_tnull"]) == c.null
    assert schema.field("TEFF").metadata[b"unit"] == b"K"
    assert schema.field("TARGET_RA").metadata[b"unit"] == b"deg"


def test_missing_values_nan_for_floats_null_for_tnull_integers(fits_vac, parquet_vac):
    fits = w.read_vac(fits_vac)
    table = pq.read_table(parquet_vac)
    feh = table.column("FEH")
    assert feh.null_count == 0 and np.isnan(feh.to_numpy()).sum() == np.isnan(fits["FEH"]).sum() > 0
    for name in ("ZWARN", "COADD_FIBERSTATUS"):
        col = table.column(name)
        tnull = dm.column(name).null
        assert col.null_count == (fits[name] == tnull).sum() > 0, name
        assert not (col.drop_null().to_numpy() == tnull).any()
    spectype = table.column("SPECTYPE")
    assert spectype.null_count == 0
    assert spectype.to_pylist().count("") == (np.char.strip(fits["SPECTYPE"]) == b"").sum() > 0
    assert "STAR" in spectype.to_pylist()  # no padding left
    # pandas sees the nulls as missing too
    df = pd_read(parquet_vac)
    assert df["ZWARN"].isna().sum() == (fits["ZWARN"] == -1).sum()


def pd_read(path):
    import pandas as pd

    return pd.read_parquet(path)


def test_provenance_and_errors_in_the_schema_metadata(fits_vac, parquet_vac):
    with fitsio.FITS(fits_vac) as f:
        header_prov = w.Provenance.from_header(f[0].read_header())
    d = P.read_parquet_provenance(parquet_vac)
    assert P.provenance_from_dict(d) == header_prov
    assert d["model_name"] == "stxcat-test-bundle" and d["model_sha256"] == "0123456789abcdef" * 4
    assert d["command"].startswith("stxcat annotate release/") and d["command"].endswith("--per-pixel")
    assert d["input"] == "release/" and d["date"] == "2026-02-15T12:00:00"
    assert d["datamodel_version"] == dm.DATAMODEL_VERSION and d["stxcat_version"]
    assert {k: v["bit"] for k, v in d["flag_bits"].items()} == {f.name: f.bit for f in fl.FLAG_BITS}
    assert d["badmask"] == fl.BAD_MASK
    assert ["DEVICE", "cpu", "inference device"] in d["extra"]
    assert P.read_parquet_errors(parquet_vac) == w.read_errors(fits_vac)
    assert len(P.read_parquet_errors(parquet_vac)) == 2


def test_voparquet_metadata_gives_astropy_units_ucds_and_descriptions(parquet_vac):
    from astropy.io import votable
    from astropy.table import Table

    meta = pq.ParquetFile(parquet_vac).metadata.metadata
    assert meta[b"IVOA.VOTable-Parquet.version"] == b"1.0"
    fields = votable.parse(io.BytesIO(meta[b"IVOA.VOTable-Parquet.content"])).get_first_table().fields
    assert [f.name for f in fields] == list(dm.names())
    for f, c in zip(fields, dm.COLUMNS):
        assert f.ucd == c.ucd and f.description == c.description, c.name
        assert (str(f.unit) if f.unit is not None else "") == c.unit, c.name
    t = Table.read(parquet_vac, format="parquet.votable")
    assert len(t) == 700 and str(t["TEFF"].unit) == "K" and t["TEFF"].meta["ucd"] == "phys.temperature.effective"
    assert t["SOURCE"].dtype == np.dtype("U80") and t["SURVEY"].dtype == np.dtype("U8")  # the FITS widths


def test_written_in_row_groups_of_the_chunk_size(parquet_vac):
    md = pq.ParquetFile(parquet_vac).metadata
    assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == [256, 256, 188]


def test_empty_vac(tmp_path):
    vac = tmp_path / "empty.fits"
    w.write_vac(vac, dm.empty_table(0), provenance=provenance(), errors=[])
    res = P.export_parquet(vac, tmp_path / "empty.parquet")
    t = pq.read_table(res.path)
    assert res.nrows == 0 and t.num_rows == 0 and tuple(t.column_names) == dm.names()
    assert P.read_parquet_errors(res.path) == []


def test_a_failed_write_leaves_nothing_under_the_name(fits_vac, tmp_path):
    def chunks():
        yield from P.iter_fits_chunks(fits_vac, chunk_rows=100)
        raise RuntimeError("disk full")

    out = tmp_path / "vac.parquet"
    with pytest.raises(RuntimeError, match="disk full"):
        P.write_parquet(out, chunks(), provenance=provenance(), errors=[])
    assert os.listdir(tmp_path) == []
    # and an existing file is untouched by a failed overwrite
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        P.write_parquet(out, chunks(), provenance=provenance(), errors=[], overwrite=True)
    assert os.listdir(tmp_path) == ["vac.parquet"] and out.read_bytes() == b"old"


def test_existing_output_refused_without_overwrite(fits_vac, tmp_path):
    out = tmp_path / "vac.parquet"
    out.write_bytes(b"keep me")
    with pytest.raises(w.OutputExistsError, match="exists"):
        P.export_parquet(fits_vac, out)
    assert out.read_bytes() == b"keep me"
    P.export_parquet(fits_vac, out, overwrite=True)
    assert pq.read_metadata(out).num_rows == 700
    assert oct(os.stat(out).st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode


@pytest.mark.parametrize("kind", ["text", "other-fits", "other-columns", "missing", "directory"])
def test_not_a_vac_is_one_clear_error(kind, tmp_path):
    path = tmp_path / "in.fits"
    if kind == "text":
        path.write_text("hello\n")
    elif kind == "other-fits":
        fitsio.write(os.fspath(path), np.zeros(3, dtype=[("A", "f4")]), extname="OTHER")
    elif kind == "other-columns":
        fitsio.write(os.fspath(path), np.zeros(3, dtype=[("TARGETID", "i8")]), extname=dm.EXTNAME)
    elif kind == "directory":
        path.mkdir()
    with pytest.raises(P.NotAVacError) as exc:
        P.export_parquet(path, tmp_path / "out.parquet")
    msg = str(exc.value)
    assert "\n" not in msg and "in.fits" in msg
    assert not (tmp_path / "out.parquet").exists()


def test_missing_extra_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    with pytest.raises(P.MissingExtraError) as exc:
        P.require_extra("pyarrow")
    msg = str(exc.value)
    assert "\n" not in msg and "pip install 'stxcat[hats]'" in msg and "pyarrow" in msg


def test_fits_path_imports_no_parquet_packages(tmp_path):
    # import catalog_tool (and the CLI), write and merge a FITS VAC: no pyarrow, hats, lsdb, pandas
    code = f"""
import sys, numpy as np
import catalog_tool, catalog_tool.cli, catalog_tool.config, catalog_tool.pipeline.run
from catalog_tool.vac import write as w, datamodel as dm
prov = w.Provenance("m", "0" * 64, "c", "i", date="2026-01-01T00:00:00")
w.write_vac({os.fspath(tmp_path / 'p.fits')!r}, dm.empty_table(3), provenance=prov, errors=[])
w.merge_parts([{os.fspath(tmp_path / 'p.fits')!r}], {os.fspath(tmp_path / 'v.fits')!r}, provenance=prov)
print(sorted(m for m in ("pyarrow", "hats", "hats_import", "lsdb", "pandas") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().replace("'", '"')) == []
